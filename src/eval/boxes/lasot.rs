//! LaSOT one-pass evaluation as the MATLAB toolkit (`calc_seq_err_robust.m`,
//! `calc_rect_int.m`, `eval_tracker.m`, `plot_draw_save.m`) computes it.
//!
//! Per sequence: invalid predictions (NaN, w ≤ 0 or h ≤ 0) from the second frame on take the
//! previous (already repaired) box, unless the GT row has a NaN; the first box is replaced by
//! the GT; absent frames are removed; GT rows with any value ≤ 0 get overlap and centre error
//! −1; overlaps use the +1 pixel convention. Success(θ) counts overlaps > θ for MATLAB's
//! `0:0.05:1`, precision(d) counts centre errors ≤ d for d = 0..50 px (normalised: centres
//! divided by the GT size, d = (0..50)/100); counts are divided by the number of GT rows + eps.
//! Curves are averaged over the sequences whose curve sums to more than eps.

use super::{read_boxes, Rect};
use crate::error::{Error, Result};
use crate::eval::input::read_number_column;
use crate::eval::report::{Report, Table};
use rayon::prelude::*;
use serde::Serialize;
use std::path::Path;

/// MATLAB's `eps`.
const EPS: f64 = f64::EPSILON;

/// Index of the reported threshold in the precision curves (20 px, or 0.20 normalised).
const REPORTED_INDEX: usize = 20;

/// MATLAB's colon operator `a:d:b`, built symmetrically from both ends as MATLAB does (so
/// element 14 of `0:0.05:1` is 0.6499999999999999).
pub fn matlab_colon(a: f64, d: f64, b: f64) -> Vec<f64> {
    let n = ((b - a) / d).round() as usize;
    (0..=n)
        .map(|k| {
            if 2 * k <= n {
                a + k as f64 * d
            } else {
                b - (n - k) as f64 * d
            }
        })
        .collect()
}

/// Success thresholds `0:0.05:1`.
pub fn success_thresholds() -> Vec<f64> {
    matlab_colon(0.0, 0.05, 1.0)
}

/// Precision thresholds `0:50` in pixels, or `(0:50)/100` when normalised.
pub fn precision_thresholds(normalised: bool) -> Vec<f64> {
    (0..=50)
        .map(|d| {
            if normalised {
                d as f64 / 100.0
            } else {
                d as f64
            }
        })
        .collect()
}

/// Per-sequence results.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LasotSequence {
    /// Sequence name.
    pub name: String,
    /// GT rows.
    pub n_frames: usize,
    /// Frames flagged absent.
    pub n_absent: usize,
    /// Frames evaluated (not absent).
    pub n_evaluated_frames: usize,
    /// Evaluated frames whose GT row has a value ≤ 0.
    pub n_invalid_gt_rows_evaluated: usize,
    /// Success per overlap threshold.
    pub success_curve: Vec<f64>,
    /// Precision per pixel threshold.
    pub precision_curve: Vec<f64>,
    /// Normalised precision per threshold.
    pub norm_precision_curve: Vec<f64>,
    /// Mean of the success curve.
    #[serde(rename = "success_AUC")]
    pub success_auc: f64,
    /// Precision at 20 px.
    pub precision_20px: f64,
    /// Normalised precision at 0.20.
    #[serde(rename = "norm_precision_0.20")]
    pub norm_precision_020: f64,
}

/// A curve averaged over sequences.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MeanCurve {
    /// Column means over the kept sequences.
    pub curve: Vec<f64>,
    /// Sequences whose curve sums to more than eps.
    pub kept: Vec<String>,
    /// The others.
    pub dropped: Vec<String>,
}

/// The LaSOT report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LasotReport {
    /// Mean of the mean success curve.
    #[serde(rename = "success_AUC")]
    pub success_auc: f64,
    /// Mean precision curve at 20 px.
    pub precision_20px: f64,
    /// Mean normalised precision curve at 0.20.
    #[serde(rename = "norm_precision_0.20")]
    pub norm_precision_020: f64,
    /// Mean of the mean precision curve.
    pub precision_curve_mean: f64,
    /// Mean of the mean normalised precision curve.
    pub norm_precision_curve_mean: f64,
    /// Success thresholds.
    pub success_thresholds: Vec<f64>,
    /// Mean success curve.
    pub success: MeanCurve,
    /// Mean precision curve.
    pub precision: MeanCurve,
    /// Mean normalised precision curve.
    pub norm_precision: MeanCurve,
    /// Per-sequence results.
    pub sequences: Vec<LasotSequence>,
}

