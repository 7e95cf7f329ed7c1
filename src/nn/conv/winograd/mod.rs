//! Winograd's minimal filtering F(m×m, 3×3) for 3×3 convolutions with stride 1 and padding 1,
//! with output tiles of 2 × 2 or 4 × 4 ([`Tile`]): every 3×3 filter is transformed once at
//! load into t × t values (t = m + 2), every t × t input tile once per block, the t²
//! element-wise products of the transforms are t² matrix products over the channels, and each
//! m × m output tile is transformed back ([`transforms`]). Per output and input channel that
//! is 4 (m = 2) or 2.25 (m = 4) multiplications instead of 9; the rounding differs from the
//! tap sums by about 1e-6 (m = 2) or up to about 2e-5 (m = 4) of the outputs' magnitude.
//! Layers that keep no transformed filters are computed by [`lean`].

#[cfg(target_arch = "x86_64")]
mod avx512;
mod lean;
mod transforms;

use candle_core::Tensor;
use rayon::prelude::*;

pub(super) use self::lean::{channel_block, transform_image};
use self::transforms::{
    transform_filter, transform_input, transform_output, Floats, Lanes, Real, Transforms, Wide, F2,
    F4, LANES,
};
use crate::error::Result;
use crate::nn::linalg::{matmul, Dst, MatRef};
use crate::nn::vmath::multiversion;

/// Floats of transformed input and products a block may hold where [`MIN_TILES`] allows
/// (1 MiB: a thread's scratch stays in its core's cache between the input pass and the
/// products; 4 MiB, in the last-level cache, took 5 % more of U²-Netp's time on an Intel
/// AVX-512 machine with 2 MiB of L2 per core).
const BLOCK_FLOATS: usize = 1 << 18;

/// Tiles a block takes at least, where the layer has them and [`MAX_FLOATS`] allows (the
/// products' columns: narrower products ran IS-Net's deep 512-channel layers slower).
const MIN_TILES: usize = 128;

/// Floats of scratch a block may take to reach [`MIN_TILES`] tiles (4 MiB; without this bound
/// DEVA's decoder blocks took up to 12 MiB a thread, 30 MB more at the 1-object step's peak,
/// in the same time).
const MAX_FLOATS: usize = 1 << 20;

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

/// `[c_out, c_in, 3, 3]` → the transformed filters `[t², c_out, c_in]` (in f64, then rounded
/// once).
pub(super) fn layout_weight(weight: &Tensor, tile: Tile) -> Result<Tensor> {
    match tile {
        Tile::F2 => layout_weight_with::<2, 4, F2>(weight),
        Tile::F4 => layout_weight_with::<4, 6, F4>(weight),
    }
}

/// The body of [`layout_weight`]: groups of output channels in parallel, each transformed
/// into its own rows and copied into place.
fn layout_weight_with<const M: usize, const T: usize, F: Transforms<M, T>>(
    weight: &Tensor,
) -> Result<Tensor> {
    let (c_out, c_in, _, _) = weight.dims4()?;
    let w = weight.flatten_all()?.to_vec1::<f32>()?;
    let e_len = T * T;
    let group = c_out.div_ceil(4 * rayon::current_num_threads()).max(1);
    let parts: Vec<Vec<f32>> = w
        .par_chunks(9 * c_in * group)
        .map(|g| {
            let k = g.len() / 9;
            let mut part = vec![0f32; e_len * k];
            transform_filters::<M, T, F>(g, &mut part, k);
            part
        })
        .collect();
    let filters = c_out * c_in;
    let mut u = vec![0f32; e_len * filters];
    let mut f0 = 0;
    for part in &parts {
        let k = part.len() / e_len;
        for (e, values) in part.chunks(k).enumerate() {
            u[e * filters + f0..][..k].copy_from_slice(values);
        }
        f0 += k;
    }
    Ok(Tensor::from_vec(u, (T * T, c_out, c_in), weight.device())?)
}

