//! The input and output passes of Winograd's F(2×2, 3×3) and F(4×4, 3×3) with AVX-512: 16
//! neighbouring tiles per vector. A tile row's input values are read straight from the
//! channel's rows by masked loads (the masks read the padding as zeros) and split into the
//! tiles' columns by permutations; the outputs are interleaved back into rows by permutations.
//! The transforms themselves are [`transform_input`] and [`transform_output`] on 16 lanes: the
//! same operations in the same order as on [`super::LANES`] lanes, so the values are the same
//! to the bit.

use std::arch::x86_64::*;
use std::ops::{Add, Mul, Sub};

use super::transforms::{transform_input, transform_output, Floats, Transforms, F2, F4};
use super::{Input, Tiles};

/// Tiles per vector.
const L: usize = 16;

/// 16 lanes of f32 values in a register: the transforms' additions, subtractions and
/// multiplications by constants are single AVX-512 instructions (as arrays of 16 values, the
/// 6 × 6 tiles of F(4×4, 3×3) were compiled into gathers and scatters through the stack).
/// Made only in this module's functions, which run on CPUs with AVX-512F.
#[derive(Debug, Clone, Copy)]
struct Zmm(__m512);

impl Add for Zmm {
    type Output = Self;
    #[inline(always)]
    fn add(self, other: Self) -> Self {
        // SAFETY: the CPU has AVX-512F (see `Zmm`).
        Zmm(unsafe { _mm512_add_ps(self.0, other.0) })
    }
}

impl Sub for Zmm {
    type Output = Self;
    #[inline(always)]
    fn sub(self, other: Self) -> Self {
        // SAFETY: as in `add`.
        Zmm(unsafe { _mm512_sub_ps(self.0, other.0) })
    }
}

impl Mul<f32> for Zmm {
    type Output = Self;
    #[inline(always)]
    fn mul(self, k: f32) -> Self {
        // SAFETY: as in `add`.
        Zmm(unsafe { _mm512_mul_ps(self.0, _mm512_set1_ps(k)) })
    }
}

impl Floats for Zmm {
    // SAFETY: 16 f32 zeros (64 bytes) as a register of 16 f32 values.
    const ZERO: Self = Zmm(unsafe { std::mem::transmute::<[f32; L], __m512>([0.0; L]) });
}

/// Whether this CPU runs the passes of this module.
pub(super) fn available() -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
}

/// The lanes `i` of 16 consecutive columns from `start` that fall inside `0..w`.
#[inline(always)]
fn columns_inside(start: isize, w: usize) -> __mmask16 {
    let lo = (-start).clamp(0, L as isize) as u32;
    let hi = (w as isize - start).clamp(0, L as isize) as u32;
    let below = |n: u32| ((1u32 << n) - 1) as __mmask16;
    below(hi) & !below(lo)
}

/// The first `n` (at most 16) lanes.
#[inline(always)]
fn first(n: usize) -> __mmask16 {
    ((1u32 << n.min(L)) - 1) as __mmask16
}

/// The permutation indices `f(0)`, …, `f(15)`.
#[inline(always)]
fn indices(f: impl Fn(i32) -> i32) -> __m512i {
    let idx: [i32; L] = std::array::from_fn(|k| f(k as i32));
    // SAFETY: both are 16 i32 values (64 bytes) with no invalid bit patterns.
    unsafe { std::mem::transmute::<[i32; L], __m512i>(idx) }
}

