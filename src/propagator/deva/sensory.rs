//! The GRU-like update of an object's sensory state (reference §1.8), shared by the mask
//! encoder and the mask decoder.

use candle_core::{DType, Tensor};
use rayon::prelude::*;

use super::network::VALUE_DIM;
use crate::error::Result;
use crate::nn::vmath::{multiversion, sigmoid, tanh};
use crate::nn::with_host_slices;

/// `h' = σ(f) · h · (1 − σ(u)) + σ(u) · tanh(c)` with `values = [f | u | c]`; on the CPU one
/// parallel, vectorised pass ([`gate`]), elsewhere the tensor operations.
pub(super) fn gated_update(values: &Tensor, h: &Tensor) -> Result<Tensor> {
    if crate::nn::is_host_f32(values) && h.dtype() == DType::F32 {
        let (n, _, hh, ww) = h.dims4()?;
        let plane = hh * ww;
        let out = with_host_slices(&[values, h], |sl| {
            let (values, h) = (sl[0], sl[1]);
            let mut out = vec![0f32; h.len()];
            out.par_chunks_mut(plane.max(1))
                .zip(h.par_chunks(plane.max(1)))
                .enumerate()
                .for_each(|(i, (dst, h))| {
                    let (obj, ch) = (i / VALUE_DIM, i % VALUE_DIM);
                    let third = |k: usize| {
                        let at = ((obj * 3 + k) * VALUE_DIM + ch) * plane;
                        &values[at..at + plane]
                    };
                    gate([third(0), third(1), third(2)], h, dst);
                });
            Ok(out)
        })?;
        return Ok(Tensor::from_vec(out, (n, VALUE_DIM, hh, ww), h.device())?);
    }
    gated_update_ops(values, h)
}

multiversion! {
/// One plane of [`gated_update`]: `dst = σ(f) · h · (1 − σ(u)) + σ(u) · tanh(c)` from
/// `[f, u, c]`, vectorised ([`vmath`](crate::nn::vmath)'s sigmoid and tanh, within 3 ulp of
/// the exact functions).
fn gate(values: [&[f32]; 3], h: &[f32], dst: &mut [f32]) {
    let [f, u, c] = values;
    for ((((d, &f), &u), &c), &h) in dst.iter_mut().zip(f).zip(u).zip(c).zip(h) {
        let (forget, update) = (sigmoid(f), sigmoid(u));
        *d = forget * h * (1.0 - update) + update * tanh(c);
    }
}
}

/// [`gated_update`] as tensor operations (devices other than the CPU).
fn gated_update_ops(values: &Tensor, h: &Tensor) -> Result<Tensor> {
    let forget = candle_nn::ops::sigmoid(&values.narrow(1, 0, VALUE_DIM)?)?;
    let update = candle_nn::ops::sigmoid(&values.narrow(1, VALUE_DIM, VALUE_DIM)?)?;
    let new_value = values.narrow(1, 2 * VALUE_DIM, VALUE_DIM)?.tanh()?;
    let kept = ((forget * h)? * update.affine(-1.0, 1.0)?)?;
    Ok((kept + (update * new_value)?)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// The CPU pass of the sensory update gives the tensor operations' values (libm's
    /// exponential and tanh) to within a few units of the last place.
    #[test]
    fn gated_update_pass_matches_the_tensor_ops() {
        let dev = Device::Cpu;
        let values = Tensor::randn(0f32, 3.0, (2, 3 * VALUE_DIM, 3, 5), &dev).unwrap();
        let h = Tensor::randn(0f32, 1.0, (2, VALUE_DIM, 3, 5), &dev).unwrap();
        let ours = gated_update(&values, &h).unwrap();
        let ops = gated_update_ops(&values, &h).unwrap();
        assert_eq!(ours.dims(), ops.dims());
        // The outputs are at most |h| + 1 (|h| below 6 here): a few ulp of that.
        let diff = crate::nn::max_abs_diff(&ours, &ops);
        assert!(diff <= 2e-6, "largest difference {diff}");
    }
}
