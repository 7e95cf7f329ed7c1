//! Grounding-DINO image preprocessing (Hugging Face `GroundingDinoImageProcessor`): resize by
//! shortest/longest edge with antialiased bilinear filtering, ImageNet normalisation, and
//! zero-padding of a batch to its largest image with a pixel mask.

use candle_core::{Device, Tensor};
use image::RgbImage;

use crate::error::Result;
use crate::video::pillow;

/// ImageNet channel means.
const MEAN: [f32; 3] = [0.485, 0.456, 0.406];
/// ImageNet channel standard deviations.
const STD: [f32; 3] = [0.229, 0.224, 0.225];

/// Resize target: the short side becomes `shortest_edge` unless the long side would then
/// exceed `longest_edge`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResizeRule {
    /// Target of the short side.
    pub shortest_edge: usize,
    /// Upper bound of the long side.
    pub longest_edge: usize,
}

impl Default for ResizeRule {
    /// The processor's default, 800 / 1333.
    fn default() -> Self {
        ResizeRule {
            shortest_edge: 800,
            longest_edge: 1333,
        }
    }
}

impl ResizeRule {
    /// Output `(height, width)` for an input of `(h, w)`.
    pub fn output_size(&self, h: usize, w: usize) -> (usize, usize) {
        let (mn, mx) = (h.min(w) as f64, h.max(w) as f64);
        let mut size = self.shortest_edge;
        let mut raw = None;
        if mx / mn * size as f64 > self.longest_edge as f64 {
            let r = self.longest_edge as f64 * mn / mx;
            raw = Some(r);
            size = r.round_ties_even() as usize;
        }
        if (h <= w && h == size) || (w <= h && w == size) {
            return (h, w);
        }
        let long = |long: usize, short: usize| match raw {
            Some(r) => (r * long as f64 / short as f64) as usize,
            None => (size as f64 * long as f64 / short as f64) as usize,
        };
        if w < h {
            (long(h, w), size)
        } else {
            (size, long(w, h))
        }
    }
}

/// A preprocessed batch.
#[derive(Debug, Clone)]
pub struct PixelBatch {
    /// Normalised images `(B, 3, H, W)`, zero-padded bottom/right.
    pub pixel_values: Tensor,
    /// `(B, H, W)` u8: 1 on image pixels, 0 on padding.
    pub pixel_mask: Tensor,
}

/// Resizes one image with the processor's rule (torchvision's antialiased bilinear on uint8).
pub fn resize(image: &RgbImage, rule: &ResizeRule) -> RgbImage {
    let (h, w) = (image.height() as usize, image.width() as usize);
    let (oh, ow) = rule.output_size(h, w);
    if (oh, ow) == (h, w) {
        return image.clone();
    }
    pillow::resize_torchvision(image, ow, oh)
}

/// Resizes, normalises and pads a batch of images.
pub fn preprocess(images: &[RgbImage], rule: &ResizeRule, dev: &Device) -> Result<PixelBatch> {
    let resized: Vec<RgbImage> = images.iter().map(|im| resize(im, rule)).collect();
    let hmax = resized
        .iter()
        .map(|r| r.height() as usize)
        .max()
        .unwrap_or(0);
    let wmax = resized
        .iter()
        .map(|r| r.width() as usize)
        .max()
        .unwrap_or(0);
    let plane = hmax * wmax;
    let mut values = vec![0f32; resized.len() * 3 * plane];
    let mut mask = vec![0u8; resized.len() * plane];
    let mean = MEAN.map(|m| m * 255.0);
    let std = STD.map(|s| s * 255.0);
    for (b, r) in resized.iter().enumerate() {
        let w = r.width() as usize;
        for (i, px) in r.as_raw().chunks_exact(3).enumerate() {
            let (y, x) = (i / w, i % w);
            mask[b * plane + y * wmax + x] = 1;
            for c in 0..3 {
                values[(b * 3 + c) * plane + y * wmax + x] = (px[c] as f32 - mean[c]) / std[c];
            }
        }
    }
    let n = resized.len();
    Ok(PixelBatch {
        pixel_values: Tensor::from_vec(values, (n, 3, hmax, wmax), dev)?,
        pixel_mask: Tensor::from_vec(mask, (n, hmax, wmax), dev)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_size_follows_the_processor_rule() {
        let rule = ResizeRule::default();
        // Short side to 800, long side scaled and truncated.
        assert_eq!(rule.output_size(480, 640), (800, 1066));
        // Long side capped at 1333: short side = round(1333·480/854).
        assert_eq!(rule.output_size(480, 854), (749, 1333));
        // Already at the target.
        assert_eq!(rule.output_size(800, 1000), (800, 1000));
        // Portrait.
        assert_eq!(rule.output_size(640, 480), (1066, 800));
    }
}
