//! The direct convolution kernel of [`super::conv`] on x86-64 CPUs with AVX-512 or AVX2 and
//! FMA: no packing and no column buffer. An output tile of [`CO`] channels × [`PX`]
//! consecutive positions of the padded output lives in vector registers through a whole run of
//! input channels and taps; each step loads three vectors of one input plane at the tap's
//! offset and multiplies them by broadcast weights. With AVX-512 the whole tile fits in 24
//! registers; with AVX2's sixteen the tile is computed as four quarters of 4 channels × 24
//! positions (12 accumulators). Weights are laid out once, at load, as
//! `[c_out / CO][c_in][k·k][CO]` (output channels padded with zeros to a multiple of [`CO`]).

use candle_core::Tensor;

use super::winograd::Tile;
use crate::error::Result;

/// Output channels per tile.
pub(super) const CO: usize = 8;
/// Output positions per tile (three 16-float vectors).
pub(super) const PX: usize = 48;

/// The tile function of [`tile_fn`]: see [`tile_avx512`] for its contract.
pub(super) type TileFn = unsafe fn(*const f32, usize, &[usize], usize, *const f32, *mut f32, usize);

/// The vector unit the direct kernel runs on.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Isa {
    /// AVX-512F: one tile in 24 registers.
    Avx512,
    /// AVX2 with FMA: the tile in parts.
    Avx2,
}

/// This CPU's vector unit for the kernel, if it has one.
fn isa() -> Option<Isa> {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            return Some(Isa::Avx512);
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            return Some(Isa::Avx2);
        }
    }
    None
}

/// The kernel's tile function for this CPU, if it has one (AVX-512F, else AVX2 with FMA).
pub(super) fn tile_fn() -> Option<TileFn> {
    #[cfg(target_arch = "x86_64")]
    return Some(match isa()? {
        Isa::Avx512 => tile_avx512 as TileFn,
        Isa::Avx2 => tile_avx2,
    });
    #[cfg(not(target_arch = "x86_64"))]
    None
}

/// Smallest `c_in · c_out` of a 3×3 stride-1 layer for which Winograd beats the direct
/// kernel with AVX2, measured with 2 threads on 40 × 40 … 320 × 320 planes (AMD Zen 3): 64 →
/// 32 and wider layers ran 10–25 % faster on Winograd, 64 → 16 and 32 → 32 ones 1.4–1.7×
/// slower.
const WINOGRAD_MIN_CHANNELS_AVX2: usize = 2048;

/// The same with AVX-512 (Intel Xeon, two 512-bit FMA units, 2 threads). With F(2×2, 3×3)
/// alone, 32 → 64 … 64 → 64 layers took 10–26 % less time on Winograd and 32 → 32 and 64 → 16
/// ones up to 11 % more, so the bound was 2048; with F(4×4, 3×3) on 16 tiles per vector,
/// handing the 32 → 16 and 64 → 16 layers to it too took U²-Netp's frame from 173 to 162 ms
/// (means of four alternated runs; 1024: 163 ms).
const WINOGRAD_MIN_CHANNELS_AVX512: usize = 512;

/// Whether this CPU runs the direct kernel on a `k × k` layer of `c_in → c_out` channels and
/// `stride` and it is the faster choice there; `winograd_fits` says whether Winograd's
/// transforms apply to the layer. Layers of [`CO`] output channels or more, of stride 1 except
/// those wide enough for Winograd ([`WINOGRAD_MIN_CHANNELS_AVX2`],
/// [`WINOGRAD_MIN_CHANNELS_AVX512`]); with AVX-512 also the strided
/// layers of short reductions (`c_in · k²` up to [`super::COLUMN_BUFFER_MAX_K`]: 3 → 64 7×7
/// and 3 → 32, 16 → 32 3×3 stride-2 layers ran 10–25 % faster than on one product over a
/// column buffer). The products run the other strided layers faster: by 5–35 % on AVX2 (3 → 64
/// 7×7 and 32 → 32 … 512 → 512 3×3), by 5–20 % on AVX-512 (64 → 64 … 256 → 256 3×3).
pub(super) fn suits(
    c_in: usize,
    c_out: usize,
    k: usize,
    stride: usize,
    winograd_fits: bool,
) -> bool {
    let Some(isa) = isa() else {
        return false;
    };
    if c_out < CO {
        false
    } else if stride > 1 {
        isa == Isa::Avx512 && c_in * k * k <= super::COLUMN_BUFFER_MAX_K
    } else {
        let min_channels = match isa {
            Isa::Avx512 => WINOGRAD_MIN_CHANNELS_AVX512,
            Isa::Avx2 => WINOGRAD_MIN_CHANNELS_AVX2,
        };
        !(winograd_fits && c_in * c_out >= min_channels)
    }
}

