//! torchvision-style ResNet pieces (BatchNorm folded into the convolutions): the stem and
//! stages of BasicBlocks (ResNet-18/34) or Bottlenecks (ResNet-50+, stride on the 3×3 conv).
//! Loading spells torchvision's keys: `conv1`, `bn1`, `layerN.i.conv1`, `.bn1`, ...,
//! `.downsample.0` (convolution) and `.downsample.1` (BatchNorm).

use candle_core::Tensor;
use candle_nn::VarBuilder;

use super::conv::{Conv2d, ConvShape};
use crate::error::Result;

/// Which residual block a stage is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockKind {
    /// Two 3×3 convolutions (expansion 1).
    Basic,
    /// 1×1, 3×3, 1×1 convolutions (expansion 4).
    Bottleneck,
}

impl BlockKind {
    fn expansion(self) -> usize {
        match self {
            BlockKind::Basic => 1,
            BlockKind::Bottleneck => 4,
        }
    }
}

/// One residual block.
#[derive(Debug, Clone)]
struct Block {
    convs: Vec<Conv2d>,
    downsample: Option<Conv2d>,
}

impl Block {
    fn load(
        vb: VarBuilder,
        kind: BlockKind,
        c_in: usize,
        planes: usize,
        stride: usize,
    ) -> Result<Self> {
        let out = planes * kind.expansion();
        let shapes = match kind {
            BlockKind::Basic => vec![
                ConvShape::same(c_in, planes, 3).with_stride(stride),
                ConvShape::same(planes, planes, 3),
            ],
            BlockKind::Bottleneck => vec![
                ConvShape::same(c_in, planes, 1),
                ConvShape::same(planes, planes, 3).with_stride(stride),
                ConvShape::same(planes, out, 1),
            ],
        };
        let mut convs = Vec::with_capacity(shapes.len());
        for (i, shape) in shapes.into_iter().enumerate() {
            let n = i + 1;
            convs.push(Conv2d::load_with_batch_norm(
                &vb.pp(format!("conv{n}")),
                &vb.pp(format!("bn{n}")),
                shape,
            )?);
        }
        let downsample = if stride != 1 || c_in != out {
            let d = vb.pp("downsample");
            Some(Conv2d::load_with_batch_norm(
                &d.pp("0"),
                &d.pp("1"),
                ConvShape::same(c_in, out, 1).with_stride(stride),
            )?)
        } else {
            None
        };
        Ok(Block { convs, downsample })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (last, inner) = self.convs.split_last().expect("blocks have convolutions");
        let mut y = x.clone();
        for c in inner {
            y = c.forward(&y)?.relu()?;
        }
        let y = last.forward(&y)?;
        let skip = match &self.downsample {
            Some(d) => d.forward(x)?,
            None => x.clone(),
        };
        Ok((y + skip)?.relu()?)
    }
}

/// A stage (`layerN`) of residual blocks; the first block carries the stride.
#[derive(Debug, Clone)]
pub struct Stage {
    blocks: Vec<Block>,
}

impl Stage {
    /// Loads the blocks `0` … `count − 1` under `vb` (e.g. `layer2`).
    pub fn load(
        vb: VarBuilder,
        kind: BlockKind,
        c_in: usize,
        planes: usize,
        count: usize,
        stride: usize,
    ) -> Result<Self> {
        let mut blocks = Vec::with_capacity(count);
        let mut c = c_in;
        for i in 0..count {
            let s = if i == 0 { stride } else { 1 };
            blocks.push(Block::load(vb.pp(i), kind, c, planes, s)?);
            c = planes * kind.expansion();
        }
        Ok(Stage { blocks })
    }

    /// Runs every block.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut y = x.clone();
        for b in &self.blocks {
            y = b.forward(&y)?;
        }
        Ok(y)
    }
}

/// The stem: 7×7 stride-2 convolution with BatchNorm, ReLU, 3×3 stride-2 max-pool (padding 1).
#[derive(Debug, Clone)]
pub struct Stem {
    conv: Conv2d,
}

impl Stem {
    /// Loads `conv1` and `bn1` under `vb` for `c_in` input channels.
    pub fn load(vb: &VarBuilder, c_in: usize) -> Result<Self> {
        let conv = Conv2d::load_with_batch_norm(
            &vb.pp("conv1"),
            &vb.pp("bn1"),
            ConvShape::same(c_in, 64, 7).with_stride(2),
        )?;
        Ok(Stem { conv })
    }

    /// Stride-4 features with 64 channels.
    ///
    /// ReLU and max-pool commute, and after the ReLU every value is ≥ 0, so zero padding of the
    /// pool equals PyTorch's −∞ padding; this also covers DEVA's mask encoder, which pools
    /// before the ReLU.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = self.conv.forward(x)?.relu()?;
        let y = y.pad_with_zeros(2, 1, 1)?.pad_with_zeros(3, 1, 1)?;
        Ok(y.max_pool2d_with_stride(3, 2)?)
    }
}
