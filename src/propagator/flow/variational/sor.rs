//! The linear systems of the variational refinement and their red–black successive
//! over-relaxation: the increments stored by pixel colour on a checkerboard, the per-pixel
//! update coefficients, and the half sweeps.

use super::{grow, min_rows, span, DataTerm};
use crate::nn::vmath::multiversion;
use rayon::prelude::*;

/// SOR relaxation factor.
const OMEGA: f32 = 1.6;

/// A field stored by the colour `(x + y) % 2` of its pixels on a checkerboard: `planes[c]`
/// holds, row after row, the pixels of colour `c` (pixel `x` in slot `x / 2`), so that a
/// red–black sweep writes one plane while it reads the other. Each row has one zero slot
/// before and after its `⌈w / 2⌉` slots and a zero row lies above and below the image, so
/// that every neighbour of a pixel is at a fixed offset from it (links to the outside
/// weigh 0).
pub(super) struct Checker {
    width: usize,
    half: usize,
    planes: [Vec<f32>; 2],
}

impl Checker {
    pub(super) fn zeros(width: usize, height: usize) -> Checker {
        let half = width.div_ceil(2);
        let len = (half + 2) * (height + 2);
        Checker {
            width,
            half,
            planes: [vec![0.0; len], vec![0.0; len]],
        }
    }

    /// Slots per stored row.
    fn stride(&self) -> usize {
        self.half + 2
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

    /// Writes the field into `out`, row-major.
    pub(super) fn write_to(&self, out: &mut [f32]) {
        let (w, stride) = (self.width, self.stride());
        out.par_chunks_mut(w.max(1))
            .with_min_len(min_rows(w))
            .enumerate()
            .for_each(|(y, row)| {
                // Even pixels have colour y % 2, odd ones the other; pixel x is in slot x / 2.
                let at = (y + 1) * stride + 1;
                let (even, odd) = (&self.planes[y % 2][at..], &self.planes[(y + 1) % 2][at..]);
                for ((pair, e), o) in row.chunks_mut(2).zip(even).zip(odd) {
                    pair[0] = *e;
                    if let Some(v) = pair.get_mut(1) {
                        *v = *o;
                    }
                }
            });
    }
}

/// The `n` interior pixels' left, right, own, upper and lower values, from a row and the rows
/// above and below it.
#[inline(always)]
fn interior_stencil([row, up, down]: [&[f32]; 3], n: usize) -> [&[f32]; 5] {
    [
        span(row, 0, n),
        span(row, 2, n),
        span(row, 1, n),
        span(up, 1, n),
        span(down, 1, n),
    ]
}

/// Fields of one slot's update, stored field after field per row.
const FIELDS: usize = 9;

/// The SOR update of the pixels of one colour, slot by slot (checkerboard layout): the
/// four link weights, the constant parts `k1, k2` of the two numerators (data term plus the
/// smoothness term of the unrefined field), the coupling `a12` and the reciprocal diagonals.
/// Slots outside the image have all zero and keep their increment at 0.
#[derive(Default)]
pub(super) struct Coefficients {
    half: usize,
    /// Values in use: `FIELDS · half · h`.
    len: usize,
    /// Room for the largest field so far (the values past `len` are left over).
    data: Vec<f32>,
}

impl Coefficients {
    /// Sizes the coefficients for a `w × h` field (values left as they were:
    /// `build_coefficients` writes them all).
    pub(super) fn fit(&mut self, w: usize, h: usize) {
        self.half = w.div_ceil(2);
        self.len = FIELDS * self.half * h;
        grow(&mut self.data, self.len);
    }

    /// The coefficients in use.
    fn values(&self) -> &[f32] {
        &self.data[..self.len]
    }

