//! Layer normalisation: over the last dimension (PyTorch's `nn.LayerNorm`) and over the
//! channels of `(B, C, H, W)` maps (SAM's `LayerNorm2d`). On the CPU each runs as one
//! parallel, vectorised pass per block of rows that writes its output once (mean and variance
//! in two passes over the row, as PyTorch computes them); elsewhere candle's operations.

use std::mem::MaybeUninit;

use candle_core::{CpuStorage, CustomOp3, Layout, Shape, Tensor};
use candle_nn::VarBuilder;
use rayon::prelude::*;

use super::vmath::multiversion;
use crate::error::Result;

/// Independent partial sums of a row's reductions (element i in lane i % LANES).
const LANES: usize = 8;

/// Rows of the last-dimension norm per rayon task.
const ROWS_PER_TASK: usize = 64;

/// Pixels of the channel norm per rayon task.
const PIXELS_PER_TASK: usize = 1024;

/// `Σ f(v)` over `row`, in `LANES` lanes that stay in registers.
#[inline(always)]
fn lane_sum(row: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut lanes = [0f32; LANES];
    let mut chunks = row.chunks_exact(LANES);
    for c in &mut chunks {
        let c: &[f32; LANES] = c.try_into().expect("LANES elements");
        for l in 0..LANES {
            lanes[l] += f(c[l]);
        }
    }
    let mut sum = 0f32;
    for v in chunks.remainder() {
        sum += f(*v);
    }
    for l in lanes {
        sum += l;
    }
    sum
}

multiversion! {
    /// Normalises each row of `src` (rows of `weight.len()` values) into `dst`.
    fn normalise_rows(
        src: &[f32],
        weight: &[f32],
        bias: &[f32],
        eps: f32,
        dst: &mut [MaybeUninit<f32>],
    ) {
        let dim = weight.len();
        for (s, d) in src.chunks_exact(dim).zip(dst.chunks_exact_mut(dim)) {
            let mean = lane_sum(s, |v| v) / dim as f32;
            let var = lane_sum(s, |v| (v - mean) * (v - mean)) / dim as f32;
            let inv = 1.0 / (var + eps).sqrt();
            for i in 0..dim {
                d[i].write((s[i] - mean) * inv * weight[i] + bias[i]);
            }
        }
    }
}

multiversion! {
    /// Mean and `1 / √(var + eps)` over the channel planes (of `hw` pixels each) of `image`
    /// of the pixels `at..at + mean.len()`, into `mean` and `inv`.
    fn block_statistics(
        image: &[f32],
        hw: usize,
        at: usize,
        eps: f32,
        mean: &mut [f32],
        inv: &mut [f32],
    ) {
        let (n, c) = (mean.len(), (image.len() / hw) as f32);
        for plane in image.chunks_exact(hw) {
            let p = &plane[at..at + n];
            for i in 0..n {
                mean[i] += p[i];
            }
        }
        for m in mean.iter_mut() {
            *m /= c;
        }
        for plane in image.chunks_exact(hw) {
            let p = &plane[at..at + n];
            for i in 0..n {
                let v = p[i] - mean[i];
                inv[i] += v * v;
            }
        }
        for s in inv.iter_mut() {
            *s = 1.0 / (*s / c + eps).sqrt();
        }
    }
}

multiversion! {
    /// Normalises one group `src` (its channels' planes of `hw` pixels, one after another)
    /// into `dst`: `(x − mean) · inv · weight[c] + bias[c]` per channel `c` of the group, then
    /// ReLU where `relu`.
    fn normalise_group(
        src: &[f32],
        hw: usize,
        affine: (&[f32], &[f32]),
        eps: f32,
        relu: bool,
        dst: &mut [MaybeUninit<f32>],
    ) {
        let (weight, bias) = affine;
        let n = src.len() as f32;
        let mean = lane_sum(src, |v| v) / n;
        let var = lane_sum(src, |v| (v - mean) * (v - mean)) / n;
        let inv = 1.0 / (var + eps).sqrt();
        for (c, (s, d)) in src.chunks_exact(hw).zip(dst.chunks_exact_mut(hw)).enumerate() {
            let (w, b) = (weight[c], bias[c]);
            for i in 0..hw {
                let y = (s[i] - mean) * inv * w + b;
                d[i].write(if relu && y < 0.0 { 0.0 } else { y });
            }
        }
    }
}

/// The learned scale and shift of a layer norm.
#[derive(Debug, Clone)]
struct Affine {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl Affine {
    fn load(vb: &VarBuilder, dim: usize, eps: f64) -> Result<Self> {
        Ok(Affine {
            weight: vb.get(dim, "weight")?,
            bias: vb.get(dim, "bias")?,
            eps,
        })
    }

