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

use candle_core::Device;

/// The device networks run on: the first CUDA GPU when built with the `cuda` feature and one
/// is present, otherwise the CPU.
pub fn device() -> Device {
    #[cfg(feature = "cuda")]
    if let Ok(d) = Device::new_cuda(0) {
        return d;
    }
    Device::Cpu
}
