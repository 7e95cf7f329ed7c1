//! SAM's ViT attention (global, or in windows) with its decomposed relative position bias, on
//! the CPU in one pass per job: a job is a window, or a band of query rows of a global grid,
//! and takes every head in turn. It reads its `q` and `v` rows straight from the `qkv`
//! projection of the unpadded grid (a window gathers its head's rows, padding tokens taking
//! the projection of a zero token) and its keys transposed (a global grid's once per head, a
//! window's after its gather), keeps the scores and the bias terms in job-sized buffers,
//! and writes each grid token's output to its place. No padded grid, window partition,
//! `q` or `v` split, score tensor, full-size bias or reverse partition is materialised, and
//! the products are single-threaded ones on both cores at once rather than small products
//! split across the cores one after another.

use std::ops::Range;

use candle_core::{CpuStorage, CustomOp3, Layout, Shape, Tensor};
use rayon::prelude::*;

use crate::error::Result;
use crate::nn::contiguous_f32;
use crate::nn::linalg::{matmul, Dst, MatRef};
use crate::nn::transpose::transpose_columns;
use crate::nn::vmath::{multiversion, softmax_in_place};
use crate::nn::window_attn::tiles;

/// Scores of one job in a global grid, in values: whole query rows are taken while their
/// scores fit (at least one row). 4 MiB: larger bands spread the packing of each head's keys
/// and values over more queries. The ViT-B embedding at 1024² took 3.9 s with 1 MiB, 3.5 s
/// with 4 and 16 MiB (2 threads).
const SCORE_BUDGET: usize = 1 << 20;

/// Attention over `qkv (B, H, W, 3·C)`, each token's projection laid out as `[q k v]`, each
/// of them `heads` heads side by side, with `window == 0` attending over the whole grid and
/// otherwise inside the `window × window` windows from the top left, tokens past the grid's
/// edge having the projection `pad` (`3·C` values). `table_h` and `table_w` are the relative
/// position tables `(2·S − 1, C / heads)` for the attended grid's sides S (the window's, or
/// the grid's). Returns `(B, H, W, C)`.
pub fn rel_pos_attention(
    qkv: &Tensor,
    pad: &[f32],
    (table_h, table_w): (&Tensor, &Tensor),
    heads: usize,
    window: usize,
) -> Result<Tensor> {
    let op = RelPosAttention {
        heads,
        window,
        pad: pad.to_vec(),
        score_budget: SCORE_BUDGET,
    };
    Ok(qkv
        .contiguous()?
        .apply_op3_no_bwd(&table_h.contiguous()?, &table_w.contiguous()?, &op)?)
}

struct RelPosAttention {
    heads: usize,
    window: usize,
    pad: Vec<f32>,
    score_budget: usize,
}

/// The sides and head width of an op's operands.
struct Dims {
    h: usize,
    w: usize,
    c: usize,
    hd: usize,
}

