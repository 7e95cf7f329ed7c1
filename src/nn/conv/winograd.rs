//! Winograd's F(2×2, 3×3) for 3×3 convolutions with stride 1 and padding 1: every 3×3 filter
//! is transformed once at load into 4×4 values, every 4×4 input tile once per block, the 16
//! element-wise products of the transforms are 16 matrix products over the channels, and each
//! 2×2 output tile is transformed back. 4 multiplications per output and input channel instead
//! of 9; the rounding differs from the tap sums by about 1e-6 of the outputs' magnitude.
//!
//! Transforms (Lavin & Gray, 2016): `U = G g Gᵀ`, `V = Bᵀ d B`, `Y = Aᵀ (U ⊙ V) A` with
//! `G = [1 0 0; ½ ½ ½; ½ −½ ½; 0 0 1]`, `Bᵀ = [1 0 −1 0; 0 1 1 0; 0 −1 1 0; 0 1 0 −1]`,
//! `Aᵀ = [1 1 1 0; 0 1 −1 −1]`.

use candle_core::Tensor;

use crate::error::Result;
use crate::nn::linalg::{gemm_acc, MatRef};
use crate::nn::vmath::multiversion;

/// Transformed values per tile (4 × 4).
const E: usize = 16;
/// Floats of transformed input and products a block may hold (4 MiB: the scratch of the
/// two threads stays small beside the activations, and in the last-level cache).
const BLOCK_FLOATS: usize = 1 << 20;

/// `[c_out, c_in, 3, 3]` → the transformed filters `[16, c_out, c_in]`.
pub(super) fn layout_weight(weight: &Tensor) -> Result<Tensor> {
    let (c_out, c_in, _, _) = weight.dims4()?;
    let w = weight.flatten_all()?.to_vec1::<f32>()?;
    let mut u = vec![0f32; E * c_out * c_in];
    for (f, g) in w.chunks(9).enumerate() {
        // G g: 4 rows of 3, then (G g) Gᵀ: 4 × 4.
        let gg: [[f32; 3]; 4] = std::array::from_fn(|r| {
            std::array::from_fn(|c| {
                let col = [g[c], g[3 + c], g[6 + c]];
                transform_g(col)[r]
            })
        });
        for (r, row) in gg.iter().enumerate() {
            for (c, v) in transform_g(*row).into_iter().enumerate() {
                u[(r * 4 + c) * c_out * c_in + f] = v;
            }
        }
    }
    Ok(Tensor::from_vec(u, (E, c_out, c_in), weight.device())?)
}

/// `G x` for a column of 3.
fn transform_g(x: [f32; 3]) -> [f32; 4] {
    [
        x[0],
        0.5 * (x[0] + x[1] + x[2]),
        0.5 * (x[0] - x[1] + x[2]),
        x[2],
    ]
}

/// `Bᵀ x` for a column of 4.
#[inline(always)]
fn transform_b(x: [f32; 4]) -> [f32; 4] {
    [x[0] - x[2], x[1] + x[2], x[2] - x[1], x[1] - x[3]]
}

/// `Aᵀ x` for a column of 4.
#[inline(always)]
fn transform_a(x: [f32; 4]) -> [f32; 2] {
    [x[0] + x[1] + x[2], x[1] - x[2] - x[3]]
}

/// Output rows per block for an output of `out_h × out_w` with `channels` input and output
/// channels on `threads` threads: whole tile rows (even), at most [`BLOCK_FLOATS`] of scratch
/// where one tile row fits, at least one block per thread where the rows allow.
pub(super) fn block_rows(out_h: usize, out_w: usize, channels: usize, threads: usize) -> usize {
    let tile_rows = out_h.div_ceil(2).max(1);
    let per_row = out_w.div_ceil(2).max(1);
    2 * (BLOCK_FLOATS / (E * channels * per_row).max(1))
        .min(tile_rows.div_ceil(threads.max(1)))
        .max(1)
}

/// Tiles transformed together (one vector register of lanes).
const LANES: usize = 8;

