//! DAVIS J&F, semi-supervised and unsupervised, as `davis2017-evaluation` computes it.
//!
//! Layout: `<gt>/<sequence>/<frame>.png` and `<pred>/<sequence>/<frame>.png` (same frame names).
//! Ground truth is either a DAVIS-2016 binary mask (8-bit grayscale, 0 / 255; 255 is object 1)
//! or a DAVIS-2017 palette mask (index = object id, 255 = void). Predictions are palette or
//! grayscale PNGs whose pixel value is the object id.
//!
//! * Semi-supervised: the first and last frames are not scored; objects are ids 1..n with n the
//!   largest id of the first GT frame (void counts as background); void is not used otherwise;
//!   a predicted id above n is an error.
//! * Unsupervised: every frame is scored and void is excluded; up to 20 predicted ids (the
//!   largest id counts); every (prediction, GT object) pair is scored and the assignment
//!   maximising the mean of (J + F) / 2 is found with scipy's tie-breaking; objects are
//!   reported in increasing prediction order.
//!
//! Per object: mean, recall (fraction > 0.5) and decay (first quarter minus last quarter, with
//! the official overlapping bins) of J and F; global values average over all objects.

mod referring;
mod scores;

pub use self::referring::{annotator_folders, evaluate_referring, RefDavisReport};
pub use self::scores::{Scores, Statistics};
use super::bitimage::BitImage;
use super::boundary::{f_measure, tolerance_radius, Boundary};
use super::input::{list_files, list_subdirs};
use super::lap::{linear_sum_assignment, Matrix};
use super::numeric::np_mean;
use super::report::{Report, Table};
use crate::error::{Error, Result};
use crate::imageio::read_index_png;
use crate::mask::IdMap;
use rayon::prelude::*;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// The DAVIS void label.
pub const VOID: u32 = 255;

/// Largest number of predicted ids the unsupervised protocol accepts.
pub const MAX_PROPOSALS: u32 = 20;

/// Which DAVIS protocol to score.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DavisTask {
    /// Semi-supervised: first-frame masks given, first and last frames not scored.
    Semi,
    /// Unsupervised: predicted objects are matched to GT objects.
    Unsup,
}

impl std::str::FromStr for DavisTask {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "semi" | "semi-supervised" => Ok(DavisTask::Semi),
            "unsup" | "unsupervised" => Ok(DavisTask::Unsup),
            _ => Err(Error::Config(format!(
                "unknown DAVIS task {s:?} (expected semi or unsup)"
            ))),
        }
    }
}

/// How ground-truth PNGs encode objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum GtFormat {
    /// Decide per sequence from the first GT frame: a non-palette PNG holding only 0 and 255
    /// is DAVIS-2016, anything else DAVIS-2017.
    Auto,
    /// DAVIS-2016: binary 0 / 255, 255 is object 1, no void.
    Davis2016,
    /// DAVIS-2017: pixel value = object id, 255 = void.
    Davis2017,
}

impl std::str::FromStr for GtFormat {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "auto" => Ok(GtFormat::Auto),
            "davis2016" => Ok(GtFormat::Davis2016),
            "davis2017" => Ok(GtFormat::Davis2017),
            _ => Err(Error::Config(format!(
                "unknown ground-truth format {s:?} (expected auto, davis2016 or davis2017)"
            ))),
        }
    }
}

/// What to evaluate.
#[derive(Debug, Clone)]
pub struct DavisOptions {
    /// The protocol.
    pub task: DavisTask,
    /// The ground-truth encoding.
    pub gt_format: GtFormat,
    /// Sequences to score, in order; `None` = every sub-folder of the GT folder, sorted.
    pub sequences: Option<Vec<String>>,
}

/// Scores of one object (a GT object and the prediction matched to it).
#[derive(Debug, Clone, Serialize)]
pub struct DavisObject {
    /// `<sequence>_<i>`, i counting from 1 in the official order.
    pub key: String,
    /// The GT object id.
    pub gt_id: u32,
    /// The predicted id scored against it; `None` when there is none (zero padding).
    pub pred_id: Option<u32>,
    /// Mean, recall and decay of J and F.
    #[serde(flatten)]
    pub scores: Scores,
    /// (mean J + mean F) / 2, the quantity the unsupervised matching maximises.
    pub mean_jf: f64,
    /// J per scored frame.
    #[serde(rename = "J_per_frame")]
    pub j_per_frame: Vec<f64>,
    /// F per scored frame.
    #[serde(rename = "F_per_frame")]
    pub f_per_frame: Vec<f64>,
}

