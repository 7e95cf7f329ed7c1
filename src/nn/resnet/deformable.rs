//! detectron2's deformable 3×3 convolution of a bottleneck: `conv2_offset` predicts the
//! offsets (and, modulated, the mask) for `conv2`.

use candle_core::Tensor;
use candle_nn::VarBuilder;

use super::Loading;
use crate::error::Result;
use crate::nn::conv::{Conv2d, ConvShape, ConvWeights};
use crate::nn::deform_conv::DeformConv2d;

/// detectron2's deformable 3×3 convolution of a bottleneck (`MODEL.RESNETS.DEFORM_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deform {
    /// `DEFORM_MODULATED`: DCNv2, a mask beside the offsets.
    pub modulated: bool,
    /// `DEFORM_NUM_GROUPS`: deformable groups.
    pub groups: usize,
}

/// A deformable 3×3 convolution with the convolution that predicts its offsets (and mask).
#[derive(Debug, Clone)]
pub(super) struct DeformLayer {
    offset: Conv2d,
    conv: DeformConv2d,
    modulated: bool,
}

impl DeformLayer {
    /// `conv2_offset` and `conv2` (+ `conv2.norm`) of the block at `vb`.
    pub(super) fn load(
        vb: &VarBuilder,
        shape: ConvShape,
        deform: Deform,
        how: Loading,
    ) -> Result<Self> {
        let taps = shape.k * shape.k * deform.groups;
        let offset_shape = ConvShape {
            c_out: if deform.modulated { 3 * taps } else { 2 * taps },
            ..shape
        };
        let offset = Conv2d::load(&vb.pp("conv2_offset"), offset_shape, how.kernel)?;
        let (conv, bn) = how.layout.conv_bn(vb, 2);
        let w = ConvWeights::load_with_batch_norm(&conv, &bn, shape)?;
        Ok(DeformLayer {
            offset,
            conv: DeformConv2d::new(w, 1, deform.groups)?,
            modulated: deform.modulated,
        })
    }

    pub(super) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let predicted = self.offset.forward(x)?;
        if !self.modulated {
            return self.conv.forward(x, &predicted, None);
        }
        let n = self.conv.offset_channels();
        let offset = predicted.narrow(1, 0, n)?;
        let mask = candle_nn::ops::sigmoid(&predicted.narrow(1, n, n / 2)?)?;
        self.conv.forward(x, &offset, Some(&mask))
    }
}
