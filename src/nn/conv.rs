//! 2-D convolution with square kernels, zero padding, stride 1 or 2 and optional dilation, as
//! used by ResNets, DEVA's decoder and the U²-Net family, with a fast CPU path (bias, an
//! optional activation and an optional residual added in the same pass).
//!
//! On the CPU the input is copied once into padded planes, split into stride² phase planes,
//! so that the tap (kh, kw) of every output pixel reads one contiguous run of its plane. The
//! output is computed in blocks of whole rows whose accumulator stays in a core's cache, then
//! activated and written out by the same task. On CPUs with AVX-512 a direct kernel
//! ([`super::conv_direct`]) multiplies the taps straight from the planes; elsewhere each tap is
//! a matrix product over shifted views (or, for few input channels, one product over a column
//! buffer). The input may be given as several tensors whose channels are concatenated (no
//! copy of the concatenation). Other devices use candle's `conv2d`.

use std::mem::MaybeUninit;

use candle_core::{DType, Tensor};
use candle_nn::VarBuilder;
use rayon::prelude::*;

use super::act::Activation;
use super::conv_direct::{self, CO, PX};
use super::linalg::{gemm_acc, MatRef};
use crate::error::Result;

/// BatchNorm epsilon of PyTorch's default `BatchNorm2d`.
const BN_EPS: f64 = 1e-5;

/// Below this reduction length (`c_in · k²`) one product over a column buffer is faster.
const COLUMN_BUFFER_MAX_K: usize = 256;
/// Accumulator floats per block of output rows (`c_out · len`) for the matrix-product paths:
/// 128 KiB, so that a block's accumulator and inputs stay in a core's cache across the taps.
const BLOCK_ACC_FLOATS: usize = 1 << 15;
/// The same for the direct kernel, which keeps a tile in registers and can afford more.
const DIRECT_ACC_FLOATS: usize = 1 << 16;
/// Fewest output positions per block (keeps wide layers' products efficient).
const MIN_BLOCK: usize = 256;
/// Most weight floats one pass of the direct kernel reads (input channels are split into
/// chunks below it, so that the chunk's weights stay in a core's cache).
const DIRECT_WEIGHT_FLOATS: usize = 1 << 16;

/// A convolution layer `[c_out, c_in, k, k]` with bias, padding `pad` and `stride`.
#[derive(Debug, Clone)]
pub struct Conv2d {
    /// On the CPU: laid out for the chosen [`Path`] (see there); otherwise PyTorch's
    /// `[c_out, c_in, k, k]`.
    weight: Tensor,
    bias: Tensor,
    geometry: Geometry,
}

/// How the CPU computes a convolution, with the weight layout it needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Path {
    /// 1×1, stride 1, no padding: one matrix product, weight `[c_out, c_in]`.
    Pointwise,
    /// The AVX-512 direct kernel, weight as [`conv_direct::layout_weight`] makes it.
    Direct,
    /// One product over a column buffer per block, weight `[c_out, c_in·k·k]`.
    Columns,
    /// One product per tap over shifted views, weight tap-major `[k·k, c_out, c_in]`.
    Shifted,
}

#[derive(Debug, Clone, Copy)]
struct Geometry {
    c_in: usize,
    c_out: usize,
    k: usize,
    stride: usize,
    pad: usize,
    dilation: usize,
    path: Path,
}

impl Geometry {
    fn out_len(&self, len: usize) -> usize {
        (len + 2 * self.pad - self.dilation * (self.k - 1) - 1) / self.stride + 1
    }

    /// How far (in plane elements of one row or column) the last tap reaches past the first.
    fn reach(&self) -> usize {
        (self.k - 1) * self.dilation / self.stride
    }

    /// The CPU path for this geometry on this machine.
    fn choose_path(&self) -> Path {
        if self.k == 1 && self.stride == 1 && self.pad == 0 {
            Path::Pointwise
        } else if self.c_out >= CO && conv_direct::available() {
            Path::Direct
        } else if self.c_in * self.k * self.k <= COLUMN_BUFFER_MAX_K {
            Path::Columns
        } else {
            Path::Shifted
        }
    }

    /// Output channels of the accumulator (padded to whole tiles on the direct path).
    fn acc_channels(&self) -> usize {
        match self.path {
            Path::Direct => self.c_out.div_ceil(CO) * CO,
            _ => self.c_out,
        }
    }
}

/// Shape of a convolution: channels in and out, kernel size, stride, padding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvShape {
    /// Input channels.
    pub c_in: usize,
    /// Output channels.
    pub c_out: usize,
    /// Square kernel size.
    pub k: usize,
    /// Stride (1 or 2).
    pub stride: usize,
    /// Zero padding on every side.
    pub pad: usize,
}

