//! VIPSeg video panoptic quality (VPQ^k) and STQ, as DEVA's `eval_vpq_vipseg.py` and
//! `eval_stq_vipseg.py` compute them.
//!
//! Inputs: the GT JSON (`videos` with their `images`, per-frame `segments_info`, `categories`),
//! GT panoptic PNGs `<gt>/<video>/<file_name>` and, in the prediction folder, `pred.json` and
//! `pan_pred/<video>/<file_name>` (ids encoded as R + 256·G + 256²·B, 0 = void). Prediction
//! frames are matched to GT frames by position.
//!
//! VPQ^k: for every window of k frames (`max(T − k + 1, 1)` windows per video) segments are
//! merged into tubes by id; a GT and a predicted tube of the same category match when their IoU
//! (void pixels of the prediction removed from the union) exceeds 0.5; unmatched GT tubes are
//! false negatives; unmatched predicted tubes are false positives unless more than half of them
//! lies on void or on a crowd region of their category. Per category PQ = IoU sum /
//! (TP + FP/2 + FN/2); VPQ is the mean over categories with any TP, FP or FN (x100). k = 999
//! stands for "infinity" as in the official script.

mod vpq;

use self::vpq::{average, vpq_statistics, FrameData, PqStats};
use super::input::{flag, read_json, string_or_number};
use super::report::{Report, Table};
use super::stq::{StQuality, StqConfig, StqResult, StqScores};
use crate::error::{Error, Result};
use crate::imageio::read_index_png;
use crate::mask::IdMap;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

/// Window sizes of DEVA's VPQ evaluation; 999 stands for the whole video.
pub const WINDOWS: [usize; 7] = [1, 2, 4, 6, 8, 10, 999];

/// VIPSeg STQ constants: classes, ignore label, label bit shift, offset.
pub const STQ_CLASSES: usize = 124;
const STQ_IGNORE: i64 = 255;
const STQ_SHIFT: u32 = 16;
const STQ_OFFSET: i64 = 1 << 24;

#[derive(Deserialize)]
struct GtJson {
    videos: Vec<GtVideo>,
    annotations: Vec<VideoAnnotations<GtSegment>>,
    categories: Vec<Category>,
}

#[derive(Deserialize)]
struct GtVideo {
    #[serde(deserialize_with = "string_or_number")]
    video_id: String,
    images: Vec<GtImage>,
}

#[derive(Deserialize)]
struct GtImage {
    file_name: String,
}

#[derive(Deserialize)]
struct PredJson {
    annotations: Vec<VideoAnnotations<PredSegment>>,
}

#[derive(Deserialize)]
struct VideoAnnotations<S> {
    #[serde(deserialize_with = "string_or_number")]
    video_id: String,
    annotations: Vec<FrameAnnotation<S>>,
}

#[derive(Deserialize)]
struct FrameAnnotation<S> {
    segments_info: Vec<S>,
}

#[derive(Deserialize, Clone)]
struct GtSegment {
    id: u32,
    category_id: u32,
    #[serde(deserialize_with = "flag", default)]
    iscrowd: bool,
    area: u64,
}

#[derive(Deserialize, Clone)]
struct PredSegment {
    id: u32,
    category_id: u32,
}

#[derive(Deserialize)]
struct Category {
    id: u32,
    #[serde(deserialize_with = "flag")]
    isthing: bool,
}

/// Per-category statistics of one window size.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct CategoryStats {
    /// Whether the category is a thing.
    pub isthing: bool,
    /// IoU sum / (TP + FP/2 + FN/2).
    pub pq: f64,
    /// IoU sum / TP (0 without TP).
    pub sq: f64,
    /// TP / (TP + FP/2 + FN/2).
    pub rq: f64,
    /// Sum of the IoUs of matched tubes.
    pub iou_sum: f64,
    /// Matched tubes.
    pub tp: u64,
    /// Unmatched predicted tubes.
    pub fp: u64,
    /// Unmatched GT tubes.
    #[serde(rename = "fn")]
    pub fn_: u64,
}