/// Results of one sequence.
#[derive(Debug, Clone, Serialize)]
pub struct DavisSequence {
    /// Sequence name.
    pub name: String,
    /// The GT encoding used (resolved when `Auto`).
    pub gt_format: GtFormat,
    /// Frame width.
    pub width: usize,
    /// Frame height.
    pub height: usize,
    /// Number of GT frames.
    pub frames: usize,
    /// Names of the scored frames.
    pub scored_frames: Vec<String>,
    /// Boundary tolerance radius in pixels.
    pub tolerance_px: usize,
    /// The objects, in the official order.
    pub objects: Vec<DavisObject>,
}

/// The DAVIS report: global numbers and per-sequence rows.
#[derive(Debug, Clone, Serialize)]
pub struct DavisReport {
    /// The protocol.
    pub task: DavisTask,
    /// (J-Mean + F-Mean) / 2.
    #[serde(rename = "J&F")]
    pub jf: f64,
    /// Means over all objects of the per-object scores.
    #[serde(flatten)]
    pub scores: Scores,
    /// Per-sequence results.
    pub sequences: Vec<DavisSequence>,
}

impl Report for DavisReport {
    fn tables(&self) -> Vec<Table> {
        let mut global = Table::new(
            format!("DAVIS ({:?})", self.task).to_lowercase(),
            &[
                "", "J&F", "J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay",
            ],
        );
        let mut values = vec![self.jf];
        values.extend(self.scores.named().map(|(_, v)| v));
        global.push_numbers("global", &values);
        let mut per = Table::new("per object", &["object", "J-Mean", "F-Mean"]);
        for o in self.sequences.iter().flat_map(|s| &s.objects) {
            per.push_numbers(&o.key, &[o.scores.j_mean, o.scores.f_mean]);
        }
        vec![global, per]
    }
}

/// The sequences of a GT folder: its sub-folders, sorted.
pub fn list_sequences(gt_dir: &Path) -> Result<Vec<String>> {
    list_subdirs(gt_dir)
}

