//! SAM's input and output geometry: resizing so that the longest side is the model's input
//! size (Pillow's bilinear resize, bit-exact), prompt coordinates in the resized frame,
//! normalisation and zero padding, and upscaling low-resolution mask logits back to the
//! original image.

use crate::error::Result;
use crate::mask::bilinear_taps;
use candle_core::{Device, Tensor};
use image::RgbImage;

/// Per-channel pixel mean of SAM's normalisation (RGB, 0–255).
pub const PIXEL_MEAN: [f32; 3] = [123.675, 116.28, 103.53];
/// Per-channel pixel standard deviation of SAM's normalisation.
pub const PIXEL_STD: [f32; 3] = [58.395, 57.12, 57.375];

/// `(h, w)` after scaling the longest side of `(h, w)` to `long` (rounded half up).
pub fn preprocess_shape(h: usize, w: usize, long: usize) -> (usize, usize) {
    let scale = long as f64 / h.max(w) as f64;
    (
        (h as f64 * scale + 0.5) as usize,
        (w as f64 * scale + 0.5) as usize,
    )
}

/// Maps a point `(x, y)` of an image of `original` `(h, w)` into the frame resized to
/// `input` `(h, w)`.
pub fn apply_coords(
    (x, y): (f64, f64),
    original: (usize, usize),
    input: (usize, usize),
) -> (f32, f32) {
    let sx = input.1 as f64 / original.1 as f64;
    let sy = input.0 as f64 / original.0 as f64;
    ((x * sx) as f32, (y * sy) as f32)
}

/// Fixed-point precision of Pillow's 8-bit resampling.
const PRECISION_BITS: u32 = 32 - 8 - 2;

/// Pillow's bilinear coefficients for resampling `in_len` samples to `out_len`: for each
/// output sample, the first input index and fixed-point weights.
fn pil_coeffs(in_len: usize, out_len: usize) -> Vec<(usize, Vec<i64>)> {
    let scale = in_len as f64 / out_len as f64;
    let filterscale = scale.max(1.0);
    let support = filterscale;
    (0..out_len)
        .map(|i| {
            let center = (i as f64 + 0.5) * scale;
            let lo = ((center - support + 0.5) as i64).max(0) as usize;
            let hi = ((center + support + 0.5) as i64).min(in_len as i64) as usize;
            let w: Vec<f64> = (lo..hi)
                .map(|j| {
                    let t = ((j as f64 - center + 0.5) / filterscale).abs();
                    if t < 1.0 {
                        1.0 - t
                    } else {
                        0.0
                    }
                })
                .collect();
            let sum: f64 = w.iter().sum();
            let fixed = w
                .iter()
                .map(|&v| {
                    let v = if sum != 0.0 { v / sum } else { v };
                    let s = v * (1u64 << PRECISION_BITS) as f64;
                    if v < 0.0 {
                        (s - 0.5) as i64
                    } else {
                        (s + 0.5) as i64
                    }
                })
                .collect();
            (lo, fixed)
        })
        .collect()
}

/// Rounds a fixed-point accumulator to a byte as Pillow does.
fn clip8(acc: i64) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Pillow's `Image.resize(size, BILINEAR)` on an RGB image, bit-exact: horizontal pass into
/// 8-bit, then vertical pass, both with antialiasing when downscaling.
pub fn pil_resize_bilinear(img: &RgbImage, width: usize, height: usize) -> RgbImage {
    let (iw, ih) = (img.width() as usize, img.height() as usize);
    let half = 1i64 << (PRECISION_BITS - 1);
    let src = img.as_raw();
    let horizontal = if width != iw {
        let xc = pil_coeffs(iw, width);
        let mut out = vec![0u8; ih * width * 3];
        for y in 0..ih {
            let row = &src[y * iw * 3..(y + 1) * iw * 3];
            for (x, (lo, k)) in xc.iter().enumerate() {
                for c in 0..3 {
                    let acc = k
                        .iter()
                        .enumerate()
                        .fold(half, |a, (j, &w)| a + row[(lo + j) * 3 + c] as i64 * w);
                    out[(y * width + x) * 3 + c] = clip8(acc);
                }
            }
        }
        out
    } else {
        src.to_vec()
    };
    let out = if height != ih {
        let yc = pil_coeffs(ih, height);
        let mut out = vec![0u8; height * width * 3];
        for (y, (lo, k)) in yc.iter().enumerate() {
            for i in 0..width * 3 {
                let acc = k.iter().enumerate().fold(half, |a, (j, &w)| {
                    a + horizontal[(lo + j) * width * 3 + i] as i64 * w
                });
                out[y * width * 3 + i] = clip8(acc);
            }
        }
        out
    } else {
        horizontal
    };
    RgbImage::from_raw(width as u32, height as u32, out).expect("buffer sized for the image")
}

/// The image resized so that its longest side is `long` (SAM's `ResizeLongestSide`).
pub fn resize_longest_side(img: &RgbImage, long: usize) -> RgbImage {
    let (h, w) = preprocess_shape(img.height() as usize, img.width() as usize, long);
    pil_resize_bilinear(img, w, h)
}

