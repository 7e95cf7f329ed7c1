//! Salient-object segmenters: U²-Net, U²-Netp and IS-Net (candle ports of the ONNX files
//! listed in `models/manifest.toml`). Each frame gives at most one segment: the salient
//! object(s), thresholded from the network's saliency map.

pub mod mask;
pub mod network;
pub mod preprocess;

use crate::error::{Error, Result};
use crate::mask::{BinaryMask, Segmentation};
use crate::models::ModelStore;
use crate::nn::onnx;
use crate::segmenter::ImageSegmenter;
use crate::video::Frame;
use candle_core::{Device, Tensor};
use image::RgbImage;
use mask::MaskRule;
use network::{SaliencyMaps, U2NetFamily};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Which saliency network to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SaliencyModel {
    /// U²-Netp (4.6 MB), rembg preprocessing at 320×320.
    #[default]
    U2netp,
    /// U²-Net (176 MB), rembg preprocessing at 320×320.
    U2net,
    /// IS-Net / DIS (88 MB, fp16 weights run in f32), imgly preprocessing at 1024×1024.
    Isnet,
}

impl SaliencyModel {
    /// Its name in the model manifest (`deva models fetch NAME`).
    pub fn manifest_name(self) -> &'static str {
        match self {
            SaliencyModel::U2netp => "u2netp",
            SaliencyModel::U2net => "u2net",
            SaliencyModel::Isnet => "isnet",
        }
    }

    /// Side of the square network input.
    pub fn input_size(self) -> usize {
        match self {
            SaliencyModel::U2netp | SaliencyModel::U2net => 320,
            SaliencyModel::Isnet => 1024,
        }
    }

    /// The network input for an image, prepared exactly as the model's application does.
    pub fn prepare(self, image: &RgbImage, device: &Device) -> Result<Tensor> {
        let s = self.input_size();
        match self {
            SaliencyModel::U2netp | SaliencyModel::U2net => {
                preprocess::rembg_tensor(&preprocess::resize_lanczos(image, s, s), device)
            }
            SaliencyModel::Isnet => {
                preprocess::imgly_tensor(&preprocess::resize_bilinear_imgly(image, s, s), device)
            }
        }
    }
}

/// The `[saliency]` configuration section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SaliencyConfig {
    /// Network: "u2netp", "u2net" or "isnet".
    pub model: SaliencyModel,
    /// Saliency (a sigmoid probability) above which a pixel is salient.
    pub threshold: f32,
    /// Connected components smaller than this fraction of the frame are dropped.
    pub min_blob_fraction: f64,
    /// Keep at most this many connected components, largest first; 0 keeps all.
    pub keep_largest: usize,
}

impl Default for SaliencyConfig {
    fn default() -> Self {
        SaliencyConfig {
            model: SaliencyModel::U2netp,
            threshold: 0.5,
            min_blob_fraction: 0.001,
            keep_largest: 0,
        }
    }
}

impl SaliencyConfig {
    /// Checks value ranges.
    pub fn validate(&self) -> Result<()> {
        if !(self.threshold > 0.0 && self.threshold < 1.0) {
            return Err(Error::Config(format!(
                "saliency.threshold must be in (0, 1), got {}",
                self.threshold
            )));
        }
        if !(0.0..1.0).contains(&self.min_blob_fraction) {
            return Err(Error::Config(format!(
                "saliency.min_blob_fraction must be in [0, 1), got {}",
                self.min_blob_fraction
            )));
        }
        Ok(())
    }

    fn rule(&self) -> MaskRule {
        MaskRule {
            threshold: self.threshold,
            min_blob_fraction: self.min_blob_fraction,
            keep_largest: self.keep_largest,
        }
    }
}

/// A salient-object network with its preprocessing.
#[derive(Debug, Clone)]
pub struct SaliencyNetwork {
    model: SaliencyModel,
    network: U2NetFamily,
    device: Device,
}

impl SaliencyNetwork {
    /// Loads `model` from an ONNX file.
    pub fn load(model: SaliencyModel, path: &Path, device: &Device) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let graph = onnx::Model::parse(&bytes, path)?.graph;
        let network = U2NetFamily::from_graph(&graph, path, device)?;
        if network.in_channels() != 3 {
            return Err(Error::checkpoint(
                path,
                format!(
                    "the network reads {} channels, not RGB",
                    network.in_channels()
                ),
            ));
        }
        Ok(SaliencyNetwork {
            model,
            network,
            device: device.clone(),
        })
    }

    /// Loads `model` from the models store (a verified file).
    pub fn from_store(model: SaliencyModel, store: &ModelStore, device: &Device) -> Result<Self> {
        Self::load(model, &store.path(model.manifest_name())?, device)
    }

    /// Which model this is.
    pub fn model(&self) -> SaliencyModel {
        self.model
    }

    /// All output maps for a prepared `[1, 3, S, S]` input.
    pub fn forward(&self, input: &Tensor) -> Result<SaliencyMaps> {
        self.network.forward(input)
    }

    /// The primary saliency map of an image, at the network's input size (row-major, side
    /// [`SaliencyModel::input_size`]).
    pub fn saliency(&self, image: &RgbImage) -> Result<Vec<f32>> {
        let input = self.model.prepare(image, &self.device)?;
        let maps = self.forward(&input)?;
        Ok(maps.primary().flatten_all()?.to_vec1()?)
    }
}

