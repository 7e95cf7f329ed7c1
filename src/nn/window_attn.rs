//! Multi-head self-attention inside windows with an additive bias per head, computed on the
//! CPU in one pass per window, each window's heads one after another with single-threaded
//! products, the windows spread over the cores: the scores, bias, softmax and weighted sum stay
//! in window-sized buffers, and no `(q, k, v)` split or score tensor is materialised.
//!
//! - [`grid_window_attention`] (TinyViT's) takes the windows of a token grid: a window's
//!   `q`, `k` and `v` rows are gathered from the grid (tokens past its edge take the padding
//!   row) and each grid token's output is written straight to its place, so that no padded
//!   grid, window partition or reverse partition is materialised either.
//! - [`window_attention`] (Swin's) takes windows already partitioned, with the region mask of
//!   shifted windows.

use std::mem::MaybeUninit;

use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::attention::attention;
use super::linalg::{matmul, Dst, MatRef};
use super::transpose::transpose_columns;
use super::vmath::softmax_in_place;
use crate::error::Result;

/// Attention in the `window × window` windows (from the top left) of the token grid
/// `qkv (B, H, W, heads · 3 · key_dim)`, each token's projection laid out head by head as
/// `[q k v]` (TinyViT's order), with `bias (heads, N, N)` (N = window²) added to the scaled
/// scores. Tokens of the windows past the grid's edge have the projection `pad`
/// (`heads · 3 · key_dim` values: that of a zero token). Returns `(B, H, W, heads · key_dim)`,
/// heads side by side.
pub fn grid_window_attention(
    qkv: &Tensor,
    pad: &Tensor,
    bias: &Tensor,
    heads: usize,
    window: usize,
) -> Result<Tensor> {
    let three_c = qkv.dim(3)?;
    let key_dim = three_c / (3 * heads.max(1));
    if super::is_host_f32(qkv) {
        let op = GridWindowAttention {
            heads,
            key_dim,
            window,
        };
        return Ok(qkv.contiguous()?.apply_op3_no_bwd(pad, bias, &op)?);
    }
    grid_attention_tensor_ops(qkv, pad, bias, heads, window)
}

/// [`grid_window_attention`] written with candle's tensor operations (any device).
fn grid_attention_tensor_ops(
    qkv: &Tensor,
    pad: &Tensor,
    bias: &Tensor,
    heads: usize,
    window: usize,
) -> Result<Tensor> {
    let (b, h, w, three_c) = qkv.dims4()?;
    let (hp, wp) = (h.div_ceil(window) * window, w.div_ceil(window) * window);
    // The padded grid: zeros past the edge, plus `pad` wherever `inside` is 0.
    let inside = Tensor::ones((b, h, w, 1), qkv.dtype(), qkv.device())?
        .pad_with_zeros(1, 0, hp - h)?
        .pad_with_zeros(2, 0, wp - w)?;
    let grid = qkv
        .pad_with_zeros(1, 0, hp - h)?
        .pad_with_zeros(2, 0, wp - w)?
        .broadcast_add(&(1.0 - inside)?.broadcast_mul(&pad.reshape((1, 1, 1, three_c))?)?)?;
    let (windows, padded) = window_partition(&grid, window)?;
    let n = window * window;
    let kd = three_c / (3 * heads.max(1));
    let x = windows
        .reshape(((), n, heads, 3 * kd))?
        .permute((0, 2, 1, 3))?;
    let q = x.narrow(3, 0, kd)?.contiguous()?;
    let k = x.narrow(3, kd, kd)?.contiguous()?;
    let v = x.narrow(3, 2 * kd, kd)?.contiguous()?;
    let attn = (q.matmul(&k.t()?)? * (1.0 / (kd as f64).sqrt()))?.broadcast_add(bias)?;
    let attn = candle_nn::ops::softmax_last_dim(&attn)?;
    let out = attn.matmul(&v)?.transpose(1, 2)?.contiguous()?.reshape((
        (),
        window,
        window,
        heads * kd,
    ))?;
    window_unpartition(&out, window, padded, (h, w))
}