/// Largest `c_in · c_out` of the layers that [`super::ConvKernel::Direct`] hands to
/// Winograd's F(4×4, 3×3) rather than F(2×2, 3×3): at most 4.5 MiB of transformed filters per
/// layer. F(4×4) ran these layers in 0.53–0.76 of F(2×2)'s time (AMD Zen 3, 2 threads, 32 → 64
/// … 512 → 256 channels); with AVX-512 (Intel Xeon, 2 threads, once its input and output
/// passes ran on 16 tiles per vector) U²-Netp took 0.87 and IS-Net 0.86 of their time with
/// F(2×2). The wider layers of ResNets and IS-Net would take 4 times their filters' memory for
/// a smaller share of the work.
const WINOGRAD_4X4_MAX_CHANNELS: usize = 1 << 15;

/// Winograd's tile for a 3×3 layer of `c_in → c_out` channels that the direct kernel leaves
/// to it: F(4×4, 3×3) up to [`WINOGRAD_4X4_MAX_CHANNELS`], F(2×2, 3×3) above.
pub(super) fn winograd_tile(c_in: usize, c_out: usize) -> Tile {
    if c_in * c_out <= WINOGRAD_4X4_MAX_CHANNELS {
        Tile::F4
    } else {
        Tile::F2
    }
}

/// `[c_out, c_in, k, k]` laid out for the kernel: `[⌈c_out / CO⌉][c_in][k·k][CO]`, flattened.
pub(super) fn layout_weight(weight: &Tensor) -> Result<Tensor> {
    let (c_out, c_in, kh, kw) = weight.dims4()?;
    let groups = c_out.div_ceil(CO);
    let padded = if groups * CO > c_out {
        weight.pad_with_zeros(0, 0, groups * CO - c_out)?
    } else {
        weight.clone()
    };
    // [g·CO, c_in, kh, kw] → [g, CO, c_in, kh·kw] → [g, c_in, kh·kw, CO].
    Ok(padded
        .reshape((groups, CO, c_in, kh * kw))?
        .permute((0, 2, 3, 1))?
        .contiguous()?
        .flatten_all()?)
}

/// One tile: `acc[co · acc_rs + p] += Σ_{ci < kc, t} w[(ci · taps + t) · CO + co] ·
/// x[ci · plane + offsets[t] + p]` for `co < CO`, `p < PX`, with `taps = offsets.len()`.
///
/// # Safety
/// The CPU has AVX-512F; `x` is readable at every `ci · plane + offsets[t] + p`, `w` at
/// `kc · taps · CO` floats, and `acc` readable and writable at every `co · acc_rs + p`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn tile_avx512(
    x: *const f32,
    plane: usize,
    offsets: &[usize],
    kc: usize,
    w: *const f32,
    acc: *mut f32,
    acc_rs: usize,
) {
    use std::arch::x86_64::*;
    let mut a = [[_mm512_setzero_ps(); 3]; CO];
    for (co, row) in a.iter_mut().enumerate() {
        for (v, r) in row.iter_mut().enumerate() {
            *r = _mm512_loadu_ps(acc.add(co * acc_rs + 16 * v));
        }
    }
    let mut wp = w;
    for ci in 0..kc {
        let xc = x.add(ci * plane);
        for &o in offsets {
            let p = xc.add(o);
            let x0 = _mm512_loadu_ps(p);
            let x1 = _mm512_loadu_ps(p.add(16));
            let x2 = _mm512_loadu_ps(p.add(32));
            for (co, row) in a.iter_mut().enumerate() {
                let wv = _mm512_set1_ps(*wp.add(co));
                row[0] = _mm512_fmadd_ps(x0, wv, row[0]);
                row[1] = _mm512_fmadd_ps(x1, wv, row[1]);
                row[2] = _mm512_fmadd_ps(x2, wv, row[2]);
            }
            wp = wp.add(CO);
        }
    }
    for (co, row) in a.iter().enumerate() {
        for (v, r) in row.iter().enumerate() {
            _mm512_storeu_ps(acc.add(co * acc_rs + 16 * v), *r);
        }
    }
}

