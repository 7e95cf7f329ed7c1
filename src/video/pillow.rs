//! Pillow's 8-bit `Image.resize` (libImaging/Resample.c), bit-exact: separable passes,
//! horizontal first, each rounding to 8 bits, with fixed-point weights (22 fractional bits)
//! normalised in f64; the filter widens by the scale when downscaling (antialiasing).
//! [`resize_torchvision`] is the same algorithm with torchvision's int16 weights (uint8
//! `resize(..., antialias=True)` on CPU), whose precision adapts to the largest weight.

use image::RgbImage;

/// Fixed-point precision of Pillow's 8-bit resampling (`32 − 8 − 2`).
const PRECISION_BITS: u32 = 22;

/// A Pillow resampling filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PillowFilter {
    /// `Image.BILINEAR`: triangle on [−1, 1].
    Bilinear,
    /// `Image.LANCZOS`: `sinc(t)·sinc(t/3)` on [−3, 3).
    Lanczos,
}

impl PillowFilter {
    fn support(self) -> f64 {
        match self {
            PillowFilter::Bilinear => 1.0,
            PillowFilter::Lanczos => 3.0,
        }
    }

    fn eval(self, t: f64) -> f64 {
        match self {
            PillowFilter::Bilinear => (1.0 - t.abs()).max(0.0),
            PillowFilter::Lanczos => {
                let sinc = |x: f64| {
                    if x == 0.0 {
                        1.0
                    } else {
                        let x = x * std::f64::consts::PI;
                        x.sin() / x
                    }
                };
                if (-3.0..3.0).contains(&t) {
                    sinc(t) * sinc(t / 3.0)
                } else {
                    0.0
                }
            }
        }
    }

    /// For each output sample: the first input index and the normalised weights.
    fn float_taps(self, in_len: usize, out_len: usize) -> Vec<(usize, Vec<f64>)> {
        let scale = in_len as f64 / out_len as f64;
        let filterscale = scale.max(1.0);
        let support = self.support() * filterscale;
        (0..out_len)
            .map(|i| {
                let center = (i as f64 + 0.5) * scale;
                // C's (int) conversion truncates towards zero, as `as i64` does.
                let lo = ((center - support + 0.5) as i64).max(0) as usize;
                let hi = ((center + support + 0.5) as i64).min(in_len as i64) as usize;
                let w: Vec<f64> = (lo..hi)
                    .map(|j| self.eval((j as f64 - center + 0.5) / filterscale))
                    .collect();
                let sum: f64 = w.iter().sum();
                let w = w
                    .iter()
                    .map(|&v| if sum != 0.0 { v / sum } else { v })
                    .collect();
                (lo, w)
            })
            .collect()
    }
}

/// Weights of one axis in fixed point with `bits` fractional bits.
struct Taps {
    taps: Vec<(usize, Vec<i64>)>,
    bits: u32,
}

/// How many fractional bits the fixed-point weights get.
#[derive(Debug, Clone, Copy)]
enum Precision {
    /// Pillow: always [`PRECISION_BITS`].
    Pillow,
    /// torchvision: the most bits for which the largest weight of the axis, doubled, still
    /// fits in an int16.
    Int16,
}

fn fixed_taps(filter: PillowFilter, in_len: usize, out_len: usize, p: Precision) -> Taps {
    let taps = filter.float_taps(in_len, out_len);
    let bits = match p {
        Precision::Pillow => PRECISION_BITS,
        Precision::Int16 => {
            let max = taps
                .iter()
                .flat_map(|(_, w)| w.iter().copied())
                .fold(0f64, f64::max);
            (0..15u32)
                .find(|b| (0.5 + max * (1u64 << (b + 1)) as f64) as i64 >= 1 << 15)
                .unwrap_or(15)
        }
    };
    let one = (1u64 << bits) as f64;
    let taps = taps
        .into_iter()
        .map(|(lo, w)| {
            let fixed = w
                .iter()
                .map(|&v| {
                    if v < 0.0 {
                        (v * one - 0.5) as i64
                    } else {
                        (v * one + 0.5) as i64
                    }
                })
                .collect();
            (lo, fixed)
        })
        .collect();
    Taps { taps, bits }
}

/// `clamp((2^(bits-1) + Σ sample·weight) >> bits)` over the taps.
fn tap(weights: &[i64], bits: u32, samples: impl Iterator<Item = u8>) -> u8 {
    let acc = weights
        .iter()
        .zip(samples)
        .fold(1i64 << (bits - 1), |a, (&w, s)| a + s as i64 * w);
    (acc >> bits).clamp(0, 255) as u8
}

