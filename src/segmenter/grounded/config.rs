//! Grounding-DINO sizes, read from a Hugging Face `config.json` (`GroundingDinoConfig` with a
//! Swin `backbone_config` and a BERT `text_config`).

use serde::Deserialize;
use std::path::Path;

use crate::error::{Error, Result};
use crate::nn::swin::SwinConfig;

/// Sizes of the BERT text encoder. Missing fields take `transformers`' `BertConfig` defaults
/// (bert-base-uncased), as in checkpoints whose `config.json` lists only the differences.
#[derive(Debug, Clone, Deserialize)]
pub struct BertConfig {
    /// Width of the hidden states.
    #[serde(default = "default_bert_hidden")]
    pub hidden_size: usize,
    /// Transformer layers.
    #[serde(default = "default_bert_layers")]
    pub num_hidden_layers: usize,
    /// Attention heads per layer.
    #[serde(default = "default_bert_heads")]
    pub num_attention_heads: usize,
    /// FFN width.
    #[serde(default = "default_bert_ffn")]
    pub intermediate_size: usize,
    /// Vocabulary size.
    #[serde(default = "default_bert_vocab")]
    pub vocab_size: usize,
    /// Rows of the position-embedding table.
    #[serde(default = "default_bert_positions")]
    pub max_position_embeddings: usize,
    /// Rows of the token-type table.
    #[serde(default = "default_type_vocab")]
    pub type_vocab_size: usize,
    /// LayerNorm epsilon.
    #[serde(default = "default_bert_eps")]
    pub layer_norm_eps: f64,
}

fn default_bert_hidden() -> usize {
    768
}
fn default_bert_layers() -> usize {
    12
}
fn default_bert_heads() -> usize {
    12
}
fn default_bert_ffn() -> usize {
    3072
}
fn default_bert_vocab() -> usize {
    30522
}
fn default_bert_positions() -> usize {
    512
}
fn default_type_vocab() -> usize {
    2
}
fn default_bert_eps() -> f64 {
    1e-12
}
fn default_eps() -> f64 {
    1e-5
}
fn default_temperature() -> f64 {
    20.0
}
fn default_max_text_len() -> usize {
    256
}

/// Sizes of a Grounding-DINO model.
#[derive(Debug, Clone, Deserialize)]
pub struct GroundingDinoConfig {
    /// Swin image backbone.
    pub backbone_config: SwinConfig,
    /// BERT text backbone.
    pub text_config: BertConfig,
    /// Transformer width.
    pub d_model: usize,
    /// Encoder (feature enhancer) layers.
    pub encoder_layers: usize,
    /// Decoder layers.
    pub decoder_layers: usize,
    /// Heads of the deformable encoder attention (text enhancer and fusion use half).
    pub encoder_attention_heads: usize,
    /// Heads of the decoder attentions.
    pub decoder_attention_heads: usize,
    /// Encoder FFN width (text enhancer FFN and fusion attention width use half).
    pub encoder_ffn_dim: usize,
    /// Decoder FFN width.
    pub decoder_ffn_dim: usize,
    /// Object queries.
    pub num_queries: usize,
    /// Feature levels (backbone outputs plus extra stride-2 convolutions).
    pub num_feature_levels: usize,
    /// Sampling points per level and head in the encoder.
    pub encoder_n_points: usize,
    /// Sampling points per level and head in the decoder.
    pub decoder_n_points: usize,
    /// Width of the logits (text positions, padded with −∞).
    #[serde(default = "default_max_text_len")]
    pub max_text_len: usize,
    /// Temperature of the vision sine position embedding.
    #[serde(default = "default_temperature")]
    pub positional_embedding_temperature: f64,
    /// LayerNorm / GroupNorm epsilon of the transformer.
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    /// Two-stage query selection (required).
    #[serde(default)]
    pub two_stage: bool,
    /// Decoder targets from `query_position_embeddings` (required).
    #[serde(default)]
    pub embedding_init_target: bool,
    /// Whether the decoder layers share one box head (required).
    #[serde(default)]
    pub decoder_bbox_embed_share: bool,
    /// Whether the encoder proposal head is the decoder's box head (not supported).
    #[serde(default)]
    pub two_stage_bbox_embed_share: bool,
    /// Transformer activation (relu).
    #[serde(default)]
    pub activation_function: Option<String>,
    /// Position embedding type (sine).
    #[serde(default)]
    pub position_embedding_type: Option<String>,
    /// How BERT applies the phrase mask (not part of `config.json`).
    #[serde(skip)]
    pub bert_mask: BertMaskMode,
}

impl GroundingDinoConfig {
    /// Reads and checks a `config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let c: GroundingDinoConfig =
            serde_json::from_str(&text).map_err(|e| Error::parse(path, e))?;
        c.validate().map_err(|e| Error::parse(path, e))?;
        Ok(c)
    }

    /// Checks the combination of options this port implements.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: &str| Err(Error::Config(format!("grounding-dino: {m}")));
        self.backbone_config.validate()?;
        if !self.two_stage || !self.embedding_init_target {
            return bad("only two_stage with embedding_init_target is supported");
        }
        if !self.decoder_bbox_embed_share || self.two_stage_bbox_embed_share {
            return bad(
                "only decoder_bbox_embed_share without two_stage_bbox_embed_share is supported",
            );
        }
        if let Some(a) = &self.activation_function {
            if a != "relu" {
                return bad(&format!(
                    "activation_function '{a}' is not supported (relu)"
                ));
            }
        }
        if let Some(p) = &self.position_embedding_type {
            if p != "sine" {
                return bad(&format!(
                    "position_embedding_type '{p}' is not supported (sine)"
                ));
            }
        }
        let levels = self.backbone_config.out_features.len();
        if self.num_feature_levels < levels {
            return bad("num_feature_levels is below the number of backbone outputs");
        }
        let d = self.d_model;
        let divides = |n: usize, h: usize| h > 0 && n.is_multiple_of(h);
        if !divides(d, self.encoder_attention_heads)
            || !divides(d, self.encoder_attention_heads / 2)
            || !divides(d, self.decoder_attention_heads)
            || !divides(self.encoder_ffn_dim / 2, self.encoder_attention_heads / 2)
            || !d.is_multiple_of(32)
        {
            return bad("d_model / ffn widths are not divisible by the head counts (or GroupNorm's 32 groups)");
        }
        let t = &self.text_config;
        if !divides(t.hidden_size, t.num_attention_heads) {
            return bad("text hidden_size is not divisible by its heads");
        }
        Ok(())
    }
}

/// How BERT applies the phrase-block self-attention mask.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BertMaskMode {
    /// Blocked pairs get the most negative f32 added to their scores (official
    /// Grounding-DINO, `transformers` 4.x).
    #[default]
    Block,
    /// The boolean mask itself is added to the scores (+1 where allowed, 0 elsewhere), so
    /// nothing is blocked: what `transformers` 5.x's eager BERT attention does with the
    /// boolean mask Grounding-DINO passes it (the reference of the parity fixture).
    AddAsScores,
}
