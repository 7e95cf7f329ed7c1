//! GOT-10k evaluation as the got10k toolkit's `ExperimentGOT10k.report` computes it on a
//! validation-style split.
//!
//! Layout: `<gt>/<seq>/groundtruth.txt`, `<gt>/<seq>/cover.label`, `<gt>/<seq>/meta_info.ini`
//! (`resolution: (W, H)`), and one file per repetition `<pred>/<seq>/<seq>_NNN.txt`. The first
//! frame is dropped; boxes are clipped to the image; IoU = intersection / (union + eps) without
//! +1, clipped to [0, 1]; only frames with cover > 0 count; the IoUs of all frames, sequences
//! and repetitions are pooled: AO = mean IoU, SR_t = fraction of IoUs above t.

use super::{read_boxes, Rect};
use crate::error::{Error, Result};
use crate::eval::input::{list_files, read_number_column, read_text};
use crate::eval::numeric::{fraction, np_mean};
use crate::eval::report::{Report, Table};
use rayon::prelude::*;
use serde::Serialize;
use std::path::Path;

/// Number of points of the success curve (`linspace(0, 1, 101)`).
pub const CURVE_POINTS: usize = 101;

/// Per-sequence results.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Got10kSequence {
    /// Sequence name.
    pub name: String,
    /// Mean IoU over the sequence's frames and repetitions.
    #[serde(rename = "AO")]
    pub ao: f64,
    /// Fraction of IoUs above 0.5.
    #[serde(rename = "SR0.5")]
    pub sr50: f64,
    /// Number of frames after the first.
    pub length_minus_first: usize,
    /// Number of repetition files.
    pub repetitions: usize,
    /// IoUs counted (visible frames × repetitions).
    pub n_ious: usize,
}

/// The GOT-10k report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Got10kReport {
    /// Average overlap.
    #[serde(rename = "AO")]
    pub ao: f64,
    /// Success rate at IoU 0.5.
    #[serde(rename = "SR0.5")]
    pub sr50: f64,
    /// Success rate at IoU 0.75.
    #[serde(rename = "SR0.75")]
    pub sr75: f64,
    /// Success rate at `linspace(0, 1, 101)`.
    pub success_curve_101: Vec<f64>,
    /// Number of pooled IoUs.
    pub n_ious: usize,
    /// Per-sequence results.
    pub sequences: Vec<Got10kSequence>,
}

impl Report for Got10kReport {
    fn tables(&self) -> Vec<Table> {
        let mut global = Table::new("GOT-10k", &["", "AO", "SR0.5", "SR0.75"]);
        global.push_numbers("global", &[self.ao, self.sr50, self.sr75]);
        let mut per = Table::new("per sequence", &["sequence", "AO", "SR0.5"]);
        for s in &self.sequences {
            per.push_numbers(&s.name, &[s.ao, s.sr50]);
        }
        vec![global, per]
    }
}

/// numpy's `maximum` (NaN propagates).
fn np_maximum(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.max(b)
    }
}

/// numpy's `minimum` (NaN propagates).
fn np_minimum(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.min(b)
    }
}

/// numpy's `clip`.
fn np_clip(v: f64, lo: f64, hi: f64) -> f64 {
    np_minimum(np_maximum(v, lo), hi)
}

/// A box clipped to a `width × height` image as the toolkit does.
fn clip_to_image(r: &Rect, width: f64, height: f64) -> Rect {
    let x = np_clip(r[0], 0.0, width);
    let y = np_clip(r[1], 0.0, height);
    [
        x,
        y,
        np_clip(r[2], 0.0, width - x),
        np_clip(r[3], 0.0, height - y),
    ]
}

/// The toolkit's `rect_iou` of two boxes already clipped.
fn rect_iou(a: &Rect, b: &Rect) -> f64 {
    let x1 = np_maximum(a[0], b[0]);
    let y1 = np_maximum(a[1], b[1]);
    let x2 = np_minimum(a[0] + a[2], b[0] + b[2]);
    let y2 = np_minimum(a[1] + a[3], b[1] + b[3]);
    let w = np_maximum(x2 - x1, 0.0);
    let h = np_maximum(y2 - y1, 0.0);
    let inter = w * h;
    let union = a[2] * a[3] + b[2] * b[3] - inter;
    np_clip(inter / (union + f64::EPSILON), 0.0, 1.0)
}

