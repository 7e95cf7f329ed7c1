//! Dense Inverse Search optical flow (Kroeger, Timofte, Dai, Van Gool, ECCV 2016).
//!
//! Coarse to fine over an image pyramid, each level runs three steps:
//! 1. *inverse search*: square patches on a regular grid of the first image are matched in the
//!    second by inverse-compositional Gauss–Newton on the mean-normalised patch difference,
//!    starting from the flow of the coarser level;
//! 2. *densification*: every pixel takes the average of the displacements of the patches that
//!    cover it, each weighted by `1 / max(1, |I₁(x + u) − I₀(x)|)`;
//! 3. *variational refinement* of the dense field (module `variational`).

use super::field::FlowField;
use super::plane::{min_rows, on_pool, sample_row, Plane};
use super::variational;
use super::FlowConfig;
use crate::nn::vmath::multiversion;
use image::RgbImage;
use rayon::prelude::*;
use std::sync::OnceLock;

/// Weight of the inverse search's prior towards the coarser level's displacement, relative
/// to the trace of the patch Hessian.
const PRIOR: f32 = 0.05;

/// Lanes of the patch sums (one vector register of `f32`).
const LANES: usize = 8;

/// The fewest patches a thread takes on in the patch passes (fewer run on one thread).
const PARALLEL_PATCHES: usize = 512;

/// One pyramid level: grey image (0..255) and, once a flow starts from it, its derivatives.
#[derive(Debug)]
struct Level {
    image: Plane,
    gradients: OnceLock<(Plane, Plane)>,
}

impl Level {
    /// Central derivatives `(I(x+1) − I(x−1)) / 2` along x and y, computed on first use (the
    /// levels finer than the configured finest one never need them).
    fn gradients(&self) -> &(Plane, Plane) {
        self.gradients.get_or_init(|| self.image.gradients())
    }
}

/// A grey-level image pyramid of one frame (level 0 = full size, each next level halved).
#[derive(Debug)]
pub struct Pyramid {
    levels: Vec<Level>,
}

impl Pyramid {
    /// Builds `levels` levels (at least one) of `image`.
    pub fn new(image: &RgbImage, levels: usize) -> Pyramid {
        on_pool(|| Pyramid::build(image, levels))
    }

    /// [`new`](Self::new) on the calling thread.
    fn build(image: &RgbImage, levels: usize) -> Pyramid {
        let mut planes = vec![Plane::luma(image)];
        while planes.len() < levels.max(1) {
            let next = planes[planes.len() - 1].half();
            planes.push(next);
        }
        let levels = planes
            .into_iter()
            .map(|image| Level {
                image,
                gradients: OnceLock::new(),
            })
            .collect();
        Pyramid { levels }
    }

    /// Number of levels.
    pub fn len(&self) -> usize {
        self.levels.len()
    }

    /// Whether the pyramid is empty (never: a pyramid has at least one level).
    pub fn is_empty(&self) -> bool {
        self.levels.is_empty()
    }

    /// Width and height of level 0.
    pub fn size(&self) -> (usize, usize) {
        let p = &self.levels[0].image;
        (p.width(), p.height())
    }
}

/// Coarsest level for an image of `width × height`: the configured one, or the DIS rule
/// (coarsest image about four patches across its larger side), never below the finest level
/// and never smaller than one patch in either side.
pub fn coarsest_level(config: &FlowConfig, width: usize, height: usize) -> usize {
    let auto = || {
        let ratio = width.max(height) as f64 / (4 * config.patch_size) as f64;
        (ratio.log2() + 0.5).floor().max(0.0) as usize
    };
    let mut level = config.coarsest_level.unwrap_or_else(auto);
    while level > 0 && (width >> level < config.patch_size || height >> level < config.patch_size) {
        level -= 1;
    }
    level.max(config.finest_level)
}