/// A value for all, thing and stuff categories.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Split<T = f64> {
    /// All categories.
    pub all: T,
    /// Thing categories.
    pub things: T,
    /// Stuff categories.
    pub stuff: T,
}

/// VPQ for one window size (all values x100 except the per-category ones).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VpqWindow {
    /// Window size label: "1", "2", ..., "inf".
    pub k: String,
    /// Frames per window as the official script uses it (999 for "inf").
    pub window_nframes: usize,
    /// VPQ (x100).
    #[serde(rename = "VPQ")]
    pub vpq: Split,
    /// Segmentation quality (x100).
    #[serde(rename = "SQ")]
    pub sq: Split,
    /// Recognition quality (x100).
    #[serde(rename = "RQ")]
    pub rq: Split,
    /// Number of categories with any TP, FP or FN.
    pub n_categories: Split<usize>,
    /// Statistics of every active category, by category id.
    pub per_category: BTreeMap<u32, CategoryStats>,
}

/// Per-video rows.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VipsegSequence {
    /// Video id.
    pub video_id: String,
    /// Number of frames.
    pub frames: usize,
    /// Frame width.
    pub width: usize,
    /// Frame height.
    pub height: usize,
    /// STQ, AQ and IoU of the video.
    #[serde(flatten)]
    pub stq: StqScores,
}

/// The VIPSeg report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VipsegReport {
    /// DEVA's summary VPQ: the mean of VPQ^inf and of the mean over the finite windows (x100).
    #[serde(rename = "VPQ")]
    pub vpq: f64,
    /// VPQ^1 (x100).
    #[serde(rename = "VPQ1")]
    pub vpq1: f64,
    /// VPQ^2 (x100).
    #[serde(rename = "VPQ2")]
    pub vpq2: f64,
    /// VPQ^4 (x100).
    #[serde(rename = "VPQ4")]
    pub vpq4: f64,
    /// VPQ^6 (x100).
    #[serde(rename = "VPQ6")]
    pub vpq6: f64,
    /// VPQ^8 (x100).
    #[serde(rename = "VPQ8")]
    pub vpq8: f64,
    /// VPQ^10 (x100).
    #[serde(rename = "VPQ10")]
    pub vpq10: f64,
    /// VPQ^inf (x100).
    #[serde(rename = "VPQinf")]
    pub vpq_inf: f64,
    /// STQ and its factors AQ and IoU (fractions).
    #[serde(flatten)]
    pub stq: StqScores,
    /// VPQ per window size.
    pub windows: Vec<VpqWindow>,
    /// Per-video rows.
    pub sequences: Vec<VipsegSequence>,
}

impl Report for VipsegReport {
    fn tables(&self) -> Vec<Table> {
        let mut vpq = Table::new("VIPSeg VPQ (x100)", &["k", "all", "things", "stuff"]);
        for w in &self.windows {
            vpq.push_numbers(&w.k, &[w.vpq.all, w.vpq.things, w.vpq.stuff]);
        }
        let mut global = Table::new("VIPSeg", &["", "VPQ (x100)", "STQ", "AQ", "IoU"]);
        let q = &self.stq;
        global.push_numbers("global", &[self.vpq, q.stq, q.aq, q.iou]);
        let mut per = Table::new("per video", &["video", "frames", "STQ", "AQ", "IoU"]);
        for s in &self.sequences {
            per.push(vec![
                s.video_id.clone(),
                s.frames.to_string(),
                super::report::number(s.stq.stq),
                super::report::number(s.stq.aq),
                super::report::number(s.stq.iou),
            ]);
        }
        vec![global, vpq, per]
    }
}

