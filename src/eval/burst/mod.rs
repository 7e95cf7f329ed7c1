//! BURST open-world tracking (OWTA, DetRe, AssA, HOTA, DetA) as the official evaluation
//! (`BURST-benchmark` run.py `--task open_world`, i.e. TrackEval's `BURST_OW` dataset and `HOTA`
//! metric) computes it, for all, common and uncommon classes.
//!
//! Facts of the official pipeline that this follows:
//! * every RLE becomes its tight box (pycocotools `toBbox`, cast to int) and the similarity is
//!   the box IoU (no +1) of these boxes, not the mask IoU; an empty mask is the box `[0,0,0,0]`;
//! * GT tracks of the 45 distractor categories are dropped; the evaluated timesteps of a
//!   sequence are its GT images with at least one remaining annotation, sorted by the frame
//!   index parsed from the image name; predictions on other images are dropped;
//! * at most 300 predictions per image (highest scores, stable order);
//! * evaluation is class-agnostic; unmatched predictions (assignment on IoU ≥ 0.5) are removed
//!   on timesteps without GT, or when category 1 is marked not exhaustively labelled;
//! * HOTA per sequence (sorted names), combined over sequences; reported values are means over
//!   the 19 alphas. Rows are GT annotations and columns predictions in file order (JSON key
//!   order), which decides assignment ties.

mod predictions;

use self::predictions::{tracker_dets, StepDets};
use super::hota::{self, combine_sequences, eval_sequence, HotaResult, HotaSummary, Timestep};
use super::input::read_json;
use super::lap::{linear_sum_assignment, Matrix};
use super::report::{Report, Table};
use crate::error::{Error, Result};
use crate::mask::{BBox, Rle};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::{BTreeSet, HashMap};
use std::path::Path;

/// Category ids whose GT tracks are ignored ("Opening up Open-World Tracking").
pub const DISTRACTORS: [i64; 45] = [
    20, 63, 108, 180, 188, 204, 212, 247, 303, 403, 407, 415, 490, 504, 507, 513, 529, 567, 569,
    588, 672, 691, 702, 708, 711, 720, 736, 737, 798, 813, 815, 827, 831, 851, 877, 883, 912, 971,
    976, 1130, 1133, 1134, 1169, 1184, 1220,
];

/// Maximum number of predictions kept per image.
pub const MAX_DETECTIONS: usize = 300;

/// The class id of the class-agnostic evaluation.
const OBJECT_CLASS: i64 = 1;

/// The GT files of the three class splits: all, common, uncommon.
pub const SPLIT_FILES: [&str; 3] = [
    "all_classes.json",
    "common_classes.json",
    "uncommon_classes.json",
];

#[derive(Deserialize)]
struct BurstJson {
    #[serde(default)]
    split: Option<String>,
    sequences: Vec<BurstSequence>,
}

#[derive(Deserialize)]
struct BurstSequence {
    #[serde(default)]
    id: Option<Value>,
    #[serde(default)]
    width: Option<usize>,
    #[serde(default)]
    height: Option<usize>,
    dataset: String,
    seq_name: String,
    annotated_image_paths: Vec<String>,
    #[serde(default)]
    neg_category_ids: Vec<i64>,
    #[serde(default)]
    not_exhaustive_category_ids: Vec<i64>,
    #[serde(default)]
    track_category_ids: Map<String, Value>,
    segmentations: Vec<Map<String, Value>>,
}

impl BurstSequence {
    /// One segmentation dictionary per annotated image, as the format requires.
    fn check_lengths(&self, path: &Path) -> Result<()> {
        if self.segmentations.len() == self.annotated_image_paths.len() {
            return Ok(());
        }
        Err(Error::parse(
            path,
            format!(
                "sequence {}/{}: {} segmentation entries for {} annotated images",
                self.dataset,
                self.seq_name,
                self.segmentations.len(),
                self.annotated_image_paths.len()
            ),
        ))
    }
}

#[derive(Deserialize)]
struct Detection {
    rle: String,
    #[serde(default)]
    score: Option<f64>,
}