    /// The coefficients in use, mutable.
    fn values_mut(&mut self) -> &mut [f32] {
        &mut self.data[..self.len]
    }
}

/// Fills the coefficients of both colours from the data term `t`, the smoothness weights `s`
/// and the unrefined field (all row-major): each row is computed row-major (one loop over
/// the interior that the compiler vectorises, the two border pixels apart), then split by
/// colour into the slots.
pub(super) fn build_coefficients(
    coef: &mut [Coefficients; 2],
    t: &DataTerm,
    s: &[f32],
    (u0, v0): (&[f32], &[f32]),
    (w, h): (usize, usize),
) {
    let half = coef[0].half;
    let [c0, c1] = coef;
    c0.values_mut()
        .par_chunks_mut(FIELDS * half)
        .zip(c1.values_mut().par_chunks_mut(FIELDS * half))
        .with_min_len(min_rows(w))
        .enumerate()
        .for_each_init(
            || vec![0.0f32; FIELDS * w],
            |scratch, (y, (r0, r1))| {
                coefficient_row(t, s, (u0, v0), (w, h), y, scratch);
                // Pixel x has colour (x + y) % 2 and slot x / 2.
                let (even, odd) = if y % 2 == 0 { (r0, r1) } else { (r1, r0) };
                for ((e, o), src) in even
                    .chunks_exact_mut(half)
                    .zip(odd.chunks_exact_mut(half))
                    .zip(scratch.chunks_exact(w))
                {
                    for ((e, o), pair) in e.iter_mut().zip(o.iter_mut()).zip(src.chunks_exact(2)) {
                        (*e, *o) = (pair[0], pair[1]);
                    }
                    if w % 2 == 1 {
                        e[w / 2] = src[w - 1];
                    }
                    // Where w is odd, the other colour's last slot lies outside the image.
                    o[w / 2..].fill(0.0);
                }
            },
        );
}

multiversion! {
    /// The coefficients of the pixels of row `y`, row-major, into `out` (`FIELDS` rows of `w`).
    fn coefficient_row(
        t: &DataTerm,
        s: &[f32],
        field: (&[f32], &[f32]),
        size: (usize, usize),
        y: usize,
        out: &mut [f32],
    ) {
        let ((u0, v0), (w, h)) = (field, size);
        let p0 = y * w;
        // Rows above and below, clamped onto this one where they are outside (weight 0 there).
        let (pu, pd) = (
            if y > 0 { p0 - w } else { p0 },
            if y + 1 < h { p0 + w } else { p0 },
        );
        let (fu, fd) = (f32::from(u8::from(y > 0)), f32::from(u8::from(y + 1 < h)));
        let [wl, wr, wu, wd, k1, k2, a12, inv1, inv2] = fields_mut(out, w);
        let row = |v, p| span(v, p, w);
        let (s_c, s_u) = (row(s, p0), row(s, pu));
        let (u_c, u_u, u_d) = (row(u0, p0), row(u0, pu), row(u0, pd));
        let (v_c, v_u, v_d) = (row(v0, p0), row(v0, pu), row(v0, pd));
        let (b1, b2, a11, a22, t12) = (
            row(&t.b1, p0),
            row(&t.b2, p0),
            row(&t.a11, p0),
            row(&t.a22, p0),
            row(&t.a12, p0),
        );
        // Pixel x from its links (left, right, up, down) and its neighbours' unrefined motion.
        let mut put = |x: usize, ls: [f32; 4], un: [f32; 4], vn: [f32; 4]| {
            let c = slot_coefficients(
                ls,
                (un, u_c[x]),
                (vn, v_c[x]),
                [b1[x], b2[x], a11[x], a22[x], t12[x]],
            );
            [
                wl[x], wr[x], wu[x], wd[x], k1[x], k2[x], a12[x], inv1[x], inv2[x],
            ] = c;
        };
        if w == 1 {
            let ls = [0.0, 0.0, fu * s_u[0], fd * s_c[0]];
            put(
                0,
                ls,
                [u_c[0], u_c[0], u_u[0], u_d[0]],
                [v_c[0], v_c[0], v_u[0], v_d[0]],
            );
            return;
        }
        let e = w - 1;
        put(
            0,
            [0.0, s_c[0], fu * s_u[0], fd * s_c[0]],
            [u_c[0], u_c[1], u_u[0], u_d[0]],
            [v_c[0], v_c[1], v_u[0], v_d[0]],
        );
        put(
            e,
            [s_c[e - 1], 0.0, fu * s_u[e], fd * s_c[e]],
            [u_c[e - 1], u_c[e], u_u[e], u_d[e]],
            [v_c[e - 1], v_c[e], v_u[e], v_d[e]],
        );
        // The interior as one loop over equal-length slices (vectorised).
        let n = w - 2;
        let (sl, sr, su) = (span(s_c, 0, n), span(s_c, 1, n), span(s_u, 1, n));
        let [ul, ur, uc, uu, ud] = interior_stencil([u_c, u_u, u_d], n);
        let [vl, vr, vc, vu, vd] = interior_stencil([v_c, v_u, v_d], n);
        let t = [
            span(b1, 1, n),
            span(b2, 1, n),
            span(a11, 1, n),
            span(a22, 1, n),
            span(t12, 1, n),
        ];
        let [wl, wr, wu, wd, k1, k2, a12, inv1, inv2] =
            fields_mut(out, w).map(|f| &mut f[1..1 + n]);
        let [tb1, tb2, ta11, ta22, ta12] = t;
        for x in 0..n {
            let ls = [sl[x], sr[x], fu * su[x], fd * sr[x]];
            [
                wl[x], wr[x], wu[x], wd[x], k1[x], k2[x], a12[x], inv1[x], inv2[x],
            ] = slot_coefficients(
                ls,
                ([ul[x], ur[x], uu[x], ud[x]], uc[x]),
                ([vl[x], vr[x], vu[x], vd[x]], vc[x]),
                [tb1[x], tb2[x], ta11[x], ta22[x], ta12[x]],
            );
        }
    }
}

/// The `FIELDS` coefficients of one pixel from its links `ls` (left, right, up, down), its
/// neighbours' and its own unrefined motion, and its data term `[b1, b2, a11, a22, a12]`.
#[inline(always)]
fn slot_coefficients(
    ls: [f32; 4],
    (un, u): ([f32; 4], f32),
    (vn, v): ([f32; 4], f32),
    [b1, b2, a11, a22, a12]: [f32; 5],
) -> [f32; FIELDS] {
    let sw = ls[0] + ls[1] + ls[2] + ls[3];
    let lap =
        |n: [f32; 4], c: f32| ls[0] * n[0] + ls[1] * n[1] + ls[2] * n[2] + ls[3] * n[3] - sw * c;
    [
        ls[0],
        ls[1],
        ls[2],
        ls[3],
        b1 + lap(un, u),
        b2 + lap(vn, v),
        a12,
        1.0 / (a11 + sw),
        1.0 / (a22 + sw),
    ]
}

/// The `FIELDS` fields of one row of coefficients.
#[inline(always)]
fn fields_mut(row: &mut [f32], half: usize) -> [&mut [f32]; FIELDS] {
    let mut it = row.chunks_exact_mut(half.max(1));
    std::array::from_fn(|_| it.next().expect("FIELDS chunks per row"))
}

/// One red–black SOR half sweep: updates the pixels of `colour`, whose neighbours all have
/// the other colour, so rows are independent (parallel) and each row is one loop over
/// contiguous slots that the compiler vectorises.
pub(super) fn sor_half_sweep(
    coef: &Coefficients,
    (du, dv): (&mut Checker, &mut Checker),
    colour: usize,
) {
    let (half, stride) = (du.half, du.stride());
    let h = du.planes[0].len() / stride - 2;
    let (mine_u, other_u) = du.split(colour);
    let (mine_v, other_v) = dv.split(colour);
    mine_u[stride..stride * (h + 1)]
        .par_chunks_mut(stride)
        .zip(mine_v[stride..stride * (h + 1)].par_chunks_mut(stride))
        .zip(coef.values().par_chunks(FIELDS * half))
        .with_min_len(min_rows(2 * half))
        .enumerate()
        .for_each(|(y, ((ru, rv), k))| {
            let o = (y + colour) % 2;
            sor_row(k, (other_u, other_v), (y, o, stride), (ru, rv));
        });
}

multiversion! {
    /// One row `y` of a half sweep (`o`: the column of its first pixel of this colour):
    /// pixel x = 2i + o has, in the other plane, its left and right neighbours in slots
    /// i + o − 1 and i + o of the same row and the upper and lower ones in slot i of the rows
    /// above and below (rows stored with one leading pad slot, one pad row above).
    fn sor_row(
        k: &[f32],
        other: (&[f32], &[f32]),
        at: (usize, usize, usize),
        row: (&mut [f32], &mut [f32]),
    ) {
        let ((other_u, other_v), (y, o, stride), (ru, rv)) = (other, at, row);
        let n = k.len() / FIELDS;
        let (ul, ur, uu, ud) = (
            span(other_u, (y + 1) * stride + o, n),
            span(other_u, (y + 1) * stride + o + 1, n),
            span(other_u, y * stride + 1, n),
            span(other_u, (y + 2) * stride + 1, n),
        );
        let (vl, vr, vu, vd) = (
            span(other_v, (y + 1) * stride + o, n),
            span(other_v, (y + 1) * stride + o + 1, n),
            span(other_v, y * stride + 1, n),
            span(other_v, (y + 2) * stride + 1, n),
        );
        let (wl, wr, wu, wd) = (span(k, 0, n), span(k, n, n), span(k, 2 * n, n), span(k, 3 * n, n));
        let (k1, k2, a12) = (span(k, 4 * n, n), span(k, 5 * n, n), span(k, 6 * n, n));
        let (inv1, inv2) = (span(k, 7 * n, n), span(k, 8 * n, n));
        let (ru, rv) = (&mut ru[1..1 + n], &mut rv[1..1 + n]);
        for i in 0..n {
            let (du_p, dv_p) = (ru[i], rv[i]);
            let su = wl[i] * ul[i] + wr[i] * ur[i] + wu[i] * uu[i] + wd[i] * ud[i];
            let new_u = (k1[i] + su - a12[i] * dv_p) * inv1[i];
            let u = (1.0 - OMEGA) * du_p + OMEGA * new_u;
            let sv = wl[i] * vl[i] + wr[i] * vr[i] + wu[i] * vu[i] + wd[i] * vd[i];
            let new_v = (k2[i] + sv - a12[i] * u) * inv2[i];
            ru[i] = u;
            rv[i] = (1.0 - OMEGA) * dv_p + OMEGA * new_v;
        }
    }
}
