//! 2-D convolution with square kernels, zero padding, stride 1 or 2 and optional dilation, as
//! used by ResNets, DEVA's decoder and the U²-Net family, with a fast CPU path (bias and an
//! optional ReLU applied in the same pass).
//!
//! On the CPU a convolution is computed as k² matrix products over shifted views of a padded
//! copy of the input (no im2col buffer): with the input split into stride² phase planes, the
//! tap (kh, kw) of every output pixel reads one contiguous run of its plane. Inputs with few
//! channels (stems, attention maps) use a column buffer and one product instead. Other devices
//! use candle's `conv2d`.

use candle_core::{CpuStorage, CustomOp3, DType, Layout, Shape, Tensor};
use candle_nn::VarBuilder;
use rayon::prelude::*;

use super::act::Activation;
use super::linalg::{gemm_acc, MatRef};
use crate::error::Result;

/// BatchNorm epsilon of PyTorch's default `BatchNorm2d`.
const BN_EPS: f64 = 1e-5;

/// Below this reduction length (`c_in · k²`) one product over a column buffer is faster.
const COLUMN_BUFFER_MAX_K: usize = 256;
/// Accumulator floats per column block (`c_out · block`): 128 KiB, so that a block's
/// accumulator and inputs stay in a core's cache across the taps.
const BLOCK_ACC_FLOATS: usize = 1 << 15;
/// Fewest output columns per block (keeps wide layers' products efficient).
const MIN_BLOCK: usize = 256;

/// A convolution layer `[c_out, c_in, k, k]` with bias, padding `pad` and `stride`.
#[derive(Debug, Clone)]
pub struct Conv2d {
    /// On the CPU with the shifted-product path: tap-major `[k·k, c_out, c_in]`, so that every
    /// tap's matrix is contiguous; otherwise PyTorch's `[c_out, c_in, k, k]`.
    weight: Tensor,
    bias: Tensor,
    geometry: Geometry,
}

#[derive(Debug, Clone, Copy)]
struct Geometry {
    c_in: usize,
    c_out: usize,
    k: usize,
    stride: usize,
    pad: usize,
    dilation: usize,
}

impl Geometry {
    fn out_len(&self, len: usize) -> usize {
        (len + 2 * self.pad - self.dilation * (self.k - 1) - 1) / self.stride + 1
    }

    /// How far (in plane elements of one row or column) the last tap reaches past the first.
    fn reach(&self) -> usize {
        (self.k - 1) * self.dilation / self.stride
    }

