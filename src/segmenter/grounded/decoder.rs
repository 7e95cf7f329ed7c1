//! The Grounding-DINO decoder: query self-attention, text cross-attention and deformable
//! image cross-attention per layer, with iterative box refinement.

use candle_core::{Module, Tensor, D};
use candle_nn::{LayerNorm, VarBuilder};

use super::config::GroundingDinoConfig;
use super::encoder::{sine_embed, MultiheadAttention};
use crate::error::Result;
use crate::nn::deform_attn::{DeformAttnConfig, Levels, MultiScaleDeformableAttention};
use crate::nn::ffn::PostNormFfn;
use crate::nn::mlp::Mlp;

/// `torch.special.logit(x, eps)`: `log(x / (1 - x))` of `x` clamped to `[eps, 1 - eps]`.
pub(crate) fn logit(x: &Tensor, eps: f64) -> Result<Tensor> {
    let x = x.clamp(eps, 1.0 - eps)?;
    Ok((&x / (1.0 - &x)?)?.log()?)
}

/// One decoder layer.
#[derive(Debug)]
struct DecoderLayer {
    self_attn: MultiheadAttention,
    self_norm: LayerNorm,
    text_attn: MultiheadAttention,
    text_norm: LayerNorm,
    cross_attn: MultiScaleDeformableAttention,
    cross_norm: LayerNorm,
    ffn: PostNormFfn,
}

impl DecoderLayer {
    fn new(c: &GroundingDinoConfig, vb: VarBuilder) -> Result<Self> {
        let (d, h, eps) = (c.d_model, c.decoder_attention_heads, c.layer_norm_eps);
        let norm = |name: &str| candle_nn::layer_norm(d, eps, vb.pp(name));
        let cfg = DeformAttnConfig {
            d_model: d,
            n_levels: c.num_feature_levels,
            n_heads: h,
            n_points: c.decoder_n_points,
        };
        Ok(DecoderLayer {
            self_attn: MultiheadAttention::new(d, h, vb.pp("self_attn"))?,
            self_norm: norm("self_attn_layer_norm")?,
            text_attn: MultiheadAttention::new(d, h, vb.pp("encoder_attn_text"))?,
            text_norm: norm("encoder_attn_text_layer_norm")?,
            cross_attn: MultiScaleDeformableAttention::new(cfg, vb.pp("encoder_attn"))?,
            cross_norm: norm("encoder_attn_layer_norm")?,
            ffn: PostNormFfn::load(
                [vb.pp("fc1"), vb.pp("fc2"), vb.pp("final_layer_norm")],
                (d, c.decoder_ffn_dim),
                eps,
            )?,
        })
    }

    fn forward(&self, h: &Tensor, pos: &Tensor, refs: &Tensor, m: &Memory) -> Result<Tensor> {
        let qk = (h + pos)?;
        let a = self.self_attn.forward(&qk, &qk, h, None)?;
        let h = self.self_norm.forward(&(h + a)?)?;
        let q = (&h + pos)?;
        let a = self
            .text_attn
            .forward(&q, m.text, m.text, Some(m.text_bias))?;
        let h = self.text_norm.forward(&(h + a)?)?;
        let q = (&h + pos)?;
        let a = self
            .cross_attn
            .forward(&q, refs, m.vision, m.levels, Some(m.padding))?;
        let h = self.cross_norm.forward(&(h + a)?)?;
        self.ffn.forward(&h)
    }
}

/// The encoder outputs the decoder attends to.
pub struct Memory<'a> {
    /// Vision memory `(B, S, d)`.
    pub vision: &'a Tensor,
    /// Text memory `(B, L, d)`.
    pub text: &'a Tensor,
    /// `(B, 1, 1, L)` additive bias: the most negative f32 on padded tokens.
    pub text_bias: &'a Tensor,
    /// Feature levels of the vision memory.
    pub levels: &'a Levels,
    /// `(B, S)` u8: 1 on padded image tokens.
    pub padding: &'a Tensor,
    /// `(B, n_levels, 2)` valid (width, height) ratios.
    pub valid_ratios: &'a Tensor,
}

/// Decoder outputs.
#[derive(Debug)]
pub struct DecoderOutput {
    /// `(B, layers, Q, d)`: the final LayerNorm of each layer's output.
    pub intermediate_hidden_states: Tensor,
    /// `(B, layers, Q, 4)`: boxes after each layer's refinement.
    pub intermediate_reference_points: Tensor,
}

/// The decoder with its query-position head; box refinement uses the shared box head.
#[derive(Debug)]
pub struct Decoder {
    layers: Vec<DecoderLayer>,
    norm: LayerNorm,
    ref_head: Mlp,
    d_model: usize,
}

impl Decoder {
    /// Builds the decoder from variables under `model.decoder`.
    pub fn new(c: &GroundingDinoConfig, vb: VarBuilder) -> Result<Self> {
        let d = c.d_model;
        Ok(Decoder {
            layers: (0..c.decoder_layers)
                .map(|i| DecoderLayer::new(c, vb.pp("layers").pp(i)))
                .collect::<Result<Vec<_>>>()?,
            norm: candle_nn::layer_norm(d, c.layer_norm_eps, vb.pp("layer_norm"))?,
            ref_head: Mlp::new(&[2 * d, d, d], vb.pp("reference_points_head"))?,
            d_model: d,
        })
    }

    /// Runs the layers from `target` `(B, Q, d)` and boxes `refs` `(B, Q, 4)`, refining the
    /// boxes with `bbox_head` after every layer.
    pub fn forward(
        &self,
        target: &Tensor,
        refs: &Tensor,
        m: &Memory,
        bbox_head: &Mlp,
    ) -> Result<DecoderOutput> {
        let dev = target.device();
        let (b, q, _) = target.dims3()?;
        let ratios = Tensor::cat(&[m.valid_ratios, m.valid_ratios], D::Minus1)?.unsqueeze(1)?;
        // Sine embedding order of the coordinates: (y, x, w, h).
        let order = Tensor::new(&[1u32, 0, 2, 3], dev)?;
        let mut h = target.clone();
        let mut refs = refs.clone();
        let (mut hidden, mut boxes) = (Vec::new(), Vec::new());
        for layer in &self.layers {
            let ref_in = refs.unsqueeze(2)?.broadcast_mul(&ratios)?;
            let first = ref_in.narrow(2, 0, 1)?.squeeze(2)?;
            let pos = sine_embed(&first, self.d_model / 2, 10_000.0)?
                .index_select(&order, 2)?
                .reshape((b, q, 2 * self.d_model))?;
            let pos = self.ref_head.forward(&pos)?;
            h = layer.forward(&h, &pos, &ref_in, m)?;
            refs = candle_nn::ops::sigmoid(&(bbox_head.forward(&h)? + logit(&refs, 1e-5)?)?)?;
            hidden.push(self.norm.forward(&h)?);
            boxes.push(refs.clone());
        }
        Ok(DecoderOutput {
            intermediate_hidden_states: Tensor::stack(&hidden, 1)?,
            intermediate_reference_points: Tensor::stack(&boxes, 1)?,
        })
    }
}