/// Pillow's `Image.resize((width, height), filter)` of an 8-bit RGB image.
pub fn resize(img: &RgbImage, width: usize, height: usize, filter: PillowFilter) -> RgbImage {
    resample(img, width, height, filter, Precision::Pillow)
}

/// torchvision's `resize(uint8 image, (height, width), BILINEAR, antialias=True)` on CPU.
pub fn resize_torchvision(img: &RgbImage, width: usize, height: usize) -> RgbImage {
    resample(img, width, height, PillowFilter::Bilinear, Precision::Int16)
}

fn resample(
    img: &RgbImage,
    width: usize,
    height: usize,
    filter: PillowFilter,
    p: Precision,
) -> RgbImage {
    let (iw, ih) = (img.width() as usize, img.height() as usize);
    let src = img.as_raw();
    let horizontal = if width == iw {
        src.to_vec()
    } else {
        let Taps { taps, bits } = fixed_taps(filter, iw, width, p);
        let mut out = vec![0u8; ih * width * 3];
        for y in 0..ih {
            let row = &src[y * iw * 3..(y + 1) * iw * 3];
            for (x, (lo, k)) in taps.iter().enumerate() {
                for c in 0..3 {
                    let samples = (0..k.len()).map(|j| row[(lo + j) * 3 + c]);
                    out[(y * width + x) * 3 + c] = tap(k, bits, samples);
                }
            }
        }
        out
    };
    let vertical = if height == ih {
        horizontal
    } else {
        let Taps { taps, bits } = fixed_taps(filter, ih, height, p);
        let mut out = vec![0u8; height * width * 3];
        for (y, (lo, k)) in taps.iter().enumerate() {
            for i in 0..width * 3 {
                let samples = (0..k.len()).map(|j| horizontal[(lo + j) * width * 3 + i]);
                out[y * width * 3 + i] = tap(k, bits, samples);
            }
        }
        out
    };
    RgbImage::from_raw(width as u32, height as u32, vertical).expect("buffer sized for the image")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_sum_to_one_in_fixed_point() {
        for filter in [PillowFilter::Bilinear, PillowFilter::Lanczos] {
            for (i, o) in [(854, 320), (480, 320), (10, 25), (7, 7)] {
                for (_, k) in fixed_taps(filter, i, o, Precision::Pillow).taps {
                    let s: i64 = k.iter().sum();
                    assert!(
                        (s - (1 << PRECISION_BITS)).abs() <= k.len() as i64,
                        "{filter:?} {i}->{o}: {s}"
                    );
                }
            }
        }
    }

    /// The 7×5 RGB image a[y, x, c] = (37x + 91y + 53c) % 256.
    fn pattern() -> RgbImage {
        RgbImage::from_fn(7, 5, |x, y| {
            image::Rgb([0u32, 1, 2].map(|c| ((37 * x + 91 * y + 53 * c) % 256) as u8))
        })
    }

    // Oracle: Pillow 13.0, `Image.fromarray(a).resize((3, 8), filter)` on `pattern()`,
    // computed once in Python (one axis shrinks, the other grows).

    #[test]
    fn bilinear_matches_pillow() {
        let expected: [u8; 72] = [
            32, 85, 138, 111, 164, 202, 190, 152, 95, 72, 125, 154, 144, 171, 143, 142, 120, 111,
            125, 171, 167, 179, 174, 72, 82, 84, 137, 148, 125, 98, 94, 118, 119, 105, 141, 194,
            125, 102, 92, 76, 118, 148, 144, 169, 170, 56, 102, 149, 123, 175, 158, 201, 169, 67,
            100, 153, 175, 137, 130, 117, 114, 127, 108, 140, 193, 191, 144, 91, 84, 42, 95, 148,
        ];
        let r = resize(&pattern(), 3, 8, PillowFilter::Bilinear);
        assert_eq!(r.as_raw().as_slice(), expected.as_slice());
    }

    #[test]
    fn lanczos_matches_pillow() {
        let expected: [u8; 72] = [
            16, 59, 122, 97, 176, 237, 212, 162, 88, 52, 123, 162, 162, 191, 146, 149, 109, 97,
            124, 187, 175, 198, 174, 48, 70, 70, 147, 177, 141, 82, 80, 86, 99, 83, 143, 234, 124,
            78, 67, 38, 105, 171, 173, 200, 180, 42, 84, 156, 121, 194, 164, 220, 173, 52, 96, 160,
            196, 149, 144, 103, 110, 113, 96, 164, 214, 196, 143, 76, 59, 12, 78, 172,
        ];
        let r = resize(&pattern(), 3, 8, PillowFilter::Lanczos);
        assert_eq!(r.as_raw().as_slice(), expected.as_slice());
    }
}