/// Patch origins along one axis of length `len`: every `stride` pixels, the last one flush
/// with the end so that every pixel is covered.
fn patch_origins(len: usize, size: usize, stride: usize) -> Vec<usize> {
    let last = len - size;
    let mut v: Vec<usize> = (0..=last).step_by(stride).collect();
    if *v.last().expect("at least origin 0") != last {
        v.push(last);
    }
    v
}

/// Samples the `cols × rows` block of `image` whose origin is displaced to `(x0, y0)`.
/// All pixels share the same sub-pixel offset, so interior blocks use four fixed weights.
#[inline(always)]
fn sample_block(image: &Plane, x0: f32, y0: f32, (cols, rows): (usize, usize), out: &mut [f32]) {
    let (w, h) = (image.width(), image.height());
    let (fx0, fy0) = (x0.floor(), y0.floor());
    let inside = fx0 >= 0.0 && fy0 >= 0.0 && fx0 as usize + cols < w && fy0 as usize + rows < h;
    if !inside {
        for (r, o) in out.chunks_exact_mut(cols).enumerate() {
            sample_row(image, x0, y0 + r as f32, o);
        }
        return;
    }
    let (ax, ay) = (x0 - fx0, y0 - fy0);
    let (w00, w10, w01, w11) = (
        (1.0 - ax) * (1.0 - ay),
        ax * (1.0 - ay),
        (1.0 - ax) * ay,
        ax * ay,
    );
    let (bx, by) = (fx0 as usize, fy0 as usize);
    let d = image.data();
    for r in 0..rows {
        let (p0, p1) = ((by + r) * w + bx, (by + r + 1) * w + bx);
        // Four equal-length slices, so that the loop is vectorised.
        let (a, b) = (&d[p0..p0 + cols], &d[p0 + 1..p0 + 1 + cols]);
        let (c, e) = (&d[p1..p1 + cols], &d[p1 + 1..p1 + 1 + cols]);
        let o = &mut out[r * cols..(r + 1) * cols];
        for k in 0..cols {
            o[k] = w00 * a[k] + w10 * b[k] + w01 * c[k] + w11 * e[k];
        }
    }
}

/// Sums over the sampled block `warped` and the patch `template` (element i in lane
/// i % LANES, whole groups of LANES as fixed-size arrays, one vector operation each): `Σ d`,
/// `Σ d²` and, with `GRADIENTS`, `Σ jx·d` and `Σ jy·d` of the difference `d` (else 0).
#[inline(always)]
fn residual_sums<const GRADIENTS: bool>(
    warped: &[f32],
    template: &[f32],
    jx: &[f32],
    jy: &[f32],
) -> [f32; 4] {
    let mut acc = [[0.0f32; LANES]; 4];
    let mut add = |l: usize, w: f32, t: f32, gx: f32, gy: f32| {
        let d = w - t;
        acc[0][l] += d;
        acc[1][l] += d * d;
        if GRADIENTS {
            acc[2][l] += gx * d;
            acc[3][l] += gy * d;
        }
    };
    let n = warped.len();
    let full = n - n % LANES;
    let group = |v: &[f32], i: usize| -> [f32; LANES] {
        if GRADIENTS {
            v[i..i + LANES].try_into().expect("LANES elements")
        } else {
            [0.0; LANES]
        }
    };
    for i in (0..full).step_by(LANES) {
        let w: [f32; LANES] = warped[i..i + LANES].try_into().expect("LANES elements");
        let t: [f32; LANES] = template[i..i + LANES].try_into().expect("LANES elements");
        let (gx, gy) = (group(jx, i), group(jy, i));
        for l in 0..LANES {
            add(l, w[l], t[l], gx[l], gy[l]);
        }
    }
    for (l, i) in (full..n).enumerate() {
        let (gx, gy) = if GRADIENTS {
            (jx[i], jy[i])
        } else {
            (0.0, 0.0)
        };
        add(l, warped[i], template[i], gx, gy);
    }
    acc.map(|a| a.iter().sum::<f32>())
}