/// The input pass of F(M×M, 3×3) on groups of 16 tiles: the transformed input tiles of
/// `tiles` into `v`, value `e` of tile `t` of input channel `ci` at `e · e_stride + ci ·
/// c_stride + t`. Each input row of a group is read by K masked loads of 16 values, at
/// `spans` (column offsets from the group's first padded column, with the lanes each keeps),
/// the padding read as zeros; `split` turns them into the T columns of the 16 tiles.
#[inline(always)]
fn input_pass<const M: usize, const T: usize, const K: usize, F: Transforms<M, T>>(
    x: &Input,
    tiles: &Tiles<M>,
    v: &mut [f32],
    (e_stride, c_stride): (usize, usize),
    spans: [(isize, __mmask16); K],
    split: impl Fn([__m512; K]) -> [__m512; T],
) {
    let (h, w, per_row) = (x.h, x.w, tiles.per_row);
    let n = tiles.count();
    if n == 0 || x.chans.is_empty() {
        return;
    }
    assert!(
        (T * T - 1) * e_stride + (x.chans.len() - 1) * c_stride + n <= v.len(),
        "transformed input within its buffer"
    );
    for (ci, chan) in x.chans.iter().enumerate() {
        assert!(chan.len() >= h * w, "channel {ci} of {h} × {w} values");
        for tr in 0..tiles.rows {
            // Padded row y + r is input row y + r − 1; padded column c is input column c − 1.
            let y = tiles.y0 + M * tr;
            for k0 in (0..per_row).step_by(L) {
                // Tile k0 + l reads padded columns M(k0 + l) … M(k0 + l) + T − 1: input
                // columns from `M k0 − 1`.
                let start = (M * k0) as isize - 1;
                let masks = spans.map(|(at, keep)| columns_inside(start + at, w) & keep);
                let mut d = [[Zmm::ZERO; T]; T];
                for (r, dr) in d.iter_mut().enumerate() {
                    let Some(src) = (y + r).checked_sub(1).filter(|&i| i < h) else {
                        continue;
                    };
                    let row = chan[src * w..].as_ptr();
                    let loads = std::array::from_fn(|i| {
                        // SAFETY: the mask holds only lanes of columns 0..w of row `src`,
                        // inside `chan` (asserted); the others are not read. The CPU has
                        // AVX-512F (the callers' target feature).
                        unsafe {
                            let v = _mm512_maskz_loadu_ps(
                                masks[i],
                                row.wrapping_offset(start + spans[i].0),
                            );
                            if x.relu {
                                _mm512_max_ps(v, _mm512_setzero_ps())
                            } else {
                                v
                            }
                        }
                    });
                    *dr = split(loads).map(Zmm);
                }
                let vt = transform_input::<Zmm, M, T, F>(&d);
                let keep = first(per_row - k0);
                let t0 = tr * per_row + k0;
                for (e, value) in vt.iter().flatten().enumerate() {
                    let at = e * e_stride + ci * c_stride + t0;
                    // SAFETY: the lanes kept are tiles t0 … t0 + count − 1 < n, inside `v`
                    // (asserted); the CPU has AVX-512F.
                    unsafe { _mm512_mask_storeu_ps(v.as_mut_ptr().add(at), keep, value.0) };
                }
            }
        }
    }
}

