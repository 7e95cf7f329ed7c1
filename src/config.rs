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
    /// Segment Anything: automatic mask generator and segment selection.
    pub sam: SamConfig,
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
        match checks.iter().find(|(ok, _)| !ok) {
            Some((_, msg)) => Err(Error::Config(msg.to_string())),
            None => self.sam.validate(),
        }
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