multiversion! {
    /// The `size × size` block of `to` at `(x0, y0)` into `warped`, compared with the
    /// `template` of a patch whose mean-normalised gradients are `jx`, `jy`: the
    /// mean-normalised SSD and `Σ J·d` of the difference `d`.
    fn patch_residual(
        to: &Plane,
        at: (f32, f32),
        size: usize,
        warped: &mut [f32],
        patch: [&[f32]; 3],
    ) -> (f32, f32, f32) {
        let [template, jx, jy] = patch;
        sample_block(to, at.0, at.1, (size, size), warped);
        let [s, s2, bx, by] = residual_sums::<true>(warped, template, jx, jy);
        (s2 - s * s / warped.len() as f32, bx, by)
    }
}

multiversion! {
    /// The mean-normalised SSD of [`patch_residual`] alone (the same value, bit for bit).
    fn patch_ssd(to: &Plane, at: (f32, f32), size: usize, warped: &mut [f32], template: &[f32]) -> f32 {
        sample_block(to, at.0, at.1, (size, size), warped);
        let [s, s2, _, _] = residual_sums::<false>(warped, template, &[], &[]);
        s2 - s * s / warped.len() as f32
    }
}

/// Lane sums of `v` (element i into lane i % LANES).
#[inline(always)]
fn lane_sums(v: &[f32]) -> [f32; LANES] {
    let mut acc = [0.0f32; LANES];
    let mut chunks = v.chunks_exact(LANES);
    for c in &mut chunks {
        for l in 0..LANES {
            acc[l] += c[l];
        }
    }
    for (a, x) in acc.iter_mut().zip(chunks.remainder()) {
        *a += x;
    }
    acc
}

multiversion! {
    /// Subtracts their means from the patch gradients `jx`, `jy` (of equal length) and returns
    /// the Hessian `(Σ jx², Σ jx·jy, Σ jy²)` of the centred ones, all sums in `LANES` lanes.
    fn centre_gradients(jx: &mut [f32], jy: &mut [f32]) -> (f32, f32, f32) {
        let n = jx.len() as f32;
        let mx = lane_sums(jx).iter().sum::<f32>() / n;
        let my = lane_sums(jy).iter().sum::<f32>() / n;
        let mut acc = [[0.0f32; LANES]; 3];
        for (cx, cy) in jx.chunks_mut(LANES).zip(jy.chunks_mut(LANES)) {
            for (l, (gx, gy)) in cx.iter_mut().zip(cy.iter_mut()).enumerate() {
                *gx -= mx;
                *gy -= my;
                acc[0][l] += *gx * *gx;
                acc[1][l] += *gx * *gy;
                acc[2][l] += *gy * *gy;
            }
        }
        let [hxx, hxy, hyy] = acc.map(|a| a.iter().sum::<f32>());
        (hxx, hxy, hyy)
    }
}

/// One patch of the inverse search: its template, mean-normalised template gradients and
/// the inverse-compositional Hessian, plus a sampling buffer.
struct Patch {
    origin: (usize, usize),
    size: usize,
    template: Vec<f32>,
    jx: Vec<f32>,
    jy: Vec<f32>,
    hessian: (f32, f32, f32),
    warped: Vec<f32>,
}

impl Patch {
    fn new(size: usize) -> Patch {
        Patch {
            origin: (0, 0),
            size,
            template: vec![0.0; size * size],
            jx: vec![0.0; size * size],
            jy: vec![0.0; size * size],
            hessian: (0.0, 0.0, 0.0),
            warped: vec![0.0; size * size],
        }
    }

    /// Loads the template of `from` with origin `(px, py)`, enough for [`Self::ssd`].
    fn load_template(&mut self, from: &Level, (px, py): (usize, usize)) {
        let size = self.size;
        let w = from.image.width();
        self.origin = (px, py);
        for r in 0..size {
            let o = (py + r) * w + px;
            self.template[r * size..(r + 1) * size]
                .copy_from_slice(&from.image.data()[o..o + size]);
        }
    }

