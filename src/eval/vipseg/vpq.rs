//! VPQ^k of one video: tubes of a window of frames, their matching at IoU > 0.5 (void removed
//! from the union), false positives that lie mostly on void or crowd ignored, and the
//! per-category averages.

use super::{CategoryStats, GtSegment, PredSegment, Split, VpqWindow};
use crate::error::{Error, Result};
use std::collections::{BTreeMap, HashMap, HashSet};

/// One frame as the VPQ computation needs it.
pub(super) struct FrameData {
    /// GT segments merged by id within the frame (category of the first listing, areas summed).
    pub(super) gt: Vec<GtSegment>,
    /// Predicted segments with their pixel counts as area.
    pub(super) pred: Vec<(PredSegment, u64)>,
    /// Pixel counts of (GT id, predicted id) pairs.
    pub(super) pairs: HashMap<(u32, u32), u64>,
}

/// Accumulated statistics of one category.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct PqStat {
    pub(super) iou: f64,
    pub(super) tp: u64,
    pub(super) fp: u64,
    pub(super) fn_: u64,
}

pub(super) type PqStats = HashMap<u32, PqStat>;

/// `PQStat.pq_average` for all, thing and stuff categories, in GT category order.
pub(super) fn average(
    stats: &PqStats,
    order: &[u32],
    categories: &HashMap<u32, bool>,
    k: usize,
) -> VpqWindow {
    let mut per_category = BTreeMap::new();
    let mut sums = [[0.0f64; 3]; 3]; // [all, things, stuff] x [pq, sq, rq]
    let mut n = [0usize; 3];
    for &cat in order {
        let isthing = categories[&cat];
        let s = stats.get(&cat).copied().unwrap_or_default();
        if s.tp + s.fp + s.fn_ == 0 {
            continue;
        }
        let denom = s.tp as f64 + 0.5 * s.fp as f64 + 0.5 * s.fn_ as f64;
        let pq = s.iou / denom;
        let sq = if s.tp != 0 { s.iou / s.tp as f64 } else { 0.0 };
        let rq = s.tp as f64 / denom;
        let split = if isthing { 1 } else { 2 };
        for i in [0, split] {
            n[i] += 1;
            sums[i][0] += pq;
            sums[i][1] += sq;
            sums[i][2] += rq;
        }
        per_category.insert(
            cat,
            CategoryStats {
                isthing,
                pq,
                sq,
                rq,
                iou_sum: s.iou,
                tp: s.tp,
                fp: s.fp,
                fn_: s.fn_,
            },
        );
    }
    let mean = |m: usize| Split {
        all: 100.0 * sums[0][m] / n[0] as f64,
        things: 100.0 * sums[1][m] / n[1] as f64,
        stuff: 100.0 * sums[2][m] / n[2] as f64,
    };
    VpqWindow {
        k: if k == 999 {
            "inf".to_string()
        } else {
            k.to_string()
        },
        window_nframes: k,
        vpq: mean(0),
        sq: mean(1),
        rq: mean(2),
        n_categories: Split {
            all: n[0],
            things: n[1],
            stuff: n[2],
        },
        per_category,
    }
}

/// A tube: category and crowd flag of its first occurrence in the window, summed area.
#[derive(Debug, Clone, Copy)]
struct Tube {
    category: u32,
    crowd: bool,
    area: u64,
}

/// Tubes keyed by id, in order of first occurrence.
#[derive(Default)]
struct Tubes {
    index: HashMap<u32, usize>,
    items: Vec<(u32, Tube)>,
}

impl Tubes {
    fn add(&mut self, id: u32, tube: Tube) {
        match self.index.get(&id) {
            Some(&i) => self.items[i].1.area += tube.area,
            None => {
                self.index.insert(id, self.items.len());
                self.items.push((id, tube));
            }
        }
    }

    fn get(&self, id: u32) -> Option<&Tube> {
        self.index.get(&id).map(|&i| &self.items[i].1)
    }
}

/// VPQ statistics of one video for window size `k`.
pub(super) fn vpq_statistics(frames: &[FrameData], k: usize) -> Result<PqStats> {
    let t = frames.len();
    let windows = if t >= k { t - k + 1 } else { 1 };
    let mut stats: PqStats = HashMap::new();
    for start in 0..windows {
        let window = &frames[start..(start + k).min(t)];
        let mut gt = Tubes::default();
        let mut pred = Tubes::default();
        let mut pairs: HashMap<(u32, u32), u64> = HashMap::new();
        for f in window {
            for s in &f.gt {
                gt.add(
                    s.id,
                    Tube {
                        category: s.category_id,
                        crowd: s.iscrowd,
                        area: s.area,
                    },
                );
            }
            for (s, area) in &f.pred {
                pred.add(
                    s.id,
                    Tube {
                        category: s.category_id,
                        crowd: false,
                        area: *area,
                    },
                );
            }
            for (&key, &c) in &f.pairs {
                *pairs.entry(key).or_insert(0) += c;
            }
        }
        let mut sorted: Vec<((u32, u32), u64)> = pairs.iter().map(|(&k, &c)| (k, c)).collect();
        sorted.sort_unstable();
        let void_of = |p: u32| pairs.get(&(0, p)).copied().unwrap_or(0);
        let mut gt_matched = HashSet::new();
        let mut pred_matched = HashSet::new();
        for ((g, p), inter) in sorted {
            let (Some(gt_tube), Some(pred_tube)) = (gt.get(g), pred.get(p)) else {
                continue;
            };
            if gt_tube.crowd || gt_tube.category != pred_tube.category {
                continue;
            }
            let union = (pred_tube.area + gt_tube.area) as i64 - inter as i64 - void_of(p) as i64;
            let iou = inter as f64 / union as f64;
            if iou.is_nan() || iou > 1.0 {
                return Err(Error::invalid(format!(
                    "invalid tube IoU {iou} for GT segment {g} (GT areas in the JSON do not match the PNG)"
                )));
            }
            if iou > 0.5 {
                let s = stats.entry(gt_tube.category).or_default();
                s.tp += 1;
                s.iou += iou;
                gt_matched.insert(g);
                pred_matched.insert(p);
            }
        }
        let mut crowd_of: HashMap<u32, u32> = HashMap::new();
        for (id, tube) in &gt.items {
            if gt_matched.contains(id) {
                continue;
            }
            if tube.crowd {
                crowd_of.insert(tube.category, *id);
                continue;
            }
            stats.entry(tube.category).or_default().fn_ += 1;
        }
        for (id, tube) in &pred.items {
            if pred_matched.contains(id) {
                continue;
            }
            let mut ignored = void_of(*id);
            if let Some(&crowd) = crowd_of.get(&tube.category) {
                ignored += pairs.get(&(crowd, *id)).copied().unwrap_or(0);
            }
            if ignored as f64 / tube.area as f64 > 0.5 {
                continue;
            }
            stats.entry(tube.category).or_default().fp += 1;
        }
    }
    Ok(stats)
}
