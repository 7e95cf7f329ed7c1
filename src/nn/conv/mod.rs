//! 2-D convolution with square kernels, zero padding, stride 1 or 2 and optional dilation, as
//! used by ResNets, DEVA's decoder and the U²-Net family, with a fast CPU path (bias, an
//! optional activation and an optional residual added in the same pass).
//!
//! On the CPU the input is copied once into padded planes ([`planes`]), split into stride²
//! phase planes, so that the tap (kh, kw) of every output pixel reads one contiguous run of its
//! plane. The output is computed in blocks of whole rows ([`cpu`]). Each network chooses its
//! [`ConvKernel`] when it loads its layers: the direct kernel ([`direct`], AVX-512 or AVX2)
//! multiplies the taps straight from the planes; matrix products multiply per tap over
//! shifted views (or, for few input channels, once over a column buffer). The input may be
//! given as several tensors whose channels are concatenated (no copy of the concatenation).
//! Other devices use candle's `conv2d`.

mod cpu;
mod direct;
mod planes;
#[cfg(test)]
mod tests;
mod winograd;

use candle_core::{DType, Tensor};
use candle_nn::VarBuilder;

use self::cpu::CpuConv;
use self::direct::CO;
use self::winograd::Tile;
use super::act::Activation;
use crate::error::Result;

/// BatchNorm epsilon of PyTorch's default `BatchNorm2d`.
const BN_EPS: f64 = 1e-5;

/// Below this reduction length (`c_in · k²`) one product over a column buffer is faster than
/// one per tap (for kernels past 1×1: a strided 1×1 layer has one product either way, and
/// reads its plane in place on [`Path::Shifted`]).
const COLUMN_BUFFER_MAX_K: usize = 256;
/// A convolution layer `[c_out, c_in, k, k]` with bias, padding `pad` and `stride`.
#[derive(Debug, Clone)]
pub struct Conv2d {
    /// On the CPU: laid out for the chosen [`Path`] (see there); otherwise PyTorch's
    /// `[c_out, c_in, k, k]`.
    weight: Tensor,
    bias: Tensor,
    geometry: Geometry,
}

/// Which CPU kernel a network's convolutions use, chosen by the network as it loads them.
///
/// Both compute the same convolution in another summation order, so their outputs differ in
/// the last bits (about 1e-6 of their magnitude).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConvKernel {
    /// Matrix products through `gemm` for every layer: the summation order that DEVA's parity
    /// fixtures hold it to (its top-k memory readout turns last-bit differences of near-tied
    /// affinities into other selections).
    Products,
    /// The direct kernel for layers of 8 output channels or more on CPUs with AVX-512 or AVX2
    /// and FMA (matrix products elsewhere and for 1×1 stride-1 layers): up to 1.5× as fast as
    /// the products on the 16–64-channel 3×3 layers with AVX-512, up to 1.6× with AVX2. The
    /// wide 3×3 stride-1 layers run on Winograd's transforms (from 2¹¹ `c_in · c_out` with
    /// AVX2, 2⁹ with AVX-512: on F(4×4, 3×3) up to 2¹⁵, F(2×2, 3×3) above), the
    /// strided layers on the products (with AVX-512, only those whose reduction `c_in · k²`
    /// is longer than 256), and so do the layers of CPUs without either.
    Direct,
    /// Winograd's F(2×2, 3×3) for 3×3 layers with stride 1 and padding 1 whose reduction
    /// (`c_in · 9`) is long enough for matrix products (the products elsewhere): 4
    /// multiplications per output and input channel instead of 9; the rounding differs from
    /// the tap sums by about 1e-6 of the outputs' magnitude.
    Winograd,
    /// Winograd's F(4×4, 3×3) for the layers that [`Winograd`](Self::Winograd) takes: 2.25
    /// multiplications per output and input channel, but the transformed filters take 4 times
    /// the filters' memory (F(2×2, 3×3)'s 16/9) and the rounding differs from the tap sums by
    /// up to about 2e-5 of the outputs' magnitude (on 600-channel reductions).
    Winograd4x4,
    /// Winograd's F(2×2, 3×3) for the layers that [`Winograd`](Self::Winograd) takes, with
    /// no transformed filters kept: each call transforms the filters, block of output
    /// channels by block, and the whole image's input once. For layers of many weights and
    /// few pixels (DEVA's 3×3 sensory transforms, 1024 → 1536 channels at stride 16), where
    /// kept transformed filters would take 16/9 of the filters' memory and the filter
    /// transform costs about a tenth of the products' time.
    WinogradLean,
}

