//! Flags → specs: the command line's names for segmenters, propagators, schedules and output
//! formats, and how `deva track`'s flags become the `[segmenter]` and `[propagator]` specs
//! (settings from `--config` are kept when the flag names the same kind).

use super::track::PipelineArgs;
use anyhow::{bail, Context};
use deva::config::Temporal;
use deva::output::OutputFormat;
use deva::propagator::{DevaSpec, PropagatorSpec};
use deva::segmenter::grounded::TextSpec;
use deva::segmenter::mask2former::Mask2FormerSpec;
use deva::segmenter::saliency::{SaliencyConfig, SaliencyModel};
use deva::segmenter::sam::{parse_boxes, SamConfig};
use deva::segmenter::{FolderSpec, SamBoxesSpec, SegmenterSpec};
use std::path::Path;

/// `--segmenter NAME`: an image model run on the frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegmenterName {
    /// `saliency:u2netp`, `saliency:u2net` or `saliency:isnet`.
    Saliency(SaliencyModel),
    /// `mask2former`: settings (weights, task, thresholds) from the `[segmenter]` section.
    Mask2former,
}

impl SegmenterName {
    /// Every name [`FromStr`](std::str::FromStr) accepts.
    pub const NAMES: [&'static str; 4] = [
        "saliency:u2netp",
        "saliency:u2net",
        "saliency:isnet",
        "mask2former",
    ];
}

impl std::str::FromStr for SegmenterName {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> anyhow::Result<Self> {
        let model = match s {
            "mask2former" => return Ok(SegmenterName::Mask2former),
            "saliency:u2netp" => SaliencyModel::U2netp,
            "saliency:u2net" => SaliencyModel::U2net,
            "saliency:isnet" => SaliencyModel::Isnet,
            other => bail!(
                "unknown segmenter {other:?} (expected one of {})",
                Self::NAMES.join(", ")
            ),
        };
        Ok(SegmenterName::Saliency(model))
    }
}

/// `--propagator NAME`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PropagatorFlag {
    /// Weight-free optical flow (DIS) with occlusion filling and colour re-anchoring.
    Flow,
    /// The DEVA propagation network (needs its weights).
    Deva,
    /// Zero motion: masks stay where they were (a weight-free baseline).
    Static,
    /// No propagation: every frame gets its own image segmentation (a baseline).
    None,
}

/// `--temporal MODE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TemporalFlag {
    /// Merge each detection_every-th frame's segmentation.
    Online,
    /// Consensus over num_voting_frames frames.
    Semionline,
    /// Whole video buffered, key-frame consensus.
    Offline,
    /// Given masks followed exactly.
    Vos,
}

impl From<TemporalFlag> for Temporal {
    fn from(t: TemporalFlag) -> Temporal {
        match t {
            TemporalFlag::Online => Temporal::Online,
            TemporalFlag::Semionline => Temporal::SemiOnline,
            TemporalFlag::Offline => Temporal::Offline,
            TemporalFlag::Vos => Temporal::Vos,
        }
    }
}

/// `--format FORMAT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FormatFlag {
    /// Palette PNGs per video folder (ids up to 255), no JSON.
    Davis,
    /// RGB-id PNGs under pan_pred/ and one pred.json.
    Vipseg,
    /// RGB-id PNGs and pred.json with COCO RLEs per `<dataset>/<sequence>`.
    Burst,
    /// Annotations/ RGB-id PNGs and pred.json.
    Demo,
}

impl From<FormatFlag> for OutputFormat {
    fn from(f: FormatFlag) -> OutputFormat {
        match f {
            FormatFlag::Davis => OutputFormat::Davis,
            FormatFlag::Vipseg => OutputFormat::Vipseg,
            FormatFlag::Burst => OutputFormat::Burst,
            FormatFlag::Demo => OutputFormat::Demo,
        }
    }
}