    /// Whether the CPU path multiplies per tap over shifted views (else one product over a
    /// column buffer, or a plain product for 1×1 stride-1 convolutions).
    fn shifted(&self) -> bool {
        self.k > 1 && self.c_in * self.k * self.k > COLUMN_BUFFER_MAX_K
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
    /// The convolution with parameters `w`; on the CPU, kernels wider than one tap are laid
    /// out tap-major for the shifted-product path.
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
        let geometry = Geometry {
            c_in: shape.c_in,
            c_out: shape.c_out,
            k: shape.k,
            stride: shape.stride,
            pad: shape.pad,
            dilation,
        };
        let weight = w.weight.to_dtype(DType::F32)?;
        let weight = if weight.device().is_cpu() && geometry.shifted() {
            // [c_out, c_in, kh, kw] → [kh·kw, c_out, c_in].
            weight.permute((2, 3, 0, 1))?.contiguous()?.reshape((
                shape.k * shape.k,
                shape.c_out,
                shape.c_in,
            ))?
        } else {
            weight.contiguous()?
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
        self.forward_act(x, Activation::Identity)
    }

    /// The convolution followed by ReLU (fused on the CPU).
    pub fn forward_relu(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_act(x, Activation::Relu)
    }

    /// The convolution followed by `act` (fused on the CPU).
    pub fn forward_act(&self, x: &Tensor, act: Activation) -> Result<Tensor> {
        let g = self.geometry;
        let (_, c, _, _) = x.dims4()?;
        if c != g.c_in {
            return Err(crate::Error::invalid(format!(
                "convolution expects {} input channels, got {c}",
                g.c_in
            )));
        }
        if x.device().is_cpu() && x.dtype() == candle_core::DType::F32 {
            let x = x.contiguous()?;
            Ok(x.apply_op3_no_bwd(&self.weight, &self.bias, &ConvOp { g, act })?)
        } else {
            let y = x.conv2d(&self.weight, g.pad, g.stride, g.dilation, 1)?;
            let y = y.broadcast_add(&self.bias.reshape((1, g.c_out, 1, 1))?)?;
            act.forward(&y)
        }
    }
}

struct ConvOp {
    g: Geometry,
    act: Activation,
}

/// The padded input of one image split into `stride²` phase planes of `rows × cols` (+ tail).
struct Planes {
    data: Vec<f32>,
    plane_len: usize,
    cols: usize,
}

impl Planes {
    fn build(x: &[f32], c: usize, h: usize, w: usize, g: &Geometry, out_h: usize) -> Planes {
        let s = g.stride;
        let (hp, wp) = (h + 2 * g.pad, w + 2 * g.pad);
        let cols = wp.div_ceil(s);
        let reach = g.reach();
        let rows = hp.div_ceil(s).max(out_h + reach);
        let plane_len = rows * cols + reach;
        let mut data = vec![0.0f32; s * s * c * plane_len];
        // Layout: [phase][channel][plane]; each (phase, channel) block filled independently.
        data.par_chunks_mut(plane_len)
            .enumerate()
            .for_each(|(i, plane)| {
                let (phase, ch) = (i / c, i % c);
                let (a, b) = (phase / s, phase % s);
                let src = &x[ch * h * w..(ch + 1) * h * w];
                for r in 0..rows {
                    let yp = s * r + a;
                    if yp < g.pad || yp - g.pad >= h {
                        continue;
                    }
                    let row = &src[(yp - g.pad) * w..(yp - g.pad + 1) * w];
                    let dst = &mut plane[r * cols..(r + 1) * cols];
                    if s == 1 {
                        dst[g.pad..g.pad + w].copy_from_slice(row);
                    } else {
                        for (j, d) in dst.iter_mut().enumerate() {
                            let xp = s * j + b;
                            if xp >= g.pad && xp - g.pad < w {
                                *d = row[xp - g.pad];
                            }
                        }
                    }
                }
            });
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

impl ConvOp {
    /// One image: `x [c_in, h, w]` into `out [c_out, out_h, out_w]`.
    fn image(&self, x: &[f32], h: usize, w: usize, weight: &[f32], bias: &[f32], out: &mut [f32]) {
        let g = &self.g;
        let (out_h, out_w) = (g.out_len(h), g.out_len(w));
        let kk = g.k * g.k;
        let k_len = g.c_in * kk;
        if g.k == 1 && g.stride == 1 && g.pad == 0 {
            for (row, b) in out.chunks_mut(h * w).zip(bias) {
                row.fill(*b);
            }
            gemm_acc(
                g.c_out,
                h * w,
                g.c_in,
                out,
                h * w,
                MatRef::rows(weight, g.c_in),
                MatRef::rows(x, h * w),
                true,
            );
            let act = self.act;
            out.par_chunks_mut(h * w).for_each(|o| act.apply_slice(o));
            return;
        }
        let planes = Planes::build(x, g.c_in, h, w, g, out_h);
        let cols = planes.cols;
        let n = out_h * cols;
        // Column blocks of the padded output, one rayon task each: the block's accumulator
        // `[c_out, len]` (and, on the column-buffer path, its `[k_len, len]` columns) stay in
        // cache through all the taps, where whole-image products stream them from memory once
        // per tap. Accumulators are laid out block after block.
        let block = (BLOCK_ACC_FLOATS / g.c_out.max(1))
            .max(MIN_BLOCK)
            .min(n.max(1));
        let mut acc = vec![0.0f32; g.c_out * n];
        acc.par_chunks_mut(g.c_out * block)
            .enumerate()
            .for_each_init(Vec::new, |buf, (i, a)| {
                let (start, len) = (i * block, a.len() / g.c_out);
                for (row, b) in a.chunks_mut(len).zip(bias) {
                    row.fill(*b);
                }
                if !g.shifted() {
                    buf.resize(k_len * len, 0.0);
                    for (r, dst) in buf.chunks_mut(len).enumerate() {
                        let (ch, kh, kw) = (r / kk, (r % kk) / g.k, r % g.k);
                        let at = planes.tap(g, g.c_in, ch, kh, kw) + start;
                        dst.copy_from_slice(&planes.data[at..at + len]);
                    }
                    gemm_acc(
                        g.c_out,
                        len,
                        k_len,
                        a,
                        len,
                        MatRef::rows(weight, k_len),
                        MatRef::rows(buf, len),
                        false,
                    );
                } else {
                    for kh in 0..g.k {
                        for kw in 0..g.k {
                            let at = planes.tap(g, g.c_in, 0, kh, kw) + start;
                            let tap = (kh * g.k + kw) * g.c_out * g.c_in;
                            gemm_acc(
                                g.c_out,
                                len,
                                g.c_in,
                                a,
                                len,
                                MatRef::rows(&weight[tap..], g.c_in),
                                MatRef::rows(&planes.data[at..], planes.plane_len),
                                false,
                            );
                        }
                    }
                }
            });
        // Gather the output rows (dropping the columns past the output width), activated.
        let act = self.act;
        out.par_chunks_mut(out_h * out_w)
            .enumerate()
            .for_each(|(co, o)| {
                for (y, orow) in o.chunks_mut(out_w).enumerate() {
                    let mut x = 0;
                    while x < out_w {
                        let e = y * cols + x;
                        let (b, j) = (e / block, e % block);
                        let len = (out_w - x).min(block - j);
                        let width = block.min(n - b * block);
                        let src = &acc[b * block * g.c_out + co * width + j..][..len];
                        let dst = &mut orow[x..x + len];
                        for (d, s) in dst.iter_mut().zip(src) {
                            *d = act.apply(*s);
                        }
                        x += len;
                    }
                }
            });
    }
}

impl CustomOp3 for ConvOp {
    fn name(&self) -> &'static str {
        "deva-conv2d"
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
        let g = &self.g;
        let x = crate::nn::contiguous_f32(s1, l1)?;
        let weight = crate::nn::contiguous_f32(s2, l2)?;
        let bias = crate::nn::contiguous_f32(s3, l3)?;
        let (b, _, h, w) = l1.shape().dims4()?;
        let (out_h, out_w) = (g.out_len(h), g.out_len(w));
        let mut out = vec![0.0f32; b * g.c_out * out_h * out_w];
        for (xi, oi) in x
            .chunks(g.c_in * h * w)
            .zip(out.chunks_mut(g.c_out * out_h * out_w))
        {
            self.image(xi, h, w, weight, bias, oi);
        }
        Ok((
            CpuStorage::F32(out),
            Shape::from((b, g.c_out, out_h, out_w)),
        ))
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
            let d = crate::nn::max_abs_diff(&ours, &theirs);
            assert!(d < 1e-5, "case {i}: max diff {d}");
            let relu = conv.forward_relu(&x).unwrap();
            let d = crate::nn::max_abs_diff(&relu, &theirs.relu().unwrap());
            assert!(d < 1e-5, "case {i} with ReLU: max diff {d}");
            let gelu = conv.forward_act(&x, Activation::GeluErf).unwrap();
            let d = crate::nn::max_abs_diff(&gelu, &theirs.gelu_erf().unwrap());
            assert!(d < 1e-5, "case {i} with GELU: max diff {d}");
        }
    }
}
