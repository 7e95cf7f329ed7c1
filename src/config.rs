//! Configuration: plain serde structs whose defaults are the paper's settings, overridable from
//! `configs/*.toml` and from command-line flags. Each component owns its settings in its own
//! module; [`Config`] only gathers them: `[input]`, `[tracker]`, and the `[segmenter]` and
//! `[propagator]` specs.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

pub use crate::propagator::deva::{MemoryConfig, UsageCounting};
pub use crate::propagator::flow::FlowConfig;
pub use crate::propagator::PropagatorSpec;
pub use crate::segmenter::sam::{SamConfig, SamVariant};
use crate::segmenter::SegmenterKind;
pub use crate::segmenter::SegmenterSpec;

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Input decoding and internal resolution.
    pub input: InputConfig,
    /// Consensus, merging and the temporal schedule.
    pub tracker: TrackerConfig,
    /// The image segmenter (`[segmenter]`, `kind = ...`); unset: chosen by the caller (the
    /// command line's flags).
    pub segmenter: Option<SegmenterSpec>,
    /// The propagator (`[propagator]`, `kind = ...`); default: optical flow.
    pub propagator: PropagatorSpec,
    /// SAM refinement of propagated masks (`[refine]`; used with `--refine sam`).
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

impl InputConfig {
    /// The shorter sides accepted besides -1 (native): the network's stride of 16 is the
    /// least that gives a mask, and 8192 keeps frames within the pixel limit.
    pub const SIZES: std::ops::RangeInclusive<i32> = 16..=8192;

    /// Fails unless `size` is -1 or in [`SIZES`](Self::SIZES), naming the valid range.
    pub fn validate(&self) -> Result<()> {
        if self.size == -1 || Self::SIZES.contains(&self.size) {
            return Ok(());
        }
        Err(Error::Config(format!(
            "input.size (--size) is {}; it must be -1 (native resolution) or a shorter side \
             from {} to {} pixels",
            self.size,
            Self::SIZES.start(),
            Self::SIZES.end()
        )))
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
    /// Video object segmentation: masks given on any frame (files, SAM boxes, prompts) are
    /// followed exactly; objects are never deleted.
    Vos,
}

impl Temporal {
    /// The name used in config files and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Temporal::Online => "online",
            Temporal::SemiOnline => "semionline",
            Temporal::Offline => "offline",
            Temporal::Vos => "vos",
        }
    }

    /// The schedule that suits a segmenter of `kind`: VOS for reference masks, semi-online for
    /// proposals.
    pub fn natural_for(kind: SegmenterKind) -> Temporal {
        match kind {
            SegmenterKind::Reference => Temporal::Vos,
            SegmenterKind::Proposals => Temporal::SemiOnline,
        }
    }

    /// Fails when this schedule cannot run a segmenter of `kind` (named `segmenter`): reference
    /// masks need `vos`, proposals need one of the others.
    pub fn check_segmenter(self, kind: SegmenterKind, segmenter: &str) -> Result<()> {
        let ok = (kind == SegmenterKind::Reference) == (self == Temporal::Vos);
        if ok {
            return Ok(());
        }
        Err(Error::Config(match kind {
            SegmenterKind::Reference => format!(
                "segmenter {segmenter} gives masks to follow exactly, which needs tracker.temporal = \"vos\" (--temporal vos), not \"{}\"",
                self.name()
            ),
            SegmenterKind::Proposals => format!(
                "segmenter {segmenter} proposes segments, which tracker.temporal = \"vos\" cannot merge: use online, semionline or offline"
            ),
        }))
    }
}

impl std::str::FromStr for Temporal {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "online" => Ok(Temporal::Online),
            "semionline" => Ok(Temporal::SemiOnline),
            "offline" => Ok(Temporal::Offline),
            "vos" => Ok(Temporal::Vos),
            other => Err(Error::Config(format!(
                "unknown temporal setting {other:?} (expected online, semionline, offline or vos)"
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
    /// Write a memory frame every this many frames (the propagator's memory schedule).
    pub mem_every: usize,
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
            mem_every: 5,
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

/// `Ok` when every check holds, else a config error with the first failing check's message.
pub(crate) fn first_failure(checks: &[(bool, &str)]) -> Result<()> {
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
        self.refine.validate()?;
        let t = &self.tracker;
        let checks: [(bool, &str); 5] = [
            (
                t.detection_every >= 1,
                "tracker.detection_every must be at least 1",
            ),
            (t.mem_every >= 1, "tracker.mem_every must be at least 1"),
            (
                t.num_voting_frames >= 1,
                "tracker.num_voting_frames must be at least 1",
            ),
            (
                (0.0..1.0).contains(&t.support_iou) && (0.0..1.0).contains(&t.merge_iou),
                "tracker.support_iou and tracker.merge_iou must be in [0, 1)",
            ),
            (t.alpha >= 0.0, "tracker.alpha must not be negative"),
        ];
        first_failure(&checks)?;
        self.input.validate()?;
        if let Some(s) = &self.segmenter {
            s.validate()?;
        }
        self.propagator.validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_out_of_range_name_the_valid_range() {
        for size in [-1, 16, 480, 8192] {
            InputConfig { size }.validate().unwrap();
        }
        for size in [0, -5, 1, 8, 15, 8193, 100_000] {
            let mut c = Config::default();
            c.input.size = size;
            let e = c.validate().unwrap_err().to_string();
            assert!(
                e.contains(&size.to_string()) && e.contains("-1") && e.contains("16 to 8192"),
                "{size}: {e}"
            );
        }
        let e = toml::from_str::<Config>("[input]\nsize = 0\n")
            .unwrap()
            .validate()
            .unwrap_err()
            .to_string();
        assert!(e.contains("input.size"), "{e}");
    }

    #[test]
    fn defaults_are_the_papers() {
        let c = Config::default();
        assert_eq!(c.input.size, 480);
        assert_eq!(c.tracker.temporal, Temporal::SemiOnline);
        assert_eq!(
            (c.tracker.detection_every, c.tracker.num_voting_frames),
            (5, 3)
        );
        let m = MemoryConfig::default();
        assert_eq!((m.top_k, c.tracker.mem_every), (30, 5));
        assert_eq!((m.max_mid_term_frames, m.min_mid_term_frames), (10, 5));
        assert_eq!((m.max_long_term_elements, m.num_prototypes), (10000, 128));
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
        assert_eq!(c.propagator, PropagatorSpec::default());

        std::fs::write(&p, "[tracker]\ndetection_evry = 2\n").unwrap();
        let e = Config::from_toml_file(&p).unwrap_err().to_string();
        assert!(e.contains("detection_evry") && e.contains("c.toml"), "{e}");

        std::fs::write(
            &p,
            "[propagator]\nkind = \"deva\"\n[propagator.memory]\nmin_mid_term_frames = 12\n",
        )
        .unwrap();
        let e = Config::from_toml_file(&p).unwrap_err().to_string();
        assert!(e.contains("min_mid_term_frames"), "{e}");
    }
}
