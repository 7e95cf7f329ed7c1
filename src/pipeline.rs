//! Building a pipeline from names: which image segmenter and which propagator, loaded from the
//! models folder or a weights file. The command line (`deva track`, `deva demo`) and tests use
//! these factories; the algorithms live in `segmenter` and `propagator`.

use crate::config::Config;
use crate::error::{Error, Result};
use crate::models::Manifest;
use crate::propagator::deva::DevaPropagator;
use crate::propagator::{FlowPropagator, Propagator, StaticPropagator};
use crate::segmenter::saliency::{SaliencyConfig, SaliencyModel, SaliencySegmenter};
use std::path::Path;

/// Which propagator carries objects from frame to frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PropagatorChoice {
    /// Weight-free optical flow (DIS) with occlusion filling and colour re-anchoring.
    Flow,
    /// The DEVA propagation network (needs its weights).
    Deva,
    /// Zero motion: masks stay where they were (a weight-free baseline).
    Static,
    /// No propagation: every frame gets its own image segmentation, ids as the segmenter gives
    /// them (a baseline).
    None,
}

impl PropagatorChoice {
    /// The default: the DEVA network when weights are given, otherwise optical flow.
    pub fn default_for(weights: Option<&Path>) -> Self {
        match weights {
            Some(_) => PropagatorChoice::Deva,
            None => PropagatorChoice::Flow,
        }
    }
}

/// Where the weights of the DEVA propagator come from.
#[derive(Debug, Clone, Copy)]
pub enum DevaWeights<'a> {
    /// A checkpoint file (`DEVA-propagation.pth` or a safetensors conversion).
    File(&'a Path),
    /// `deva-propagation` in the models folder.
    ModelsDir(&'a Path),
}

/// Builds the chosen propagator (`None` for image-only mode). `frames` is the video length
/// when known (the DEVA memory decides from it whether to count long-term usage).
pub fn build_propagator(
    choice: PropagatorChoice,
    config: &Config,
    weights: DevaWeights,
    frames: Option<usize>,
) -> Result<Option<Box<dyn Propagator>>> {
    Ok(match choice {
        PropagatorChoice::Flow => Some(Box::new(FlowPropagator::new(config.flow.clone())?)),
        PropagatorChoice::Static => Some(Box::new(StaticPropagator::new())),
        PropagatorChoice::None => None,
        PropagatorChoice::Deva => {
            let path = match weights {
                DevaWeights::File(p) => {
                    if !p.is_file() {
                        return Err(Error::checkpoint(
                            p,
                            "DEVA weights file not found (DEVA-propagation.pth or .safetensors; \
                             `deva models fetch deva-propagation` downloads it)",
                        ));
                    }
                    p.to_path_buf()
                }
                DevaWeights::ModelsDir(dir) => {
                    Manifest::builtin()?.get("deva-propagation")?.locate(dir)?
                }
            };
            let mut p =
                DevaPropagator::from_checkpoint(&path, &config.memory, &crate::nn::device())?;
            p.set_video_length(frames);
            Some(Box::new(p))
        }
    })
}

/// An image segmenter named on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegmenterChoice {
    /// A salient-object network: `saliency:u2netp`, `saliency:u2net` or `saliency:isnet`.
    Saliency(SaliencyModel),
}

impl SegmenterChoice {
    /// Every name [`FromStr`](std::str::FromStr) accepts.
    pub const NAMES: [&'static str; 3] = ["saliency:u2netp", "saliency:u2net", "saliency:isnet"];
}

impl std::str::FromStr for SegmenterChoice {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let model = match s {
            "saliency:u2netp" => SaliencyModel::U2netp,
            "saliency:u2net" => SaliencyModel::U2net,
            "saliency:isnet" => SaliencyModel::Isnet,
            other => {
                return Err(Error::Config(format!(
                    "unknown segmenter {other:?} (expected one of {})",
                    Self::NAMES.join(", ")
                )))
            }
        };
        Ok(SegmenterChoice::Saliency(model))
    }
}

/// Loads a salient-object segmenter: the `[saliency]` settings with their model replaced by
/// `model`, weights from the models folder `dir` (a missing or corrupt file is an error that
/// says `deva models fetch NAME`).
pub fn build_saliency(
    model: SaliencyModel,
    config: &SaliencyConfig,
    dir: &Path,
) -> Result<SaliencySegmenter> {
    let config = SaliencyConfig {
        model,
        ..config.clone()
    };
    SaliencySegmenter::from_models_dir(&config, dir, &crate::nn::device())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segmenter_names_parse_and_unknown_names_list_the_choices() {
        for (name, model) in SegmenterChoice::NAMES.iter().zip([
            SaliencyModel::U2netp,
            SaliencyModel::U2net,
            SaliencyModel::Isnet,
        ]) {
            assert_eq!(
                name.parse::<SegmenterChoice>().unwrap(),
                SegmenterChoice::Saliency(model)
            );
        }
        let e = "saliency:u3net"
            .parse::<SegmenterChoice>()
            .unwrap_err()
            .to_string();
        assert!(e.contains("u3net") && e.contains("saliency:isnet"), "{e}");
    }

    #[test]
    fn the_default_propagator_follows_the_weights() {
        assert_eq!(PropagatorChoice::default_for(None), PropagatorChoice::Flow);
        assert_eq!(
            PropagatorChoice::default_for(Some(Path::new("w.pth"))),
            PropagatorChoice::Deva
        );
    }

    #[test]
    fn missing_weights_and_models_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let c = Config::default();
        let w = dir.path().join("nothing.pth");
        let e = build_propagator(PropagatorChoice::Deva, &c, DevaWeights::File(&w), None)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("nothing.pth") && e.contains("not found"), "{e}");
        let e = build_propagator(
            PropagatorChoice::Deva,
            &c,
            DevaWeights::ModelsDir(dir.path()),
            None,
        )
        .err()
        .unwrap()
        .to_string();
        assert!(e.contains("deva models fetch deva-propagation"), "{e}");
        let e = build_saliency(SaliencyModel::Isnet, &c.saliency, dir.path())
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("deva models fetch isnet"), "{e}");
        for choice in [
            PropagatorChoice::Flow,
            PropagatorChoice::Static,
            PropagatorChoice::None,
        ] {
            let p = build_propagator(choice, &c, DevaWeights::File(&w), None).unwrap();
            assert_eq!(
                p.map(|p| p.name().to_string()),
                match choice {
                    PropagatorChoice::Flow => Some("flow".to_string()),
                    PropagatorChoice::Static => Some("static".to_string()),
                    _ => None,
                }
            );
        }
    }
}