/// The model input `(1, 3, size, size)`: the resized image normalised with
/// [`PIXEL_MEAN`]/[`PIXEL_STD`] and zero-padded at the bottom and right.
pub fn input_tensor(resized: &RgbImage, size: usize, device: &Device) -> Result<Tensor> {
    let (w, h) = (resized.width() as usize, resized.height() as usize);
    let mut data = vec![0f32; 3 * size * size];
    for (x, y, p) in resized.enumerate_pixels() {
        let (x, y) = (x as usize, y as usize);
        for c in 0..3 {
            data[c * size * size + y * size + x] = (p.0[c] as f32 - PIXEL_MEAN[c]) / PIXEL_STD[c];
        }
    }
    debug_assert!(w <= size && h <= size);
    Ok(Tensor::from_vec(data, (1, 3, size, size), device)?)
}

/// Sparse resampling weights of one axis: for each output sample, `(source index, weight)`.
type AxisTaps = Vec<Vec<(usize, f32)>>;

/// Taps of PyTorch's bilinear upscaling from `low` to `full` samples, cropping the first
/// `crop` of them and resizing those to `out` samples: the composition of the official
/// predictor's two `F.interpolate(mode="bilinear", align_corners=False)` calls.
fn composed_taps(low: usize, full: usize, crop: usize, out: usize) -> AxisTaps {
    (0..out)
        .map(|o| {
            let (a0, a1, la) = bilinear_taps(o, crop, out);
            let mut taps: Vec<(usize, f32)> = Vec::with_capacity(4);
            for (mid, wa) in [(a0, 1.0 - la), (a1, la)] {
                let (b0, b1, lb) = bilinear_taps(mid, low, full);
                for (src, wb) in [(b0, 1.0 - lb), (b1, lb)] {
                    match taps.iter_mut().find(|(s, _)| *s == src) {
                        Some(t) => t.1 += wa * wb,
                        None => taps.push((src, wa * wb)),
                    }
                }
            }
            taps
        })
        .collect()
}

/// Upscales low-resolution mask logits to the original image as the official predictor does
/// (bilinear to the padded input size, crop the resized image, bilinear to the original size).
#[derive(Debug, Clone)]
pub struct MaskUpscaler {
    low: (usize, usize),
    out: (usize, usize),
    rows: AxisTaps,
    cols: AxisTaps,
}

impl MaskUpscaler {
    /// For logits of `low` `(h, w)`, a padded input of `img_size`², a resized image of
    /// `input` `(h, w)` and an original image of `original` `(h, w)`.
    pub fn new(
        low: (usize, usize),
        img_size: usize,
        input: (usize, usize),
        original: (usize, usize),
    ) -> Self {
        MaskUpscaler {
            low,
            out: original,
            rows: composed_taps(low.0, img_size, input.0, original.0),
            cols: composed_taps(low.1, img_size, input.1, original.1),
        }
    }

    /// Upscales one `low.0 × low.1` logit map (row-major) to the original size (row-major).
    pub fn apply(&self, low: &[f32]) -> Vec<f32> {
        let lw = self.low.1;
        let (oh, ow) = self.out;
        let mut tmp = vec![0f32; oh * lw];
        for (y, taps) in self.rows.iter().enumerate() {
            let dst = &mut tmp[y * lw..(y + 1) * lw];
            for &(sy, w) in taps {
                let src = &low[sy * lw..(sy + 1) * lw];
                dst.iter_mut().zip(src).for_each(|(d, &s)| *d += w * s);
            }
        }
        let mut out = vec![0f32; oh * ow];
        for y in 0..oh {
            let row = &tmp[y * lw..(y + 1) * lw];
            for (x, taps) in self.cols.iter().enumerate() {
                out[y * ow + x] = taps.iter().map(|&(sx, w)| w * row[sx]).sum();
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preprocess_shape_rounds_half_up() {
        assert_eq!(preprocess_shape(360, 480, 1024), (768, 1024));
        assert_eq!(preprocess_shape(480, 854, 1024), (576, 1024));
        assert_eq!(preprocess_shape(1000, 3, 1024), (1024, 3));
    }

    #[test]
    fn pil_resize_matches_pillow_when_shrinking_one_axis_and_growing_the_other() {
        // Oracle: Pillow 13.0, `Image.fromarray(a).resize((3, 8), Image.BILINEAR)` for the
        // 7x5 RGB image a[y, x, c] = (37x + 91y + 53c) % 256, computed once in Python.
        let img = RgbImage::from_fn(7, 5, |x, y| {
            image::Rgb([0u32, 1, 2].map(|c| ((37 * x + 91 * y + 53 * c) % 256) as u8))
        });
        let r = pil_resize_bilinear(&img, 3, 8);
        let expected: [u8; 72] = [
            32, 85, 138, 111, 164, 202, 190, 152, 95, 72, 125, 154, 144, 171, 143, 142, 120, 111,
            125, 171, 167, 179, 174, 72, 82, 84, 137, 148, 125, 98, 94, 118, 119, 105, 141, 194,
            125, 102, 92, 76, 118, 148, 144, 169, 170, 56, 102, 149, 123, 175, 158, 201, 169, 67,
            100, 153, 175, 137, 130, 117, 114, 127, 108, 140, 193, 191, 144, 91, 84, 42, 95, 148,
        ];
        assert_eq!(r.as_raw().as_slice(), expected.as_slice());
    }

    #[test]
    fn composed_upscaling_is_identity_on_constant_logits() {
        let up = MaskUpscaler::new((4, 4), 16, (12, 16), (6, 8));
        let out = up.apply(&[0.75; 16]);
        assert_eq!(out.len(), 48);
        assert!(out.iter().all(|v| (v - 0.75).abs() < 1e-6));
    }
}