/// The output pass of F(M×M, 3×3) on groups of 16 tiles: adds the outputs of the products
/// `m` of `tiles` (value `e` of tile `t` of output channel `co` at `e · e_stride + co ·
/// tiles + t`) to `acc [c_out, stride]` (row `y` of a channel at `(y − y0) · w`).
/// `interleave` turns the M columns of an output row of the 16 tiles into its 16 · M values,
/// in order.
#[inline(always)]
fn output_pass<const M: usize, const T: usize, F: Transforms<M, T>>(
    m: &[f32],
    (e_stride, c_out): (usize, usize),
    tiles: &Tiles<M>,
    acc: &mut [f32],
    stride: usize,
    interleave: impl Fn([__m512; M]) -> [__m512; M],
) {
    let (w, y0, per_row, n) = (tiles.w, tiles.y0, tiles.per_row, tiles.count());
    if n == 0 || c_out == 0 {
        return;
    }
    assert!(
        m.len() >= (T * T - 1) * e_stride + c_out * n,
        "products of every tile"
    );
    assert!(
        acc.len() >= (c_out - 1) * stride + (tiles.y1 - y0) * w,
        "accumulator of every output row"
    );
    for co in 0..c_out {
        for tr in 0..tiles.rows {
            for k0 in (0..per_row).step_by(L) {
                let count = L.min(per_row - k0);
                let t0 = tr * per_row + k0;
                let mut p = [[Zmm::ZERO; T]; T];
                for (e, value) in p.iter_mut().flatten().enumerate() {
                    let at = e * e_stride + co * n + t0;
                    // SAFETY: tiles t0 … t0 + count − 1 < n of product e of channel co, inside
                    // `m` (asserted); the other lanes are not read. The CPU has AVX-512F.
                    *value =
                        Zmm(unsafe { _mm512_maskz_loadu_ps(first(count), m.as_ptr().add(at)) });
                }
                let ym = transform_output::<Zmm, M, T, F>(&p);
                let (x0, width) = (M * k0, (M * count).min(w - M * k0));
                for (i, yi) in ym.iter().enumerate() {
                    let y = y0 + M * tr + i;
                    if y >= tiles.y1 {
                        break;
                    }
                    // Output column M l + j of the group is value j of lane l.
                    let row = co * stride + (y - y0) * w + x0;
                    for (q, values) in interleave(yi.map(|y| y.0)).into_iter().enumerate() {
                        let keep = first(width.saturating_sub(L * q));
                        // SAFETY: the lanes kept are columns x0 … x0 + width − 1 < w of output
                        // row y of channel co, inside `acc` (asserted); no others are touched.
                        unsafe {
                            let dst = acc.as_mut_ptr().wrapping_add(row + L * q);
                            let sum = _mm512_add_ps(_mm512_maskz_loadu_ps(keep, dst), values);
                            _mm512_mask_storeu_ps(dst, keep, sum);
                        }
                    }
                }
            }
        }
    }
}

/// [`super::transform_rows`] for F(2×2, 3×3): column parity `c` of lane l is value `c + 2 l`
/// of the row from the group's first column; two loads and two permutations per parity.
#[target_feature(enable = "avx512f")]
pub(super) fn transform_rows_f2(
    x: &Input,
    tiles: &Tiles<2>,
    v: &mut [f32],
    strides: (usize, usize),
) {
    // Even and odd lanes of two registers, in order.
    let (even, odd) = (indices(|k| 2 * k), indices(|k| 2 * k + 1));
    let spans = [0, 16, 2, 18].map(|at| (at, !0));
    input_pass::<2, 4, 4, F2>(x, tiles, v, strides, spans, |[a, b, a2, b2]| {
        [
            _mm512_permutex2var_ps(a, even, b),
            _mm512_permutex2var_ps(a, odd, b),
            _mm512_permutex2var_ps(a2, even, b2),
            _mm512_permutex2var_ps(a2, odd, b2),
        ]
    })
}

/// [`super::transform_back`] for F(2×2, 3×3): an output row interleaved by two permutations.
#[target_feature(enable = "avx512f")]
pub(super) fn transform_back_f2(
    m: &[f32],
    layout: (usize, usize),
    tiles: &Tiles<2>,
    acc: &mut [f32],
    stride: usize,
) {
    // Lanes 0–7 and 8–15 of two registers, interleaved.
    let (low, high) = (
        indices(|k| k / 2 + 16 * (k % 2)),
        indices(|k| 8 + k / 2 + 16 * (k % 2)),
    );
    output_pass::<2, 4, F2>(m, layout, tiles, acc, stride, |[y_0, y_1]| {
        [
            _mm512_permutex2var_ps(y_0, low, y_1),
            _mm512_permutex2var_ps(y_0, high, y_1),
        ]
    })
}