/// Evaluates VPQ^k and STQ. `gt_json` is the GT JSON, `gt_dir` holds the GT panoptic PNGs,
/// `pred_dir` holds `pred.json` and `pan_pred/`. `progress` is called with each finished video.
pub fn evaluate(
    gt_json: &Path,
    gt_dir: &Path,
    pred_dir: &Path,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<VipsegReport> {
    let gt: GtJson = read_json(gt_json)?;
    let pred_path = pred_dir.join("pred.json");
    let pred: PredJson = read_json(&pred_path)?;
    let categories: HashMap<u32, bool> = gt.categories.iter().map(|c| (c.id, c.isthing)).collect();
    let mut category_order: Vec<u32> = Vec::new();
    for c in &gt.categories {
        if !category_order.contains(&c.id) {
            category_order.push(c.id);
        }
    }
    let stq_config = StqConfig {
        num_classes: STQ_CLASSES,
        things_list: gt
            .categories
            .iter()
            .filter(|c| c.isthing)
            .map(|c| c.id as i64)
            .collect(),
        ignore_label: STQ_IGNORE,
        label_bit_shift: STQ_SHIFT,
        offset: STQ_OFFSET,
    };
    let gt_ann: HashMap<&str, &VideoAnnotations<GtSegment>> = gt
        .annotations
        .iter()
        .map(|a| (a.video_id.as_str(), a))
        .collect();
    let pred_ann: HashMap<&str, &VideoAnnotations<PredSegment>> = pred
        .annotations
        .iter()
        .map(|a| (a.video_id.as_str(), a))
        .collect();
    let mut seen = HashSet::new();
    for v in &gt.videos {
        if !seen.insert(v.video_id.as_str()) {
            return Err(Error::parse(
                gt_json,
                format!("video {} is listed twice", v.video_id),
            ));
        }
    }
    let ctx = Context {
        gt_json,
        pred_json: &pred_path,
        gt_dir,
        pan_dir: &pred_dir.join("pan_pred"),
        categories: &categories,
        stq_config: &stq_config,
    };
    let videos = gt
        .videos
        .par_iter()
        .map(|v| {
            let r = ctx.video(v, &gt_ann, &pred_ann);
            progress(&v.video_id);
            r
        })
        .collect::<Result<Vec<VideoResult>>>()?;

    let mut windows = Vec::new();
    for (wi, &k) in WINDOWS.iter().enumerate() {
        let mut total: PqStats = HashMap::new();
        for v in &videos {
            for (&cat, s) in &v.vpq[wi] {
                let t = total.entry(cat).or_default();
                t.iou += s.iou;
                t.tp += s.tp;
                t.fp += s.fp;
                t.fn_ += s.fn_;
            }
        }
        windows.push(average(&total, &category_order, &categories, k));
    }
    let mut stq = StQuality::new(stq_config.clone())?;
    let mut sequences = Vec::new();
    for v in videos {
        sequences.push((v.video_id, v.frames, v.width, v.height));
        stq.merge(v.stq)?;
    }
    let stq_result: StqResult = stq.result();
    let sequences = sequences
        .into_iter()
        .zip(&stq_result.sequences)
        .map(|((video_id, frames, width, height), s)| VipsegSequence {
            video_id,
            frames,
            width,
            height,
            stq: s.scores,
        })
        .collect();
    let all: Vec<f64> = windows.iter().map(|w| w.vpq.all).collect();
    let finite_mean = all[..all.len() - 1].iter().sum::<f64>() / (all.len() - 1) as f64;
    Ok(VipsegReport {
        vpq: (all[all.len() - 1] + finite_mean) / 2.0,
        vpq1: all[0],
        vpq2: all[1],
        vpq4: all[2],
        vpq6: all[3],
        vpq8: all[4],
        vpq10: all[5],
        vpq_inf: all[6],
        stq: stq_result.scores,
        windows,
        sequences,
    })
}

/// Results of one video.
struct VideoResult {
    video_id: String,
    frames: usize,
    width: usize,
    height: usize,
    /// VPQ statistics per window size (same order as `WINDOWS`).
    vpq: Vec<PqStats>,
    stq: StQuality,
}

/// Shared inputs of the per-video work.
struct Context<'a> {
    gt_json: &'a Path,
    pred_json: &'a Path,
    gt_dir: &'a Path,
    pan_dir: &'a Path,
    categories: &'a HashMap<u32, bool>,
    stq_config: &'a StqConfig,
}

