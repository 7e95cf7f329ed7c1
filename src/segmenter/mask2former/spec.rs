//! [`Mask2FormerSpec`]: the `[segmenter]` section (`kind = "mask2former"`) that builds a
//! [`Mask2FormerSegmenter`].

use std::path::{Path, PathBuf};

use candle_core::Device;
use serde::{Deserialize, Serialize};

use super::config::Mask2FormerConfig;
use super::detectron2::read_detectron2;
use super::infer::infer_config;
use super::labels::LabelSet;
use super::model::Mask2Former;
use super::segmenter::{Mask2FormerSegmenter, Mask2FormerSettings, Mask2FormerTask};
use crate::error::{Error, Result};
use crate::models::ModelStore;
use crate::nn::checkpoint::CheckpointFormat;

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
    /// Checkpoint: a model name of `models/manifest.toml` (`deva models list`, fetched with
    /// `deva models fetch NAME`) or a file (Hugging Face safetensors / `.pth`, or detectron2
    /// `model_final_*.pkl`). `--m2f-weights` overrides it.
    #[serde(default)]
    pub weights: Option<PathBuf>,
    /// Hugging Face `config.json` with the sizes and `id2label`. [default: `config.json`
    /// beside a weights file; a detectron2 `.pkl` without one has its sizes read from its
    /// tensors]
    #[serde(default)]
    pub config: Option<PathBuf>,
    /// Label set: `coco-panoptic`, `coco-instance`, `vipseg` (built in, `models/labels/`) or
    /// a categories file (JSON list of `{id, name, isthing}` in class order). Gives category
    /// ids and thing/stuff; names come from the checkpoint's `id2label` when it has one.
    /// [default: the config's `id2label`, classes listed in `stuff` are stuff]
    #[serde(default)]
    pub labels: Option<String>,
    /// Stuff class ids when no label set is given.
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

impl Default for Mask2FormerSpec {
    fn default() -> Self {
        Mask2FormerSpec {
            weights: None,
            config: None,
            labels: None,
            stuff: Vec::new(),
            task: TaskName::default(),
            threshold: default_threshold(),
            mask_threshold: default_half(),
            overlap_threshold: default_threshold(),
            input_size: default_short(),
            max_size: default_long(),
        }
    }
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

    /// The checkpoint file: a model name resolved through `store` (a missing model is an
    /// error naming `deva models fetch NAME`), else a path.
    pub fn weights_path(&self, store: &ModelStore) -> Result<PathBuf> {
        let w = self.weights.as_ref().ok_or_else(|| {
            Error::Config(
                "mask2former needs weights: give --m2f-weights FILE, or weights = \"NAME\" \
                 (a model of `deva models list`) or a checkpoint path in the [segmenter] \
                 section with kind = \"mask2former\""
                    .into(),
            )
        })?;
        store.model_or_file(w, "mask2former", "segmenter.weights")
    }

    /// Loads the model and labels (weights through `store` when named) and builds the
    /// segmenter on `device`.
    pub fn build(&self, store: &ModelStore, device: &Device) -> Result<Mask2FormerSegmenter> {
        self.validate()?;
        let weights = self.weights_path(store)?;
        let set = self.labels.as_deref().map(LabelSet::resolve).transpose()?;
        // A named model lives in the shared models folder: a config.json there is not its own.
        let named = self.weights.as_deref() != Some(weights.as_path());
        let beside = weights
            .parent()
            .unwrap_or_else(|| Path::new("."))
            .join("config.json");
        let config_path = match &self.config {
            Some(p) => Some(p.clone()),
            None if !named && beside.exists() => Some(beside.clone()),
            None => None,
        };
        let (config, model) = match config_path {
            Some(path) => {
                let config = Mask2FormerConfig::from_file(&path)?;
                let model = Mask2Former::load(&weights, &config, device)?;
                (config, model)
            }
            None if CheckpointFormat::of_file(&weights)?.0 == CheckpointFormat::Pickle => {
                let set = set.as_ref().ok_or_else(|| {
                    Error::Config(format!(
                        "segmenter.labels must name the label set ({} or a file) of {}, which \
                         has no config.json",
                        LabelSet::builtin_names().join(", "),
                        weights.display()
                    ))
                })?;
                let dict = read_detectron2(&weights)?;
                let config = infer_config(&dict, &set.names())?;
                let model = Mask2Former::from_state_dict(dict, &config, device)?;
                (config, model)
            }
            None => {
                return Err(Error::Config(format!(
                    "segmenter.config is not set and {} does not exist (a Hugging Face \
                     checkpoint needs its config.json)",
                    beside.display()
                )))
            }
        };
        let labels = match set {
            Some(set) => set.named_by(&config.id2label)?,
            None => LabelSet::from_names(&config.id2label, &self.stuff),
        };
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
            toml::from_str("weights = \"m.pkl\"\ntask = \"instance\"\nlabels = \"vipseg\"")
                .unwrap();
        assert_eq!(
            (s.task, s.threshold, s.input_size, s.labels.as_deref()),
            (TaskName::Instance, 0.8, 800, Some("vipseg"))
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
    }

    #[test]
    fn weights_resolve_by_name_or_path_and_say_what_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        let store = ModelStore::new(dir.path()).unwrap();
        let spec = |w: Option<PathBuf>| Mask2FormerSpec {
            weights: w,
            ..Default::default()
        };
        let err = |s: Mask2FormerSpec| s.build(&store, &Device::Cpu).unwrap_err().to_string();
        let e = err(spec(Some("m.pkl".into())));
        assert!(e.contains("'m.pkl'") && e.contains("neither a file"), "{e}");
        assert!(e.contains("mask2former-swinb-coco-panoptic"), "{e}");
        let e = err(spec(Some("mask2former-r50-coco-instance".into())));
        assert!(
            e.contains("deva models fetch mask2former-r50-coco-instance"),
            "{e}"
        );
        let e = err(spec(None));
        assert!(
            e.contains("--m2f-weights") && e.contains("[segmenter]"),
            "{e}"
        );
        // A safetensors file without config.json beside it: the error names config.json.
        let st = dir.path().join("w.safetensors");
        std::fs::write(&st, b"\x02\0\0\0\0\0\0\0{}").unwrap();
        let e = err(spec(Some(st.clone())));
        assert!(e.contains("config.json"), "{e}");
        // A pickle without config.json needs a label set.
        let pkl = dir.path().join("m.pkl");
        std::fs::write(&pkl, b"\x80\x02}q\0.").unwrap();
        let e = err(spec(Some(pkl)));
        assert!(
            e.contains("segmenter.labels") && e.contains("coco-panoptic"),
            "{e}"
        );
    }
}