    /// `cpu` on contiguous CPU `f32` values of `x`, `elsewhere` on other devices and types.
    fn apply(
        &self,
        x: &Tensor,
        cpu: impl CustomOp3,
        elsewhere: impl FnOnce(&Tensor, &Affine) -> Result<Tensor>,
    ) -> Result<Tensor> {
        if !super::is_host_f32(x) {
            return elsewhere(x, self);
        }
        Ok(x.contiguous()?
            .apply_op3_no_bwd(&self.weight, &self.bias, &cpu)?)
    }
}

/// `nn.LayerNorm` over the last dimension, with `weight` and `bias` (its checkpoint keys).
#[derive(Debug, Clone)]
pub struct LayerNorm(Affine);

impl LayerNorm {
    /// The norm of `dim` features with `weight` and `bias` at `vb`.
    pub fn load(vb: VarBuilder, dim: usize, eps: f64) -> Result<Self> {
        Ok(LayerNorm(Affine::load(&vb, dim, eps)?))
    }

    /// Normalises `x [..., dim]` over its last dimension.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.0.apply(x, RowsOp(self.0.eps as f32), |x, a| {
            let x = x.contiguous()?;
            Ok(candle_nn::ops::layer_norm(
                &x,
                &a.weight,
                &a.bias,
                a.eps as f32,
            )?)
        })
    }
}

/// SAM's `LayerNorm2d`: the norm over the channels of `(B, C, H, W)` maps.
#[derive(Debug, Clone)]
pub struct LayerNorm2d(Affine);

impl LayerNorm2d {
    /// The norm of `channels` channels with `weight` and `bias` at `vb`.
    pub fn load(vb: VarBuilder, channels: usize, eps: f64) -> Result<Self> {
        Ok(LayerNorm2d(Affine::load(&vb, channels, eps)?))
    }

    /// Normalises each pixel of `x (B, C, H, W)` over its channels.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.0.apply(x, ChannelsOp(self.0.eps as f32), |x, a| {
            channel_norm_tensor_ops(x, &a.weight, &a.bias, a.eps)
        })
    }
}

/// `nn.GroupNorm` with `weight` and `bias`, optionally followed by ReLU: each image's channels
/// in groups, each group normalised over its channels and pixels (mean, then variance, as
/// PyTorch computes them), then scaled and shifted per channel. On the CPU one parallel pass
/// per group writes the output once, the ReLU included; elsewhere candle's `GroupNorm`.
#[derive(Debug, Clone)]
pub struct GroupNorm {
    affine: Affine,
    groups: usize,
    relu: bool,
}

impl GroupNorm {
    /// The norm of `channels` channels in `groups` groups with `weight` and `bias` at `vb`.
    pub fn load(vb: VarBuilder, channels: usize, groups: usize, eps: f64) -> Result<Self> {
        if groups == 0 || !channels.is_multiple_of(groups) {
            return Err(crate::Error::invalid(format!(
                "{}: {channels} channels cannot form {groups} GroupNorm groups",
                vb.prefix()
            )));
        }
        Ok(GroupNorm {
            affine: Affine::load(&vb, channels, eps)?,
            groups,
            relu: false,
        })
    }

    /// The same norm followed by ReLU.
    pub fn with_relu(self) -> Self {
        GroupNorm { relu: true, ..self }
    }

    /// Normalises `x (B, C, H, W)`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let op = GroupsOp {
            groups: self.groups,
            eps: self.affine.eps as f32,
            relu: self.relu,
        };
        self.affine.apply(x, op, |x, a| {
            let c = a.weight.dim(0)?;
            let norm =
                candle_nn::GroupNorm::new(a.weight.clone(), a.bias.clone(), c, self.groups, a.eps)?;
            let y = candle_core::Module::forward(&norm, x)?;
            Ok(if self.relu { y.relu()? } else { y })
        })
    }
}

/// The channel norm written with candle's tensor operations (any device).
fn channel_norm_tensor_ops(x: &Tensor, w: &Tensor, b: &Tensor, eps: f64) -> Result<Tensor> {
    let shape = (1, w.dim(0)?, 1, 1);
    let centred = x.broadcast_sub(&x.mean_keepdim(1)?)?;
    let var = centred.sqr()?.mean_keepdim(1)?;
    Ok(centred
        .broadcast_div(&(var + eps)?.sqrt()?)?
        .broadcast_mul(&w.reshape(shape)?)?
        .broadcast_add(&b.reshape(shape)?)?)
}

