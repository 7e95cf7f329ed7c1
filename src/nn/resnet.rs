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
//! [`DeformConv2d`] with `DEFORM_NUM_GROUPS` deformable groups.

use candle_core::Tensor;
use candle_nn::VarBuilder;

use super::act::Activation;
use super::conv::{Conv2d, ConvKernel, ConvShape, ConvWeights};
use super::deform_conv::DeformConv2d;
use super::weights::Weights;
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
struct DeformLayer {
    offset: Conv2d,
    conv: DeformConv2d,
    modulated: bool,
}

impl DeformLayer {
    /// `conv2_offset` and `conv2` (+ `conv2.norm`) of the block at `vb`.
    fn load(
        vb: &VarBuilder,
        shape: ConvShape,
        deform: Deform,
        layout: Layout,
        kernel: ConvKernel,
    ) -> Result<Self> {
        let taps = shape.k * shape.k * deform.groups;
        let offset_shape = ConvShape {
            c_out: if deform.modulated { 3 * taps } else { 2 * taps },
            ..shape
        };
        let offset = Conv2d::load(&vb.pp("conv2_offset"), offset_shape, kernel)?;
        let (conv, bn) = layout.conv_bn(vb, 2);
        let w = ConvWeights::load_with_batch_norm(&conv, &bn, shape)?;
        Ok(DeformLayer {
            offset,
            conv: DeformConv2d::new(w, 1, deform.groups)?,
            modulated: deform.modulated,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
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
    #[allow(clippy::too_many_arguments)]
    fn load(
        vb: VarBuilder,
        kind: BlockKind,
        c_in: usize,
        planes: usize,
        stride: usize,
        layout: Layout,
        deform: Option<Deform>,
        kernel: ConvKernel,
    ) -> Result<Self> {
        let out = planes * kind.expansion();
        let (s1, s3) = if layout.stride_in_1x1() {
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
            let layer = match deform {
                // The bottleneck's 3×3 convolution.
                Some(d) if kind == BlockKind::Bottleneck && i == 1 => {
                    Layer::Deformable(DeformLayer::load(&vb, shape, d, layout, kernel)?)
                }
                _ => {
                    let (conv, bn) = layout.conv_bn(&vb, i + 1);
                    Layer::Plain(Conv2d::load_with_batch_norm(&conv, &bn, shape, kernel)?)
                }
            };
            convs.push(layer);
        }
        let downsample = if stride != 1 || c_in != out {
            let (conv, bn) = layout.shortcut(&vb);
            Some(Conv2d::load_with_batch_norm(
                &conv,
                &bn,
                ConvShape::same(c_in, out, 1).with_stride(stride),
                kernel,
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
    /// Loads the blocks `0` … `count − 1` under `vb` (e.g. `layer2`), torchvision layout,
    /// computed by `kernel`.
    pub fn load(
        vb: VarBuilder,
        kind: BlockKind,
        c_in: usize,
        planes: usize,
        count: usize,
        stride: usize,
        kernel: ConvKernel,
    ) -> Result<Self> {
        let layout = Layout::Torchvision;
        Stage::load_layout(vb, kind, c_in, planes, count, stride, layout, kernel)
    }

    /// [`load`](Self::load) with the keys and stride placement of `layout`.
    #[allow(clippy::too_many_arguments)]
    pub fn load_layout(
        vb: VarBuilder,
        kind: BlockKind,
        c_in: usize,
        planes: usize,
        count: usize,
        stride: usize,
        layout: Layout,
        kernel: ConvKernel,
    ) -> Result<Self> {
        Stage::load_deformable(vb, kind, c_in, planes, count, stride, layout, None, kernel)
    }

    /// [`load_layout`](Self::load_layout) with deformable 3×3 convolutions in every
    /// bottleneck when `deform` is given (detectron2's `DeformBottleneckBlock`).
    #[allow(clippy::too_many_arguments)]
    pub fn load_deformable(
        vb: VarBuilder,
        kind: BlockKind,
        c_in: usize,
        planes: usize,
        count: usize,
        stride: usize,
        layout: Layout,
        deform: Option<Deform>,
        kernel: ConvKernel,
    ) -> Result<Self> {
        let mut blocks = Vec::with_capacity(count);
        let mut c = c_in;
        for i in 0..count {
            let s = if i == 0 { stride } else { 1 };
            let block = Block::load(vb.pp(i), kind, c, planes, s, layout, deform, kernel)?;
            blocks.push(block);
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
    /// Loads `conv1` and `bn1` under `vb` for `c_in` input channels (64 out).
    pub fn load(vb: &VarBuilder, c_in: usize, kernel: ConvKernel) -> Result<Self> {
        Stem::load_layout(vb, c_in, 64, Layout::Torchvision, kernel)
    }

    /// Loads the stem with `c_out` channels in `layout`: `conv1` + `bn1` (torchvision),
    /// `conv1` + `conv1.norm` (detectron2, under its `stem`) or `convolution` +
    /// `normalization` (Hugging Face, under `embedder.embedder`).
    pub fn load_layout(
        vb: &VarBuilder,
        c_in: usize,
        c_out: usize,
        layout: Layout,
        kernel: ConvKernel,
    ) -> Result<Self> {
        let (conv, bn) = match layout {
            Layout::HuggingFace => Layout::hf_conv_bn(vb),
            _ => layout.conv_bn(vb, 1),
        };
        let conv = Conv2d::load_with_batch_norm(
            &conv,
            &bn,
            ConvShape::same(c_in, c_out, 7).with_stride(2),
            kernel,
        )?;
        Ok(Stem { conv })
    }

    /// Stride-4 features (64 channels for torchvision's stem).
    ///
    /// ReLU and max-pool commute, and after the ReLU every value is ≥ 0, so zero padding of the
    /// pool equals PyTorch's −∞ padding; this also covers DEVA's mask encoder, which pools
    /// before the ReLU.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = self.conv.forward_relu(x)?;
        let y = y.pad_with_zeros(2, 1, 1)?.pad_with_zeros(3, 1, 1)?;
        Ok(y.max_pool2d_with_stride(3, 2)?)
    }
}

/// detectron2's `build_resnet_backbone`: stem and stages `res2` … `res5` (`MODEL.RESNETS.*`,
/// deformable 3×3 convolutions where `DEFORM_ON_PER_STAGE` says), frozen BatchNorm folded.
#[derive(Debug, Clone)]
pub struct Detectron2ResNet {
    stem: Stem,
    stages: Vec<Stage>,
}

/// `MODEL.RESNETS` settings of a detectron2 ResNet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Detectron2ResNetConfig {
    /// 50, 101 or 152 (bottleneck depths).
    pub depth: usize,
    /// `STEM_OUT_CHANNELS`.
    pub stem_out_channels: usize,
    /// `RES2_OUT_CHANNELS` (doubling per stage).
    pub res2_out_channels: usize,
    /// `WIDTH_PER_GROUP` (one group): the bottleneck width of `res2`, doubling per stage.
    pub width_per_group: usize,
    /// `STRIDE_IN_1X1`.
    pub stride_in_1x1: bool,
    /// `DEFORM_ON_PER_STAGE`: deformable 3×3 convolutions in `res2` … `res5`.
    #[serde(default)]
    pub deform_on_per_stage: [bool; 4],
    /// `DEFORM_MODULATED`: DCNv2 (offsets and a mask) rather than DCNv1.
    #[serde(default)]
    pub deform_modulated: bool,
    /// `DEFORM_NUM_GROUPS`.
    #[serde(default = "one")]
    pub deform_num_groups: usize,
}

fn one() -> usize {
    1
}

impl Detectron2ResNetConfig {
    /// Blocks per stage of the depth.
    pub fn blocks(&self) -> Result<[usize; 4]> {
        match self.depth {
            50 => Ok([3, 4, 6, 3]),
            101 => Ok([3, 4, 23, 3]),
            152 => Ok([3, 8, 36, 3]),
            d => Err(crate::Error::Config(format!(
                "resnet depth {d}: only the bottleneck depths 50, 101 and 152 are supported"
            ))),
        }
    }

    /// Output channels of `res2` … `res5`.
    pub fn out_channels(&self) -> [usize; 4] {
        [1, 2, 4, 8].map(|m| self.res2_out_channels * m)
    }

    /// This configuration with the depth and the deformable stages a checkpoint's keys under
    /// `prefix` (e.g. `backbone.bottom_up.`) show: the number of `res4` blocks (6, 23, 36 for
    /// depths 50, 101, 152), and per stage whether `resN.0.conv2_offset` exists, its output
    /// channels telling modulated (27 per deformable group) from plain (18) offsets (without
    /// deformable stages: detectron2's defaults, unmodulated, one group).
    pub fn read_from(self, w: &Weights, prefix: &str) -> Result<Self> {
        let depth = match w.count(&format!("{prefix}res4"), "conv1.weight") {
            6 => 50,
            23 => 101,
            36 => 152,
            n => {
                return Err(w.error(format!(
                    "{prefix}res4 has {n} blocks: not a ResNet-50, -101 or -152"
                )))
            }
        };
        let mut cfg = Detectron2ResNetConfig { depth, ..self };
        cfg.deform_on_per_stage =
            [2, 3, 4, 5].map(|s| w.contains(&format!("{prefix}res{s}.0.conv2_offset.weight")));
        // detectron2's defaults when no stage is deformable.
        (cfg.deform_modulated, cfg.deform_num_groups) = (false, 1);
        if let Some(s) = cfg.deform_on_per_stage.iter().position(|&d| d) {
            let key = format!("{prefix}res{}.0.conv2_offset.weight", s + 2);
            let c = w.dims(&key)?[0];
            (cfg.deform_modulated, cfg.deform_num_groups) = match c {
                c if c % 27 == 0 => (true, c / 27),
                c if c % 18 == 0 => (false, c / 18),
                c => return Err(w.error(format!("{key}: {c} offset channels"))),
            };
        }
        Ok(cfg)
    }
}

impl Detectron2ResNet {
    /// Loads `stem.*` and `res2.*` … `res5.*` under `vb` (detectron2's `bottom_up`), computed
    /// by `kernel`.
    pub fn load(vb: &VarBuilder, cfg: &Detectron2ResNetConfig, kernel: ConvKernel) -> Result<Self> {
        if cfg.res2_out_channels != 4 * cfg.width_per_group {
            return Err(crate::Error::Config(format!(
                "resnet: res2_out_channels {} must be 4 × width_per_group {}",
                cfg.res2_out_channels, cfg.width_per_group
            )));
        }
        let layout = Layout::Detectron2 {
            stride_in_1x1: cfg.stride_in_1x1,
        };
        let stem = Stem::load_layout(&vb.pp("stem"), 3, cfg.stem_out_channels, layout, kernel)?;
        let mut c_in = cfg.stem_out_channels;
        let mut stages = Vec::with_capacity(4);
        for (i, (count, out)) in cfg
            .blocks()?
            .into_iter()
            .zip(cfg.out_channels())
            .enumerate()
        {
            let stride = if i == 0 { 1 } else { 2 };
            let deform = cfg.deform_on_per_stage[i].then_some(Deform {
                modulated: cfg.deform_modulated,
                groups: cfg.deform_num_groups,
            });
            stages.push(Stage::load_deformable(
                vb.pp(format!("res{}", i + 2)),
                BlockKind::Bottleneck,
                c_in,
                out / 4,
                count,
                stride,
                layout,
                deform,
                kernel,
            )?);
            c_in = out;
        }
        Ok(Detectron2ResNet { stem, stages })
    }

    /// `res2` … `res5` (strides 4 … 32) of `x` `[n, 3, h, w]`.
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

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use candle_nn::VarMap;

    /// The kernel of these tests (EntitySeg's, the one user of detectron2's layout).
    const KERNEL: ConvKernel = ConvKernel::Direct;

    fn config(deform_on_per_stage: [bool; 4]) -> Detectron2ResNetConfig {
        Detectron2ResNetConfig {
            depth: 50,
            stem_out_channels: 4,
            res2_out_channels: 8,
            width_per_group: 2,
            stride_in_1x1: true,
            deform_on_per_stage,
            deform_modulated: true,
            deform_num_groups: 1,
        }
    }

    /// A DCNv2 stage whose offset branch predicts zero offsets and mask logits `c` is the plain
    /// stage with its 3×3 weights scaled by sigmoid(c): this pins the keys (`conv2_offset`,
    /// `conv2`, `conv2.norm`) and which third of the prediction is the mask.
    #[test]
    fn zero_offset_dcnv2_is_a_scaled_plain_convolution() {
        let dev = Device::Cpu;
        let vars = VarMap::new();
        let vb = VarBuilder::from_varmap(&vars, DType::F32, &dev);
        Detectron2ResNet::load(&vb, &config([false, true, false, false]), KERNEL).unwrap();
        let c = 1.3f64;
        for (name, var) in vars.data().lock().unwrap().iter() {
            let shape = var.shape().clone();
            let t = if name.contains("conv2_offset.weight") {
                Tensor::zeros(shape, DType::F32, &dev)
            } else if name.contains("conv2_offset.bias") {
                let n = shape.elem_count();
                let v: Vec<f32> = (0..n)
                    .map(|i| if i < 2 * n / 3 { 0.0 } else { c as f32 })
                    .collect();
                Tensor::from_vec(v, shape, &dev)
            } else if name.ends_with("running_var") {
                Tensor::rand(0.5f32, 1.5, shape, &dev)
            } else {
                Tensor::randn(0f32, 0.3, shape, &dev)
            };
            var.set(&t.unwrap()).unwrap();
        }
        let deformable =
            Detectron2ResNet::load(&vb, &config([false, true, false, false]), KERNEL).unwrap();
        let s = 1.0 / (1.0 + (-c).exp());
        for (name, var) in vars.data().lock().unwrap().iter() {
            if name.starts_with("res3.") && name.ends_with("conv2.weight") {
                var.set(&(var.as_tensor() * s).unwrap()).unwrap();
            }
        }
        let plain = Detectron2ResNet::load(&vb, &config([false; 4]), KERNEL).unwrap();
        let x = Tensor::randn(0f32, 1.0, (1, 3, 64, 48), &dev).unwrap();
        let (a, b) = (deformable.forward(&x).unwrap(), plain.forward(&x).unwrap());
        for (a, b) in a.iter().zip(&b) {
            let scale = b
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            let d = (a - b)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(scale > 0.0 && d <= 1e-5 * scale.max(1.0), "{d} of {scale}");
        }
    }

    /// Depth and deformable stages are read back from a checkpoint's keys.
    #[test]
    fn depth_and_deformable_stages_are_read_from_the_keys() {
        let dev = Device::Cpu;
        for (depth, deform, modulated, groups) in [
            (101, [false, true, true, true], true, 1),
            (50, [false; 4], false, 1),
            (50, [false, false, true, false], false, 2),
        ] {
            let want = Detectron2ResNetConfig {
                depth,
                deform_on_per_stage: deform,
                deform_modulated: modulated,
                deform_num_groups: groups,
                ..config([false; 4])
            };
            let vars = VarMap::new();
            let vb = VarBuilder::from_varmap(&vars, DType::F32, &dev);
            Detectron2ResNet::load(&vb.pp("backbone.bottom_up"), &want, KERNEL).unwrap();
            let named = vars
                .data()
                .lock()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
                .collect();
            let w = Weights::from_tensors("r.safetensors", named).unwrap();
            let got = config([false; 4])
                .read_from(&w, "backbone.bottom_up.")
                .unwrap();
            assert_eq!(got, want);
        }
    }
}
