//! A convolution followed by GroupNorm and an optional ReLU: the projection, FPN and tower
//! layers of the Mask2Former, ReferFormer and EntitySeg ports. The convolution runs on this
//! crate's CPU path ([`Conv2d`]: direct, Winograd or products), not candle's im2col, and the
//! norm with its ReLU as one pass ([`GroupNorm`]).

use candle_core::Tensor;
use candle_nn::VarBuilder;

use super::conv::{Conv2d, ConvKernel, ConvShape, ConvWeights};
use super::norm::GroupNorm;
use crate::error::Result;

/// GroupNorm's groups and epsilon.
#[derive(Debug, Clone, Copy)]
pub struct GroupNormSpec {
    /// Channel groups.
    pub groups: usize,
    /// Epsilon added to the variance.
    pub eps: f64,
}

/// `relu?(GroupNorm(conv(x)))`.
#[derive(Debug, Clone)]
pub struct ConvGroupNorm {
    conv: Conv2d,
    norm: GroupNorm,
}

impl ConvGroupNorm {
    /// The convolution at `conv` (`weight`, and `bias` where `bias`), computed by `kernel`,
    /// then the GroupNorm at `norm` (`weight`, `bias`).
    pub fn load(
        conv: &VarBuilder,
        norm: &VarBuilder,
        (shape, bias): (ConvShape, bool),
        spec: GroupNormSpec,
        kernel: ConvKernel,
    ) -> Result<Self> {
        let weights = if bias {
            ConvWeights::load(conv, shape)?
        } else {
            ConvWeights::load_without_bias(conv, shape)?
        };
        Ok(ConvGroupNorm {
            conv: Conv2d::new(weights, kernel)?,
            norm: GroupNorm::load(norm.clone(), shape.c_out, spec.groups, spec.eps)?,
        })
    }

    /// The same layer followed by ReLU.
    pub fn with_relu(self) -> Self {
        ConvGroupNorm {
            norm: self.norm.with_relu(),
            ..self
        }
    }

    /// Applies the layer to `x` `[batch, c_in, h, w]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.norm.forward(&self.conv.forward(x)?)
    }
}
