//! Winograd's minimal filtering F(m×m, 3×3) for 3×3 convolutions with stride 1 and padding 1,
//! with output tiles of 2 × 2 or 4 × 4 ([`Tile`]): every 3×3 filter is transformed once at
//! load into t × t values (t = m + 2), every t × t input tile once per block, the t²
//! element-wise products of the transforms are t² matrix products over the channels, and each
//! m × m output tile is transformed back. Per output and input channel that is 4 (m = 2) or
//! 2.25 (m = 4) multiplications instead of 9; the rounding differs from the tap sums by about
//! 1e-6 (m = 2) or up to about 2e-5 (m = 4) of the outputs' magnitude.
//!
//! Transforms (Lavin & Gray, 2016): `U = G g Gᵀ`, `V = Bᵀ d B`, `Y = Aᵀ (U ⊙ V) A`, with the
//! matrices of [`F2`] and [`F4`].

use candle_core::Tensor;

use crate::error::Result;
use crate::nn::linalg::{gemm_acc, MatRef};
use crate::nn::vmath::multiversion;

/// Floats of transformed input and products a block may hold (4 MiB: the scratch of the
/// two threads stays small beside the activations, and in the last-level cache).
const BLOCK_FLOATS: usize = 1 << 20;

/// Tiles transformed together (one vector register of lanes).
const LANES: usize = 8;

/// The output tile of a Winograd layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Tile {
    /// F(2×2, 3×3): 4 × 4 transforms, 16/9 of the filters' size.
    F2,
    /// F(4×4, 3×3): 6 × 6 transforms, 36/9 of the filters' size, 0.56 of F2's products.
    F4,
}

impl Tile {
    /// Output tile side `m`.
    fn m(self) -> usize {
        match self {
            Tile::F2 => 2,
            Tile::F4 => 4,
        }
    }

    /// Transformed values per tile, `(m + 2)²`.
    fn elements(self) -> usize {
        (self.m() + 2).pow(2)
    }
}

/// The transforms of one F(M×M, 3×3), T = M + 2.
trait Transforms<const M: usize, const T: usize> {
    /// `G x` for a column of 3.
    fn g(x: [f64; 3]) -> [f64; T];
    /// `Bᵀ x` for a column of T.
    fn bt(x: [f32; T]) -> [f32; T];
    /// `Aᵀ x` for a column of T.
    fn at(x: [f32; T]) -> [f32; M];
}

/// F(2×2, 3×3): `G = [1 0 0; ½ ½ ½; ½ −½ ½; 0 0 1]`,
/// `Bᵀ = [1 0 −1 0; 0 1 1 0; 0 −1 1 0; 0 1 0 −1]`, `Aᵀ = [1 1 1 0; 0 1 −1 −1]`.
struct F2;

impl Transforms<2, 4> for F2 {
    fn g(x: [f64; 3]) -> [f64; 4] {
        [
            x[0],
            0.5 * (x[0] + x[1] + x[2]),
            0.5 * (x[0] - x[1] + x[2]),
            x[2],
        ]
    }

    #[inline(always)]
    fn bt(x: [f32; 4]) -> [f32; 4] {
        [x[0] - x[2], x[1] + x[2], x[2] - x[1], x[1] - x[3]]
    }

    #[inline(always)]
    fn at(x: [f32; 4]) -> [f32; 2] {
        [x[0] + x[1] + x[2], x[1] - x[2] - x[3]]
    }
}

/// F(4×4, 3×3) with the points 0, ±1, ±2 and ∞:
/// `G = [¼ 0 0; −⅙ −⅙ −⅙; −⅙ ⅙ −⅙; 1⁄24 1⁄12 ⅙; 1⁄24 −1⁄12 ⅙; 0 0 1]`,
/// `Bᵀ = [4 0 −5 0 1 0; 0 −4 −4 1 1 0; 0 4 −4 −1 1 0; 0 −2 −1 2 1 0; 0 2 −1 −2 1 0;
/// 0 4 0 −5 0 1]`, `Aᵀ = [1 1 1 1 1 0; 0 1 −1 2 −2 0; 0 1 1 4 4 0; 0 1 −1 8 −8 1]`.
struct F4;

impl Transforms<4, 6> for F4 {
    fn g(x: [f64; 3]) -> [f64; 6] {
        let (even, odd) = (x[0] + x[2], x[1]);
        [
            x[0] / 4.0,
            -(even + odd) / 6.0,
            -(even - odd) / 6.0,
            x[0] / 24.0 + x[1] / 12.0 + x[2] / 6.0,
            x[0] / 24.0 - x[1] / 12.0 + x[2] / 6.0,
            x[2],
        ]
    }

