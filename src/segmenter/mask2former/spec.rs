//! [`Mask2FormerSpec`]: the `[segmenter]` section (`kind = "mask2former"`) that builds a
//! [`Mask2FormerSegmenter`].

use std::path::PathBuf;

use candle_core::Device;
use serde::{Deserialize, Serialize};

use super::config::Mask2FormerConfig;
use super::labels::LabelSet;
use super::model::Mask2Former;
use super::segmenter::{Mask2FormerSegmenter, Mask2FormerSettings, Mask2FormerTask};
use crate::error::{Error, Result};

/// Output of the segmenter as written in config files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskName {
    /// Panoptic segments (VIPSeg).
    #[default]
    Panoptic,
    /// Instances (BURST).
    Instance,
}

/// Mask2Former settings: checkpoint, its `config.json`, label set, task, thresholds and
/// input size (defaults: detectron2's test settings, shorter side 800 capped at 1333).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mask2FormerSpec {
    /// Checkpoint: Hugging Face safetensors / `.pth`, or detectron2 `model_final_*.pkl`.
    pub weights: PathBuf,
    /// Hugging Face `config.json` with the sizes and `id2label`. [default: `config.json`
    /// beside the weights]
    #[serde(default)]
    pub config: Option<PathBuf>,
    /// Categories file (JSON list of `{id, name, isthing}` in class order). [default: the
    /// config's `id2label`, classes listed in `stuff` are stuff]
    #[serde(default)]
    pub labels: Option<PathBuf>,
    /// Stuff class ids when no categories file is given.
    #[serde(default)]
    pub stuff: Vec<usize>,
    /// Panoptic or instance output.
    #[serde(default)]
    pub task: TaskName,
    /// Panoptic: minimum class probability; instance: minimum score.
    #[serde(default = "default_threshold")]
    pub threshold: f32,
    /// Panoptic: probability that puts a pixel in a query's own mask.
    #[serde(default = "default_half")]
    pub mask_threshold: f32,
    /// Panoptic: minimum fraction of its own mask a query must win.
    #[serde(default = "default_threshold")]
    pub overlap_threshold: f32,
    /// Shorter side of the network input.
    #[serde(default = "default_short")]
    pub input_size: usize,
    /// Bound on the longer side of the network input.
    #[serde(default = "default_long")]
    pub max_size: usize,
}

fn default_threshold() -> f32 {
    0.8
}
fn default_half() -> f32 {
    0.5
}
fn default_short() -> usize {
    800
}
fn default_long() -> usize {
    1333
}

impl Mask2FormerSpec {
    /// Checks value ranges; messages name the key.
    pub fn validate(&self) -> Result<()> {
        for (name, v) in [
            ("threshold", self.threshold),
            ("mask_threshold", self.mask_threshold),
            ("overlap_threshold", self.overlap_threshold),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return Err(Error::Config(format!(
                    "segmenter.{name} must be in [0, 1], got {v}"
                )));
            }
        }
        if self.input_size == 0 || self.max_size < self.input_size {
            return Err(Error::Config(format!(
                "segmenter.input_size ({}) must be positive and at most max_size ({})",
                self.input_size, self.max_size
            )));
        }
        Ok(())
    }

    /// Loads the model and labels and builds the segmenter on `device`.
    pub fn build(&self, device: &Device) -> Result<Mask2FormerSegmenter> {
        self.validate()?;
        let config_path = match &self.config {
            Some(p) => p.clone(),
            None => self
                .weights
                .parent()
                .unwrap_or_else(|| std::path::Path::new("."))
                .join("config.json"),
        };
        let config = Mask2FormerConfig::from_file(&config_path)?;
        let labels = match &self.labels {
            Some(p) => LabelSet::from_file(p)?,
            None => LabelSet::from_names(&config.id2label, &self.stuff),
        };
        let model = Mask2Former::load(&self.weights, &config, device)?;
        let settings = Mask2FormerSettings {
            task: match self.task {
                TaskName::Panoptic => Mask2FormerTask::Panoptic,
                TaskName::Instance => Mask2FormerTask::Instance,
            },
            threshold: self.threshold,
            mask_threshold: self.mask_threshold,
            overlap_threshold: self.overlap_threshold,
            shortest_edge: self.input_size,
            longest_edge: self.max_size,
        };
        Mask2FormerSegmenter::new(model, labels, settings, device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_parses_with_defaults_and_checks_ranges() {
        let s: Mask2FormerSpec =
            toml::from_str("weights = \"m.pkl\"\ntask = \"instance\"").unwrap();
        assert_eq!(
            (s.task, s.threshold, s.input_size),
            (TaskName::Instance, 0.8, 800)
        );
        s.validate().unwrap();
        let bad = Mask2FormerSpec {
            threshold: 1.5,
            ..s.clone()
        };
        assert!(bad
            .validate()
            .unwrap_err()
            .to_string()
            .contains("threshold"));
        assert!(toml::from_str::<Mask2FormerSpec>("weights = \"m\"\ntresh = 1").is_err());
        let e = s.build(&Device::Cpu).unwrap_err().to_string();
        assert!(e.contains("config.json"), "{e}");
    }
}
