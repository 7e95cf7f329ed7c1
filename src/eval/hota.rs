//! The HOTA family of tracking metrics (Luiten et al. 2021) as TrackEval's `HOTA` class computes
//! it: HOTA, DetA, AssA, DetRe, DetPr, AssRe, AssPr, LocA and the open-world OWTA =
//! sqrt(DetRe · AssA), each for the 19 localisation thresholds alpha = 0.05, 0.10, ..., 0.95.
//!
//! Per sequence, a global alignment score between every GT and tracker id is accumulated first;
//! then each timestep's detections are matched by maximising alignment × similarity (scipy's
//! assignment and tie-breaking), and a match counts at alpha when its similarity reaches alpha.

use super::lap::{linear_sum_assignment, Matrix};
use super::numeric::{np_mean, np_sum};
use crate::error::Result;
use serde::Serialize;

/// Number of alpha thresholds.
pub const NUM_ALPHAS: usize = 19;

/// The thresholds as numpy's `arange(0.05, 0.99, 0.05)` yields them (`0.05 + i · 0.05`).
pub fn alphas() -> [f64; NUM_ALPHAS] {
    std::array::from_fn(|i| 0.05 + i as f64 * 0.05)
}

/// One timestep of a sequence: ids are contiguous per sequence (0..number of ids).
#[derive(Debug, Clone)]
pub struct Timestep {
    /// GT id of each GT detection.
    pub gt_ids: Vec<usize>,
    /// Tracker id of each tracker detection.
    pub tracker_ids: Vec<usize>,
    /// Similarity of every (GT detection, tracker detection) pair.
    pub similarity: Matrix,
}

/// A sequence ready for evaluation.
#[derive(Debug, Clone)]
pub struct Sequence {
    /// The timesteps in order.
    pub timesteps: Vec<Timestep>,
    /// Number of distinct GT ids.
    pub num_gt_ids: usize,
    /// Number of distinct tracker ids.
    pub num_tracker_ids: usize,
}

impl Sequence {
    /// Number of GT detections.
    pub fn num_gt_dets(&self) -> usize {
        self.timesteps.iter().map(|t| t.gt_ids.len()).sum()
    }

    /// Number of tracker detections.
    pub fn num_tracker_dets(&self) -> usize {
        self.timesteps.iter().map(|t| t.tracker_ids.len()).sum()
    }
}

/// Values per alpha.
pub type PerAlpha = [f64; NUM_ALPHAS];

/// HOTA results (per alpha).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HotaResult {
    /// True positive detections.
    #[serde(rename = "HOTA_TP")]
    pub tp: [u64; NUM_ALPHAS],
    /// Missed GT detections.
    #[serde(rename = "HOTA_FN")]
    pub fn_: [u64; NUM_ALPHAS],
    /// Unmatched tracker detections.
    #[serde(rename = "HOTA_FP")]
    pub fp: [u64; NUM_ALPHAS],
    /// sqrt(DetA · AssA).
    #[serde(rename = "HOTA")]
    pub hota: PerAlpha,
    /// Detection accuracy TP / (TP + FN + FP).
    #[serde(rename = "DetA")]
    pub det_a: PerAlpha,
    /// Association accuracy.
    #[serde(rename = "AssA")]
    pub ass_a: PerAlpha,
    /// Detection recall TP / (TP + FN).
    #[serde(rename = "DetRe")]
    pub det_re: PerAlpha,
    /// Detection precision TP / (TP + FP).
    #[serde(rename = "DetPr")]
    pub det_pr: PerAlpha,
    /// Association recall.
    #[serde(rename = "AssRe")]
    pub ass_re: PerAlpha,
    /// Association precision.
    #[serde(rename = "AssPr")]
    pub ass_pr: PerAlpha,
    /// Localisation accuracy (mean similarity of matches).
    #[serde(rename = "LocA")]
    pub loc_a: PerAlpha,
    /// Open-world tracking accuracy sqrt(DetRe · AssA).
    #[serde(rename = "OWTA")]
    pub owta: PerAlpha,
}

impl HotaResult {
    fn zeros() -> Self {
        HotaResult {
            tp: [0; NUM_ALPHAS],
            fn_: [0; NUM_ALPHAS],
            fp: [0; NUM_ALPHAS],
            hota: [0.0; NUM_ALPHAS],
            det_a: [0.0; NUM_ALPHAS],
            ass_a: [0.0; NUM_ALPHAS],
            det_re: [0.0; NUM_ALPHAS],
            det_pr: [0.0; NUM_ALPHAS],
            ass_re: [0.0; NUM_ALPHAS],
            ass_pr: [0.0; NUM_ALPHAS],
            loc_a: [0.0; NUM_ALPHAS],
            owta: [0.0; NUM_ALPHAS],
        }
    }

