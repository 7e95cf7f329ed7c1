//! Configuration: plain serde structs whose defaults are the paper's settings, overridable from
//! `configs/*.toml` and from command-line flags.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

pub use crate::segmenter::sam::{SamConfig, SamVariant};

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Input decoding and internal resolution.
    pub input: InputConfig,
    /// Consensus, merging and the temporal schedule.
    pub tracker: TrackerConfig,
    /// Memory of the DEVA propagation network.
    pub memory: MemoryConfig,
    /// The weight-free optical-flow propagator.
    pub flow: FlowConfig,
    /// Salient-object segmenter (U²-Net, U²-Netp, IS-Net).
    pub saliency: crate::segmenter::saliency::SaliencyConfig,
    /// Segment Anything: automatic mask generator and segment selection.
    pub sam: SamConfig,
    /// SAM refinement of propagated masks (used with `--refine sam`).
    pub refine: crate::refine::RefineConfig,
}

/// Input settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct InputConfig {
    /// Shorter side of the internal resolution in pixels; -1 keeps the native resolution.
    pub size: i32,
}

impl Default for InputConfig {
    fn default() -> Self {
        InputConfig { size: 480 }
    }
}

/// When image segmentations are merged into tracking.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Temporal {
    /// Merge the raw segmentation of every `detection_every`-th frame (clip of 1 frame).
    Online,
    /// Merge the consensus of `num_voting_frames` frames every `detection_every` frames;
    /// outputs lag by `num_voting_frames - 1` frames.
    #[default]
    #[serde(rename = "semionline")]
    SemiOnline,
    /// Key-frame consensus over uniformly sampled frames, then propagation forwards and
    /// backwards from the key frame (whole video buffered).
    Offline,
}

impl std::str::FromStr for Temporal {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "online" => Ok(Temporal::Online),
            "semionline" => Ok(Temporal::SemiOnline),
            "offline" => Ok(Temporal::Offline),
            other => Err(Error::Config(format!(
                "unknown temporal setting {other:?} (expected online, semionline or offline)"
            ))),
        }
    }
}

/// Which frame of a clip the other frames are aligned to for the consensus.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum KeyFrame {
    /// The first frame of the clip (the reference's default).
    #[default]
    First,
    /// The middle frame, `(n + 1) / 2`.
    Middle,
    /// The last frame.
    Last,
}

/// Consensus, merge and schedule settings (paper §3.2, reference §2.1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrackerConfig {
    /// Temporal schedule.
    pub temporal: Temporal,
    /// Merge image segmentations every this many frames.
    pub detection_every: usize,
    /// Frames per consensus clip in semi-online mode (offline: frames sampled for the key-frame
    /// consensus).
    pub num_voting_frames: usize,
    /// Key frame of a consensus clip.
    pub keyframe: KeyFrame,
    /// Objects missing from this many consecutive merges plus one are deleted.
    pub max_missed_detection_count: usize,
    /// Upper bound on tracked objects; excess new objects are dropped. 0 or less: unlimited.
    pub max_num_objects: i64,
    /// Incremental merging (automatic discovery): unmatched tracked objects are only counted
    /// as missed when their propagated mask has vanished.
    pub incremental: bool,
    /// IoU above which a proposal supports another in the consensus.
    pub support_iou: f64,
    /// Penalty α per selected proposal in the consensus objective Σ vᵢ(Suppᵢ − α).
    pub alpha: f64,
    /// IoU above which a propagated and a new segment are associated when merging.
    pub merge_iou: f64,
    /// Mask of a tracked object confirmed by a new segment.
    pub matched_mask: MatchedMask,
}

/// The mask a merge gives a tracked object that a new segment confirmed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MatchedMask {
    /// The union of the propagated and the new mask (the paper's rule; suits an accurate
    /// propagator such as the DEVA network).
    #[default]
    Union,
    /// The new mask alone: the image segmentation resets the object's shape, so a drifting
    /// propagator (the weight-free flow) cannot make it grow merge after merge.
    Segment,
}

impl Default for TrackerConfig {
    fn default() -> Self {
        TrackerConfig {
            temporal: Temporal::SemiOnline,
            detection_every: 5,
            num_voting_frames: 3,
            keyframe: KeyFrame::First,
            max_missed_detection_count: 5,
            max_num_objects: -1,
            incremental: false,
            support_iou: 0.5,
            alpha: 0.5,
            merge_iou: 0.5,
            matched_mask: MatchedMask::Union,
        }
    }
}

impl TrackerConfig {
    /// The object limit, if any.
    pub fn object_limit(&self) -> Option<usize> {
        (self.max_num_objects > 0).then_some(self.max_num_objects as usize)
    }
}

/// Whether long-term memory counts how often its elements are read (needed for eviction).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum UsageCounting {
    /// Count when the video is long enough to fill long-term memory (reference formula), or
    /// always when the length is unknown (streams).
    #[default]
    Auto,
    /// Always count.
    On,
    /// Never count: long-term memory is not evicted.
    Off,
}