    /// Loads the whole patch of `from` with origin `(px, py)`: template, centred gradients and
    /// Hessian.
    fn load(&mut self, from: &Level, (px, py): (usize, usize)) {
        self.load_template(from, (px, py));
        let size = self.size;
        let w = from.image.width();
        let (dx, dy) = from.gradients();
        for r in 0..size {
            let o = (py + r) * w + px;
            let dst = r * size..(r + 1) * size;
            self.jx[dst.clone()].copy_from_slice(&dx.data()[o..o + size]);
            self.jy[dst].copy_from_slice(&dy.data()[o..o + size]);
        }
        self.hessian = centre_gradients(&mut self.jx, &mut self.jy);
    }

    /// The mean-normalised SSD of [`Self::residual`] alone, which needs only the template.
    fn ssd(&mut self, to: &Plane, (u, v): (f32, f32)) -> f32 {
        let (px, py) = self.origin;
        let at = (px as f32 + u, py as f32 + v);
        patch_ssd(to, at, self.size, &mut self.warped, &self.template)
    }

    /// Samples `to` under the patch displaced by `(u, v)`; returns the mean-normalised SSD
    /// and the gradient `Σ J·d` of the difference `d`.
    fn residual(&mut self, to: &Plane, (u, v): (f32, f32)) -> (f32, f32, f32) {
        let (px, py) = self.origin;
        let at = (px as f32 + u, py as f32 + v);
        patch_residual(
            to,
            at,
            self.size,
            &mut self.warped,
            [&self.template, &self.jx, &self.jy],
        )
    }

    /// Inverse-compositional Gauss–Newton from `start`; returns the displacement with the
    /// smallest mean-normalised SSD seen and that SSD. One that strays more than a patch
    /// size from `start` is rejected.
    fn search(&mut self, to: &Plane, start: (f32, f32), iterations: usize) -> ((f32, f32), f32) {
        let n = (self.size * self.size) as f32;
        let (hxx, hxy, hyy) = self.hessian;
        // A quadratic prior `λ|u − start|²` with λ relative to the patch's texture: along an
        // edge, where the Hessian is nearly singular, the ill-determined component stays at
        // its starting value instead of sliding along the edge (the aperture problem); flat
        // patches keep their start; textured patches are barely biased.
        let lambda = PRIOR * (hxx + hyy) + 1e-2 * n;
        let (axx, ayy) = (hxx + lambda, hyy + lambda);
        let det = axx * ayy - hxy * hxy;
        let (mut u, mut v) = start;
        let mut best = ((u, v), f32::INFINITY);
        for it in 0..=iterations {
            let (ssd, bx, by) = self.residual(to, (u, v));
            if ssd < best.1 {
                best = ((u, v), ssd);
            }
            if it == iterations || det <= 0.0 {
                break;
            }
            // Gauss–Newton step on SSD + prior: (H + λI) δ = −b − λ(u − start).
            let (gx, gy) = (-bx - lambda * (u - start.0), -by - lambda * (v - start.1));
            let du = (ayy * gx - hxy * gy) / det;
            let dv = (axx * gy - hxy * gx) / det;
            u += du;
            v += dv;
            if du * du + dv * dv < 1e-4 {
                let ssd = self.ssd(to, (u, v));
                if ssd < best.1 {
                    best = ((u, v), ssd);
                }
                break;
            }
        }
        let ((bu, bv), _) = best;
        if (bu - start.0).powi(2) + (bv - start.1).powi(2) > n {
            (start, self.ssd(to, start))
        } else {
            best
        }
    }
}