    /// DetRe, DetPr, DetA, HOTA and OWTA from the counts and AssA.
    fn compute_final_fields(&mut self) {
        for a in 0..NUM_ALPHAS {
            let (tp, fn_, fp) = (self.tp[a] as f64, self.fn_[a] as f64, self.fp[a] as f64);
            self.det_re[a] = tp / (tp + fn_).max(1.0);
            self.det_pr[a] = tp / (tp + fp).max(1.0);
            self.det_a[a] = tp / (tp + fn_ + fp).max(1.0);
            self.hota[a] = (self.det_a[a] * self.ass_a[a]).sqrt();
            self.owta[a] = (self.det_re[a] * self.ass_a[a]).sqrt();
        }
    }
}

/// The reported numbers: means over the alphas (numpy `mean`) of the per-alpha values.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct HotaSummary {
    /// Open-world tracking accuracy.
    #[serde(rename = "OWTA")]
    pub owta: f64,
    /// Detection recall.
    #[serde(rename = "DetRe")]
    pub det_re: f64,
    /// Association accuracy.
    #[serde(rename = "AssA")]
    pub ass_a: f64,
    /// HOTA.
    #[serde(rename = "HOTA")]
    pub hota: f64,
    /// Detection accuracy.
    #[serde(rename = "DetA")]
    pub det_a: f64,
    /// Detection precision.
    #[serde(rename = "DetPr")]
    pub det_pr: f64,
    /// Association recall.
    #[serde(rename = "AssRe")]
    pub ass_re: f64,
    /// Association precision.
    #[serde(rename = "AssPr")]
    pub ass_pr: f64,
    /// Localisation accuracy.
    #[serde(rename = "LocA")]
    pub loc_a: f64,
}

