//! Blocks of the XMem/DEVA family that work on per-object ("group") features
//! `[objects, channels, h, w]`: pre-activation residual blocks, CBAM attention, and the fusion
//! of image features (shared by all objects) with object features.

use candle_core::{Tensor, D};
use candle_nn::VarBuilder;
use rayon::prelude::*;

use super::act::Activation;
use super::conv::{Conv2d, ConvKernel, ConvShape, ConvWeights};
use super::vmath::multiversion;
use super::{is_host_f32, with_host_slices};
use crate::error::Result;

/// A fully connected layer `y = x Wᵀ + b`.
#[derive(Debug, Clone)]
pub struct Linear {
    weight_t: Tensor,
    bias: Tensor,
}

impl Linear {
    /// Loads `weight` `[out, in]` and `bias` under `vb`.
    pub fn load(vb: &VarBuilder, c_in: usize, c_out: usize) -> Result<Self> {
        let weight = vb.get((c_out, c_in), "weight")?;
        let bias = vb.get(c_out, "bias")?;
        Ok(Linear {
            weight_t: weight.t()?.contiguous()?,
            bias,
        })
    }

    /// Applies the layer to `x` `[n, in]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.matmul(&self.weight_t)?.broadcast_add(&self.bias)?)
    }
}

/// A convolution over `cat([image, group])` split into its image part (computed once and
/// broadcast to every object) and its group part; exact because convolution is linear.
#[derive(Debug, Clone)]
struct SplitConv {
    image: Conv2d,
    group: Conv2d,
}

impl SplitConv {
    /// Loads the convolution at `vb` over `c_image + c_group` channels, then splits it.
    fn load(
        vb: &VarBuilder,
        c_image: usize,
        c_group: usize,
        c_out: usize,
        k: usize,
        kernel: ConvKernel,
    ) -> Result<Self> {
        let full = ConvWeights::load(vb, ConvShape::same(c_image + c_group, c_out, k))?;
        let (image, group) = full.split_input(c_image)?;
        Ok(SplitConv {
            image: Conv2d::new(image, kernel)?,
            group: Conv2d::new(group, kernel)?,
        })
    }

    /// The image part of `conv(cat([image, group]))`, through a ReLU with `relu`.
    fn image_part(&self, image: &Tensor, relu: bool) -> Result<Tensor> {
        if relu {
            self.image
                .forward_of_relu(&[image], Activation::Identity, None)
        } else {
            self.image.forward(image)
        }
    }

    /// `conv(cat([image, group]))` from the image part: the group part with it as residual.
    fn forward(&self, image_part: &Tensor, group: &Tensor) -> Result<Tensor> {
        self.group
            .forward_with(&[group], Activation::Identity, Some(image_part))
    }

    /// `relu(conv(relu(cat([image, group]))))` from the image part of the ReLU'd image, the
    /// ReLUs fused into the convolutions.
    fn forward_pre_post_relu(&self, image_part: &Tensor, group: &Tensor) -> Result<Tensor> {
        self.group
            .forward_of_relu(&[group], Activation::Relu, Some((image_part, true)))
    }
}

/// Pre-activation residual block: `conv2(relu(conv1(relu(g)))) + skip(g)`, 3×3 convolutions,
/// a 1×1 `downsample` on the skip path when the widths differ.
#[derive(Debug, Clone)]
pub struct GroupResBlock {
    conv1: Conv2d,
    conv2: Conv2d,
    downsample: Option<Conv2d>,
}

impl GroupResBlock {
    /// Loads `downsample` (when the widths differ), `conv1` and `conv2` under `vb`.
    pub fn load(vb: &VarBuilder, c_in: usize, c_out: usize, kernel: ConvKernel) -> Result<Self> {
        let conv = |name: &str, c_in, k| {
            Conv2d::load(&vb.pp(name), ConvShape::same(c_in, c_out, k), kernel)
        };
        let downsample = if c_in != c_out {
            Some(conv("downsample", c_in, 1)?)
        } else {
            None
        };
        let conv1 = conv("conv1", c_in, 3)?;
        let conv2 = conv("conv2", c_out, 3)?;
        Ok(GroupResBlock {
            conv1,
            conv2,
            downsample,
        })
    }

    /// Applies the block (the ReLUs and the residual fused into the convolutions).
    pub fn forward(&self, g: &Tensor) -> Result<Tensor> {
        let y = self.conv1.forward_of_relu(&[g], Activation::Relu, None)?;
        let skip = match &self.downsample {
            Some(d) => d.forward(g)?,
            None => g.clone(),
        };
        self.conv2
            .forward_with(&[&y], Activation::Identity, Some(&skip))
    }
}

/// CBAM: channel gate (shared MLP over average- and max-pooled features, reduction 16) then
/// spatial gate (7×7 convolution over channel max and mean).
#[derive(Debug, Clone)]
pub struct Cbam {
    fc1: Linear,
    fc2: Linear,
    spatial: Conv2d,
}

