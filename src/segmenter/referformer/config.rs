//! ReferFormer's sizes, read from the checkpoint's tensor shapes.

use crate::error::{Error, Result};
use crate::nn::swin::SwinConfig;
use crate::nn::weights::Weights;
use crate::segmenter::grounded::BertConfig;

/// Attention heads of every ReferFormer attention block (fixed in the official code).
pub const HEADS: usize = 8;
/// Width of one RoBERTa attention head (`roberta-base`: 768 / 12).
const TEXT_HEAD_DIM: usize = 64;
/// RoBERTa's LayerNorm epsilon.
const TEXT_EPS: f64 = 1e-5;

/// Prefix of the visual backbone's keys.
pub const BACKBONE: &str = "backbone.0.body.";

/// The visual backbone (`backbone.0.body`), chosen by the checkpoint's keys.
#[derive(Debug, Clone, PartialEq)]
pub enum VisualBackbone {
    /// torchvision ResNet (`resnet50`, `resnet101`) with this many bottleneck blocks per
    /// stage (`[3, 4, 6, 3]`: ResNet-50).
    ResNet {
        /// Blocks per stage.
        blocks: [usize; 4],
    },
    /// Swin Transformer in the original key layout (`swin_{t,s,b,l}_p4w7`), four outputs.
    Swin(SwinConfig),
    /// Video-Swin as ReferFormer keeps it (`video_swin_{t,s,b}_p4w7`,
    /// [`crate::nn::swin::Layout::Video`]), run on one frame, four unnormalised outputs.
    VideoSwin(SwinConfig),
}

impl VisualBackbone {
    /// Channels of the four outputs (strides 4, 8, 16, 32).
    pub fn out_channels(&self) -> Result<[usize; 4]> {
        match self {
            VisualBackbone::ResNet { .. } => Ok([256, 512, 1024, 2048]),
            VisualBackbone::Swin(c) | VisualBackbone::VideoSwin(c) => {
                c.out_channels()?.try_into().map_err(|v: Vec<usize>| {
                    Error::Config(format!(
                        "referformer: the Swin backbone has {} outputs ({:?}); the model needs 4",
                        v.len(),
                        c.out_features
                    ))
                })
            }
        }
    }
}

/// Sizes of a ReferFormer checkpoint.
#[derive(Debug, Clone)]
pub struct ReferFormerConfig {
    /// Transformer width (`hidden_dim`).
    pub hidden_dim: usize,
    /// Queries per frame.
    pub num_queries: usize,
    /// Class logits per query.
    pub num_classes: usize,
    /// Deformable encoder layers.
    pub enc_layers: usize,
    /// Deformable decoder layers.
    pub dec_layers: usize,
    /// FFN width of the transformer and the FPN's vision-language blocks.
    pub dim_feedforward: usize,
    /// Feature levels of the transformer (3 backbone levels plus extra downsampled ones).
    pub num_feature_levels: usize,
    /// Sampling points per head and level.
    pub n_points: usize,
    /// Channels of the mask features.
    pub mask_dim: usize,
    /// Channels of the dynamic mask head's hidden layers.
    pub dynamic_mask_channels: usize,
    /// Layers of the dynamic mask head.
    pub controller_layers: usize,
    /// The visual backbone.
    pub backbone: VisualBackbone,
    /// Whether the decoder refines its boxes layer by layer (`with_box_refine`).
    pub box_refine: bool,
    /// The RoBERTa text encoder.
    pub text: BertConfig,
}