/// The operands of a norm op: input, weight, bias, after checking that the affine parameters
/// have `dim` values.
fn operands<'a>(
    name: &str,
    (s1, l1): (&'a CpuStorage, &Layout),
    (s2, l2): (&'a CpuStorage, &Layout),
    (s3, l3): (&'a CpuStorage, &Layout),
    dim: usize,
) -> candle_core::Result<(&'a [f32], &'a [f32], &'a [f32])> {
    let (x, w, b) = (
        super::contiguous_f32(s1, l1)?,
        super::contiguous_f32(s2, l2)?,
        super::contiguous_f32(s3, l3)?,
    );
    if w.len() != dim || b.len() != dim {
        candle_core::bail!(
            "{name}: input {:?} with {} weights and {} biases",
            l1.shape(),
            w.len(),
            b.len()
        );
    }
    Ok((x, w, b))
}

/// The last-dimension norm on contiguous CPU `f32` values.
struct RowsOp(f32);

impl CustomOp3 for RowsOp {
    fn name(&self) -> &'static str {
        "deva-layer-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let dim = *l1.shape().dims().last().unwrap_or(&0);
        let (x, w, b) = operands(self.name(), (s1, l1), (s2, l2), (s3, l3), dim)?;
        let mut y = Vec::with_capacity(x.len());
        if dim > 0 {
            y.spare_capacity_mut()[..x.len()]
                .par_chunks_mut(ROWS_PER_TASK * dim)
                .zip(x.par_chunks(ROWS_PER_TASK * dim))
                .for_each(|(d, s)| normalise_rows(s, w, b, self.0, d));
        }
        // SAFETY: `normalise_rows` wrote every element (each block's rows are whole rows,
        // `x.len()` being a multiple of `dim`).
        unsafe { y.set_len(x.len()) };
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }
}

/// The channel norm on contiguous CPU `f32` maps: the mean and the inverse deviation of each
/// pixel in parallel over blocks of pixels, then each channel's plane in parallel.
struct ChannelsOp(f32);

impl CustomOp3 for ChannelsOp {
    fn name(&self) -> &'static str {
        "deva-layer-norm-2d"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (batch, c, h, w) = l1.shape().dims4()?;
        let (x, weight, bias) = operands(self.name(), (s1, l1), (s2, l2), (s3, l3), c)?;
        let hw = h * w;
        let mut y = Vec::with_capacity(x.len());
        if hw > 0 && c > 0 {
            for (image, out) in x
                .chunks_exact(c * hw)
                .zip(y.spare_capacity_mut()[..x.len()].chunks_exact_mut(c * hw))
            {
                let (mean, inv) = pixel_statistics(image, hw, self.0);
                out.par_chunks_mut(hw)
                    .zip(image.par_chunks(hw))
                    .enumerate()
                    .for_each(|(ch, (o, plane))| {
                        let (wc, bc) = (weight[ch], bias[ch]);
                        for (((o, v), m), s) in o.iter_mut().zip(plane).zip(&mean).zip(&inv) {
                            o.write((v - m) * s * wc + bc);
                        }
                    });
            }
        }
        debug_assert_eq!(batch * c * hw, x.len());
        // SAFETY: every channel plane of every image was written in full above.
        unsafe { y.set_len(x.len()) };
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }
}

/// Mean and `1 / √(var + eps)` of each pixel over the channel planes (of `hw` pixels) of
/// `image`.
fn pixel_statistics(image: &[f32], hw: usize, eps: f32) -> (Vec<f32>, Vec<f32>) {
    let mut mean = vec![0f32; hw];
    let mut inv = vec![0f32; hw];
    mean.par_chunks_mut(PIXELS_PER_TASK)
        .zip(inv.par_chunks_mut(PIXELS_PER_TASK))
        .enumerate()
        .for_each(|(block, (m, s))| {
            block_statistics(image, hw, block * PIXELS_PER_TASK, eps, m, s)
        });
    (mean, inv)
}

/// The group norm on contiguous CPU `f32` maps: each (image, group) in parallel.
struct GroupsOp {
    groups: usize,
    eps: f32,
    relu: bool,
}