/// Scores `pred_dir` against `gt_dir`. `progress` is called with each finished sequence.
pub fn evaluate(
    gt_dir: &Path,
    pred_dir: &Path,
    options: &DavisOptions,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<DavisReport> {
    let names = match &options.sequences {
        Some(s) => s.clone(),
        None => list_sequences(gt_dir)?,
    };
    if names.is_empty() {
        return Err(Error::invalid(format!(
            "{}: no sequence folders to evaluate",
            gt_dir.display()
        )));
    }
    let sequences = names
        .par_iter()
        .map(|name| {
            let s = evaluate_sequence(gt_dir, pred_dir, name, options)?;
            progress(name);
            Ok(s)
        })
        .collect::<Result<Vec<DavisSequence>>>()?;
    let objects: Vec<Scores> = sequences
        .iter()
        .flat_map(|s| &s.objects)
        .map(|o| o.scores)
        .collect();
    let scores = Scores::mean_of(&objects);
    Ok(DavisReport {
        task: options.task,
        jf: (scores.j_mean + scores.f_mean) / 2.0,
        scores,
        sequences,
    })
}

/// Reads a DAVIS mask PNG (palette or grayscale); returns it with whether it had a palette.
fn read_mask(path: &Path) -> Result<(IdMap, bool)> {
    let png = read_index_png(path)?;
    if png.rgb_ids {
        return Err(Error::image(
            path,
            "DAVIS masks must be palette or grayscale PNGs whose value is the object id, not RGB",
        ));
    }
    Ok((png.map, png.palette.is_some()))
}

/// Whether a non-palette mask holds only 0 and 255 (the DAVIS-2016 binary convention).
fn is_binary_0_255(map: &IdMap, has_palette: bool) -> bool {
    !has_palette && map.data().iter().all(|&v| v == 0 || v == 255)
}

/// Maps the DAVIS-2016 object value 255 to id 1, in place.
fn binary_to_object_one(map: &mut IdMap) {
    for v in map.data_mut() {
        *v = u32::from(*v == 255);
    }
}

/// Reads a GT frame as object ids (with `VOID` kept only for DAVIS-2017 data).
fn read_gt(path: &Path, format: GtFormat) -> Result<IdMap> {
    let (mut map, has_palette) = read_mask(path)?;
    if format == GtFormat::Davis2016 {
        if !is_binary_0_255(&map, has_palette) {
            return Err(Error::image(
                path,
                "DAVIS-2016 ground truth must be a grayscale PNG holding only 0 and 255",
            ));
        }
        binary_to_object_one(&mut map);
    }
    Ok(map)
}

/// The sorted GT frame names (file stems) of a sequence.
fn list_frames(dir: &Path) -> Result<Vec<String>> {
    if !dir.is_dir() {
        return Err(Error::invalid(format!(
            "{}: sequence folder not found",
            dir.display()
        )));
    }
    let frames: Vec<String> = list_files(dir, ".png")?
        .iter()
        .filter_map(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .collect();
    if frames.is_empty() {
        return Err(Error::invalid(format!(
            "{}: no PNG frames in the ground-truth sequence folder",
            dir.display()
        )));
    }
    Ok(frames)
}

/// Per-frame scores: J and F of each present predicted id against each GT object (all pairs
/// when unsupervised, id i against object i when semi-supervised), and of an empty prediction.
struct FrameScores {
    /// `(pred id, gt index, J, F)`.
    pairs: Vec<(u32, usize, f64, f64)>,
    /// J and F of an empty prediction against each GT object.
    empty: Vec<(f64, f64)>,
    /// Largest predicted id in the frame (0 if none).
    max_pred_id: u32,
}

/// What a sequence needs to score one frame.
struct SequenceSetup<'a> {
    task: DavisTask,
    format: GtFormat,
    num_objects: u32,
    width: usize,
    height: usize,
    radius: usize,
    gt_dir: &'a Path,
    pred_dir: &'a Path,
}

impl SequenceSetup<'_> {
    fn score_frame(&self, frame: &str) -> Result<FrameScores> {
        let gt_path = self.gt_dir.join(format!("{frame}.png"));
        let pred_path = self.pred_dir.join(format!("{frame}.png"));
        let gt = read_gt(&gt_path, self.format)?;
        if (gt.width(), gt.height()) != (self.width, self.height) {
            return Err(size_error(&gt_path, gt.width(), gt.height(), self));
        }
        if !pred_path.is_file() {
            return Err(Error::invalid(format!(
                "{}: predicted mask missing (every scored ground-truth frame needs a PNG of the same name)",
                pred_path.display()
            )));
        }
        let (pred_map, pred_palette) = read_mask(&pred_path)?;
        if (pred_map.width(), pred_map.height()) != (self.width, self.height) {
            return Err(size_error(
                &pred_path,
                pred_map.width(),
                pred_map.height(),
                self,
            ));
        }
        // A DAVIS-2016 prediction stored like its ground truth (0 / 255) means object 1.
        let mut pred_map = pred_map;
        if self.format == GtFormat::Davis2016 && is_binary_0_255(&pred_map, pred_palette) {
            binary_to_object_one(&mut pred_map);
        }
        let pred = pred_map.data();
        let max_pred_id = pred.iter().copied().max().unwrap_or(0);
        let limit = match self.task {
            DavisTask::Semi => self.num_objects,
            DavisTask::Unsup => MAX_PROPOSALS,
        };
        if max_pred_id > limit {
            let why = match self.task {
                DavisTask::Semi => format!(
                    "the first ground-truth frame has {} object(s)",
                    self.num_objects
                ),
                DavisTask::Unsup => {
                    format!("at most {MAX_PROPOSALS} proposals are allowed")
                }
            };
            return Err(Error::invalid(format!(
                "{}: predicted id {max_pred_id} is too large: {why}",
                pred_path.display()
            )));
        }
        let (w, h) = (self.width, self.height);
        // The semi-supervised protocol uses no void; DAVIS-2016 data has none.
        let void = (self.task == DavisTask::Unsup && self.format == GtFormat::Davis2017)
            .then(|| BitImage::from_labels(w, h, gt.data(), |l| l == VOID));
        let with_void_removed = |mut m: BitImage| {
            if let Some(v) = &void {
                m.clear_where(v);
            }
            m
        };
        let gt_masks: Vec<BitImage> =
            BitImage::per_label(w, h, gt.data(), self.num_objects as usize + 1)
                .into_iter()
                .skip(1)
                .map(with_void_removed)
                .collect();
        let gt_bounds: Vec<Boundary> = gt_masks
            .iter()
            .map(|m| Boundary::new(m, self.radius))
            .collect();
        let empty_mask = BitImage::new(w, h);
        let empty_bound = Boundary::new(&empty_mask, self.radius);
        let empty = gt_masks
            .iter()
            .zip(&gt_bounds)
            .map(|(g, gb)| (jaccard(&empty_mask, g), f_measure(&empty_bound, gb)))
            .collect();
        let mut pairs = Vec::new();
        let pred_masks = BitImage::per_label(w, h, pred, max_pred_id as usize + 1);
        for (id, mask) in pred_masks.into_iter().enumerate().skip(1) {
            if mask.is_empty() {
                continue;
            }
            let id = id as u32;
            let mask = with_void_removed(mask);
            let bound = Boundary::new(&mask, self.radius);
            for (g, (gm, gb)) in gt_masks.iter().zip(&gt_bounds).enumerate() {
                if self.task == DavisTask::Semi && g + 1 != id as usize {
                    continue;
                }
                pairs.push((id, g, jaccard(&mask, gm), f_measure(&bound, gb)));
            }
        }
        Ok(FrameScores {
            pairs,
            empty,
            max_pred_id,
        })
    }
}

