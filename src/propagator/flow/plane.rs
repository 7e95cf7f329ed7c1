//! Single-channel `f32` images: grey levels, derivatives, box means and bilinear sampling.

use image::RgbImage;
use rayon::prelude::*;

/// A row-major single-channel `f32` image.
#[derive(Debug, Clone, PartialEq)]
pub struct Plane {
    width: usize,
    height: usize,
    data: Vec<f32>,
}

impl Plane {
    /// A plane of `width × height` filled with `value`.
    pub fn filled(width: usize, height: usize, value: f32) -> Plane {
        Plane {
            width,
            height,
            data: vec![value; width * height],
        }
    }

    /// A plane from row-major values (`data.len()` must be `width * height`).
    pub fn from_vec(width: usize, height: usize, data: Vec<f32>) -> Plane {
        assert_eq!(data.len(), width * height, "plane size");
        Plane {
            width,
            height,
            data,
        }
    }

    /// A plane whose pixel `(x, y)` is `f(x, y)`, computed row-parallel.
    pub fn from_fn(width: usize, height: usize, f: impl Fn(usize, usize) -> f32 + Sync) -> Plane {
        let mut data = vec![0.0; width * height];
        data.par_chunks_mut(width.max(1))
            .enumerate()
            .for_each(|(y, row)| {
                for (x, v) in row.iter_mut().enumerate() {
                    *v = f(x, y);
                }
            });
        Plane::from_vec(width, height, data)
    }

    /// Grey levels in [0, 255] (ITU-R 601 luma weights).
    pub fn luma(image: &RgbImage) -> Plane {
        let (w, h) = (image.width() as usize, image.height() as usize);
        let raw = image.as_raw();
        Plane::from_fn(w, h, |x, y| {
            let p = &raw[3 * (y * w + x)..3 * (y * w + x) + 3];
            0.299 * p[0] as f32 + 0.587 * p[1] as f32 + 0.114 * p[2] as f32
        })
    }

    /// One colour channel of `image`, scaled to [0, 1].
    pub fn channel(image: &RgbImage, c: usize) -> Plane {
        let (w, h) = (image.width() as usize, image.height() as usize);
        let raw = image.as_raw();
        Plane::from_fn(w, h, |x, y| raw[3 * (y * w + x) + c] as f32 / 255.0)
    }

    /// Width in pixels.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Height in pixels.
    pub fn height(&self) -> usize {
        self.height
    }

    /// The values, row-major.
    pub fn data(&self) -> &[f32] {
        &self.data
    }

    /// The values, row-major, mutable.
    pub fn data_mut(&mut self) -> &mut [f32] {
        &mut self.data
    }

    /// The values, consumed.
    pub fn into_vec(self) -> Vec<f32> {
        self.data
    }

    /// The value at integer coordinates.
    #[inline]
    pub fn at(&self, x: usize, y: usize) -> f32 {
        self.data[y * self.width + x]
    }

    /// Bilinear interpolation at real coordinates (pixel centres at integers); coordinates
    /// outside the image are clamped to the border.
    #[inline]
    pub fn sample(&self, x: f32, y: f32) -> f32 {
        let xm = (self.width - 1) as f32;
        let ym = (self.height - 1) as f32;
        let x = x.clamp(0.0, xm);
        let y = y.clamp(0.0, ym);
        let x0 = x as usize;
        let y0 = y as usize;
        let x1 = (x0 + 1).min(self.width - 1);
        let y1 = (y0 + 1).min(self.height - 1);
        let fx = x - x0 as f32;
        let fy = y - y0 as f32;
        let r0 = y0 * self.width;
        let r1 = y1 * self.width;
        let top = self.data[r0 + x0] + fx * (self.data[r0 + x1] - self.data[r0 + x0]);
        let bot = self.data[r1 + x0] + fx * (self.data[r1 + x1] - self.data[r1 + x0]);
        top + fy * (bot - top)
    }

    /// Half-size plane (an odd last row or column is dropped): binomial `[1 3 3 1] / 8` low-pass
    /// in both directions, sampled so that pixel centre `x` of the result sits at `2x + 0.5`
    /// here (border replicated).
    pub fn half(&self) -> Plane {
        const TAPS: [f32; 4] = [0.125, 0.375, 0.375, 0.125];
        let (w, h) = ((self.width / 2).max(1), (self.height / 2).max(1));
        let (sw, sh) = (self.width, self.height);
        let clampi = |i: isize, n: usize| i.clamp(0, n as isize - 1) as usize;
        // Horizontal pass to a `w × sh` plane, then vertical.
        let rows = Plane::from_fn(w, sh, |x, y| {
            TAPS.iter()
                .enumerate()
                .map(|(k, t)| t * self.at(clampi(2 * x as isize - 1 + k as isize, sw), y))
                .sum()
        });
        Plane::from_fn(w, h, |x, y| {
            TAPS.iter()
                .enumerate()
                .map(|(k, t)| t * rows.at(x, clampi(2 * y as isize - 1 + k as isize, sh)))
                .sum()
        })
    }