/// One GT image (an annotated frame).
struct GtImage {
    /// Index of its video in the GT file.
    video: usize,
    frame_index: i64,
    width: usize,
    height: usize,
}

/// A video of the GT file.
struct GtVideo {
    name: String,
    neg_category_ids: Vec<i64>,
    not_exhaustive_category_ids: Vec<i64>,
    /// Number of annotated images.
    num_images: usize,
    /// Timestep of each GT image index that has annotations.
    timestep_of: HashMap<usize, usize>,
    /// GT detections per timestep: (local track id, box).
    dets: Vec<Vec<(String, BBox)>>,
}

/// A GT file converted as the official converter does.
struct GroundTruth {
    split: String,
    images: Vec<GtImage>,
    image_by_name: HashMap<String, usize>,
    videos: Vec<GtVideo>,
}

/// Per-sequence summary.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BurstSequenceRow {
    /// `split-dataset-seq_name`.
    pub name: String,
    /// GT detections evaluated.
    pub num_gt_dets: usize,
    /// Predicted detections evaluated (after removals).
    pub num_tracker_dets: usize,
    /// GT tracks.
    pub num_gt_ids: usize,
    /// Predicted tracks.
    pub num_tracker_ids: usize,
    /// Annotated frames.
    pub num_timesteps: usize,
    /// Means over alpha.
    #[serde(flatten)]
    pub summary: HotaSummary,
}

/// The result for one GT file (class split).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BurstSplit {
    /// Means over alpha of the combined per-alpha values.
    #[serde(flatten)]
    pub summary: HotaSummary,
    /// The combined per-alpha values and counts.
    pub per_alpha: HotaResult,
    /// Per-sequence rows, sorted by name.
    pub sequences: Vec<BurstSequenceRow>,
}

/// A value per class split (`None` when that GT file is absent).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct BySplit {
    /// All classes.
    pub all: f64,
    /// Common (COCO) classes.
    pub common: Option<f64>,
    /// Uncommon classes.
    pub uncommon: Option<f64>,
}

/// The BURST report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BurstReport {
    /// Open-world tracking accuracy.
    #[serde(rename = "OWTA")]
    pub owta: BySplit,
    /// Detection recall.
    #[serde(rename = "DetRe")]
    pub det_re: BySplit,
    /// Association accuracy.
    #[serde(rename = "AssA")]
    pub ass_a: BySplit,
    /// HOTA.
    #[serde(rename = "HOTA")]
    pub hota: BySplit,
    /// Detection accuracy.
    #[serde(rename = "DetA")]
    pub det_a: BySplit,
    /// Full results per class split.
    pub splits: BurstSplits,
}

/// Full results of the three class splits.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BurstSplits {
    /// All classes (`all_classes.json`).
    pub all: BurstSplit,
    /// Common classes (`common_classes.json`), when present.
    pub common: Option<BurstSplit>,
    /// Uncommon classes (`uncommon_classes.json`), when present.
    pub uncommon: Option<BurstSplit>,
}

impl BurstSplits {
    /// The split named `all`, `common` or `uncommon`.
    pub fn get(&self, name: &str) -> Option<&BurstSplit> {
        match name {
            "all" => Some(&self.all),
            "common" => self.common.as_ref(),
            "uncommon" => self.uncommon.as_ref(),
            _ => None,
        }
    }
}

impl Report for BurstReport {
    fn tables(&self) -> Vec<Table> {
        let mut t = Table::new(
            "BURST open world (x100)",
            &["metric", "all", "common", "uncommon"],
        );
        for (name, v) in [
            ("OWTA", self.owta),
            ("DetRe", self.det_re),
            ("AssA", self.ass_a),
            ("HOTA", self.hota),
            ("DetA", self.det_a),
        ] {
            let cell = |x: Option<f64>| x.map_or("-".to_string(), |x| format!("{:.2}", 100.0 * x));
            t.push(vec![
                name.to_string(),
                cell(Some(v.all)),
                cell(v.common),
                cell(v.uncommon),
            ]);
        }
        let mut per = Table::new(
            "per sequence (all classes)",
            &["sequence", "OWTA", "DetRe", "AssA", "HOTA", "DetA"],
        );
        for s in &self.splits.all.sequences {
            let m = &s.summary;
            per.push_numbers(&s.name, &[m.owta, m.det_re, m.ass_a, m.hota, m.det_a]);
        }
        vec![t, per]
    }
}

