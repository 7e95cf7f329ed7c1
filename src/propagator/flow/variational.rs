//! Variational refinement of a dense flow field (the last step of DIS at every level).
//!
//! Minimises, over an increment `(du, dv)` of the current field, the energy of Brox et al.
//! (ECCV 2004) with the normalised data terms of DeepFlow (Weinzaepfel et al., ICCV 2013):
//! `δ Ψ(brightness constancy) + γ Ψ(gradient constancy) + α Ψ(|∇(u+du)|² + |∇(v+dv)|²)`,
//! `Ψ(s²) = √(s² + ε²)`, each constancy term linearised around the current field and divided
//! by its squared spatial gradient plus ζ². Lagged fixed-point iterations update the robust
//! weights; red–black successive over-relaxation solves each linear system.

use super::field::FlowField;
use super::plane::Plane;
use super::FlowConfig;
use rayon::prelude::*;

/// Robust-penaliser ε.
const EPSILON: f32 = 1e-3;
/// Normalisation ζ of the data terms (also a small ridge on the diagonal).
const ZETA: f32 = 0.1;
/// SOR relaxation factor.
const OMEGA: f32 = 1.6;
/// Edge-aware smoothness: links are weighted by `exp(−κ·|∇I₀| / 255)`, so that motion
/// boundaries can form at image edges (as in DeepFlow's local smoothness weight).
const EDGE_KAPPA: f32 = 10.0;

/// Per-pixel image derivatives at the linearisation point.
struct Derivatives {
    ix: Plane,
    iy: Plane,
    iz: Plane,
    ixx: Plane,
    ixy: Plane,
    iyy: Plane,
    ixz: Plane,
    iyz: Plane,
}

/// Central derivatives `(I(x+1) − I(x−1)) / 2` along x and y.
fn gradients(p: &Plane) -> (Plane, Plane) {
    let half = |q: Plane| {
        let mut q = q;
        q.data_mut().iter_mut().for_each(|v| *v *= 0.5);
        q
    };
    (half(p.diff_x()), half(p.diff_y()))
}

impl Derivatives {
    fn new(i0: &Plane, i1: &Plane, flow: &FlowField) -> Derivatives {
        let (u, v) = (flow.u_plane(), flow.v_plane());
        let warped = Plane::from_fn(i0.width(), i0.height(), |x, y| {
            i1.sample(x as f32 + u.at(x, y), y as f32 + v.at(x, y))
        });
        let mean = i0.zip_map(&warped, |a, b| 0.5 * (a + b));
        let iz = warped.zip_map(i0, |a, b| a - b);
        let (ix, iy) = gradients(&mean);
        let (ixz, iyz) = gradients(&iz);
        let (ixx, ixy) = gradients(&ix);
        let (_, iyy) = gradients(&iy);
        Derivatives {
            ix,
            iy,
            iz,
            ixx,
            ixy,
            iyy,
            ixz,
            iyz,
        }
    }
}

/// Coefficients of the 2×2 data-term system at every pixel: `A (du, dv) = b`.
struct DataTerm {
    a11: Vec<f32>,
    a12: Vec<f32>,
    a22: Vec<f32>,
    b1: Vec<f32>,
    b2: Vec<f32>,
}

fn data_term(d: &Derivatives, du: &[f32], dv: &[f32], config: &FlowConfig) -> DataTerm {
    let n = du.len();
    let (zeta2, eps2) = (ZETA * ZETA, EPSILON * EPSILON);
    let (delta, gamma) = (config.refine_delta / 2.0, config.refine_gamma / 2.0);
    let coef: Vec<[f32; 5]> = (0..n)
        .into_par_iter()
        .map(|p| {
            let (ix, iy, iz) = (d.ix.data()[p], d.iy.data()[p], d.iz.data()[p]);
            let norm = ix * ix + iy * iy + zeta2;
            let r = iz + ix * du[p] + iy * dv[p];
            let wgt = delta / (r * r / norm + eps2).sqrt() / norm;
            let mut c = [
                wgt * ix * ix + zeta2,
                wgt * ix * iy,
                wgt * iy * iy + zeta2,
                -wgt * iz * ix,
                -wgt * iz * iy,
            ];
            let (ixx, ixy, iyy) = (d.ixx.data()[p], d.ixy.data()[p], d.iyy.data()[p]);
            let (ixz, iyz) = (d.ixz.data()[p], d.iyz.data()[p]);
            let nx = ixx * ixx + ixy * ixy + zeta2;
            let ny = iyy * iyy + ixy * ixy + zeta2;
            let rx = ixz + ixx * du[p] + ixy * dv[p];
            let ry = iyz + ixy * du[p] + iyy * dv[p];
            let wg = gamma / (rx * rx / nx + ry * ry / ny + eps2).sqrt();
            c[0] += wg * (ixx * ixx / nx + ixy * ixy / ny);
            c[1] += wg * (ixx * ixy / nx + ixy * iyy / ny);
            c[2] += wg * (ixy * ixy / nx + iyy * iyy / ny);
            c[3] -= wg * (ixx * ixz / nx + ixy * iyz / ny);
            c[4] -= wg * (ixy * ixz / nx + iyy * iyz / ny);
            c
        })
        .collect();
    DataTerm {
        a11: coef.iter().map(|c| c[0]).collect(),
        a12: coef.iter().map(|c| c[1]).collect(),
        a22: coef.iter().map(|c| c[2]).collect(),
        b1: coef.iter().map(|c| c[3]).collect(),
        b2: coef.iter().map(|c| c[4]).collect(),
    }
}

