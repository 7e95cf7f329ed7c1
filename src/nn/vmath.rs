//! Branch-free `f32` exponential and error function that the compiler vectorises when they
//! run over slices, and `multiversion!`, which compiles such loops for the widest vector unit
//! of the CPU at hand (chosen at run time). The polynomials are evaluated with fused
//! multiply-adds (`f32::mul_add`: one rounding, on the vector paths one instruction, which
//! is why they need FMA; elsewhere the C library's `fmaf`), so every path gives the same
//! bits.
//!
//! The polynomials were fitted (weighted least squares on Chebyshev nodes, in `f64`, then
//! rounded to `f32`; `erf`'s rational function by reweighted linearised least squares for the
//! relative error) against a multi-precision reference: `exp` is within 2 ulp of the true value
//! on its whole range, `erf` within 3 · 2⁻²³ of its value (relative) everywhere.

/// Defines `fn NAME(args) BODY` compiled three times, for AVX-512, for AVX2 with FMA and for the
/// baseline (x86-64; once elsewhere), the widest one this CPU has chosen at run time, so
/// that the loops of `BODY` are vectorised with the widest registers. Every function that
/// `BODY` calls and that should be compiled the same way must be `#[inline(always)]`; loops
/// are written as `for` loops (`Iterator::for_each` and its closure are not always inlined).
macro_rules! multiversion {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $body:block) => {
        $crate::nn::vmath::multiversion! {
            $(#[$meta])* $vis fn $name($($arg: $ty),*) -> () $body
        }
    };
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) -> $ret:ty $body:block) => {
        $(#[$meta])*
        $vis fn $name($($arg: $ty),*) -> $ret {
            #[inline(always)]
            fn generic($($arg: $ty),*) -> $ret $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f")]
                unsafe fn avx512($($arg: $ty),*) -> $ret {
                    generic($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2($($arg: $ty),*) -> $ret {
                    generic($($arg),*)
                }
                if std::arch::is_x86_feature_detected!("avx512f") {
                    // SAFETY: the CPU has AVX-512F.
                    return unsafe { avx512($($arg),*) };
                }
                if std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                {
                    // SAFETY: the CPU has AVX2 and FMA.
                    return unsafe { avx2($($arg),*) };
                }
            }
            generic($($arg),*)
        }
    };
}
pub(crate) use multiversion;

/// `p(x) = c[0] + c[1]·x + …` by Horner's rule, one fused multiply-add per step.
#[inline(always)]
fn poly<const N: usize>(c: [f32; N], x: f32) -> f32 {
    let mut p = c[N - 1];
    for k in (0..N - 1).rev() {
        p = p.mul_add(x, c[k]);
    }
    p
}

/// `eˣ` (inputs below −87.3 give about 1.2e-38 instead of smaller values or 0, inputs above
/// 88.3 saturate there; NaN stays NaN).
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 = LN2_HI + LN2_LO, LN2_HI with 9 significant bits so that n · LN2_HI is exact.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // 1.5 · 2²³: adding it rounds to an integer kept in the low mantissa bits.
    const ROUND: f32 = 12_582_912.0;
    const E: [f32; 7] = [
        1.0,
        1.0,
        0.499_999_9,
        0.166_664_11,
        0.041_668_426,
        0.008_375_59,
        0.001_382_824_1,
    ];
    let x = if x < -87.3 { -87.3 } else { x };
    let x = if x > 88.3 { 88.3 } else { x };
    let t = x * LOG2E + ROUND;
    let n = t - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    // 2ⁿ from the integer in t's mantissa.
    let bits = t.to_bits().wrapping_sub(ROUND.to_bits()).wrapping_add(127) << 23;
    poly(E, r) * f32::from_bits(bits)
}

/// The logistic function `1 / (e⁻ˣ + 1)` (candle's formula) through [`exp`].
#[inline(always)]
pub(crate) fn sigmoid(x: f32) -> f32 {
    1.0 / (exp(-x) + 1.0)
}

