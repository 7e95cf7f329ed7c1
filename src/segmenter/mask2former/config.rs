//! Mask2Former hyper-parameters, read from a Hugging Face `config.json`.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::nn::swin::SwinConfig;

/// The backbone named by `backbone_config.model_type`.
#[derive(Debug, Clone)]
pub enum BackboneConfig {
    /// Swin transformer (`model_type = "swin"`).
    Swin(SwinConfig),
    /// ResNet (`model_type = "resnet"`; detectron2's R50 checkpoints).
    ResNet(ResNetBackboneConfig),
}

/// ResNet sizes (Hugging Face `ResNetConfig` field names).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ResNetBackboneConfig {
    /// Stem output channels.
    #[serde(default = "default_stem")]
    pub embedding_size: usize,
    /// Output channels of each stage.
    #[serde(default = "default_resnet_sizes")]
    pub hidden_sizes: Vec<usize>,
    /// Bottleneck blocks per stage.
    #[serde(default = "default_resnet_depths")]
    pub depths: Vec<usize>,
}

fn default_stem() -> usize {
    64
}
fn default_resnet_sizes() -> Vec<usize> {
    vec![256, 512, 1024, 2048]
}
fn default_resnet_depths() -> Vec<usize> {
    vec![3, 4, 6, 3]
}

impl BackboneConfig {
    /// Output channels of the returned stages (strides 4, 8, 16, 32).
    pub fn channels(&self) -> Vec<usize> {
        match self {
            BackboneConfig::Swin(s) => s.out_channels().unwrap_or_default(),
            BackboneConfig::ResNet(r) => r.hidden_sizes.clone(),
        }
    }
}

/// Mask2Former sizes (Hugging Face `Mask2FormerConfig` field names and defaults).
#[derive(Debug, Clone)]
pub struct Mask2FormerConfig {
    /// The backbone.
    pub backbone: BackboneConfig,
    /// Pixel-decoder channels.
    pub feature_size: usize,
    /// Channels of the per-pixel mask embeddings.
    pub mask_feature_size: usize,
    /// Transformer-decoder channels.
    pub hidden_dim: usize,
    /// Deformable encoder layers of the pixel decoder.
    pub encoder_layers: usize,
    /// FFN width of the deformable encoder.
    pub encoder_feedforward_dim: usize,
    /// Prediction stages (masked-attention layers + 1).
    pub decoder_layers: usize,
    /// FFN width of the transformer decoder.
    pub dim_feedforward: usize,
    /// Attention heads (pixel decoder and transformer decoder).
    pub num_attention_heads: usize,
    /// Object queries.
    pub num_queries: usize,
    /// Pre-norm decoder layers.
    pub pre_norm: bool,
    /// Project the decoder memory even when the channels already match.
    pub enforce_input_projection: bool,
    /// Stride of the mask features.
    pub common_stride: usize,
    /// Strides of the four backbone maps.
    pub feature_strides: Vec<usize>,
    /// Class names by id (the no-object class excluded).
    pub id2label: Vec<String>,
}

#[derive(Deserialize)]
struct Raw {
    backbone_config: Option<serde_json::Value>,
    #[serde(default = "d256")]
    feature_size: usize,
    #[serde(default = "d256")]
    mask_feature_size: usize,
    #[serde(default = "d256")]
    hidden_dim: usize,
    #[serde(default = "d6")]
    encoder_layers: usize,
    #[serde(default = "d1024")]
    encoder_feedforward_dim: usize,
    #[serde(default = "d10")]
    decoder_layers: usize,
    #[serde(default = "d2048")]
    dim_feedforward: usize,
    #[serde(default = "d8")]
    num_attention_heads: usize,
    #[serde(default = "d100")]
    num_queries: usize,
    #[serde(default)]
    pre_norm: bool,
    #[serde(default)]
    enforce_input_projection: bool,
    #[serde(default = "d4")]
    common_stride: usize,
    #[serde(default = "strides")]
    feature_strides: Vec<usize>,
    #[serde(default = "relu")]
    activation_function: String,
    #[serde(default)]
    id2label: BTreeMap<String, String>,
}

fn d4() -> usize {
    4
}
fn d6() -> usize {
    6
}
fn d8() -> usize {
    8
}
fn d10() -> usize {
    10
}
fn d100() -> usize {
    100
}
fn d256() -> usize {
    256
}
fn d1024() -> usize {
    1024
}
fn d2048() -> usize {
    2048
}
fn strides() -> Vec<usize> {
    vec![4, 8, 16, 32]
}
fn relu() -> String {
    "relu".into()
}

impl Mask2FormerConfig {
    /// Reads `config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::from_json(&text).map_err(|m| Error::parse(path, m))
    }

    /// Parses the text of a `config.json`; the error names the field.
    pub fn from_json(text: &str) -> std::result::Result<Self, String> {
        let raw: Raw = serde_json::from_str(text).map_err(|e| e.to_string())?;
        if raw.activation_function != "relu" {
            return Err(format!(
                "activation_function '{}' is not supported (relu only)",
                raw.activation_function
            ));
        }
        let bc = raw.backbone_config.ok_or("backbone_config is missing")?;
        let kind = bc
            .get("model_type")
            .and_then(|v| v.as_str())
            .ok_or("backbone_config.model_type is missing")?
            .to_string();
        let backbone = match kind.as_str() {
            "swin" => {
                let c: SwinConfig =
                    serde_json::from_value(bc).map_err(|e| format!("backbone_config: {e}"))?;
                c.validate().map_err(|e| e.to_string())?;
                BackboneConfig::Swin(c)
            }
            "resnet" => BackboneConfig::ResNet(
                serde_json::from_value(bc).map_err(|e| format!("backbone_config: {e}"))?,
            ),
            other => {
                return Err(format!(
                    "backbone_config.model_type '{other}' is not supported"
                ))
            }
        };
        if backbone.channels().len() != 4 || raw.feature_strides.len() != 4 {
            return Err("the backbone must return four stages (strides 4, 8, 16, 32)".into());
        }
        let mut id2label = Vec::with_capacity(raw.id2label.len());
        for i in 0..raw.id2label.len() {
            let name = raw
                .id2label
                .get(&i.to_string())
                .ok_or_else(|| format!("id2label has no entry {i} (ids must be 0..n)"))?;
            id2label.push(name.clone());
        }
        if id2label.is_empty() {
            return Err("id2label is empty".into());
        }
        let cfg = Mask2FormerConfig {
            backbone,
            feature_size: raw.feature_size,
            mask_feature_size: raw.mask_feature_size,
            hidden_dim: raw.hidden_dim,
            encoder_layers: raw.encoder_layers,
            encoder_feedforward_dim: raw.encoder_feedforward_dim,
            decoder_layers: raw.decoder_layers,
            dim_feedforward: raw.dim_feedforward,
            num_attention_heads: raw.num_attention_heads,
            num_queries: raw.num_queries,
            pre_norm: raw.pre_norm,
            enforce_input_projection: raw.enforce_input_projection,
            common_stride: raw.common_stride,
            feature_strides: raw.feature_strides,
            id2label,
        };
        if cfg.decoder_layers == 0 {
            return Err("decoder_layers must be at least 1".into());
        }
        Ok(cfg)
    }

    /// Number of classes (the no-object class excluded).
    pub fn num_labels(&self) -> usize {
        self.id2label.len()
    }
}
