//! The masked-attention transformer decoder (`model.transformer_module`): learned queries
//! attend, level by level (strides 32, 16, 8, repeating), to the pixel decoder's maps inside
//! the foreground of their previous mask prediction.

use candle_core::{DType, Tensor};
use candle_nn::{Conv2d, LayerNorm, Linear, Module, VarBuilder};

use super::config::Mask2FormerConfig;
use super::heads::{attention_mask, ClassPredictor, MaskPredictor};
use super::pixel_decoder::{sine_position_embedding, NUM_LEVELS};
use crate::error::{Error, Result};

/// Epsilon of PyTorch's LayerNorm default.
const LN_EPS: f64 = 1e-5;
/// Added to the attention scores of masked positions (acts as −∞ after softmax).
const MASKED: f64 = -1e9;

/// Multi-head attention on batch-first `[b, n, d]` tensors with separate projections (also
/// ReferFormer's `nn.MultiheadAttention` blocks).
#[derive(Debug, Clone)]
pub(crate) struct Attention {
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
    heads: usize,
}

impl Attention {
    /// `q_proj`, `k_proj`, `v_proj`, `out_proj` (the decoder's self-attention).
    fn separate(d: usize, heads: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Attention {
            q: candle_nn::linear(d, d, vb.pp("q_proj"))?,
            k: candle_nn::linear(d, d, vb.pp("k_proj"))?,
            v: candle_nn::linear(d, d, vb.pp("v_proj"))?,
            out: candle_nn::linear(d, d, vb.pp("out_proj"))?,
            heads,
        })
    }

    /// `torch.nn.MultiheadAttention`: `in_proj_weight` `[3d, d]` (q, k, v rows stacked),
    /// `in_proj_bias`, `out_proj`. Split into three projections once, at load time.
    pub(crate) fn packed(d: usize, heads: usize, vb: VarBuilder) -> Result<Self> {
        let w = vb.get((3 * d, d), "in_proj_weight")?;
        let b = vb.get(3 * d, "in_proj_bias")?;
        let part = |i: usize| -> Result<Linear> {
            Ok(Linear::new(
                w.narrow(0, i * d, d)?.contiguous()?,
                Some(b.narrow(0, i * d, d)?.contiguous()?),
            ))
        };
        Ok(Attention {
            q: part(0)?,
            k: part(1)?,
            v: part(2)?,
            out: candle_nn::linear(d, d, vb.pp("out_proj"))?,
            heads,
        })
    }

    /// Attends from `q` `[b, nq, d]` to keys `k` and values `v` `[b, nk, d]` (inputs before
    /// projection); `mask` `[b, nq, nk]` (u8, 1 = may not attend) is optional.
    pub(crate) fn forward(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        mask: Option<&Tensor>,
    ) -> Result<Tensor> {
        let (b, nq, d) = q.dims3()?;
        let nk = k.dim(1)?;
        let h = self.heads;
        let hd = d / h;
        let split = |x: Tensor, n: usize| -> Result<Tensor> {
            Ok(x.reshape((b, n, h, hd))?.transpose(1, 2)?.contiguous()?)
        };
        let q = split((self.q.forward(q)? * (hd as f64).powf(-0.5))?, nq)?;
        let k = split(self.k.forward(k)?, nk)?;
        let v = split(self.v.forward(v)?, nk)?;
        let mut s = q.matmul(&k.transpose(2, 3)?)?;
        if let Some(m) = mask {
            let add = (m.to_dtype(s.dtype())? * MASKED)?.unsqueeze(1)?;
            s = s.broadcast_add(&add)?;
        }
        let p = candle_nn::ops::softmax_last_dim(&s)?;
        let o = p.matmul(&v)?.transpose(1, 2)?.reshape((b, nq, d))?;
        Ok(self.out.forward(&o)?)
    }
}

/// One decoder layer: masked cross-attention, self-attention, FFN (post- or pre-norm).
#[derive(Debug, Clone)]
struct DecoderLayer {
    cross_attn: Attention,
    cross_attn_layer_norm: LayerNorm,
    self_attn: Attention,
    self_attn_layer_norm: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    final_layer_norm: LayerNorm,
    pre_norm: bool,
}

/// The memory one layer attends to: features (+ level embedding) and key positions.
struct Memory<'a> {
    features: &'a Tensor,
    pos: &'a Tensor,
}

