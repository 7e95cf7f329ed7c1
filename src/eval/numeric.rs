//! numpy's summation and means, reproduced bit for bit so that averages equal the official tools'.

/// Block size below which numpy sums with eight interleaved accumulators.
const PW_BLOCKSIZE: usize = 128;

/// `np.sum` of a one-dimensional float64 array: numpy's pairwise summation.
pub fn np_sum(a: &[f64]) -> f64 {
    let n = a.len();
    if n < 8 {
        let mut res = 0.0;
        for &x in a {
            res += x;
        }
        res
    } else if n <= PW_BLOCKSIZE {
        let mut r = [0.0f64; 8];
        r.copy_from_slice(&a[..8]);
        let mut i = 8;
        while i < n - n % 8 {
            for (k, acc) in r.iter_mut().enumerate() {
                *acc += a[i + k];
            }
            i += 8;
        }
        let mut res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        for &x in &a[i..] {
            res += x;
        }
        res
    } else {
        let mut n2 = n / 2;
        n2 -= n2 % 8;
        np_sum(&a[..n2]) + np_sum(&a[n2..])
    }
}

/// `np.mean` of a one-dimensional array (NaN when empty).
pub fn np_mean(a: &[f64]) -> f64 {
    np_sum(a) / a.len() as f64
}

/// `np.nanmean` of a one-dimensional array: NaNs are left out (NaN when nothing is left).
pub fn np_nanmean(a: &[f64]) -> f64 {
    let zeroed: Vec<f64> = a
        .iter()
        .map(|&x| if x.is_nan() { 0.0 } else { x })
        .collect();
    let count = a.iter().filter(|x| !x.is_nan()).count();
    np_sum(&zeroed) / count as f64
}

/// The fraction of `values` for which `pred` holds (`np.mean(pred(values))`; NaN when empty).
pub fn fraction(values: &[f64], pred: impl Fn(f64) -> bool) -> f64 {
    values.iter().filter(|&&x| pred(x)).count() as f64 / values.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    // Oracle: numpy 2.4.6. `np.sum(np.array([1e16] + [1.0] * 8))` is 1.0000000000000008e16
    // (pairwise; a sequential sum would stay at 1e16), and `np.mean` of that array (also along
    // the last axis of a (1, 1, 9) array) is 1111111111111112.0.
    #[test]
    fn pairwise_sum_follows_numpy() {
        let mut a = vec![1e16];
        a.extend([1.0; 8]);
        assert_eq!(np_sum(&a), 1.000_000_000_000_000_8e16);
        assert_eq!(np_mean(&a), 1_111_111_111_111_112.0);
    }

    #[test]
    fn nanmean_skips_nan() {
        assert_eq!(np_nanmean(&[1.0, f64::NAN, 3.0]), 2.0);
        assert!(np_nanmean(&[]).is_nan());
        assert_eq!(fraction(&[0.2, 0.6, 0.9, 0.5], |x| x > 0.5), 0.5);
    }
}
