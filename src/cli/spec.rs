//! Flags → specs: the command line's names for segmenters, propagators, schedules and output
//! formats, and how `deva track`'s flags become the `[segmenter]` and `[propagator]` specs
//! (settings from `--config` are kept when the flag names the same kind).

use super::args::{PipelineArgs, PropagatorFlag, SegmenterName};
use anyhow::{bail, Context};
use deva::propagator::{DevaSpec, PropagatorSpec};
use deva::segmenter::entityseg::EntitySegSpec;
use deva::segmenter::grounded::TextSpec;
use deva::segmenter::mask2former::Mask2FormerSpec;
use deva::segmenter::referformer::ReferringSpec;
use deva::segmenter::saliency::SaliencyConfig;
use deva::segmenter::sam::{parse_boxes, SamConfig};
use deva::segmenter::{FolderSpec, SamBoxesSpec, SegmenterSpec};
use deva::Config;
use std::path::Path;

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
    } else if !args.referring.is_empty() {
        let settings = match from_config {
            Some(SegmenterSpec::Referring(r)) => r,
            _ => ReferringSpec::default(),
        };
        SegmenterSpec::Referring(ReferringSpec {
            expressions: args.referring.clone(),
            weights: args
                .referformer_weights
                .clone()
                .or(settings.weights.clone()),
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
    } else if let Some(SegmenterName::Entityseg) = args.segmenter {
        match (from_config, &args.entityseg_weights) {
            (Some(SegmenterSpec::Entityseg(e)), w) => SegmenterSpec::Entityseg(EntitySegSpec {
                weights: w.clone().unwrap_or(e.weights.clone()),
                ..e
            }),
            (_, Some(w)) => SegmenterSpec::Entityseg(EntitySegSpec::new(w.clone())),
            (_, None) => bail!(
                "--segmenter entityseg needs --entityseg-weights FILE or a [segmenter] section \
                 with kind = \"entityseg\" in --config (see configs/davis17_unsupervised.toml)"
            ),
        }
    } else {
        if args.entityseg_weights.is_some() {
            bail!("--entityseg-weights needs --segmenter entityseg");
        }
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

/// The configuration: built-in defaults, then the config file, then flags (segmenter and
/// propagator flags become the `[segmenter]` and `[propagator]` specs).
pub fn resolve_config(args: &PipelineArgs) -> anyhow::Result<Config> {
    let mut c = match &args.config {
        Some(p) => Config::from_toml_file(p)?,
        None => Config::default(),
    };
    let t = &mut c.tracker;
    if let Some(v) = args.detection_every {
        t.detection_every = v;
    }
    if let Some(v) = args.num_voting_frames {
        t.num_voting_frames = v;
    }
    if let Some(v) = args.max_missed_detection_count {
        t.max_missed_detection_count = v;
    }
    if let Some(v) = args.max_num_objects {
        t.max_num_objects = v;
    }
    if let Some(v) = args.size {
        c.input.size = v;
    }
    c.segmenter = segmenter(args, c.segmenter.take())?;
    c.propagator = propagator(args.propagator, args.weights.as_deref(), &c.propagator)?;
    if let Some(v) = args.temporal {
        c.tracker.temporal = v.into();
    } else if args.init_masks.is_some() || args.init_box.is_some() {
        c.tracker.temporal = deva::config::Temporal::Vos;
    }
    c.validate().context("settings after applying the flags")?;
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use deva::segmenter::saliency::SaliencyModel;

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
        assert_eq!(
            "entityseg".parse::<SegmenterName>().unwrap(),
            SegmenterName::Entityseg
        );
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
