//! The input and output passes of Winograd's F(2×2, 3×3) with AVX-512: 16 neighbouring tiles
//! per vector. A tile row's 4 × 4 input values are read straight from the channel's rows, two
//! masked loads and two permutations per row and column parity (the masks read the padding as
//! zeros), and the 2 × 2 outputs are interleaved back into rows by two permutations. The
//! transforms themselves are [`transform_input`] and [`transform_output`] on 16 lanes: the
//! same operations in the same order as on [`super::LANES`] lanes, so the values are the same
//! to the bit.

use std::arch::x86_64::*;

use super::transforms::{transform_input, transform_output, Floats, Vector, F2};
use super::{Input, Tiles};

/// Tiles per vector.
const L: usize = 16;
/// 16 lanes of f32 values.
type Zmm = Vector<f32, L>;

/// Whether this CPU runs [`transform_rows`] and [`transform_back`].
pub(super) fn available() -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
}

/// The vector of 16 lanes.
#[inline(always)]
fn lanes(v: __m512) -> Zmm {
    // SAFETY: both are 16 f32 values (64 bytes) with no invalid bit patterns.
    Vector(unsafe { std::mem::transmute::<__m512, [f32; L]>(v) })
}

/// The register of 16 lanes.
#[inline(always)]
fn register(v: Zmm) -> __m512 {
    // SAFETY: as in `lanes`.
    unsafe { std::mem::transmute::<[f32; L], __m512>(v.0) }
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

/// [`super::transform_rows`] for F(2×2, 3×3): the transformed input tiles of `tiles` into
/// `v`, value `e` of tile `t` of input channel `ci` at `e · e_stride + ci · c_stride + t`.
#[target_feature(enable = "avx512f")]
pub(super) fn transform_rows(
    x: &Input,
    tiles: &Tiles<2>,
    v: &mut [f32],
    (e_stride, c_stride): (usize, usize),
) {
    let (h, w, per_row) = (x.h, x.w, tiles.per_row);
    let n = tiles.count();
    if n == 0 || x.chans.is_empty() {
        return;
    }
    assert!(
        15 * e_stride + (x.chans.len() - 1) * c_stride + n <= v.len(),
        "transformed input within its buffer"
    );
    // Even and odd lanes of two registers, in order.
    let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    let odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    let zero = _mm512_setzero_ps();
    for (ci, chan) in x.chans.iter().enumerate() {
        assert!(chan.len() >= h * w, "channel {ci} of {h} × {w} values");
        for tr in 0..tiles.rows {
            // Padded row y + r is input row y + r − 1; padded column c is input column c − 1.
            let y = tiles.y0 + 2 * tr;
            for k0 in (0..per_row).step_by(L) {
                // Tile k0 + l reads padded columns 2(k0 + l) … 2(k0 + l) + 3: column parity
                // `c` of lane l is input column `2 k0 − 1 + c + 2 l`.
                let start = 2 * k0 as isize - 1;
                let spans = [start, start + 16, start + 2, start + 18];
                let masks = spans.map(|s| columns_inside(s, w));
                let mut d = [[Zmm::ZERO; 4]; 4];
                for (r, dr) in d.iter_mut().enumerate() {
                    let Some(src) = (y + r).checked_sub(1).filter(|&i| i < h) else {
                        continue;
                    };
                    let row = chan[src * w..].as_ptr();
                    let load = |i: usize| {
                        // SAFETY: the mask holds only the lanes of columns 0..w of row `src`,
                        // inside `chan` (asserted); the others are not read.
                        let v = unsafe {
                            _mm512_maskz_loadu_ps(masks[i], row.wrapping_offset(spans[i]))
                        };
                        if x.relu {
                            _mm512_max_ps(v, zero)
                        } else {
                            v
                        }
                    };
                    let (a, b, a2, b2) = (load(0), load(1), load(2), load(3));
                    *dr = [
                        lanes(_mm512_permutex2var_ps(a, even, b)),
                        lanes(_mm512_permutex2var_ps(a, odd, b)),
                        lanes(_mm512_permutex2var_ps(a2, even, b2)),
                        lanes(_mm512_permutex2var_ps(a2, odd, b2)),
                    ];
                }
                let vt = transform_input::<Zmm, 2, 4, F2>(&d);
                let keep = first(per_row - k0);
                let t0 = tr * per_row + k0;
                for (e, value) in vt.iter().flatten().enumerate() {
                    let at = e * e_stride + ci * c_stride + t0;
                    // SAFETY: the lanes kept are tiles t0 … t0 + count − 1 < n, inside `v`
                    // (asserted).
                    unsafe {
                        _mm512_mask_storeu_ps(v.as_mut_ptr().add(at), keep, register(*value))
                    };
                }
            }
        }
    }
}

/// [`super::transform_back`] for F(2×2, 3×3): adds the outputs of the products `m` of `tiles`
/// (value `e` of tile `t` of output channel `co` at `e · e_stride + co · tiles + t`) to
/// `acc [c_out, stride]` (row `y` of a channel at `(y − y0) · w`).
#[target_feature(enable = "avx512f")]
pub(super) fn transform_back(
    m: &[f32],
    (e_stride, c_out): (usize, usize),
    tiles: &Tiles<2>,
    acc: &mut [f32],
    stride: usize,
) {
    let (w, y0, per_row, n) = (tiles.w, tiles.y0, tiles.per_row, tiles.count());
    if n == 0 || c_out == 0 {
        return;
    }
    assert!(
        m.len() >= 15 * e_stride + c_out * n,
        "products of every tile"
    );
    assert!(
        acc.len() >= (c_out - 1) * stride + (tiles.y1 - y0) * w,
        "accumulator of every output row"
    );
    // Lanes 0–7 and 8–15 of two registers, interleaved.
    let low = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    let high = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
    for co in 0..c_out {
        for tr in 0..tiles.rows {
            for k0 in (0..per_row).step_by(L) {
                let count = L.min(per_row - k0);
                let t0 = tr * per_row + k0;
                let mut p = [[Zmm::ZERO; 4]; 4];
                for (e, value) in p.iter_mut().flatten().enumerate() {
                    let at = e * e_stride + co * n + t0;
                    // SAFETY: tiles t0 … t0 + count − 1 < n of product e of channel co, inside
                    // `m` (asserted); the other lanes are not read.
                    *value =
                        lanes(unsafe { _mm512_maskz_loadu_ps(first(count), m.as_ptr().add(at)) });
                }
                let ym = transform_output::<Zmm, 2, 4, F2>(&p);
                let (x0, width) = (2 * k0, (2 * count).min(w - 2 * k0));
                for (i, yi) in ym.iter().enumerate() {
                    let y = y0 + 2 * tr + i;
                    if y >= tiles.y1 {
                        break;
                    }
                    // Output column 2 l + j of the group is value j of lane l.
                    let (y_0, y_1) = (register(yi[0]), register(yi[1]));
                    let halves = [
                        (_mm512_permutex2var_ps(y_0, low, y_1), first(width)),
                        (
                            _mm512_permutex2var_ps(y_0, high, y_1),
                            first(width.saturating_sub(L)),
                        ),
                    ];
                    let row = co * stride + (y - y0) * w + x0;
                    for (half, (values, keep)) in halves.into_iter().enumerate() {
                        // SAFETY: the lanes kept are columns x0 … x0 + width − 1 < w of output
                        // row y of channel co, inside `acc` (asserted); no others are touched.
                        unsafe {
                            let dst = acc.as_mut_ptr().wrapping_add(row + L * half);
                            let sum = _mm512_add_ps(_mm512_maskz_loadu_ps(keep, dst), values);
                            _mm512_mask_storeu_ps(dst, keep, sum);
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::super::tests::pseudo;
    use super::super::{transform_back_by_lanes, transform_rows_by_lanes};
    use super::*;

    /// Output sides: one column, groups of 16 tiles whole and partial, outputs whose last
    /// group has more than 16 columns, odd sides.
    const SIDES: [(usize, usize); 6] = [(5, 1), (3, 25), (6, 32), (7, 45), (4, 64), (9, 70)];

    /// The 16-lane input pass writes the same values, to the bit, as the one on
    /// [`super::super::LANES`] lanes, in the layouts of both Winograd paths (value-major and
    /// channel-major), with and without the ReLU, for a whole image and for a block of rows.
    #[test]
    fn input_pass_matches_the_lanes_to_the_bit() {
        if !available() {
            eprintln!("skipped: this CPU has no AVX-512F");
            return;
        }
        let c_in = 3;
        for (i, &(h, w)) in SIDES.iter().enumerate() {
            let data = pseudo(c_in * h * w, 30 + i as u64);
            let chans: Vec<&[f32]> = data.chunks(h * w).collect();
            for relu in [false, true] {
                for rows in [(0, h), (2.min(h - 1) & !1, h.min(5))] {
                    let x = Input {
                        chans: &chans,
                        h,
                        w,
                        relu,
                    };
                    let tiles = Tiles::<2>::of(w, rows);
                    let n = tiles.count();
                    for strides in [(c_in * n, n), (n, 16 * n)] {
                        let mut want = vec![f32::NAN; 16 * c_in * n];
                        let mut scratch = vec![0f32; 4 * tiles.row_len::<4>()];
                        transform_rows_by_lanes::<2, 4, F2>(
                            &x,
                            &tiles,
                            &mut want,
                            strides,
                            &mut scratch,
                        );
                        let mut got = vec![f32::NAN; 16 * c_in * n];
                        // SAFETY: the CPU has AVX-512F (checked above).
                        unsafe { transform_rows(&x, &tiles, &mut got, strides) };
                        let (want, got): (Vec<u32>, Vec<u32>) = (
                            want.iter().map(|v| v.to_bits()).collect(),
                            got.iter().map(|v| v.to_bits()).collect(),
                        );
                        assert_eq!(got, want, "{h} × {w}, rows {rows:?}, relu {relu}");
                    }
                }
            }
        }
    }

    /// The 16-lane output pass adds the same values, to the bit, as the one on
    /// [`super::super::LANES`] lanes, and leaves the accumulator past the block's rows alone.
    #[test]
    fn output_pass_matches_the_lanes_to_the_bit() {
        if !available() {
            eprintln!("skipped: this CPU has no AVX-512F");
            return;
        }
        let c_out = 3;
        for (i, &(h, w)) in SIDES.iter().enumerate() {
            for rows in [(0, h), (2.min(h - 1) & !1, h.min(5))] {
                let tiles = Tiles::<2>::of(w, rows);
                let n = tiles.count();
                // Values further apart than the channels' products (as `skewed` lays them).
                let e_stride = c_out * n + 5;
                let m = pseudo(16 * e_stride, 40 + i as u64);
                // A stride past the block's rows: the columns after them must stay as they are.
                let stride = (rows.1 - rows.0) * w + 3;
                let before = pseudo(c_out * stride, 50 + i as u64);
                let mut want = before.clone();
                let layout = (e_stride, c_out);
                transform_back_by_lanes::<2, 4, F2>(&m, layout, &tiles, &mut want, stride);
                let mut got = before.clone();
                // SAFETY: the CPU has AVX-512F (checked above).
                unsafe { transform_back(&m, layout, &tiles, &mut got, stride) };
                for (at, (g, w_)) in got.iter().zip(&want).enumerate() {
                    assert_eq!(
                        g.to_bits(),
                        w_.to_bits(),
                        "{h} × {w}, rows {rows:?}, at {at}"
                    );
                    if at % stride >= stride - 3 {
                        assert_eq!(g.to_bits(), before[at].to_bits(), "past the rows, at {at}");
                    }
                }
            }
        }
    }
}