impl Context<'_> {
    fn video(
        &self,
        video: &GtVideo,
        gt_ann: &HashMap<&str, &VideoAnnotations<GtSegment>>,
        pred_ann: &HashMap<&str, &VideoAnnotations<PredSegment>>,
    ) -> Result<VideoResult> {
        let id = video.video_id.as_str();
        let gt_frames = &gt_ann
            .get(id)
            .ok_or_else(|| Error::parse(self.gt_json, format!("no annotations for video {id}")))?
            .annotations;
        let pred_frames = &pred_ann
            .get(id)
            .ok_or_else(|| Error::parse(self.pred_json, format!("no annotations for video {id}")))?
            .annotations;
        if gt_frames.len() != pred_frames.len() || gt_frames.len() != video.images.len() {
            return Err(Error::invalid(format!(
                "video {id}: {} images and {} annotated frames in {}, but {} frames in {}",
                video.images.len(),
                gt_frames.len(),
                self.gt_json.display(),
                pred_frames.len(),
                self.pred_json.display()
            )));
        }
        if gt_frames.is_empty() {
            return Err(Error::parse(
                self.gt_json,
                format!("video {id} has no frames"),
            ));
        }
        // STQ instance numbers: order of first listing over the whole video.
        let gt_instances = instance_numbers(
            gt_frames
                .iter()
                .map(|f| f.segments_info.iter().map(|s| s.id)),
        );
        let pred_instances = instance_numbers(
            pred_frames
                .iter()
                .map(|f| f.segments_info.iter().map(|s| s.id)),
        );
        let mut stq = StQuality::new(self.stq_config.clone())?;
        let mut frames = Vec::with_capacity(gt_frames.len());
        let mut size = None;
        for ((image, gt_frame), pred_frame) in video.images.iter().zip(gt_frames).zip(pred_frames) {
            let gt_path = self.gt_dir.join(id).join(&image.file_name);
            let pred_path = self.pan_dir.join(id).join(&image.file_name);
            let gt_map = read_index_png(&gt_path)?.map;
            if !pred_path.is_file() {
                return Err(Error::invalid(format!(
                    "{}: predicted panoptic PNG missing",
                    pred_path.display()
                )));
            }
            let pred_map = read_index_png(&pred_path)?.map;
            let dims = (gt_map.width(), gt_map.height());
            if (pred_map.width(), pred_map.height()) != dims {
                return Err(Error::invalid(format!(
                    "{}: size {}x{} differs from the ground truth {} ({}x{})",
                    pred_path.display(),
                    pred_map.width(),
                    pred_map.height(),
                    gt_path.display(),
                    dims.0,
                    dims.1
                )));
            }
            size.get_or_insert(dims);
            frames.push(self.frame(
                &gt_frame.segments_info,
                &pred_frame.segments_info,
                &gt_map,
                &pred_map,
                &pred_path,
            )?);
            let gt_labels = stq_labels(
                &gt_map,
                gt_frame.segments_info.iter().map(|s| (s.id, s.category_id)),
                &gt_instances,
            );
            let pred_labels = stq_labels(
                &pred_map,
                pred_frame
                    .segments_info
                    .iter()
                    .map(|s| (s.id, s.category_id)),
                &pred_instances,
            );
            stq.update(&gt_labels, &pred_labels, id)?;
        }
        let vpq = WINDOWS
            .iter()
            .map(|&k| vpq_statistics(&frames, k))
            .collect::<Result<Vec<_>>>()
            .map_err(|e| Error::invalid(format!("video {id}: {e}")))?;
        let (width, height) = size.unwrap_or_default();
        Ok(VideoResult {
            video_id: id.to_string(),
            frames: frames.len(),
            width,
            height,
            vpq,
            stq,
        })
    }

    /// Collects one frame's segments and pixel-pair counts, with the official checks of the
    /// prediction: every non-zero PNG id is listed, every listed id occurs in the PNG, and its
    /// category is known.
    fn frame(
        &self,
        gt_info: &[GtSegment],
        pred_info: &[PredSegment],
        gt_map: &IdMap,
        pred_map: &IdMap,
        pred_path: &Path,
    ) -> Result<FrameData> {
        let mut gt: Vec<GtSegment> = Vec::new();
        for s in gt_info {
            match gt.iter_mut().find(|g| g.id == s.id) {
                Some(g) => g.area += s.area,
                None => gt.push(s.clone()),
            }
        }
        let mut pairs: HashMap<(u32, u32), u64> = HashMap::new();
        let mut pred_counts: HashMap<u32, u64> = HashMap::new();
        for (&g, &p) in gt_map.data().iter().zip(pred_map.data()) {
            *pairs.entry((g, p)).or_insert(0) += 1;
            *pred_counts.entry(p).or_insert(0) += 1;
        }
        let mut pred: Vec<(PredSegment, u64)> = Vec::new();
        for s in pred_info {
            if pred.iter().any(|(p, _)| p.id == s.id) {
                continue;
            }
            let Some(&area) = pred_counts.get(&s.id) else {
                return Err(Error::invalid(format!(
                    "{}: segment id {} is listed in {} but absent from the PNG",
                    pred_path.display(),
                    s.id,
                    self.pred_json.display()
                )));
            };
            if !self.categories.contains_key(&s.category_id) {
                return Err(Error::invalid(format!(
                    "{}: segment id {} has unknown category_id {}",
                    self.pred_json.display(),
                    s.id,
                    s.category_id
                )));
            }
            pred.push((s.clone(), area));
        }
        let mut unlisted: Vec<u32> = pred_counts
            .keys()
            .copied()
            .filter(|&p| p != 0 && !pred.iter().any(|(s, _)| s.id == p))
            .collect();
        if !unlisted.is_empty() {
            unlisted.sort_unstable();
            return Err(Error::invalid(format!(
                "{}: segment ids {unlisted:?} occur in the PNG but are not listed in {}",
                pred_path.display(),
                self.pred_json.display()
            )));
        }
        Ok(FrameData { gt, pred, pairs })
    }
}

/// Instance numbers 0, 1, 2, ... in order of first listing.
fn instance_numbers<I: Iterator<Item = u32>>(frames: impl Iterator<Item = I>) -> HashMap<u32, i64> {
    let mut map = HashMap::new();
    for id in frames.flatten() {
        let next = map.len() as i64;
        map.entry(id).or_insert(next);
    }
    map
}

/// STQ labels of a frame: `(category << 16) + instance` for listed segments (later listings of
/// an id win), `(255 << 16) + 255` elsewhere, cast to int32 as the official driver does.
fn stq_labels(
    map: &IdMap,
    segments: impl Iterator<Item = (u32, u32)>,
    instances: &HashMap<u32, i64>,
) -> Vec<i64> {
    let mut label_of: HashMap<u32, i64> = HashMap::new();
    for (id, cat) in segments {
        label_of.insert(id, ((cat as i64) << STQ_SHIFT) + instances[&id]);
    }
    let unlabelled = (STQ_IGNORE << STQ_SHIFT) + STQ_IGNORE;
    map.data()
        .iter()
        .map(|id| label_of.get(id).map_or(unlabelled, |&l| l as i32 as i64))
        .collect()
}
