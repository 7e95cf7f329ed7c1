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

/// The transforms of one F(M×M, 3×3), T = M + 2; `Bᵀ` and `Aᵀ` apply to LANES tiles at
/// once.
trait Transforms<const M: usize, const T: usize> {
    /// `G x` for a column of 3.
    fn g(x: [f64; 3]) -> [f64; T];
    /// `Bᵀ x` for a column of T.
    fn bt(x: [Lanes; T]) -> [Lanes; T];
    /// `Aᵀ x` for a column of T.
    fn at(x: [Lanes; T]) -> [Lanes; M];
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
    fn bt(x: [Lanes; 4]) -> [Lanes; 4] {
        [x[0] - x[2], x[1] + x[2], x[2] - x[1], x[1] - x[3]]
    }

    #[inline(always)]
    fn at(x: [Lanes; 4]) -> [Lanes; 2] {
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
    fn bt(x: [Lanes; 6]) -> [Lanes; 6] {
        let (s12, d12, d13) = (x[1] + x[2], x[1] - x[2], x[1] - x[3]);
        let e42 = x[4] - x[2];
        [
            x[0] * 4.0 - x[2] * 5.0 + x[4],
            x[3] + x[4] - s12 * 4.0,
            x[4] - x[3] + d12 * 4.0,
            e42 - d13 * 2.0,
            e42 + d13 * 2.0,
            x[1] * 4.0 - x[3] * 5.0 + x[5],
        ]
    }

    #[inline(always)]
    fn at(x: [Lanes; 6]) -> [Lanes; 4] {
        let (s12, d12, s34, d34) = (x[1] + x[2], x[1] - x[2], x[3] + x[4], x[3] - x[4]);
        [
            x[0] + s12 + s34,
            d12 + d34 * 2.0,
            s12 + s34 * 4.0,
            d12 + d34 * 8.0 + x[5],
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
                let mut d = [[Lanes::ZERO; T]; T];
                for (r, dr) in d.iter_mut().enumerate() {
                    let row = &rows[r * row_len + M * k0..][..M * LANES + (T - M)];
                    for (c, dc) in dr.iter_mut().enumerate() {
                        for (l, v) in dc.0.iter_mut().enumerate() {
                            *v = row[M * l + c];
                        }
                    }
                }
                let vt = transform_input::<M, T, F>(&d);
                let n = LANES.min(per_row - k0);
                let t0 = tr * per_row + k0;
                for (e, lanes) in vt.iter().flatten().enumerate() {
                    let dst = &mut v[(e * c_in + ci) * tiles + t0..];
                    // Whole groups as fixed-size copies (vector moves, not calls).
                    if n == LANES {
                        dst[..LANES].copy_from_slice(&lanes.0);
                    } else {
                        dst[..n].copy_from_slice(&lanes.0[..n]);
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
                let mut mm = [[Lanes::ZERO; T]; T];
                for (e, lanes) in mm.iter_mut().flatten().enumerate() {
                    let src = &m[(e * c_out + co) * tiles + t0..];
                    if n == LANES {
                        lanes.0.copy_from_slice(&src[..LANES]);
                    } else {
                        lanes.0[..n].copy_from_slice(&src[..n]);
                    }
                }
                let ym = transform_output::<M, T, F>(&mm);
                let (x0, width) = (M * k0, (M * n).min(w - M * k0));
                for (i, yi) in ym.iter().enumerate() {
                    let y = y0 + M * tr + i;
                    if y >= y1 {
                        break;
                    }
                    // Output column M · l + j of the group is value j of lane l.
                    let mut line = [0f32; 4 * LANES];
                    for (j, v) in yi.iter().enumerate() {
                        for (l, &x) in v.0.iter().enumerate() {
                            line[M * l + j] = x;
                        }
                    }
                    let row = &line[..M * LANES];
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

/// One value for each of LANES neighbouring tiles: the element-wise operations of the
/// transforms compile to single vector instructions.
#[derive(Debug, Clone, Copy)]
struct Lanes([f32; LANES]);

impl Lanes {
    const ZERO: Lanes = Lanes([0.0; LANES]);

    #[inline(always)]
    fn zip(self, other: Lanes, f: impl Fn(f32, f32) -> f32) -> Lanes {
        let mut out = self;
        for (o, b) in out.0.iter_mut().zip(other.0) {
            *o = f(*o, b);
        }
        out
    }
}

impl std::ops::Add for Lanes {
    type Output = Lanes;
    #[inline(always)]
    fn add(self, other: Lanes) -> Lanes {
        self.zip(other, |a, b| a + b)
    }
}

impl std::ops::Sub for Lanes {
    type Output = Lanes;
    #[inline(always)]
    fn sub(self, other: Lanes) -> Lanes {
        self.zip(other, |a, b| a - b)
    }
}

impl std::ops::Mul<f32> for Lanes {
    type Output = Lanes;
    #[inline(always)]
    fn mul(self, k: f32) -> Lanes {
        self.zip(Lanes([k; LANES]), |a, b| a * b)
    }
}

/// `Bᵀ d B` of LANES tiles: the T × T transformed values.
#[inline(always)]
fn transform_input<const M: usize, const T: usize, F: Transforms<M, T>>(
    d: &[[Lanes; T]; T],
) -> [[Lanes; T]; T] {
    // Bᵀ d on the columns, then B on the rows.
    let mut bd = [[Lanes::ZERO; T]; T];
    for c in 0..T {
        let mut col = [Lanes::ZERO; T];
        for (r, v) in col.iter_mut().enumerate() {
            *v = d[r][c];
        }
        for (r, v) in F::bt(col).into_iter().enumerate() {
            bd[r][c] = v;
        }
    }
    let mut out = [[Lanes::ZERO; T]; T];
    for (o, row) in out.iter_mut().zip(bd) {
        *o = F::bt(row);
    }
    out
}

/// `Aᵀ P A` of LANES tiles of products: the M × M outputs.
#[inline(always)]
fn transform_output<const M: usize, const T: usize, F: Transforms<M, T>>(
    p: &[[Lanes; T]; T],
) -> [[Lanes; M]; M] {
    // Aᵀ P on the columns, then A on the rows.
    let mut ap = [[Lanes::ZERO; T]; M];
    for c in 0..T {
        let mut col = [Lanes::ZERO; T];
        for (r, v) in col.iter_mut().enumerate() {
            *v = p[r][c];
        }
        for (i, v) in F::at(col).into_iter().enumerate() {
            ap[i][c] = v;
        }
    }
    let mut out = [[Lanes::ZERO; M]; M];
    for (o, row) in out.iter_mut().zip(ap) {
        *o = F::at(row);
    }
    out
}