/// The segmenter spec of the flags; `from_config` (the `[segmenter]` section) gives the
/// settings when a flag names the same kind, and the spec when no segmenter flag is given.
pub fn segmenter(
    args: &PipelineArgs,
    from_config: Option<SegmenterSpec>,
) -> anyhow::Result<Option<SegmenterSpec>> {
    let folder = |dir: &Path| FolderSpec {
        dir: dir.to_path_buf(),
        resize_masks: args.resize_masks,
    };
    let spec = if let Some(dir) = &args.detections {
        SegmenterSpec::Detections(folder(dir))
    } else if let Some(dir) = &args.init_masks {
        SegmenterSpec::Masks(folder(dir))
    } else if let Some(text) = &args.init_box {
        let variant = match &from_config {
            Some(SegmenterSpec::SamBoxes(b)) => b.variant,
            Some(SegmenterSpec::SamAuto(c)) => c.variant,
            _ => Default::default(),
        };
        SegmenterSpec::SamBoxes(SamBoxesSpec {
            weights: args.sam_weights.clone(),
            variant,
            frame: 0,
            boxes: parse_boxes(text).context("--init-box")?,
        })
    } else if let Some(prompt) = &args.prompt {
        let settings = match from_config {
            Some(SegmenterSpec::Text(t)) => t,
            _ => TextSpec::default(),
        };
        SegmenterSpec::Text(TextSpec {
            prompt: prompt.clone(),
            weights: args.gdino_weights.clone().or(settings.weights.clone()),
            sam_weights: args.sam_weights.clone().or(settings.sam_weights.clone()),
            ..settings
        })
    } else if args.sam_auto {
        let mut sam = match from_config {
            Some(SegmenterSpec::SamAuto(c)) => c,
            _ => SamConfig::default(),
        };
        if let Some(w) = &args.sam_weights {
            sam.weights = Some(w.clone());
        }
        SegmenterSpec::SamAuto(sam)
    } else if let Some(SegmenterName::Saliency(model)) = args.segmenter {
        let settings = match from_config {
            Some(SegmenterSpec::Saliency(c)) => c,
            _ => SaliencyConfig::default(),
        };
        SegmenterSpec::Saliency(SaliencyConfig { model, ..settings })
    } else if let Some(SegmenterName::Mask2former) = args.segmenter {
        match from_config {
            Some(spec @ SegmenterSpec::Mask2former(_)) => spec,
            _ if args.m2f_weights.is_some() => SegmenterSpec::Mask2former(Default::default()),
            _ => bail!(
                "--segmenter mask2former takes its settings from --config: add a [segmenter] \
                 section with kind = \"mask2former\" and weights = \"<checkpoint>\" (see \
                 configs/vipseg_online.toml), or give --m2f-weights FILE"
            ),
        }
    } else {
        return with_m2f_weights(from_config, args.m2f_weights.as_deref());
    };
    with_m2f_weights(Some(spec), args.m2f_weights.as_deref())
}

/// `spec` with `--m2f-weights` applied: only a Mask2Former segmenter takes it.
fn with_m2f_weights(
    spec: Option<SegmenterSpec>,
    weights: Option<&Path>,
) -> anyhow::Result<Option<SegmenterSpec>> {
    match (spec, weights) {
        (Some(SegmenterSpec::Mask2former(m)), Some(w)) => {
            Ok(Some(SegmenterSpec::Mask2former(Mask2FormerSpec {
                weights: Some(w.to_path_buf()),
                ..m
            })))
        }
        (spec, Some(_)) => bail!(
            "--m2f-weights gives Mask2Former's weights, which the segmenter {} does not use \
             (add --segmenter mask2former)",
            spec.as_ref().map_or("(none)", |s| s.name())
        ),
        (spec, None) => Ok(spec),
    }
}

