//! Variational refinement of a dense flow field (the last step of DIS at every level).
//!
//! Minimises, over an increment `(du, dv)` of the current field, the energy of Brox et al.
//! (ECCV 2004) with the normalised data terms of DeepFlow (Weinzaepfel et al., ICCV 2013):
//! `δ Ψ(brightness constancy) + γ Ψ(gradient constancy) + α Ψ(|∇(u+du)|² + |∇(v+dv)|²)`,
//! `Ψ(s²) = √(s² + ε²)`, each constancy term linearised around the current field and divided
//! by its squared spatial gradient plus ζ². Lagged fixed-point iterations update the robust
//! weights; red–black successive over-relaxation solves each linear system.

mod sor;

use self::sor::{build_coefficients, sor_half_sweep, Checker, Coefficients};
use super::field::FlowField;
use super::plane::{min_rows, Plane};
use super::FlowConfig;
use crate::nn::vmath::multiversion;
use rayon::prelude::*;

/// Robust-penaliser ε.
const EPSILON: f32 = 1e-3;
/// Normalisation ζ of the data terms (also a small ridge on the diagonal).
const ZETA: f32 = 0.1;
/// Edge-aware smoothness: links are weighted by `exp(−κ·|∇I₀| / 255)`, so that motion
/// boundaries can form at image edges (as in DeepFlow's local smoothness weight).
const EDGE_KAPPA: f32 = 10.0;

/// Per-pixel image derivatives at the linearisation point, with the reciprocals of the
/// data terms' normalisations.
struct Derivatives {
    ix: Vec<f32>,
    iy: Vec<f32>,
    iz: Vec<f32>,
    ixx: Vec<f32>,
    ixy: Vec<f32>,
    iyy: Vec<f32>,
    ixz: Vec<f32>,
    iyz: Vec<f32>,
    /// `1 / (ix² + iy² + ζ²)`.
    inv_n: Vec<f32>,
    /// `1 / (ixx² + ixy² + ζ²)`.
    inv_nx: Vec<f32>,
    /// `1 / (iyy² + ixy² + ζ²)`.
    inv_ny: Vec<f32>,
}

impl Derivatives {
    fn new(i0: &Plane, i1: &Plane, flow: &FlowField) -> Derivatives {
        let (u, v) = (flow.u_plane(), flow.v_plane());
        let warped = i1.warped(u, v);
        let mean = i0.zip_map(&warped, |a, b| 0.5 * (a + b));
        let iz = warped.zip_map(i0, |a, b| a - b);
        let (ix, iy) = mean.gradients();
        let (ixz, iyz) = iz.gradients();
        let (ixx, ixy) = ix.gradients();
        let iyy = iy.gradient_y();
        let zeta2 = ZETA * ZETA;
        let inv = |a: &Plane, b: &Plane| a.zip_map(b, |a, b| 1.0 / (a * a + b * b + zeta2));
        Derivatives {
            inv_n: inv(&ix, &iy).into_vec(),
            inv_nx: inv(&ixx, &ixy).into_vec(),
            inv_ny: inv(&iyy, &ixy).into_vec(),
            ix: ix.into_vec(),
            iy: iy.into_vec(),
            iz: iz.into_vec(),
            ixx: ixx.into_vec(),
            ixy: ixy.into_vec(),
            iyy: iyy.into_vec(),
            ixz: ixz.into_vec(),
            iyz: iyz.into_vec(),
        }
    }
}

/// Coefficients of the 2×2 data-term system at every pixel, `A (du, dv) = b`, row-major.
#[derive(Default)]
struct DataTerm {
    a11: Vec<f32>,
    a12: Vec<f32>,
    a22: Vec<f32>,
    b1: Vec<f32>,
    b2: Vec<f32>,
}

impl DataTerm {
    /// Makes room in every field for `n` pixels (values left as they were: `update` writes
    /// the first `n`).
    fn fit(&mut self, n: usize) {
        for f in [
            &mut self.a11,
            &mut self.a12,
            &mut self.a22,
            &mut self.b1,
            &mut self.b2,
        ] {
            grow(f, n);
        }
    }