    #[inline(always)]
    fn bt(x: [f32; 6]) -> [f32; 6] {
        let (s12, d12, d13) = (x[1] + x[2], x[1] - x[2], x[1] - x[3]);
        [
            4.0 * x[0] - 5.0 * x[2] + x[4],
            x[3] + x[4] - 4.0 * s12,
            x[4] - x[3] + 4.0 * d12,
            x[4] - x[2] - 2.0 * d13,
            x[4] - x[2] + 2.0 * d13,
            4.0 * x[1] - 5.0 * x[3] + x[5],
        ]
    }

    #[inline(always)]
    fn at(x: [f32; 6]) -> [f32; 4] {
        let (s12, d12, s34, d34) = (x[1] + x[2], x[1] - x[2], x[3] + x[4], x[3] - x[4]);
        [
            x[0] + s12 + s34,
            d12 + 2.0 * d34,
            s12 + 4.0 * s34,
            d12 + 8.0 * d34 + x[5],
        ]
    }
}

/// `[c_out, c_in, 3, 3]` → the transformed filters `[t², c_out, c_in]` (in f64, then rounded
/// once).
pub(super) fn layout_weight(weight: &Tensor, tile: Tile) -> Result<Tensor> {
    match tile {
        Tile::F2 => layout_weight_with::<2, 4, F2>(weight),
        Tile::F4 => layout_weight_with::<4, 6, F4>(weight),
    }
}

/// The body of [`layout_weight`].
fn layout_weight_with<const M: usize, const T: usize, F: Transforms<M, T>>(
    weight: &Tensor,
) -> Result<Tensor> {
    let (c_out, c_in, _, _) = weight.dims4()?;
    let w = weight.flatten_all()?.to_vec1::<f32>()?;
    let mut u = vec![0f32; T * T * c_out * c_in];
    for (f, g) in w.chunks(9).enumerate() {
        let g: [f64; 9] = std::array::from_fn(|i| f64::from(g[i]));
        // G g: T rows of 3, then (G g) Gᵀ: T × T.
        let gg: [[f64; 3]; T] = {
            let cols: [[f64; T]; 3] = std::array::from_fn(|c| F::g([g[c], g[3 + c], g[6 + c]]));
            std::array::from_fn(|r| std::array::from_fn(|c| cols[c][r]))
        };
        for (r, row) in gg.iter().enumerate() {
            for (c, v) in F::g(*row).into_iter().enumerate() {
                u[(r * T + c) * c_out * c_in + f] = v as f32;
            }
        }
    }
    Ok(Tensor::from_vec(u, (T * T, c_out, c_in), weight.device())?)
}

/// Output rows per block for an output of `out_h × out_w` with `channels` input and output
/// channels on `threads` threads: whole tile rows, at most [`BLOCK_FLOATS`] of scratch where
/// one tile row fits, at least one block per thread where the rows allow.
pub(super) fn block_rows(
    tile: Tile,
    out_h: usize,
    out_w: usize,
    channels: usize,
    threads: usize,
) -> usize {
    let m = tile.m();
    let tile_rows = out_h.div_ceil(m).max(1);
    let per_row = out_w.div_ceil(m).max(1);
    m * (BLOCK_FLOATS / (tile.elements() * channels * per_row).max(1))
        .min(tile_rows.div_ceil(threads.max(1)))
        .max(1)
}

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

/// The filters of a layer as [`layout_weight`] transformed them.
pub(super) struct Filters<'a> {
    /// The output tile they were transformed for.
    pub(super) tile: Tile,
    /// `[t², c_out, c_in]`.
    pub(super) u: &'a [f32],
    /// Output channels.
    pub(super) c_out: usize,
}

multiversion! {
/// Adds the convolution of output rows `y0..y1` (all `w` columns) to `acc` `[c_out, stride]`
/// (row `y` of a channel at `(y − y0) · w`); `buf` is scratch. The padding is read as zeros:
/// no padded copy of the input is made. With the widest vectors of the CPU.
pub(super) fn block(
    x: &Input,
    f: &Filters,
    out_rows: (usize, usize),
    acc: &mut [f32],
    stride: usize,
    buf: &mut Vec<f32>,
) {
    let (u, c_out) = (f.u, f.c_out);
    match f.tile {
        Tile::F2 => block_with::<2, 4, F2>(x, c_out, out_rows, u, acc, stride, buf),
        Tile::F4 => block_with::<4, 6, F4>(x, c_out, out_rows, u, acc, stride, buf),
    }
}
}