/// `tanh x`: `x · P(x²)` on |x| ≤ 0.625 (a fit of `tanh(x) / x`), beyond it
/// `(1 − e) / (1 + e)` with `e = e^(−2|x|)` and the sign of `x`; both are computed, so the
/// choice compiles into a blend. Within 3 ulp of the exact function.
#[inline(always)]
pub(crate) fn tanh(x: f32) -> f32 {
    const P: [f32; 6] = [
        1.0,
        -0.333_332_63,
        0.133_311_5,
        -0.053_722_61,
        0.020_595_476,
        -0.005_664_567,
    ];
    let a = x.abs();
    let near = a * poly(P, a * a);
    let e = exp(-2.0 * a);
    let far = (1.0 - e) / (1.0 + e);
    let t = if a <= 0.625 { near } else { far };
    t.copysign(x)
}

/// The error function: `x · P(x²) / Q(x²)` on |x| ≤ 4 (beyond, erf is 1 in `f32`), clamped
/// to [−1, 1]. One division and two short polynomials, no exponential: the cheapest exact-enough
/// form for GELU, where this function is most of the cost.
#[inline(always)]
pub(crate) fn erf(x: f32) -> f32 {
    const P: [f32; 7] = [
        std::f32::consts::FRAC_2_SQRT_PI,
        0.207_120_85,
        0.051_524_29,
        0.003_990_382,
        0.000_147_281_75,
        -1.942_294_6e-6,
        1.911_100_6e-8,
    ];
    const Q: [f32; 5] = [
        1.0,
        0.516_887_3,
        0.117_968_92,
        0.014_957_688,
        0.001_021_065_9,
    ];
    let x = if x < -4.0 { -4.0 } else { x };
    let x = if x > 4.0 { 4.0 } else { x };
    let s = x * x;
    let r = x * poly(P, s) / poly(Q, s);
    let r = if r < -1.0 { -1.0 } else { r };
    if r > 1.0 {
        1.0
    } else {
        r
    }
}

/// GELU with the exact error function, `v · (1 + erf(v / √2)) / 2`, in the order of
/// candle's `gelu_erf`.
#[inline(always)]
pub(crate) fn gelu_erf(v: f32) -> f32 {
    (erf(v * std::f32::consts::FRAC_1_SQRT_2) + 1.0) * 0.5 * v
}

multiversion! {
    /// GELU of every value in place, vectorised.
    pub(crate) fn gelu_erf_slice(values: &mut [f32]) {
        let mut chunks = values.chunks_exact_mut(LANES);
        for c in &mut chunks {
            let c: &mut [f32; LANES] = c.try_into().expect("LANES elements");
            for v in c.iter_mut() {
                *v = gelu_erf(*v);
            }
        }
        for v in chunks.into_remainder() {
            *v = gelu_erf(*v);
        }
    }
}

/// Lanes of the softmax's maximum and sum.
const LANES: usize = 16;

