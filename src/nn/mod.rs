//! Shared candle building blocks and checkpoint loading.

pub mod act;
pub mod attention;
pub mod blocks;
pub mod checkpoint;
pub mod conv;
pub mod conv_norm;
pub mod deform_attn;
pub mod deform_conv;
mod deform_sample_cpu;
pub mod dense;
pub(crate) mod depthwise;
pub mod dtype;
pub mod ffn;
pub mod fpn;
pub mod linalg;
pub mod mlp;
pub mod norm;
pub mod onnx;
mod pickle;
pub mod resample;
pub mod resnet;
pub mod swin;
pub mod synthetic;
pub mod transpose;
pub(crate) mod vmath;
pub mod weights;
pub mod window_attn;

pub use checkpoint::{RawTensor, StateDict};
pub use dtype::TensorDType;
pub use synthetic::TensorSpec;
pub use weights::Weights;

use candle_core::{CpuStorage, DType, Device, Layout, Storage, Tensor};

/// Whether `t` is an `f32` tensor in host memory: the tensors the CPU kernels take.
pub(crate) fn is_host_f32(t: &Tensor) -> bool {
    t.device().is_cpu() && t.dtype() == DType::F32
}

/// The f32 values of a custom op's contiguous CPU operand.
pub(crate) fn contiguous_f32<'a>(s: &'a CpuStorage, l: &Layout) -> candle_core::Result<&'a [f32]> {
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&s.as_slice::<f32>()?[a..b]),
        None => candle_core::bail!("custom op: operand is not contiguous"),
    }
}

/// Runs `f` on the f32 values of contiguous CPU tensors, borrowed from their storage.
pub(crate) fn with_host_slices<R>(
    ts: &[&Tensor],
    f: impl FnOnce(&[&[f32]]) -> crate::Result<R>,
) -> crate::Result<R> {
    let owned: Vec<Tensor> = ts
        .iter()
        .map(|t| Ok(t.to_dtype(DType::F32)?.contiguous()?))
        .collect::<crate::Result<_>>()?;
    let guards: Vec<_> = owned.iter().map(Tensor::storage_and_layout).collect();
    let slices = guards
        .iter()
        .map(|(storage, layout)| match &**storage {
            Storage::Cpu(s) => Ok(contiguous_f32(s, layout)?),
            _ => Err(crate::Error::invalid(
                "host memory read on a non-CPU tensor",
            )),
        })
        .collect::<crate::Result<Vec<&[f32]>>>()?;
    f(&slices)
}

/// Largest absolute difference between two tensors of one shape (tests).
#[cfg(test)]
pub(crate) fn max_abs_diff(a: &candle_core::Tensor, b: &candle_core::Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims(), "shapes differ");
    (a - b)
        .and_then(|d| d.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>())
        .expect("difference of two f32 tensors")
}

/// The device named `cpu`, `cuda` (GPU 0) or `cuda:N`; CUDA needs a build with the `cuda`
/// feature and a GPU.
pub fn parse_device(name: &str) -> crate::Result<Device> {
    let bad = |why: &str| crate::Error::Config(format!("device '{name}': {why}"));
    let ordinal = match name.trim() {
        "cpu" => return Ok(Device::Cpu),
        "cuda" => 0,
        other => other
            .strip_prefix("cuda:")
            .and_then(|n| n.parse::<usize>().ok())
            .ok_or_else(|| bad("expected cpu, cuda or cuda:N"))?,
    };
    if !cfg!(feature = "cuda") {
        return Err(bad(
            "this build has no CUDA support (rebuild with `--features cuda`)",
        ));
    }
    Device::new_cuda(ordinal).map_err(|e| bad(&e.to_string()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn devices_parse_or_say_why_not() {
        assert!(super::parse_device("cpu").unwrap().is_cpu());
        let e = super::parse_device("gpu").unwrap_err().to_string();
        assert!(e.contains("'gpu'") && e.contains("cuda:N"), "{e}");
        assert!(super::parse_device("cuda:x").is_err());
        if !cfg!(feature = "cuda") {
            let e = super::parse_device("cuda:1").unwrap_err().to_string();
            assert!(e.contains("--features cuda"), "{e}");
        }
    }
}