/// Parses `resolution: (W, H)` from a `meta_info.ini`.
fn read_resolution(path: &Path) -> Result<(f64, f64)> {
    let text = read_text(path)?;
    let value = text
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(": "))
        .find(|(k, _)| k.trim() == "resolution")
        .map(|(_, v)| v.trim())
        .ok_or_else(|| Error::parse(path, "no `resolution: (W, H)` line"))?;
    let inner = value
        .strip_prefix('(')
        .and_then(|v| v.strip_suffix(')'))
        .ok_or_else(|| Error::parse(path, format!("resolution {value:?} is not (W, H)")))?;
    let nums: Vec<f64> = inner
        .split(',')
        .map(|s| s.trim().parse::<f64>())
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| Error::parse(path, format!("resolution {value:?}: {e}")))?;
    match nums[..] {
        [w, h] => Ok((w, h)),
        _ => Err(Error::parse(
            path,
            format!("resolution {value:?} is not (W, H)"),
        )),
    }
}

/// Evaluates the sequences `names` of `gt_dir` against the repetition files in `pred_dir`.
pub fn evaluate(gt_dir: &Path, pred_dir: &Path, names: &[String]) -> Result<Got10kReport> {
    let per_seq = names
        .par_iter()
        .map(|n| sequence_ious(gt_dir, pred_dir, n))
        .collect::<Result<Vec<_>>>()?;
    let all: Vec<f64> = per_seq
        .iter()
        .flat_map(|(_, ious)| ious.iter().copied())
        .collect();
    let thresholds: Vec<f64> = (0..CURVE_POINTS)
        .map(|i| {
            if i == CURVE_POINTS - 1 {
                1.0
            } else {
                i as f64 * (1.0 / (CURVE_POINTS - 1) as f64)
            }
        })
        .collect();
    Ok(Got10kReport {
        ao: np_mean(&all),
        sr50: fraction(&all, |v| v > 0.5),
        sr75: fraction(&all, |v| v > 0.75),
        success_curve_101: thresholds
            .iter()
            .map(|&t| fraction(&all, |v| v > t))
            .collect(),
        n_ious: all.len(),
        sequences: per_seq.into_iter().map(|(s, _)| s).collect(),
    })
}

/// The pooled IoUs of one sequence, with its summary.
fn sequence_ious(gt_dir: &Path, pred_dir: &Path, name: &str) -> Result<(Got10kSequence, Vec<f64>)> {
    let dir = gt_dir.join(name);
    let anno = read_boxes(&dir.join("groundtruth.txt"))?;
    let cover_path = dir.join("cover.label");
    let cover = read_number_column(&cover_path)?;
    if cover.len() != anno.len() {
        return Err(Error::invalid(format!(
            "{}: {} cover labels for {} ground-truth boxes",
            cover_path.display(),
            cover.len(),
            anno.len()
        )));
    }
    let (width, height) = read_resolution(&dir.join("meta_info.ini"))?;
    let pred_seq = pred_dir.join(name);
    let prefix = format!("{name}_");
    let records: Vec<_> = if pred_seq.is_dir() {
        list_files(&pred_seq, ".txt")?
            .into_iter()
            .filter(|p| {
                p.file_name()
                    .and_then(|f| f.to_str())
                    .and_then(|f| f.strip_prefix(&prefix))
                    .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
            })
            .collect()
    } else {
        Vec::new()
    };
    if records.is_empty() {
        return Err(Error::invalid(format!(
            "{}: no result files {name}_NNN.txt for sequence {name}",
            pred_seq.display()
        )));
    }
    let mut ious = Vec::new();
    for record in &records {
        let boxes = read_boxes(record)?;
        if boxes.len() != anno.len() {
            return Err(Error::invalid(format!(
                "{}: {} boxes for {} ground-truth frames",
                record.display(),
                boxes.len(),
                anno.len()
            )));
        }
        for i in 1..anno.len() {
            if cover[i] > 0.0 {
                let p = clip_to_image(&boxes[i], width, height);
                let g = clip_to_image(&anno[i], width, height);
                ious.push(rect_iou(&p, &g));
            }
        }
    }
    let summary = Got10kSequence {
        name: name.to_string(),
        ao: np_mean(&ious),
        sr50: fraction(&ious, |v| v > 0.5),
        length_minus_first: anno.len().saturating_sub(1),
        repetitions: records.len(),
        n_ious: ious.len(),
    };
    Ok((summary, ious))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clipping_and_iou_follow_the_toolkit() {
        // a box half outside a 100x100 image is clipped before the IoU
        let p = clip_to_image(&[-10.0, 0.0, 20.0, 10.0], 100.0, 100.0);
        assert_eq!(p, [0.0, 0.0, 20.0, 10.0]);
        let g = [0.0, 0.0, 10.0, 10.0];
        let iou = rect_iou(&p, &g);
        assert!((iou - 100.0 / (200.0 + f64::EPSILON)).abs() < 1e-15);
        assert_eq!(rect_iou(&[0.0, 0.0, 0.0, 10.0], &g), 0.0);
        assert!(rect_iou(&[f64::NAN, 0.0, 1.0, 1.0], &g).is_nan());
    }
}