fn size_error(path: &Path, w: usize, h: usize, s: &SequenceSetup) -> Error {
    Error::invalid(format!(
        "{}: size {w}x{h} differs from the sequence's first ground-truth frame ({}x{})",
        path.display(),
        s.width,
        s.height
    ))
}

/// Region similarity J of two masks (void already removed); 1 when both are empty.
pub fn jaccard(pred: &BitImage, gt: &BitImage) -> f64 {
    let union = pred.count_or(gt);
    if union == 0 {
        1.0
    } else {
        pred.count_and(gt) as f64 / union as f64
    }
}

fn evaluate_sequence(
    gt_root: &Path,
    pred_root: &Path,
    name: &str,
    options: &DavisOptions,
) -> Result<DavisSequence> {
    let gt_dir: PathBuf = gt_root.join(name);
    let pred_dir: PathBuf = pred_root.join(name);
    let frames = list_frames(&gt_dir)?;
    let first_path = gt_dir.join(format!("{}.png", frames[0]));
    let format = match options.gt_format {
        GtFormat::Auto => {
            let (map, palette) = read_mask(&first_path)?;
            if is_binary_0_255(&map, palette) {
                GtFormat::Davis2016
            } else {
                GtFormat::Davis2017
            }
        }
        f => f,
    };
    let first = read_gt(&first_path, format)?;
    let num_objects = first
        .data()
        .iter()
        .copied()
        .filter(|&l| l != VOID || format == GtFormat::Davis2016)
        .max()
        .unwrap_or(0);
    let scored: Vec<String> = match options.task {
        DavisTask::Semi => {
            if frames.len() < 3 {
                return Err(Error::invalid(format!(
                    "{}: {} frame(s); the semi-supervised protocol needs at least 3 (the first and last are not scored)",
                    gt_dir.display(),
                    frames.len()
                )));
            }
            frames[1..frames.len() - 1].to_vec()
        }
        DavisTask::Unsup => frames.clone(),
    };
    if !pred_dir.is_dir() {
        return Err(Error::invalid(format!(
            "{}: prediction folder of sequence {name} not found",
            pred_dir.display()
        )));
    }
    let setup = SequenceSetup {
        task: options.task,
        format,
        num_objects,
        width: first.width(),
        height: first.height(),
        radius: tolerance_radius(first.width(), first.height()),
        gt_dir: &gt_dir,
        pred_dir: &pred_dir,
    };
    let per_frame = scored
        .par_iter()
        .map(|f| setup.score_frame(f))
        .collect::<Result<Vec<FrameScores>>>()?;
    let n_gt = num_objects as usize;
    let n_pred = per_frame.iter().map(|f| f.max_pred_id).max().unwrap_or(0) as usize;
    let rows = match options.task {
        DavisTask::Semi => n_gt,
        DavisTask::Unsup => n_pred.max(n_gt),
    };
    // series[row][gt] = (J per frame, F per frame); row r is predicted id r + 1.
    let mut series = vec![vec![(Vec::new(), Vec::new()); n_gt]; rows];
    for frame in &per_frame {
        for (r, row) in series.iter_mut().enumerate() {
            for (g, (js, fs)) in row.iter_mut().enumerate() {
                let found = frame
                    .pairs
                    .iter()
                    .find(|p| p.0 as usize == r + 1 && p.1 == g);
                let (j, f) = match found {
                    Some(&(_, _, j, f)) => (j, f),
                    None if options.task == DavisTask::Semi && r != g => continue,
                    None => frame.empty[g],
                };
                js.push(j);
                fs.push(f);
            }
        }
    }
    let mean_jf = |r: usize, g: usize| {
        let (js, fs) = &series[r][g];
        (np_mean(js) + np_mean(fs)) / 2.0
    };
    let matched: Vec<(usize, usize)> = match options.task {
        DavisTask::Semi => (0..n_gt).map(|g| (g, g)).collect(),
        DavisTask::Unsup => {
            let cost = Matrix::from_fn(rows, n_gt, |r, g| -mean_jf(r, g));
            linear_sum_assignment(&cost, false)?
        }
    };
    let objects = matched
        .iter()
        .enumerate()
        .map(|(i, &(r, g))| {
            let (js, fs) = &series[r][g];
            DavisObject {
                key: format!("{name}_{}", i + 1),
                gt_id: g as u32 + 1,
                pred_id: (r < n_pred).then_some(r as u32 + 1),
                scores: Scores::new(Statistics::of(js), Statistics::of(fs)),
                mean_jf: mean_jf(r, g),
                j_per_frame: js.clone(),
                f_per_frame: fs.clone(),
            }
        })
        .collect();
    Ok(DavisSequence {
        name: name.to_string(),
        gt_format: format,
        width: first.width(),
        height: first.height(),
        frames: frames.len(),
        scored_frames: scored,
        tolerance_px: setup.radius,
        objects,
    })
}