/// The body of [`block`] for F(M×M, 3×3).
#[inline(always)]
fn block_with<const M: usize, const T: usize, F: Transforms<M, T>>(
    x: &Input,
    c_out: usize,
    (y0, y1): (usize, usize),
    u: &[f32],
    acc: &mut [f32],
    stride: usize,
    buf: &mut Vec<f32>,
) {
    let e_len = T * T;
    let (c_in, h, w) = (x.chans.len(), x.h, x.w);
    let per_row = w.div_ceil(M);
    let tile_rows = (y1 - y0).div_ceil(M);
    let tiles = tile_rows * per_row;
    // Each tile row's T padded input rows (column c of the padded row is column c − 1 of the
    // input), zero outside the input, for whole groups of lanes.
    let row_len = M * per_row.div_ceil(LANES) * LANES + (T - M);
    // Every transformed input and row is written below before it is read; only the
    // products, which the matrix products add to, start from zero.
    buf.resize(e_len * (c_in + c_out) * tiles + T * row_len, 0.0);
    let (v, rest) = buf.split_at_mut(e_len * c_in * tiles);
    let (m, rows) = rest.split_at_mut(e_len * c_out * tiles);
    m.fill(0.0);
    for (ci, chan) in x.chans.iter().enumerate() {
        for tr in 0..tile_rows {
            // Padded row y + r is input row y + r − 1.
            let y = y0 + M * tr;
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
                // d[r][c][lane]: the T × T tiles of LANES neighbouring tiles.
                let d: [[Lanes; T]; T] = std::array::from_fn(|r| {
                    let row = &rows[r * row_len + M * k0..][..M * LANES + (T - M)];
                    std::array::from_fn(|c| std::array::from_fn(|l| row[M * l + c]))
                });
                let vt = transform_input::<M, T, F>(&d);
                let n = LANES.min(per_row - k0);
                let t0 = tr * per_row + k0;
                for (e, lanes) in vt.iter().flatten().enumerate() {
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
    for e in 0..e_len {
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
                let mut mm = [[[0f32; LANES]; T]; T];
                for (e, lanes) in mm.iter_mut().flatten().enumerate() {
                    let src = &m[(e * c_out + co) * tiles + t0..];
                    if n == LANES {
                        lanes.copy_from_slice(&src[..LANES]);
                    } else {
                        lanes[..n].copy_from_slice(&src[..n]);
                    }
                }
                let ym = transform_output::<M, T, F>(&mm);
                let (x0, width) = (M * k0, (M * n).min(w - M * k0));
                for (i, row) in ym.iter().enumerate() {
                    let y = y0 + M * tr + i;
                    if y >= y1 {
                        break;
                    }
                    let row = row.as_flattened();
                    let dst = &mut acc[co * stride + (y - y0) * w + x0..];
                    if width == M * LANES {
                        for (d, val) in dst[..M * LANES].iter_mut().zip(row) {
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

/// `f` applied lane by lane to a column of `I` lane groups.
#[inline(always)]
fn lanewise<const I: usize, const O: usize>(
    x: [&Lanes; I],
    f: impl Fn([f32; I]) -> [f32; O],
) -> [Lanes; O] {
    let mut out = [[0f32; LANES]; O];
    for l in 0..LANES {
        let v = f(std::array::from_fn(|i| x[i][l]));
        for (o, v) in out.iter_mut().zip(v) {
            o[l] = v;
        }
    }
    out
}

/// `Bᵀ d B` of LANES tiles: the T × T transformed values, each for every lane.
#[inline(always)]
fn transform_input<const M: usize, const T: usize, F: Transforms<M, T>>(
    d: &[[Lanes; T]; T],
) -> [[Lanes; T]; T] {
    // Bᵀ d on the columns (cols[c][r]), then B on the rows.
    let cols: [[Lanes; T]; T] =
        std::array::from_fn(|c| lanewise(std::array::from_fn(|r| &d[r][c]), F::bt));
    std::array::from_fn(|r| lanewise(std::array::from_fn(|c| &cols[c][r]), F::bt))
}

/// `Aᵀ P A` of LANES tiles of products: the M output rows, each of M columns for every lane
/// (`[row][lane][column]`, so that a row's flattened values run along the image row).
#[inline(always)]
fn transform_output<const M: usize, const T: usize, F: Transforms<M, T>>(
    p: &[[Lanes; T]; T],
) -> [[[f32; M]; LANES]; M] {
    // Aᵀ P on the columns (cols[c][i]), then A on the rows.
    let cols: [[Lanes; M]; T] =
        std::array::from_fn(|c| lanewise(std::array::from_fn(|r| &p[r][c]), F::at));
    std::array::from_fn(|i| {
        let y = lanewise(std::array::from_fn(|c| &cols[c][i]), F::at);
        std::array::from_fn(|l| std::array::from_fn(|j| y[j][l]))
    })
}