multiversion! {
    /// Softmax of one row in place, vectorised: the maximum and the sum are taken in `LANES`
    /// independent lanes (element i in lane i % LANES), whole groups of `LANES` as fixed-size
    /// arrays so that the lanes stay in registers, then the remainder.
    pub(crate) fn softmax_in_place(row: &mut [f32]) {
        let full = row.len() - row.len() % LANES;
        let (body, tail) = row.split_at_mut(full);
        let mut lanes = [f32::NEG_INFINITY; LANES];
        for c in body.chunks_exact(LANES) {
            let c: &[f32; LANES] = c.try_into().expect("LANES elements");
            for l in 0..LANES {
                lanes[l] = if c[l] > lanes[l] { c[l] } else { lanes[l] };
            }
        }
        for (m, &v) in lanes.iter_mut().zip(tail.iter()) {
            *m = if v > *m { v } else { *m };
        }
        let mut max = f32::NEG_INFINITY;
        for &m in &lanes {
            max = if m > max { m } else { max };
        }
        let mut sums = [0.0f32; LANES];
        for c in body.chunks_exact_mut(LANES) {
            let c: &mut [f32; LANES] = c.try_into().expect("LANES elements");
            for l in 0..LANES {
                c[l] = exp(c[l] - max);
                sums[l] += c[l];
            }
        }
        for (s, v) in sums.iter_mut().zip(tail.iter_mut()) {
            *v = exp(*v - max);
            *s += *v;
        }
        let mut sum = 0.0;
        for s in sums {
            sum += s;
        }
        let inv = 1.0 / sum;
        for v in row.iter_mut() {
            *v *= inv;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Points spread over [lo, hi], both ends included.
    fn grid(lo: f32, hi: f32, n: usize) -> impl Iterator<Item = f32> {
        (0..=n).map(move |i| lo + (hi - lo) * i as f32 / n as f32)
    }

    #[test]
    fn exp_is_within_two_ulp() {
        for x in grid(-87.0, 88.0, 200_000).chain([0.0, -1e-8, 1.0, -0.3466]) {
            let want = (x as f64).exp();
            let got = exp(x) as f64;
            let ulp = f32::EPSILON as f64 * want;
            assert!(
                (got - want).abs() <= 2.0 * ulp,
                "exp({x}) = {got}, want {want}"
            );
        }
        assert!(exp(-200.0) < 1.3e-38 && exp(-200.0) >= 0.0);
        assert!(exp(f32::NAN).is_nan());
    }

    #[test]
    fn sigmoid_and_tanh_are_within_three_ulp() {
        let ulp = |want: f64| f32::EPSILON as f64 * want.abs().max(f32::MIN_POSITIVE as f64);
        let points = grid(-20.0, 20.0, 400_000).chain([0.0, -0.0, 1e-30, -1e-7, 0.625, -0.6251]);
        for x in points {
            let want = 1.0 / ((-x as f64).exp() + 1.0);
            let got = sigmoid(x) as f64;
            assert!(
                (got - want).abs() <= 3.0 * ulp(want),
                "sigmoid({x}) = {got}, want {want}"
            );
            let want = (x as f64).tanh();
            let got = tanh(x) as f64;
            assert!(
                (got - want).abs() <= 3.0 * ulp(want),
                "tanh({x}) = {got}, want {want}"
            );
        }
        assert_eq!(tanh(0.0), 0.0);
        assert_eq!(tanh(100.0), 1.0);
        assert_eq!(tanh(-100.0), -1.0);
        assert_eq!(sigmoid(-200.0).to_bits() >> 23, 0, "a subnormal or zero");
        assert!(tanh(f32::NAN).is_nan() && sigmoid(f32::NAN).is_nan());
    }

    #[test]
    fn erf_matches_the_double_precision_function() {
        for x in grid(-6.0, 6.0, 240_001).chain([1e-30, -1e-7, 0.921875, 4.0]) {
            let want = candle_core::cpu::erf::erf_f64(x as f64);
            let got = erf(x) as f64;
            let bound = 3.0 * f32::EPSILON as f64 * want.abs();
            assert!((got - want).abs() <= bound, "erf({x}) = {got}, want {want}");
        }
        assert_eq!(erf(0.0), 0.0);
        assert_eq!(erf(10.0), 1.0);
        assert_eq!(erf(-10.0), -1.0);
    }

    #[test]
    fn slices_equal_the_scalar_formulas_and_softmax_sums_to_one() {
        let xs: Vec<f32> = grid(-9.0, 9.0, 1001).collect();
        let mut v = xs.clone();
        gelu_erf_slice(&mut v);
        for (g, x) in v.iter().zip(&xs) {
            assert_eq!(g.to_bits(), gelu_erf(*x).to_bits(), "gelu({x})");
        }
        let mut row: Vec<f32> = (0..37).map(|i| (i as f32 * 0.7).sin() * 5.0).collect();
        let want: Vec<f64> = {
            let m = row.iter().fold(f32::MIN, |a, &b| a.max(b)) as f64;
            let e: Vec<f64> = row.iter().map(|&v| (v as f64 - m).exp()).collect();
            let s: f64 = e.iter().sum();
            e.iter().map(|e| e / s).collect()
        };
        softmax_in_place(&mut row);
        for (g, w) in row.iter().zip(&want) {
            assert!((*g as f64 - w).abs() < 1e-6, "{g} vs {w}");
        }
    }
}