impl DecoderLayer {
    fn new(cfg: &Mask2FormerConfig, vb: VarBuilder) -> Result<Self> {
        let d = cfg.hidden_dim;
        let heads = cfg.num_attention_heads;
        let ln = |name: &str| candle_nn::layer_norm(d, LN_EPS, vb.pp(name));
        Ok(DecoderLayer {
            cross_attn: Attention::packed(d, heads, vb.pp("cross_attn"))?,
            cross_attn_layer_norm: ln("cross_attn_layer_norm")?,
            self_attn: Attention::separate(d, heads, vb.pp("self_attn"))?,
            self_attn_layer_norm: ln("self_attn_layer_norm")?,
            fc1: candle_nn::linear(d, cfg.dim_feedforward, vb.pp("fc1"))?,
            fc2: candle_nn::linear(cfg.dim_feedforward, d, vb.pp("fc2"))?,
            final_layer_norm: ln("final_layer_norm")?,
            pre_norm: cfg.pre_norm,
        })
    }

    fn forward(
        &self,
        x: &Tensor,
        query_pos: &Tensor,
        mem: &Memory,
        mask: &Tensor,
    ) -> Result<Tensor> {
        let key = (mem.features + mem.pos)?;
        let cross = |h: &Tensor| {
            self.cross_attn
                .forward(&(h + query_pos)?, &key, mem.features, Some(mask))
        };
        let selfa = |h: &Tensor| {
            let q = (h + query_pos)?;
            self.self_attn.forward(&q, &q, h, None)
        };
        let ffn =
            |h: &Tensor| -> Result<Tensor> { Ok(self.fc2.forward(&self.fc1.forward(h)?.relu()?)?) };
        if self.pre_norm {
            let x = (x + cross(&self.cross_attn_layer_norm.forward(x)?)?)?;
            let x = (&x + selfa(&self.self_attn_layer_norm.forward(&x)?)?)?;
            Ok((&x + ffn(&self.final_layer_norm.forward(&x)?)?)?)
        } else {
            let x = self.cross_attn_layer_norm.forward(&(x + cross(x)?)?)?;
            let x = self.self_attn_layer_norm.forward(&(&x + selfa(&x)?)?)?;
            Ok(self.final_layer_norm.forward(&(&x + ffn(&x)?)?)?)
        }
    }
}

/// Everything the decoder predicts, stage by stage (stage 0 is before the first layer).
#[derive(Debug, Clone)]
pub struct DecoderOutput {
    /// `decoder.layernorm` of the queries at each stage, `[b, q, hidden]`.
    pub intermediate_hidden_states: Vec<Tensor>,
    /// Class logits at each stage, `[b, q, num_labels + 1]`.
    pub class_logits: Vec<Tensor>,
    /// Mask logits at each stage, `[b, q, h/4, w/4]`.
    pub mask_logits: Vec<Tensor>,
    /// The attention mask each layer used, before fully masked rows were opened, u8
    /// `[b, q, h_l·w_l]` (1 = may not attend).
    pub attention_masks: Vec<Tensor>,
    /// Queries after the last layer, before the final LayerNorm.
    pub last_hidden_state: Tensor,
}

/// The transformer module with its decoder and heads.
#[derive(Debug, Clone)]
pub struct TransformerDecoder {
    input_projections: Vec<Option<Conv2d>>,
    level_embed: Tensor,
    queries_embedder: Tensor,
    queries_features: Tensor,
    layers: Vec<DecoderLayer>,
    layernorm: LayerNorm,
    mask_predictor: MaskPredictor,
    hidden_dim: usize,
}