/// Splits `(B, H, W, C)` into `(B·nh·nw, win, win, C)` windows, zero-padding bottom/right;
/// also returns the padded size.
pub fn window_partition(xs: &Tensor, win: usize) -> Result<(Tensor, (usize, usize))> {
    let (b, h, w, c) = xs.dims4()?;
    let (hp, wp) = (h.div_ceil(win) * win, w.div_ceil(win) * win);
    let xs = xs
        .pad_with_zeros(1, 0, hp - h)?
        .pad_with_zeros(2, 0, wp - w)?;
    let windows = xs
        .reshape((b, hp / win, win, wp / win, win, c))?
        .permute((0, 1, 3, 2, 4, 5))?
        .contiguous()?
        .reshape(((), win, win, c))?;
    Ok((windows, (hp, wp)))
}

/// Inverse of [`window_partition`], dropping the padding.
pub fn window_unpartition(
    windows: &Tensor,
    win: usize,
    (hp, wp): (usize, usize),
    (h, w): (usize, usize),
) -> Result<Tensor> {
    let c = windows.dim(3)?;
    let b = windows.dim(0)? / ((hp / win) * (wp / win));
    let xs = windows
        .reshape((b, hp / win, wp / win, win, win, c))?
        .permute((0, 1, 3, 2, 4, 5))?
        .contiguous()?
        .reshape((b, hp, wp, c))?;
    Ok(xs.narrow(1, 0, h)?.narrow(2, 0, w)?.contiguous()?)
}

struct GridWindowAttention {
    heads: usize,
    key_dim: usize,
    window: usize,
}

/// One tile of a token grid's output, a job of a kernel that computes tile by tile.
pub(crate) struct Tile<'a> {
    /// The image of the batch.
    pub image: usize,
    /// The tile's row and column among the tiles.
    pub at: (usize, usize),
    /// For each row of the tile inside the grid, the row's tokens inside the grid.
    pieces: Vec<&'a mut [MaybeUninit<f32>]>,
}

impl Tile<'_> {
    /// Writes the tile's pieces from `o`, the tile's rows of tokens `o_rs` values apart.
    pub(crate) fn write(self, o: &[f32], o_rs: usize) {
        for (i, piece) in self.pieces.into_iter().enumerate() {
            let src = &o[i * o_rs..][..piece.len()];
            piece.iter_mut().zip(src).for_each(|(d, s)| {
                d.write(*s);
            });
        }
    }
}

/// The tiles of `th × tw` tokens from the top left of the output `out (B, H, W, C)` (those at
/// the bottom and right edges cut at the grid's edge), each owning its pieces of `out`.
pub(crate) fn tiles<'a>(
    out: &'a mut [MaybeUninit<f32>],
    (h, w, c): (usize, usize, usize),
    (th, tw): (usize, usize),
) -> Vec<Tile<'a>> {
    let cols = w.div_ceil(tw);
    let mut tiles = Vec::with_capacity(out.len() / (h * w * c).max(1) * h.div_ceil(th) * cols);
    for (image, image_out) in out.chunks_mut(h * w * c).enumerate() {
        for (ty, band) in image_out.chunks_mut(th * w * c).enumerate() {
            let mut pieces: Vec<Vec<_>> = (0..cols).map(|_| Vec::with_capacity(th)).collect();
            for row in band.chunks_mut(w * c) {
                for (tx, piece) in row.chunks_mut(tw * c).enumerate() {
                    pieces[tx].push(piece);
                }
            }
            tiles.extend(pieces.into_iter().enumerate().map(|(tx, pieces)| Tile {
                image,
                at: (ty, tx),
                pieces,
            }));
        }
    }
    tiles
}

