//! SAM's mask decoder: a two-way transformer over prompt tokens and image embedding, then
//! upscaled embeddings multiplied by per-mask hypernetwork outputs, plus an IoU head.

use crate::error::Result;
use candle_core::{Module, Tensor};
use candle_nn::{Linear, VarBuilder};
use candle_transformers::models::segment_anything::transformer::TwoWayTransformer;
use candle_transformers::models::segment_anything::LayerNorm2d;

/// Sizes of the mask decoder (all read from the checkpoint except the attention heads).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecoderConfig {
    /// Token dimension (256).
    pub transformer_dim: usize,
    /// Two-way transformer blocks (2).
    pub depth: usize,
    /// Attention heads (8; not recorded in checkpoints).
    pub num_heads: usize,
    /// Hidden size of the token MLPs (2048).
    pub mlp_dim: usize,
    /// Mask tokens: one single-mask output plus the multimask outputs (4).
    pub num_mask_tokens: usize,
    /// Layers of the IoU head (3).
    pub iou_head_depth: usize,
    /// Hidden size of the IoU head (256).
    pub iou_head_hidden_dim: usize,
}

/// A stack of linear layers with ReLU between them.
#[derive(Debug)]
struct Mlp {
    layers: Vec<Linear>,
}

impl Mlp {
    fn new(
        input: usize,
        hidden: usize,
        output: usize,
        depth: usize,
        vb: VarBuilder,
    ) -> Result<Self> {
        let layers = (0..depth)
            .map(|i| {
                let i_dim = if i == 0 { input } else { hidden };
                let o_dim = if i + 1 == depth { output } else { hidden };
                candle_nn::linear(i_dim, o_dim, vb.pp(format!("layers.{i}")))
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Mlp { layers })
    }

    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let mut x = xs.clone();
        for (i, layer) in self.layers.iter().enumerate() {
            x = layer.forward(&x)?;
            if i + 1 < self.layers.len() {
                x = x.relu()?;
            }
        }
        Ok(x)
    }
}

/// A 2×2, stride-2 transposed convolution, computed as one matrix product.
#[derive(Debug)]
struct Upsample2x {
    /// `(in, out·4)`, columns ordered (out, dy, dx).
    weight: Tensor,
    bias: Tensor,
    out: usize,
}

impl Upsample2x {
    fn new(input: usize, out: usize, vb: VarBuilder) -> Result<Self> {
        let weight = vb
            .get((input, out, 2, 2), "weight")?
            .reshape((input, out * 4))?;
        Ok(Upsample2x {
            weight,
            bias: vb.get(out, "bias")?,
            out,
        })
    }

    /// `(B, C, H, W)` → `(B, out, 2H, 2W)`.
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = xs.dims4()?;
        let cols = xs
            .permute((0, 2, 3, 1))?
            .contiguous()?
            .reshape((b * h * w, c))?
            .matmul(&self.weight)?;
        let up = cols
            .reshape((b, h, w, self.out, 2, 2))?
            .permute((0, 3, 1, 4, 2, 5))?
            .contiguous()?
            .reshape((b, self.out, 2 * h, 2 * w))?;
        Ok(up.broadcast_add(&self.bias.reshape((1, self.out, 1, 1))?)?)
    }
}

/// The mask decoder.
#[derive(Debug)]
pub struct MaskDecoder {
    config: DecoderConfig,
    output_tokens: Tensor,
    transformer: TwoWayTransformer,
    upscale1: Upsample2x,
    upscale_ln: LayerNorm2d,
    upscale2: Upsample2x,
    hypernetworks: Vec<Mlp>,
    iou_head: Mlp,
}

impl MaskDecoder {
    /// Builds the decoder from the variables under `vb` (official key names).
    pub fn new(config: &DecoderConfig, vb: VarBuilder) -> Result<Self> {
        let d = config.transformer_dim;
        let iou_token = vb.get((1, d), "iou_token.weight")?;
        let mask_tokens = vb.get((config.num_mask_tokens, d), "mask_tokens.weight")?;
        let hypernetworks = (0..config.num_mask_tokens)
            .map(|i| {
                Mlp::new(
                    d,
                    d,
                    d / 8,
                    3,
                    vb.pp(format!("output_hypernetworks_mlps.{i}")),
                )
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(MaskDecoder {
            config: config.clone(),
            output_tokens: Tensor::cat(&[iou_token, mask_tokens], 0)?,
            transformer: TwoWayTransformer::new(
                config.depth,
                d,
                config.num_heads,
                config.mlp_dim,
                vb.pp("transformer"),
            )?,
            upscale1: Upsample2x::new(d, d / 4, vb.pp("output_upscaling.0"))?,
            upscale_ln: LayerNorm2d::new(d / 4, 1e-6, vb.pp("output_upscaling.1"))?,
            upscale2: Upsample2x::new(d / 4, d / 8, vb.pp("output_upscaling.3"))?,
            hypernetworks,
            iou_head: Mlp::new(
                d,
                config.iou_head_hidden_dim,
                config.num_mask_tokens,
                config.iou_head_depth,
                vb.pp("iou_prediction_head"),
            )?,
        })
    }

    /// Predicts masks for a batch of `B` prompts on one image embedding `(1, C, h, w)` with
    /// position encoding `image_pe` `(1, C, h, w)`. Returns low-resolution mask logits
    /// `(B, M, 4h, 4w)` and predicted IoUs `(B, M)`, where `M` is the number of multimask
    /// outputs (tokens 1..) when `multimask`, else 1 (token 0).
    pub fn forward(
        &self,
        image_embeddings: &Tensor,
        image_pe: &Tensor,
        sparse: &Tensor,
        dense: &Tensor,
        multimask: bool,
    ) -> Result<(Tensor, Tensor)> {
        let (b, _, d) = sparse.dims3()?;
        let n_out = self.output_tokens.dim(0)?;
        let tokens = Tensor::cat(
            &[
                self.output_tokens
                    .unsqueeze(0)?
                    .broadcast_as((b, n_out, d))?,
                sparse.clone(),
            ],
            1,
        )?
        .contiguous()?;
        let (_, c, h, w) = image_embeddings.dims4()?;
        let src = image_embeddings
            .broadcast_as((b, c, h, w))?
            .broadcast_add(dense)?
            .contiguous()?;
        let pos = image_pe.broadcast_as((b, c, h, w))?.contiguous()?;
        let (hs, src) = self.transformer.forward(&src, &pos, &tokens)?;
        let iou_token_out = hs.narrow(1, 0, 1)?.squeeze(1)?;
        let src = src.transpose(1, 2)?.contiguous()?.reshape((b, c, h, w))?;
        let up = self
            .upscale1
            .forward(&src)?
            .apply(&self.upscale_ln)?
            .gelu_erf()?;
        let up = self.upscale2.forward(&up)?.gelu_erf()?;
        let range = if multimask {
            1..self.config.num_mask_tokens
        } else {
            0..1
        };
        let hyper = range
            .clone()
            .map(|i| {
                let token = hs.narrow(1, 1 + i, 1)?.squeeze(1)?;
                self.hypernetworks[i].forward(&token)
            })
            .collect::<Result<Vec<_>>>()?;
        let hyper = Tensor::stack(&hyper, 1)?;
        let (_, uc, uh, uw) = up.dims4()?;
        let masks = hyper
            .matmul(&up.reshape((b, uc, uh * uw))?)?
            .reshape((b, (), uh, uw))?;
        let iou = self
            .iou_head
            .forward(&iou_token_out)?
            .narrow(1, range.start, range.len())?;
        Ok((masks, iou))
    }
}
