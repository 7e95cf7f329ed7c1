//! Blocks of the XMem/DEVA family that work on per-object ("group") features
//! `[objects, channels, h, w]`: pre-activation residual blocks, CBAM attention, and the fusion
//! of image features (shared by all objects) with object features.

use candle_core::{Tensor, D};

use super::conv::{Conv2d, ConvShape};
use super::weights::Weights;
use crate::error::Result;

/// A fully connected layer `y = x Wᵀ + b`.
#[derive(Debug, Clone)]
pub struct Linear {
    weight_t: Tensor,
    bias: Tensor,
}

impl Linear {
    /// Loads `{prefix}.weight` `[out, in]` and `{prefix}.bias`.
    pub fn load(w: &mut Weights, prefix: &str, c_in: usize, c_out: usize) -> Result<Self> {
        let weight = w.tensor(&format!("{prefix}.weight"), &[c_out, c_in])?;
        let bias = w.tensor(&format!("{prefix}.bias"), &[c_out])?;
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
    fn load(
        w: &mut Weights,
        prefix: &str,
        c_image: usize,
        c_group: usize,
        c_out: usize,
        k: usize,
    ) -> Result<Self> {
        let c_in = c_image + c_group;
        let full = w.values(&format!("{prefix}.weight"), &[c_out, c_in, k, k])?;
        let bias = w.values(&format!("{prefix}.bias"), &[c_out])?;
        let kk = k * k;
        let (mut wi, mut wg) = (Vec::new(), Vec::new());
        for row in full.chunks(c_in * kk) {
            wi.extend_from_slice(&row[..c_image * kk]);
            wg.extend_from_slice(&row[c_image * kk..]);
        }
        let dev = w.device().clone();
        Ok(SplitConv {
            image: Conv2d::from_parts(ConvShape::same(c_image, c_out, k), wi, Some(bias), &dev)?,
            group: Conv2d::from_parts(ConvShape::same(c_group, c_out, k), wg, None, &dev)?,
        })
    }

    fn forward(&self, image: &Tensor, group: &Tensor) -> Result<Tensor> {
        Ok(self
            .group
            .forward(group)?
            .broadcast_add(&self.image.forward(image)?)?)
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
    /// Loads `{prefix}.{downsample,conv1,conv2}`.
    pub fn load(w: &mut Weights, prefix: &str, c_in: usize, c_out: usize) -> Result<Self> {
        let downsample = if c_in != c_out {
            Some(Conv2d::load(
                w,
                &format!("{prefix}.downsample"),
                ConvShape::same(c_in, c_out, 1),
            )?)
        } else {
            None
        };
        let conv1 = Conv2d::load(
            w,
            &format!("{prefix}.conv1"),
            ConvShape::same(c_in, c_out, 3),
        )?;
        let conv2 = Conv2d::load(
            w,
            &format!("{prefix}.conv2"),
            ConvShape::same(c_out, c_out, 3),
        )?;
        Ok(GroupResBlock {
            conv1,
            conv2,
            downsample,
        })
    }

    /// Applies the block.
    pub fn forward(&self, g: &Tensor) -> Result<Tensor> {
        let y = self.conv1.forward(&g.relu()?)?;
        let y = self.conv2.forward(&y.relu()?)?;
        let skip = match &self.downsample {
            Some(d) => d.forward(g)?,
            None => g.clone(),
        };
        Ok((y + skip)?)
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
    /// Loads `{prefix}.ChannelGate.mlp.{1,3}` and `{prefix}.SpatialGate.spatial.conv`.
    pub fn load(w: &mut Weights, prefix: &str, channels: usize) -> Result<Self> {
        let mid = channels / 16;
        Ok(Cbam {
            fc1: Linear::load(w, &format!("{prefix}.ChannelGate.mlp.1"), channels, mid)?,
            fc2: Linear::load(w, &format!("{prefix}.ChannelGate.mlp.3"), mid, channels)?,
            spatial: Conv2d::load(
                w,
                &format!("{prefix}.SpatialGate.spatial.conv"),
                ConvShape::same(2, 1, 7),
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
        let x = x.broadcast_mul(&gate)?;
        let pooled = Tensor::cat(&[x.max_keepdim(1)?, x.mean_keepdim(1)?], 1)?;
        let s = candle_nn::ops::sigmoid(&self.spatial.forward(&pooled)?)?;
        Ok(x.broadcast_mul(&s)?)
    }
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
    /// Loads `{prefix}.{block1,attention,block2}`.
    pub fn load(
        w: &mut Weights,
        prefix: &str,
        c_image: usize,
        c_group: usize,
        c_mid: usize,
        c_out: usize,
    ) -> Result<Self> {
        let b1 = format!("{prefix}.block1");
        let downsample =
            SplitConv::load(w, &format!("{b1}.downsample"), c_image, c_group, c_mid, 1)?;
        let conv1 = SplitConv::load(w, &format!("{b1}.conv1"), c_image, c_group, c_mid, 3)?;
        let conv2 = Conv2d::load(w, &format!("{b1}.conv2"), ConvShape::same(c_mid, c_mid, 3))?;
        let attention = Cbam::load(w, &format!("{prefix}.attention"), c_mid)?;
        let block2 = GroupResBlock::load(w, &format!("{prefix}.block2"), c_mid, c_out)?;
        Ok(FusionBlock {
            downsample,
            conv1,
            conv2,
            attention,
            block2,
        })
    }

    /// Fuses `x` (one image) into every object of `g`.
    pub fn forward(&self, x: &Tensor, g: &Tensor) -> Result<Tensor> {
        let y = self.conv1.forward(&x.relu()?, &g.relu()?)?;
        let y = self.conv2.forward(&y.relu()?)?;
        let g = (y + self.downsample.forward(x, g)?)?;
        let r = self.attention.forward(&g)?;
        self.block2.forward(&(g + r)?)
    }
}