impl CustomOp3 for GridWindowAttention {
    fn name(&self) -> &'static str {
        "deva-grid-window-attention"
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
        let (heads, kd, win) = (self.heads, self.key_dim, self.window);
        let n = win * win;
        if win == 0 || three_c != 3 * heads * kd || l2.shape().dims() != [three_c] {
            candle_core::bail!(
                "window attention: qkv {:?} and padding {:?} do not fit {heads} heads of {kd} \
                 in windows of {win}",
                l1.shape(),
                l2.shape()
            );
        }
        if l3.shape().dims() != [heads, n, n] {
            candle_core::bail!(
                "window attention: bias {:?} for {heads} heads and windows of {win}",
                l3.shape()
            );
        }
        let qkv = super::contiguous_f32(s1, l1)?;
        let pad = super::contiguous_f32(s2, l2)?;
        let bias = super::contiguous_f32(s3, l3)?;
        let c = heads * kd;
        let shape = Shape::from((b, h, w, c));
        let mut out = Vec::with_capacity(shape.elem_count());
        if shape.elem_count() == 0 {
            return Ok((CpuStorage::F32(out), shape));
        }
        let jobs = tiles(
            &mut out.spare_capacity_mut()[..b * h * w * c],
            (h, w, c),
            (win, win),
        );
        let head = HeadShape {
            heads,
            key_dim: kd,
            tokens: n,
            head_stride: 3 * kd,
            part_stride: kd,
        };
        jobs.into_par_iter().for_each_init(
            || {
                (
                    vec![0f32; n * three_c],
                    vec![0f32; head.scratch()],
                    vec![0f32; n * c],
                )
            },
            |(x, buf, o), tile| {
                let (image, (wy, wx)) = (tile.image, tile.at);
                // The window's projections, row by row: the run of grid tokens, then padding.
                for (i, dst) in x.chunks_exact_mut(win * three_c).enumerate() {
                    let (y, x0) = (wy * win + i, wx * win);
                    let inside = if y < h { win.min(w - x0) } else { 0 };
                    let (grid, past) = dst.split_at_mut(inside * three_c);
                    if inside > 0 {
                        let at = ((image * h + y) * w + x0) * three_c;
                        grid.copy_from_slice(&qkv[at..at + inside * three_c]);
                    }
                    past.chunks_exact_mut(three_c)
                        .for_each(|t| t.copy_from_slice(pad));
                }
                head.attend(x, bias, None, buf, o);
                tile.write(o, win * c);
            },
        );
        // SAFETY: the windows tile the grid, and each wrote every value of the tokens of the
        // grid that it holds (`Tile::write`), so every value of the output was written.
        unsafe { out.set_len(shape.elem_count()) };
        Ok((CpuStorage::F32(out), shape))
    }
}

/// The attention heads of a window of `tokens` tokens whose rows hold, for head `h`, the
/// query at `h · head_stride`, the key `part_stride` further and the value `2 · part_stride`
/// further: TinyViT's `[q k v]` per head (`3 · key_dim`, `key_dim`), or `[q k v]` of all heads
/// (`key_dim`, `heads · key_dim`).
struct HeadShape {
    heads: usize,
    key_dim: usize,
    tokens: usize,
    head_stride: usize,
    part_stride: usize,
}

impl HeadShape {
    /// Values of [`Self::attend`]'s scratch: a head's scores and its transposed keys.
    fn scratch(&self) -> usize {
        self.tokens * (self.tokens + self.key_dim)
    }

    /// The output `o (tokens, heads · key_dim)` of the window `x (tokens, heads · 3 · key_dim)`:
    /// `softmax(q·kᵀ / √key_dim + bias[h] + mask)·v` per head, with `bias (heads, tokens,
    /// tokens)` and `mask (tokens, tokens)`; `buf` holds [`Self::scratch`] values. Each
    /// head's keys are transposed into `buf` first: the product reads them as contiguous
    /// rows, where it would gather them one strided value at a time.
    fn attend(
        &self,
        x: &[f32],
        bias: &[f32],
        mask: Option<&[f32]>,
        buf: &mut [f32],
        o: &mut [f32],
    ) {
        let (n, kd) = (self.tokens, self.key_dim);
        let (c, three_c) = (self.heads * kd, 3 * self.heads * kd);
        let scale = (1.0 / (kd as f64).sqrt()) as f32;
        let (scores, kt) = buf.split_at_mut(n * n);
        let at = |head: usize, part: usize| head * self.head_stride + part * self.part_stride;
        for head in 0..self.heads {
            transpose_columns(
                &x[..n * three_c],
                three_c,
                at(head, 1)..at(head, 1) + kd,
                kt,
            );
            matmul(
                Dst::Set,
                n,
                n,
                kd,
                scores,
                n,
                MatRef {
                    data: &x[at(head, 0)..],
                    rs: three_c,
                    cs: 1,
                },
                MatRef::rows(kt, n),
                false,
            );
            let b = &bias[head * n * n..(head + 1) * n * n];
            for (i, (row, brow)) in scores.chunks_mut(n).zip(b.chunks(n)).enumerate() {
                row.iter_mut()
                    .zip(brow)
                    .for_each(|(s, b)| *s = *s * scale + b);
                if let Some(mask) = mask {
                    row.iter_mut()
                        .zip(&mask[i * n..(i + 1) * n])
                        .for_each(|(s, m)| *s += m);
                }
                softmax_in_place(row);
            }
            matmul(
                Dst::Set,
                n,
                kd,
                n,
                &mut o[head * kd..],
                c,
                MatRef::rows(scores, n),
                MatRef {
                    data: &x[at(head, 2)..],
                    rs: three_c,
                    cs: 1,
                },
                false,
            );
        }
    }
}