impl ConvShape {
    /// A stride-1 convolution with "same" padding (`k / 2`).
    pub fn same(c_in: usize, c_out: usize, k: usize) -> Self {
        ConvShape {
            c_in,
            c_out,
            k,
            stride: 1,
            pad: k / 2,
        }
    }

    /// This shape with another stride.
    pub fn with_stride(self, stride: usize) -> Self {
        ConvShape { stride, ..self }
    }

    fn weight_shape(&self) -> (usize, usize, usize, usize) {
        (self.c_out, self.c_in, self.k, self.k)
    }
}

/// The parameters of a convolution as the checkpoint holds them (`weight` `[c_out, c_in, k,
/// k]`, `bias` `[c_out]`), before [`Conv2d::new`] lays them out for speed. Stacking,
/// splitting and BatchNorm folding happen here, after loading.
#[derive(Debug, Clone)]
pub struct ConvWeights {
    /// Geometry.
    pub shape: ConvShape,
    /// `[c_out, c_in, k, k]`.
    pub weight: Tensor,
    /// `[c_out]`.
    pub bias: Tensor,
}

impl ConvWeights {
    /// `weight` and `bias` of the convolution at `vb`.
    pub fn load(vb: &VarBuilder, shape: ConvShape) -> Result<Self> {
        Ok(ConvWeights {
            weight: vb.get(shape.weight_shape(), "weight")?,
            bias: vb.get(shape.c_out, "bias")?,
            shape,
        })
    }

    /// The bias-free convolution at `vb` (`weight` only), with a zero bias.
    pub fn load_without_bias(vb: &VarBuilder, shape: ConvShape) -> Result<Self> {
        let weight = vb.get(shape.weight_shape(), "weight")?;
        Ok(ConvWeights {
            bias: Tensor::zeros(shape.c_out, weight.dtype(), weight.device())?,
            weight,
            shape,
        })
    }

    /// A bias-free convolution at `conv` followed by the eval-mode BatchNorm at `bn`, folded
    /// into one convolution: `weight · γ/√(var + ε)` and bias `β − mean · γ/√(var + ε)`
    /// (the factors computed in f64).
    pub fn load_with_batch_norm(
        conv: &VarBuilder,
        bn: &VarBuilder,
        shape: ConvShape,
    ) -> Result<Self> {
        let weight = conv.get(shape.weight_shape(), "weight")?;
        let c = shape.c_out;
        let gamma = bn.get(c, "weight")?.to_dtype(DType::F64)?;
        let beta = bn.get(c, "bias")?.to_dtype(DType::F64)?;
        let mean = bn.get(c, "running_mean")?.to_dtype(DType::F64)?;
        let var = bn.get(c, "running_var")?.to_dtype(DType::F64)?;
        // The step counter is training state; older checkpoints lack it.
        if bn.contains_tensor("num_batches_tracked") {
            bn.get_unchecked_dtype("num_batches_tracked", DType::I64)?;
        }
        let scale = (gamma / (var + BN_EPS)?.sqrt()?)?;
        let bias = (beta - (mean * &scale)?)?.to_dtype(DType::F32)?;
        let scale = scale.to_dtype(DType::F32)?.reshape((c, 1, 1, 1))?;
        Ok(ConvWeights {
            weight: weight.broadcast_mul(&scale)?,
            bias,
            shape,
        })
    }

    /// Convolutions of one input and geometry stacked along the output channels.
    pub fn stack(parts: &[ConvWeights]) -> Result<Self> {
        let first = parts
            .first()
            .ok_or_else(|| crate::Error::invalid("nothing to stack"))?;
        if parts.iter().any(|p| {
            ConvShape {
                c_out: first.shape.c_out,
                ..p.shape
            } != first.shape
        }) {
            return Err(crate::Error::invalid(
                "stacked convolutions must share input channels, kernel, stride and padding",
            ));
        }
        let weights: Vec<&Tensor> = parts.iter().map(|p| &p.weight).collect();
        let biases: Vec<&Tensor> = parts.iter().map(|p| &p.bias).collect();
        Ok(ConvWeights {
            shape: ConvShape {
                c_out: parts.iter().map(|p| p.shape.c_out).sum(),
                ..first.shape
            },
            weight: Tensor::cat(&weights, 0)?,
            bias: Tensor::cat(&biases, 0)?,
        })
    }