/// The input of a layer: its channels (`h × w` each, unpadded), through a ReLU with `relu`.
pub(super) struct Input<'a> {
    /// The channels of the (concatenated) input.
    pub(super) chans: &'a [&'a [f32]],
    /// Rows of each channel.
    pub(super) h: usize,
    /// Columns of each channel.
    pub(super) w: usize,
    /// Whether a ReLU applies to the input.
    pub(super) relu: bool,
}

multiversion! {
/// Adds the convolution of output rows `y0..y1` (all `w` columns) to `acc` `[c_out, stride]`
/// (row `y` of a channel at `(y − y0) · w`); `u` holds the transformed filters, `buf` is
/// scratch. The padding is read as zeros: no padded copy of the input is made. With the
/// widest vectors of the CPU.
pub(super) fn block(
    x: &Input,
    c_out: usize,
    out_rows: (usize, usize),
    u: &[f32],
    acc: &mut [f32],
    stride: usize,
    buf: &mut Vec<f32>,
) {
    block_with(x, c_out, out_rows, u, acc, stride, buf)
}
}

/// The body of [`block`].
#[inline(always)]
fn block_with(
    x: &Input,
    c_out: usize,
    (y0, y1): (usize, usize),
    u: &[f32],
    acc: &mut [f32],
    stride: usize,
    buf: &mut Vec<f32>,
) {
    let (c_in, h, w) = (x.chans.len(), x.h, x.w);
    let per_row = w.div_ceil(2);
    let tile_rows = (y1 - y0).div_ceil(2);
    let tiles = tile_rows * per_row;
    // Each tile row's 4 padded input rows (column c of the padded row is column c − 1 of the
    // input), zero outside the input, for whole groups of lanes.
    let row_len = 2 * per_row.div_ceil(LANES) * LANES + 2;
    // Every transformed input and row is written below before it is read; only the
    // products, which the matrix products add to, start from zero.
    buf.resize(E * (c_in + c_out) * tiles + 4 * row_len, 0.0);
    let (v, rest) = buf.split_at_mut(E * c_in * tiles);
    let (m, rows) = rest.split_at_mut(E * c_out * tiles);
    m.fill(0.0);
    for (ci, chan) in x.chans.iter().enumerate() {
        for tr in 0..tile_rows {
            // Padded row y + r is input row y + r − 1.
            let y = y0 + 2 * tr;
            for (r, row) in rows.chunks_mut(row_len).enumerate() {
                row.fill(0.0);
                if let Some(src) = (y + r).checked_sub(1).filter(|&i| i < h) {
                    let dst = &mut row[1..1 + w];
                    dst.copy_from_slice(&chan[src * w..(src + 1) * w]);
                    if x.relu {
                        dst.iter_mut().for_each(|v| *v = v.max(0.0));
                    }
                }
            }
            for k0 in (0..per_row).step_by(LANES) {
                // d[r][c][lane]: the 4 × 4 tiles of LANES neighbouring tiles.
                let mut d = [[[0f32; LANES]; 4]; 4];
                for (r, dr) in d.iter_mut().enumerate() {
                    let row = &rows[r * row_len + 2 * k0..][..2 * LANES + 2];
                    for (c, dc) in dr.iter_mut().enumerate() {
                        for (l, v) in dc.iter_mut().enumerate() {
                            *v = row[2 * l + c];
                        }
                    }
                }
                let v16 = transform_input(&d);
                let n = LANES.min(per_row - k0);
                let t0 = tr * per_row + k0;
                for (e, lanes) in v16.iter().enumerate() {
                    let dst = &mut v[(e * c_in + ci) * tiles + t0..];
                    // Whole groups as fixed-size copies (vector moves, not calls).
                    if n == LANES {
                        dst[..LANES].copy_from_slice(lanes);
                    } else {
                        dst[..n].copy_from_slice(&lanes[..n]);
                    }
                }
            }
        }
    }
    for e in 0..E {
        let lhs = MatRef::rows(&u[e * c_out * c_in..(e + 1) * c_out * c_in], c_in);
        let rhs = MatRef::rows(&v[e * c_in * tiles..(e + 1) * c_in * tiles], tiles);
        let dst = &mut m[e * c_out * tiles..(e + 1) * c_out * tiles];
        gemm_acc(c_out, tiles, c_in, dst, tiles, lhs, rhs, false);
    }
    for co in 0..c_out {
        for tr in 0..tile_rows {
            for k0 in (0..per_row).step_by(LANES) {
                let n = LANES.min(per_row - k0);
                let t0 = tr * per_row + k0;
                let mut mm = [[0f32; LANES]; E];
                for (e, lanes) in mm.iter_mut().enumerate() {
                    let src = &m[(e * c_out + co) * tiles + t0..];
                    if n == LANES {
                        lanes.copy_from_slice(&src[..LANES]);
                    } else {
                        lanes[..n].copy_from_slice(&src[..n]);
                    }
                }
                let y2 = transform_output(&mm);
                let (x0, width) = (2 * k0, (2 * n).min(w - 2 * k0));
                for (i, row) in y2.iter().enumerate() {
                    let y = y0 + 2 * tr + i;
                    if y >= y1 {
                        break;
                    }
                    let dst = &mut acc[co * stride + (y - y0) * w + x0..];
                    if width == 2 * LANES {
                        let dst: &mut [f32; 2 * LANES] = (&mut dst[..2 * LANES])
                            .try_into()
                            .expect("2 · LANES values");
                        for (d, val) in dst.iter_mut().zip(row) {
                            *d += val;
                        }
                    } else {
                        for (d, val) in dst[..width].iter_mut().zip(row) {
                            *d += val;
                        }
                    }
                }
            }
        }
    }
}