    /// The system linearised at the increment `(du, dv)` (row-major, rows of `w`): the robust
    /// weights of both constancy terms (lagged), parallel over rows, each row a loop that
    /// the compiler vectorises.
    fn update(
        &mut self,
        d: &Derivatives,
        (du, dv): (&[f32], &[f32]),
        w: usize,
        config: &FlowConfig,
    ) {
        let (delta, gamma) = (config.refine_delta / 2.0, config.refine_gamma / 2.0);
        let (w1, n) = (w.max(1), du.len());
        self.a11[..n]
            .par_chunks_mut(w1)
            .zip(self.a12[..n].par_chunks_mut(w1))
            .zip(self.a22[..n].par_chunks_mut(w1))
            .zip(self.b1[..n].par_chunks_mut(w1))
            .zip(self.b2[..n].par_chunks_mut(w1))
            .with_min_len(min_rows(w))
            .enumerate()
            .for_each(|(y, ((((a11, a12), a22), b1), b2))| {
                data_row(d, (du, dv), y * w, (delta, gamma), [a11, a12, a22, b1, b2]);
            });
    }
}

/// Edge-aware smoothness weight of every pixel, `edge · α/2 / Ψ(|∇U|² + |∇V|²)`, from forward
/// differences of the refined field `U = u0 + du` (row-major); it weighs the links to the
/// right and lower neighbours.
#[allow(clippy::too_many_arguments)]
fn smoothness(
    (u0, v0): (&[f32], &[f32]),
    (du, dv): (&[f32], &[f32]),
    edge: &[f32],
    (w, h): (usize, usize),
    alpha: f32,
    out: &mut [f32],
) {
    out.par_chunks_mut(w.max(1))
        .with_min_len(min_rows(w))
        .enumerate()
        .for_each(|(y, s)| smoothness_row((u0, v0), (du, dv), edge, (w, h, y), alpha, s));
}

multiversion! {
    /// Row `y` of [`smoothness`].
    fn smoothness_row(
        field: (&[f32], &[f32]),
        inc: (&[f32], &[f32]),
        edge: &[f32],
        at: (usize, usize, usize),
        alpha: f32,
        s: &mut [f32],
    ) {
        let ((u0, v0), (du, dv), (w, h, y)) = (field, inc, at);
        let eps2 = EPSILON * EPSILON;
        let row = |v, y: usize| span(v, y * w, w);
        let below = if y + 1 < h { y + 1 } else { y };
        let (u, ud, v, vd) = (row(u0, y), row(du, y), row(v0, y), row(dv, y));
        let (ub, udb, vb, vdb) = (
            row(u0, below),
            row(du, below),
            row(v0, below),
            row(dv, below),
        );
        let e = row(edge, y);
        for x in 0..w {
            let r = (x + 1).min(w - 1);
            let (uu, vv) = (u[x] + ud[x], v[x] + vd[x]);
            let (ux, uy) = (u[r] + ud[r] - uu, ub[x] + udb[x] - uu);
            let (vx, vy) = (v[r] + vd[r] - vv, vb[x] + vdb[x] - vv);
            s[x] = e[x] * (alpha / 2.0 / (ux * ux + uy * uy + vx * vx + vy * vy + eps2).sqrt());
        }
    }
}

/// The buffers of [`refine`] that it writes before it reads them, kept from call to call
/// at the size of the largest field so far, so that no pyramid level allocates or zeroes
/// them (about 17 values per pixel).
#[derive(Default)]
struct Buffers {
    t: DataTerm,
    coef: [Coefficients; 2],
    fu: Vec<f32>,
    fv: Vec<f32>,
    s: Vec<f32>,
}

impl Buffers {
    /// Sizes the buffers for a `w × h` field.
    fn fit(&mut self, w: usize, h: usize) {
        let n = w * h;
        self.t.fit(n);
        self.coef.iter_mut().for_each(|c| c.fit(w, h));
        for v in [&mut self.fu, &mut self.fv, &mut self.s] {
            grow(v, n);
        }
    }
}

/// Lengthens `v` to at least `n` values (the new ones zero); never shortens it.
fn grow(v: &mut Vec<f32>, n: usize) {
    if v.len() < n {
        v.resize(n, 0.0);
    }
}

thread_local! {
    /// This thread's [`Buffers`]; a call made while they are in use (a rayon task taken on
    /// while `refine` waits) makes its own.
    static BUFFERS: std::cell::RefCell<Buffers> = std::cell::RefCell::default();
}

/// Refines `flow` from `i0` to `i1` in place (same sizes).
pub fn refine(i0: &Plane, i1: &Plane, flow: &mut FlowField, config: &FlowConfig) {
    BUFFERS.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buffers) => refine_with(i0, i1, flow, config, &mut buffers),
        Err(_) => refine_with(i0, i1, flow, config, &mut Buffers::default()),
    })
}

