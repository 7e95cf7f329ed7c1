//! ResNet pieces (BatchNorm folded into the convolutions): the stem and stages of
//! BasicBlocks (ResNet-18/34) or Bottlenecks (ResNet-50+), in three checkpoint layouts
//! ([`Layout`]): torchvision's (`conv1`, `bn1`, `layerN.i.conv1`, `.bn1`, ...,
//! `.downsample.0` convolution and `.downsample.1` BatchNorm, stride on the 3×3 conv),
//! detectron2's (`stem.conv1`, `stem.conv1.norm`, `resN.i.conv1`, `.conv1.norm`, ...,
//! `.shortcut`, `.shortcut.norm`, stride on the first 1×1 conv when `STRIDE_IN_1X1`) and
//! Hugging Face's (`embedder.embedder.convolution`, `.normalization`,
//! `encoder.stages.S.layers.i.layer.N.convolution`, `.normalization`, `.shortcut.convolution`,
//! stride on the 3×3 conv).
//!
//! detectron2's bottlenecks may make their 3×3 convolution deformable (`DEFORM_ON_PER_STAGE`):
//! `conv2_offset` (a plain 3×3 convolution with bias) predicts the offsets, and with
//! `DEFORM_MODULATED` also the mask (its last third, through a sigmoid), for `conv2`, a
//! `DeformConv2d` with `DEFORM_NUM_GROUPS` deformable groups.
//!
//! What a stage is made of ([`StageSpec`]) is kept apart from how its weights are read and
//! computed ([`Loading`]: key layout and convolution kernel).

use candle_core::Tensor;
use candle_nn::VarBuilder;

use super::act::Activation;
use super::conv::{Conv2d, ConvKernel, ConvShape};
use super::resample::max_pool3_stride2;
use crate::error::Result;

mod deformable;
mod detectron2;

pub use deformable::Deform;
use deformable::DeformLayer;
pub use detectron2::Detectron2ResNetConfig;

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

/// How a checkpoint spells a ResNet's keys, and where a bottleneck's stride sits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// torchvision: `convN` + `bnN`, `downsample.0` + `downsample.1`; stride on the 3×3 conv.
    Torchvision,
    /// detectron2: `convN` + `convN.norm`, `shortcut` + `shortcut.norm`.
    Detectron2 {
        /// Bottleneck stride on the first 1×1 convolution (MSRA weights) instead of the 3×3.
        stride_in_1x1: bool,
    },
    /// Hugging Face `ResNetModel`: `layer.N` holding `convolution` + `normalization` (from 0),
    /// `shortcut.convolution` + `shortcut.normalization`; stride on the 3×3 conv.
    HuggingFace,
}

impl Layout {
    /// The convolution and BatchNorm of the `n`-th convolution of a block.
    fn conv_bn<'a>(self, vb: &VarBuilder<'a>, n: usize) -> (VarBuilder<'a>, VarBuilder<'a>) {
        let conv = vb.pp(format!("conv{n}"));
        match self {
            Layout::Torchvision => (conv, vb.pp(format!("bn{n}"))),
            Layout::Detectron2 { .. } => (conv.clone(), conv.pp("norm")),
            Layout::HuggingFace => Layout::hf_conv_bn(&vb.pp("layer").pp(n - 1)),
        }
    }

    /// A Hugging Face `ResNetConvLayer`: `convolution` and `normalization` under `vb`.
    fn hf_conv_bn<'a>(vb: &VarBuilder<'a>) -> (VarBuilder<'a>, VarBuilder<'a>) {
        (vb.pp("convolution"), vb.pp("normalization"))
    }

    /// The projection shortcut's convolution and BatchNorm.
    fn shortcut<'a>(self, vb: &VarBuilder<'a>) -> (VarBuilder<'a>, VarBuilder<'a>) {
        match self {
            Layout::Torchvision => (vb.pp("downsample").pp("0"), vb.pp("downsample").pp("1")),
            Layout::Detectron2 { .. } => (vb.pp("shortcut"), vb.pp("shortcut").pp("norm")),
            Layout::HuggingFace => Layout::hf_conv_bn(&vb.pp("shortcut")),
        }
    }

    fn stride_in_1x1(self) -> bool {
        matches!(
            self,
            Layout::Detectron2 {
                stride_in_1x1: true
            }
        )
    }
}