/// Evaluates `pred` (BURST result JSON) against the GT files in `gt_dir`
/// (`all_classes.json` required; `common_classes.json` and `uncommon_classes.json` when
/// present). `progress` is called with each finished sequence.
pub fn evaluate(
    gt_dir: &Path,
    pred: &Path,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<BurstReport> {
    let pred_json: BurstJson = read_json(pred)?;
    let run = |file: &str| evaluate_split(&gt_dir.join(file), &pred_json, pred, progress);
    let optional = |file: &str| {
        let present = gt_dir.join(file).exists();
        present.then(|| run(file)).transpose()
    };
    let splits = BurstSplits {
        all: run(SPLIT_FILES[0])?,
        common: optional(SPLIT_FILES[1])?,
        uncommon: optional(SPLIT_FILES[2])?,
    };
    let get = |f: fn(&HotaSummary) -> f64| BySplit {
        all: f(&splits.all.summary),
        common: splits.common.as_ref().map(|s| f(&s.summary)),
        uncommon: splits.uncommon.as_ref().map(|s| f(&s.summary)),
    };
    Ok(BurstReport {
        owta: get(|r| r.owta),
        det_re: get(|r| r.det_re),
        ass_a: get(|r| r.ass_a),
        hota: get(|r| r.hota),
        det_a: get(|r| r.det_a),
        splits,
    })
}

/// Evaluates the prediction against one GT file.
fn evaluate_split(
    gt_path: &Path,
    pred: &BurstJson,
    pred_path: &Path,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<BurstSplit> {
    let gt_json: BurstJson = read_json(gt_path)?;
    let gt = GroundTruth::from_json(&gt_json, gt_path)?;
    let tracker = tracker_dets(&gt, pred, pred_path)?;
    let mut order: Vec<usize> = (0..gt.videos.len()).collect();
    order.sort_by(|&a, &b| gt.videos[a].name.cmp(&gt.videos[b].name));
    let results = order
        .par_iter()
        .map(|&v| {
            let r = evaluate_video(&gt.videos[v], &tracker[v]);
            progress(&gt.videos[v].name);
            r
        })
        .collect::<Result<Vec<(BurstSequenceRow, HotaResult)>>>()?;
    let per_seq: Vec<HotaResult> = results.iter().map(|(_, r)| r.clone()).collect();
    let c = combine_sequences(&per_seq);
    Ok(BurstSplit {
        summary: HotaSummary::of(&c),
        sequences: results.into_iter().map(|(row, _)| row).collect(),
        per_alpha: c,
    })
}

/// The frame index of an image name: the last `_`-separated piece after removing `.jpg`,
/// `.png` and `frame`.
fn frame_index(image: &str) -> Option<i64> {
    let stripped = image
        .replace(".jpg", "")
        .replace(".png", "")
        .replace("frame", "");
    stripped.split('_').next_back()?.trim().parse().ok()
}

/// The int-cast tight box of a compressed RLE of a `height × width` mask.
fn rle_box(counts: &str, height: usize, width: usize) -> Result<BBox> {
    Ok(Rle::from_compressed(height, width, counts)?.bbox())
}

/// Parses one detection of a segmentation dictionary.
fn detection(value: &Value, path: &Path, seq: &str, image: &str, id: &str) -> Result<Detection> {
    serde_json::from_value(value.clone()).map_err(|e| {
        Error::parse(
            path,
            format!("sequence {seq}, image {image}, track {id}: {e}"),
        )
    })
}

impl GroundTruth {
    fn from_json(json: &BurstJson, path: &Path) -> Result<Self> {
        let split = json
            .split
            .clone()
            .ok_or_else(|| Error::parse(path, "missing field `split`"))?;
        let mut images = Vec::new();
        let mut image_by_name = HashMap::new();
        let mut videos = Vec::new();
        let mut ids = BTreeSet::new();
        for (vi, seq) in json.sequences.iter().enumerate() {
            let what = format!("{}/{}", seq.dataset, seq.seq_name);
            let missing =
                |f: &str| Error::parse(path, format!("sequence {what}: missing field `{f}`"));
            let id = seq.id.as_ref().ok_or_else(|| missing("id"))?;
            if !ids.insert(id.to_string()) {
                return Err(Error::parse(
                    path,
                    format!("sequence id {id} is used twice"),
                ));
            }
            let width = seq.width.ok_or_else(|| missing("width"))?;
            let height = seq.height.ok_or_else(|| missing("height"))?;
            seq.check_lengths(path)?;
            let video_name = format!("{split}/{}/{}", seq.dataset, seq.seq_name);
            let first_image = images.len();
            for img in &seq.annotated_image_paths {
                let frame = frame_index(img).ok_or_else(|| {
                    Error::parse(
                        path,
                        format!("sequence {what}: no frame index in image name {img:?}"),
                    )
                })?;
                let file_name = format!("{video_name}/{img}");
                if image_by_name
                    .insert(file_name.clone(), images.len())
                    .is_some()
                {
                    return Err(Error::parse(
                        path,
                        format!("image {file_name} is listed twice"),
                    ));
                }
                images.push(GtImage {
                    video: vi,
                    frame_index: frame,
                    width,
                    height,
                });
            }
            // annotated images in annotation order, each with its detections
            let mut annotated: Vec<(usize, Vec<(String, BBox)>)> = Vec::new();
            for (k, (frame, img)) in seq
                .segmentations
                .iter()
                .zip(&seq.annotated_image_paths)
                .enumerate()
            {
                let mut dets = Vec::new();
                for (local, value) in frame {
                    let category = seq
                        .track_category_ids
                        .get(local)
                        .and_then(|v| match v {
                            Value::String(s) => s.trim().parse().ok(),
                            v => v.as_i64(),
                        })
                        .ok_or_else(|| {
                            Error::parse(
                                path,
                                format!("sequence {what}, image {img}: track {local} has no integer entry in track_category_ids"),
                            )
                        })?;
                    if DISTRACTORS.contains(&category) {
                        continue;
                    }
                    let det = detection(value, path, &what, img, local)?;
                    let bbox = rle_box(&det.rle, height, width).map_err(|e| {
                        Error::parse(
                            path,
                            format!("sequence {what}, image {img}, track {local}: {e}"),
                        )
                    })?;
                    dets.push((local.clone(), bbox));
                }
                if !dets.is_empty() {
                    annotated.push((first_image + k, dets));
                }
            }
            annotated.sort_by_key(|(i, _)| images[*i].frame_index);
            let timestep_of = annotated
                .iter()
                .enumerate()
                .map(|(t, (i, _))| (*i, t))
                .collect();
            let num_images = seq.annotated_image_paths.len();
            let mut dets: Vec<Vec<(String, BBox)>> =
                annotated.into_iter().map(|(_, d)| d).collect();
            dets.resize(num_images, Vec::new());
            videos.push(GtVideo {
                name: video_name.replace('/', "-"),
                neg_category_ids: seq.neg_category_ids.clone(),
                not_exhaustive_category_ids: seq.not_exhaustive_category_ids.clone(),
                num_images,
                timestep_of,
                dets,
            });
        }
        Ok(GroundTruth {
            split,
            images,
            image_by_name,
            videos,
        })
    }
}

/// pycocotools' box IoU (`bbIou`, no crowd): intersection over union of `[x, y, w, h]` boxes.
pub fn box_iou(a: &BBox, b: &BBox) -> f64 {
    let (ax, ay, aw, ah) = (a.x as f64, a.y as f64, a.w as f64, a.h as f64);
    let (bx, by, bw, bh) = (b.x as f64, b.y as f64, b.w as f64, b.h as f64);
    let w = (ax + aw).min(bx + bw) - ax.max(bx);
    if w <= 0.0 {
        return 0.0;
    }
    let h = (ay + ah).min(by + bh) - ay.max(by);
    if h <= 0.0 {
        return 0.0;
    }
    let i = w * h;
    i / (aw * ah + bw * bh - i)
}

/// Preprocesses and evaluates one video.
fn evaluate_video(video: &GtVideo, tracker: &[StepDets]) -> Result<(BurstSequenceRow, HotaResult)> {
    let is_neg = video.neg_category_ids.contains(&OBJECT_CLASS);
    let not_exhaustive = video.not_exhaustive_category_ids.contains(&OBJECT_CLASS);
    let eps = f64::EPSILON;
    let mut steps: Vec<(Vec<&str>, Vec<i64>, Matrix)> = Vec::new();
    for (gt_dets, tr_dets) in video.dets.iter().zip(tracker) {
        let sim = Matrix::from_fn(gt_dets.len(), tr_dets.len(), |i, j| {
            box_iou(&gt_dets[i].1, &tr_dets[j].1)
        });
        let mut unmatched: Vec<usize> = (0..tr_dets.len()).collect();
        if !gt_dets.is_empty() && !tr_dets.is_empty() {
            let scores = Matrix::from_fn(sim.rows(), sim.cols(), |i, j| {
                let s = sim.get(i, j);
                if s < 0.5 - eps {
                    0.0
                } else {
                    s
                }
            });
            let neg = Matrix::from_fn(scores.rows(), scores.cols(), |i, j| -scores.get(i, j));
            for (i, j) in linear_sum_assignment(&neg, false)? {
                if scores.get(i, j) > eps {
                    unmatched.retain(|&u| u != j);
                }
            }
        }
        let remove: Vec<usize> = if (gt_dets.is_empty() && !is_neg) || not_exhaustive {
            unmatched
        } else {
            Vec::new()
        };
        let keep: Vec<usize> = (0..tr_dets.len()).filter(|j| !remove.contains(j)).collect();
        steps.push((
            gt_dets.iter().map(|(id, _)| id.as_str()).collect(),
            keep.iter().map(|&j| tr_dets[j].0).collect(),
            sim.without_cols(&remove),
        ));
    }
    let gt_ids: BTreeSet<&str> = steps.iter().flat_map(|s| s.0.iter().copied()).collect();
    let tr_ids: BTreeSet<i64> = steps.iter().flat_map(|s| s.1.iter().copied()).collect();
    let gt_index: HashMap<&str, usize> = gt_ids.iter().enumerate().map(|(i, &g)| (g, i)).collect();
    let tr_index: HashMap<i64, usize> = tr_ids.iter().enumerate().map(|(i, &t)| (t, i)).collect();
    let seq = hota::Sequence {
        timesteps: steps
            .into_iter()
            .map(|(g, t, similarity)| Timestep {
                gt_ids: g.iter().map(|id| gt_index[id]).collect(),
                tracker_ids: t.iter().map(|id| tr_index[id]).collect(),
                similarity,
            })
            .collect(),
        num_gt_ids: gt_ids.len(),
        num_tracker_ids: tr_ids.len(),
    };
    let r = eval_sequence(&seq)?;
    let row = BurstSequenceRow {
        name: video.name.clone(),
        num_gt_dets: seq.num_gt_dets(),
        num_tracker_dets: seq.num_tracker_dets(),
        num_gt_ids: seq.num_gt_ids,
        num_tracker_ids: seq.num_tracker_ids,
        num_timesteps: video.num_images,
        summary: HotaSummary::of(&r),
    };
    Ok((row, r))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_index_follows_the_converter() {
        assert_eq!(frame_index("frame0030.jpg"), Some(30));
        assert_eq!(frame_index("img_00012.png"), Some(12));
        assert_eq!(frame_index("abc.jpg"), None);
    }

    #[test]
    fn box_iou_without_plus_one() {
        let bb = |x, y, w, h| BBox { x, y, w, h };
        let a = bb(0, 0, 10, 10);
        assert_eq!(box_iou(&a, &bb(0, 0, 5, 10)), 0.5);
        assert_eq!(box_iou(&a, &bb(5, 5, 10, 10)), 25.0 / 175.0);
        let empty = bb(0, 0, 0, 0);
        assert_eq!(box_iou(&a, &empty), 0.0);
        assert_eq!(box_iou(&empty, &empty), 0.0);
    }
}