/// [`tile_avx512`] with AVX2 and FMA: the tile in six parts of 4 channels × 16 positions, each
/// through the whole run of input channels and taps (8 accumulators, so that the loads and
/// broadcast weights fit in the other registers without spilling).
///
/// # Safety
/// The CPU has AVX2 and FMA; otherwise as [`tile_avx512`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn tile_avx2(
    x: *const f32,
    plane: usize,
    offsets: &[usize],
    kc: usize,
    w: *const f32,
    acc: *mut f32,
    acc_rs: usize,
) {
    use std::arch::x86_64::*;
    const HALF: usize = CO / 2;
    const SPAN: usize = 16;
    for c_half in 0..2 {
        for p0 in (0..PX).step_by(SPAN) {
            let acc = acc.add(c_half * HALF * acc_rs + p0);
            let x = x.add(p0);
            let mut a = [[_mm256_setzero_ps(); 2]; HALF];
            for (co, row) in a.iter_mut().enumerate() {
                for (v, r) in row.iter_mut().enumerate() {
                    *r = _mm256_loadu_ps(acc.add(co * acc_rs + 8 * v));
                }
            }
            let mut wp = w.add(c_half * HALF);
            for ci in 0..kc {
                let xc = x.add(ci * plane);
                for &o in offsets {
                    let p = xc.add(o);
                    let x0 = _mm256_loadu_ps(p);
                    let x1 = _mm256_loadu_ps(p.add(8));
                    for (co, row) in a.iter_mut().enumerate() {
                        let wv = _mm256_broadcast_ss(&*wp.add(co));
                        row[0] = _mm256_fmadd_ps(x0, wv, row[0]);
                        row[1] = _mm256_fmadd_ps(x1, wv, row[1]);
                    }
                    wp = wp.add(CO);
                }
            }
            for (co, row) in a.iter().enumerate() {
                for (v, r) in row.iter().enumerate() {
                    _mm256_storeu_ps(acc.add(co * acc_rs + 8 * v), *r);
                }
            }
        }
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::super::tests::pseudo;
    use super::*;
    use candle_core::Device;

    /// The tile functions this CPU runs, by name.
    fn tile_fns() -> Vec<(&'static str, TileFn)> {
        let mut fns: Vec<(&'static str, TileFn)> = Vec::new();
        if std::arch::is_x86_feature_detected!("avx512f") {
            fns.push(("avx512", tile_avx512));
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            fns.push(("avx2", tile_avx2));
        }
        fns
    }

    /// One tile against its sum written out term by term in f64, for every tile function the
    /// CPU runs: within 1e-5 of the sum of the terms' magnitudes (f32 rounding of 45 products
    /// and sums, taken in another order).
    #[test]
    fn tile_matches_the_sum_in_f64() {
        let fns = tile_fns();
        if fns.is_empty() {
            eprintln!("skipped: this CPU has neither AVX-512F nor AVX2 with FMA");
        }
        for (name, tile) in fns {
            tile_matches_the_sum_in_f64_with(name, tile);
        }
    }

    fn tile_matches_the_sum_in_f64_with(name: &str, tile: TileFn) {
        let (plane, kc, acc_rs) = (150, 5, PX + 7);
        let offsets = [0, 1, 2, 50, 51, 52, 100, 101, 102];
        let x = pseudo(kc * plane + PX, 1);
        let w = pseudo(kc * offsets.len() * CO, 2);
        let before = pseudo(CO * acc_rs, 3);
        let mut acc = before.clone();
        // SAFETY: the CPU has the function's features (`tile_fns`); the largest read of `x`
        // is `(kc - 1) · plane + 102 + PX - 1` < `kc · plane + PX`, `w` holds `kc · 9 · CO`
        // floats and `acc` `CO · acc_rs`.
        unsafe {
            tile(
                x.as_ptr(),
                plane,
                &offsets,
                kc,
                w.as_ptr(),
                acc.as_mut_ptr(),
                acc_rs,
            )
        };
        for co in 0..CO {
            for p in 0..acc_rs {
                let at = co * acc_rs + p;
                if p >= PX {
                    assert_eq!(
                        acc[at], before[at],
                        "{name}: column {p} past the tile was written"
                    );
                    continue;
                }
                let (mut sum, mut mag) = (before[at] as f64, before[at].abs() as f64);
                for ci in 0..kc {
                    for (t, &o) in offsets.iter().enumerate() {
                        let term = w[(ci * offsets.len() + t) * CO + co] as f64
                            * x[ci * plane + o + p] as f64;
                        sum += term;
                        mag += term.abs();
                    }
                }
                let d = (acc[at] as f64 - sum).abs();
                assert!(
                    d <= 1e-5 * mag,
                    "{name}: channel {co}, position {p}: {} vs {sum}",
                    acc[at]
                );
            }
        }
    }

    /// The laid-out weights hold `w[co, ci, kh, kw]` at `[co / CO][ci][kh · k + kw][co % CO]`,
    /// with zeros for the channels that pad the last tile.
    #[test]
    fn weight_layout_is_tile_major() {
        let (c_out, c_in, k) = (11, 3, 3);
        let w = pseudo(c_out * c_in * k * k, 4);
        let t = Tensor::from_vec(w.clone(), (c_out, c_in, k, k), &Device::Cpu).unwrap();
        let laid = layout_weight(&t).unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(laid.len(), 2 * CO * c_in * k * k);
        for (i, v) in laid.iter().enumerate() {
            let (lane, tap, ci, grp) = (
                i % CO,
                (i / CO) % (k * k),
                (i / (CO * k * k)) % c_in,
                i / (CO * k * k * c_in),
            );
            let co = grp * CO + lane;
            let want = if co < c_out {
                w[((co * c_in + ci) * k * k) + tap]
            } else {
                0.0
            };
            assert_eq!(*v, want, "element {i}");
        }
    }
}
