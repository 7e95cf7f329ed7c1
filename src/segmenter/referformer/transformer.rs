//! The deformable transformer of ReferFormer (`transformer.*`): a post-norm encoder over all
//! feature levels and a decoder whose queries start from the sentence feature, with learned
//! query positions and (optionally) iterative box refinement.

use candle_core::{Module, Tensor, D};
use candle_nn::{LayerNorm, Linear, VarBuilder};

use super::config::{ReferFormerConfig, HEADS};
use crate::error::Result;
use crate::nn::deform_attn::{
    encoder_reference_points, DeformAttnConfig, Levels, MultiScaleDeformableAttention,
};
use crate::nn::ffn::PostNormFfn;
use crate::nn::mlp::Mlp;
use crate::segmenter::mask2former::transformer_decoder::Attention;

/// LayerNorm epsilon of the transformer (PyTorch default).
const LN_EPS: f64 = 1e-5;

/// `log(x / (1 − x))` with both clamped to at least 1e-5, as the official `inverse_sigmoid`.
pub fn inverse_sigmoid(x: &Tensor) -> Result<Tensor> {
    let x = x.clamp(0f32, 1f32)?;
    let a = x.clamp(1e-5f32, f32::MAX)?;
    let b = x.affine(-1.0, 1.0)?.clamp(1e-5f32, f32::MAX)?;
    Ok((a.log()? - b.log()?)?)
}

fn linear(i: usize, o: usize, vb: VarBuilder) -> Result<Linear> {
    Ok(candle_nn::linear(i, o, vb)?)
}

fn norm(d: usize, vb: VarBuilder) -> Result<LayerNorm> {
    Ok(candle_nn::layer_norm(d, LN_EPS, vb)?)
}

fn attn_config(c: &ReferFormerConfig) -> DeformAttnConfig {
    DeformAttnConfig {
        d_model: c.hidden_dim,
        n_levels: c.num_feature_levels,
        n_heads: HEADS,
        n_points: c.n_points,
    }
}

/// The layers' FFN: `linear1`, `linear2` and the LayerNorm `norm_name` under `vb`.
pub(super) fn ffn(
    d: usize,
    hidden: usize,
    vb: &VarBuilder,
    norm_name: &str,
) -> Result<PostNormFfn> {
    let parts = [vb.pp("linear1"), vb.pp("linear2"), vb.pp(norm_name)];
    PostNormFfn::load(parts, (d, hidden), LN_EPS)
}

#[derive(Debug, Clone)]
struct EncoderLayer {
    self_attn: MultiScaleDeformableAttention,
    norm1: LayerNorm,
    ffn: PostNormFfn,
}

impl EncoderLayer {
    fn new(c: &ReferFormerConfig, vb: VarBuilder) -> Result<Self> {
        Ok(EncoderLayer {
            self_attn: MultiScaleDeformableAttention::new(attn_config(c), vb.pp("self_attn"))?,
            norm1: norm(c.hidden_dim, vb.pp("norm1"))?,
            ffn: ffn(c.hidden_dim, c.dim_feedforward, &vb, "norm2")?,
        })
    }

    fn forward(&self, x: &Tensor, pos: &Tensor, refs: &Tensor, levels: &Levels) -> Result<Tensor> {
        let a = self.self_attn.forward(&(x + pos)?, refs, x, levels, None)?;
        self.ffn.forward(&self.norm1.forward(&(x + a)?)?)
    }
}

#[derive(Debug, Clone)]
struct DecoderLayer {
    self_attn: Attention,
    norm2: LayerNorm,
    cross_attn: MultiScaleDeformableAttention,
    norm1: LayerNorm,
    ffn: PostNormFfn,
}

impl DecoderLayer {
    fn new(c: &ReferFormerConfig, vb: VarBuilder) -> Result<Self> {
        let d = c.hidden_dim;
        Ok(DecoderLayer {
            self_attn: Attention::packed(d, HEADS, vb.pp("self_attn"))?,
            norm2: norm(d, vb.pp("norm2"))?,
            cross_attn: MultiScaleDeformableAttention::new(attn_config(c), vb.pp("cross_attn"))?,
            norm1: norm(d, vb.pp("norm1"))?,
            ffn: ffn(d, c.dim_feedforward, &vb, "norm3")?,
        })
    }

