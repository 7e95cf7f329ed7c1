//! Single-channel `f32` images: grey levels, derivatives, box means and bilinear sampling.

use crate::nn::vmath::multiversion;
use image::RgbImage;
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// Planes smaller than this many pixels are computed on one thread: below it, waking the
/// other thread costs more than the work it takes over (the coarsest pyramid levels), and on
/// a busy machine every parallel section waits for its slowest thread. At 2¹⁵ the second
/// finest level of a 480p pair (213 × 120) ran on one thread, a quarter of the whole flow's
/// samples; at 2¹³ the flow bench took 30.2 instead of 33.4 ms (mean of four alternated
/// runs, 2 threads), and at 2¹² 20.2 instead of 21.2 ms (five alternated runs, quiet Intel
/// AVX-512 machine; 2¹¹ no faster, 2¹⁴ and 2¹⁵ slower).
const PARALLEL_PIXELS: usize = 1 << 12;

/// The fewest rows of `width` pixels a thread takes on in a row-parallel loop, so that planes
/// under [`PARALLEL_PIXELS`] pixels run on one thread and larger ones in large pieces.
pub(crate) fn min_rows(width: usize) -> usize {
    (PARALLEL_PIXELS / width.max(1)).max(1)
}

/// Runs `work` on a thread of rayon's pool (in place when the caller is one). The flow's
/// parallel loops are many and short (about 350 for a 480p pair, most of them on the coarse
/// levels): issued from a thread outside the pool, every one of them, even one too small to
/// split, hands its work to a pool thread and sleeps until it is done; issued from a pool
/// thread, a loop too small to split runs in place. The flow bench: 34–39 → 29–31 ms
/// (alternated, 2 threads).
pub(crate) fn on_pool<R: Send>(work: impl FnOnce() -> R + Send) -> R {
    rayon::scope(|_| work())
}

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

    /// A plane whose pixel `(x, y)` is `f(x, y)` (computed as [`Plane::by_rows`] does).
    pub fn from_fn(width: usize, height: usize, f: impl Fn(usize, usize) -> f32 + Sync) -> Plane {
        Plane::by_rows(width, height, |y, row| {
            for (x, v) in row.iter_mut().enumerate() {
                *v = f(x, y);
            }
        })
    }

    /// A plane whose row `y` is written by `f(y, row)`; row-parallel when the plane is large
    /// enough to pay for waking the other threads.
    ///
    /// Each row is zeroed just before `f` writes it, by the thread that runs `f`, rather
    /// than the whole plane up front on one thread (that `memset` was 2.9 % of a flow's
    /// samples).
    pub fn by_rows(width: usize, height: usize, f: impl Fn(usize, &mut [f32]) + Sync) -> Plane {
        let len = width * height;
        let mut data = Vec::with_capacity(len);
        let fill = |(y, row): (usize, &mut [MaybeUninit<f32>])| {
            row.fill(MaybeUninit::new(0.0));
            // SAFETY: every value of the row was initialised on the line above.
            f(y, unsafe {
                &mut *(row as *mut [MaybeUninit<f32>] as *mut [f32])
            })
        };
        let rows = &mut data.spare_capacity_mut()[..len];
        if len < PARALLEL_PIXELS {
            rows.chunks_mut(width.max(1)).enumerate().for_each(fill);
        } else {
            rows.par_chunks_mut(width.max(1))
                .with_min_len(min_rows(width))
                .enumerate()
                .for_each(fill);
        }
        // SAFETY: the rows cover the first `len` values, and each was initialised (a panic in
        // `f` unwinds past this line with the length still 0).
        unsafe { data.set_len(len) };
        Plane::from_vec(width, height, data)
    }

    /// Grey levels in [0, 255] (ITU-R 601 luma weights).
    pub fn luma(image: &RgbImage) -> Plane {
        let (w, h) = (image.width() as usize, image.height() as usize);
        let raw = image.as_raw();
        Plane::by_rows(w, h, |y, out| {
            for (p, o) in raw[3 * y * w..3 * (y + 1) * w].chunks_exact(3).zip(out) {
                *o = 0.299 * p[0] as f32 + 0.587 * p[1] as f32 + 0.114 * p[2] as f32;
            }
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

    /// This plane sampled (as [`Plane::sample`], with the same bits) at `(x + u, y + v)` for
    /// every pixel `(x, y)` of the displacement planes `u`, `v` (of equal size).
    pub fn warped(&self, u: &Plane, v: &Plane) -> Plane {
        assert_eq!(
            (u.width, u.height),
            (v.width, v.height),
            "displacement planes"
        );
        Plane::by_rows(u.width, u.height, |y, out| {
            let r = y * u.width..(y + 1) * u.width;
            warp_row(self, y as f32, &u.data[r.clone()], &v.data[r], out);
        })
    }

    /// `scale ×` this plane sampled bilinearly (as [`Plane::sample`]) on the grid of column
    /// coordinates `xs` and row coordinates `ys`; each coordinate's taps and weights are
    /// found once, not per pixel.
    pub fn sample_grid(&self, xs: &[f32], ys: &[f32], scale: f32) -> Plane {
        let axis = |c: f32, n: usize| {
            let c = c.clamp(0.0, (n - 1) as f32);
            let i0 = c as usize;
            (i0, (i0 + 1).min(n - 1), c - i0 as f32)
        };
        let columns = GridColumns::new(xs.iter().map(|&x| axis(x, self.width)));
        Plane::by_rows(xs.len(), ys.len(), |y, out| {
            let (y0, y1, fy) = axis(ys[y], self.height);
            let r0 = &self.data[y0 * self.width..(y0 + 1) * self.width];
            let r1 = &self.data[y1 * self.width..(y1 + 1) * self.width];
            grid_row([r0, r1], fy, &columns, scale, out);
        })
    }

    /// Half-size plane (an odd last row or column is dropped): binomial `[1 3 3 1] / 8` low-pass
    /// in both directions, sampled so that pixel centre `x` of the result sits at `2x + 0.5`
    /// here (border replicated).
    pub fn half(&self) -> Plane {
        const TAPS: [f32; 4] = [0.125, 0.375, 0.375, 0.125];
        let (w, h) = ((self.width / 2).max(1), (self.height / 2).max(1));
        let (sw, sh) = (self.width, self.height);
        let clampi = |i: isize, n: usize| i.clamp(0, n as isize - 1) as usize;
        // The four taps of output position `x` (source `2x − 1 ..= 2x + 2`, border clamped).
        let taps =
            |x: usize, n: usize| [0, 1, 2, 3].map(|k| clampi(2 * x as isize - 1 + k as isize, n));
        let tap_sum = |v: [f32; 4]| {
            TAPS.iter()
                .zip(v)
                .map(|(t, v)| t * v)
                .fold(-0.0f32, |a, b| a + b)
        };
        // Horizontal pass to a `w × sh` plane, then vertical.
        let columns: Vec<[usize; 4]> = (0..w).map(|x| taps(x, sw)).collect();
        let rows = Plane::by_rows(w, sh, |y, out| {
            let src = &self.data[y * sw..(y + 1) * sw];
            for (o, c) in out.iter_mut().zip(&columns) {
                *o = tap_sum(c.map(|i| src[i]));
            }
        });
        Plane::by_rows(w, h, |y, out| {
            let r = taps(y, sh).map(|i| &rows.data[i * w..(i + 1) * w]);
            for (x, o) in out.iter_mut().enumerate() {
                *o = tap_sum(r.map(|row| row[x]));
            }
        })
    }

    /// Central derivative along x, `(I(x+1) − I(x−1)) / 2` (replicated border).
    pub fn gradient_x(&self) -> Plane {
        let w = self.width;
        Plane::by_rows(w, self.height, |y, out| {
            let row = &self.data[y * w..(y + 1) * w];
            if w == 1 {
                out[0] = 0.0;
                return;
            }
            out[0] = (row[1] - row[0]) * 0.5;
            for x in 1..w - 1 {
                out[x] = (row[x + 1] - row[x - 1]) * 0.5;
            }
            out[w - 1] = (row[w - 1] - row[w - 2]) * 0.5;
        })
    }

    /// Central derivative along y, `(I(y+1) − I(y−1)) / 2` (replicated border).
    pub fn gradient_y(&self) -> Plane {
        let (w, h) = (self.width, self.height);
        Plane::by_rows(w, h, |y, out| {
            let below = &self.data[(y + 1).min(h - 1) * w..][..w];
            let above = &self.data[y.saturating_sub(1) * w..][..w];
            for ((o, b), a) in out.iter_mut().zip(below).zip(above) {
                *o = (b - a) * 0.5;
            }
        })
    }

    /// Both central derivatives, `(gradient_x, gradient_y)`.
    pub fn gradients(&self) -> (Plane, Plane) {
        (self.gradient_x(), self.gradient_y())
    }

    /// Mean over the `(2r+1)²` window around each pixel, the window cut at the border
    /// (normalised by the pixels inside): sliding sums along rows (row-parallel), then down the
    /// columns.
    pub fn box_mean(&self, r: usize) -> Plane {
        let (w, h) = (self.width, self.height);
        let mut rows = vec![0.0f32; w * h];
        rows.par_chunks_mut(w)
            .zip(self.data.par_chunks(w))
            .with_min_len(min_rows(w))
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
            .with_min_len(PARALLEL_PIXELS)
            .zip(&other.data)
            .map(|(&a, &b)| f(a, b))
            .collect();
        Plane::from_vec(self.width, self.height, data)
    }
}

/// [`Plane::sample`] with the same bits, written with branch-free clamps and 32-bit indices
/// so that loops over it are vectorised (the taps as gathers). `src` must have fewer than
/// 2³¹ pixels.
#[inline(always)]
fn sample_vectorisable(src: &Plane, x: f32, y: f32) -> f32 {
    let (w, h) = (src.width, src.height);
    let clamp = |c: f32, hi: usize| {
        let hi = (hi - 1) as f32;
        let c = if c < 0.0 { 0.0 } else { c };
        if c > hi {
            hi
        } else {
            c
        }
    };
    let (sx, sy) = (clamp(x, w), clamp(y, h));
    let (x0, y0) = (sx as i32, sy as i32);
    let (x1, y1) = ((x0 + 1).min(w as i32 - 1), (y0 + 1).min(h as i32 - 1));
    let (fx, fy) = (sx - x0 as f32, sy - y0 as f32);
    let (r0, r1) = (y0 * w as i32, y1 * w as i32);
    // SAFETY: 0 ≤ x0, x1 ≤ w − 1 and 0 ≤ y0, y1 ≤ h − 1 (clamped coordinates; NaN converts
    // to 0), so every index is in 0 .. w · h = data.len(), below 2³¹ (the callers' assert).
    let tap = |i: i32| unsafe { *src.data.get_unchecked(i as usize) };
    let (a, b) = (tap(r0 + x0), tap(r0 + x1));
    let (c, e) = (tap(r1 + x0), tap(r1 + x1));
    let top = a + fx * (b - a);
    let bot = c + fx * (e - c);
    top + fy * (bot - top)
}

/// The taps and weights of the columns of [`Plane::sample_grid`], one array each, and the
/// largest tap.
struct GridColumns {
    x0: Vec<u32>,
    x1: Vec<u32>,
    fx: Vec<f32>,
    max: usize,
}

impl GridColumns {
    fn new(taps: impl Iterator<Item = (usize, usize, f32)>) -> GridColumns {
        let mut c = GridColumns {
            x0: Vec::new(),
            x1: Vec::new(),
            fx: Vec::new(),
            max: 0,
        };
        for (x0, x1, fx) in taps {
            c.max = c.max.max(x0).max(x1);
            c.x0.push(x0 as u32);
            c.x1.push(x1 as u32);
            c.fx.push(fx);
        }
        c
    }
}

multiversion! {
    /// One row of [`Plane::sample_grid`] from the source rows `rows` and the weight `fy`
    /// between them.
    fn grid_row(rows: [&[f32]; 2], fy: f32, columns: &GridColumns, scale: f32, out: &mut [f32]) {
        let [r0, r1] = rows;
        let c = columns;
        assert!(c.max < r0.len().min(r1.len()), "column tap outside the rows");
        for (i, o) in out.iter_mut().enumerate().take(c.fx.len()) {
            let (x0, x1) = (c.x0[i] as usize, c.x1[i] as usize);
            // SAFETY: x0, x1 ≤ c.max, below the length of both rows (asserted above).
            let (a, b, d, e) = unsafe {
                (
                    *r0.get_unchecked(x0),
                    *r0.get_unchecked(x1),
                    *r1.get_unchecked(x0),
                    *r1.get_unchecked(x1),
                )
            };
            let fx = c.fx[i];
            let top = a + fx * (b - a);
            let bot = d + fx * (e - d);
            *o = scale * (top + fy * (bot - top));
        }
    }
}

multiversion! {
    /// One row of [`Plane::warped`]: `out[x] = src.sample(x + u[x], y + v[x])`.
    fn warp_row(src: &Plane, y: f32, u: &[f32], v: &[f32], out: &mut [f32]) {
        assert!(src.data.len() < 1 << 31, "plane too large for 32-bit indices");
        for (x, ((o, &du), &dv)) in out.iter_mut().zip(u).zip(v).enumerate() {
            *o = sample_vectorisable(src, x as f32 + du, y + dv);
        }
    }
}

multiversion! {
    /// `out[k] = src.sample(x0 + k, y)`: a row of samples one pixel apart.
    pub(crate) fn sample_row(src: &Plane, x0: f32, y: f32, out: &mut [f32]) {
        assert!(src.data.len() < 1 << 31, "plane too large for 32-bit indices");
        for (k, o) in out.iter_mut().enumerate() {
            *o = sample_vectorisable(src, x0 + k as f32, y);
        }
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

    /// A plane with irregular values.
    fn texture(w: usize, h: usize) -> Plane {
        Plane::from_fn(w, h, |x, y| {
            ((x * 37 + y * 91) % 23) as f32 * 1.37 - (x * y) as f32 * 0.01
        })
    }

    #[test]
    fn warping_equals_pointwise_sampling() {
        let p = texture(9, 6);
        let (w, h) = (11, 4);
        // Displacements inside, across and beyond the borders, and a NaN.
        let u = Plane::from_fn(w, h, |x, y| (x as f32 - 4.0) * 0.37 * y as f32 - 1.5);
        let mut v = Plane::from_fn(w, h, |x, y| 2.3 - (x * y) as f32 * 0.29);
        v.data[5] = f32::NAN;
        let warped = p.warped(&u, &v);
        for y in 0..h {
            for x in 0..w {
                let want = p.sample(x as f32 + u.at(x, y), y as f32 + v.at(x, y));
                assert_eq!(warped.at(x, y).to_bits(), want.to_bits(), "at ({x}, {y})");
            }
        }
    }

    #[test]
    fn rows_of_samples_equal_pointwise_sampling() {
        let p = texture(9, 6);
        let mut out = [0.0f32; 13];
        for (x0, y) in [(-3.5, -1.0), (0.25, 2.75), (4.6, 5.5), (-0.2, 9.0)] {
            sample_row(&p, x0, y, &mut out);
            for (k, o) in out.iter().enumerate() {
                let want = p.sample(x0 + k as f32, y);
                assert_eq!(o.to_bits(), want.to_bits(), "at ({x0} + {k}, {y})");
            }
        }
    }

    #[test]
    fn grid_sampling_equals_pointwise_sampling() {
        let p = texture(9, 6);
        let xs = [-2.0, 0.0, 0.25, 3.5, 7.9, 8.0, 11.0];
        let ys = [-0.5, 0.75, 2.0, 5.2, 9.0];
        let g = p.sample_grid(&xs, &ys, 2.0);
        assert_eq!((g.width(), g.height()), (xs.len(), ys.len()));
        for (j, &y) in ys.iter().enumerate() {
            for (i, &x) in xs.iter().enumerate() {
                assert_eq!(g.at(i, j), 2.0 * p.sample(x, y), "at ({x}, {y})");
            }
        }
    }

    #[test]
    fn half_equals_the_separable_binomial_filter_with_clamped_taps() {
        const TAPS: [f32; 4] = [0.125, 0.375, 0.375, 0.125];
        for (w, h) in [(9, 7), (8, 8), (3, 2), (1, 1), (40, 3)] {
            let p = texture(w, h);
            let c = |i: isize, n: usize| i.clamp(0, n as isize - 1) as usize;
            let row = |x: usize, y: usize| {
                (0..4).fold(-0.0f32, |a, k| {
                    a + TAPS[k] * p.at(c(2 * x as isize - 1 + k as isize, w), y)
                })
            };
            let q = p.half();
            assert_eq!((q.width(), q.height()), ((w / 2).max(1), (h / 2).max(1)));
            for y in 0..q.height() {
                for x in 0..q.width() {
                    let want = (0..4).fold(-0.0f32, |a, k| {
                        a + TAPS[k] * row(x, c(2 * y as isize - 1 + k as isize, h))
                    });
                    assert_eq!(q.at(x, y), want, "{w}×{h} at ({x}, {y})");
                }
            }
        }
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
        assert_eq!(p.gradient_x().at(2, 1), 1.0);
        assert_eq!(p.gradient_x().at(0, 1), 0.5);
        assert_eq!(p.gradient_x().at(8, 1), 0.5);
        assert_eq!(p.gradient_y().at(2, 1), 10.0);
        assert_eq!(p.gradient_y().at(2, 7), 5.0);
    }
}