impl ReferFormerConfig {
    /// Reads the sizes from the shapes of an official checkpoint's keys.
    pub fn from_weights(w: &Weights) -> Result<Self> {
        let dims = |k: &str| w.dims(k);
        let qe = dims("query_embed.weight")?;
        let (num_queries, hidden_dim) = (qe[0], qe[1]);
        let levels = dims("transformer.level_embed")?[0];
        let offsets = dims("transformer.encoder.layers.0.self_attn.sampling_offsets.weight")?[0];
        let controller_layers = w.count("controller.layers", "weight");
        let params = dims(&format!(
            "controller.layers.{}.weight",
            controller_layers.saturating_sub(1)
        ))?[0];
        let mask_dim = dims("pixel_decoder.mask_features.weight")?[0];
        let dynamic_mask_channels = (1..=256)
            .find(|&c| dynamic_params(mask_dim, c, controller_layers) == params)
            .ok_or_else(|| {
                w.error(format!(
                    "controller.layers: {params} generated parameters fit no dynamic mask head \
                     of {controller_layers} layers over {mask_dim} mask channels"
                ))
            })?;
        let patch = format!("{BACKBONE}patch_embed.proj.weight");
        let backbone = if w.contains(&patch) && w.dims(&patch)?.len() == 5 {
            // Video-Swin's Conv3d patch embedding; every stage is an output.
            VisualBackbone::VideoSwin(SwinConfig::from_video(w, BACKBONE)?)
        } else if w.contains(&patch) {
            // Every official Swin entry returns all stages (`out_indices` 0..3), so each
            // stage's output norm is required (a missing one is a missing-key error).
            let mut c = SwinConfig::from_official(w, BACKBONE)?;
            c.out_features = (1..=c.depths.len()).map(|i| format!("stage{i}")).collect();
            VisualBackbone::Swin(c)
        } else {
            let blocks = |i: usize| w.count(&format!("{BACKBONE}layer{i}"), "conv1.weight");
            VisualBackbone::ResNet {
                blocks: [blocks(1), blocks(2), blocks(3), blocks(4)],
            }
        };
        let t = "text_encoder.embeddings";
        let word = dims(&format!("{t}.word_embeddings.weight"))?;
        let text = BertConfig {
            hidden_size: word[1],
            num_hidden_layers: w.count("text_encoder.encoder.layer", "attention.self.query.weight"),
            num_attention_heads: word[1] / TEXT_HEAD_DIM,
            intermediate_size: dims("text_encoder.encoder.layer.0.intermediate.dense.weight")?[0],
            vocab_size: word[0],
            max_position_embeddings: dims(&format!("{t}.position_embeddings.weight"))?[0],
            type_vocab_size: dims(&format!("{t}.token_type_embeddings.weight"))?[0],
            layer_norm_eps: TEXT_EPS,
        };
        Ok(ReferFormerConfig {
            hidden_dim,
            num_queries,
            num_classes: dims("class_embed.0.weight")?[0],
            enc_layers: w.count("transformer.encoder.layers", "norm1.weight"),
            dec_layers: w.count("transformer.decoder.layers", "norm1.weight"),
            dim_feedforward: dims("transformer.encoder.layers.0.linear1.weight")?[0],
            num_feature_levels: levels,
            n_points: offsets / (HEADS * levels * 2),
            mask_dim,
            dynamic_mask_channels,
            controller_layers,
            backbone,
            box_refine: w.contains("transformer.decoder.bbox_embed.0.layers.0.weight"),
            text,
        })
    }

    /// Weight and bias counts of each dynamic mask-head layer.
    pub fn dynamic_layout(&self) -> (Vec<usize>, Vec<usize>) {
        dynamic_layout(
            self.mask_dim,
            self.dynamic_mask_channels,
            self.controller_layers,
        )
    }
}

/// Weight and bias counts of a dynamic head of `layers` 1×1 convolutions over `mask_dim`
/// channels plus two relative coordinates, `channels` wide, with one output channel.
fn dynamic_layout(mask_dim: usize, channels: usize, layers: usize) -> (Vec<usize>, Vec<usize>) {
    (0..layers)
        .map(|l| {
            let c_in = if l == 0 { mask_dim + 2 } else { channels };
            let c_out = if l + 1 == layers { 1 } else { channels };
            (c_in * c_out, c_out)
        })
        .unzip()
}

fn dynamic_params(mask_dim: usize, channels: usize, layers: usize) -> usize {
    let (w, b) = dynamic_layout(mask_dim, channels, layers);
    w.iter().sum::<usize>() + b.iter().sum::<usize>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dynamic_head_layout_matches_the_official_parameter_count() {
        // Official defaults: 256 mask channels, 8 dynamic channels, 3 layers.
        let (w, b) = dynamic_layout(256, 8, 3);
        assert_eq!((w, b), (vec![258 * 8, 64, 8], vec![8, 8, 1]));
        assert_eq!(dynamic_params(256, 8, 3), 258 * 8 + 64 + 8 + 17);
    }
}