/// [`super::transform_rows`] for F(4×4, 3×3): column `c` of lane l is value `c + 4 l` of the
/// row from the group's first column; the 64 values of 4 loads are split into columns 0–3 by
/// permutations, and columns 4 and 5 are columns 0 and 1 of the next tile (the last lane's
/// from two more values).
#[target_feature(enable = "avx512f")]
pub(super) fn transform_rows_f4(
    x: &Input,
    tiles: &Tiles<4>,
    v: &mut [f32],
    strides: (usize, usize),
) {
    // Lanes 0–7 of value `4 i + c` of two registers: column `c` of the tiles of 32 values.
    let columns = [0, 1, 2, 3].map(|c| indices(|k| 4 * (k % 8) + c));
    let spans = [(0, !0), (16, !0), (32, !0), (48, !0), (64, 1), (65, 1)];
    input_pass::<4, 6, 6, F4>(
        x,
        tiles,
        v,
        strides,
        spans,
        |[a0, a1, a2, a3, next4, next5]| {
            let [c0, c1, c2, c3] = columns.map(|idx| {
                let low = _mm512_permutex2var_ps(a0, idx, a1);
                let high = _mm512_permutex2var_ps(a2, idx, a3);
                _mm512_shuffle_f32x4::<0b0100_0100>(low, high)
            });
            let shift = |col: __m512, next: __m512| {
                _mm512_castsi512_ps(_mm512_alignr_epi32::<1>(
                    _mm512_castps_si512(next),
                    _mm512_castps_si512(col),
                ))
            };
            [c0, c1, c2, c3, shift(c0, next4), shift(c1, next5)]
        },
    )
}

/// [`super::transform_back`] for F(4×4, 3×3): an output row interleaved from its 4 columns
/// into 64 values by two rounds of permutations.
#[target_feature(enable = "avx512f")]
pub(super) fn transform_back_f4(
    m: &[f32],
    layout: (usize, usize),
    tiles: &Tiles<4>,
    acc: &mut [f32],
    stride: usize,
) {
    // Lanes 0–7 and 8–15 of two registers, interleaved: a, b → a0 b0 a1 b1 …
    let pairs = [0, 8].map(|o| indices(|k| o + k / 2 + 16 * (k % 2)));
    // Two-lane units of two such registers, interleaved (quarter q of the 64 values).
    let quads = [0, 8].map(|o| indices(|k| o + 2 * (k / 4) + k % 2 + 16 * ((k / 2) % 2)));
    output_pass::<4, 6, F4>(m, layout, tiles, acc, stride, |[y_0, y_1, y_2, y_3]| {
        let p01 = pairs.map(|idx| _mm512_permutex2var_ps(y_0, idx, y_1));
        let p23 = pairs.map(|idx| _mm512_permutex2var_ps(y_2, idx, y_3));
        std::array::from_fn(|q| _mm512_permutex2var_ps(p01[q / 2], quads[q % 2], p23[q / 2]))
    })
}

#[cfg(test)]
mod tests {
    use super::super::super::tests::pseudo;
    use super::super::{transform_back_by_lanes, transform_rows_by_lanes};
    use super::*;

    /// Output sides: one column, groups of 16 tiles whole and partial, last groups whose
    /// columns fill one to four vectors, odd sides.
    const SIDES: [(usize, usize); 8] = [
        (5, 1),
        (3, 25),
        (6, 32),
        (7, 45),
        (4, 64),
        (9, 70),
        (5, 61),
        (3, 130),
    ];

    /// The rows of a whole image of `h` rows and of a block of them starting at a tile row.
    fn row_ranges<const M: usize>(h: usize) -> [(usize, usize); 2] {
        let y0 = if h > M { M } else { 0 };
        [(0, h), (y0, h.min(y0 + M + 1))]
    }

    /// An AVX-512 input pass.
    type InputPass<const M: usize> = unsafe fn(&Input, &Tiles<M>, &mut [f32], (usize, usize));
    /// An AVX-512 output pass.
    type OutputPass<const M: usize> =
        unsafe fn(&[f32], (usize, usize), &Tiles<M>, &mut [f32], usize);

