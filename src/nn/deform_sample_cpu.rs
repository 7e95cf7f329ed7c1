//! The CPU kernel of the multi-scale deformable sampler ([`super::deform_attn::ms_deform_sample`]):
//! one pass over the queries that reads the four neighbours of every sampling location straight
//! from the value rows, instead of materialising index and weight tensors and gathering copies.
//! Same semantics as the tensor-op path (`grid_sample` with `align_corners = False`, zeros
//! outside the map) and the same order of the products and of the sum (levels, points, then
//! the corners row by row).

use candle_core::{CpuStorage, CustomOp3, Layout, Shape};
use rayon::prelude::*;

use super::vmath::multiversion;

/// Queries per rayon task (each costs `heads · levels · points · 4 · head_dim` multiply-adds).
const QUERIES_PER_TASK: usize = 16;

/// The sampler as a candle op over `value [b, len_in, heads, hd]`, `locations [b, nq, heads,
/// levels, points, 2]` and `weights [b, nq, heads, levels, points]`, all f32 and contiguous;
/// gives `[b, nq, heads · hd]`.
pub(crate) struct DeformSample {
    /// `(height, width)` of every level.
    pub shapes: Vec<(usize, usize)>,
    /// First element of every level in the value sequence.
    pub starts: Vec<usize>,
}

impl CustomOp3 for DeformSample {
    fn name(&self) -> &'static str {
        "deva-ms-deform-sample"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let value = super::contiguous_f32(s1, l1)?;
        let loc = super::contiguous_f32(s2, l2)?;
        let attn = super::contiguous_f32(s3, l3)?;
        let (b, len_in, heads, hd) = l1.shape().dims4()?;
        let &[_, nq, _, n_levels, n_points, _] = l2.shape().dims() else {
            candle_core::bail!("deformable sampling: locations must have 6 dimensions");
        };
        if n_levels != self.shapes.len() || attn.len() * 2 != loc.len() {
            candle_core::bail!("deformable sampling: operands do not agree");
        }
        let per_query = heads * n_levels * n_points;
        let mut out = vec![0f32; b * nq * heads * hd];
        out.par_chunks_mut(heads * hd)
            .enumerate()
            .with_min_len(QUERIES_PER_TASK)
            .for_each(|(bq, o)| {
                let rows = &value[(bq / nq) * len_in * heads * hd..][..len_in * heads * hd];
                let attn = &attn[bq * per_query..][..per_query];
                let loc = &loc[2 * bq * per_query..][..2 * per_query];
                sample_query(self, rows, (loc, attn), (hd, n_points), o);
            });
        Ok((CpuStorage::F32(out), Shape::from((b, nq, heads * hd))))
    }
}

multiversion! {
    /// One query's output row `o [heads · hd]`: for every head, level and point (`attn` in
    /// that order, `loc` its `x, y` pairs), the bilinear sample of the value `rows` at the
    /// location, weighted and summed; vectorised (the head-dimension loops) and with the
    /// floors as single instructions.
    fn sample_query(
        op: &DeformSample,
        rows: &[f32],
        loc_attn: (&[f32], &[f32]),
        hd_points: (usize, usize),
        o: &mut [f32],
    ) {
        let ((loc, attn), (hd, n_points)) = (loc_attn, hd_points);
        let n_levels = op.shapes.len();
        let heads = o.len() / hd;
        for (i, a) in attn.iter().enumerate() {
            let h = i / (n_levels * n_points);
            let level = (i / n_points) % n_levels;
            let (lh, lw) = op.shapes[level];
            let x = loc[2 * i] * lw as f32 - 0.5;
            let y = loc[2 * i + 1] * lh as f32 - 0.5;
            let (x0, y0) = (x.floor(), y.floor());
            let (fx, fy) = (x - x0, y - y0);
            let oh = &mut o[h * hd..(h + 1) * hd];
            for (dy, wy) in [(0.0, 1.0 - fy), (1.0, fy)] {
                let yi = y0 + dy;
                if !(yi >= 0.0 && yi <= (lh - 1) as f32) {
                    continue;
                }
                for (dx, wx) in [(0.0, 1.0 - fx), (1.0, fx)] {
                    let xi = x0 + dx;
                    if !(xi >= 0.0 && xi <= (lw - 1) as f32) {
                        continue;
                    }
                    let w = wx * wy * a;
                    let e = op.starts[level] + yi as usize * lw + xi as usize;
                    let row = &rows[(e * heads + h) * hd..][..hd];
                    for (o, v) in oh.iter_mut().zip(row) {
                        *o += v * w;
                    }
                }
            }
        }
    }
}
