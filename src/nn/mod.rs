//! Shared candle building blocks and checkpoint loading.

pub mod blocks;
pub mod checkpoint;
pub mod conv;
pub mod linalg;
mod pickle;
pub mod resample;
pub mod resnet;
pub mod synthetic;
pub mod weights;

pub use checkpoint::{RawTensor, StateDict, TensorDType};
pub use synthetic::TensorSpec;
pub use weights::Weights;

use candle_core::{CpuStorage, Device, Layout};

/// The f32 values of a custom op's contiguous CPU operand.
pub(crate) fn contiguous_f32<'a>(s: &'a CpuStorage, l: &Layout) -> candle_core::Result<&'a [f32]> {
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&s.as_slice::<f32>()?[a..b]),
        None => candle_core::bail!("custom op: operand is not contiguous"),
    }
}

/// Largest absolute difference between two tensors of one shape (tests).
#[cfg(test)]
pub(crate) fn max_abs_diff(a: &candle_core::Tensor, b: &candle_core::Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims(), "shapes differ");
    (a - b)
        .and_then(|d| d.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>())
        .expect("difference of two f32 tensors")
}

/// The device named `name`: `cpu`, `cuda` (the first GPU) or `cuda:N`. CUDA needs a build with
/// the `cuda` feature; otherwise naming it is an error that says so.
pub fn parse_device(name: &str) -> crate::error::Result<Device> {
    let bad = || {
        crate::error::Error::Config(format!(
            "unknown device {name:?} (expected cpu, cuda or cuda:N)"
        ))
    };
    let ordinal = match name {
        "cpu" => return Ok(Device::Cpu),
        "cuda" => 0,
        _ => name
            .strip_prefix("cuda:")
            .and_then(|n| n.parse::<usize>().ok())
            .ok_or_else(bad)?,
    };
    if cfg!(feature = "cuda") {
        Device::new_cuda(ordinal)
            .map_err(|e| crate::error::Error::Config(format!("device {name}: {e}")))
    } else {
        Err(crate::error::Error::Config(format!(
            "device {name}: this deva was built without CUDA (rebuild with `--features cuda`)"
        )))
    }
}

/// The device networks run on: the first CUDA GPU when built with the `cuda` feature and one
/// is present, otherwise the CPU.
pub fn device() -> Device {
    #[cfg(feature = "cuda")]
    if let Ok(d) = Device::new_cuda(0) {
        return d;
    }
    Device::Cpu
}