/// Smoothness weight `α/2 / Ψ(|∇U|² + |∇V|²)` of every pixel, from forward differences of the
/// refined field; it weighs the links to the right and lower neighbours.
fn smoothness(u: &[f32], v: &[f32], w: usize, h: usize, alpha: f32) -> Vec<f32> {
    let eps2 = EPSILON * EPSILON;
    (0..w * h)
        .into_par_iter()
        .map(|p| {
            let (x, y) = (p % w, p / w);
            let r = if x + 1 < w { p + 1 } else { p };
            let d = if y + 1 < h { p + w } else { p };
            let (ux, uy) = (u[r] - u[p], u[d] - u[p]);
            let (vx, vy) = (v[r] - v[p], v[d] - v[p]);
            alpha / 2.0 / (ux * ux + uy * uy + vx * vx + vy * vy + eps2).sqrt()
        })
        .collect()
}

/// Refines `flow` from `i0` to `i1` in place (same sizes).
pub fn refine(i0: &Plane, i1: &Plane, flow: &mut FlowField, config: &FlowConfig) {
    let (w, h) = (i0.width(), i0.height());
    let d = Derivatives::new(i0, i1, flow);
    let (gx, gy) = gradients(i0);
    let edge: Vec<f32> = gx
        .data()
        .iter()
        .zip(gy.data())
        .map(|(a, b)| (-EDGE_KAPPA * (a * a + b * b).sqrt() / 255.0).exp())
        .collect();
    let (u0, v0) = (flow.u().to_vec(), flow.v().to_vec());
    let mut du = Checker::zeros(w, h);
    let mut dv = Checker::zeros(w, h);
    for _ in 0..config.refine_iterations {
        let (fu, fv) = (du.to_vec(), dv.to_vec());
        let t = data_term(&d, &fu, &fv, config);
        let uu: Vec<f32> = u0.iter().zip(&fu).map(|(a, b)| a + b).collect();
        let vv: Vec<f32> = v0.iter().zip(&fv).map(|(a, b)| a + b).collect();
        let mut s = smoothness(&uu, &vv, w, h, config.refine_alpha);
        s.iter_mut().zip(&edge).for_each(|(a, e)| *a *= e);
        let links = Links::new(&s, w, h);
        for _ in 0..config.sor_iterations {
            for colour in 0..2 {
                sor_half_sweep(&t, &links, (&u0, &v0), (&mut du, &mut dv), colour);
            }
        }
    }
    let (u, v) = flow.planes_mut();
    for (a, b) in u.data_mut().iter_mut().zip(&du.to_vec()) {
        *a += b;
    }
    for (a, b) in v.data_mut().iter_mut().zip(&dv.to_vec()) {
        *a += b;
    }
}

/// A field stored by the colour `(x + y) % 2` of its pixels on a checkerboard: `planes[c]`
/// holds, row after row, the pixels of colour `c` (`⌈w / 2⌉` slots per row, pixel `x` in slot
/// `x / 2`), so that a red–black sweep writes one plane while it reads the other.
struct Checker {
    width: usize,
    half: usize,
    planes: [Vec<f32>; 2],
}

impl Checker {
    fn zeros(width: usize, height: usize) -> Checker {
        let half = width.div_ceil(2);
        Checker {
            width,
            half,
            planes: [vec![0.0; half * height], vec![0.0; half * height]],
        }
    }

