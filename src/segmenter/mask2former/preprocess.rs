//! Image preprocessing of `Mask2FormerImageProcessor`: resize by shortest/longest edge, sides
//! rounded up to a multiple of the size divisor, antialiased bilinear, ImageNet normalisation.

use candle_core::{Device, Tensor};
use image::RgbImage;

use crate::error::{Error, Result};
use crate::video::pillow::resize_torchvision;

/// ImageNet mean (RGB) used by Mask2Former checkpoints.
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
/// ImageNet standard deviation (RGB).
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// Resize parameters (Hugging Face `size` and `size_divisor`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PreprocessConfig {
    /// Target of the shorter side.
    pub shortest_edge: usize,
    /// Bound on the longer side.
    pub longest_edge: usize,
    /// Both sides are rounded up to a multiple of this (0 = no rounding).
    pub size_divisor: usize,
}

impl Default for PreprocessConfig {
    /// The processor's defaults: shortest edge 800, longest 1333, divisor 32.
    fn default() -> Self {
        PreprocessConfig {
            shortest_edge: 800,
            longest_edge: 1333,
            size_divisor: 32,
        }
    }
}

/// `(height, width)` after resizing: the shorter side becomes `shortest_edge` unless the
/// longer side would then exceed `longest_edge` (then the longer side is bounded; the other
/// side is truncated), as transformers' `get_size_with_aspect_ratio`.
pub fn aspect_size(h: usize, w: usize, shortest: usize, longest: usize) -> (usize, usize) {
    let (short, long) = (h.min(w) as f64, h.max(w) as f64);
    let mut size = shortest;
    let mut raw = None;
    if long / short * shortest as f64 > longest as f64 {
        let r = longest as f64 * short / long;
        raw = Some(r);
        size = r.round_ties_even() as usize;
    }
    if (h <= w && h == size) || (w <= h && w == size) {
        return (h, w);
    }
    let scaled = |num: usize, den: usize| -> usize {
        match raw {
            Some(r) => (r * num as f64 / den as f64) as usize,
            None => (size as f64 * num as f64 / den as f64) as usize,
        }
    };
    if w < h {
        (scaled(h, w), size)
    } else {
        (size, scaled(w, h))
    }
}

/// `(height, width)` of the network input for an image: [`aspect_size`], then both sides
/// rounded up to the size divisor.
pub fn input_size(h: usize, w: usize, cfg: &PreprocessConfig) -> (usize, usize) {
    let (oh, ow) = aspect_size(h, w, cfg.shortest_edge, cfg.longest_edge);
    let up = |x: usize| match cfg.size_divisor {
        0 => x,
        d => x.div_ceil(d) * d,
    };
    (up(oh), up(ow))
}

/// `(float(u8) − 255·mean) / (255·std)` in f32, as `[1, 3, h, w]`.
pub fn normalize(img: &RgbImage, device: &Device) -> Result<Tensor> {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let mut v = vec![0f32; 3 * h * w];
    for (i, p) in img.pixels().enumerate() {
        for c in 0..3 {
            let m = 255.0 * IMAGENET_MEAN[c];
            let s = 255.0 * IMAGENET_STD[c];
            v[c * h * w + i] = (p.0[c] as f32 - m) / s;
        }
    }
    Ok(Tensor::from_vec(v, (1, 3, h, w), device)?)
}

/// The processor's output for one image: resized to [`input_size`] and normalised.
pub fn preprocess(img: &RgbImage, cfg: &PreprocessConfig, device: &Device) -> Result<Tensor> {
    let (w, h) = (img.width() as usize, img.height() as usize);
    if w == 0 || h == 0 {
        return Err(Error::invalid("mask2former: empty image"));
    }
    let (oh, ow) = input_size(h, w, cfg);
    normalize(&resize_torchvision(img, ow, oh), device)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_follow_shortest_then_longest_edge() {
        // Short side 240 → 256 keeps the long side 320 · 256/240 = 341.33 → 341 (< 384).
        assert_eq!(aspect_size(240, 320, 256, 384), (256, 341));
        // 427 · 256/240 = 455 > 384: the short side becomes round(384·240/427) = 216 and
        // the long side int(215.83·427/240) = 384.
        assert_eq!(aspect_size(240, 427, 256, 384), (216, 384));
        assert_eq!(aspect_size(427, 240, 256, 384), (384, 216));
        let cfg = PreprocessConfig {
            shortest_edge: 256,
            longest_edge: 384,
            size_divisor: 32,
        };
        assert_eq!(input_size(240, 320, &cfg), (256, 352));
        assert_eq!(input_size(240, 427, &cfg), (224, 384));
    }
}