impl Report for LasotReport {
    fn tables(&self) -> Vec<Table> {
        let headers = ["", "AUC", "P@20px", "Pnorm@0.20"];
        let mut global = Table::new("LaSOT", &headers);
        global.push_numbers(
            "global",
            &[
                self.success_auc,
                self.precision_20px,
                self.norm_precision_020,
            ],
        );
        let mut per = Table::new("per sequence", &headers);
        for s in &self.sequences {
            per.push_numbers(
                &s.name,
                &[s.success_auc, s.precision_20px, s.norm_precision_020],
            );
        }
        vec![global, per]
    }
}

/// Evaluates the sequences `names`: `<gt_dir>/<name>.txt`, `<absent_dir>/<name>.txt` and
/// `<pred_dir>/<name>.txt`.
pub fn evaluate(
    gt_dir: &Path,
    absent_dir: &Path,
    pred_dir: &Path,
    names: &[String],
) -> Result<LasotReport> {
    let sequences = names
        .par_iter()
        .map(|n| {
            let file = format!("{n}.txt");
            evaluate_sequence(
                n,
                &gt_dir.join(&file),
                &absent_dir.join(&file),
                &pred_dir.join(&file),
            )
        })
        .collect::<Result<Vec<_>>>()?;
    let success = mean_curve(&sequences, |s| &s.success_curve);
    let precision = mean_curve(&sequences, |s| &s.precision_curve);
    let norm_precision = mean_curve(&sequences, |s| &s.norm_precision_curve);
    let at = |c: &MeanCurve| c.curve.get(REPORTED_INDEX).copied().unwrap_or(f64::NAN);
    Ok(LasotReport {
        success_auc: mean(&success.curve),
        precision_20px: at(&precision),
        norm_precision_020: at(&norm_precision),
        precision_curve_mean: mean(&precision.curve),
        norm_precision_curve_mean: mean(&norm_precision.curve),
        success_thresholds: success_thresholds(),
        success,
        precision,
        norm_precision,
        sequences,
    })
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

/// Column means over the sequences whose curve sums to more than eps (`plot_draw_save.m`).
fn mean_curve(seqs: &[LasotSequence], curve: fn(&LasotSequence) -> &Vec<f64>) -> MeanCurve {
    let (kept, dropped): (Vec<&LasotSequence>, Vec<&LasotSequence>) = seqs
        .iter()
        .partition(|s| curve(s).iter().sum::<f64>() > EPS);
    let len = seqs.first().map_or(0, |s| curve(s).len());
    let mean = (0..len)
        .map(|i| kept.iter().map(|s| curve(s)[i]).sum::<f64>() / kept.len() as f64)
        .collect();
    MeanCurve {
        curve: mean,
        kept: kept.iter().map(|s| s.name.clone()).collect(),
        dropped: dropped.iter().map(|s| s.name.clone()).collect(),
    }
}

/// Overlap of two boxes with the +1 pixel convention (`calc_rect_int.m`); `min`/`max` ignore
/// NaN like MATLAB's.
fn overlap(a: &Rect, b: &Rect) -> f64 {
    let (ra, rb) = (a[0] + a[2] - 1.0, b[0] + b[2] - 1.0);
    let (ta, tb) = (a[1] + a[3] - 1.0, b[1] + b[3] - 1.0);
    let iw = 0f64.max(ra.min(rb) - a[0].max(b[0]) + 1.0);
    let ih = 0f64.max(ta.min(tb) - a[1].max(b[1]) + 1.0);
    let inter = iw * ih;
    inter / (a[2] * a[3] + b[2] * b[3] - inter)
}

fn evaluate_sequence(
    name: &str,
    gt_path: &Path,
    absent_path: &Path,
    pred_path: &Path,
) -> Result<LasotSequence> {
    let anno = read_boxes(gt_path)?;
    let absent = read_number_column(absent_path)?;
    let mut res = read_boxes(pred_path)?;
    let n = anno.len();
    if absent.len() != n {
        return Err(Error::invalid(format!(
            "{}: {} absent flags for {n} ground-truth boxes",
            absent_path.display(),
            absent.len()
        )));
    }
    if res.len() < n {
        return Err(Error::invalid(format!(
            "{}: {} predicted boxes for {n} ground-truth frames",
            pred_path.display(),
            res.len()
        )));
    }
    res.truncate(n);
    for i in 1..n {
        let r = res[i];
        let invalid = r.iter().any(|v| v.is_nan()) || r[2] <= 0.0 || r[3] <= 0.0;
        if invalid && anno[i].iter().all(|v| !v.is_nan()) {
            res[i] = res[i - 1];
        }
    }
    if n > 0 {
        res[0] = anno[0];
    }
    let kept: Vec<usize> = (0..n).filter(|&i| absent[i] != 1.0).collect();
    let center = |b: &Rect| [b[0] + (b[2] - 1.0) / 2.0, b[1] + (b[3] - 1.0) / 2.0];
    let mut overlaps = Vec::with_capacity(kept.len());
    let mut errors = Vec::with_capacity(kept.len());
    let mut norm_errors = Vec::with_capacity(kept.len());
    let mut invalid_gt = 0;
    for &i in &kept {
        let (g, p) = (&anno[i], &res[i]);
        let (cg, cp) = (center(g), center(p));
        let dist =
            |a: [f64; 2], b: [f64; 2]| ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2)).sqrt();
        if g.iter().all(|&v| v > 0.0) {
            overlaps.push(overlap(p, g));
            errors.push(dist(cp, cg));
            let norm = |c: [f64; 2]| [c[0] / g[2], c[1] / g[3]];
            norm_errors.push(dist(norm(cp), norm(cg)));
        } else {
            invalid_gt += 1;
            overlaps.push(-1.0);
            errors.push(-1.0);
            norm_errors.push(-1.0);
        }
    }
    let denom = n as f64 + EPS;
    let rate = |values: &[f64], hit: &dyn Fn(f64) -> bool| {
        values.iter().filter(|&&v| hit(v)).count() as f64 / denom
    };
    let success_curve: Vec<f64> = success_thresholds()
        .iter()
        .map(|&t| rate(&overlaps, &|v| v > t))
        .collect();
    let precision_curve: Vec<f64> = precision_thresholds(false)
        .iter()
        .map(|&t| rate(&errors, &|v| v <= t))
        .collect();
    let norm_precision_curve: Vec<f64> = precision_thresholds(true)
        .iter()
        .map(|&t| rate(&norm_errors, &|v| v <= t))
        .collect();
    Ok(LasotSequence {
        name: name.to_string(),
        n_frames: n,
        n_absent: n - kept.len(),
        n_evaluated_frames: kept.len(),
        n_invalid_gt_rows_evaluated: invalid_gt,
        success_auc: mean(&success_curve),
        precision_20px: precision_curve[REPORTED_INDEX],
        norm_precision_020: norm_precision_curve[REPORTED_INDEX],
        success_curve,
        precision_curve,
        norm_precision_curve,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // Oracle: MATLAB's `0:0.05:1` as listed in the LaSOT fixture README (symmetric colon).
    #[test]
    fn colon_is_symmetric_like_matlab() {
        let t = success_thresholds();
        assert_eq!(t.len(), 21);
        assert_eq!(t[13], 0.6499999999999999);
        assert_eq!(t[6], 0.30000000000000004);
        assert_eq!(t[11], 0.55);
        assert_eq!(t[20], 1.0);
        // an IoU of exactly 13/20 passes the 0.65 threshold
        assert!(13.0 / 20.0 > t[13]);
    }

    #[test]
    fn overlap_uses_plus_one() {
        let a = [1.0, 1.0, 10.0, 10.0];
        assert_eq!(overlap(&a, &a), 1.0);
        let b = [6.0, 1.0, 10.0, 10.0];
        assert_eq!(overlap(&a, &b), 50.0 / 150.0);
    }
}
