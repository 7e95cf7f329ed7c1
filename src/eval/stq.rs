//! Segmentation and Tracking Quality (STQ, Weber et al. 2021) as deeplab2's numpy `STQuality`
//! (the copy used by DEVA's VIPSeg evaluation) computes it.
//!
//! Labels are `(semantic << label_bit_shift) + instance`. Per sequence the metric accumulates
//! a semantic confusion matrix and, for `thing` classes, the areas of ground-truth tracks,
//! predicted tracks and their intersections. Ground-truth thing pixels with instance 0 are
//! crowd and take no part in association. AQ averages, over GT tracks, the TPA-weighted IoU
//! with every overlapping predicted track; IoU is the mean class IoU of the confusion matrix
//! whose ignore row is removed (its column is kept, so GT pixels predicted as ignore count as
//! errors of an extra class). STQ = sqrt(AQ · IoU).

use super::numeric::np_sum;
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};

/// Guard against division by zero, as in the reference.
const EPSILON: f64 = 1e-15;

/// Constants of an STQ evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StqConfig {
    /// Number of semantic classes.
    pub num_classes: usize,
    /// Semantic ids of the `thing` classes.
    pub things_list: Vec<i64>,
    /// The semantic id to ignore.
    pub ignore_label: i64,
    /// Bits the semantic id is shifted by in a label.
    pub label_bit_shift: u32,
    /// Multiplier separating GT and predicted labels in intersection keys (must be at least
    /// `num_classes << label_bit_shift`).
    pub offset: i64,
}

/// Labels counted in first-seen order (keys of one update are added in increasing order, as
/// numpy's `unique` yields them).
#[derive(Debug, Clone, Default)]
struct OrderedCounts {
    index: HashMap<i64, usize>,
    items: Vec<(i64, u64)>,
}

impl OrderedCounts {
    fn add(&mut self, counts: BTreeMap<i64, u64>) {
        for (k, c) in counts {
            match self.index.get(&k) {
                Some(&i) => self.items[i].1 += c,
                None => {
                    self.index.insert(k, self.items.len());
                    self.items.push((k, c));
                }
            }
        }
    }
}

/// Statistics of one sequence.
#[derive(Debug, Clone)]
struct SequenceStats {
    id: String,
    confusion: Vec<u64>,
    predictions: OrderedCounts,
    ground_truth: OrderedCounts,
    intersections: HashMap<(i64, i64), u64>,
    length: usize,
}

/// STQ with its two factors.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct StqScores {
    /// sqrt(AQ · IoU).
    #[serde(rename = "STQ")]
    pub stq: f64,
    /// Association quality (overall: weighted by the number of GT tracks per sequence).
    #[serde(rename = "AQ")]
    pub aq: f64,
    /// Mean class IoU (overall: of the summed confusion matrices).
    #[serde(rename = "IoU")]
    pub iou: f64,
}

impl StqScores {
    fn new(aq: f64, iou: f64) -> Self {
        StqScores {
            stq: (aq * iou).sqrt(),
            aq,
            iou,
        }
    }
}

/// STQ of one sequence.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StqSequence {
    /// Sequence id.
    pub id: String,
    /// The sequence's scores.
    #[serde(flatten)]
    pub scores: StqScores,
    /// Number of frames.
    pub length: usize,
}

/// The overall result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StqResult {
    /// The overall scores.
    #[serde(flatten)]
    pub scores: StqScores,
    /// Per-sequence values, in order of first update.
    pub sequences: Vec<StqSequence>,
}

/// The accumulating STQ metric.
#[derive(Debug, Clone)]
pub struct StQuality {
    config: StqConfig,
    matrix_size: usize,
    things: HashSet<i64>,
    sequences: Vec<SequenceStats>,
}

impl StQuality {
    /// A new metric; fails when `offset` is too small for the label range.
    pub fn new(config: StqConfig) -> Result<Self> {
        let lower_bound = (config.num_classes as i64) << config.label_bit_shift;
        if config.offset < lower_bound {
            return Err(Error::Config(format!(
                "STQ offset {} is too small: it must be at least num_classes << label_bit_shift = {lower_bound}",
                config.offset
            )));
        }
        let matrix_size = if config.ignore_label >= config.num_classes as i64 {
            config.num_classes + 1
        } else {
            config.num_classes
        };
        let things = config.things_list.iter().copied().collect();
        Ok(StQuality {
            config,
            matrix_size,
            things,
            sequences: Vec::new(),
        })
    }

    /// The semantic class of a label, with an out-of-range ignore label moved to the extra
    /// class `num_classes`.
    fn semantic(&self, label: i64) -> i64 {
        let s = label >> self.config.label_bit_shift;
        if self.config.ignore_label > self.config.num_classes as i64
            && s == self.config.ignore_label
        {
            self.config.num_classes as i64
        } else {
            s
        }
    }