    /// Splits the input channels at `at`: a convolution over `cat([a, b])` is the sum of one
    /// over `a` (which keeps the bias) and one over `b` (bias zero).
    pub fn split_input(&self, at: usize) -> Result<(Self, Self)> {
        let s = self.shape;
        let first = ConvWeights {
            shape: ConvShape { c_in: at, ..s },
            weight: self.weight.narrow(1, 0, at)?.contiguous()?,
            bias: self.bias.clone(),
        };
        let second = ConvWeights {
            shape: ConvShape {
                c_in: s.c_in - at,
                ..s
            },
            weight: self.weight.narrow(1, at, s.c_in - at)?.contiguous()?,
            bias: self.bias.zeros_like()?,
        };
        Ok((first, second))
    }
}

impl Conv2d {
    /// The convolution with parameters `w`; on the CPU, the weights are laid out once here for
    /// the path that computes it.
    pub fn new(w: ConvWeights) -> Result<Self> {
        Conv2d::dilated(w, 1)
    }

    /// The convolution with parameters `w` whose taps are `dilation` pixels apart.
    pub fn dilated(w: ConvWeights, dilation: usize) -> Result<Self> {
        let shape = w.shape;
        if dilation == 0 || shape.k == 0 || shape.stride == 0 {
            return Err(crate::Error::invalid(format!(
                "convolution: kernel {}, stride {} and dilation {dilation} must be positive",
                shape.k, shape.stride
            )));
        }
        let mut geometry = Geometry {
            c_in: shape.c_in,
            c_out: shape.c_out,
            k: shape.k,
            stride: shape.stride,
            pad: shape.pad,
            dilation,
            path: Path::Shifted,
        };
        geometry.path = geometry.choose_path();
        let weight = w.weight.to_dtype(DType::F32)?;
        let weight = match geometry.path {
            _ if !weight.device().is_cpu() => weight.contiguous()?,
            Path::Direct => conv_direct::layout_weight(&weight)?,
            // [c_out, c_in, kh, kw] → [kh·kw, c_out, c_in].
            Path::Shifted => weight.permute((2, 3, 0, 1))?.contiguous()?.reshape((
                shape.k * shape.k,
                shape.c_out,
                shape.c_in,
            ))?,
            Path::Pointwise | Path::Columns => weight.contiguous()?,
        };
        Ok(Conv2d {
            weight,
            bias: w.bias.to_dtype(DType::F32)?.contiguous()?,
            geometry,
        })
    }

    /// Loads the convolution at `vb` (`weight`, `bias`).
    pub fn load(vb: &VarBuilder, shape: ConvShape) -> Result<Self> {
        Conv2d::new(ConvWeights::load(vb, shape)?)
    }

    /// Loads a bias-free convolution at `conv` with the BatchNorm at `bn` folded in.
    pub fn load_with_batch_norm(
        conv: &VarBuilder,
        bn: &VarBuilder,
        shape: ConvShape,
    ) -> Result<Self> {
        Conv2d::new(ConvWeights::load_with_batch_norm(conv, bn, shape)?)
    }