impl TransformerDecoder {
    /// Loads `model.transformer_module` from `vb`.
    pub fn new(cfg: &Mask2FormerConfig, vb: VarBuilder) -> Result<Self> {
        let d = cfg.hidden_dim;
        if !d.is_multiple_of(cfg.num_attention_heads) {
            return Err(Error::invalid(format!(
                "transformer decoder: hidden_dim {d} is not a multiple of {} heads",
                cfg.num_attention_heads
            )));
        }
        let project = cfg.feature_size != d || cfg.enforce_input_projection;
        let input_projections = (0..NUM_LEVELS)
            .map(|i| {
                project
                    .then(|| {
                        candle_nn::conv2d(
                            cfg.feature_size,
                            d,
                            1,
                            Default::default(),
                            vb.pp(format!("input_projections.{i}")),
                        )
                    })
                    .transpose()
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        let dec = vb.pp("decoder");
        let layers = (0..cfg.decoder_layers - 1)
            .map(|i| DecoderLayer::new(cfg, dec.pp(format!("layers.{i}"))))
            .collect::<Result<Vec<_>>>()?;
        Ok(TransformerDecoder {
            input_projections,
            level_embed: vb.get((NUM_LEVELS, d), "level_embed.weight")?,
            queries_embedder: vb.get((cfg.num_queries, d), "queries_embedder.weight")?,
            queries_features: vb.get((cfg.num_queries, d), "queries_features.weight")?,
            layers,
            layernorm: candle_nn::layer_norm(d, LN_EPS, dec.pp("layernorm"))?,
            mask_predictor: MaskPredictor::new(d, cfg.mask_feature_size, dec.pp("mask_predictor"))?,
            hidden_dim: d,
        })
    }

    /// Runs the decoder on the pixel decoder's maps (coarsest first) and mask features;
    /// `classes` turns normalised queries into class logits at every stage.
    pub fn forward(
        &self,
        multi_scale_features: &[Tensor],
        mask_features: &Tensor,
        classes: &ClassPredictor,
    ) -> Result<DecoderOutput> {
        let b = mask_features.dim(0)?;
        let dev = mask_features.device();
        let d = self.hidden_dim;
        let mut feats = Vec::with_capacity(NUM_LEVELS);
        let mut pos = Vec::with_capacity(NUM_LEVELS);
        let mut sizes = Vec::with_capacity(NUM_LEVELS);
        for (i, x) in multi_scale_features.iter().take(NUM_LEVELS).enumerate() {
            let (_, _, h, w) = x.dims4()?;
            sizes.push((h, w));
            pos.push(
                sine_position_embedding(h, w, d / 2, dev)?
                    .flatten_from(2)?
                    .transpose(1, 2)?
                    .contiguous()?,
            );
            let x = match &self.input_projections[i] {
                Some(c) => c.forward(x)?,
                None => x.clone(),
            };
            let e = self.level_embed.narrow(0, i, 1)?.unsqueeze(0)?;
            feats.push(
                x.flatten_from(2)?
                    .transpose(1, 2)?
                    .broadcast_add(&e)?
                    .contiguous()?,
            );
        }
        if sizes.len() < NUM_LEVELS {
            return Err(Error::invalid(format!(
                "transformer decoder: {} feature levels, {NUM_LEVELS} needed",
                sizes.len()
            )));
        }
        let expand = |t: &Tensor| -> Result<Tensor> {
            let (q, d) = t.dims2()?;
            Ok(t.unsqueeze(0)?.expand((b, q, d))?.contiguous()?)
        };
        let query_pos = expand(&self.queries_embedder)?;
        let mut x = expand(&self.queries_features)?;

        let mut out = DecoderOutput {
            intermediate_hidden_states: Vec::new(),
            class_logits: Vec::new(),
            mask_logits: Vec::new(),
            attention_masks: Vec::new(),
            last_hidden_state: x.clone(),
        };
        let predict = |x: &Tensor, out: &mut DecoderOutput| -> Result<Tensor> {
            let n = self.layernorm.forward(x)?;
            let masks = self.mask_predictor.forward(&n, mask_features)?;
            out.class_logits.push(classes.forward(&n)?);
            out.intermediate_hidden_states.push(n);
            out.mask_logits.push(masks.clone());
            Ok(masks)
        };
        let mut masks = predict(&x, &mut out)?;
        for (i, layer) in self.layers.iter().enumerate() {
            let level = i % NUM_LEVELS;
            let (h, w) = sizes[level];
            let mask = attention_mask(&masks, h, w)?;
            out.attention_masks.push(mask.clone());
            let mask = open_fully_masked_rows(&mask)?;
            let mem = Memory {
                features: &feats[level],
                pos: &pos[level],
            };
            x = layer.forward(&x, &query_pos, &mem, &mask)?;
            masks = predict(&x, &mut out)?;
        }
        out.last_hidden_state = x;
        Ok(out)
    }
}

/// Rows of an attention mask `[b, q, n]` (u8, 1 = blocked) that block every position are
/// opened entirely: a query whose mask is empty attends everywhere.
fn open_fully_masked_rows(mask: &Tensor) -> Result<Tensor> {
    let n = mask.dim(2)?;
    let m = mask.to_dtype(DType::F32)?;
    let full = m.sum_keepdim(2)?.ge(n as f32)?.to_dtype(DType::F32)?;
    Ok(m.broadcast_mul(&full.affine(-1.0, 1.0)?)?)
}