impl CustomOp3 for RelPosAttention {
    fn name(&self) -> &'static str {
        "deva-sam-rel-pos-attention"
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
        let (b, h, w, three_c) = l1.shape().dims4()?;
        let heads = self.heads;
        let c = three_c / 3;
        let hd = c / heads.max(1);
        if heads == 0 || three_c != 3 * heads * hd || self.pad.len() != three_c {
            candle_core::bail!(
                "SAM attention: qkv {:?} and padding of {} values do not fit {heads} heads",
                l1.shape(),
                self.pad.len()
            );
        }
        let shape = Shape::from((b, h, w, c));
        if shape.elem_count() == 0 {
            return Ok((CpuStorage::F32(Vec::new()), shape));
        }
        let (sh, sw) = match self.window {
            0 => (h, w),
            win => (win, win),
        };
        for (name, l, side) in [("height", l2, sh), ("width", l3, sw)] {
            if l.shape().dims() != [2 * side - 1, hd] {
                candle_core::bail!(
                    "SAM attention: {name} table {:?}, expected ({}, {hd})",
                    l.shape(),
                    2 * side - 1
                );
            }
        }
        let qkv = contiguous_f32(s1, l1)?;
        let tables = Tables::reversed(contiguous_f32(s2, l2)?, contiguous_f32(s3, l3)?, hd);
        let mut out = Vec::with_capacity(shape.elem_count());
        let dims = Dims { h, w, c, hd };
        let band = self.band(h, w);
        // Jobs: windows, or bands of `band` query rows.
        let tile = if self.window == 0 {
            (band, w)
        } else {
            (sh, sw)
        };
        let jobs = tiles(
            &mut out.spare_capacity_mut()[..b * h * w * c],
            (h, w, c),
            tile,
        );
        let (gh, gw) = (sh, sw);
        let scale = (1.0 / (hd as f64).sqrt()) as f32;
        // A global grid's keys, transposed once per image and head (`[hd, h·w]`): each band
        // reads them as contiguous rows, where its product would gather them again, one
        // strided value at a time.
        let keys = h * w;
        let mut global_keys = Vec::new();
        if self.window == 0 {
            global_keys.resize(b * c * keys, 0.0);
            global_keys
                .par_chunks_mut(hd * keys)
                .enumerate()
                .for_each(|(i, kt)| {
                    let (image, head) = (i / heads, i % heads);
                    let grid = &qkv[image * keys * three_c..][..keys * three_c];
                    let cols = c + head * hd..c + (head + 1) * hd;
                    transpose_columns(grid, three_c, cols, kt);
                });
        }
        jobs.into_par_iter()
            .for_each_init(Scratch::default, |s, tile| {
                let (image, (jy, jx)) = (tile.image, tile.at);
                let rows = match self.window {
                    0 => jy * band..(jy * band + band).min(gh),
                    _ => 0..gh,
                };
                let m = rows.len() * gw;
                s.out.resize(m * c, 0.0);
                let (mut out, mut gather, mut kt) = (
                    std::mem::take(&mut s.out),
                    std::mem::take(&mut s.gather),
                    std::mem::take(&mut s.keys),
                );
                for head in 0..heads {
                    let group = if self.window == 0 {
                        let at = image * keys * three_c + head * hd;
                        let kt = &global_keys[(image * heads + head) * hd * keys..][..hd * keys];
                        let v = MatRef {
                            data: &qkv[at + 2 * c..],
                            rs: three_c,
                            cs: 1,
                        };
                        Group::new((&qkv[at..], three_c), kt, v, (gh, gw))
                    } else {
                        self.gather(qkv, &dims, (image, jy, jx), head, &mut gather);
                        kt.resize(hd * gh * gw, 0.0);
                        transpose_columns(&gather, 3 * hd, hd..2 * hd, &mut kt);
                        let v = MatRef {
                            data: &gather[2 * hd..],
                            rs: 3 * hd,
                            cs: 1,
                        };
                        Group::new((&gather, 3 * hd), &kt, v, (gh, gw))
                    };
                    group.attend(rows.clone(), &tables, scale, s, &mut out[head * hd..], c);
                }
                tile.write(&out, gw * c);
                (s.out, s.gather, s.keys) = (out, gather, kt);
            });
        // SAFETY: the jobs tile the grid (windows, or bands of whole rows), and each wrote
        // every value of the grid tokens it holds (`Tile::write`), so every value was written.
        unsafe { out.set_len(shape.elem_count()) };
        Ok((CpuStorage::F32(out), shape))
    }
}

impl RelPosAttention {
    /// Query rows per job on an `h × w` grid: a window's, or the band of whole grid rows
    /// whose scores fit the budget.
    fn band(&self, h: usize, w: usize) -> usize {
        match self.window {
            0 => (self.score_budget / (w * h * w)).clamp(1, h),
            win => win,
        }
    }