    fn forward(
        &self,
        tgt: &Tensor,
        query_pos: &Tensor,
        refs: &Tensor,
        memory: &Tensor,
        levels: &Levels,
    ) -> Result<Tensor> {
        let q = (tgt + query_pos)?;
        let a = self.self_attn.forward(&q, &q, tgt, None)?;
        let tgt = self.norm2.forward(&(tgt + a)?)?;
        let a = self
            .cross_attn
            .forward(&(&tgt + query_pos)?, refs, memory, levels, None)?;
        self.ffn.forward(&self.norm1.forward(&(tgt + a)?)?)
    }
}

/// What the transformer gives the heads.
#[derive(Debug, Clone)]
pub struct TransformerOutput {
    /// Encoder output, all levels flattened `[1, Σ hw, d]`.
    pub memory: Tensor,
    /// Decoder output of every layer, `[1, q, d]` each.
    pub hs: Vec<Tensor>,
    /// Initial reference points `[1, q, 2]`.
    pub init_reference: Tensor,
    /// Reference points (boxes with refinement) after every layer, `[1, q, 2 or 4]`.
    pub inter_references: Vec<Tensor>,
}

/// The deformable transformer.
#[derive(Debug, Clone)]
pub struct DeformableTransformer {
    level_embed: Tensor,
    encoder: Vec<EncoderLayer>,
    decoder: Vec<DecoderLayer>,
    reference_points: Linear,
    /// `decoder.bbox_embed.i`: box refinement per layer (absent without `with_box_refine`).
    bbox_embed: Vec<Mlp>,
}

impl DeformableTransformer {
    /// Loads `transformer.*` under `vb`.
    pub fn new(c: &ReferFormerConfig, vb: VarBuilder) -> Result<Self> {
        let d = c.hidden_dim;
        let bbox_embed = if c.box_refine {
            (0..c.dec_layers)
                .map(|i| Mlp::new(&[d, d, d, 4], vb.pp("decoder").pp("bbox_embed").pp(i)))
                .collect::<Result<_>>()?
        } else {
            Vec::new()
        };
        Ok(DeformableTransformer {
            level_embed: vb.get((c.num_feature_levels, d), "level_embed")?,
            encoder: (0..c.enc_layers)
                .map(|i| EncoderLayer::new(c, vb.pp("encoder").pp("layers").pp(i)))
                .collect::<Result<_>>()?,
            decoder: (0..c.dec_layers)
                .map(|i| DecoderLayer::new(c, vb.pp("decoder").pp("layers").pp(i)))
                .collect::<Result<_>>()?,
            reference_points: linear(d, 2, vb.pp("reference_points"))?,
            bbox_embed,
        })
    }

