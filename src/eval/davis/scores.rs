//! Per-frame J and F summarised as the official `db_statistics` does: mean, recall and decay.

use super::super::numeric::{fraction, np_mean, np_nanmean};
use serde::Serialize;

/// Mean, recall and decay of a per-frame measure.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Statistics {
    /// Mean over frames (NaN ignored).
    pub mean: f64,
    /// Fraction of frames above 0.5.
    pub recall: f64,
    /// Mean of the first quarter minus mean of the last quarter.
    pub decay: f64,
}

impl Statistics {
    /// The official `db_statistics`, including its uint8 bin indices (which wrap past 256
    /// frames) and its overlapping bins.
    pub fn of(values: &[f64]) -> Self {
        let mean = np_nanmean(values);
        let recall = fraction(values, |v| v > 0.5);
        let n = values.len();
        let step = (n as f64 - 1.0) / 4.0;
        let ids: Vec<u8> = (0..5)
            .map(|i| {
                let x = if i == 4 {
                    n as f64
                } else {
                    i as f64 * step + 1.0
                };
                ((x + 1e-10).round_ties_even() - 1.0) as i64 as u8
            })
            .collect();
        let bin = |i: usize| {
            let start = ids[i] as usize;
            let end = (ids[i + 1].wrapping_add(1) as usize).min(n);
            if start < end {
                &values[start..end]
            } else {
                &values[..0]
            }
        };
        let decay = np_nanmean(bin(0)) - np_nanmean(bin(3));
        Statistics {
            mean,
            recall,
            decay,
        }
    }
}

/// Mean, recall and decay of J and F, under the official names.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Scores {
    /// Mean J.
    #[serde(rename = "J-Mean")]
    pub j_mean: f64,
    /// J recall (fraction of frames with J > 0.5).
    #[serde(rename = "J-Recall")]
    pub j_recall: f64,
    /// J decay.
    #[serde(rename = "J-Decay")]
    pub j_decay: f64,
    /// Mean F.
    #[serde(rename = "F-Mean")]
    pub f_mean: f64,
    /// F recall.
    #[serde(rename = "F-Recall")]
    pub f_recall: f64,
    /// F decay.
    #[serde(rename = "F-Decay")]
    pub f_decay: f64,
}

impl Scores {
    /// The scores of per-frame J and F statistics.
    pub fn new(j: Statistics, f: Statistics) -> Self {
        Scores {
            j_mean: j.mean,
            j_recall: j.recall,
            j_decay: j.decay,
            f_mean: f.mean,
            f_recall: f.recall,
            f_decay: f.decay,
        }
    }

    /// The six values with their official names, in order.
    pub fn named(&self) -> [(&'static str, f64); 6] {
        [
            ("J-Mean", self.j_mean),
            ("J-Recall", self.j_recall),
            ("J-Decay", self.j_decay),
            ("F-Mean", self.f_mean),
            ("F-Recall", self.f_recall),
            ("F-Decay", self.f_decay),
        ]
    }

    /// Field-wise means (numpy `mean`) over `all`.
    pub(super) fn mean_of(all: &[Scores]) -> Self {
        let avg = |f: fn(&Scores) -> f64| np_mean(&all.iter().map(f).collect::<Vec<_>>());
        Scores {
            j_mean: avg(|s| s.j_mean),
            j_recall: avg(|s| s.j_recall),
            j_decay: avg(|s| s.j_decay),
            f_mean: avg(|s| s.f_mean),
            f_recall: avg(|s| s.f_recall),
            f_decay: avg(|s| s.f_decay),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Oracle: davis2017 `utils.db_statistics` run with numpy 2.4.6: for [0, 0.1, ..., 0.9] it
    // returns (0.45, 0.4, -0.7) (bin indices [0 2 5 7 9]); for 300 values the uint8 indices wrap
    // ([0 75 150 224 43]) and the decay is NaN.
    #[test]
    fn statistics_follow_db_statistics() {
        let x: Vec<f64> = (0..10).map(|i| i as f64 / 10.0).collect();
        let s = Statistics::of(&x);
        assert!((s.mean - 0.45).abs() < 1e-15);
        assert_eq!(s.recall, 0.4);
        assert!((s.decay + 0.7).abs() < 1e-15, "{}", s.decay);
        let long: Vec<f64> = (0..300).map(|i| i as f64 / 300.0).collect();
        assert!(Statistics::of(&long).decay.is_nan());
    }
}