    /// Adds one frame (row-major labels of equal length) of sequence `sequence`.
    pub fn update(
        &mut self,
        ground_truth: &[i64],
        prediction: &[i64],
        sequence: &str,
    ) -> Result<()> {
        if ground_truth.len() != prediction.len() {
            return Err(Error::invalid(format!(
                "STQ update of sequence {sequence}: {} ground-truth labels but {} predicted",
                ground_truth.len(),
                prediction.len()
            )));
        }
        let size = self.matrix_size;
        let pos = match self.sequences.iter().position(|s| s.id == sequence) {
            Some(p) => p,
            None => {
                self.sequences.push(SequenceStats {
                    id: sequence.to_string(),
                    confusion: vec![0; size * size],
                    predictions: OrderedCounts::default(),
                    ground_truth: OrderedCounts::default(),
                    intersections: HashMap::new(),
                    length: 0,
                });
                self.sequences.len() - 1
            }
        };
        let bit_mask = (1i64 << self.config.label_bit_shift) - 1;
        let mut confusion = vec![0u64; size * size];
        let mut preds = BTreeMap::new();
        let mut gts = BTreeMap::new();
        let mut inter = HashMap::new();
        for (&yt, &yp) in ground_truth.iter().zip(prediction) {
            let (st, sp) = (self.semantic(yt), self.semantic(yp));
            for (s, y) in [(st, yt), (sp, yp)] {
                if s < 0 || s >= size as i64 {
                    return Err(Error::invalid(format!(
                        "STQ update of sequence {sequence}: label {y} has semantic class {s}, outside 0..{size}"
                    )));
                }
            }
            confusion[st as usize * size + sp as usize] += 1;
            let gt_thing = self.things.contains(&st);
            let crowd = gt_thing && (yt & bit_mask) == 0;
            let label_in = gt_thing && !crowd;
            let pred_in = self.things.contains(&sp) && !crowd;
            if pred_in {
                *preds.entry(yp).or_insert(0u64) += 1;
            }
            if label_in {
                *gts.entry(yt).or_insert(0u64) += 1;
            }
            if label_in && pred_in {
                *inter.entry((yt, yp)).or_insert(0u64) += 1;
            }
        }
        let seq = &mut self.sequences[pos];
        for (a, b) in seq.confusion.iter_mut().zip(&confusion) {
            *a += b;
        }
        seq.predictions.add(preds);
        seq.ground_truth.add(gts);
        for (k, c) in inter {
            *seq.intersections.entry(k).or_insert(0) += c;
        }
        seq.length += 1;
        Ok(())
    }

    /// Appends the sequences of `other` (same configuration, distinct sequence ids), as if
    /// its updates had been made on `self` after the present ones.
    pub fn merge(&mut self, other: StQuality) -> Result<()> {
        if other.config != self.config {
            return Err(Error::invalid(
                "cannot merge STQ metrics with different settings",
            ));
        }
        for s in other.sequences {
            if self.sequences.iter().any(|x| x.id == s.id) {
                return Err(Error::invalid(format!(
                    "STQ sequence {} is present in both metrics",
                    s.id
                )));
            }
            self.sequences.push(s);
        }
        Ok(())
    }

    /// Computes STQ, AQ and IoU overall and per sequence.
    pub fn result(&self) -> StqResult {
        let size = self.matrix_size;
        let mut aq_sums = Vec::new();
        let mut tubes = Vec::new();
        for seq in &self.sequences {
            let pred_order = &seq.predictions.index;
            let mut per_gt: HashMap<i64, Vec<(usize, u64)>> = HashMap::new();
            for (&(g, p), &tpa) in &seq.intersections {
                per_gt.entry(g).or_default().push((pred_order[&p], tpa));
            }
            let mut outer = 0.0;
            for &(gt_id, gt_size) in &seq.ground_truth.items {
                let mut inner = 0.0;
                let mut hits = per_gt.remove(&gt_id).unwrap_or_default();
                hits.sort_unstable();
                for (p, tpa) in hits {
                    let pr_size = seq.predictions.items[p].1;
                    let (tpa_f, fpa, fna) =
                        (tpa as f64, (pr_size - tpa) as f64, (gt_size - tpa) as f64);
                    inner += tpa_f * (tpa_f / (tpa_f + fpa + fna));
                }
                outer += 1.0 / gt_size as f64 * inner;
            }
            aq_sums.push(outer);
            tubes.push(seq.ground_truth.items.len());
        }
        let total_tubes: usize = tubes.iter().sum();
        let aq = np_sum(&aq_sums) / (total_tubes as f64).max(EPSILON);
        let include = |row: usize| {
            if self.config.ignore_label >= self.config.num_classes as i64 {
                row < self.config.num_classes
            } else {
                row as i64 != self.config.ignore_label
            }
        };
        let mut total = vec![0u64; size * size];
        let mut sequences = Vec::new();
        for (i, seq) in self.sequences.iter().enumerate() {
            let mut confusion = seq.confusion.clone();
            for row in (0..size).filter(|&r| !include(r)) {
                confusion[row * size..(row + 1) * size].fill(0);
            }
            for (t, c) in total.iter_mut().zip(&confusion) {
                *t += c;
            }
            let iou = mean_class_iou(&confusion, size);
            let aq_seq = aq_sums[i] / (tubes[i] as f64).max(EPSILON);
            sequences.push(StqSequence {
                id: seq.id.clone(),
                scores: StqScores::new(aq_seq, iou),
                length: seq.length,
            });
        }
        let iou = mean_class_iou(&total, size);
        StqResult {
            scores: StqScores::new(aq, iou),
            sequences,
        }
    }
}

/// Mean IoU over the classes with a non-empty union (rows = ground truth, columns = prediction).
fn mean_class_iou(confusion: &[u64], size: usize) -> f64 {
    let mut ious = Vec::with_capacity(size);
    let mut active = 0usize;
    for c in 0..size {
        let inter = confusion[c * size + c];
        let col: u64 = (0..size).map(|r| confusion[r * size + c]).sum();
        let row: u64 = confusion[c * size..(c + 1) * size].iter().sum();
        let union = inter + (col - inter) + (row - inter);
        if union != 0 {
            active += 1;
        }
        ious.push(inter as f64 / (union as f64).max(EPSILON));
    }
    np_sum(&ious) / active as f64
}