/// Segments the salient object(s) of each frame as one segment (id 1, score = mean saliency
/// inside). Objects already tracked are not excluded: the merge step matches the segment to
/// them by overlap.
#[derive(Debug, Clone)]
pub struct SaliencySegmenter {
    network: SaliencyNetwork,
    rule: MaskRule,
}

impl SaliencySegmenter {
    /// A segmenter from a loaded network and the `[saliency]` settings (whose `model` must
    /// match the network).
    pub fn new(network: SaliencyNetwork, config: &SaliencyConfig) -> Result<Self> {
        config.validate()?;
        if network.model() != config.model {
            return Err(Error::Config(format!(
                "saliency.model is {:?} but the loaded network is {:?}",
                config.model,
                network.model()
            )));
        }
        Ok(SaliencySegmenter {
            network,
            rule: config.rule(),
        })
    }

    /// Loads the configured model from the models store.
    pub fn from_store(
        config: &SaliencyConfig,
        store: &ModelStore,
        device: &Device,
    ) -> Result<Self> {
        Self::new(
            SaliencyNetwork::from_store(config.model, store, device)?,
            config,
        )
    }
}

impl ImageSegmenter for SaliencySegmenter {
    fn name(&self) -> &str {
        self.network.model().manifest_name()
    }

    fn segment(
        &mut self,
        frame: &Frame,
        _tracked: Option<&BinaryMask>,
    ) -> Result<Option<Segmentation>> {
        let map = self.network.saliency(&frame.image)?;
        let s = self.network.model().input_size();
        Ok(Some(self.rule.segment(
            &map,
            s,
            s,
            frame.width(),
            frame.height(),
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_defaults_validate_and_parse_from_toml() {
        let c = SaliencyConfig::default();
        assert_eq!(c.model, SaliencyModel::U2netp);
        assert_eq!(c.threshold, 0.5);
        c.validate().unwrap();
        let c: SaliencyConfig = toml::from_str("model = \"isnet\"\nkeep_largest = 2\n").unwrap();
        assert_eq!((c.model, c.keep_largest), (SaliencyModel::Isnet, 2));
        assert!(toml::from_str::<SaliencyConfig>("model = \"u3net\"").is_err());
        let bad = SaliencyConfig {
            threshold: 1.0,
            ..SaliencyConfig::default()
        };
        assert!(bad
            .validate()
            .unwrap_err()
            .to_string()
            .contains("threshold"));
    }

    #[test]
    fn config_file_has_a_saliency_section() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        let saliency = |p: &Path| -> Result<SaliencyConfig> {
            match crate::Config::from_toml_file(p)?.segmenter {
                Some(crate::SegmenterSpec::Saliency(c)) => Ok(c),
                other => panic!("not saliency: {other:?}"),
            }
        };
        let section = "[segmenter]\nkind = \"saliency\"\n";
        std::fs::write(&p, format!("{section}model = \"u2net\"\nthreshold = 0.6\n")).unwrap();
        let c: SaliencyConfig = saliency(&p).unwrap();
        assert_eq!(c.model, SaliencyModel::U2net);
        assert_eq!(c.threshold, 0.6);
        assert_eq!(c.keep_largest, SaliencyConfig::default().keep_largest);
        std::fs::write(&p, format!("{section}threshold = 1.5\n")).unwrap();
        let e = saliency(&p).unwrap_err().to_string();
        assert!(
            e.contains("saliency.threshold") && e.contains("c.toml"),
            "{e}"
        );
        std::fs::write(&p, format!("{section}threshhold = 0.5\n")).unwrap();
        let e = saliency(&p).unwrap_err().to_string();
        assert!(e.contains("threshhold"), "{e}");
    }

    #[test]
    fn every_model_is_in_the_manifest() {
        let m = crate::models::Manifest::builtin().unwrap();
        for model in [
            SaliencyModel::U2netp,
            SaliencyModel::U2net,
            SaliencyModel::Isnet,
        ] {
            assert!(m.get(model.manifest_name()).is_ok());
        }
    }
}