    /// Horizontal derivative `I(x+1) − I(x−1)` (replicated border), unscaled.
    pub fn diff_x(&self) -> Plane {
        let w = self.width;
        Plane::from_fn(w, self.height, |x, y| {
            self.at((x + 1).min(w - 1), y) - self.at(x.saturating_sub(1), y)
        })
    }

    /// Vertical derivative `I(y+1) − I(y−1)` (replicated border), unscaled.
    pub fn diff_y(&self) -> Plane {
        let h = self.height;
        Plane::from_fn(self.width, h, |x, y| {
            self.at(x, (y + 1).min(h - 1)) - self.at(x, y.saturating_sub(1))
        })
    }

    /// Mean over the `(2r+1)²` window around each pixel, the window cut at the border
    /// (normalised by the pixels inside): sliding sums along rows (row-parallel), then down the
    /// columns.
    pub fn box_mean(&self, r: usize) -> Plane {
        let (w, h) = (self.width, self.height);
        let mut rows = vec![0.0f32; w * h];
        rows.par_chunks_mut(w)
            .zip(self.data.par_chunks(w))
            .for_each(|(out, row)| {
                let mut acc: f32 = row[..(r + 1).min(w)].iter().sum();
                for x in 0..w {
                    let lo = x.saturating_sub(r);
                    let hi = (x + r + 1).min(w);
                    out[x] = acc / (hi - lo) as f32;
                    if x + r + 1 < w {
                        acc += row[x + r + 1];
                    }
                    if x >= r {
                        acc -= row[x - r];
                    }
                }
            });
        // Vertical pass: running sums of whole rows.
        let mut data = vec![0.0f32; w * h];
        let mut acc = vec![0.0f32; w];
        for row in rows.chunks(w).take(r + 1) {
            acc.iter_mut().zip(row).for_each(|(a, v)| *a += v);
        }
        for (y, out) in data.chunks_mut(w).enumerate() {
            let n = ((y + r + 1).min(h) - y.saturating_sub(r)) as f32;
            out.iter_mut().zip(&acc).for_each(|(o, a)| *o = a / n);
            if y + r + 1 < h {
                let add = &rows[(y + r + 1) * w..(y + r + 2) * w];
                acc.iter_mut().zip(add).for_each(|(a, v)| *a += v);
            }
            if y >= r {
                let sub = &rows[(y - r) * w..(y - r + 1) * w];
                acc.iter_mut().zip(sub).for_each(|(a, v)| *a -= v);
            }
        }
        Plane::from_vec(w, h, data)
    }

    /// Element-wise combination of two planes of the same size.
    pub fn zip_map(&self, other: &Plane, f: impl Fn(f32, f32) -> f32 + Sync) -> Plane {
        debug_assert_eq!((self.width, self.height), (other.width, other.height));
        let data = self
            .data
            .par_iter()
            .zip(&other.data)
            .map(|(&a, &b)| f(a, b))
            .collect();
        Plane::from_vec(self.width, self.height, data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bilinear_sampling_interpolates_and_clamps() {
        let p = Plane::from_vec(2, 2, vec![0.0, 1.0, 2.0, 3.0]);
        assert_eq!(p.sample(0.5, 0.5), 1.5);
        assert_eq!(p.sample(1.0, 0.25), 1.5);
        assert_eq!(p.sample(-3.0, 7.0), 2.0);
    }

    #[test]
    fn box_mean_matches_direct_window_average() {
        let p = Plane::from_fn(7, 5, |x, y| ((x * 31 + y * 17) % 11) as f32);
        let m = p.box_mean(2);
        for y in 0..5usize {
            for x in 0..7usize {
                let (mut s, mut n) = (0.0, 0.0);
                for yy in y.saturating_sub(2)..(y + 3).min(5) {
                    for xx in x.saturating_sub(2)..(x + 3).min(7) {
                        s += p.at(xx, yy);
                        n += 1.0;
                    }
                }
                assert!((m.at(x, y) - s / n).abs() < 1e-5);
            }
        }
    }

    #[test]
    fn half_keeps_linear_ramps_and_derivatives_are_central() {
        let p = Plane::from_fn(9, 8, |x, y| (x + 10 * y) as f32);
        let h = p.half();
        assert_eq!((h.width(), h.height()), (4, 4));
        // A linear ramp is reproduced at the new centres (2x + 0.5, 2y + 0.5) away from the
        // border: (2.5, 2.5) → 2.5 + 25 (taps on rows and columns 1..=4, all inside).
        assert_eq!(h.at(1, 1), 27.5);
        assert_eq!(p.diff_x().at(2, 1), 2.0);
        assert_eq!(p.diff_x().at(0, 1), 1.0);
        assert_eq!(p.diff_y().at(2, 1), 20.0);
    }
}