/// Sparse patch displacements of one level, then densified into a field.
///
/// Spatial propagation (as in OpenCV's DIS): along every patch row, left to right, a patch
/// starts from its left neighbour's result when that matches better than the coarser
/// level's flow; afterwards right-to-left, top-to-bottom and bottom-to-top passes let every
/// patch take a neighbour's displacement when it matches better. This keeps the coarse
/// level's blurred motion boundaries from leaking into weakly textured neighbours.
fn patch_flow(from: &Level, to: &Plane, init: &FlowField, config: &FlowConfig) -> FlowField {
    let (w, h) = (from.image.width(), from.image.height());
    let size = config.patch_size.min(w).min(h);
    let stride = config.patch_stride.min(size);
    let xs = patch_origins(w, size, stride);
    let ys = patch_origins(h, size, stride);
    let (nx, ny) = (xs.len(), ys.len());
    let half = size / 2;
    // Row passes, parallel over patch rows.
    let mut grid: Vec<((f32, f32), f32)> = ys
        .par_iter()
        .with_min_len(PARALLEL_PATCHES.div_ceil(nx))
        .flat_map_iter(|&py| {
            let mut patch = Patch::new(size);
            let mut row: Vec<((f32, f32), f32)> = Vec::with_capacity(nx);
            for (i, &px) in xs.iter().enumerate() {
                patch.load(from, (px, py));
                let coarse = init.at(px + half, py + half);
                let mut start = (coarse, patch.ssd(to, coarse));
                if i > 0 {
                    let cand = row[i - 1].0;
                    let ssd = patch.ssd(to, cand);
                    if ssd < start.1 {
                        start = (cand, ssd);
                    }
                }
                row.push(patch.search(to, start.0, config.iterations));
            }
            for i in (0..nx.saturating_sub(1)).rev() {
                patch.load_template(from, (xs[i], py));
                let cand = row[i + 1].0;
                let ssd = patch.ssd(to, cand);
                if ssd < row[i].1 {
                    row[i] = (cand, ssd);
                }
            }
            row
        })
        .collect();
    // Column passes, parallel over patch columns.
    let columns: Vec<Vec<((f32, f32), f32)>> = (0..nx)
        .into_par_iter()
        .with_min_len(PARALLEL_PATCHES.div_ceil(ny))
        .map(|i| {
            let mut patch = Patch::new(size);
            let mut col: Vec<((f32, f32), f32)> = (0..ny).map(|j| grid[j * nx + i]).collect();
            let order: Vec<(usize, usize)> = (1..ny)
                .map(|j| (j, j - 1))
                .chain((0..ny.saturating_sub(1)).rev().map(|j| (j, j + 1)))
                .collect();
            for (j, from_j) in order {
                patch.load_template(from, (xs[i], ys[j]));
                let cand = col[from_j].0;
                let ssd = patch.ssd(to, cand);
                if ssd < col[j].1 {
                    col[j] = (cand, ssd);
                }
            }
            col
        })
        .collect();
    for (i, col) in columns.into_iter().enumerate() {
        for (j, v) in col.into_iter().enumerate() {
            grid[j * nx + i] = v;
        }
    }
    let sparse: Vec<Vec<(f32, f32)>> = (0..ny)
        .map(|j| (0..nx).map(|i| grid[j * nx + i].0).collect())
        .collect();
    // Densification, parallel over image rows.
    let mut u = vec![0.0f32; w * h];
    let mut v = vec![0.0f32; w * h];
    u.par_chunks_mut(w)
        .zip(v.par_chunks_mut(w))
        .with_min_len(min_rows(w))
        .enumerate()
        .for_each_init(
            || (vec![0.0f32; 3 * w], vec![0.0f32; size]),
            |(acc, warped), (y, (urow, vrow))| {
                let i0 = &from.image.data()[y * w..(y + 1) * w];
                let grid = Grid {
                    xs: &xs,
                    ys: &ys,
                    size,
                    sparse: &sparse,
                };
                densify_row(to, i0, y, grid, acc, warped, (urow, vrow));
            },
        );
    FlowField::from_planes(Plane::from_vec(w, h, u), Plane::from_vec(w, h, v))
}

/// The patch grid of one level: origins along x and y, side, and displacements.
#[derive(Clone, Copy)]
struct Grid<'a> {
    xs: &'a [usize],
    ys: &'a [usize],
    size: usize,
    sparse: &'a [Vec<(f32, f32)>],
}

