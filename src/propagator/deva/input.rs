//! Network input: ImageNet normalisation and zero padding to multiples of 16 (reference §1.11).

use image::RgbImage;

/// ImageNet mean of the RGB channels.
const MEAN: [f32; 3] = [0.485, 0.456, 0.406];
/// ImageNet standard deviation of the RGB channels.
const STD: [f32; 3] = [0.229, 0.224, 0.225];
/// Sides are padded to multiples of this.
pub const STRIDE: usize = 16;

/// Zero padding that makes an image's sides multiples of 16, split low = ⌊d/2⌋, high = d − low.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Padding {
    /// Unpadded width.
    pub width: usize,
    /// Unpadded height.
    pub height: usize,
    /// Columns added on the left.
    pub left: usize,
    /// Rows added on top.
    pub top: usize,
    /// Padded width.
    pub padded_width: usize,
    /// Padded height.
    pub padded_height: usize,
}

impl Padding {
    /// The padding of a `width × height` image.
    pub fn new(width: usize, height: usize) -> Self {
        let padded_width = width.div_ceil(STRIDE) * STRIDE;
        let padded_height = height.div_ceil(STRIDE) * STRIDE;
        Padding {
            width,
            height,
            left: (padded_width - width) / 2,
            top: (padded_height - height) / 2,
            padded_width,
            padded_height,
        }
    }

    /// Pixels of the padded image.
    pub fn padded_len(&self) -> usize {
        self.padded_width * self.padded_height
    }

    /// Side of the stride-16 feature grid (width, height).
    pub fn grid(&self) -> (usize, usize) {
        (self.padded_width / STRIDE, self.padded_height / STRIDE)
    }

    /// Copies one unpadded channel into the interior of a padded channel.
    pub fn pad_into(&self, src: &[f32], dst: &mut [f32]) {
        for (y, row) in src.chunks(self.width).enumerate() {
            let at = (y + self.top) * self.padded_width + self.left;
            dst[at..at + self.width].copy_from_slice(row);
        }
    }

    /// One padded channel (zeros outside the image).
    pub fn pad(&self, src: &[f32]) -> Vec<f32> {
        let mut dst = vec![0.0; self.padded_len()];
        self.pad_into(src, &mut dst);
        dst
    }

    /// The interior of one padded channel.
    pub fn unpad(&self, src: &[f32]) -> Vec<f32> {
        let mut dst = Vec::with_capacity(self.width * self.height);
        for y in 0..self.height {
            let at = (y + self.top) * self.padded_width + self.left;
            dst.extend_from_slice(&src[at..at + self.width]);
        }
        dst
    }
}

/// The normalised, zero-padded image, channel-major `[3, padded_height, padded_width]`:
/// `(rgb / 255 − mean) / std`, in the reference's order of f32 operations.
pub fn normalized_padded(image: &RgbImage, pad: &Padding) -> Vec<f32> {
    let plane = pad.padded_len();
    let mut out = vec![0.0f32; 3 * plane];
    for (c, dst) in out.chunks_mut(plane).enumerate() {
        let channel: Vec<f32> = image
            .pixels()
            .map(|p| (p.0[c] as f32 / 255.0 - MEAN[c]) / STD[c])
            .collect();
        pad.pad_into(&channel, dst);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padding_splits_low_half_first() {
        // 150 → 160: 5 left, 5 right; 100 → 112: 6 top, 6 bottom (fixture pads [5, 5, 6, 6]).
        let p = Padding::new(150, 100);
        assert_eq!(
            (p.left, p.top, p.padded_width, p.padded_height),
            (5, 6, 160, 112)
        );
        assert_eq!(p.grid(), (10, 7));
        // 853 → 864: 5 left, 6 right.
        let p = Padding::new(853, 480);
        assert_eq!(
            (p.left, p.top, p.padded_width - p.width - p.left),
            (5, 0, 6)
        );
        let src: Vec<f32> = (0..150 * 100).map(|i| i as f32).collect();
        let q = Padding::new(150, 100);
        assert_eq!(q.unpad(&q.pad(&src)), src);
    }
}
