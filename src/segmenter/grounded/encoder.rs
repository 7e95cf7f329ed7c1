//! The Grounding-DINO feature enhancer: per layer, bi-directional image-text fusion, text
//! self-attention, then multi-scale deformable self-attention on the image tokens.

use candle_core::{DType, Module, Tensor, D};
use candle_nn::{LayerNorm, Linear, VarBuilder};

use super::config::GroundingDinoConfig;
use super::text::additive_mask;
use crate::error::Result;
use crate::nn::attention::attention;
use crate::nn::deform_attn::{DeformAttnConfig, Levels, MultiScaleDeformableAttention};
use crate::nn::ffn::PostNormFfn;

/// Fusion scores are clamped to ±this after subtracting their maximum.
const FUSION_CLAMP: f64 = 50_000.0;

/// Sine embedding of scalars `x` `(..)` into `(.., feats)`: channel `k` is
/// `sin(x·2π / T^(2⌊k/2⌋/feats))` for even `k`, `cos(…)` for odd `k`.
pub(crate) fn sine_embed(x: &Tensor, feats: usize, temperature: f64) -> Result<Tensor> {
    let dev = x.device();
    let dim_t: Vec<f32> = (0..feats)
        .map(|k| (temperature as f32).powf((2 * (k / 2)) as f32 / feats as f32))
        .collect();
    let parity: Vec<f32> = (0..feats).map(|k| (k % 2) as f32).collect();
    let dim_t = Tensor::from_vec(dim_t, feats, dev)?;
    let odd = Tensor::from_vec(parity, feats, dev)?;
    let a = (x.unsqueeze(D::Minus1)? * std::f64::consts::TAU)?.broadcast_div(&dim_t)?;
    let s = a.sin()?.broadcast_mul(&(1.0 - &odd)?)?;
    let c = a.cos()?.broadcast_mul(&odd)?;
    Ok((s + c)?)
}

/// A linear layer of width `d → d`.
fn lin(i: usize, o: usize, vb: VarBuilder) -> Result<Linear> {
    Ok(candle_nn::linear(i, o, vb)?)
}

/// Multi-head attention with separate query/key/value/output projections
/// (`GroundingDinoMultiheadAttention`).
#[derive(Debug)]
pub(crate) struct MultiheadAttention {
    query: Linear,
    key: Linear,
    value: Linear,
    out: Linear,
    heads: usize,
}

impl MultiheadAttention {
    pub(crate) fn new(d: usize, heads: usize, vb: VarBuilder) -> Result<Self> {
        Ok(MultiheadAttention {
            query: lin(d, d, vb.pp("query"))?,
            key: lin(d, d, vb.pp("key"))?,
            value: lin(d, d, vb.pp("value"))?,
            out: lin(d, d, vb.pp("out_proj"))?,
            heads,
        })
    }

    pub(crate) fn forward(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        bias: Option<&Tensor>,
    ) -> Result<Tensor> {
        let a = attention(
            &self.query.forward(q)?,
            &self.key.forward(k)?,
            &self.value.forward(v)?,
            self.heads,
            bias,
        )?;
        Ok(self.out.forward(&a)?)
    }
}

/// Bi-directional image ↔ text attention with layer scales.
#[derive(Debug)]
struct FusionLayer {
    norm_v: LayerNorm,
    norm_t: LayerNorm,
    vision_proj: Linear,
    text_proj: Linear,
    values_vision: Linear,
    values_text: Linear,
    out_vision: Linear,
    out_text: Linear,
    vision_param: Tensor,
    text_param: Tensor,
    heads: usize,
}

impl FusionLayer {
    fn new(c: &GroundingDinoConfig, vb: VarBuilder) -> Result<Self> {
        let (d, e) = (c.d_model, c.encoder_ffn_dim / 2);
        let a = vb.pp("attn");
        Ok(FusionLayer {
            norm_v: candle_nn::layer_norm(d, c.layer_norm_eps, vb.pp("layer_norm_vision"))?,
            norm_t: candle_nn::layer_norm(d, c.layer_norm_eps, vb.pp("layer_norm_text"))?,
            vision_proj: lin(d, e, a.pp("vision_proj"))?,
            text_proj: lin(d, e, a.pp("text_proj"))?,
            values_vision: lin(d, e, a.pp("values_vision_proj"))?,
            values_text: lin(d, e, a.pp("values_text_proj"))?,
            out_vision: lin(e, d, a.pp("out_vision_proj"))?,
            out_text: lin(e, d, a.pp("out_text_proj"))?,
            vision_param: vb.get(d, "vision_param")?,
            text_param: vb.get(d, "text_param")?,
            heads: c.encoder_attention_heads / 2,
        })
    }