/// The propagator spec of `--propagator` and `--weights`; `from_config` (the `[propagator]`
/// section) gives the settings when the flag names the same kind, and the spec when neither
/// flag is given. `--weights` alone selects the DEVA network.
pub fn propagator(
    flag: Option<PropagatorFlag>,
    weights: Option<&Path>,
    from_config: &PropagatorSpec,
) -> anyhow::Result<PropagatorSpec> {
    let flag = flag.or(weights.map(|_| PropagatorFlag::Deva));
    let spec = match (flag, from_config) {
        (None, spec) => spec.clone(),
        (Some(PropagatorFlag::Flow), spec @ PropagatorSpec::Flow(_)) => spec.clone(),
        (Some(PropagatorFlag::Flow), _) => PropagatorSpec::Flow(Default::default()),
        (Some(PropagatorFlag::Deva), PropagatorSpec::Deva(d)) => PropagatorSpec::Deva(d.clone()),
        (Some(PropagatorFlag::Deva), _) => PropagatorSpec::Deva(DevaSpec::default()),
        (Some(PropagatorFlag::Static), _) => PropagatorSpec::Static,
        (Some(PropagatorFlag::None), _) => PropagatorSpec::None,
    };
    match (spec, weights) {
        (PropagatorSpec::Deva(d), Some(w)) => Ok(PropagatorSpec::Deva(DevaSpec {
            weights: Some(w.to_path_buf()),
            ..d
        })),
        (spec, Some(_)) => bail!(
            "--weights gives the DEVA network's weights, which --propagator {} does not use",
            spec.name()
        ),
        (spec, None) => Ok(spec),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segmenter_names_parse_and_unknown_names_list_the_choices() {
        for (name, model) in SegmenterName::NAMES.iter().zip([
            SaliencyModel::U2netp,
            SaliencyModel::U2net,
            SaliencyModel::Isnet,
        ]) {
            assert_eq!(
                name.parse::<SegmenterName>().unwrap(),
                SegmenterName::Saliency(model)
            );
        }
        let e = "saliency:u3net"
            .parse::<SegmenterName>()
            .unwrap_err()
            .to_string();
        assert!(e.contains("u3net") && e.contains("saliency:isnet"), "{e}");
    }

    #[test]
    fn m2f_weights_replace_the_sections_weights_and_need_mask2former() {
        let w = Path::new("m.pkl");
        let section = SegmenterSpec::Mask2former(Mask2FormerSpec {
            weights: Some("mask2former-r50-coco-panoptic".into()),
            labels: Some("coco-panoptic".into()),
            ..Default::default()
        });
        let Some(SegmenterSpec::Mask2former(m)) =
            with_m2f_weights(Some(section.clone()), Some(w)).unwrap()
        else {
            panic!("not mask2former")
        };
        assert_eq!(
            (m.weights.as_deref(), m.labels.as_deref()),
            (Some(w), Some("coco-panoptic"))
        );
        assert_eq!(
            with_m2f_weights(Some(section.clone()), None).unwrap(),
            Some(section)
        );
        let e = with_m2f_weights(Some(SegmenterSpec::Prompts), Some(w))
            .unwrap_err()
            .to_string();
        assert!(e.contains("--m2f-weights") && e.contains("prompts"), "{e}");
        assert!(with_m2f_weights(None, Some(w)).is_err());
    }

    #[test]
    fn the_default_propagator_follows_the_weights() {
        let flow = PropagatorSpec::default();
        assert_eq!(propagator(None, None, &flow).unwrap(), flow);
        let w = Path::new("w.pth");
        assert_eq!(
            propagator(None, Some(w), &flow).unwrap(),
            PropagatorSpec::Deva(DevaSpec {
                weights: Some(w.to_path_buf()),
                ..Default::default()
            })
        );
        let e = propagator(Some(PropagatorFlag::Static), Some(w), &flow)
            .unwrap_err()
            .to_string();
        assert!(e.contains("--weights") && e.contains("static"), "{e}");
    }

    #[test]
    fn config_settings_survive_a_flag_of_the_same_kind() {
        let memory = deva::config::MemoryConfig {
            top_k: 7,
            ..Default::default()
        };
        let deva = PropagatorSpec::Deva(DevaSpec {
            weights: None,
            memory: memory.clone(),
        });
        let w = Path::new("w.pth");
        let PropagatorSpec::Deva(d) =
            propagator(Some(PropagatorFlag::Deva), Some(w), &deva).unwrap()
        else {
            panic!("not deva")
        };
        assert_eq!((d.memory, d.weights.as_deref()), (memory, Some(w)));
        assert_eq!(
            propagator(Some(PropagatorFlag::Flow), None, &deva).unwrap(),
            PropagatorSpec::default()
        );
    }
}