/// [`refine`] with `buffers`.
fn refine_with(
    i0: &Plane,
    i1: &Plane,
    flow: &mut FlowField,
    config: &FlowConfig,
    buffers: &mut Buffers,
) {
    let (w, h) = (i0.width(), i0.height());
    let d = Derivatives::new(i0, i1, flow);
    let (gx, gy) = i0.gradients();
    let edge = gx
        .zip_map(&gy, |a, b| {
            (-EDGE_KAPPA * (a * a + b * b).sqrt() / 255.0).exp()
        })
        .into_vec();
    let mut du = Checker::zeros(w, h);
    let mut dv = Checker::zeros(w, h);
    buffers.fit(w, h);
    let Buffers { t, coef, fu, fv, s } = buffers;
    let n = w * h;
    let (fu, fv, s) = (&mut fu[..n], &mut fv[..n], &mut s[..n]);
    let (u0, v0) = (flow.u(), flow.v());
    for _ in 0..config.refine_iterations {
        du.write_to(fu);
        dv.write_to(fv);
        t.update(&d, (fu, fv), w, config);
        smoothness((u0, v0), (fu, fv), &edge, (w, h), config.refine_alpha, s);
        build_coefficients(coef, t, s, (u0, v0), (w, h));
        for _ in 0..config.sor_iterations {
            for (colour, c) in coef.iter().enumerate() {
                sor_half_sweep(c, (&mut du, &mut dv), colour);
            }
        }
    }
    du.write_to(fu);
    dv.write_to(fv);
    let (u, v) = flow.planes_mut();
    u.data_mut()
        .iter_mut()
        .zip(fu.iter())
        .for_each(|(a, b)| *a += b);
    v.data_mut()
        .iter_mut()
        .zip(fv.iter())
        .for_each(|(a, b)| *a += b);
}

/// `v[start..start + len]`.
#[inline(always)]
fn span(v: &[f32], start: usize, len: usize) -> &[f32] {
    &v[start..start + len]
}

multiversion! {
    /// One row of `DataTerm::update`: the pixels from `start` on, as many as the outputs
    /// `[a11, a12, a22, b1, b2]` hold; `weights` are δ/2 and γ/2.
    fn data_row(
        d: &Derivatives,
        inc: (&[f32], &[f32]),
        start: usize,
        weights: (f32, f32),
        out: [&mut [f32]; 5],
    ) {
        let ((du, dv), (delta, gamma)) = (inc, weights);
        let (zeta2, eps2) = (ZETA * ZETA, EPSILON * EPSILON);
        let [a11, a12, a22, b1, b2] = out;
        let n = a11.len();
        let at = |v| span(v, start, n);
        let (ix, iy, iz, inv_n) = (at(&d.ix), at(&d.iy), at(&d.iz), at(&d.inv_n));
        let (ixx, ixy, iyy) = (at(&d.ixx), at(&d.ixy), at(&d.iyy));
        let (ixz, iyz, inv_nx, inv_ny) = (at(&d.ixz), at(&d.iyz), at(&d.inv_nx), at(&d.inv_ny));
        let (du, dv) = (at(du), at(dv));
        let (a12, a22, b1, b2) = (&mut a12[..n], &mut a22[..n], &mut b1[..n], &mut b2[..n]);
        for i in 0..n {
            let (ix, iy, iz) = (ix[i], iy[i], iz[i]);
            let r = iz + ix * du[i] + iy * dv[i];
            let wgt = delta * inv_n[i] / (r * r * inv_n[i] + eps2).sqrt();
            let (ixx, ixy, iyy) = (ixx[i], ixy[i], iyy[i]);
            let (ixz, iyz) = (ixz[i], iyz[i]);
            let (nx, ny) = (inv_nx[i], inv_ny[i]);
            let rx = ixz + ixx * du[i] + ixy * dv[i];
            let ry = iyz + ixy * du[i] + iyy * dv[i];
            let wg = gamma / (rx * rx * nx + ry * ry * ny + eps2).sqrt();
            let (gx, gy) = (wg * nx, wg * ny);
            a11[i] = wgt * ix * ix + zeta2 + gx * ixx * ixx + gy * ixy * ixy;
            a12[i] = wgt * ix * iy + gx * ixx * ixy + gy * ixy * iyy;
            a22[i] = wgt * iy * iy + zeta2 + gx * ixy * ixy + gy * iyy * iyy;
            b1[i] = -wgt * iz * ix - gx * ixx * ixz - gy * ixy * iyz;
            b2[i] = -wgt * iz * iy - gx * ixy * ixz - gy * iyy * iyz;
        }
    }
}