    /// Applies the convolution to `x` of shape `[batch, c_in, h, w]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_with(&[x], Activation::Identity, None)
    }

    /// The convolution followed by ReLU (fused on the CPU).
    pub fn forward_relu(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_with(&[x], Activation::Relu, None)
    }

    /// The convolution followed by `act` (fused on the CPU).
    pub fn forward_act(&self, x: &Tensor, act: Activation) -> Result<Tensor> {
        self.forward_with(&[x], act, None)
    }

    /// `act(conv(cat(parts, 1))) + residual`: the convolution of the channel concatenation of
    /// `parts` (each `[batch, c_i, h, w]`), followed by `act`, plus `residual` (of the output's
    /// shape) if given. On the CPU the concatenation is never made and the activation and the
    /// residual are applied as the output is written.
    pub fn forward_with(
        &self,
        parts: &[&Tensor],
        act: Activation,
        residual: Option<&Tensor>,
    ) -> Result<Tensor> {
        self.forward_fused(parts, act, residual.map(|r| (r, false)))
    }

    /// `act(conv(x) + residual)`, fused on the CPU (a ResNet block's last convolution).
    pub fn forward_add_act(
        &self,
        x: &Tensor,
        residual: &Tensor,
        act: Activation,
    ) -> Result<Tensor> {
        self.forward_fused(&[x], act, Some((residual, true)))
    }

    /// The convolution of the concatenated `parts` with `act` and a residual added after
    /// the activation, or before it where the flag says so.
    fn forward_fused(
        &self,
        parts: &[&Tensor],
        act: Activation,
        residual: Option<(&Tensor, bool)>,
    ) -> Result<Tensor> {
        let (residual, before) = match residual {
            Some((r, before)) => (Some(r), before),
            None => (None, false),
        };
        let g = self.geometry;
        let first = parts
            .first()
            .ok_or_else(|| crate::Error::invalid("convolution of no input"))?;
        let (b, _, h, w) = first.dims4()?;
        let mut channels = Vec::with_capacity(parts.len());
        for p in parts {
            let (pb, c, ph, pw) = p.dims4()?;
            if (pb, ph, pw) != (b, h, w) {
                return Err(crate::Error::invalid(format!(
                    "convolution inputs of shapes {:?} and {:?} cannot be concatenated",
                    first.dims(),
                    p.dims()
                )));
            }
            channels.push(c);
        }
        let c: usize = channels.iter().sum();
        if c != g.c_in {
            return Err(crate::Error::invalid(format!(
                "convolution expects {} input channels, got {c}",
                g.c_in
            )));
        }
        let out_shape = (b, g.c_out, g.out_len(h), g.out_len(w));
        if let Some(r) = residual {
            if r.dims4()? != out_shape {
                return Err(crate::Error::invalid(format!(
                    "convolution residual of shape {:?}, the output is {out_shape:?}",
                    r.dims()
                )));
            }
        }
        let host = parts
            .iter()
            .chain(residual.as_slice())
            .all(|t| t.device().is_cpu() && t.dtype() == DType::F32);
        if host && h > 0 && w > 0 {
            let mut all: Vec<&Tensor> = parts.to_vec();
            all.extend([&self.weight, &self.bias]);
            all.extend(residual);
            let out = super::with_host_slices(&all, |sl| {
                let (xs, rest) = sl.split_at(parts.len());
                let parts: Vec<(&[f32], usize)> =
                    xs.iter().copied().zip(channels.iter().copied()).collect();
                let op = CpuConv { g, act, before };
                Ok(op.run(&parts, (b, h, w), rest[0], rest[1], rest.get(2).copied()))
            })?;
            return Ok(Tensor::from_vec(out, out_shape, first.device())?);
        }
        let x = match parts {
            [x] => (*x).clone(),
            _ => Tensor::cat(parts, 1)?,
        };
        let y = x.conv2d(&self.weight, g.pad, g.stride, g.dilation, 1)?;
        let y = y.broadcast_add(&self.bias.reshape((1, g.c_out, 1, 1))?)?;
        Ok(match residual {
            Some(r) if before => act.forward(&(y + r)?)?,
            Some(r) => (act.forward(&y)? + r)?,
            None => act.forward(&y)?,
        })
    }
}

/// The CPU convolution of one geometry with a fused activation.
struct CpuConv {
    g: Geometry,
    act: Activation,
    /// Whether a residual is added before the activation (else after it).
    before: bool,
}

/// The padded input of one image split into `stride²` phase planes of `rows × cols` (+ tail),
/// followed by [`PX`] zeros that the direct kernel's last tile may read.
struct Planes {
    data: Vec<f32>,
    plane_len: usize,
    cols: usize,
}

/// Writes zeros into `s`.
fn zero(s: &mut [MaybeUninit<f32>]) {
    s.fill(MaybeUninit::new(0.0));
}

impl Planes {
    /// The planes of the input channels `chans` (each `h × w`).
    fn build(chans: &[&[f32]], h: usize, w: usize, g: &Geometry, out_h: usize) -> Planes {
        let (s, c) = (g.stride, chans.len());
        let (hp, wp) = (h + 2 * g.pad, w + 2 * g.pad);
        let cols = wp.div_ceil(s);
        let reach = g.reach();
        let rows = hp.div_ceil(s).max(out_h + reach);
        let plane_len = rows * cols + reach;
        let total = s * s * c * plane_len;
        let mut data = Vec::with_capacity(total + PX);
        let (planes, tail) = data.spare_capacity_mut()[..total + PX].split_at_mut(total);
        zero(tail);
        // Layout: [phase][channel][plane]; each (phase, channel) block written independently.
        planes
            .par_chunks_mut(plane_len)
            .enumerate()
            .for_each(|(i, plane)| {
                let (phase, ch) = (i / c, i % c);
                let (a, b) = (phase / s, phase % s);
                let src = chans[ch];
                let (body, end) = plane.split_at_mut(rows * cols);
                zero(end);
                for (r, dst) in body.chunks_mut(cols).enumerate() {
                    let yp = s * r + a;
                    if yp < g.pad || yp - g.pad >= h {
                        zero(dst);
                        continue;
                    }
                    let row = &src[(yp - g.pad) * w..(yp - g.pad + 1) * w];
                    if s == 1 {
                        let (left, rest) = dst.split_at_mut(g.pad);
                        let (mid, right) = rest.split_at_mut(w);
                        zero(left);
                        zero(right);
                        // SAFETY: `mid` and `row` both hold `w` floats; they do not overlap
                        // (the planes are a new allocation).
                        unsafe {
                            std::ptr::copy_nonoverlapping(
                                row.as_ptr(),
                                mid.as_mut_ptr().cast::<f32>(),
                                w,
                            )
                        };
                    } else {
                        for (j, d) in dst.iter_mut().enumerate() {
                            let xp = s * j + b;
                            let inside = xp >= g.pad && xp - g.pad < w;
                            d.write(if inside { row[xp - g.pad] } else { 0.0 });
                        }
                    }
                }
            });
        // SAFETY: the loop above and `zero(tail)` wrote every one of the `total + PX` floats.
        unsafe { data.set_len(total + PX) };
        Planes {
            data,
            plane_len,
            cols,
        }
    }

