//! Dense displacement fields and the forward–backward consistency check.

use super::plane::Plane;
use rayon::prelude::*;

/// A dense displacement field from image A to image B: pixel `(x, y)` of A is seen at
/// `(x + u, y + v)` in B.
#[derive(Debug, Clone, PartialEq)]
pub struct FlowField {
    u: Plane,
    v: Plane,
}

impl FlowField {
    /// No motion anywhere.
    pub fn zeros(width: usize, height: usize) -> FlowField {
        FlowField {
            u: Plane::filled(width, height, 0.0),
            v: Plane::filled(width, height, 0.0),
        }
    }

    /// A field from its two components (same size).
    pub fn from_planes(u: Plane, v: Plane) -> FlowField {
        assert_eq!((u.width(), u.height()), (v.width(), v.height()));
        FlowField { u, v }
    }

    /// Width in pixels.
    pub fn width(&self) -> usize {
        self.u.width()
    }

    /// Height in pixels.
    pub fn height(&self) -> usize {
        self.u.height()
    }

    /// Horizontal components, row-major.
    pub fn u(&self) -> &[f32] {
        self.u.data()
    }

    /// Vertical components, row-major.
    pub fn v(&self) -> &[f32] {
        self.v.data()
    }

    /// Horizontal component plane.
    pub(crate) fn u_plane(&self) -> &Plane {
        &self.u
    }

    /// Vertical component plane.
    pub(crate) fn v_plane(&self) -> &Plane {
        &self.v
    }

    /// Both component planes, mutable.
    pub(crate) fn planes_mut(&mut self) -> (&mut Plane, &mut Plane) {
        (&mut self.u, &mut self.v)
    }

    /// The displacement at integer coordinates.
    pub fn at(&self, x: usize, y: usize) -> (f32, f32) {
        (self.u.at(x, y), self.v.at(x, y))
    }

    /// The displacement interpolated bilinearly at real coordinates (border clamped).
    pub fn sample(&self, x: f32, y: f32) -> (f32, f32) {
        (self.u.sample(x, y), self.v.sample(x, y))
    }

    /// This field on a grid `2^k` times finer, of size `width × height`: pixel centre `x` of
    /// the finer grid sits at `(x + 0.5) / 2^k − 0.5` here (the pyramid's 2×2 averaging), and
    /// displacements are multiplied by `2^k`.
    pub fn upscale(&self, k: usize, width: usize, height: usize) -> FlowField {
        let s = (1u32 << k) as f32;
        let map = |n: usize| {
            (0..n)
                .map(|x| (x as f32 + 0.5) / s - 0.5)
                .collect::<Vec<_>>()
        };
        let (xs, ys) = (map(width), map(height));
        FlowField {
            u: self.u.sample_grid(&xs, &ys, s),
            v: self.v.sample_grid(&xs, &ys, s),
        }
    }

    /// Forward–backward consistency of `self` (A → B) with `back` (B → A), per pixel of A:
    /// 1 where the round trip `x → x + f(x) → x + f(x) + b(x + f(x))` returns within
    /// `abs_px` pixels plus `rel` times the motion (`|f + b|² ≤ rel·(|f|² + |b|²) + abs_px²`,
    /// Sundaram et al. 2010), 0 where it does not or where `x + f(x)` leaves image B.
    pub fn consistency(&self, back: &FlowField, abs_px: f32, rel: f32) -> Plane {
        let (bw, bh) = (back.width() as f32, back.height() as f32);
        let abs2 = abs_px * abs_px;
        Plane::from_fn(self.width(), self.height(), |x, y| {
            let (u, v) = self.at(x, y);
            let (tx, ty) = (x as f32 + u, y as f32 + v);
            if tx < -0.5 || ty < -0.5 || tx > bw - 0.5 || ty > bh - 0.5 {
                return 0.0;
            }
            let (bu, bv) = back.sample(tx, ty);
            let (eu, ev) = (u + bu, v + bv);
            let err = eu * eu + ev * ev;
            let bound = rel * (u * u + v * v + bu * bu + bv * bv) + abs2;
            if err <= bound {
                1.0
            } else {
                0.0
            }
        })
    }

    /// Mean end-point error against `other` over the pixels where `keep(x, y)` holds, or
    /// `None` when none does.
    pub fn mean_epe(
        &self,
        other: &FlowField,
        keep: impl Fn(usize, usize) -> bool + Sync,
    ) -> Option<f64> {
        let w = self.width();
        let (sum, n) = (0..self.height())
            .into_par_iter()
            .map(|y| {
                let mut s = 0.0f64;
                let mut n = 0usize;
                for x in (0..w).filter(|&x| keep(x, y)) {
                    let (a, b) = (self.at(x, y), other.at(x, y));
                    s += (((a.0 - b.0).powi(2) + (a.1 - b.1).powi(2)) as f64).sqrt();
                    n += 1;
                }
                (s, n)
            })
            .reduce(|| (0.0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
        (n > 0).then(|| sum / n as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consistency_flags_disagreeing_and_leaving_pixels() {
        // A → B moves everything 2 px right; B → A moves back 2 px left except in column 5.
        let f = FlowField::from_planes(Plane::filled(8, 3, 2.0), Plane::filled(8, 3, 0.0));
        let b = FlowField::from_planes(
            Plane::from_fn(8, 3, |x, _| if x == 5 { 3.0 } else { -2.0 }),
            Plane::filled(8, 3, 0.0),
        );
        let c = f.consistency(&b, 0.5, 0.0);
        // x = 3 lands on column 5 (disagrees); x = 6, 7 land outside B (columns 8, 9).
        let row: Vec<f32> = (0..8).map(|x| c.at(x, 1)).collect();
        assert_eq!(row, vec![1.0, 1.0, 1.0, 0.0, 1.0, 1.0, 0.0, 0.0]);
    }

    #[test]
    fn upscale_doubles_displacements_on_the_pyramid_grid() {
        let f = FlowField::from_planes(
            Plane::from_fn(4, 2, |x, _| x as f32),
            Plane::filled(4, 2, -1.0),
        );
        let g = f.upscale(1, 8, 4);
        // fine x = 3 sits at coarse (3.5 / 2 - 0.5) = 1.25 → u = 2 × 1.25
        assert_eq!(g.at(3, 0), (2.5, -2.0));
        assert_eq!(g.at(0, 3), (0.0, -2.0));
    }
}
