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

    /// Applies the activation to every value of `values` in place (vectorised).
    pub fn apply_slice(self, values: &mut [f32]) {
        match self {
            Activation::Identity => {}
            Activation::Relu => values.iter_mut().for_each(|v| *v = v.max(0.0)),
            Activation::GeluErf => super::vmath::gelu_erf_slice(values),
        }
    }

    /// The activation of a tensor on any device (multi-threaded on the CPU for `f32`).
    pub fn forward(self, x: &Tensor) -> Result<Tensor> {
        Ok(match self {
            Activation::Identity => x.clone(),
            _ if super::is_host_f32(x) => x.contiguous()?.apply_op1_no_bwd(&ActOp(self))?,
            Activation::Relu => x.relu()?,
            Activation::GeluErf => x.gelu_erf()?,
        })
    }
}

/// GELU of one value: candle's `gelu_erf` formula with a vectorisable error function
/// (`nn::vmath::erf`, within a few ulp of the exact one), the same bits as `apply_slice`.
#[inline]
fn gelu_erf_f32(v: f32) -> f32 {
    super::vmath::gelu_erf(v)
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
            .for_each(|(o, i)| {
                o.copy_from_slice(i);
                act.apply_slice(o);
            });
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
        // GELU: within a few ulp of candle's (whose error function is libm's `erff`).
        let gelu_close = |ours: &Tensor, input: &Tensor| {
            let theirs = input.gelu_erf().unwrap().flatten_all().unwrap();
            let v = input.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let ours = ours.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            for ((o, t), v) in ours.iter().zip(theirs.to_vec1::<f32>().unwrap()).zip(v) {
                assert!(
                    (o - t).abs() <= 5e-7 * v.abs().max(1.0),
                    "gelu({v}): {o} vs {t}"
                );
            }
        };
        gelu_close(&Activation::GeluErf.forward(&x).unwrap(), &x);
        let relu = Activation::Relu.forward(&x).unwrap();
        assert_eq!(super::super::max_abs_diff(&relu, &x.relu().unwrap()), 0.0);
        let t = x.transpose(1, 2).unwrap();
        gelu_close(&Activation::GeluErf.forward(&t).unwrap(), &t);
    }
}
