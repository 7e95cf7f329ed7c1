//! The SAM network: an image encoder (ViT or TinyViT), the prompt encoder and the mask
//! decoder, built from an official checkpoint whose sizes are read from its tensors.

use super::config::SamVariant;
use super::decoder::{DecoderConfig, MaskDecoder};
use super::embedding::EmbeddingCache;
use super::prompt::{PromptEmbeddings, PromptEncoder};
use super::tiny_vit::{TinyVit, TinyVitConfig, UNUSED_KEYS};
use super::transform::CoordScale;
use super::vit::{ImageEncoderVit, VitConfig};
use crate::error::{Error, Result};
use crate::nn::Weights;
use candle_core::{Device, Tensor};
use candle_nn::VarBuilder;
use std::path::Path;

/// Which image encoder a SAM model has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EncoderConfig {
    /// The ViT of SAM ViT-B/L/H.
    Vit(VitConfig),
    /// The TinyViT of MobileSAM.
    TinyVit(TinyVitConfig),
}

impl EncoderConfig {
    /// The checkpoint family this encoder belongs to.
    pub fn variant(&self) -> SamVariant {
        match self {
            EncoderConfig::Vit(_) => SamVariant::Original,
            EncoderConfig::TinyVit(_) => SamVariant::Mobile,
        }
    }
}

/// The sizes of a whole SAM model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SamArch {
    /// Image encoder.
    pub encoder: EncoderConfig,
    /// Side of the square model input (1024).
    pub img_size: usize,
    /// `(h, w)` of the image embedding (64 × 64).
    pub embedding_size: (usize, usize),
    /// Prompt and decoder token dimension (256).
    pub prompt_dim: usize,
    /// Channels of the mask-input downscaling (16).
    pub mask_in_chans: usize,
    /// Mask decoder.
    pub decoder: DecoderConfig,
}

impl SamArch {
    /// The official architecture around a ViT encoder.
    pub fn with_vit(vit: VitConfig) -> Self {
        let (img_size, patch) = (vit.img_size, vit.patch_size);
        Self::with_encoder(EncoderConfig::Vit(vit), img_size, patch)
    }

    /// MobileSAM's architecture around a TinyViT encoder.
    pub fn with_tiny_vit(tiny: TinyVitConfig) -> Self {
        let img_size = tiny.img_size;
        Self::with_encoder(EncoderConfig::TinyVit(tiny), img_size, 16)
    }

    fn with_encoder(encoder: EncoderConfig, img_size: usize, stride: usize) -> Self {
        let grid = img_size / stride;
        SamArch {
            encoder,
            img_size,
            embedding_size: (grid, grid),
            prompt_dim: 256,
            mask_in_chans: 16,
            decoder: DecoderConfig {
                transformer_dim: 256,
                depth: 2,
                num_heads: 8,
                mlp_dim: 2048,
                num_mask_tokens: 4,
                iou_head_depth: 3,
                iou_head_hidden_dim: 256,
            },
        }
    }

    /// Reads every size from the checkpoint's keys and shapes.
    pub fn from_checkpoint(ck: &Weights) -> Result<Self> {
        let mut arch = if TinyVitConfig::is_tiny_vit(ck, "image_encoder") {
            SamArch::with_tiny_vit(TinyVitConfig::from_checkpoint(ck, "image_encoder")?)
        } else {
            SamArch::with_vit(VitConfig::from_checkpoint(ck, "image_encoder")?)
        };
        arch.prompt_dim = ck.dims("prompt_encoder.no_mask_embed.weight")?[1];
        arch.mask_in_chans = ck.dims("prompt_encoder.mask_downscaling.3.weight")?[0];
        let d = &mut arch.decoder;
        d.transformer_dim = ck.dims("mask_decoder.iou_token.weight")?[1];
        d.num_mask_tokens = ck.dims("mask_decoder.mask_tokens.weight")?[0];
        d.depth = ck.count("mask_decoder.transformer.layers", "norm1.weight");
        d.mlp_dim = ck.dims("mask_decoder.transformer.layers.0.mlp.lin1.weight")?[0];
        d.iou_head_depth = ck.count("mask_decoder.iou_prediction_head.layers", "weight");
        d.iou_head_hidden_dim = ck.dims("mask_decoder.iou_prediction_head.layers.0.weight")?[0];
        if d.num_mask_tokens < 2 || d.iou_head_depth == 0 {
            return Err(ck.error("mask decoder needs at least 2 mask tokens and an IoU head"));
        }
        Ok(arch)
    }
}

/// The image encoder of a loaded model.
#[derive(Debug)]
enum ImageEncoder {
    Vit(ImageEncoderVit),
    TinyVit(TinyVit),
}

/// A SAM model.
#[derive(Debug)]
pub struct SamModel {
    arch: SamArch,
    encoder: ImageEncoder,
    prompt: PromptEncoder,
    decoder: MaskDecoder,
    pub(super) dense_pe: Tensor,
    device: Device,
    coords: CoordScale,
    pub(super) cache: EmbeddingCache,
}