    /// Start of the run that tap (kh, kw) of channel `ch` reads.
    fn tap(&self, g: &Geometry, c_in: usize, ch: usize, kh: usize, kw: usize) -> usize {
        let (s, kh, kw) = (g.stride, kh * g.dilation, kw * g.dilation);
        let phase = (kh % s) * s + kw % s;
        (phase * c_in + ch) * self.plane_len + (kh / s) * self.cols + kw / s
    }
}

/// The output, written by the row blocks in parallel (each block its own rows).
struct SharedOut(*mut MaybeUninit<f32>);

// SAFETY: the blocks write disjoint ranges of the output (see `CpuConv::image`).
unsafe impl Sync for SharedOut {}

impl SharedOut {
    fn get(&self) -> *mut MaybeUninit<f32> {
        self.0
    }
}

/// `dst[i] = act(src[i]) + res[i]` (or `act(src[i] + res[i])` with `before`, or
/// `act(src[i])` without a residual), the activation chosen outside the loop; with 16-float
/// vectors where the CPU has AVX-512.
fn write_out(
    act: Activation,
    src: &[f32],
    res: Option<&[f32]>,
    before: bool,
    dst: &mut [MaybeUninit<f32>],
) {
    #[cfg(target_arch = "x86_64")]
    if conv_direct::available() {
        /// The same loops compiled for AVX-512.
        #[target_feature(enable = "avx512f")]
        fn wide(
            act: Activation,
            src: &[f32],
            res: Option<&[f32]>,
            before: bool,
            dst: &mut [MaybeUninit<f32>],
        ) {
            write_out_loops(act, src, res, before, dst)
        }
        // SAFETY: the CPU has AVX-512F (checked above).
        return unsafe { wide(act, src, res, before, dst) };
    }
    write_out_loops(act, src, res, before, dst)
}

/// The loops of [`write_out`].
#[inline(always)]
fn write_out_loops(
    act: Activation,
    src: &[f32],
    res: Option<&[f32]>,
    before: bool,
    dst: &mut [MaybeUninit<f32>],
) {
    #[inline(always)]
    fn each(
        src: &[f32],
        res: Option<&[f32]>,
        before: bool,
        dst: &mut [MaybeUninit<f32>],
        f: impl Fn(f32) -> f32,
    ) {
        match res {
            None => dst.iter_mut().zip(src).for_each(|(d, s)| {
                d.write(f(*s));
            }),
            Some(r) if before => dst.iter_mut().zip(src).zip(r).for_each(|((d, s), r)| {
                d.write(f(*s + r));
            }),
            Some(r) => dst.iter_mut().zip(src).zip(r).for_each(|((d, s), r)| {
                d.write(f(*s) + r);
            }),
        }
    }
    match act {
        Activation::Identity => each(src, res, before, dst, |v| v),
        Activation::Relu => each(src, res, before, dst, |v| v.max(0.0)),
        Activation::GeluErf => each(src, res, before, dst, |v| act.apply(v)),
    }
}

impl CpuConv {
    /// The output `[batch, c_out, out_h, out_w]` of the input given as `parts` (values and
    /// channel count of each, concatenated along the channels) of batch × h × w.
    fn run(
        &self,
        parts: &[(&[f32], usize)],
        (b, h, w): (usize, usize, usize),
        weight: &[f32],
        bias: &[f32],
        res: Option<&[f32]>,
    ) -> Vec<f32> {
        let g = &self.g;
        let per_image = g.c_out * g.out_len(h) * g.out_len(w);
        let mut out = Vec::with_capacity(b * per_image);
        for (i, dst) in out.spare_capacity_mut()[..b * per_image]
            .chunks_mut(per_image.max(1))
            .enumerate()
        {
            let image: Vec<(&[f32], usize)> = parts
                .iter()
                .map(|&(x, c)| (&x[i * c * h * w..(i + 1) * c * h * w], c))
                .collect();
            let res = res.map(|r| &r[i * per_image..(i + 1) * per_image]);
            self.image(&image, h, w, weight, bias, res, dst);
        }
        // SAFETY: `image` writes every element of its output (each output row of each
        // channel is written by the block that owns the row).
        unsafe { out.set_len(b * per_image) };
        out
    }