/// Memory settings of the DEVA propagator (reference §2.1, §2.3).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MemoryConfig {
    /// Write a memory frame every this many frames.
    pub mem_every: usize,
    /// Memory entries each query pixel reads (top-k).
    pub top_k: usize,
    /// Working memory holds at most this many frames (T_max).
    pub max_mid_term_frames: usize,
    /// Working memory keeps this many frames after consolidation (T_min).
    pub min_mid_term_frames: usize,
    /// Long-term memory holds at most this many elements (LT_max).
    pub max_long_term_elements: usize,
    /// Prototypes created per consolidation.
    pub num_prototypes: usize,
    /// Consolidate working memory into long-term memory.
    pub enable_long_term: bool,
    /// Count long-term usage.
    pub long_term_usage: UsageCounting,
    /// Objects processed together by the network; 0 or less: all at once.
    pub chunk_size: i64,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        MemoryConfig {
            mem_every: 5,
            top_k: 30,
            max_mid_term_frames: 10,
            min_mid_term_frames: 5,
            max_long_term_elements: 10000,
            num_prototypes: 128,
            enable_long_term: true,
            long_term_usage: UsageCounting::Auto,
            chunk_size: -1,
        }
    }
}

/// Settings of the optical-flow propagator (`[flow]`): DIS optical flow (Kroeger et al., ECCV
/// 2016) plus mask warping, occlusion filling and edge-aware re-anchoring.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FlowConfig {
    /// Finest pyramid level the flow is estimated on (0 = full internal resolution, 1 = half,
    /// ...); the result is upsampled bilinearly.
    pub finest_level: usize,
    /// Coarsest pyramid level; unset: chosen so that the coarsest image is about four
    /// patches across (the DIS rule).
    pub coarsest_level: Option<usize>,
    /// Side of the square patches of the inverse search, in pixels.
    pub patch_size: usize,
    /// Distance between neighbouring patches, in pixels (overlap = size − stride).
    pub patch_stride: usize,
    /// Gauss–Newton iterations of the inverse search per patch.
    pub iterations: usize,
    /// Fixed-point iterations of the variational refinement per level (0 = none).
    pub refine_iterations: usize,
    /// SOR sweeps per fixed-point iteration.
    pub sor_iterations: usize,
    /// Smoothness weight α of the variational refinement.
    pub refine_alpha: f32,
    /// Brightness-constancy weight δ of the variational refinement.
    pub refine_delta: f32,
    /// Gradient-constancy weight γ of the variational refinement.
    pub refine_gamma: f32,
    /// Forward–backward consistency: absolute round-trip tolerance in pixels.
    pub consistency_px: f32,
    /// Forward–backward consistency: tolerance relative to the squared motion.
    pub consistency_rel: f32,
    /// Radius (pixels) of the neighbourhood from which inconsistent (occluded) pixels take the
    /// masks of consistent pixels of similar colour (0 = off: they rely on the forward splat
    /// and the colour model).
    pub fill_radius: usize,
    /// Colour scale σ (colours in [0, 1]) of the joint-bilateral weights of that filling.
    pub fill_color_sigma: f32,
    /// Radius of the guided filter that re-anchors masks to image edges (0 = off).
    pub filter_radius: usize,
    /// Regularisation ε of the guided filter (colours in [0, 1]); smaller follows edges
    /// more closely.
    pub filter_eps: f32,
    /// Exponent γ that sharpens the final masks (`p_k^γ / Σ_j p_j^γ`) so that soft tails left
    /// by warping and filtering do not accumulate over time (1 = off).
    pub sharpen: f32,
    /// Histogram bins per colour channel of the per-object colour models.
    pub color_bins: usize,
    /// Exponent of the colour likelihood on occluded (inconsistent) pixels (0 = off).
    pub color_weight_occluded: f32,
    /// Exponent of the colour likelihood on consistent pixels (0 = off).
    pub color_weight_visible: f32,
}

impl Default for FlowConfig {
    fn default() -> Self {
        FlowConfig {
            finest_level: 1,
            coarsest_level: None,
            patch_size: 8,
            patch_stride: 4,
            iterations: 16,
            refine_iterations: 5,
            sor_iterations: 5,
            refine_alpha: 20.0,
            refine_delta: 5.0,
            refine_gamma: 10.0,
            consistency_px: 1.0,
            consistency_rel: 0.05,
            fill_radius: 10,
            fill_color_sigma: 0.1,
            filter_radius: 4,
            filter_eps: 1e-3,
            sharpen: 2.0,
            color_bins: 16,
            color_weight_occluded: 1.0,
            color_weight_visible: 0.1,
        }
    }
}