    /// `v` `(B, S, d)`, `t` `(B, L, d)`; `pix_bias` `(B, 1, 1, S)` and `text_bias`
    /// `(B, 1, 1, L)`: 0 on valid entries, −∞ on padding.
    fn forward(
        &self,
        v: &Tensor,
        t: &Tensor,
        pix_bias: &Tensor,
        text_bias: &Tensor,
    ) -> Result<(Tensor, Tensor)> {
        let v = self.norm_v.forward(v)?;
        let t = self.norm_t.forward(t)?;
        let (b, s, _) = v.dims3()?;
        let l = t.dim(1)?;
        let e = self.vision_proj.weight().dim(0)?;
        let h = self.heads;
        let hd = e / h;
        let split = |x: Tensor, n: usize| -> Result<Tensor> {
            Ok(x.reshape((b, n, h, hd))?.transpose(1, 2)?.contiguous()?)
        };
        let q = split((self.vision_proj.forward(&v)? * (hd as f64).powf(-0.5))?, s)?;
        let k = split(self.text_proj.forward(&t)?, l)?;
        let vv = split(self.values_vision.forward(&v)?, s)?;
        let vt = split(self.values_text.forward(&t)?, l)?;
        // (B, h, S, L), minus the global maximum, clamped.
        let scores = q.matmul(&k.t()?)?;
        let max = scores.flatten_all()?.max(0)?;
        let scores = scores
            .broadcast_sub(&max)?
            .clamp(-FUSION_CLAMP, FUSION_CLAMP)?;
        // Text -> vision: transposed scores minus their row maximum, clamped.
        let st = scores.transpose(2, 3)?.contiguous()?;
        let st = st
            .broadcast_sub(&st.max_keepdim(D::Minus1)?)?
            .clamp(-FUSION_CLAMP, FUSION_CLAMP)?
            .broadcast_add(pix_bias)?;
        let pt = candle_nn::ops::softmax_last_dim(&st)?;
        let pv = candle_nn::ops::softmax_last_dim(&scores.broadcast_add(text_bias)?)?;
        let merge = |x: Tensor, n: usize| -> Result<Tensor> {
            Ok(x.transpose(1, 2)?.contiguous()?.reshape((b, n, e))?)
        };
        let dv = self.out_vision.forward(&merge(pv.matmul(&vt)?, s)?)?;
        let dt = self.out_text.forward(&merge(pt.matmul(&vv)?, l)?)?;
        let v = (&v + dv.broadcast_mul(&self.vision_param)?)?;
        let t = (&t + dt.broadcast_mul(&self.text_param)?)?;
        Ok((v, t))
    }
}

/// Text self-attention (queries and keys with sine positions) and FFN, post-norm.
#[derive(Debug)]
struct TextEnhancerLayer {
    attn: MultiheadAttention,
    norm1: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    norm2: LayerNorm,
}

impl TextEnhancerLayer {
    fn new(c: &GroundingDinoConfig, vb: VarBuilder) -> Result<Self> {
        let (d, f) = (c.d_model, c.encoder_ffn_dim / 2);
        Ok(TextEnhancerLayer {
            attn: MultiheadAttention::new(d, c.encoder_attention_heads / 2, vb.pp("self_attn"))?,
            norm1: candle_nn::layer_norm(d, c.layer_norm_eps, vb.pp("layer_norm_before"))?,
            fc1: lin(d, f, vb.pp("fc1"))?,
            fc2: lin(f, d, vb.pp("fc2"))?,
            norm2: candle_nn::layer_norm(d, c.layer_norm_eps, vb.pp("layer_norm_after"))?,
        })
    }

    fn forward(&self, t: &Tensor, pos: &Tensor, bias: &Tensor) -> Result<Tensor> {
        let qk = (t + pos)?;
        let a = self.attn.forward(&qk, &qk, t, Some(bias))?;
        let t = self.norm1.forward(&(t + a)?)?;
        let f = self.fc2.forward(&self.fc1.forward(&t)?.relu()?)?;
        Ok(self.norm2.forward(&(t + f)?)?)
    }
}

/// Deformable self-attention over the image tokens and FFN, post-norm.
#[derive(Debug)]
pub(crate) struct DeformableLayer {
    attn: MultiScaleDeformableAttention,
    norm1: LayerNorm,
    ffn: PostNormFfn,
}