    /// Gathers the `[q k v]` rows of `head` for the window `(image, wy, wx)` into `dst`
    /// (`window² × 3·hd`), padding tokens taking the padding projection.
    fn gather(
        &self,
        qkv: &[f32],
        d: &Dims,
        (image, wy, wx): (usize, usize, usize),
        head: usize,
        dst: &mut Vec<f32>,
    ) {
        let (win, hd, c) = (self.window, d.hd, d.c);
        dst.resize(win * win * 3 * hd, 0.0);
        for (i, token) in dst.chunks_exact_mut(3 * hd).enumerate() {
            let (y, x) = (wy * win + i / win, wx * win + i % win);
            let src = if y < d.h && x < d.w {
                &qkv[((image * d.h + y) * d.w + x) * 3 * c..][..3 * c]
            } else {
                &self.pad[..]
            };
            for (part, dst) in token.chunks_exact_mut(hd).enumerate() {
                dst.copy_from_slice(&src[part * c + head * hd..][..hd]);
            }
        }
    }
}

/// A job's buffers, kept by each thread between jobs.
#[derive(Default)]
struct Scratch {
    scores: Vec<f32>,
    rel_h: Vec<f32>,
    rel_w: Vec<f32>,
    gather: Vec<f32>,
    keys: Vec<f32>,
    out: Vec<f32>,
}

/// The relative position tables of one attended grid, transposed (`[hd, 2·S − 1]`) with
/// their rows in reverse order, so that the rows a query needs are consecutive columns:
/// column `d` is the table's row `2·S − 2 − d`.
struct Tables {
    h: Vec<f32>,
    w: Vec<f32>,
    hd: usize,
}

impl Tables {
    fn reversed(h: &[f32], w: &[f32], hd: usize) -> Self {
        let flip = |t: &[f32]| {
            let mut out = vec![0.0; t.len()];
            transpose_columns(t, hd, 0..hd, &mut out);
            for column in out.chunks_mut((t.len() / hd.max(1)).max(1)) {
                column.reverse();
            }
            out
        };
        Tables {
            h: flip(h),
            w: flip(w),
            hd,
        }
    }
}

/// One head over an attended grid of `gh × gw` tokens: token `y·gw + x` has its query at
/// `y·gw + x` rows of `q.1` values into `q.0`, its key at column `y·gw + x` of `kt`
/// (`[hd, gh·gw]`) and its value at row `y·gw + x` of `v`.
struct Group<'a> {
    q: (&'a [f32], usize),
    kt: &'a [f32],
    v: MatRef<'a>,
    side: (usize, usize),
}

impl<'a> Group<'a> {
    fn new(q: (&'a [f32], usize), kt: &'a [f32], v: MatRef<'a>, side: (usize, usize)) -> Self {
        Group { q, kt, v, side }
    }

    /// The query rows from token `token` on.
    fn queries(&self, token: usize) -> MatRef<'a> {
        let (data, rs) = self.q;
        MatRef {
            data: &data[token * rs..],
            rs,
            cs: 1,
        }
    }

    /// The output of the queries of grid rows `rows` (`rows.len()·gw` rows of `hd` values,
    /// `out_rs` apart in `out`): `softmax(scale·q·kᵀ + rel_h + rel_w)·v`.
    fn attend(
        &self,
        rows: Range<usize>,
        t: &Tables,
        scale: f32,
        s: &mut Scratch,
        out: &mut [f32],
        out_rs: usize,
    ) {
        let ((gh, gw), hd) = (self.side, t.hd);
        let (keys, m, span) = (gh * gw, rows.len() * gw, 2 * gw - 1);
        s.scores.resize(m * keys, 0.0);
        s.rel_h.resize(m * gh, 0.0);
        s.rel_w.resize(m * span, 0.0);
        let kt = MatRef::rows(self.kt, keys);
        let q = self.queries(rows.start * gw);
        matmul(Dst::Set, m, keys, hd, &mut s.scores, keys, q, kt, false);
        for (i, y) in rows.clone().enumerate() {
            // The row's queries against the table rows of key rows 0..gh (reversed rows
            // gh − 1 − y …) and against every table row of the width.
            let q = self.queries(y * gw);
            let th = MatRef {
                data: &t.h[gh - 1 - y..],
                rs: t.h.len() / hd,
                cs: 1,
            };
            let tw = MatRef {
                data: &t.w,
                rs: t.w.len() / hd,
                cs: 1,
            };
            matmul(
                Dst::Set,
                gw,
                gh,
                hd,
                &mut s.rel_h[i * gw * gh..],
                gh,
                q,
                th,
                false,
            );
            let rel_w = &mut s.rel_w[i * gw * span..];
            matmul(Dst::Set, gw, span, hd, rel_w, span, q, tw, false);
        }
        for (r, row) in s.scores.chunks_exact_mut(keys).enumerate() {
            // Key column j of query column x has the width table row x − j + gw − 1, reversed
            // row gw − 1 − x + j.
            let x = r % gw;
            let bh = &s.rel_h[r * gh..][..gh];
            let bw = &s.rel_w[r * span + gw - 1 - x..][..gw];
            biased_softmax(row, scale, bh, bw);
        }
        let p = MatRef::rows(&s.scores, keys);
        matmul(Dst::Set, m, hd, keys, out, out_rs, p, self.v, false);
    }
}