/// How a ResNet's weights are read and computed: the checkpoint's key layout and the
/// convolution kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Loading {
    /// Key spelling and stride placement.
    pub layout: Layout,
    /// The kernel every convolution runs.
    pub kernel: ConvKernel,
}

impl Loading {
    /// torchvision's keys, computed by `kernel`.
    pub fn torchvision(kernel: ConvKernel) -> Self {
        Loading {
            layout: Layout::Torchvision,
            kernel,
        }
    }
}

/// What a stage (`layerN`) is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StageSpec {
    /// The residual block.
    pub kind: BlockKind,
    /// Input channels.
    pub c_in: usize,
    /// Width of the blocks (output channels are `planes × expansion`).
    pub planes: usize,
    /// Number of blocks.
    pub count: usize,
    /// Stride of the first block.
    pub stride: usize,
    /// Deformable 3×3 convolutions in every bottleneck (detectron2's `DeformBottleneckBlock`).
    pub deform: Option<Deform>,
}

impl StageSpec {
    /// A plain stage.
    pub fn new(kind: BlockKind, c_in: usize, planes: usize, count: usize, stride: usize) -> Self {
        StageSpec {
            kind,
            c_in,
            planes,
            count,
            stride,
            deform: None,
        }
    }

    /// Output channels.
    pub fn c_out(&self) -> usize {
        self.planes * self.kind.expansion()
    }
}

/// A convolution of a block: plain, or deformable.
#[derive(Debug, Clone)]
enum Layer {
    Plain(Conv2d),
    Deformable(DeformLayer),
}

impl Layer {
    /// The layer followed by ReLU.
    fn forward_relu(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Layer::Plain(c) => c.forward_relu(x),
            Layer::Deformable(d) => Ok(d.forward(x)?.relu()?),
        }
    }

    /// `relu(layer(x) + skip)`.
    fn forward_add_relu(&self, x: &Tensor, skip: &Tensor) -> Result<Tensor> {
        match self {
            Layer::Plain(c) => c.forward_add_act(x, skip, Activation::Relu),
            Layer::Deformable(d) => Ok((d.forward(x)? + skip)?.relu()?),
        }
    }
}

/// One residual block.
#[derive(Debug, Clone)]
struct Block {
    convs: Vec<Layer>,
    downsample: Option<Conv2d>,
}

