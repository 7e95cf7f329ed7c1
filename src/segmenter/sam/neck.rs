//! The neck shared by SAM's image encoders (`neck.0` … `neck.3`): a bias-free 1 × 1
//! convolution to the embedding width, `LayerNorm2d`, a bias-free 3 × 3 convolution,
//! `LayerNorm2d`. The convolutions run on the crate's CPU path (the 3 × 3 one on Winograd's
//! transforms), not candle's im2col.

use candle_core::Tensor;
use candle_nn::VarBuilder;

use crate::error::Result;
use crate::nn::conv::{Conv2d, ConvKernel, ConvShape, ConvWeights};
use crate::nn::norm::LayerNorm2d;

/// The convolutions' kernel: the direct one (the parity tests of `tests/sam/`,
/// `tests/sam_track.rs` and `tests/minisam.rs` hold within their fixtures' tolerances with it).
const CONV: ConvKernel = ConvKernel::Direct;

/// SAM's encoder neck.
#[derive(Debug)]
pub(super) struct Neck {
    conv1: Conv2d,
    ln1: LayerNorm2d,
    conv2: Conv2d,
    ln2: LayerNorm2d,
}

impl Neck {
    /// The neck under `vb` (`neck`) from `c_in` encoder channels to `out` channels.
    pub(super) fn load(vb: VarBuilder, c_in: usize, out: usize) -> Result<Self> {
        let conv = |key: &str, shape: ConvShape| -> Result<Conv2d> {
            Conv2d::new(ConvWeights::load_without_bias(&vb.pp(key), shape)?, CONV)
        };
        Ok(Neck {
            conv1: conv("0", ConvShape::same(c_in, out, 1))?,
            ln1: LayerNorm2d::load(vb.pp("1"), out, 1e-6)?,
            conv2: conv("2", ConvShape::same(out, out, 3))?,
            ln2: LayerNorm2d::load(vb.pp("3"), out, 1e-6)?,
        })
    }

    /// The embedding `(B, out, h, w)` of encoder features `x (B, c_in, h, w)`.
    pub(super) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let x = self.ln1.forward(&self.conv1.forward(x)?)?;
        self.ln2.forward(&self.conv2.forward(&x)?)
    }
}