multiversion! {
    /// Densifies image row `y` (grey values `i0`): every pixel takes the average of the
    /// displacements of the patches covering it, each weighted by
    /// `1 / max(1, |I₁(x + u) − I₀(x)|)`. A patch's pixels on one row share its sub-pixel
    /// offset, so each patch row is sampled with four fixed weights.
    fn densify_row(
        to: &Plane,
        i0: &[f32],
        y: usize,
        grid: Grid,
        acc: &mut [f32],
        warped: &mut [f32],
        out: (&mut [f32], &mut [f32]),
    ) {
        let (w, size) = (i0.len(), grid.size);
        acc.fill(0.0);
        let (au, rest) = acc.split_at_mut(w);
        let (av, aw) = rest.split_at_mut(w);
        for (j, &py) in grid.ys.iter().enumerate() {
            if y < py || y >= py + size {
                continue;
            }
            for (i, &px) in grid.xs.iter().enumerate() {
                let (pu, pv) = grid.sparse[j][i];
                sample_block(to, px as f32 + pu, y as f32 + pv, (size, 1), warped);
                let span = px..px + size;
                let (i0, au, av, aw) = (
                    &i0[span.clone()],
                    &mut au[span.clone()],
                    &mut av[span.clone()],
                    &mut aw[span],
                );
                for k in 0..size {
                    let wgt = 1.0 / (warped[k] - i0[k]).abs().max(1.0);
                    au[k] += wgt * pu;
                    av[k] += wgt * pv;
                    aw[k] += wgt;
                }
            }
        }
        let (urow, vrow) = out;
        for x in 0..w {
            urow[x] = au[x] / aw[x];
            vrow[x] = av[x] / aw[x];
        }
    }
}

/// DIS optical flow from `from` to `to` (pyramids of equal size and depth): pixel `x` of the
/// first frame is seen at `x + flow(x)` in the second. The field has the size of level 0.
pub fn dis_flow(from: &Pyramid, to: &Pyramid, config: &FlowConfig) -> FlowField {
    on_pool(|| dis_flow_here(from, to, config))
}

/// [`dis_flow`] on the calling thread.
fn dis_flow_here(from: &Pyramid, to: &Pyramid, config: &FlowConfig) -> FlowField {
    let (w, h) = from.size();
    let coarsest = coarsest_level(config, w, h)
        .min(from.len() - 1)
        .min(to.len() - 1);
    let finest = config.finest_level.min(coarsest);
    let mut flow: Option<FlowField> = None;
    for l in (finest..=coarsest).rev() {
        let (a, b) = (&from.levels[l], &to.levels[l]);
        let (lw, lh) = (a.image.width(), a.image.height());
        let init = match flow {
            None => FlowField::zeros(lw, lh),
            Some(f) => f.upscale(1, lw, lh),
        };
        let mut dense = patch_flow(a, &b.image, &init, config);
        if config.refine_iterations > 0 {
            variational::refine(&a.image, &b.image, &mut dense, config);
        }
        flow = Some(dense);
    }
    let flow = flow.expect("at least one level");
    if finest == 0 {
        flow
    } else {
        flow.upscale(finest, w, h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patch_origins_cover_the_axis() {
        assert_eq!(patch_origins(20, 8, 4), vec![0, 4, 8, 12]);
        assert_eq!(patch_origins(21, 8, 4), vec![0, 4, 8, 12, 13]);
        assert_eq!(patch_origins(8, 8, 4), vec![0]);
    }

    #[test]
    fn coarsest_level_follows_the_dis_rule() {
        let c = FlowConfig::default();
        // 854 / 32 = 26.7 → log2 = 4.74 → 5
        assert_eq!(coarsest_level(&c, 854, 480), 5);
        // tiny images never go below one patch
        assert_eq!(coarsest_level(&c, 40, 20), 1);
    }
}