/// The values of one transformed position for every lane.
type Lanes = [f32; LANES];

/// `Bᵀ x` for a column of 4, lane by lane.
#[inline(always)]
fn transform_b_lanes(x: [&Lanes; 4]) -> [Lanes; 4] {
    let mut out = [[0f32; LANES]; 4];
    for l in 0..LANES {
        let v = transform_b([x[0][l], x[1][l], x[2][l], x[3][l]]);
        for (o, v) in out.iter_mut().zip(v) {
            o[l] = v;
        }
    }
    out
}

/// `Aᵀ x` for a column of 4, lane by lane.
#[inline(always)]
fn transform_a_lanes(x: [&Lanes; 4]) -> [Lanes; 2] {
    let mut out = [[0f32; LANES]; 2];
    for l in 0..LANES {
        let v = transform_a([x[0][l], x[1][l], x[2][l], x[3][l]]);
        out[0][l] = v[0];
        out[1][l] = v[1];
    }
    out
}

/// `Bᵀ d B` of LANES tiles: the 16 transformed values, each for every lane.
#[inline(always)]
fn transform_input(d: &[[Lanes; 4]; 4]) -> [Lanes; E] {
    // Bᵀ d on the columns (cols[c][r]), then B on the rows.
    let mut cols = [[[0f32; LANES]; 4]; 4];
    for (c, col) in cols.iter_mut().enumerate() {
        *col = transform_b_lanes([&d[0][c], &d[1][c], &d[2][c], &d[3][c]]);
    }
    let mut out = [[0f32; LANES]; E];
    for r in 0..4 {
        let row = transform_b_lanes([&cols[0][r], &cols[1][r], &cols[2][r], &cols[3][r]]);
        out[r * 4..r * 4 + 4].copy_from_slice(&row);
    }
    out
}

/// `Aᵀ M A` of LANES tiles: the two output rows, each of `2 · LANES` columns (lane by lane).
#[inline(always)]
fn transform_output(m: &[Lanes; E]) -> [[f32; 2 * LANES]; 2] {
    // Aᵀ M on the columns (cols[c][i]), then A on the rows.
    let mut cols = [[[0f32; LANES]; 2]; 4];
    for (c, col) in cols.iter_mut().enumerate() {
        *col = transform_a_lanes([&m[c], &m[4 + c], &m[8 + c], &m[12 + c]]);
    }
    let mut out = [[0f32; 2 * LANES]; 2];
    for (i, row) in out.iter_mut().enumerate() {
        let y = transform_a_lanes([&cols[0][i], &cols[1][i], &cols[2][i], &cols[3][i]]);
        for l in 0..LANES {
            row[2 * l] = y[0][l];
            row[2 * l + 1] = y[1][l];
        }
    }
    out
}