multiversion! {
    /// One row of scores in place: `row[i·kw + j]·scale + bh[i] + bw[j]` (`kw = bw.len()`),
    /// then its softmax.
    fn biased_softmax(row: &mut [f32], scale: f32, bh: &[f32], bw: &[f32]) {
        let kw = bw.len();
        for (r, &h) in row.chunks_mut(kw).zip(bh) {
            for (d, &w) in r.iter_mut().zip(bw) {
                *d = *d * scale + h + w;
            }
        }
        softmax_in_place(row);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// The attention written with candle's tensor operations, after the official code: pad
    /// the grid to whole windows with the padding projection, split the windows, expand the
    /// tables to `(S, S, hd)`, add both bias terms at full size, softmax, weigh, reassemble.
    fn reference(
        qkv: &Tensor,
        pad: &[f32],
        (table_h, table_w): (&Tensor, &Tensor),
        heads: usize,
        window: usize,
    ) -> Tensor {
        let (b, h, w, three_c) = qkv.dims4().unwrap();
        let (c, dev) = (three_c / 3, qkv.device());
        let hd = c / heads;
        let (sh, sw) = if window == 0 {
            (h, w)
        } else {
            (window, window)
        };
        let (hp, wp) = (h.div_ceil(sh) * sh, w.div_ceil(sw) * sw);
        let pad = Tensor::new(pad, dev).unwrap();
        let mut grid = pad
            .reshape((1, 1, 1, three_c))
            .unwrap()
            .repeat((b, hp, wp, 1))
            .unwrap();
        grid = grid
            .slice_assign(&[0..b, 0..h, 0..w, 0..three_c], qkv)
            .unwrap();
        let (nh, nw) = (hp / sh, wp / sw);
        let windows = grid
            .reshape(vec![b, nh, sh, nw, sw, 3, heads, hd])
            .unwrap()
            .permute([5, 0, 1, 3, 6, 2, 4, 7])
            .unwrap()
            .contiguous()
            .unwrap()
            .reshape((3, b * nh * nw * heads, sh, sw, hd))
            .unwrap();
        let (q, k, v) = (
            windows.get(0).unwrap(),
            windows.get(1).unwrap(),
            windows.get(2).unwrap(),
        );
        let expand = |t: &Tensor, s: usize| {
            let idx: Vec<u32> = (0..s)
                .flat_map(|i| (0..s).map(move |j| (i + s - 1 - j) as u32))
                .collect();
            let idx = Tensor::new(idx, dev).unwrap();
            t.index_select(&idx, 0)
                .unwrap()
                .reshape((s, s, hd))
                .unwrap()
        };
        let (rh, rw) = (expand(table_h, sh), expand(table_w, sw));
        // rel_h[n, y, x, i] = q[n, y, x] · rh[y, i]; rel_w[n, y, x, j] = q[n, y, x] · rw[x, j].
        let rel_h = q
            .unsqueeze(3)
            .unwrap()
            .broadcast_mul(&rh.unsqueeze(1).unwrap())
            .unwrap()
            .sum(4)
            .unwrap();
        let rel_w = q
            .unsqueeze(3)
            .unwrap()
            .broadcast_mul(&rw.unsqueeze(0).unwrap())
            .unwrap()
            .sum(4)
            .unwrap();
        let n = q.dim(0).unwrap();
        let (q, k, v) = (
            q.reshape((n, sh * sw, hd)).unwrap(),
            k.reshape((n, sh * sw, hd)).unwrap(),
            v.reshape((n, sh * sw, hd)).unwrap(),
        );
        let scores = ((q * (1.0 / (hd as f64).sqrt())).unwrap())
            .matmul(&k.t().unwrap())
            .unwrap()
            .reshape((n, sh, sw, sh, sw))
            .unwrap()
            .broadcast_add(&rel_h.unsqueeze(4).unwrap())
            .unwrap()
            .broadcast_add(&rel_w.unsqueeze(3).unwrap())
            .unwrap()
            .reshape((n, sh * sw, sh * sw))
            .unwrap();
        let probs = candle_nn::ops::softmax_last_dim(&scores).unwrap();
        probs
            .matmul(&v)
            .unwrap()
            .reshape(vec![b, nh, nw, heads, sh, sw, hd])
            .unwrap()
            .permute([0, 1, 4, 2, 5, 3, 6])
            .unwrap()
            .reshape((b, hp, wp, c))
            .unwrap()
            .narrow(1, 0, h)
            .unwrap()
            .narrow(2, 0, w)
            .unwrap()
            .contiguous()
            .unwrap()
    }

    /// Windows that fit the grid and windows that overhang it (padding tokens among the
    /// keys), global attention in one band and in bands of one and two query rows (a partial
    /// last band), with heads narrower and wider than a transpose tile (16): each equals the
    /// tensor-operation reference.
    #[test]
    fn fused_attention_equals_tensor_ops() {
        let dev = Device::Cpu;
        for (heads, hd) in [(2, 4), (2, 20)] {
            let three_c = 3 * heads * hd;
            let pad: Vec<f32> = (0..three_c).map(|i| (i as f32 * 0.37).sin()).collect();
            let cases = [
                // (images, h, w, window, score budget)
                (2, 6, 6, 3, SCORE_BUDGET),
                (1, 7, 5, 3, SCORE_BUDGET),
                (1, 9, 11, 5, SCORE_BUDGET),
                (2, 5, 4, 0, SCORE_BUDGET),
                (1, 5, 4, 0, 4 * 5 * 4),
                (2, 5, 3, 0, 2 * 3 * 5 * 3),
                (1, 6, 7, 0, 2 * 7 * 6 * 7),
            ];
            for (b, h, w, window, budget) in cases {
                let (sh, sw) = if window == 0 {
                    (h, w)
                } else {
                    (window, window)
                };
                let qkv = Tensor::randn(0f32, 1.0, (b, h, w, three_c), &dev).unwrap();
                let th = Tensor::randn(0f32, 1.0, (2 * sh - 1, hd), &dev).unwrap();
                let tw = Tensor::randn(0f32, 1.0, (2 * sw - 1, hd), &dev).unwrap();
                let op = RelPosAttention {
                    heads,
                    window,
                    pad: pad.clone(),
                    score_budget: budget,
                };
                let ours = qkv.apply_op3_no_bwd(&th, &tw, &op).unwrap();
                let theirs = reference(&qkv, &pad, (&th, &tw), heads, window);
                let d = crate::nn::max_abs_diff(&ours, &theirs);
                assert!(
                    d < 1e-5,
                    "{heads} heads of {hd}, {b}×{h}×{w}, window {window}, budget {budget}: diff {d}"
                );
            }
        }
        // An empty grid gives an empty output, whatever the tables.
        let (heads, hd) = (2, 4);
        let three_c = 3 * heads * hd;
        let pad = vec![0.5; three_c];
        let table = Tensor::zeros((1, hd), candle_core::DType::F32, &dev).unwrap();
        for window in [0, 3] {
            let qkv = Tensor::zeros((2, 0, 4, three_c), candle_core::DType::F32, &dev).unwrap();
            let out = rel_pos_attention(&qkv, &pad, (&table, &table), heads, window).unwrap();
            assert_eq!(out.dims(), [2, 0, 4, heads * hd]);
        }
    }
}
