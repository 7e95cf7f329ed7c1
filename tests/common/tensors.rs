//! Tensors in the parity tests: their differences (in f32), and HWC u8 tensors as images.

use candle_core::{DType, Tensor};
use image::RgbImage;

/// Largest absolute value of `t`, converted to f32.
pub fn max_abs(t: &Tensor) -> f32 {
    t.to_dtype(DType::F32)
        .and_then(|t| t.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>())
        .expect("max |t| of a non-empty tensor")
}

/// Largest absolute difference between two tensors of one shape, converted to f32.
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims(), "shapes differ");
    let f32s = |t: &Tensor| t.to_dtype(DType::F32).expect("tensor as f32");
    max_abs(&(f32s(a) - f32s(b)).expect("difference of two tensors"))
}

/// An HWC u8 tensor with 3 channels as an image (`key` names it in failures).
pub fn rgb_image(t: &Tensor, key: &str) -> RgbImage {
    assert_eq!(t.dtype(), DType::U8, "{key}");
    let (h, w, c) = t.dims3().unwrap();
    assert_eq!(c, 3, "{key}");
    let data = t.flatten_all().unwrap().to_vec1::<u8>().unwrap();
    RgbImage::from_raw(w as u32, h as u32, data).unwrap()
}