impl Block {
    /// The block at `vb` with `c_in` inputs and `stride` (the rest from `spec`).
    fn load(
        vb: VarBuilder,
        spec: &StageSpec,
        c_in: usize,
        stride: usize,
        how: Loading,
    ) -> Result<Self> {
        let (kind, planes, out) = (spec.kind, spec.planes, spec.c_out());
        let (s1, s3) = if how.layout.stride_in_1x1() {
            (stride, 1)
        } else {
            (1, stride)
        };
        let shapes = match kind {
            BlockKind::Basic => vec![
                ConvShape::same(c_in, planes, 3).with_stride(stride),
                ConvShape::same(planes, planes, 3),
            ],
            BlockKind::Bottleneck => vec![
                ConvShape::same(c_in, planes, 1).with_stride(s1),
                ConvShape::same(planes, planes, 3).with_stride(s3),
                ConvShape::same(planes, out, 1),
            ],
        };
        let mut convs = Vec::with_capacity(shapes.len());
        for (i, shape) in shapes.into_iter().enumerate() {
            let layer = match spec.deform {
                // The bottleneck's 3×3 convolution.
                Some(d) if kind == BlockKind::Bottleneck && i == 1 => {
                    Layer::Deformable(DeformLayer::load(&vb, shape, d, how)?)
                }
                _ => {
                    let (conv, bn) = how.layout.conv_bn(&vb, i + 1);
                    Layer::Plain(Conv2d::load_with_batch_norm(&conv, &bn, shape, how.kernel)?)
                }
            };
            convs.push(layer);
        }
        let downsample = if stride != 1 || c_in != out {
            let (conv, bn) = how.layout.shortcut(&vb);
            Some(Conv2d::load_with_batch_norm(
                &conv,
                &bn,
                ConvShape::same(c_in, out, 1).with_stride(stride),
                how.kernel,
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
            y = c.forward_relu(&y)?;
        }
        let skip = match &self.downsample {
            Some(d) => d.forward(x)?,
            None => x.clone(),
        };
        last.forward_add_relu(&y, &skip)
    }
}

/// A stage (`layerN`) of residual blocks; the first block carries the stride.
#[derive(Debug, Clone)]
pub struct Stage {
    blocks: Vec<Block>,
}

impl Stage {
    /// Loads the blocks `0` … `count − 1` of `spec` under `vb` (e.g. `layer2`).
    pub fn load(vb: VarBuilder, spec: StageSpec, how: Loading) -> Result<Self> {
        let mut blocks = Vec::with_capacity(spec.count);
        let mut c = spec.c_in;
        for i in 0..spec.count {
            let stride = if i == 0 { spec.stride } else { 1 };
            blocks.push(Block::load(vb.pp(i), &spec, c, stride, how)?);
            c = spec.c_out();
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
    /// Loads the stem with `c_in` inputs and `c_out` outputs under `vb`: `conv1` + `bn1`
    /// (torchvision), `conv1` + `conv1.norm` (detectron2, under its `stem`) or `convolution` +
    /// `normalization` (Hugging Face, under `embedder.embedder`).
    pub fn load(vb: &VarBuilder, c_in: usize, c_out: usize, how: Loading) -> Result<Self> {
        let (conv, bn) = match how.layout {
            Layout::HuggingFace => Layout::hf_conv_bn(vb),
            layout => layout.conv_bn(vb, 1),
        };
        let shape = ConvShape::same(c_in, c_out, 7).with_stride(2);
        let conv = Conv2d::load_with_batch_norm(&conv, &bn, shape, how.kernel)?;
        Ok(Stem { conv })
    }

    /// Stride-4 features.
    ///
    /// ReLU and max-pool commute, so this also covers DEVA's mask encoder, which pools before
    /// the ReLU.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        max_pool3_stride2(&self.conv.forward_relu(x)?)
    }
}

/// A ResNet body: the stem and its stages, each stage's output kept.
#[derive(Debug, Clone)]
pub struct ResNet {
    stem: Stem,
    stages: Vec<Stage>,
}

impl ResNet {
    /// The stem and stages, run in this order.
    pub fn new(stem: Stem, stages: Vec<Stage>) -> Self {
        ResNet { stem, stages }
    }

    /// Bottleneck stages of widths `widths` (output channels, 4 × planes) and `blocks[i]`
    /// blocks, loaded from `stage_vb(i)` after a stem of `stem_out` channels at `stem_vb`; the
    /// first stage keeps the stem's stride 4, each later one halves the resolution.
    pub fn load_bottlenecks<'a>(
        stem_vb: &VarBuilder<'a>,
        stage_vb: impl Fn(usize) -> VarBuilder<'a>,
        stem_out: usize,
        stages: &[(usize, usize)],
        deform: impl Fn(usize) -> Option<Deform>,
        how: Loading,
    ) -> Result<Self> {
        let stem = Stem::load(stem_vb, 3, stem_out, how)?;
        let mut c_in = stem_out;
        let mut loaded = Vec::with_capacity(stages.len());
        for (i, &(count, width)) in stages.iter().enumerate() {
            let stride = if i == 0 { 1 } else { 2 };
            let spec = StageSpec {
                deform: deform(i),
                ..StageSpec::new(BlockKind::Bottleneck, c_in, width / 4, count, stride)
            };
            loaded.push(Stage::load(stage_vb(i), spec, how)?);
            c_in = spec.c_out();
        }
        Ok(ResNet::new(stem, loaded))
    }

    /// Every stage's output of `x` `[n, c, h, w]`, finest first (strides 4, 8, …).
    pub fn forward(&self, x: &Tensor) -> Result<Vec<Tensor>> {
        let mut y = self.stem.forward(x)?;
        let mut out = Vec::with_capacity(self.stages.len());
        for s in &self.stages {
            y = s.forward(&y)?;
            out.push(y.clone());
        }
        Ok(out)
    }
}
