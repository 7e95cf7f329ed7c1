//! SAM's mask decoder: a two-way transformer over prompt tokens and image embedding, then
//! upscaled embeddings multiplied by per-mask hypernetwork outputs, plus an IoU head.

use super::transformer::{ImageTokens, TwoWayTransformer};
use crate::error::Result;
use candle_core::{Module, Tensor};
use candle_nn::{Linear, VarBuilder};

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

/// The output upscaling (two 2×2 stride-2 transposed convolutions with a channel LayerNorm
/// and GELUs between), computed channel-last: each transposed convolution is one matrix
/// product whose columns are ordered (dy, dx, channel), so pixels stay grouped by the token
/// they come from and the norm runs over the last dimension.
#[derive(Debug)]
struct Upscaling {
    /// `(C, 4·C/4)` and `(C/4, 4·C/8)` matrices, columns ordered (dy, dx, out).
    w1: Tensor,
    b1: Tensor,
    ln_weight: Tensor,
    ln_bias: Tensor,
    w2: Tensor,
    b2: Tensor,
}

/// A transposed-convolution weight `(in, out, 2, 2)` as an `(in, 4·out)` matrix with columns
/// ordered (dy, dx, out), and its bias repeated for the four sub-pixels.
fn subpixel_matrix(vb: &VarBuilder, input: usize, out: usize) -> Result<(Tensor, Tensor)> {
    let w = vb
        .get((input, out, 2, 2), "weight")?
        .permute((0, 2, 3, 1))?
        .contiguous()?
        .reshape((input, 4 * out))?;
    let b = vb.get(out, "bias")?;
    Ok((w, Tensor::cat(&[&b, &b, &b, &b], 0)?))
}

impl Upscaling {
    fn new(dim: usize, vb: VarBuilder) -> Result<Self> {
        let (w1, b1) = subpixel_matrix(&vb.pp("0"), dim, dim / 4)?;
        let (w2, b2) = subpixel_matrix(&vb.pp("3"), dim / 4, dim / 8)?;
        Ok(Upscaling {
            w1,
            b1,
            ln_weight: vb.get(dim / 4, "1.weight")?,
            ln_bias: vb.get(dim / 4, "1.bias")?,
            w2,
            b2,
        })
    }

    /// Tokens `(B, h·w, C)` → upscaled features `(B, h·w·16, C/8)`, rows ordered
    /// (y, x, dy1, dx1, dy2, dx2) for output pixel (4y + 2dy1 + dy2, 4x + 2dx1 + dx2).
    fn forward(&self, tokens: &Tensor) -> Result<Tensor> {
        let (b, n, c) = tokens.dims3()?;
        let c1 = self.ln_weight.dim(0)?;
        let t = tokens
            .reshape((b * n, c))?
            .matmul(&self.w1)?
            .broadcast_add(&self.b1)?
            .reshape((b * n * 4, c1))?;
        let t = candle_nn::ops::layer_norm(&t, &self.ln_weight, &self.ln_bias, 1e-6)?.gelu_erf()?;
        let t = t.matmul(&self.w2)?.broadcast_add(&self.b2)?.gelu_erf()?;
        Ok(t.reshape((b, n * 16, ()))?)
    }
}

/// Prompts decoded together; keeps the largest intermediate tensors at a few MB.
const DECODE_CHUNK: usize = 2;

/// The mask decoder.
#[derive(Debug)]
pub struct MaskDecoder {
    config: DecoderConfig,
    output_tokens: Tensor,
    transformer: TwoWayTransformer,
    upscaling: Upscaling,
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
            upscaling: Upscaling::new(d, vb.pp("output_upscaling"))?,
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
    /// position encoding `image_pe` `(1, C, h, w)`; `dense` has batch 1 or `B`. Returns
    /// low-resolution mask logits `(B, M, 4h, 4w)` and predicted IoUs `(B, M)`, where `M` is
    /// the number of multimask outputs (tokens 1..) when `multimask`, else 1 (token 0).
    pub fn forward(
        &self,
        image_embeddings: &Tensor,
        image_pe: &Tensor,
        sparse: &Tensor,
        dense: &Tensor,
        multimask: bool,
    ) -> Result<(Tensor, Tensor)> {
        let b = sparse.dim(0)?;
        let (_, _, h, w) = image_embeddings.dims4()?;
        let tokens = |x: &Tensor| -> Result<Tensor> {
            Ok(x.flatten_from(2)?.transpose(1, 2)?.contiguous()?)
        };
        let pe = tokens(image_pe)?;
        let shared = if dense.dim(0)? == 1 {
            let keys = tokens(&image_embeddings.broadcast_add(dense)?)?;
            Some(self.transformer.share_image(&keys, &pe)?)
        } else {
            None
        };
        let mut masks = Vec::with_capacity(b.div_ceil(DECODE_CHUNK));
        let mut ious = Vec::with_capacity(masks.capacity());
        for start in (0..b).step_by(DECODE_CHUNK) {
            let len = DECODE_CHUNK.min(b - start);
            let sparse = sparse.narrow(0, start, len)?;
            let per_prompt;
            let image = match &shared {
                Some(s) => ImageTokens::Shared(s),
                None => {
                    per_prompt =
                        tokens(&image_embeddings.broadcast_add(&dense.narrow(0, start, len)?)?)?;
                    ImageTokens::PerPrompt {
                        keys: &per_prompt,
                        pe: &pe,
                    }
                }
            };
            let (m, i) = self.forward_chunk(&sparse, image, (h, w), multimask)?;
            masks.push(m);
            ious.push(i);
        }
        Ok((Tensor::cat(&masks, 0)?, Tensor::cat(&ious, 0)?))
    }

    fn forward_chunk(
        &self,
        sparse: &Tensor,
        image: ImageTokens,
        (h, w): (usize, usize),
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
        let (hs, keys) = self.transformer.forward(&tokens, image)?;
        let iou_token_out = hs.narrow(1, 0, 1)?.squeeze(1)?;
        let up = self.upscaling.forward(&keys.contiguous()?)?;
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
        let m = hyper.len();
        // (B, h·w·16, M) in sub-pixel order → (B, M, 4h, 4w).
        let masks = up
            .matmul(&Tensor::stack(&hyper, 2)?)?
            .reshape(vec![b, h, w, 2, 2, 2, 2, m])?
            .permute([0, 7, 1, 3, 5, 2, 4, 6])?
            .contiguous()?
            .reshape((b, m, 4 * h, 4 * w))?;
        let iou = self
            .iou_head
            .forward(&iou_token_out)?
            .narrow(1, range.start, range.len())?;
        Ok((masks, iou))
    }
}