impl HotaSummary {
    /// The values with their official names: OWTA, DetRe, AssA, HOTA, DetA, then DetPr,
    /// AssRe, AssPr, LocA.
    pub fn named(&self) -> [(&'static str, f64); 9] {
        [
            ("OWTA", self.owta),
            ("DetRe", self.det_re),
            ("AssA", self.ass_a),
            ("HOTA", self.hota),
            ("DetA", self.det_a),
            ("DetPr", self.det_pr),
            ("AssRe", self.ass_re),
            ("AssPr", self.ass_pr),
            ("LocA", self.loc_a),
        ]
    }

    /// The means over alpha of `r`.
    pub fn of(r: &HotaResult) -> Self {
        HotaSummary {
            owta: np_mean(&r.owta),
            det_re: np_mean(&r.det_re),
            ass_a: np_mean(&r.ass_a),
            hota: np_mean(&r.hota),
            det_a: np_mean(&r.det_a),
            det_pr: np_mean(&r.det_pr),
            ass_re: np_mean(&r.ass_re),
            ass_pr: np_mean(&r.ass_pr),
            loc_a: np_mean(&r.loc_a),
        }
    }
}

/// Evaluates one sequence (`HOTA.eval_sequence`).
pub fn eval_sequence(seq: &Sequence) -> Result<HotaResult> {
    let mut res = HotaResult::zeros();
    let (n_gt_dets, n_tr_dets) = (seq.num_gt_dets(), seq.num_tracker_dets());
    if n_tr_dets == 0 {
        res.fn_ = [n_gt_dets as u64; NUM_ALPHAS];
        res.loc_a = [1.0; NUM_ALPHAS];
        return Ok(res);
    }
    if n_gt_dets == 0 {
        res.fp = [n_tr_dets as u64; NUM_ALPHAS];
        res.loc_a = [1.0; NUM_ALPHAS];
        return Ok(res);
    }
    let (ng, nt) = (seq.num_gt_ids, seq.num_tracker_ids);
    let mut potential = Matrix::zeros(ng, nt);
    let mut gt_count = vec![0.0f64; ng];
    let mut tr_count = vec![0.0f64; nt];
    for ts in &seq.timesteps {
        let sim = &ts.similarity;
        let col_sums: Vec<f64> = (0..sim.cols())
            .map(|c| (0..sim.rows()).map(|r| sim.get(r, c)).sum())
            .collect();
        let row_sums: Vec<f64> = (0..sim.rows()).map(|r| sim.row(r).iter().sum()).collect();
        for (i, &g) in ts.gt_ids.iter().enumerate() {
            for (j, &t) in ts.tracker_ids.iter().enumerate() {
                let denom = col_sums[j] + row_sums[i] - sim.get(i, j);
                if denom > f64::EPSILON {
                    let p = potential.get(g, t);
                    potential.set(g, t, p + sim.get(i, j) / denom);
                }
            }
        }
        for &g in &ts.gt_ids {
            gt_count[g] += 1.0;
        }
        for &t in &ts.tracker_ids {
            tr_count[t] += 1.0;
        }
    }
    let alignment = Matrix::from_fn(ng, nt, |g, t| {
        potential.get(g, t) / (gt_count[g] + tr_count[t] - potential.get(g, t))
    });
    let alpha = alphas();
    let mut matches = vec![Matrix::zeros(ng, nt); NUM_ALPHAS];
    for ts in &seq.timesteps {
        let (n_g, n_t) = (ts.gt_ids.len(), ts.tracker_ids.len());
        if n_g == 0 {
            res.fp.iter_mut().for_each(|v| *v += n_t as u64);
            continue;
        }
        if n_t == 0 {
            res.fn_.iter_mut().for_each(|v| *v += n_g as u64);
            continue;
        }
        let sim = &ts.similarity;
        let cost = Matrix::from_fn(n_g, n_t, |i, j| {
            -(alignment.get(ts.gt_ids[i], ts.tracker_ids[j]) * sim.get(i, j))
        });
        let pairs = linear_sum_assignment(&cost, false)?;
        for a in 0..NUM_ALPHAS {
            let matched: Vec<&(usize, usize)> = pairs
                .iter()
                .filter(|&&(i, j)| sim.get(i, j) >= alpha[a] - f64::EPSILON)
                .collect();
            let n = matched.len() as u64;
            res.tp[a] += n;
            res.fn_[a] += n_g as u64 - n;
            res.fp[a] += n_t as u64 - n;
            if n > 0 {
                let mut loc = 0.0;
                for &&(i, j) in &matched {
                    loc += sim.get(i, j);
                }
                res.loc_a[a] += loc;
                for &&(i, j) in &matched {
                    let (g, t) = (ts.gt_ids[i], ts.tracker_ids[j]);
                    let m = &mut matches[a];
                    m.set(g, t, m.get(g, t) + 1.0);
                }
            }
        }
    }
    for (a, mc) in matches.iter().enumerate() {
        let tp = (res.tp[a] as f64).max(1.0);
        let weighted = |f: &dyn Fn(usize, usize, f64) -> f64| {
            let terms: Vec<f64> = (0..ng)
                .flat_map(|g| (0..nt).map(move |t| (g, t)))
                .map(|(g, t)| {
                    let m = mc.get(g, t);
                    m * f(g, t, m)
                })
                .collect();
            np_sum(&terms) / tp
        };
        res.ass_a[a] = weighted(&|g, t, m| m / (gt_count[g] + tr_count[t] - m).max(1.0));
        res.ass_re[a] = weighted(&|g, _, m| m / gt_count[g].max(1.0));
        res.ass_pr[a] = weighted(&|_, t, m| m / tr_count[t].max(1.0));
    }
    for a in 0..NUM_ALPHAS {
        res.loc_a[a] = res.loc_a[a].max(1e-10) / (res.tp[a] as f64).max(1e-10);
    }
    res.compute_final_fields();
    Ok(res)
}

/// Combines sequence results (`HOTA.combine_sequences`): counts are summed, association
/// scores and LocA are TP-weighted averages.
pub fn combine_sequences(results: &[HotaResult]) -> HotaResult {
    let mut res = HotaResult::zeros();
    for r in results {
        for a in 0..NUM_ALPHAS {
            res.tp[a] += r.tp[a];
            res.fn_[a] += r.fn_[a];
            res.fp[a] += r.fp[a];
        }
    }
    for a in 0..NUM_ALPHAS {
        let tp = res.tp[a] as f64;
        let weighted = |f: fn(&HotaResult) -> &PerAlpha| {
            let mut s = 0.0;
            for r in results {
                s += f(r)[a] * r.tp[a] as f64;
            }
            s
        };
        res.ass_re[a] = weighted(|r| &r.ass_re) / tp.max(1.0);
        res.ass_pr[a] = weighted(|r| &r.ass_pr) / tp.max(1.0);
        res.ass_a[a] = weighted(|r| &r.ass_a) / tp.max(1.0);
        res.loc_a[a] = weighted(|r| &r.loc_a).max(1e-10) / tp.max(1e-10);
    }
    res.compute_final_fields();
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    // Oracle: `numpy.arange(0.05, 0.99, 0.05).tolist()` (numpy 2.4.6).
    #[test]
    fn alphas_equal_numpy_arange() {
        let want = [
            0.05,
            0.1,
            0.15000000000000002,
            0.2,
            0.25,
            0.3,
            0.35000000000000003,
            0.4,
            0.45,
            0.5,
            0.55,
            0.6000000000000001,
            0.6500000000000001,
            0.7000000000000001,
            0.7500000000000001,
            0.8,
            0.8500000000000001,
            0.9000000000000001,
            0.9500000000000001,
        ];
        assert_eq!(alphas(), want);
    }

    #[test]
    fn perfect_single_track() {
        let ts = |_| Timestep {
            gt_ids: vec![0],
            tracker_ids: vec![0],
            similarity: Matrix::from_fn(1, 1, |_, _| 1.0),
        };
        let seq = Sequence {
            timesteps: (0..3).map(ts).collect(),
            num_gt_ids: 1,
            num_tracker_ids: 1,
        };
        let r = eval_sequence(&seq).unwrap();
        assert_eq!(r.tp, [3; NUM_ALPHAS]);
        assert_eq!(r.hota, [1.0; NUM_ALPHAS]);
        let c = combine_sequences(&[r.clone(), r]);
        assert_eq!(c.tp, [6; NUM_ALPHAS]);
        assert_eq!(c.owta, [1.0; NUM_ALPHAS]);
        assert_eq!(c.loc_a, [1.0; NUM_ALPHAS]);
    }
}
