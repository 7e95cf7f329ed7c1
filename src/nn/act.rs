//! Element-wise activations that the CPU kernels fuse into their output pass, and a
//! multi-threaded GELU for tensors (candle's runs on one thread).

use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor};
use rayon::prelude::*;

use crate::error::Result;

/// An activation applied to every output value of a layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// None (identity).
    Identity,
    /// `max(v, 0)`.
    Relu,
    /// GELU with the exact error function, `v · (1 + erf(v / √2)) / 2` (candle's `gelu_erf`).
    GeluErf,
}

impl Activation {
    /// The activation of one value.
    #[inline]
    pub fn apply(self, v: f32) -> f32 {
        match self {
            Activation::Identity => v,
            Activation::Relu => v.max(0.0),
            Activation::GeluErf => gelu_erf_f32(v),
        }
    }

    /// Applies the activation to every value of `values` in place.
    pub fn apply_slice(self, values: &mut [f32]) {
        if self != Activation::Identity {
            values.iter_mut().for_each(|v| *v = self.apply(*v));
        }
    }

    /// The activation of a tensor on any device (multi-threaded on the CPU for `f32`).
    pub fn forward(self, x: &Tensor) -> Result<Tensor> {
        Ok(match self {
            Activation::Identity => x.clone(),
            _ if x.device().is_cpu() && x.dtype() == candle_core::DType::F32 => {
                x.contiguous()?.apply_op1_no_bwd(&ActOp(self))?
            }
            Activation::Relu => x.relu()?,
            Activation::GeluErf => x.gelu_erf()?,
        })
    }
}

/// GELU of one value, the same formula (and rounding) as candle's `gelu_erf`.
#[inline]
fn gelu_erf_f32(v: f32) -> f32 {
    (candle_core::cpu::erf::erf_f32(v * std::f32::consts::FRAC_1_SQRT_2) + 1.0) * 0.5 * v
}

/// The activation as a candle operation on contiguous CPU `f32` tensors.
struct ActOp(Activation);

/// Values per rayon task.
const CHUNK: usize = 1 << 14;

impl CustomOp1 for ActOp {
    fn name(&self) -> &'static str {
        "deva-activation"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = super::contiguous_f32(s, l)?;
        let mut out = vec![0f32; x.len()];
        let act = self.0;
        out.par_chunks_mut(CHUNK)
            .zip(x.par_chunks(CHUNK))
            .for_each(|(o, i)| o.iter_mut().zip(i).for_each(|(o, i)| *o = act.apply(*i)));
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn activations_equal_candle_ops() {
        let x = Tensor::randn(0f32, 2.0, (3, 5, 7001), &Device::Cpu).unwrap();
        let gelu = Activation::GeluErf.forward(&x).unwrap();
        assert_eq!(
            super::super::max_abs_diff(&gelu, &x.gelu_erf().unwrap()),
            0.0
        );
        let relu = Activation::Relu.forward(&x).unwrap();
        assert_eq!(super::super::max_abs_diff(&relu, &x.relu().unwrap()), 0.0);
        let t = x.transpose(1, 2).unwrap();
        let strided = Activation::GeluErf.forward(&t).unwrap();
        assert_eq!(
            super::super::max_abs_diff(&strided, &t.gelu_erf().unwrap()),
            0.0
        );
    }
}
