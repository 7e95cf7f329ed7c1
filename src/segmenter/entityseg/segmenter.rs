//! [`EntitySegSegmenter`]: EntitySeg as an [`ImageSegmenter`] (class-agnostic entities), and
//! its `[segmenter]` section [`EntitySegSpec`] (`kind = "entityseg"`).

use std::path::PathBuf;

use candle_core::Device;
use serde::{Deserialize, Serialize};

use super::config::EntitySegConfig;
use super::model::EntitySeg;
use super::postprocess::EntityMap;
use crate::error::{Error, Result};
use crate::mask::{BinaryMask, IdMap, ObjectId, SegmentInfo, Segmentation};
use crate::models::ModelStore;
use crate::segmenter::ImageSegmenter;
use crate::video::Frame;

/// The `[segmenter]` section of EntitySeg.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntitySegSpec {
    /// Official checkpoint (detectron2 `.pth` with a `model` dict, or safetensors of the
    /// same keys), or a model name of the manifest (`entityseg-…`).
    pub weights: PathBuf,
    /// Model sizes as JSON ([`EntitySegConfig`] fields); default: the published sizes, with the
    /// ResNet depth and deformable stages read from the checkpoint.
    #[serde(default)]
    pub config: Option<PathBuf>,
    /// Entities scoring below this are dropped (their pixels stay unlabelled).
    #[serde(default = "default_score_threshold")]
    pub score_threshold: f32,
    /// At most this many entities per frame, best first.
    #[serde(default = "default_max_entities")]
    pub max_entities: usize,
    /// Shorter side of the network input; default: the config's (800).
    #[serde(default)]
    pub input_size: Option<usize>,
    /// Bound on the longer side; default: the config's (1333).
    #[serde(default)]
    pub max_size: Option<usize>,
}

/// The official demo's default confidence threshold (`demo_result_and_vis.py`).
fn default_score_threshold() -> f32 {
    0.2
}
/// The head's post-NMS limit (`POST_NMS_TOPK_TEST`).
fn default_max_entities() -> usize {
    100
}

impl EntitySegSpec {
    /// The section with `weights` and every other setting at its default.
    pub fn new(weights: PathBuf) -> Self {
        EntitySegSpec {
            weights,
            config: None,
            score_threshold: default_score_threshold(),
            max_entities: default_max_entities(),
            input_size: None,
            max_size: None,
        }
    }

    /// Checks value ranges; messages name the key.
    pub fn validate(&self) -> Result<()> {
        if !(0.0..=1.0).contains(&self.score_threshold) {
            return Err(Error::Config(format!(
                "segmenter.score_threshold must be in [0, 1], got {}",
                self.score_threshold
            )));
        }
        if self.max_entities == 0 {
            return Err(Error::Config(
                "segmenter.max_entities must be positive".into(),
            ));
        }
        if self.input_size == Some(0) {
            return Err(Error::Config(
                "segmenter.input_size must be positive".into(),
            ));
        }
        Ok(())
    }

    /// Loads the model and builds the segmenter.
    pub fn build(&self, store: &ModelStore, device: &Device) -> Result<EntitySegSegmenter> {
        self.validate()?;
        let mut config = match &self.config {
            Some(p) => EntitySegConfig::from_file(p)?,
            None => EntitySegConfig::default(),
        };
        if let Some(s) = self.input_size {
            config.min_size_test = s;
        }
        if let Some(s) = self.max_size {
            config.max_size_test = s;
        }
        config.validate()?;
        let weights = store.model_or_file(&self.weights, "entityseg", "segmenter.weights")?;
        // Without a config file, the backbone's depth and deformable stages come from the
        // checkpoint (R50, R101, R101-DCNv2 of the model zoo).
        let model = match &self.config {
            Some(_) => EntitySeg::load(&weights, &config, device)?,
            None => EntitySeg::load_reading_backbone(&weights, &config, device)?,
        };
        Ok(EntitySegSegmenter {
            model,
            score_threshold: self.score_threshold,
            max_entities: self.max_entities,
            device: device.clone(),
        })
    }
}

/// EntitySeg segmenting single frames.
#[derive(Debug)]
pub struct EntitySegSegmenter {
    model: EntitySeg,
    score_threshold: f32,
    max_entities: usize,
    device: Device,
}

impl EntitySegSegmenter {
    /// The entities of an RGB frame at its size (all of them, before the score threshold).
    pub fn predict(&self, img: &image::RgbImage) -> Result<EntityMap> {
        let (w, h) = (img.width() as usize, img.height() as usize);
        let resized = self.model.resize(img);
        let x = self.model.input(&resized, &self.device)?;
        let rs = (resized.height() as usize, resized.width() as usize);
        self.model.predict(&x, rs, (h, w))
    }

    /// Entities passing the score threshold, at most `max_entities`, as segments `1, 2, …`
    /// (best first; class-agnostic: no category).
    pub fn to_segmentation(&self, m: &EntityMap) -> Result<Segmentation> {
        let mut id: Vec<ObjectId> = vec![0; m.entities.len() + 1];
        let mut segments = Vec::new();
        for (k, e) in m.entities.iter().enumerate() {
            if e.score >= self.score_threshold && segments.len() < self.max_entities {
                let s = segments.len() as ObjectId + 1;
                id[k + 1] = s;
                segments.push(SegmentInfo {
                    id: s,
                    category_id: None,
                    score: Some(e.score),
                    isthing: Some(true),
                });
            }
        }
        let data = m.map.iter().map(|&v| id[v as usize]).collect();
        Ok(Segmentation {
            map: IdMap::from_vec(m.width, m.height, data)?,
            segments,
        })
    }
}

impl ImageSegmenter for EntitySegSegmenter {
    fn name(&self) -> &str {
        "entityseg"
    }

    fn segment(
        &mut self,
        frame: &Frame,
        _tracked: Option<&BinaryMask>,
    ) -> Result<Option<Segmentation>> {
        let m = self.predict(&frame.image)?;
        Ok(Some(self.to_segmentation(&m)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_parses_with_defaults_and_checks_ranges() {
        let s: EntitySegSpec = toml::from_str("weights = \"e.pth\"").unwrap();
        assert_eq!(s.score_threshold, 0.2);
        assert_eq!(s.max_entities, 100);
        assert_eq!(s.input_size, None);
        s.validate().unwrap();
        let bad: EntitySegSpec =
            toml::from_str("weights = \"e.pth\"\nscore_threshold = 1.5").unwrap();
        assert!(bad
            .validate()
            .unwrap_err()
            .to_string()
            .contains("score_threshold"));
        assert!(toml::from_str::<EntitySegSpec>("weights = \"e\"\nbogus = 1").is_err());
    }
}
