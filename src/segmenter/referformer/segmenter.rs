//! ReferFormer as DEVA's image segmenter for referring expressions: every expression is one
//! object (id = its position + 1); on each frame the best-scoring query's mask of each
//! expression is painted, lower scores first, so that where two overlap the more confident one
//! wins.

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

use super::model::ReferFormer;
use crate::error::{Error, Result};
use crate::mask::{BinaryMask, IdMap, ObjectId, SegmentInfo, Segmentation};
use crate::models::ModelStore;
use crate::nn::resample::resize_bilinear;
use crate::segmenter::grounded::{preprocess, ResizeRule, TextTokenizer};
use crate::segmenter::ImageSegmenter;
use crate::video::Frame;

/// Settings of the referring segmenter (`[segmenter] kind = "referring"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReferringSpec {
    /// ReferFormer checkpoint in the official key layout (`.pth` or safetensors).
    #[serde(default)]
    pub weights: Option<PathBuf>,
    /// RoBERTa `tokenizer.json` (byte-level BPE); default: `tokenizer.json` beside the
    /// weights.
    #[serde(default)]
    pub tokenizer: Option<PathBuf>,
    /// The referring expressions; expression `i` becomes object `i + 1` (usually given on the
    /// command line with `--referring`).
    #[serde(default)]
    pub expressions: Vec<String>,
    /// Shorter side of the network input (the official inference's `Resize(360)`).
    #[serde(default = "default_size")]
    pub size: usize,
    /// Probability above which a pixel belongs to the mask (official 0.5).
    #[serde(default = "default_threshold")]
    pub threshold: f32,
}

impl Default for ReferringSpec {
    /// No weights and no expressions yet; the official input size and threshold.
    fn default() -> Self {
        ReferringSpec {
            weights: None,
            tokenizer: None,
            expressions: Vec::new(),
            size: default_size(),
            threshold: default_threshold(),
        }
    }
}

/// The manifest's RoBERTa tokenizer (what the official code loads as `roberta-base`).
const ROBERTA_TOKENIZER: &str = "roberta-base-tokenizer";

fn default_size() -> usize {
    360
}

fn default_threshold() -> f32 {
    0.5
}

impl ReferringSpec {
    /// Checks value ranges; messages name the key. (A preset may leave the expressions to
    /// the command line; [`build`](Self::build) needs at least one.)
    pub fn validate(&self) -> Result<()> {
        if self.expressions.iter().any(|e| e.trim().is_empty()) {
            return Err(Error::Config(
                "segmenter.expressions: an expression is empty".into(),
            ));
        }
        if self.size < 32 {
            return Err(Error::Config(format!(
                "segmenter.size {} is too small (at least 32)",
                self.size
            )));
        }
        if !(self.threshold > 0.0 && self.threshold < 1.0) {
            return Err(Error::Config(format!(
                "segmenter.threshold {} must be inside (0, 1)",
                self.threshold
            )));
        }
        Ok(())
    }

    /// Loads the model and tokenizer onto `device`: the weights are a file or a model name of
    /// `store` (`referformer-…`); the tokenizer is `tokenizer`, else a `tokenizer.json` beside
    /// a weights file, else the store's `roberta-base-tokenizer`.
    pub fn build(&self, store: &ModelStore, device: &Device) -> Result<ReferringSegmenter> {
        self.validate()?;
        if self.expressions.is_empty() {
            return Err(Error::Config(
                "the referring segmenter needs at least one expression (--referring or \
                 segmenter.expressions)"
                    .into(),
            ));
        }
        let weights = self.weights.as_deref().ok_or_else(|| {
            Error::Config(
                "the referring segmenter needs ReferFormer weights (segmenter.weights or \
                 --referformer-weights)"
                    .into(),
            )
        })?;
        let weights = store.model_or_file(weights, "referformer", "segmenter.weights")?;
        let beside = weights
            .parent()
            .unwrap_or(Path::new("."))
            .join("tokenizer.json");
        let tokenizer = match &self.tokenizer {
            Some(t) => t.clone(),
            None if beside.is_file() => beside,
            None => store.path(ROBERTA_TOKENIZER)?,
        };
        let tokenizer = TextTokenizer::from_file(&tokenizer)?;
        let model = ReferFormer::load(&weights, device)?;
        ReferringSegmenter::new(model, &tokenizer, self, device.clone())
    }
}

/// One expression's result on one frame.
#[derive(Debug, Clone, PartialEq)]
pub struct Selection {
    /// Index of the best query.
    pub query: usize,
    /// Its score (sigmoid of the best class logit).
    pub score: f32,
    /// Its mask at the frame's size.
    pub mask: BinaryMask,
}

/// ReferFormer with tokenised expressions.
#[derive(Debug)]
pub struct ReferringSegmenter {
    model: ReferFormer,
    tokens: Vec<Vec<i64>>,
    rule: ResizeRule,
    /// The threshold as a logit.
    logit_threshold: f32,
    device: Device,
}