    /// `pass` writes the same values, to the bit, as the input pass on
    /// [`super::super::LANES`] lanes, in the layouts of both Winograd paths (value-major and
    /// channel-major), with and without the ReLU, for a whole image and for a block of rows.
    fn input_pass_matches<const M: usize, const T: usize, F: Transforms<M, T>>(pass: InputPass<M>) {
        let c_in = 3;
        for (i, &(h, w)) in SIDES.iter().enumerate() {
            let data = pseudo(c_in * h * w, 30 + i as u64);
            let chans: Vec<&[f32]> = data.chunks(h * w).collect();
            for relu in [false, true] {
                for rows in row_ranges::<M>(h) {
                    let x = Input {
                        chans: &chans,
                        h,
                        w,
                        relu,
                    };
                    let tiles = Tiles::<M>::of(w, rows);
                    let n = tiles.count();
                    for strides in [(c_in * n, n), (n, T * T * n)] {
                        let mut want = vec![f32::NAN; T * T * c_in * n];
                        let mut scratch = vec![0f32; T * tiles.row_len::<T>()];
                        transform_rows_by_lanes::<M, T, F>(
                            &x,
                            &tiles,
                            &mut want,
                            strides,
                            &mut scratch,
                        );
                        let mut got = vec![f32::NAN; T * T * c_in * n];
                        // SAFETY: the caller checked that the CPU has AVX-512F.
                        unsafe { pass(&x, &tiles, &mut got, strides) };
                        let (want, got): (Vec<u32>, Vec<u32>) = (
                            want.iter().map(|v| v.to_bits()).collect(),
                            got.iter().map(|v| v.to_bits()).collect(),
                        );
                        assert_eq!(got, want, "F{M}, {h} × {w}, rows {rows:?}, relu {relu}");
                    }
                }
            }
        }
    }

    /// `pass` adds the same values, to the bit, as the output pass on
    /// [`super::super::LANES`] lanes, and leaves the accumulator past the block's rows alone.
    fn output_pass_matches<const M: usize, const T: usize, F: Transforms<M, T>>(
        pass: OutputPass<M>,
    ) {
        let c_out = 3;
        for (i, &(h, w)) in SIDES.iter().enumerate() {
            for rows in row_ranges::<M>(h) {
                let tiles = Tiles::<M>::of(w, rows);
                let n = tiles.count();
                // Values further apart than the channels' products (as `skewed` lays them).
                let e_stride = c_out * n + 5;
                let m = pseudo(T * T * e_stride, 40 + i as u64);
                // A stride past the block's rows: the columns after them must stay as they are.
                let stride = (rows.1 - rows.0) * w + 3;
                let before = pseudo(c_out * stride, 50 + i as u64);
                let mut want = before.clone();
                let layout = (e_stride, c_out);
                transform_back_by_lanes::<M, T, F>(&m, layout, &tiles, &mut want, stride);
                let mut got = before.clone();
                // SAFETY: the caller checked that the CPU has AVX-512F.
                unsafe { pass(&m, layout, &tiles, &mut got, stride) };
                for (at, (g, w_)) in got.iter().zip(&want).enumerate() {
                    assert_eq!(
                        g.to_bits(),
                        w_.to_bits(),
                        "F{M}, {h} × {w}, rows {rows:?}, at {at}"
                    );
                    if at % stride >= stride - 3 {
                        assert_eq!(g.to_bits(), before[at].to_bits(), "past the rows, at {at}");
                    }
                }
            }
        }
    }

    /// The 16-lane input passes of both tiles match the passes on lanes to the bit.
    #[test]
    fn input_passes_match_the_lanes_to_the_bit() {
        if !available() {
            eprintln!("skipped: this CPU has no AVX-512F");
            return;
        }
        input_pass_matches::<2, 4, F2>(transform_rows_f2);
        input_pass_matches::<4, 6, F4>(transform_rows_f4);
    }

    /// The 16-lane output passes of both tiles match the passes on lanes to the bit.
    #[test]
    fn output_passes_match_the_lanes_to_the_bit() {
        if !available() {
            eprintln!("skipped: this CPU has no AVX-512F");
            return;
        }
        output_pass_matches::<2, 4, F2>(transform_back_f2);
        output_pass_matches::<4, 6, F4>(transform_back_f4);
    }
}