impl Cbam {
    /// Loads `ChannelGate.mlp.{1,3}` and `SpatialGate.spatial.conv` under `vb`.
    pub fn load(vb: &VarBuilder, channels: usize, kernel: ConvKernel) -> Result<Self> {
        let mid = channels / 16;
        let mlp = vb.pp("ChannelGate").pp("mlp");
        Ok(Cbam {
            fc1: Linear::load(&mlp.pp("1"), channels, mid)?,
            fc2: Linear::load(&mlp.pp("3"), mid, channels)?,
            spatial: Conv2d::load(
                &vb.pp("SpatialGate").pp("spatial").pp("conv"),
                ConvShape::same(2, 1, 7),
                kernel,
            )?,
        })
    }

    fn mlp(&self, v: &Tensor) -> Result<Tensor> {
        self.fc2.forward(&self.fc1.forward(v)?.relu()?)
    }

    /// The attended features.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (n, c, _, _) = x.dims4()?;
        let flat = x.flatten_from(2)?;
        let avg = flat.mean(D::Minus1)?;
        let max = flat.max(D::Minus1)?;
        let gate = (self.mlp(&avg)? + self.mlp(&max)?)?;
        let gate = candle_nn::ops::sigmoid(&gate)?.reshape((n, c, 1, 1))?;
        if is_host_f32(x) {
            self.spatial_gate_on_host(x, &gate)
        } else {
            self.spatial_gate(x, &gate)
        }
    }

    /// The rest of [`forward`](Self::forward) after the channel gate `gate` `[n, c, 1, 1]`:
    /// the spatial gate over the channels' maximum and mean of `x · gate`.
    fn spatial_gate(&self, x: &Tensor, gate: &Tensor) -> Result<Tensor> {
        let x = x.broadcast_mul(gate)?;
        let pooled = Tensor::cat(&[x.max_keepdim(1)?, x.mean_keepdim(1)?], 1)?;
        let s = candle_nn::ops::sigmoid(&self.spatial.forward(&pooled)?)?;
        Ok(x.broadcast_mul(&s)?)
    }

    /// [`spatial_gate`](Self::spatial_gate) on the CPU: `x · gate` and its maximum and mean
    /// over the channels in one pass, then the spatial gate multiplied in place (the same
    /// operations, without the intermediate tensors).
    fn spatial_gate_on_host(&self, x: &Tensor, gate: &Tensor) -> Result<Tensor> {
        let (n, c, h, w) = x.dims4()?;
        let plane = h * w;
        let (mut y, pooled) = with_host_slices(&[x, gate], |sl| {
            let (x, gates) = (sl[0], sl[1]);
            let mut y = vec![0f32; x.len()];
            let mut pooled = vec![0f32; n * 2 * plane];
            y.par_chunks_mut(c * plane)
                .zip(pooled.par_chunks_mut(2 * plane))
                .zip(x.par_chunks(c * plane).zip(gates.par_chunks(c)))
                .for_each(|((y, pooled), (x, gates))| {
                    let (max, mean) = pooled.split_at_mut(plane);
                    gate_and_pool(x, gates, y, max, mean);
                });
            Ok((y, pooled))
        })?;
        let pooled = Tensor::from_vec(pooled, (n, 2, h, w), x.device())?;
        let s = candle_nn::ops::sigmoid(&self.spatial.forward(&pooled)?)?;
        with_host_slices(&[&s], |sl| {
            y.par_chunks_mut(plane)
                .enumerate()
                .for_each(|(i, y)| scale_by(y, &sl[0][(i / c) * plane..][..plane]));
            Ok(())
        })?;
        Ok(Tensor::from_vec(y, (n, c, h, w), x.device())?)
    }
}

multiversion! {
/// `y = x · gate` channel by channel (`x`, `y` `[c, plane]`, one gate per channel), with the
/// channels' maximum of `y` into `max` and their mean into `mean` (`[plane]` each). With the
/// widest vectors of the CPU.
fn gate_and_pool(x: &[f32], gates: &[f32], y: &mut [f32], max: &mut [f32], mean: &mut [f32]) {
    let plane = max.len();
    max.fill(f32::NEG_INFINITY);
    mean.fill(0.0);
    for ((y, x), &g) in y.chunks_exact_mut(plane).zip(x.chunks_exact(plane)).zip(gates) {
        for (((y, &x), m), s) in y.iter_mut().zip(x).zip(max.iter_mut()).zip(mean.iter_mut()) {
            *y = x * g;
            *m = if *y > *m { *y } else { *m };
            *s += *y;
        }
    }
    let scale = 1.0 / gates.len() as f32;
    mean.iter_mut().for_each(|s| *s *= scale);
}
}