impl CustomOp3 for GroupsOp {
    fn name(&self) -> &'static str {
        "deva-group-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (_, c, h, w) = l1.shape().dims4()?;
        let (x, wt, b) = operands(self.name(), (s1, l1), (s2, l2), (s3, l3), c)?;
        let per_group = c / self.groups;
        let group_len = per_group * h * w;
        let mut y = Vec::with_capacity(x.len());
        if group_len > 0 {
            y.spare_capacity_mut()[..x.len()]
                .par_chunks_mut(group_len)
                .zip(x.par_chunks(group_len))
                .enumerate()
                .for_each(|(i, (d, s))| {
                    let c0 = (i % self.groups) * per_group;
                    let affine = (&wt[c0..c0 + per_group], &b[c0..c0 + per_group]);
                    normalise_group(s, h * w, affine, self.eps, self.relu, d)
                });
        }
        // SAFETY: `normalise_group` wrote every element of every group (the groups tile the
        // input, `c` being a multiple of `groups`, checked at load).
        unsafe { y.set_len(x.len()) };
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use candle_nn::VarMap;

    fn varbuilder(map: &VarMap) -> VarBuilder<'_> {
        VarBuilder::from_varmap(map, DType::F32, &Device::Cpu)
    }

    /// Random weights and biases (a `VarMap` initialises weights to ones, biases to zeros).
    fn randomise(map: &VarMap) {
        for var in map.all_vars() {
            let t = Tensor::randn(0f32, 1.0, var.shape(), &Device::Cpu).unwrap();
            var.set(&t).unwrap();
        }
    }

    #[test]
    fn rows_equal_candles_layer_norm() {
        let map = VarMap::new();
        let ours = LayerNorm::load(varbuilder(&map).pp("n"), 37, 1e-5).unwrap();
        randomise(&map);
        let theirs = candle_nn::LayerNorm::new(ours.0.weight.clone(), ours.0.bias.clone(), 1e-5);
        // Rows away from zero, so that the mean matters.
        let x = (Tensor::randn(0f32, 1.0, (3, 101, 37), &Device::Cpu).unwrap() + 5.0).unwrap();
        let d = super::super::max_abs_diff(
            &ours.forward(&x).unwrap(),
            &candle_core::Module::forward(&theirs, &x).unwrap(),
        );
        assert!(d < 1e-4, "max diff {d}");
    }

    #[test]
    fn channels_equal_the_tensor_operations_and_candles_layer_norm_2d() {
        let map = VarMap::new();
        let ours = LayerNorm2d::load(varbuilder(&map).pp("n"), 19, 1e-6).unwrap();
        randomise(&map);
        // More pixels than one task's block, and not a multiple of it.
        let x = Tensor::randn(0f32, 1.0, (2, 19, 41, 37), &Device::Cpu).unwrap();
        let fast = ours.forward(&x).unwrap();
        let a = &ours.0;
        let ops = channel_norm_tensor_ops(&x, &a.weight, &a.bias, a.eps).unwrap();
        assert!(super::super::max_abs_diff(&fast, &ops) < 1e-5);
        let theirs = candle_transformers::models::segment_anything::LayerNorm2d::new(
            19,
            1e-6,
            varbuilder(&map).pp("n"),
        )
        .unwrap();
        let d = super::super::max_abs_diff(&fast, &x.apply(&theirs).unwrap());
        assert!(d < 1e-5, "max diff {d}");
    }

    #[test]
    fn groups_equal_candles_group_norm_with_and_without_relu() {
        for (shape, groups) in [((2, 12, 5, 7), 4), ((1, 32, 9, 11), 32), ((1, 6, 1, 1), 3)] {
            let map = VarMap::new();
            let ours = GroupNorm::load(varbuilder(&map).pp("g"), shape.1, groups, 1e-5).unwrap();
            randomise(&map);
            let a = &ours.affine;
            let theirs =
                candle_nn::GroupNorm::new(a.weight.clone(), a.bias.clone(), shape.1, groups, 1e-5)
                    .unwrap();
            let x = (Tensor::randn(0f32, 1.0, shape, &Device::Cpu).unwrap() + 3.0).unwrap();
            let want = candle_core::Module::forward(&theirs, &x).unwrap();
            let d = super::super::max_abs_diff(&ours.forward(&x).unwrap(), &want);
            assert!(d < 1e-4, "{shape:?}, {groups} groups: max diff {d}");
            let d = super::super::max_abs_diff(
                &ours.with_relu().forward(&x).unwrap(),
                &want.relu().unwrap(),
            );
            assert!(d < 1e-4, "{shape:?}, {groups} groups, ReLU: max diff {d}");
        }
        let map = VarMap::new();
        let err = GroupNorm::load(varbuilder(&map).pp("g"), 10, 4, 1e-5).unwrap_err();
        assert!(err.to_string().contains("10 channels"), "{err}");
    }
}
