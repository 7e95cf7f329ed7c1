//! Prediction heads: the class predictor and the mask predictor (3-layer MLP mask embedding
//! dotted with the per-pixel embeddings), with the binary attention mask it derives.

use candle_core::{DType, Tensor};
use candle_nn::{Linear, Module, VarBuilder};

use crate::error::Result;
use crate::nn::resample::resize_bilinear;

/// Layers of the mask-embedding MLP.
const MLP_LAYERS: usize = 3;

/// `class_predictor`: queries to `num_labels + 1` logits (the last is "no object").
#[derive(Debug, Clone)]
pub struct ClassPredictor {
    linear: Linear,
}

impl ClassPredictor {
    /// Loads `vb` (`weight`, `bias`).
    pub fn new(hidden: usize, num_labels: usize, vb: VarBuilder) -> Result<Self> {
        Ok(ClassPredictor {
            linear: candle_nn::linear(hidden, num_labels + 1, vb)?,
        })
    }

    /// Class logits of normalised queries `[b, q, hidden]` → `[b, q, num_labels + 1]`.
    pub fn forward(&self, queries: &Tensor) -> Result<Tensor> {
        Ok(self.linear.forward(queries)?)
    }
}

/// `mask_predictor`: the mask embedding MLP (`mask_embedder.{i}.0`, ReLU between layers).
#[derive(Debug, Clone)]
pub struct MaskPredictor {
    layers: Vec<Linear>,
}

impl MaskPredictor {
    /// Loads `vb` (`mask_embedder.{0,1,2}.0.{weight,bias}`).
    pub fn new(hidden: usize, mask_dim: usize, vb: VarBuilder) -> Result<Self> {
        let layers = (0..MLP_LAYERS)
            .map(|i| {
                let out = if i + 1 == MLP_LAYERS {
                    mask_dim
                } else {
                    hidden
                };
                candle_nn::linear(hidden, out, vb.pp(format!("mask_embedder.{i}.0")))
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(MaskPredictor { layers })
    }

    /// Mask logits `[b, q, h, w]` of normalised queries `[b, q, hidden]` against the
    /// per-pixel embeddings `[b, mask_dim, h, w]`.
    pub fn forward(&self, queries: &Tensor, mask_features: &Tensor) -> Result<Tensor> {
        let mut x = queries.clone();
        for (i, l) in self.layers.iter().enumerate() {
            x = l.forward(&x)?;
            if i + 1 < self.layers.len() {
                x = x.relu()?;
            }
        }
        let (b, c, h, w) = mask_features.dims4()?;
        let q = x.dim(1)?;
        let m = x.matmul(&mask_features.reshape((b, c, h * w))?)?;
        Ok(m.reshape((b, q, h, w))?)
    }
}

/// The binary attention mask of masked attention: mask logits resized (bilinear,
/// `align_corners = False`) to `(h, w)`, then `sigmoid < 0.5` (1 = may not attend), as u8
/// `[b, q, h·w]`.
pub fn attention_mask(mask_logits: &Tensor, h: usize, w: usize) -> Result<Tensor> {
    let r = resize_bilinear(mask_logits, h, w)?;
    let p = candle_nn::ops::sigmoid(&r)?;
    Ok(p.lt(0.5f32)?.flatten_from(2)?.to_dtype(DType::U8)?)
}