/// The transforms `G g Gᵀ` of the 3×3 filters `g` (`[k, 9]`, row-major) into `u`, value `e`
/// of filter `f` at `e · e_stride + f`: in f64, [`LANES`] filters at a time, each value
/// rounded once (the same values as one filter at a time).
#[inline(always)]
fn transform_filters<const M: usize, const T: usize, F: Transforms<M, T>>(
    g: &[f32],
    u: &mut [f32],
    e_stride: usize,
) {
    let k = g.len() / 9;
    for f0 in (0..k).step_by(LANES) {
        let count = LANES.min(k - f0);
        let mut lanes = [Wide::ZERO; 9];
        for l in 0..count {
            for (i, gi) in lanes.iter_mut().enumerate() {
                gi.0[l] = f64::from(g[9 * (f0 + l) + i]);
            }
        }
        let uf = transform_filter::<Wide, M, T, F>(lanes);
        for (e, values) in uf.iter().flatten().enumerate() {
            for (d, &v) in u[e * e_stride + f0..][..count].iter_mut().zip(&values.0) {
                *d = v as f32;
            }
        }
    }
}

/// Output rows per block for an output of `out_h × out_w` with `channels` input and output
/// channels on `threads` threads: whole tile rows, at most [`BLOCK_FLOATS`] of scratch unless
/// that leaves fewer than [`MIN_TILES`] tiles (then up to [`MAX_FLOATS`]), at least one block
/// per thread where the rows allow.
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
    let row_floats = (tile.elements() * channels * per_row).max(1);
    // Enough tile rows for MIN_TILES tiles, as far as MAX_FLOATS allows.
    let wide = MIN_TILES.div_ceil(per_row).min(MAX_FLOATS / row_floats);
    m * (BLOCK_FLOATS / row_floats)
        .max(wide)
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
    let c_in = x.chans.len();
    let tiles = Tiles::<M>::of(x.w, (y0, y1));
    let n = tiles.count();
    let (ev, em) = (skewed(c_in * n), skewed(c_out * n));
    // Every transformed input, product and row is written before it is read (the gaps that
    // skew the values are never read).
    buf.resize(e_len * (ev + em) + T * tiles.row_len::<T>(), 0.0);
    let (v, rest) = buf.split_at_mut(e_len * ev);
    let (m, rows) = rest.split_at_mut(e_len * em);
    transform_rows::<M, T, F>(x, &tiles, v, (ev, n), rows);
    for e in 0..e_len {
        let lhs = MatRef::rows(&u[e * c_out * c_in..(e + 1) * c_out * c_in], c_in);
        let rhs = MatRef::rows(&v[e * ev..][..c_in * n], n);
        let dst = &mut m[e * em..][..c_out * n];
        matmul(Dst::Set, c_out, n, c_in, dst, n, lhs, rhs, false);
    }
    transform_back::<M, T, F>(m, (em, c_out), &tiles, acc, stride);
}

/// The distance, in floats, between the values of a tile in a buffer that holds `len` floats
/// of each value: at least `len` and an odd number of 64-byte cache lines, so that the T²
/// values of a tile fall in different sets of the L1 cache (at a multiple of 4 KiB apart, as
/// `c · tiles` floats often are, they would all fall in one set and evict each other).
fn skewed(len: usize) -> usize {
    (len.div_ceil(16) | 1) * 16
}

/// The output tiles of the rows `y0..y1` (all `w` columns) of an output: `rows` tile rows of
/// `per_row` tiles.
struct Tiles<const M: usize> {
    /// Output columns.
    w: usize,
    /// First output row.
    y0: usize,
    /// Past the last output row.
    y1: usize,
    /// Tiles per tile row.
    per_row: usize,
    /// Tile rows.
    rows: usize,
}

impl<const M: usize> Tiles<M> {
    #[inline(always)]
    fn of(w: usize, (y0, y1): (usize, usize)) -> Self {
        Tiles {
            w,
            y0,
            y1,
            per_row: w.div_ceil(M),
            rows: (y1 - y0).div_ceil(M),
        }
    }

    /// The same tiles typed as `N × N` ones (where `M` is `N`).
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    fn as_side<const N: usize>(&self) -> Tiles<N> {
        debug_assert_eq!(M, N, "tiles of one side");
        Tiles::of(self.w, (self.y0, self.y1))
    }

    /// Tiles in all.
    #[inline(always)]
    fn count(&self) -> usize {
        self.rows * self.per_row
    }

    /// Length of a padded input row for whole groups of lanes (see [`transform_rows`]).
    #[inline(always)]
    fn row_len<const T: usize>(&self) -> usize {
        M * self.per_row.div_ceil(LANES) * LANES + (T - M)
    }
}

