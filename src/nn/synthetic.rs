//! Deterministic synthetic weights defined by a counter-based formula (the one the parity
//! fixtures use), so that tests and benchmarks run without downloading real checkpoints.
//!
//! For the tensor named `K` with `n` elements: `base = fnv1a64(K) ^ splitmix64(seed)`,
//! `level_i = splitmix64(base + i) >> 61` and `v_i = (2 level_i − 7) / 7`. BatchNorm
//! parameters (a prefix `P` with `P.running_var`) become `P.weight = 1 + 0.1 v`,
//! `P.bias = 0.05 v`, `P.running_mean = 0.05 v`, `P.running_var = 1 + 0.25 v`,
//! `P.num_batches_tracked = 0`; other `.weight`s with ≥ 2 dims `v · 1.5 / √fan_in`, other
//! `.bias`es `0.05 v`. Values are computed in f64 and rounded once to f32.

use super::checkpoint::{RawTensor, StateDict, TensorDType};
use crate::error::Result;

/// Name, shape and type of one state-dict entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorSpec {
    /// Full key.
    pub name: String,
    /// Shape.
    pub shape: Vec<usize>,
    /// Element type.
    pub dtype: TensorDType,
}

/// 64-bit FNV-1a hash of the UTF-8 bytes of `s`.
pub fn fnv1a64(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The splitmix64 output function applied to `x + golden gamma`.
pub fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The base values `v_i` ∈ {±1/7, ±3/7, ±5/7, ±1} of the tensor `name`.
fn levels(name: &str, n: usize, seed: u64) -> impl Iterator<Item = f64> {
    let base = fnv1a64(name) ^ splitmix64(seed);
    (0..n as u64).map(move |i| {
        let level = splitmix64(base.wrapping_add(i)) >> 61;
        (2.0 * level as f64 - 7.0) / 7.0
    })
}

/// The float values of the tensor `name`; `batch_norm` says whether it belongs to a BatchNorm.
pub fn float_values(name: &str, shape: &[usize], batch_norm: bool, seed: u64) -> Vec<f32> {
    let n: usize = shape.iter().product();
    let suffix = name.rsplit('.').next().unwrap_or("");
    let map: Box<dyn Fn(f64) -> f64> = match (batch_norm, suffix) {
        (true, "weight") => Box::new(|v| 1.0 + 0.1 * v),
        (true, "bias") | (true, "running_mean") => Box::new(|v| 0.05 * v),
        (true, "running_var") => Box::new(|v| 1.0 + 0.25 * v),
        (false, "weight") if shape.len() >= 2 => {
            let fan_in: usize = shape[1..].iter().product();
            let s = (fan_in as f64).sqrt();
            Box::new(move |v| v * 1.5 / s)
        }
        (false, "bias") => Box::new(|v| 0.05 * v),
        _ => Box::new(|v| v),
    };
    levels(name, n, seed).map(|v| map(v) as f32).collect()
}

/// The full state dict for `spec` (BatchNorm prefixes found by their `running_var`).
pub fn state_dict(spec: &[TensorSpec], seed: u64) -> Result<StateDict> {
    let bn_prefixes: std::collections::HashSet<&str> = spec
        .iter()
        .filter_map(|t| t.name.strip_suffix(".running_var"))
        .collect();
    let mut sd = StateDict::new(format!("<synthetic weights, seed {seed}>"));
    for t in spec {
        let bn = t
            .name
            .rsplit_once('.')
            .is_some_and(|(p, _)| bn_prefixes.contains(p));
        let raw = if t.dtype.is_float() {
            RawTensor::from_f32(t.shape.clone(), &float_values(&t.name, &t.shape, bn, seed))?
        } else {
            RawTensor::from_i64(t.shape.clone(), &vec![0; t.shape.iter().product()])?
        };
        sd.insert(t.name.clone(), raw);
    }
    Ok(sd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_values_of_the_fixture_readme() {
        assert_eq!(fnv1a64("key_proj.key_proj.weight"), 0xadd41201d874cf6f);
        assert_eq!(splitmix64(0), 0xe220a8397b1dcdaf);
    }

    #[test]
    fn roles_follow_the_rules() {
        let w = float_values("a.weight", &[2, 3, 1, 1], false, 0);
        assert!(w.iter().all(|v| v.abs() <= 1.5 / 3f32.sqrt() + 1e-6));
        let bn = float_values("bn.running_var", &[8], true, 0);
        assert!(bn.iter().all(|v| (0.75..=1.25).contains(v)));
        let spec = vec![
            TensorSpec {
                name: "bn.running_var".into(),
                shape: vec![4],
                dtype: TensorDType::F32,
            },
            TensorSpec {
                name: "bn.num_batches_tracked".into(),
                shape: vec![],
                dtype: TensorDType::I64,
            },
        ];
        let sd = state_dict(&spec, 0).unwrap();
        assert_eq!(
            sd.get("bn.num_batches_tracked").unwrap().to_i64().unwrap(),
            vec![0]
        );
        assert_eq!(
            sd.get("bn.running_var").unwrap().to_f32().unwrap(),
            float_values("bn.running_var", &[4], true, 0)
        );
    }
}