    /// Runs encoder and decoder on fused maps `srcs` `[1, d, h_l, w_l]` with their position
    /// embeddings, decoder targets `tgt` `[1, q, d]` and query positions `query_embed`
    /// `[q, d]`.
    pub fn forward(
        &self,
        srcs: &[Tensor],
        pos: &[Tensor],
        tgt: &Tensor,
        query_embed: &Tensor,
    ) -> Result<TransformerOutput> {
        let mut flat = Vec::with_capacity(srcs.len());
        let mut flat_pos = Vec::with_capacity(srcs.len());
        let mut shapes = Vec::with_capacity(srcs.len());
        for (l, (s, p)) in srcs.iter().zip(pos).enumerate() {
            let (_, _, h, w) = s.dims4()?;
            shapes.push((h, w));
            flat.push(s.flatten_from(2)?.transpose(1, 2)?);
            let lvl = self.level_embed.get(l)?.reshape((1, 1, ()))?;
            flat_pos.push(p.flatten_from(2)?.transpose(1, 2)?.broadcast_add(&lvl)?);
        }
        let levels = Levels::new(shapes);
        let n_levels = levels.shapes.len();
        let mut memory = Tensor::cat(&flat, 1)?.contiguous()?;
        let pos = Tensor::cat(&flat_pos, 1)?.contiguous()?;
        let refs = encoder_reference_points(
            &levels,
            std::slice::from_ref(&levels.shapes),
            memory.device(),
        )?;
        for layer in &self.encoder {
            memory = layer.forward(&memory, &pos, &refs, &levels)?;
        }
        let query_pos = query_embed.unsqueeze(0)?;
        let mut reference = candle_nn::ops::sigmoid(&self.reference_points.forward(&query_pos)?)?;
        let init_reference = reference.clone();
        let mut out = tgt.clone();
        let (mut hs, mut inter) = (Vec::new(), Vec::new());
        for (i, layer) in self.decoder.iter().enumerate() {
            let (b, q, k) = reference.dims3()?;
            let refs_in = reference
                .unsqueeze(2)?
                .broadcast_as((b, q, n_levels, k))?
                .contiguous()?;
            out = layer.forward(&out, &query_pos, &refs_in, &memory, &levels)?;
            if let Some(mlp) = self.bbox_embed.get(i) {
                reference = refine(&mlp.forward(&out)?, &reference)?;
            }
            hs.push(out.clone());
            inter.push(reference.clone());
        }
        Ok(TransformerOutput {
            memory,
            hs,
            init_reference,
            inter_references: inter,
        })
    }
}

/// Adds a box delta `tmp` `[.., 4]` to the inverse-sigmoid of `reference` (its centre only
/// when the reference is a point) and returns the sigmoid.
pub fn refine(tmp: &Tensor, reference: &Tensor) -> Result<Tensor> {
    let inv = inverse_sigmoid(reference)?;
    let sum = if reference.dim(D::Minus1)? == 4 {
        (tmp + inv)?
    } else {
        let xy = (tmp.narrow(D::Minus1, 0, 2)? + inv)?;
        Tensor::cat(&[xy, tmp.narrow(D::Minus1, 2, 2)?], D::Minus1)?
    };
    Ok(candle_nn::ops::sigmoid(&sum)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn inverse_sigmoid_undoes_sigmoid_inside_the_clamp() {
        let x = Tensor::new(&[0.2f32, 0.5, 0.9], &Device::Cpu).unwrap();
        let back = candle_nn::ops::sigmoid(&inverse_sigmoid(&x).unwrap()).unwrap();
        for (a, b) in back
            .to_vec1::<f32>()
            .unwrap()
            .iter()
            .zip([0.2f32, 0.5, 0.9])
        {
            assert!((a - b).abs() < 1e-6, "{a} vs {b}");
        }
        // 0 and 1 are clamped to 1e-5 away from the edge: ±ln(1e-5).
        let edge = inverse_sigmoid(&Tensor::new(&[0f32, 1.0], &Device::Cpu).unwrap()).unwrap();
        let e = edge.to_vec1::<f32>().unwrap();
        let l = (1e-5f32).ln();
        assert!((e[0] - l).abs() < 1e-3 && (e[1] + l).abs() < 1e-3, "{e:?}");
    }

    #[test]
    fn refine_moves_a_point_reference_by_its_centre_delta_only() {
        let dev = Device::Cpu;
        let tmp = Tensor::new(&[[1f32, -1.0, 0.5, 0.25]], &dev).unwrap();
        let point = Tensor::new(&[[0.5f32, 0.5]], &dev).unwrap();
        let r = refine(&tmp, &point).unwrap().to_vec2::<f32>().unwrap();
        let sig = |v: f32| 1.0 / (1.0 + (-v).exp());
        let want = [sig(1.0), sig(-1.0), sig(0.5), sig(0.25)];
        for (a, b) in r[0].iter().zip(want) {
            assert!((a - b).abs() < 1e-6, "{r:?}");
        }
        let boxes = Tensor::new(&[[0.5f32, 0.5, 0.5, 0.5]], &dev).unwrap();
        let r = refine(&tmp, &boxes).unwrap().to_vec2::<f32>().unwrap();
        for (a, b) in r[0].iter().zip(want) {
            assert!((a - b).abs() < 1e-6, "{r:?}");
        }
    }
}
