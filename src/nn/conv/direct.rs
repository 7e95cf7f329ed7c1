//! The direct convolution kernel of [`super::conv`] on CPUs with AVX-512: no packing and no
//! column buffer. An output tile of [`CO`] channels × [`PX`] consecutive positions of the
//! padded output lives in 24 vector registers through a whole run of input channels and taps;
//! each step loads three vectors of one input plane at the tap's offset and multiplies them by
//! [`CO`] broadcast weights. Weights are laid out once, at load, as
//! `[c_out / CO][c_in][k·k][CO]` (output channels padded with zeros to a multiple of [`CO`]).

use candle_core::Tensor;

use crate::error::Result;

/// Output channels per tile.
pub(super) const CO: usize = 8;
/// Output positions per tile (three 16-float vectors).
pub(super) const PX: usize = 48;

/// Whether this CPU runs the direct kernel.
pub(super) fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
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
pub(super) unsafe fn tile(
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

/// Unreachable stand-in where the kernel does not exist ([`available`] is false there).
///
/// # Safety
/// Never called.
#[cfg(not(target_arch = "x86_64"))]
pub(super) unsafe fn tile(
    _x: *const f32,
    _plane: usize,
    _offsets: &[usize],
    _kc: usize,
    _w: *const f32,
    _acc: *mut f32,
    _acc_rs: usize,
) {
    unreachable!("the direct convolution kernel needs x86-64 with AVX-512")
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::super::tests::pseudo;
    use super::*;
    use candle_core::Device;

    /// One tile against its sum written out term by term in f64: within 1e-5 of the sum of
    /// the terms' magnitudes (f32 rounding of 45 products and sums, taken in another order).
    #[test]
    fn tile_matches_the_sum_in_f64() {
        if !available() {
            eprintln!("skipped: this CPU has no AVX-512F");
            return;
        }
        let (plane, kc, acc_rs) = (150, 5, PX + 7);
        let offsets = [0, 1, 2, 50, 51, 52, 100, 101, 102];
        let x = pseudo(kc * plane + PX, 1);
        let w = pseudo(kc * offsets.len() * CO, 2);
        let before = pseudo(CO * acc_rs, 3);
        let mut acc = before.clone();
        // SAFETY: AVX-512F checked; the largest read of `x` is `(kc - 1) · plane + 102 + PX - 1`
        // < `kc · plane + PX`, `w` holds `kc · 9 · CO` floats and `acc` `CO · acc_rs`.
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
                    assert_eq!(acc[at], before[at], "column {p} past the tile was written");
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
                    "channel {co}, position {p}: {} vs {sum}",
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
