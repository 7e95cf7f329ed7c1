//! Building a pipeline from names: which image segmenter and which propagator, loaded from the
//! models folder or a weights file. The command line (`deva track`, `deva demo`) and tests use
//! these factories; the algorithms live in `segmenter` and `propagator`.

use crate::config::Config;
use crate::error::{Error, Result};
use crate::mask::{SegmentInfo, Segmentation};
use crate::models::Manifest;
use crate::output::{FrameResult, Tracking};
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

/// All objects of a segmentation as one object, id 1 (binary foreground, the DAVIS-2016
/// convention). Its information is that of the largest object.
pub fn foreground(seg: &Segmentation) -> Segmentation {
    let map = seg.map.remap(|id| u32::from(id != 0));
    let areas = seg.map.areas();
    let largest = seg
        .segments
        .iter()
        .filter_map(|s| Some((*areas.get(&s.id)?, s)))
        .max_by_key(|(area, s)| (*area, std::cmp::Reverse(s.id)));
    let segments = match largest {
        Some((_, s)) => vec![SegmentInfo { id: 1, ..s.clone() }],
        None if map.data().contains(&1) => vec![SegmentInfo::new(1)],
        None => Vec::new(),
    };
    Segmentation { map, segments }
}

/// A tracking whose results are merged into one foreground object ([`foreground`]).
pub struct Foreground<'a>(pub &'a mut dyn Tracking);

impl Foreground<'_> {
    fn convert(results: Vec<FrameResult>) -> Vec<FrameResult> {
        results
            .into_iter()
            .map(|r| FrameResult {
                segmentation: foreground(&r.segmentation),
                ..r
            })
            .collect()
    }
}

impl Tracking for Foreground<'_> {
    fn step(&mut self, frame: crate::video::Frame) -> Result<Vec<FrameResult>> {
        self.0.step(frame).map(Self::convert)
    }

    fn finish(&mut self) -> Result<Vec<FrameResult>> {
        self.0.finish().map(Self::convert)
    }
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
    fn foreground_merges_every_object_into_object_one() {
        use crate::mask::IdMap;
        let map = IdMap::from_vec(3, 2, vec![0, 7, 7, 9, 0, 7]).unwrap();
        let info = |id, score| SegmentInfo {
            id,
            category_id: Some(id),
            score: Some(score),
            isthing: None,
        };
        let seg = Segmentation {
            map,
            segments: vec![info(9, 0.2), info(7, 0.9)],
        };
        let fg = foreground(&seg);
        assert_eq!(fg.map.data(), [0, 1, 1, 1, 0, 1]);
        // The largest object (7, three pixels) gives its information.
        assert_eq!(
            fg.segments,
            vec![info(7, 0.9)]
                .into_iter()
                .map(|s| SegmentInfo { id: 1, ..s })
                .collect::<Vec<_>>()
        );
        fg.validate().unwrap();
        let empty = Segmentation::from_map(IdMap::new(2, 2));
        assert_eq!(foreground(&empty), empty);
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