/// How the CPU computes a convolution, with the weight layout it needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Path {
    /// 1×1, stride 1, no padding: one matrix product, weight `[c_out, c_in]`.
    Pointwise,
    /// The direct kernel (AVX-512 or AVX2), weight as [`direct::layout_weight`] makes it.
    Direct,
    /// One product over a column buffer per block, weight `[c_out, c_in·k·k]`.
    Columns,
    /// One product per tap over shifted views, weight tap-major `[k·k, c_out, c_in]`.
    Shifted,
    /// Winograd F(m×m, 3×3) with this output tile, weight as [`winograd::layout_weight`]
    /// makes it.
    Winograd(Tile),
    /// Winograd F(2×2, 3×3) by blocks of output channels over the whole image, the filters
    /// transformed on each call; weight `[c_out, c_in, 3, 3]`.
    WinogradLean,
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

    /// The CPU path for this geometry with `kernel` on this machine.
    fn choose_path(&self, kernel: ConvKernel) -> Path {
        let winograd_fits = (self.k, self.stride, self.pad, self.dilation) == (3, 1, 1, 1)
            && self.c_in * self.k * self.k > COLUMN_BUFFER_MAX_K;
        if self.k == 1 && self.stride == 1 && self.pad == 0 {
            Path::Pointwise
        } else if kernel == ConvKernel::Direct
            && direct::suits(self.c_in, self.c_out, self.k, self.stride, winograd_fits)
        {
            Path::Direct
        } else if self.k > 1 && self.c_in * self.k * self.k <= COLUMN_BUFFER_MAX_K {
            Path::Columns
        } else if !winograd_fits {
            Path::Shifted
        } else {
            match kernel {
                // The direct kernel's layers that it does not suit take Winograd's.
                ConvKernel::Direct => Path::Winograd(direct::winograd_tile(self.c_in, self.c_out)),
                ConvKernel::Winograd4x4 => Path::Winograd(Tile::F4),
                ConvKernel::WinogradLean => Path::WinogradLean,
                ConvKernel::Winograd => Path::Winograd(Tile::F2),
                ConvKernel::Products => Path::Shifted,
            }
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
    /// The convolution with parameters `w` computed by `kernel`; on the CPU, the weights are
    /// laid out once here for the path that computes it.
    pub fn new(w: ConvWeights, kernel: ConvKernel) -> Result<Self> {
        Conv2d::dilated(w, 1, kernel)
    }

    /// The convolution with parameters `w` whose taps are `dilation` pixels apart.
    pub fn dilated(w: ConvWeights, dilation: usize, kernel: ConvKernel) -> Result<Self> {
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
        geometry.path = geometry.choose_path(kernel);
        let weight = w.weight.to_dtype(DType::F32)?;
        let weight = match geometry.path {
            _ if !weight.device().is_cpu() => weight.contiguous()?,
            Path::Direct => direct::layout_weight(&weight)?,
            Path::Winograd(tile) => winograd::layout_weight(&weight, tile)?,
            // [c_out, c_in, kh, kw] → [kh·kw, c_out, c_in].
            Path::Shifted => weight.permute((2, 3, 0, 1))?.contiguous()?.reshape((
                shape.k * shape.k,
                shape.c_out,
                shape.c_in,
            ))?,
            Path::Pointwise | Path::Columns | Path::WinogradLean => weight.contiguous()?,
        };
        Ok(Conv2d {
            weight,
            bias: w.bias.to_dtype(DType::F32)?.contiguous()?,
            geometry,
        })
    }

    /// Loads the convolution at `vb` (`weight`, `bias`), computed by `kernel`.
    pub fn load(vb: &VarBuilder, shape: ConvShape, kernel: ConvKernel) -> Result<Self> {
        Conv2d::new(ConvWeights::load(vb, shape)?, kernel)
    }

    /// Loads a bias-free convolution at `conv` with the BatchNorm at `bn` folded in.
    pub fn load_with_batch_norm(
        conv: &VarBuilder,
        bn: &VarBuilder,
        shape: ConvShape,
        kernel: ConvKernel,
    ) -> Result<Self> {
        Conv2d::new(ConvWeights::load_with_batch_norm(conv, bn, shape)?, kernel)
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
    /// shape, or with a batch of one, added to every image) if given. On the CPU the
    /// concatenation is never made and the activation and the residual are applied as the
    /// output is written.
    pub fn forward_with(
        &self,
        parts: &[&Tensor],
        act: Activation,
        residual: Option<&Tensor>,
    ) -> Result<Tensor> {
        self.forward_fused(parts, false, act, residual.map(|r| (r, false)))
    }

    /// `act(conv(x) + residual)`, fused on the CPU (a ResNet block's last convolution).
    pub fn forward_add_act(
        &self,
        x: &Tensor,
        residual: &Tensor,
        act: Activation,
    ) -> Result<Tensor> {
        self.forward_fused(&[x], false, act, Some((residual, true)))
    }

    /// [`forward_with`](Self::forward_with) of `relu(cat(parts, 1))` (a pre-activation block),
    /// the residual added before `act` where its flag says so. On the CPU the ReLU is applied
    /// as the padded input is copied (layers wider than 1×1).
    pub fn forward_of_relu(
        &self,
        parts: &[&Tensor],
        act: Activation,
        residual: Option<(&Tensor, bool)>,
    ) -> Result<Tensor> {
        self.forward_fused(parts, true, act, residual)
    }

    /// The convolution of the concatenated `parts` (through a ReLU with `relu_input`) with
    /// `act` and a residual added after the activation, or before it where the flag says so.
    fn forward_fused(
        &self,
        parts: &[&Tensor],
        relu_input: bool,
        act: Activation,
        residual: Option<(&Tensor, bool)>,
    ) -> Result<Tensor> {
        if relu_input && self.geometry.path == Path::Pointwise {
            // The pointwise path reads its input in place: make the ReLU's output first.
            let relu: Vec<Tensor> = parts
                .iter()
                .map(|p| p.relu())
                .collect::<candle_core::Result<_>>()?;
            let relu: Vec<&Tensor> = relu.iter().collect();
            return self.forward_fused(&relu, false, act, residual);
        }
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
            let (rb, rc, rh, rw) = r.dims4()?;
            if (rc, rh, rw) != (out_shape.1, out_shape.2, out_shape.3) || (rb != b && rb != 1) {
                return Err(crate::Error::invalid(format!(
                    "convolution residual of shape {:?}, the output is {out_shape:?}",
                    r.dims()
                )));
            }
        }
        let host = parts
            .iter()
            .chain(residual.as_slice())
            .all(|t| crate::nn::is_host_f32(t));
        if host && h > 0 && w > 0 {
            let mut all: Vec<&Tensor> = parts.to_vec();
            all.extend([&self.weight, &self.bias]);
            all.extend(residual);
            let out = super::with_host_slices(&all, |sl| {
                let (xs, rest) = sl.split_at(parts.len());
                let parts: Vec<(&[f32], usize)> =
                    xs.iter().copied().zip(channels.iter().copied()).collect();
                let op = CpuConv {
                    g,
                    act,
                    before,
                    relu_input,
                };
                Ok(op.run(&parts, (b, h, w), rest[0], rest[1], rest.get(2).copied()))
            })?;
            return Ok(Tensor::from_vec(out, out_shape, first.device())?);
        }
        let x = match parts {
            [x] => (*x).clone(),
            _ => Tensor::cat(parts, 1)?,
        };
        let x = if relu_input { x.relu()? } else { x };
        let y = x.conv2d(&self.weight, g.pad, g.stride, g.dilation, 1)?;
        let y = y.broadcast_add(&self.bias.reshape((1, g.c_out, 1, 1))?)?;
        Ok(match residual {
            Some(r) if before => act.forward(&y.broadcast_add(r)?)?,
            Some(r) => act.forward(&y)?.broadcast_add(r)?,
            None => act.forward(&y)?,
        })
    }
}