/// Multi-head self-attention in windows already gathered (Swin's): `qkv (B·nW, N, 3 · C)`,
/// each token's projection laid out as `[q k v]` of all heads, `bias (heads, N, N)` added to
/// the scaled scores, and for shifted windows `mask (nW, N, N)`, window `i` taking
/// `mask[i % nW]`. Returns `(B·nW, N, C)`.
pub fn window_attention(
    qkv: &Tensor,
    bias: &Tensor,
    mask: Option<&Tensor>,
    heads: usize,
) -> Result<Tensor> {
    let op = WindowAttention { heads };
    let (qkv, bias) = (qkv.contiguous()?, bias.contiguous()?);
    Ok(match mask {
        Some(mask) => qkv.apply_op3_no_bwd(&bias, &mask.contiguous()?, &op)?,
        None => qkv.apply_op2_no_bwd(&bias, &op)?,
    })
}

/// [`window_attention`] written with candle's tensor operations (any device; the fused
/// kernel's reference): the same arguments and result, by [`attention`] with the bias and
/// each window's mask added into one bias.
pub fn window_attention_tensor_ops(
    qkv: &Tensor,
    bias: &Tensor,
    mask: Option<&Tensor>,
    heads: usize,
) -> Result<Tensor> {
    let c = qkv.dim(2)? / 3;
    let part = |i: usize| qkv.narrow(2, i * c, c);
    let bias = match mask {
        // Window i takes mask i % nW: `(B·nW, heads, N, N)`.
        Some(mask) => bias
            .unsqueeze(0)?
            .broadcast_add(&mask.unsqueeze(1)?)?
            .repeat((qkv.dim(0)? / mask.dim(0)?, 1, 1, 1))?,
        None => bias.clone(),
    };
    attention(&part(0)?, &part(1)?, &part(2)?, heads, Some(&bias))
}

struct WindowAttention {
    heads: usize,
}

impl WindowAttention {
    fn run(
        &self,
        (qkv, l1): (&[f32], &Layout),
        (bias, l2): (&[f32], &Layout),
        mask: Option<(&[f32], &Layout)>,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (windows, n, three_c) = l1.shape().dims3()?;
        let heads = self.heads;
        let kd = three_c / (3 * heads.max(1));
        if heads == 0 || three_c != 3 * heads * kd || l2.shape().dims() != [heads, n, n] {
            candle_core::bail!(
                "window attention: qkv {:?} and bias {:?} do not fit {heads} heads",
                l1.shape(),
                l2.shape()
            );
        }
        let masks = match mask {
            Some((_, l)) => {
                let (nw, mn, mn2) = l.shape().dims3()?;
                if mn != n || mn2 != n || nw == 0 || windows % nw != 0 {
                    candle_core::bail!(
                        "window attention: mask {:?} for {windows} windows of {n} tokens",
                        l.shape()
                    );
                }
                nw
            }
            None => 1,
        };
        let c = heads * kd;
        let shape = Shape::from((windows, n, c));
        let mut out = vec![0f32; shape.elem_count()];
        let head = HeadShape {
            heads,
            key_dim: kd,
            tokens: n,
            head_stride: kd,
            part_stride: c,
        };
        out.par_chunks_mut((n * c).max(1))
            .enumerate()
            .for_each_init(
                || vec![0f32; head.scratch()],
                |buf, (i, o)| {
                    let x = &qkv[i * n * three_c..(i + 1) * n * three_c];
                    let m = mask.map(|(m, _)| &m[(i % masks) * n * n..][..n * n]);
                    head.attend(x, bias, m, buf, o);
                },
            );
        Ok((CpuStorage::F32(out), shape))
    }
}