multiversion! {
/// `y *= s` element by element. With the widest vectors of the CPU.
fn scale_by(y: &mut [f32], s: &[f32]) {
    for (y, &s) in y.iter_mut().zip(s) {
        *y *= s;
    }
}
}

/// What a [`FusionBlock`] computes from the image alone: the image parts of `block1`'s
/// convolution and of its downsampling.
#[derive(Debug, Clone)]
pub struct ImageParts {
    conv1: Tensor,
    downsample: Tensor,
}

/// Fuses image features `x` `[1, c_image, h, w]` with object features `g`: block1 on
/// `cat([x, g])`, CBAM, then block2 on `g + cbam(g)`.
#[derive(Debug, Clone)]
pub struct FusionBlock {
    downsample: SplitConv,
    conv1: SplitConv,
    conv2: Conv2d,
    attention: Cbam,
    block2: GroupResBlock,
}

impl FusionBlock {
    /// Loads `block1` (its convolutions over `cat([image, group])` split in two after
    /// loading), `attention` and `block2` under `vb`.
    pub fn load(
        vb: &VarBuilder,
        c_image: usize,
        c_group: usize,
        c_mid: usize,
        c_out: usize,
        kernel: ConvKernel,
    ) -> Result<Self> {
        let b1 = vb.pp("block1");
        let split =
            |name: &str, k| SplitConv::load(&b1.pp(name), c_image, c_group, c_mid, k, kernel);
        let downsample = split("downsample", 1)?;
        let conv1 = split("conv1", 3)?;
        let conv2 = Conv2d::load(&b1.pp("conv2"), ConvShape::same(c_mid, c_mid, 3), kernel)?;
        let attention = Cbam::load(&vb.pp("attention"), c_mid, kernel)?;
        let block2 = GroupResBlock::load(&vb.pp("block2"), c_mid, c_out, kernel)?;
        Ok(FusionBlock {
            downsample,
            conv1,
            conv2,
            attention,
            block2,
        })
    }

    /// The parts of the block that read only the image `x`: computed once, they serve every
    /// chunk of objects ([`forward_with_image`](Self::forward_with_image)).
    pub fn image_parts(&self, x: &Tensor) -> Result<ImageParts> {
        Ok(ImageParts {
            conv1: self.conv1.image_part(x, true)?,
            downsample: self.downsample.image_part(x, false)?,
        })
    }

    /// Fuses `x` (one image) into every object of `g`.
    pub fn forward(&self, x: &Tensor, g: &Tensor) -> Result<Tensor> {
        self.forward_with_image(&self.image_parts(x)?, g)
    }

    /// [`forward`](Self::forward) from the image's parts.
    pub fn forward_with_image(&self, image: &ImageParts, g: &Tensor) -> Result<Tensor> {
        let y = self.conv1.forward_pre_post_relu(&image.conv1, g)?;
        let skip = self.downsample.forward(&image.downsample, g)?;
        let g = self
            .conv2
            .forward_with(&[&y], Activation::Identity, Some(&skip))?;
        let r = self.attention.forward(&g)?;
        self.block2.forward(&(g + r)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use std::collections::HashMap;

    /// The CPU pass of CBAM's spatial gate gives the tensor operations' values.
    #[test]
    fn cbam_spatial_gate_on_host_matches_the_tensor_ops() {
        let dev = Device::Cpu;
        let (c, mid) = (48, 3);
        let randn = |shape: &[usize]| Tensor::randn(0f32, 0.3, shape, &dev).unwrap();
        let tensors = HashMap::from([
            ("ChannelGate.mlp.1.weight".to_string(), randn(&[mid, c])),
            ("ChannelGate.mlp.1.bias".to_string(), randn(&[mid])),
            ("ChannelGate.mlp.3.weight".to_string(), randn(&[c, mid])),
            ("ChannelGate.mlp.3.bias".to_string(), randn(&[c])),
            (
                "SpatialGate.spatial.conv.weight".to_string(),
                randn(&[1, 2, 7, 7]),
            ),
            ("SpatialGate.spatial.conv.bias".to_string(), randn(&[1])),
        ]);
        let vb = VarBuilder::from_tensors(tensors, DType::F32, &dev);
        let cbam = Cbam::load(&vb, c, ConvKernel::Products).unwrap();
        // Two objects, an odd plane; gates of both signs.
        let x = Tensor::randn(0f32, 2.0, (2, c, 7, 11), &dev).unwrap();
        let gate = Tensor::randn(0f32, 1.0, (2, c, 1, 1), &dev).unwrap();
        let ours = cbam.spatial_gate_on_host(&x, &gate).unwrap();
        let ops = cbam.spatial_gate(&x, &gate).unwrap();
        assert_eq!(ours.dims(), ops.dims());
        let diff = crate::nn::max_abs_diff(&ours, &ops);
        assert!(diff <= 1e-5, "largest difference {diff}");
    }
}
