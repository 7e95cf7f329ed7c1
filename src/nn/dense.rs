//! A linear layer (PyTorch's `nn.Linear`) whose CPU path adds the bias, the activation and a
//! residual in one pass after the product, where candle's `Linear` runs a product, a broadcast
//! addition and the activation as three passes over the output. The weight is kept transposed,
//! `[in, out]`: gemm packs it with contiguous copies, where `[out, in]` took one gather per
//! value (SAM ViT-B embedding: packing 8.7 % of the time).

use candle_core::{CpuStorage, CustomOp3, Layout, Shape, Storage, Tensor};
use candle_nn::VarBuilder;
use rayon::prelude::*;

use super::act::Activation;
use super::linalg::{matmul_into, MatRef};
use super::vmath::{gelu_erf, multiversion};
use crate::error::Result;

/// `y = act(x · Wᵀ + b)` over the last dimension of `x`.
#[derive(Debug, Clone)]
pub struct Dense {
    /// `Wᵀ`, `[in, out]`, contiguous.
    weight_t: Tensor,
    /// `[out]`.
    bias: Option<Tensor>,
    act: Activation,
}

impl Dense {
    /// The layer `weight [out, in]`, `bias [out]` at `vb`, followed by `act`.
    pub fn load(vb: VarBuilder, (input, out): (usize, usize), act: Activation) -> Result<Self> {
        Self::of(candle_nn::linear(input, out, vb)?, act)
    }

    /// The layer of `weight [out, in]` and `bias [out]` (where given), followed by `act`.
    pub fn new(weight: Tensor, bias: Option<Tensor>, act: Activation) -> Result<Self> {
        Ok(Dense {
            weight_t: super::transpose::transposed(&weight)?,
            bias,
            act,
        })
    }

    /// The bias-free layer `weight [out, in]` at `vb`, followed by `act` (candle's product
    /// and a separate activation pass).
    pub fn load_without_bias(
        vb: VarBuilder,
        (input, out): (usize, usize),
        act: Activation,
    ) -> Result<Self> {
        Self::of(candle_nn::linear_no_bias(input, out, vb)?, act)
    }

    /// The layer `linear` followed by `act`.
    fn of(linear: candle_nn::Linear, act: Activation) -> Result<Self> {
        Self::new(linear.weight().clone(), linear.bias().cloned(), act)
    }

    /// Applies the layer to `x [..., in]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_fused(x, None)
    }

    /// `act(x · Wᵀ + b) + residual` (a transformer block's residual branch); on the CPU the
    /// residual is added in the product's own pass.
    pub fn forward_add(&self, x: &Tensor, residual: &Tensor) -> Result<Tensor> {
        self.forward_fused(x, Some(residual))
    }

    fn forward_fused(&self, x: &Tensor, residual: Option<&Tensor>) -> Result<Tensor> {
        match &self.bias {
            Some(b) if super::is_host_f32(x) => {
                let residual = residual.map(Tensor::contiguous).transpose()?;
                let op = DenseOp {
                    act: self.act,
                    residual: residual.as_ref(),
                };
                Ok(x.contiguous()?.apply_op3_no_bwd(&self.weight_t, b, &op)?)
            }
            bias => {
                let mut shape = x.dims().to_vec();
                let input = shape.pop().unwrap_or(1);
                let (rows, out) = (x.elem_count() / input.max(1), self.weight_t.dim(1)?);
                shape.push(out);
                let y = x.reshape((rows, input))?.matmul(&self.weight_t)?;
                let y = match bias {
                    Some(b) => y.broadcast_add(b)?,
                    None => y,
                };
                let y = self.act.forward(&y.reshape(shape)?)?;
                Ok(match residual {
                    Some(r) => (y + r)?,
                    None => y,
                })
            }
        }
    }
}

/// The CPU layer: input, transposed weight and bias as the op's operands, the residual read
/// from its tensor.
struct DenseOp<'a> {
    act: Activation,
    residual: Option<&'a Tensor>,
}

/// Fewest output rows per rayon task. Above `threads · ROWS_PER_TASK` rows, the rows are split
/// evenly over the threads instead: each task's product packs the whole weight again, so
/// fewer, larger tasks pack it fewer times (2 threads, against tasks of 256 rows: SAM ViT-B
/// embedding 3.72–3.80 → 3.45–3.57 s, Grounding-DINO forward 5.60–5.77 → 5.46–5.52 s).
const ROWS_PER_TASK: usize = 256;