/// The transformed input tiles of `tiles` into `v`, value `e` of tile `t` of input channel
/// `ci` at `e · e_stride + ci · c_stride + t`; `rows` (T padded rows of [`Tiles::row_len`])
/// is scratch. The padding is read as zeros: no padded copy of the input is made. With
/// AVX-512, the tiles go through [`avx512`], 16 at once.
#[inline(always)]
fn transform_rows<const M: usize, const T: usize, F: Transforms<M, T>>(
    x: &Input,
    tiles: &Tiles<M>,
    v: &mut [f32],
    (e_stride, c_stride): (usize, usize),
    rows: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    if avx512::available() {
        let strides = (e_stride, c_stride);
        // SAFETY: the CPU has AVX-512F; F(2×2, 3×3) and F(4×4, 3×3) are the only transforms
        // of 2 × 2 and 4 × 4 tiles.
        match M {
            2 => return unsafe { avx512::transform_rows_f2(x, &tiles.as_side(), v, strides) },
            4 => return unsafe { avx512::transform_rows_f4(x, &tiles.as_side(), v, strides) },
            _ => {}
        }
    }
    transform_rows_by_lanes::<M, T, F>(x, tiles, v, (e_stride, c_stride), rows)
}

/// [`transform_rows`] on [`LANES`] tiles at once, each tile row's input rows copied with
/// their padding into `rows` first.
#[inline(always)]
fn transform_rows_by_lanes<const M: usize, const T: usize, F: Transforms<M, T>>(
    x: &Input,
    tiles: &Tiles<M>,
    v: &mut [f32],
    (e_stride, c_stride): (usize, usize),
    rows: &mut [f32],
) {
    let (h, w) = (x.h, x.w);
    let (per_row, row_len) = (tiles.per_row, tiles.row_len::<T>());
    for (ci, chan) in x.chans.iter().enumerate() {
        for tr in 0..tiles.rows {
            // Padded row y + r is input row y + r − 1 (column c of the padded row is column
            // c − 1 of the input), zero outside the input.
            let y = tiles.y0 + M * tr;
            for (r, row) in rows.chunks_mut(row_len).take(T).enumerate() {
                if let Some(src) = (y + r).checked_sub(1).filter(|&i| i < h) {
                    row[0] = 0.0;
                    let (dst, right) = row[1..].split_at_mut(w);
                    dst.copy_from_slice(&chan[src * w..(src + 1) * w]);
                    right.fill(0.0);
                    if x.relu {
                        dst.iter_mut().for_each(|v| *v = v.max(0.0));
                    }
                } else {
                    row.fill(0.0);
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
                let vt = transform_input::<Lanes, M, T, F>(&d);
                let count = LANES.min(per_row - k0);
                let t0 = tr * per_row + k0;
                for (e, lanes) in vt.iter().flatten().enumerate() {
                    let dst = &mut v[e * e_stride + ci * c_stride + t0..];
                    // Whole groups as fixed-size copies (vector moves, not calls).
                    if count == LANES {
                        dst[..LANES].copy_from_slice(&lanes.0);
                    } else {
                        dst[..count].copy_from_slice(&lanes.0[..count]);
                    }
                }
            }
        }
    }
}

/// Adds the outputs of the products `m` of `tiles` (value `e` of tile `t` of output channel
/// `co` at `e · e_stride + co · tiles + t`) to `acc [c_out, stride]` (row `y` of a channel at
/// `(y − y0) · w`). With AVX-512, the tiles go through [`avx512`], 16 at once.
#[inline(always)]
fn transform_back<const M: usize, const T: usize, F: Transforms<M, T>>(
    m: &[f32],
    (e_stride, c_out): (usize, usize),
    tiles: &Tiles<M>,
    acc: &mut [f32],
    stride: usize,
) {
    #[cfg(target_arch = "x86_64")]
    if avx512::available() {
        let layout = (e_stride, c_out);
        // SAFETY: as in `transform_rows`.
        match M {
            2 => {
                return unsafe {
                    avx512::transform_back_f2(m, layout, &tiles.as_side(), acc, stride)
                }
            }
            4 => {
                return unsafe {
                    avx512::transform_back_f4(m, layout, &tiles.as_side(), acc, stride)
                }
            }
            _ => {}
        }
    }
    transform_back_by_lanes::<M, T, F>(m, (e_stride, c_out), tiles, acc, stride)
}

/// [`transform_back`] on [`LANES`] tiles at once.
#[inline(always)]
fn transform_back_by_lanes<const M: usize, const T: usize, F: Transforms<M, T>>(
    m: &[f32],
    (e_stride, c_out): (usize, usize),
    tiles: &Tiles<M>,
    acc: &mut [f32],
    stride: usize,
) {
    let (w, y0, per_row, n) = (tiles.w, tiles.y0, tiles.per_row, tiles.count());
    for co in 0..c_out {
        for tr in 0..tiles.rows {
            for k0 in (0..per_row).step_by(LANES) {
                let count = LANES.min(per_row - k0);
                let t0 = tr * per_row + k0;
                let mut mm = [[Lanes::ZERO; T]; T];
                for (e, lanes) in mm.iter_mut().flatten().enumerate() {
                    let src = &m[e * e_stride + co * n + t0..];
                    if count == LANES {
                        lanes.0.copy_from_slice(&src[..LANES]);
                    } else {
                        lanes.0[..count].copy_from_slice(&src[..count]);
                    }
                }
                let ym = transform_output::<Lanes, M, T, F>(&mm);
                let (x0, width) = (M * k0, (M * count).min(w - M * k0));
                for (i, yi) in ym.iter().enumerate() {
                    let y = y0 + M * tr + i;
                    if y >= tiles.y1 {
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

#[cfg(test)]
mod tests {
    use super::super::tests::pseudo;
    use super::*;
    use candle_core::Device;

    /// A block keeps its scratch within [`BLOCK_FLOATS`] unless that leaves fewer than
    /// [`MIN_TILES`] tiles (then within [`MAX_FLOATS`]), and gives every thread a block where
    /// the rows allow.
    #[test]
    fn blocks_fit_the_cache_but_keep_the_products_wide() {
        // (tile, out_h, out_w, channels in + out, threads) → output rows per block.
        let cases = [
            // 160 tiles a row, 491 520 floats a tile row: one tile row, past BLOCK_FLOATS.
            (Tile::F2, 320, 320, 192, 2, 2),
            // 32 tiles a row, 524 288 floats a tile row: two tile rows (64 tiles) within
            // MAX_FLOATS, past BLOCK_FLOATS.
            (Tile::F2, 64, 64, 1024, 2, 4),
            // 32 tiles a row, 131 072 floats a tile row: four tile rows for 128 tiles.
            (Tile::F2, 64, 64, 256, 2, 8),
            // 10 tiles a row, 12 800 floats a tile row: 20 fit, half of the 10 per thread.
            (Tile::F2, 20, 20, 80, 2, 10),
            // The same on one thread: all 10 tile rows.
            (Tile::F2, 20, 20, 80, 1, 20),
            // F(4×4): 27 tiles a row, 497 664 floats a tile row: two within MAX_FLOATS.
            (Tile::F4, 60, 107, 512, 2, 8),
            // F(4×4): 27 tiles a row, 62 208 floats a tile row: five tile rows for 128 tiles.
            (Tile::F4, 60, 107, 64, 2, 20),
            // One output row.
            (Tile::F2, 1, 5, 8, 2, 2),
        ];
        for (tile, out_h, out_w, channels, threads, want) in cases {
            assert_eq!(
                block_rows(tile, out_h, out_w, channels, threads),
                want,
                "{tile:?} {out_h} × {out_w}, {channels} channels, {threads} threads"
            );
        }
    }

    /// The filters laid out at load (lanes of filters, groups of channels in parallel) are,
    /// to the bit, each filter's transform in f64 rounded once, at `[e, co, ci]`.
    #[test]
    fn laid_out_filters_are_each_filters_transform() {
        for (c_out, c_in) in [(1, 1), (3, 5), (13, 7), (70, 3)] {
            let w = pseudo(c_out * c_in * 9, 60 + c_out as u64);
            let t = Tensor::from_vec(w.clone(), (c_out, c_in, 3, 3), &Device::Cpu).unwrap();
            for tile in [Tile::F2, Tile::F4] {
                let u = layout_weight(&t, tile).unwrap().flatten_all().unwrap();
                let u = u.to_vec1::<f32>().unwrap();
                for (f, g) in w.chunks(9).enumerate() {
                    let g = std::array::from_fn(|i| f64::from(g[i]));
                    let want: Vec<f64> = match tile {
                        Tile::F2 => transform_filter::<f64, 2, 4, F2>(g).concat(),
                        Tile::F4 => transform_filter::<f64, 4, 6, F4>(g).concat(),
                    };
                    for (e, v) in want.iter().enumerate() {
                        let got = u[e * c_out * c_in + f];
                        assert_eq!(
                            got.to_bits(),
                            (*v as f32).to_bits(),
                            "{tile:?} {c_out} × {c_in}, filter {f}, value {e}"
                        );
                    }
                }
            }
        }
    }
}