impl DeformableLayer {
    fn new(c: &GroundingDinoConfig, vb: VarBuilder) -> Result<Self> {
        let (d, f) = (c.d_model, c.encoder_ffn_dim);
        let cfg = DeformAttnConfig {
            d_model: d,
            n_levels: c.num_feature_levels,
            n_heads: c.encoder_attention_heads,
            n_points: c.encoder_n_points,
        };
        Ok(DeformableLayer {
            attn: MultiScaleDeformableAttention::new(cfg, vb.pp("self_attn"))?,
            norm1: candle_nn::layer_norm(d, c.layer_norm_eps, vb.pp("self_attn_layer_norm"))?,
            ffn: PostNormFfn::load(
                [vb.pp("fc1"), vb.pp("fc2"), vb.pp("final_layer_norm")],
                (d, f),
                c.layer_norm_eps,
            )?,
        })
    }

    fn forward(&self, v: &Tensor, input: &EncoderInput) -> Result<Tensor> {
        let q = (v + &input.vision_pos)?;
        let a = self.attn.forward(
            &q,
            &input.reference_points,
            v,
            &input.levels,
            Some(&input.padding),
        )?;
        let v = self.norm1.forward(&(v + a)?)?;
        self.ffn.forward(&v)
    }
}

/// Everything the encoder layers share.
#[derive(Debug)]
pub struct EncoderInput {
    /// Vision position embeddings plus level embeddings `(B, S, d)`.
    pub vision_pos: Tensor,
    /// `(B, S, n_levels, 2)` reference points of every image token.
    pub reference_points: Tensor,
    /// Feature levels of the flattened image tokens.
    pub levels: Levels,
    /// `(B, S)` u8: 1 on padded image tokens.
    pub padding: Tensor,
    /// `(B, S)` u8: 1 on valid image tokens.
    pub valid: Tensor,
    /// `(B, L)` i64 tokenizer attention mask (1 = real token).
    pub text_mask: Tensor,
    /// `(B, L, L)` u8 phrase self-attention mask.
    pub text_self_mask: Tensor,
    /// `(B, L)` i64 phrase position ids.
    pub text_positions: Tensor,
}

/// One encoder layer.
#[derive(Debug)]
struct EncoderLayer {
    fusion: FusionLayer,
    text: TextEnhancerLayer,
    deformable: DeformableLayer,
}

/// The feature enhancer.
#[derive(Debug)]
pub struct Encoder {
    layers: Vec<EncoderLayer>,
    d_model: usize,
}

/// 0 where `valid` is 1, −∞ where it is 0, shaped `(B, 1, 1, N)`.
pub(crate) fn neg_inf_bias(valid: &Tensor) -> Result<Tensor> {
    let cond = valid.to_dtype(DType::U8)?;
    let zeros = Tensor::zeros(cond.shape(), DType::F32, cond.device())?;
    let ninf = Tensor::full(f32::NEG_INFINITY, cond.shape(), cond.device())?;
    let bias = cond.where_cond(&zeros, &ninf)?;
    Ok(bias.unsqueeze(1)?.unsqueeze(1)?)
}

impl Encoder {
    /// Builds the encoder from variables under `model.encoder`.
    pub fn new(c: &GroundingDinoConfig, vb: VarBuilder) -> Result<Self> {
        let layers = (0..c.encoder_layers)
            .map(|i| {
                let l = vb.pp("layers").pp(i);
                Ok(EncoderLayer {
                    fusion: FusionLayer::new(c, l.pp("fusion_layer"))?,
                    text: TextEnhancerLayer::new(c, l.pp("text_enhancer_layer"))?,
                    deformable: DeformableLayer::new(c, l.pp("deformable_layer"))?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Encoder {
            layers,
            d_model: c.d_model,
        })
    }

    /// Enhanced `(vision, text)` memories from projected image tokens `(B, S, d)` and text
    /// features `(B, L, d)`.
    pub fn forward(
        &self,
        vision: &Tensor,
        text: &Tensor,
        input: &EncoderInput,
    ) -> Result<(Tensor, Tensor)> {
        let pix_bias = neg_inf_bias(&input.valid)?;
        let text_bias = neg_inf_bias(&input.text_mask)?;
        let self_bias = additive_mask(&input.text_self_mask)?.unsqueeze(1)?;
        let positions = input.text_positions.to_dtype(DType::F32)?;
        let text_pos = sine_embed(&positions, self.d_model, 10_000.0)?;
        let (mut v, mut t) = (vision.clone(), text.clone());
        for layer in &self.layers {
            let (v2, t2) = layer.fusion.forward(&v, &t, &pix_bias, &text_bias)?;
            t = layer.text.forward(&t2, &text_pos, &self_bias)?;
            v = layer.deformable.forward(&v2, input)?;
        }
        Ok((v, t))
    }
}