impl CustomOp3 for DenseOp<'_> {
    fn name(&self) -> &'static str {
        "deva-dense"
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
        let x = super::contiguous_f32(s1, l1)?;
        let (w, b) = (
            super::contiguous_f32(s2, l2)?,
            super::contiguous_f32(s3, l3)?,
        );
        let (input, out) = l2.shape().dims2()?;
        let dims = l1.shape().dims();
        if dims.last() != Some(&input) || b.len() != out || input == 0 || out == 0 {
            candle_core::bail!(
                "linear layer {input} → {out}: input {:?}, bias {}",
                dims,
                b.len()
            );
        }
        let rows = x.len() / input;
        let mut shape = dims.to_vec();
        *shape.last_mut().expect("at least one dimension") = out;
        let guard = self.residual.map(Tensor::storage_and_layout);
        let residual = match &guard {
            Some((storage, layout)) => match &**storage {
                Storage::Cpu(s) if layout.shape().dims() == shape.as_slice() => {
                    Some(super::contiguous_f32(s, layout)?)
                }
                _ => candle_core::bail!(
                    "linear layer {input} → {out}: residual {:?} for output {shape:?}",
                    layout.shape()
                ),
            },
            None => None,
        };
        let act = self.act;
        let task = ROWS_PER_TASK.max(rows.div_ceil(rayon::current_num_threads()));
        let mut y = Vec::with_capacity(rows * out);
        // Row blocks in parallel, each one single-threaded product, so that no thread waits
        // on another. The product writes the block's rows (not reading them), then one pass
        // adds the bias, the activation and the residual.
        y.spare_capacity_mut()[..rows * out]
            .par_chunks_mut(task * out)
            .zip(x.par_chunks(task * input))
            .enumerate()
            .for_each(|(i, (yb, xb))| {
                let r = residual.map(|r| &r[i * task * out..][..yb.len()]);
                let lhs = MatRef::rows(xb, input);
                let yb = matmul_into(xb.len() / input, out, input, yb, lhs, MatRef::rows(w, out));
                finish_rows(yb, b, act, r);
            });
        // SAFETY: `matmul_into` wrote every element of every block.
        unsafe { y.set_len(rows * out) };
        Ok((CpuStorage::F32(y), Shape::from(shape)))
    }
}

multiversion! {
    /// `y = act(y + bias) + residual` over the rows of `block` (rows of `bias.len()` values,
    /// the residual where given), in one pass with the widest vectors of the CPU.
    fn finish_rows(block: &mut [f32], bias: &[f32], act: Activation, residual: Option<&[f32]>) {
        #[inline(always)]
        fn rows(block: &mut [f32], bias: &[f32], residual: Option<&[f32]>, f: impl Fn(f32) -> f32) {
            let n = bias.len();
            match residual {
                Some(r) => {
                    for (row, r) in block.chunks_mut(n).zip(r.chunks(n)) {
                        for ((y, b), r) in row.iter_mut().zip(bias).zip(r) {
                            *y = f(*y + b) + r;
                        }
                    }
                }
                None => {
                    for row in block.chunks_mut(n) {
                        for (y, b) in row.iter_mut().zip(bias) {
                            *y = f(*y + b);
                        }
                    }
                }
            }
        }
        match act {
            Activation::Identity => rows(block, bias, residual, |v| v),
            Activation::Relu => rows(block, bias, residual, |v| v.max(0.0)),
            Activation::GeluErf => rows(block, bias, residual, gelu_erf),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, Module};
    use candle_nn::VarMap;

    #[test]
    fn equals_candle_linear_then_activation() {
        let map = VarMap::new();
        let vb = VarBuilder::from_varmap(&map, DType::F32, &Device::Cpu);
        for bias in [true, false] {
            for act in [Activation::Identity, Activation::Relu, Activation::GeluErf] {
                let vb = vb.pp(format!("{act:?}{bias}"));
                // The same variables as candle's layer (the map holds them by name).
                let (dense, linear) = if bias {
                    let dense = Dense::load(vb.clone(), (37, 70), act).unwrap();
                    (dense, candle_nn::linear(37, 70, vb).unwrap())
                } else {
                    let dense = Dense::load_without_bias(vb.clone(), (37, 70), act).unwrap();
                    (dense, candle_nn::linear_no_bias(37, 70, vb).unwrap())
                };
                // 903 rows: the last task partial (2 threads: 452 and 451 rows; 4 or more:
                // 256).
                let x = Tensor::randn(0f32, 1.0, (3, 301, 37), &Device::Cpu).unwrap();
                let theirs = act.forward(&linear.forward(&x).unwrap()).unwrap();
                let d = super::super::max_abs_diff(&dense.forward(&x).unwrap(), &theirs);
                assert!(d < 1e-5, "{act:?}, bias {bias}: {d}");
                let r = Tensor::randn(0f32, 1.0, (3, 301, 70), &Device::Cpu).unwrap();
                let fused = dense.forward_add(&x, &r).unwrap();
                let d = super::super::max_abs_diff(&fused, &(theirs + r).unwrap());
                assert!(d < 1e-5, "{act:?}, bias {bias}, with a residual: {d}");
            }
        }
    }
}