    /// One image: `parts` (`[c_i, h, w]` each) into `out [c_out, out_h, out_w]`, every element
    /// written.
    #[allow(clippy::too_many_arguments)]
    fn image(
        &self,
        parts: &[(&[f32], usize)],
        h: usize,
        w: usize,
        weight: &[f32],
        bias: &[f32],
        res: Option<&[f32]>,
        out: &mut [MaybeUninit<f32>],
    ) {
        let g = &self.g;
        let (out_h, out_w) = (g.out_len(h), g.out_len(w));
        let kk = g.k * g.k;
        let k_len = g.c_in * kk;
        let chans: Vec<&[f32]> = parts
            .iter()
            .flat_map(|&(x, c)| x.chunks(h * w).take(c))
            .collect();
        let planes = match g.path {
            Path::Pointwise => None,
            _ => Some(Planes::build(&chans, h, w, g, out_h)),
        };
        let cols = planes.as_ref().map_or(w, |p| p.cols);
        let c_acc = g.acc_channels();
        let target = match g.path {
            Path::Direct => DIRECT_ACC_FLOATS,
            _ => BLOCK_ACC_FLOATS,
        };
        // Blocks of whole output rows, one rayon task each: the block's accumulator
        // `[c_acc, len]` (and, on the column-buffer path, its `[k_len, len]` columns) stays in
        // cache through all the taps and the output pass.
        let rows = (target / (c_acc * cols).max(1))
            .max(MIN_BLOCK.div_ceil(cols))
            .clamp(1, out_h.max(1));
        let taps: Vec<usize> = match &planes {
            Some(p) => (0..kk)
                .map(|t| p.tap(g, g.c_in, 0, t / g.k, t % g.k))
                .collect(),
            None => Vec::new(),
        };
        if g.path == Path::Direct {
            assert_eq!(weight.len(), c_acc * k_len, "direct weight layout");
        }
        let shared = SharedOut(out.as_mut_ptr());
        let out_len = out.len();
        let act = self.act;
        (0..out_h.div_ceil(rows)).into_par_iter().for_each_init(
            || (Vec::new(), Vec::new()),
            |(acc, buf): &mut (Vec<f32>, Vec<f32>), blk| {
                let (y0, y1) = (blk * rows, ((blk + 1) * rows).min(out_h));
                let (start, len) = (y0 * cols, (y1 - y0) * cols);
                let stride = match g.path {
                    Path::Direct => len.div_ceil(PX) * PX,
                    _ => len,
                };
                acc.clear();
                for co in 0..c_acc {
                    let b = bias.get(co).copied().unwrap_or(0.0);
                    acc.extend(std::iter::repeat_n(b, stride));
                }
                match (g.path, &planes) {
                    (Path::Pointwise, _) => {
                        let mut c0 = 0;
                        for &(x, c) in parts {
                            let lhs = MatRef {
                                data: &weight[c0..],
                                rs: g.c_in,
                                cs: 1,
                            };
                            let rhs = MatRef {
                                data: &x[start..],
                                rs: h * w,
                                cs: 1,
                            };
                            gemm_acc(g.c_out, len, c, acc, stride, lhs, rhs, false);
                            c0 += c;
                        }
                    }
                    (Path::Direct, Some(p)) => {
                        direct_block(g, p, &taps, start, weight, acc, stride)
                    }
                    (Path::Columns, Some(p)) => {
                        buf.resize(k_len * len, 0.0);
                        for (r, dst) in buf.chunks_mut(len).enumerate() {
                            let (ch, kh, kw) = (r / kk, (r % kk) / g.k, r % g.k);
                            let at = p.tap(g, g.c_in, ch, kh, kw) + start;
                            dst.copy_from_slice(&p.data[at..at + len]);
                        }
                        let (lhs, rhs) = (MatRef::rows(weight, k_len), MatRef::rows(buf, len));
                        gemm_acc(g.c_out, len, k_len, acc, len, lhs, rhs, false);
                    }
                    (_, Some(p)) => {
                        for (t, &at) in taps.iter().enumerate() {
                            let lhs = MatRef::rows(&weight[t * g.c_out * g.c_in..], g.c_in);
                            let rhs = MatRef::rows(&p.data[at + start..], p.plane_len);
                            gemm_acc(g.c_out, len, g.c_in, acc, len, lhs, rhs, false);
                        }
                    }
                    (_, None) => unreachable!("only the pointwise path has no planes"),
                }
                // The block's output rows, dropping the columns past the output width.
                for co in 0..g.c_out {
                    for y in y0..y1 {
                        let src = &acc[co * stride + (y - y0) * cols..][..out_w];
                        let at = (co * out_h + y) * out_w;
                        assert!(at + out_w <= out_len);
                        // SAFETY: in bounds (asserted); row `y` of every channel belongs
                        // to this block alone, so no other task touches these elements.
                        let dst =
                            unsafe { std::slice::from_raw_parts_mut(shared.get().add(at), out_w) };
                        let res = res.map(|r| &r[at..at + out_w]);
                        write_out(act, src, res, self.before, dst);
                    }
                }
            },
        );
    }
}