impl FlowConfig {
    /// Checks value ranges; messages name the `flow.*` key.
    pub fn validate(&self) -> Result<()> {
        let checks: [(bool, &str); 6] = [
            (
                (2..=32).contains(&self.patch_size),
                "flow.patch_size must be between 2 and 32",
            ),
            (
                self.patch_stride >= 1 && self.patch_stride <= self.patch_size,
                "flow.patch_stride must be between 1 and flow.patch_size",
            ),
            (
                self.coarsest_level.is_none_or(|c| c >= self.finest_level && c <= 16),
                "flow.coarsest_level must be between flow.finest_level and 16",
            ),
            (
                self.finest_level <= 16,
                "flow.finest_level must be at most 16",
            ),
            (
                [self.refine_alpha, self.refine_delta, self.refine_gamma, self.filter_eps]
                    .iter()
                    .all(|v| v.is_finite() && *v >= 0.0)
                    && self.consistency_px > 0.0
                    && self.fill_color_sigma > 0.0
                    && self.consistency_rel >= 0.0
                    && self.sharpen >= 1.0
                    && self.color_weight_occluded >= 0.0
                    && self.color_weight_visible >= 0.0,
                "flow weights (refine_*, filter_eps, color_weight_*) must be finite and not negative, flow.consistency_px and flow.fill_color_sigma positive, flow.sharpen at least 1",
            ),
            (
                (2..=64).contains(&self.color_bins),
                "flow.color_bins must be between 2 and 64",
            ),
        ];
        first_failure(&checks)
    }
}

/// `Ok` when every check holds, else a config error with the first failing check's message.
fn first_failure(checks: &[(bool, &str)]) -> Result<()> {
    match checks.iter().find(|(ok, _)| !ok) {
        Some((_, msg)) => Err(Error::Config(msg.to_string())),
        None => Ok(()),
    }
}

impl Config {
    /// Reads a TOML file; unknown keys are errors that name the key and the file.
    pub fn from_toml_file(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let config: Config = toml::from_str(&text).map_err(|e| Error::parse(path, e))?;
        config
            .validate()
            .map_err(|e| Error::parse(path, e.to_string()))?;
        Ok(config)
    }

    /// Checks value ranges.
    pub fn validate(&self) -> Result<()> {
        self.saliency.validate()?;
        self.refine.validate()?;
        let t = &self.tracker;
        let m = &self.memory;
        let checks: [(bool, &str); 8] = [
            (t.detection_every >= 1, "tracker.detection_every must be at least 1"),
            (t.num_voting_frames >= 1, "tracker.num_voting_frames must be at least 1"),
            (
                (0.0..1.0).contains(&t.support_iou) && (0.0..1.0).contains(&t.merge_iou),
                "tracker.support_iou and tracker.merge_iou must be in [0, 1)",
            ),
            (t.alpha >= 0.0, "tracker.alpha must not be negative"),
            (m.mem_every >= 1, "memory.mem_every must be at least 1"),
            (m.top_k >= 1, "memory.top_k must be at least 1"),
            (
                m.min_mid_term_frames >= 1 && m.min_mid_term_frames < m.max_mid_term_frames,
                "memory.min_mid_term_frames must be at least 1 and below memory.max_mid_term_frames",
            ),
            (
                m.num_prototypes >= 1 && m.num_prototypes < m.max_long_term_elements,
                "memory.num_prototypes must be at least 1 and below memory.max_long_term_elements",
            ),
        ];
        first_failure(&checks)?;
        self.flow.validate()?;
        self.sam.validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_papers() {
        let c = Config::default();
        assert_eq!(c.input.size, 480);
        assert_eq!(c.tracker.temporal, Temporal::SemiOnline);
        assert_eq!(
            (c.tracker.detection_every, c.tracker.num_voting_frames),
            (5, 3)
        );
        assert_eq!((c.memory.top_k, c.memory.mem_every), (30, 5));
        assert_eq!(
            (c.memory.max_mid_term_frames, c.memory.min_mid_term_frames),
            (10, 5)
        );
        assert_eq!(
            (c.memory.max_long_term_elements, c.memory.num_prototypes),
            (10000, 128)
        );
        assert!(c.validate().is_ok());
    }

    #[test]
    fn toml_overrides_and_rejects_unknown_keys() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(
            &p,
            "[tracker]\ntemporal = \"online\"\ndetection_every = 2\n",
        )
        .unwrap();
        let c = Config::from_toml_file(&p).unwrap();
        assert_eq!(c.tracker.temporal, Temporal::Online);
        assert_eq!(c.tracker.detection_every, 2);
        assert_eq!(c.memory.top_k, 30);

        std::fs::write(&p, "[tracker]\ndetection_evry = 2\n").unwrap();
        let e = Config::from_toml_file(&p).unwrap_err().to_string();
        assert!(e.contains("detection_evry") && e.contains("c.toml"), "{e}");

        std::fs::write(&p, "[memory]\nmin_mid_term_frames = 12\n").unwrap();
        let e = Config::from_toml_file(&p).unwrap_err().to_string();
        assert!(e.contains("min_mid_term_frames"), "{e}");
    }
}