impl SamModel {
    /// Builds the model from variables with the official key names.
    pub fn new(arch: &SamArch, vb: VarBuilder) -> Result<Self> {
        let encoder = match &arch.encoder {
            EncoderConfig::Vit(c) => {
                ImageEncoder::Vit(ImageEncoderVit::new(c, vb.pp("image_encoder"))?)
            }
            EncoderConfig::TinyVit(c) => {
                ImageEncoder::TinyVit(TinyVit::new(c, vb.pp("image_encoder"))?)
            }
        };
        let prompt = PromptEncoder::new(
            arch.prompt_dim,
            arch.embedding_size,
            (arch.img_size, arch.img_size),
            arch.mask_in_chans,
            vb.pp("prompt_encoder"),
        )?;
        let decoder = MaskDecoder::new(&arch.decoder, vb.pp("mask_decoder"))?;
        let dense_pe = prompt.dense_pe()?;
        Ok(SamModel {
            arch: arch.clone(),
            encoder,
            prompt,
            decoder,
            dense_pe,
            device: vb.device().clone(),
            coords: CoordScale::PerAxis,
            cache: EmbeddingCache::default(),
        })
    }

    /// The same model with prompt coordinates mapped by `coords`.
    pub fn with_coord_scale(self, coords: CoordScale) -> Self {
        SamModel { coords, ..self }
    }

    /// How prompt coordinates map into the model input.
    pub fn coord_scale(&self) -> CoordScale {
        self.coords
    }

    /// Loads an official checkpoint (`.pth` or `.safetensors`); the architecture is read
    /// from it and every key must be used (TinyViT's unused classifier head excepted).
    pub fn load(path: &Path, device: &Device) -> Result<Self> {
        let ck = Weights::open(path)?;
        if ck.keys().is_empty() {
            return Err(ck.error("no tensors found"));
        }
        let arch = SamArch::from_checkpoint(&ck)?;
        ck.build(device, &UNUSED_KEYS, |vb| SamModel::new(&arch, vb))
    }

    /// A model with synthetic weights ([`Weights::synthetic`]) of the given size, for tests
    /// and benchmarks.
    pub fn synthetic(arch: &SamArch, seed: u64, device: &Device) -> Result<Self> {
        Weights::synthetic(seed, device, |vb| SamModel::new(arch, vb))
    }

    /// Loads a checkpoint that must be of the `expected` family.
    pub fn load_variant(path: &Path, expected: SamVariant, device: &Device) -> Result<Self> {
        let model = Self::load(path, device)?;
        let found = model.arch.encoder.variant();
        if found != expected {
            let name = |v: SamVariant| match v {
                SamVariant::Original => "original (ViT)",
                SamVariant::Mobile => "mobile (TinyViT)",
            };
            return Err(Error::checkpoint(
                path,
                format!(
                    "holds a {} SAM, but sam.variant is {}",
                    name(found),
                    name(expected)
                ),
            ));
        }
        Ok(model)
    }

    /// The model's sizes.
    pub fn arch(&self) -> &SamArch {
        &self.arch
    }

    /// The device the model runs on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Encodes a preprocessed input `(1, 3, S, S)` into the image embedding. With `trace`,
    /// intermediate encoder outputs are pushed (ViT: tokens after the position embedding and
    /// after each block, `(1, g, g, dim)`).
    pub fn encode(&self, input: &Tensor, trace: Option<&mut Vec<Tensor>>) -> Result<Tensor> {
        match &self.encoder {
            ImageEncoder::Vit(e) => e.forward(input, trace),
            ImageEncoder::TinyVit(e) => e.forward(input, trace),
        }
    }

    /// Embeds prompts given in model-input coordinates; see `PromptEncoder::forward`.
    pub fn embed_prompts(
        &self,
        points: Option<(&Tensor, &Tensor)>,
        boxes: Option<&Tensor>,
        masks: Option<&Tensor>,
    ) -> Result<PromptEmbeddings> {
        self.prompt.forward(points, boxes, masks)
    }

    /// Embeds prompt rows in the convention of SAM's ONNX export: points `(B, N, 2)` in
    /// model-input pixels with labels `(B, N)` (1 foreground, 0 background, 2 and 3 box
    /// corners, -1 padding, already appended by the caller) and optional mask inputs.
    pub fn embed_prompt_rows(
        &self,
        points: &Tensor,
        labels: &Tensor,
        masks: Option<&Tensor>,
    ) -> Result<PromptEmbeddings> {
        self.prompt.forward_rows(points, labels, masks)
    }

    /// Decodes masks for a batch of embedded prompts on one image embedding: low-resolution
    /// logits `(B, M, 4h, 4w)` and predicted IoUs `(B, M)`.
    pub fn decode(
        &self,
        image_embedding: &Tensor,
        prompts: &PromptEmbeddings,
        multimask: bool,
    ) -> Result<(Tensor, Tensor)> {
        self.decoder.forward(
            image_embedding,
            &self.dense_pe,
            &prompts.sparse,
            &prompts.dense,
            multimask,
        )
    }
}