/// One block of the direct path: `acc [c_acc, stride]` (bias already in it) += the
/// convolution of the output positions `start..start + stride` of the padded output.
fn direct_block(
    g: &Geometry,
    p: &Planes,
    taps: &[usize],
    start: usize,
    weight: &[f32],
    acc: &mut [f32],
    stride: usize,
) {
    let kk = taps.len();
    let c_acc = g.acc_channels();
    let chunk = (DIRECT_WEIGHT_FLOATS / (c_acc * kk)).max(1);
    // Every read of the kernel stays below this (see `Planes::build`'s tail).
    let last_read =
        (g.c_in - 1) * p.plane_len + taps.iter().max().copied().unwrap_or(0) + start + stride;
    assert!(last_read <= p.data.len() && acc.len() == c_acc * stride && stride.is_multiple_of(PX));
    for c0 in (0..g.c_in).step_by(chunk) {
        let kc = chunk.min(g.c_in - c0);
        for t in (0..stride).step_by(PX) {
            for grp in 0..c_acc / CO {
                // SAFETY: AVX-512F is present (the direct path is only chosen then); the reads
                // of `p.data` stay below `last_read` (asserted), the weights of the chunk are
                // inside the `[c_acc / CO, c_in, kk, CO]` layout, and the tile's accumulator
                // rows `grp·CO..grp·CO + CO`, columns `t..t + PX` are inside `acc`.
                unsafe {
                    conv_direct::tile(
                        p.data.as_ptr().add(start + t + c0 * p.plane_len),
                        p.plane_len,
                        taps,
                        kc,
                        weight.as_ptr().add((grp * g.c_in + c0) * kk * CO),
                        acc.as_mut_ptr().add(grp * CO * stride + t),
                        stride,
                    )
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn pseudo(n: usize, seed: u64) -> Vec<f32> {
        (0..n as u64)
            .map(|i| {
                let z = crate::nn::synthetic::splitmix64(seed.wrapping_add(i));
                (z >> 40) as f32 / (1u64 << 24) as f32 - 0.5
            })
            .collect()
    }

    /// Compares with candle's own conv2d (an independent implementation) for every path,
    /// with and without dilation and the fused activations.
    #[test]
    fn matches_candle_conv2d() {
        let dev = Device::Cpu;
        let cases = [
            // (c_in, c_out, k, stride, pad, dilation, h, w)
            (3, 5, 7, 2, 3, 1, 21, 18),
            (2, 1, 7, 1, 3, 1, 9, 11),
            (40, 6, 3, 1, 1, 1, 10, 13),
            (40, 6, 3, 2, 1, 1, 11, 12),
            (33, 7, 1, 1, 0, 1, 5, 6),
            (33, 7, 1, 2, 0, 1, 9, 7),
            (20, 4, 3, 1, 2, 2, 12, 13),
            (40, 5, 3, 1, 8, 8, 14, 15),
            (40, 3, 3, 2, 2, 2, 13, 12),
            // Eight output channels or more: the direct kernel where the CPU has it (tiles of
            // several rows and of part of one, channels padded to whole tiles, stride 2,
            // input channels in several chunks).
            (40, 16, 3, 1, 1, 1, 10, 13),
            (20, 12, 3, 1, 2, 2, 12, 13),
            (3, 16, 3, 2, 1, 1, 21, 18),
            (70, 9, 3, 1, 1, 1, 7, 50),
            (16, 24, 1, 2, 0, 1, 9, 7),
            (33, 8, 1, 1, 0, 1, 5, 6),
            (600, 16, 3, 1, 1, 1, 6, 5),
        ];
        for (i, &(c_in, c_out, k, stride, pad, dil, h, w)) in cases.iter().enumerate() {
            let shape = ConvShape {
                c_in,
                c_out,
                k,
                stride,
                pad,
            };
            let wv = pseudo(c_out * c_in * k * k, 10 + i as u64);
            let bv = pseudo(c_out, 20 + i as u64);
            let conv = Conv2d::dilated(
                ConvWeights {
                    shape,
                    weight: Tensor::from_vec(wv.clone(), (c_out, c_in, k, k), &dev).unwrap(),
                    bias: Tensor::from_vec(bv.clone(), c_out, &dev).unwrap(),
                },
                dil,
            )
            .unwrap();
            let x = Tensor::from_vec(pseudo(2 * c_in * h * w, i as u64), (2, c_in, h, w), &dev)
                .unwrap();
            let ours = conv.forward(&x).unwrap();
            let wt = Tensor::from_vec(wv, (c_out, c_in, k, k), &dev).unwrap();
            let bt = Tensor::from_vec(bv, (1, c_out, 1, 1), &dev).unwrap();
            let theirs = x
                .conv2d(&wt, pad, stride, dil, 1)
                .unwrap()
                .broadcast_add(&bt)
                .unwrap();
            // f32 rounding of sums taken in another order: 1e-5 of the outputs' magnitude
            // (the long reductions of the many-channel case reach values near 10).
            let scale = theirs.abs().unwrap().max_all().unwrap();
            let tol = 1e-5 * scale.to_scalar::<f32>().unwrap().max(1.0);
            let d = crate::nn::max_abs_diff(&ours, &theirs);
            assert!(d < tol, "case {i}: max diff {d}");
            let relu = conv.forward_relu(&x).unwrap();
            let d = crate::nn::max_abs_diff(&relu, &theirs.relu().unwrap());
            assert!(d < tol, "case {i} with ReLU: max diff {d}");
            let gelu = conv.forward_act(&x, Activation::GeluErf).unwrap();
            let d = crate::nn::max_abs_diff(&gelu, &theirs.gelu_erf().unwrap());
            assert!(d < tol, "case {i} with GELU: max diff {d}");
        }
    }

    /// The convolution of channel parts plus a residual equals candle's convolution of the
    /// concatenation, activated, plus the residual, on every path.
    #[test]
    fn parts_and_residual_match_the_concatenation() {
        let dev = Device::Cpu;
        for (i, &(c_out, k)) in [(16, 3), (3, 3), (12, 1)].iter().enumerate() {
            let (c1, c2, h, w) = (5, 7, 9, 11);
            let shape = ConvShape::same(c1 + c2, c_out, k);
            let wv = pseudo(c_out * (c1 + c2) * k * k, 30 + i as u64);
            let wt = Tensor::from_vec(wv, (c_out, c1 + c2, k, k), &dev).unwrap();
            let bt = Tensor::from_vec(pseudo(c_out, 40 + i as u64), c_out, &dev).unwrap();
            let conv = Conv2d::new(ConvWeights {
                shape,
                weight: wt.clone(),
                bias: bt.clone(),
            })
            .unwrap();
            let a = Tensor::from_vec(pseudo(c1 * h * w, 1), (1, c1, h, w), &dev).unwrap();
            let b = Tensor::from_vec(pseudo(c2 * h * w, 2), (1, c2, h, w), &dev).unwrap();
            let r = Tensor::from_vec(pseudo(c_out * h * w, 3), (1, c_out, h, w), &dev).unwrap();
            let ours = conv
                .forward_with(&[&a, &b], Activation::Relu, Some(&r))
                .unwrap();
            let theirs = (Tensor::cat(&[&a, &b], 1)
                .unwrap()
                .conv2d(&wt, k / 2, 1, 1, 1)
                .unwrap()
                .broadcast_add(&bt.reshape((1, c_out, 1, 1)).unwrap())
                .unwrap()
                .relu()
                .unwrap()
                + &r)
                .unwrap();
            let d = crate::nn::max_abs_diff(&ours, &theirs);
            assert!(d < 1e-5, "c_out {c_out}, k {k}: max diff {d}");
            let x = Tensor::cat(&[&a, &b], 1).unwrap();
            let ours = conv.forward_add_act(&x, &r, Activation::Relu).unwrap();
            let theirs = (x
                .conv2d(&wt, k / 2, 1, 1, 1)
                .unwrap()
                .broadcast_add(&bt.reshape((1, c_out, 1, 1)).unwrap())
                .unwrap()
                + &r)
                .unwrap()
                .relu()
                .unwrap();
            let d = crate::nn::max_abs_diff(&ours, &theirs);
            assert!(
                d < 1e-5,
                "c_out {c_out}, k {k}, residual first: max diff {d}"
            );
            let bad = conv.forward_with(&[&a, &a], Activation::Relu, None);
            assert!(bad.unwrap_err().to_string().contains("input channels"));
        }
    }
}