    /// The plane of `colour` (mutable) and the other one.
    fn split(&mut self, colour: usize) -> (&mut [f32], &[f32]) {
        let [a, b] = &mut self.planes;
        if colour == 0 {
            (a, b)
        } else {
            (b, a)
        }
    }

    /// The field, row-major.
    fn to_vec(&self) -> Vec<f32> {
        let (w, half) = (self.width, self.half);
        let h = self.planes[0].len() / half.max(1);
        let mut out = vec![0.0f32; w * h];
        out.par_chunks_mut(w.max(1))
            .enumerate()
            .for_each(|(y, row)| {
                for (x, v) in row.iter_mut().enumerate() {
                    *v = self.planes[(x + y) % 2][y * half + x / 2];
                }
            });
        out
    }
}
/// Links of every pixel to its left, right, upper and lower neighbours (0 outside the image).
struct Links {
    left: Vec<f32>,
    right: Vec<f32>,
    up: Vec<f32>,
    down: Vec<f32>,
}

impl Links {
    fn new(s: &[f32], w: usize, h: usize) -> Links {
        let n = w * h;
        let at = |p: usize, ok: bool| if ok { s[p] } else { 0.0 };
        Links {
            left: (0..n).map(|p| at(p.wrapping_sub(1), p % w > 0)).collect(),
            right: (0..n).map(|p| at(p, p % w + 1 < w)).collect(),
            up: (0..n).map(|p| at(p.wrapping_sub(w), p >= w)).collect(),
            down: (0..n).map(|p| at(p, p + w < n)).collect(),
        }
    }
}

/// One red–black SOR half sweep: updates the pixels with `(x + y) % 2 == colour`, whose
/// neighbours all have the other colour, so rows are independent.
fn sor_half_sweep(
    t: &DataTerm,
    links: &Links,
    (u0, v0): (&[f32], &[f32]),
    (du, dv): (&mut Checker, &mut Checker),
    colour: usize,
) {
    let (w, half) = (du.width, du.half);
    let h = u0.len() / w;
    let (mine_u, other_u) = du.split(colour);
    let (mine_v, other_v) = dv.split(colour);
    mine_u
        .par_chunks_mut(half)
        .zip(mine_v.par_chunks_mut(half))
        .enumerate()
        .for_each(|(y, (ru, rv))| {
            let row = y * w;
            // Neighbours are clamped into the image; their link weight is 0 outside, and a
            // neighbour clamped onto the pixel itself reads its own current value.
            let (up, down) = (y.saturating_sub(1), (y + 1).min(h - 1));
            for x in ((y + colour) % 2..w).step_by(2) {
                let p = row + x;
                let (du_p, dv_p) = (ru[x / 2], rv[x / 2]);
                let at = |plane: &[f32], own: f32, (nx, ny): (usize, usize)| {
                    if (nx, ny) == (x, y) {
                        own
                    } else {
                        plane[ny * half + nx / 2]
                    }
                };
                let nbrs = [
                    (x.saturating_sub(1), y),
                    ((x + 1).min(w - 1), y),
                    (x, up),
                    (x, down),
                ];
                let uu = |q: (usize, usize)| u0[q.1 * w + q.0] + at(other_u, du_p, q);
                let vv = |q: (usize, usize)| v0[q.1 * w + q.0] + at(other_v, dv_p, q);
                let (wl, wr, wu, wd) = (links.left[p], links.right[p], links.up[p], links.down[p]);
                let sw = wl + wr + wu + wd;
                let su = wl * uu(nbrs[0]) + wr * uu(nbrs[1]) + wu * uu(nbrs[2]) + wd * uu(nbrs[3])
                    - sw * u0[p];
                let sv = wl * vv(nbrs[0]) + wr * vv(nbrs[1]) + wu * vv(nbrs[2]) + wd * vv(nbrs[3])
                    - sw * v0[p];
                let new_u = (t.b1[p] + su - t.a12[p] * dv_p) / (t.a11[p] + sw);
                let u = (1.0 - OMEGA) * du_p + OMEGA * new_u;
                let new_v = (t.b2[p] + sv - t.a12[p] * u) / (t.a22[p] + sw);
                ru[x / 2] = u;
                rv[x / 2] = (1.0 - OMEGA) * dv_p + OMEGA * new_v;
            }
        });
}
