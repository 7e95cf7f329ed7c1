//! A linear layer (PyTorch's `nn.Linear`) whose CPU path writes the bias and the activation in
//! the product's own pass: the output starts as the bias and the product accumulates into it,
//! where candle's `Linear` runs a product, a broadcast addition and the activation as three
//! passes over the output.

use candle_core::{CpuStorage, CustomOp3, Layout, Module, Shape, Tensor};
use candle_nn::VarBuilder;
use rayon::prelude::*;

use super::act::Activation;
use super::linalg::{gemm_acc, MatRef};
use crate::error::Result;

/// `y = act(x · Wᵀ + b)` over the last dimension of `x`.
#[derive(Debug, Clone)]
pub struct Dense {
    linear: candle_nn::Linear,
    act: Activation,
}

impl Dense {
    /// The layer `weight [out, in]`, `bias [out]` at `vb`, followed by `act`.
    pub fn load(vb: VarBuilder, (input, out): (usize, usize), act: Activation) -> Result<Self> {
        Ok(Dense {
            linear: candle_nn::linear(input, out, vb)?,
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
        Ok(Dense {
            linear: candle_nn::linear_no_bias(input, out, vb)?,
            act,
        })
    }

    /// Applies the layer to `x [..., in]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (w, b) = (self.linear.weight(), self.linear.bias());
        match b {
            Some(b) if x.device().is_cpu() && x.dtype() == candle_core::DType::F32 => {
                let x = x.contiguous()?;
                Ok(x.apply_op3_no_bwd(w, b, &DenseOp(self.act))?)
            }
            _ => self.act.forward(&self.linear.forward(x)?),
        }
    }
}

struct DenseOp(Activation);

/// Output rows per rayon task.
const ROWS_PER_TASK: usize = 256;

impl CustomOp3 for DenseOp {
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
        let (out, input) = l2.shape().dims2()?;
        let dims = l1.shape().dims();
        if dims.last() != Some(&input) || b.len() != out {
            candle_core::bail!(
                "linear layer {input} → {out}: input {:?}, bias {}",
                dims,
                b.len()
            );
        }
        let rows = x.len() / input.max(1);
        // The output starts as the bias, written once (no zeroing pass first).
        let mut y = b.repeat(rows);
        let act = self.0;
        // Row blocks in parallel, each one single-threaded product: the weight stays in cache
        // and no thread waits on another.
        y.par_chunks_mut(ROWS_PER_TASK * out)
            .zip(x.par_chunks(ROWS_PER_TASK * input))
            .for_each(|(yb, xb)| {
                let m = xb.len() / input;
                gemm_acc(
                    m,
                    out,
                    input,
                    yb,
                    out,
                    MatRef::rows(xb, input),
                    MatRef::transposed(w, input),
                    false,
                );
                act.apply_slice(yb);
            });
        let mut shape = dims.to_vec();
        *shape.last_mut().expect("at least one dimension") = out;
        Ok((CpuStorage::F32(y), Shape::from(shape)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use candle_nn::VarMap;

    #[test]
    fn equals_candle_linear_then_activation() {
        let map = VarMap::new();
        let vb = VarBuilder::from_varmap(&map, DType::F32, &Device::Cpu);
        for act in [Activation::Identity, Activation::GeluErf] {
            let dense = Dense::load(vb.pp(format!("{act:?}")), (37, 70), act).unwrap();
            let x = Tensor::randn(0f32, 1.0, (3, 300, 37), &Device::Cpu).unwrap();
            let theirs = act.forward(&dense.linear.forward(&x).unwrap()).unwrap();
            let d = super::super::max_abs_diff(&dense.forward(&x).unwrap(), &theirs);
            assert!(d < 1e-5, "{act:?}: {d}");
        }
    }
}