impl ReferringSegmenter {
    /// Tokenises `spec`'s expressions for `model`.
    pub fn new(
        model: ReferFormer,
        tokenizer: &TextTokenizer,
        spec: &ReferringSpec,
        device: Device,
    ) -> Result<Self> {
        let max = model.config().text.max_position_embeddings;
        let tokens = spec
            .expressions
            .iter()
            .map(|e| {
                let ids = tokenizer.encode_batch(&[e.as_str()])?.ids.remove(0);
                // Positions run from padding index + 1 up to the table's end.
                let room = max.saturating_sub(2);
                if ids.len() > room {
                    return Err(Error::invalid(format!(
                        "expression '{e}' has {} tokens; the text encoder takes at most {room}",
                        ids.len()
                    )));
                }
                Ok(ids)
            })
            .collect::<Result<Vec<_>>>()?;
        let t = spec.threshold;
        Ok(ReferringSegmenter {
            model,
            tokens,
            rule: ResizeRule {
                shortest_edge: spec.size,
                longest_edge: usize::MAX,
            },
            logit_threshold: (t / (1.0 - t)).ln(),
            device,
        })
    }

    /// Token ids of each expression.
    pub fn tokens(&self) -> &[Vec<i64>] {
        &self.tokens
    }

    /// The network input of a frame: resized (shorter side to the spec's size, antialiased
    /// bilinear) and normalised, `[1, 3, h, w]`.
    pub fn input(&self, frame: &Frame) -> Result<Tensor> {
        Ok(preprocess(&[(*frame.image).clone()], &self.rule, &self.device)?.pixel_values)
    }

    /// The best query of expression `e` on the network input `input`, its mask brought to
    /// `(width, height)` (bilinear on the logits, then the threshold).
    pub fn select(
        &self,
        input: &Tensor,
        e: usize,
        width: usize,
        height: usize,
    ) -> Result<Selection> {
        let out = self.model.forward(input, &self.tokens[e])?;
        select(
            &out.pred_logits,
            &out.pred_masks,
            width,
            height,
            self.logit_threshold,
        )
    }
}

/// Picks the query with the highest score and thresholds its upsampled mask logits.
pub fn select(
    pred_logits: &Tensor,
    pred_masks: &Tensor,
    width: usize,
    height: usize,
    logit_threshold: f32,
) -> Result<Selection> {
    let scores = ReferFormer::scores(pred_logits)?;
    let (query, score) =
        scores
            .iter()
            .copied()
            .enumerate()
            .fold(
                (0, f32::NEG_INFINITY),
                |b, (i, s)| if s > b.1 { (i, s) } else { b },
            );
    let up = resize_bilinear(
        &pred_masks.get(query)?.unsqueeze(0)?.unsqueeze(0)?,
        height,
        width,
    )?
    .flatten_all()?
    .to_vec1::<f32>()?;
    let mask = BinaryMask::from_vec(
        width,
        height,
        up.into_iter().map(|v| v > logit_threshold).collect(),
    )?;
    Ok(Selection { query, score, mask })
}

impl ImageSegmenter for ReferringSegmenter {
    fn name(&self) -> &str {
        "referring"
    }

    fn segment(&mut self, frame: &Frame, _: Option<&BinaryMask>) -> Result<Option<Segmentation>> {
        let (w, h) = (frame.width(), frame.height());
        let input = self.input(frame)?;
        let mut picks = (0..self.tokens.len())
            .map(|e| Ok((e, self.select(&input, e, w, h)?)))
            .collect::<Result<Vec<_>>>()?;
        picks.sort_by(|a, b| a.1.score.total_cmp(&b.1.score));
        let mut map = IdMap::new(w, h);
        let mut infos = Vec::with_capacity(picks.len());
        for (e, s) in &picks {
            let id = *e as ObjectId + 1;
            map.paint(&s.mask, id)?;
            infos.push(SegmentInfo {
                score: Some(s.score),
                isthing: Some(true),
                ..SegmentInfo::new(id)
            });
        }
        infos.sort_by_key(|s| s.id);
        Ok(Some(Segmentation::of_present(map, &infos)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_parses_with_official_defaults_and_names_bad_keys() {
        let s: ReferringSpec = toml::from_str("expressions = [\"a swan\"]\n").unwrap();
        assert_eq!((s.size, s.threshold, s.weights.is_none()), (360, 0.5, true));
        s.validate().unwrap();
        let empty = ReferringSpec {
            expressions: vec![" ".into()],
            ..ReferringSpec::default()
        };
        assert!(empty
            .validate()
            .unwrap_err()
            .to_string()
            .contains("expressions"));
        let t = ReferringSpec {
            threshold: 1.0,
            ..s.clone()
        };
        assert!(t.validate().unwrap_err().to_string().contains("threshold"));
        let store = ModelStore::new(std::env::temp_dir().join("deva-no-models")).unwrap();
        let e = s.build(&store, &Device::Cpu).unwrap_err().to_string();
        assert!(e.contains("--referformer-weights"), "{e}");
        assert!(toml::from_str::<ReferringSpec>("expresions = []\n").is_err());
    }

    #[test]
    fn select_takes_the_best_class_score_and_thresholds_upsampled_logits() {
        let dev = Device::Cpu;
        // Query 1 has the highest class logit; its 1x2 mask is negative then positive.
        let logits = Tensor::new(&[[0f32, -3.0], [2.0, 1.0], [-1.0, 1.5]], &dev).unwrap();
        let masks = Tensor::new(&[[[5f32, 5.0]], [[-4.0, 4.0]], [[5.0, 5.0]]], &dev).unwrap();
        let s = select(&logits, &masks, 4, 2, 0.0).unwrap();
        assert_eq!(s.query, 1);
        assert!((s.score - 1.0 / (1.0 + (-2f32).exp())).abs() < 1e-6);
        let row = [false, false, true, true];
        assert_eq!(s.mask.data(), [row, row].concat().as_slice());
    }
}
