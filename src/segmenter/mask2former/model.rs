//! `Mask2FormerForUniversalSegmentation`: backbone, pixel decoder, transformer decoder and
//! class head, loaded from a Hugging Face checkpoint layout through a `VarBuilder`.

use std::path::Path;

use candle_core::{Device, Tensor};
use candle_nn::VarBuilder;

use super::config::{BackboneConfig, Mask2FormerConfig};
use super::detectron2::read_detectron2;
use super::heads::ClassPredictor;
use super::pixel_decoder::{PixelDecoder, PixelDecoderOutput};
use super::resnet::ResNetBackbone;
use super::transformer_decoder::{DecoderOutput, TransformerDecoder};
use crate::error::Result;
use crate::nn::checkpoint::StateDict;
use crate::nn::swin::SwinBackbone;
use crate::nn::Weights;

/// Checkpoint keys present in Hugging Face files that inference does not use: the loss's
/// class weights and the Swin model's final norm (the backbone API never applies it).
pub const UNUSED_KEYS: &[&str] = &[
    "criterion.empty_weight",
    "model.pixel_level_module.encoder.swin.layernorm.weight",
    "model.pixel_level_module.encoder.swin.layernorm.bias",
];

/// The image backbone.
#[derive(Debug)]
pub enum Backbone {
    /// Swin transformer.
    Swin(SwinBackbone),
    /// ResNet (R50 of detectron2 checkpoints).
    ResNet(ResNetBackbone),
}

impl Backbone {
    fn new(cfg: &BackboneConfig, vb: VarBuilder) -> Result<Self> {
        match cfg {
            BackboneConfig::ResNet(r) => Ok(Backbone::ResNet(ResNetBackbone::new(r, vb)?)),
            BackboneConfig::Swin(s) => Ok(Backbone::Swin(SwinBackbone::new(s, vb)?)),
        }
    }

    /// Feature maps at strides 4, 8, 16, 32.
    pub fn forward(&self, pixel_values: &Tensor) -> Result<Vec<Tensor>> {
        match self {
            Backbone::Swin(s) => s.forward(pixel_values),
            Backbone::ResNet(r) => r.forward(pixel_values),
        }
    }
}

/// Everything one forward pass produces (intermediates kept for inspection and tests).
#[derive(Debug, Clone)]
pub struct Mask2FormerOutput {
    /// Backbone maps, finest first.
    pub backbone_features: Vec<Tensor>,
    /// Pixel-decoder outputs.
    pub pixel_decoder: PixelDecoderOutput,
    /// Transformer-decoder outputs of every stage.
    pub decoder: DecoderOutput,
}

impl Mask2FormerOutput {
    /// Class logits of the last stage `[b, q, num_labels + 1]`.
    pub fn class_queries_logits(&self) -> &Tensor {
        self.decoder
            .class_logits
            .last()
            .expect("at least one stage")
    }

    /// Mask logits of the last stage `[b, q, h/4, w/4]`.
    pub fn masks_queries_logits(&self) -> &Tensor {
        self.decoder.mask_logits.last().expect("at least one stage")
    }
}

/// Mask2Former for panoptic, instance and semantic segmentation.
#[derive(Debug)]
pub struct Mask2Former {
    config: Mask2FormerConfig,
    backbone: Backbone,
    pixel_decoder: PixelDecoder,
    transformer: TransformerDecoder,
    class_predictor: ClassPredictor,
}

impl Mask2Former {
    /// Builds the model from a Hugging Face layout (`model.pixel_level_module.encoder`,
    /// `model.pixel_level_module.decoder`, `model.transformer_module`, `class_predictor`).
    pub fn new(config: &Mask2FormerConfig, vb: VarBuilder) -> Result<Self> {
        let plm = vb.pp("model.pixel_level_module");
        let backbone = Backbone::new(&config.backbone, plm.pp("encoder"))?;
        let pixel_decoder =
            PixelDecoder::new(config, &config.backbone.channels(), plm.pp("decoder"))?;
        let transformer = TransformerDecoder::new(config, vb.pp("model.transformer_module"))?;
        let class_predictor = ClassPredictor::new(
            config.hidden_dim,
            config.num_labels(),
            vb.pp("class_predictor"),
        )?;
        Ok(Mask2Former {
            config: config.clone(),
            backbone,
            pixel_decoder,
            transformer,
            class_predictor,
        })
    }

    /// Loads weights from a Hugging Face checkpoint (safetensors or `.pth`) or from a
    /// detectron2 `model_final_*.pkl` (its `model` dict, keys mapped by
    /// [`to_hf`](super::detectron2::to_hf)), chosen by the file's content; strictly (every key
    /// used, every shape checked).
    pub fn load(path: &Path, config: &Mask2FormerConfig, device: &Device) -> Result<Self> {
        if crate::nn::checkpoint::CheckpointFormat::of_file(path)?.0
            == crate::nn::checkpoint::CheckpointFormat::Pickle
        {
            return Self::from_state_dict(read_detectron2(path)?, config, device);
        }
        Weights::open(path)?.build(device, UNUSED_KEYS, |vb| Mask2Former::new(config, vb))
    }

    /// Builds a model of `config` from Hugging Face-layout weights, strictly (every key used,
    /// every shape checked).
    pub fn from_state_dict(
        dict: StateDict,
        config: &Mask2FormerConfig,
        device: &Device,
    ) -> Result<Self> {
        Weights::from_state_dict(dict)?
            .build(device, UNUSED_KEYS, |vb| Mask2Former::new(config, vb))
    }

    /// The configuration.
    pub fn config(&self) -> &Mask2FormerConfig {
        &self.config
    }

    /// Full forward pass on normalised `pixel_values` `[b, 3, h, w]` (sides multiples of 32).
    pub fn forward(&self, pixel_values: &Tensor) -> Result<Mask2FormerOutput> {
        let features = self.backbone.forward(pixel_values)?;
        self.forward_features(features)
    }

    /// The heads on given backbone maps (finest first).
    pub fn forward_features(&self, backbone_features: Vec<Tensor>) -> Result<Mask2FormerOutput> {
        let pixel_decoder = self.pixel_decoder.forward(&backbone_features)?;
        let decoder = self.transformer.forward(
            &pixel_decoder.multi_scale_features,
            &pixel_decoder.mask_features,
            &self.class_predictor,
        )?;
        Ok(Mask2FormerOutput {
            backbone_features,
            pixel_decoder,
            decoder,
        })
    }
}