impl CustomOp2 for WindowAttention {
    fn name(&self) -> &'static str {
        "deva-window-attention"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (qkv, bias) = (
            super::contiguous_f32(s1, l1)?,
            super::contiguous_f32(s2, l2)?,
        );
        self.run((qkv, l1), (bias, l2), None)
    }
}

impl CustomOp3 for WindowAttention {
    fn name(&self) -> &'static str {
        "deva-window-attention-masked"
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
        let (qkv, bias) = (
            super::contiguous_f32(s1, l1)?,
            super::contiguous_f32(s2, l2)?,
        );
        let mask = super::contiguous_f32(s3, l3)?;
        self.run((qkv, l1), (bias, l2), Some((mask, l3)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// The fused CPU kernel against the same attention written with candle's tensor ops, on
    /// grids that windows fit exactly and grids they overhang, with heads and windows
    /// narrower and wider than a transpose tile (16).
    #[test]
    fn fused_kernel_equals_tensor_ops() {
        let dev = Device::Cpu;
        for (heads, kd, win) in [(2, 4, 3), (2, 20, 5)] {
            let three_c = 3 * heads * kd;
            let bias = Tensor::randn(0f32, 1.0, (heads, win * win, win * win), &dev).unwrap();
            let pad = Tensor::randn(0f32, 1.0, three_c, &dev).unwrap();
            for (b, h, w) in [(2, 6, 9), (1, 7, 5), (2, 2, 1)] {
                let qkv = Tensor::randn(0f32, 1.0, (b, h, w, three_c), &dev).unwrap();
                let ours = grid_window_attention(&qkv, &pad, &bias, heads, win).unwrap();
                let theirs = grid_attention_tensor_ops(&qkv, &pad, &bias, heads, win).unwrap();
                let d = super::super::max_abs_diff(&ours, &theirs);
                assert!(d < 1e-5, "{heads} heads of {kd}, {b}×{h}×{w}: max diff {d}");
            }
        }
    }

    /// Swin's window attention (`[q k v]` of all heads, a mask per window position) against
    /// the same computation with candle's tensor ops, with and without masks.
    #[test]
    fn swin_window_attention_equals_tensor_ops() {
        let dev = Device::Cpu;
        for (heads, kd, n) in [(3, 4, 9), (2, 20, 25)] {
            let (c, windows, masks) = (heads * kd, 6, 3);
            let qkv = Tensor::randn(0f32, 1.0, (windows, n, 3 * c), &dev).unwrap();
            let bias = Tensor::randn(0f32, 1.0, (heads, n, n), &dev).unwrap();
            let mask = Tensor::randn(0f32, 1.0, (masks, n, n), &dev).unwrap();
            for mask in [None, Some(&mask)] {
                let ours = window_attention(&qkv, &bias, mask, heads).unwrap();
                let theirs = window_attention_tensor_ops(&qkv, &bias, mask, heads).unwrap();
                let d = super::super::max_abs_diff(&ours, &theirs);
                assert!(
                    d < 1e-5,
                    "{heads} heads of {kd}, {n} tokens, mask {}: {d}",
                    mask.is_some()
                );
            }
        }
    }

    /// The padding row enters the windows that overhang the grid, and only those.
    #[test]
    fn padding_reaches_only_overhanging_windows() {
        let dev = Device::Cpu;
        let (heads, kd, win) = (1, 2, 2);
        let bias = Tensor::zeros((heads, 4, 4), candle_core::DType::F32, &dev).unwrap();
        let qkv = Tensor::randn(0f32, 1.0, (1, 3, 4, 6), &dev).unwrap();
        let run = |pad: f32| {
            let pad = Tensor::full(pad, 6, &dev).unwrap();
            let out = grid_window_attention(&qkv, &pad, &bias, heads, win).unwrap();
            out.squeeze(0).unwrap().to_vec3::<f32>().unwrap().concat()
        };
        let (a, b) = (run(0.0), run(3.0));
        for y in 0..3 {
            for x in 0..4 {
                let same = a[y * 4 + x] == b[y * 4 + x];
                assert_eq!(same, y < 2, "token ({y}, {x}), {} heads of {kd}", heads);
            }
        }
    }
}
