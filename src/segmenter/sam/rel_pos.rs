//! The decomposed relative position bias of SAM's ViT attention: the tables resized to the
//! attended grid (for both paths), and, as tensor operations for devices other than the CPU,
//! the tables expanded per query and key, the height and width terms and the biased softmax.

use crate::error::Result;
use crate::mask::bilinear_taps;
use candle_core::Tensor;

/// The relative position table for `q_size` queries and `k_size` keys: `(q_size, k_size, C)`,
/// linearly interpolated first when its length does not match.
pub(super) fn rel_pos_table(q_size: usize, k_size: usize, rel_pos: &Tensor) -> Result<Tensor> {
    let ch = rel_pos.dim(1)?;
    let table = resized_table(rel_pos, 2 * q_size.max(k_size) - 1)?;
    let q_scale = (k_size as f64 / q_size as f64).max(1.0);
    let k_scale = (q_size as f64 / k_size as f64).max(1.0);
    let idx: Vec<u32> = (0..q_size)
        .flat_map(|i| {
            (0..k_size).map(move |j| {
                (i as f64 * q_scale - j as f64 * k_scale + (k_size - 1) as f64 * k_scale) as u32
            })
        })
        .collect();
    let idx = Tensor::from_vec(idx, q_size * k_size, rel_pos.device())?;
    Ok(table.index_select(&idx, 0)?.reshape((q_size, k_size, ch))?)
}

/// The relative position table `rel_pos (L, C)` linearly interpolated to `len` rows (itself
/// when it has them).
pub(super) fn resized_table(rel_pos: &Tensor, len: usize) -> Result<Tensor> {
    let (src_len, ch) = rel_pos.dims2()?;
    if src_len == len {
        return Ok(rel_pos.clone());
    }
    let src = rel_pos.to_vec2::<f32>()?;
    let rows: Vec<f32> = (0..len)
        .flat_map(|i| {
            let (i0, i1, t) = bilinear_taps(i, src_len, len);
            let (a, b) = (&src[i0], &src[i1]);
            (0..ch).map(move |c| a[c] * (1.0 - t) + b[c] * t)
        })
        .collect();
    Ok(Tensor::from_vec(rows, (len, ch), rel_pos.device())?)
}

/// `softmax(attn + rel_h[.., :, None] + rel_w[.., None, :])` over the last dimension, where
/// `attn` is `(n, qh·qw, kh·kw)`, `rel_h` is `(n, qh, qw, kh)` and `rel_w` is `(n, qh, qw, kw)`.
pub(super) fn rel_pos_softmax(attn: &Tensor, rel_h: &Tensor, rel_w: &Tensor) -> Result<Tensor> {
    let (n, q, k) = attn.dims3()?;
    let (_, qh, qw, kh) = rel_h.dims4()?;
    let kw = rel_w.dim(3)?;
    let biased = (attn
        .reshape((n, qh, qw, kh, kw))?
        .broadcast_add(&rel_h.unsqueeze(4)?)?
        .broadcast_add(&rel_w.unsqueeze(3)?))?
    .reshape((n, q, k))?;
    Ok(candle_nn::ops::softmax_last_dim(&biased)?)
}

/// The height and width terms of the decomposed relative position bias for queries `q`
/// (`(n, h·w, C)`): `(n, h, w, k_h)` and `(n, h, w, k_w)`.
pub(super) fn decomposed_rel_pos(
    q: &Tensor,
    (h, w): (usize, usize),
    r_h: &Tensor,
    r_w: &Tensor,
) -> Result<(Tensor, Tensor)> {
    let (n, _, c) = q.dims3()?;
    let r_q = q.reshape((n, h, w, c))?;
    // rel_h[n, y, x, k] = Σ_c q[n, y, x, c] · r_h[y, k, c]: batch over y.
    let rel_h = axis_terms(&r_q, (1, 0, 2, 3), r_h, (1, 0, 2, 3))?;
    // rel_w[n, y, x, k] = Σ_c q[n, y, x, c] · r_w[x, k, c]: batch over x.
    let rel_w = axis_terms(&r_q, (2, 0, 1, 3), r_w, (1, 2, 0, 3))?;
    Ok((rel_h, rel_w))
}

/// One axis's terms of [`decomposed_rel_pos`]: `r_q` (`(n, h, w, C)`) permuted by `to_front`
/// so that the axis leads, batched over it against its `table` (`(len, k, C)`), and the
/// result `(len, n, other, k)` permuted back by `back` to `(n, h, w, k)`.
fn axis_terms(
    r_q: &Tensor,
    to_front: (usize, usize, usize, usize),
    table: &Tensor,
    back: (usize, usize, usize, usize),
) -> Result<Tensor> {
    let front = r_q.permute(to_front)?.contiguous()?;
    let (len, n, other, c) = front.dims4()?;
    Ok(front
        .reshape((len, n * other, c))?
        .matmul(&table.transpose(1, 2)?.contiguous()?)?
        .reshape((len, n, other, ()))?
        .permute(back)?
        .contiguous()?)
}
