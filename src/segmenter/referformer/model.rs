//! The ReferFormer network (`ReferFormer` of the official `models/referformer.py`) for one
//! frame and one expression.

use candle_core::{DType, Device, Module, Tensor, D};
use candle_nn::{LayerNorm, Linear, VarBuilder};
use std::path::Path;

use super::config::{ReferFormerConfig, VisualBackbone, BACKBONE};
use super::fpn::{sine_1d, CrossModalFpn, Fusion, Words};
use super::text::Roberta;
use super::transformer::DeformableTransformer;
use crate::error::{Error, Result};
use crate::nn::conv::{ConvKernel, ConvShape};
use crate::nn::conv_norm::{ConvGroupNorm, GroupNormSpec};
use crate::nn::mlp::Mlp;
use crate::nn::resnet::{Loading, ResNet};
use crate::nn::swin::{Layout, SwinBackbone};
use crate::nn::weights::Weights;
use crate::segmenter::mask2former::pixel_decoder::sine_position_embedding_shifted;

/// GroupNorm groups of the input projections.
const PROJ_GROUPS: usize = 32;
/// Stride of the mask features (and of the relative coordinates' grid).
const MASK_STRIDE: usize = 4;
/// Transformer feature levels the FPN is built for (3 backbone levels and one extra).
const FEATURE_LEVELS: usize = 4;
/// The kernel of the convolutions (ResNet backbone, input projections, FPN): the direct one
/// (the parity tests of `tests/referformer.rs` hold within their fixtures' tolerances with it).
pub(super) const CONV: ConvKernel = ConvKernel::Direct;

/// The visual backbone (`backbone.0.body`): four maps at strides 4, 8, 16 and 32.
#[derive(Debug, Clone)]
enum Backbone {
    ResNet(ResNet),
    Swin(SwinBackbone),
}

impl Backbone {
    fn new(config: &VisualBackbone, vb: VarBuilder) -> Result<Self> {
        Ok(match config {
            VisualBackbone::ResNet { blocks } => {
                // torchvision's `layer1` … `layer4`, 256 · 2^i channels.
                let stages: Vec<_> = (0..4).map(|i| (blocks[i], 256 << i)).collect();
                let stage_vb = |i: usize| vb.pp(format!("layer{}", i + 1));
                let how = Loading::torchvision(CONV);
                Backbone::ResNet(ResNet::load_bottlenecks(
                    &vb,
                    stage_vb,
                    64,
                    &stages,
                    |_| None,
                    how,
                )?)
            }
            VisualBackbone::Swin(c) => Backbone::Swin(SwinBackbone::load(c, Layout::Official, vb)?),
            VisualBackbone::VideoSwin(c) => {
                Backbone::Swin(SwinBackbone::load(c, Layout::Video, vb)?)
            }
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Vec<Tensor>> {
        match self {
            Backbone::ResNet(r) => r.forward(x),
            Backbone::Swin(s) => s.forward(x),
        }
    }
}

/// The input projection `input_proj.i`: a convolution (`.0`; 3 × 3 of stride 2 for the extra
/// coarsest level) followed by GroupNorm (`.1`).
fn projection(c_in: usize, d: usize, k: usize, vb: VarBuilder) -> Result<ConvGroupNorm> {
    let shape = ConvShape::same(c_in, d, k).with_stride(if k == 3 { 2 } else { 1 });
    let spec = GroupNormSpec {
        groups: PROJ_GROUPS,
        eps: 1e-5,
    };
    ConvGroupNorm::load(&vb.pp("0"), &vb.pp("1"), (shape, true), spec, CONV)
}

/// Everything one forward pass computes, for parity tests and the segmenter.
#[derive(Debug, Clone)]
pub struct ReferFormerOutput {
    /// RoBERTa's last hidden state `[1, L, 768]`.
    pub text_hidden: Tensor,
    /// RoBERTa's pooled output `[1, 768]`.
    pub text_pooled: Tensor,
    /// Resized word features `[1, L, d]`.
    pub text_features: Tensor,
    /// Resized sentence feature `[1, d]`.
    pub text_sentence: Tensor,
    /// Backbone maps at strides 4, 8, 16, 32.
    pub backbone: Vec<Tensor>,
    /// Position embeddings of the backbone maps.
    pub pos: Vec<Tensor>,
    /// Projected maps after the early fusion, one per transformer level.
    pub fused: Vec<Tensor>,
    /// Encoder memory as maps at strides 8, 16, 32.
    pub memory: Vec<Tensor>,
    /// Decoder outputs per layer `[1, q, d]`.
    pub hs: Vec<Tensor>,
    /// Initial reference points `[1, q, 2]`.
    pub init_reference: Tensor,
    /// Reference points after every decoder layer.
    pub inter_references: Vec<Tensor>,
    /// Mask features `[1, mask_dim, h/4, w/4]`.
    pub mask_features: Tensor,
    /// Class logits of the last layer `[q, classes]`.
    pub pred_logits: Tensor,
    /// Boxes `cx, cy, w, h` in `[0, 1]` of the last layer `[q, 4]`.
    pub pred_boxes: Tensor,
    /// Mask logits `[q, h/4, w/4]`.
    pub pred_masks: Tensor,
}

/// ReferFormer with its text encoder.
#[derive(Debug)]
pub struct ReferFormer {
    config: ReferFormerConfig,
    backbone: Backbone,
    text_encoder: Roberta,
    resizer_fc: Linear,
    resizer_norm: LayerNorm,
    input_proj: Vec<ConvGroupNorm>,
    fusion: Fusion,
    transformer: DeformableTransformer,
    query_embed: Tensor,
    class_embed: Linear,
    bbox_embed: Mlp,
    pixel_decoder: CrossModalFpn,
    controller: Mlp,
}

impl ReferFormer {
    /// Loads an official checkpoint (`.pth` holding `{"model": state_dict}`, or a bare state
    /// dict or safetensors file with the same keys), strictly: a missing, mis-shaped or unused
    /// key is an error naming it.
    pub fn load(path: &Path, device: &Device) -> Result<Self> {
        Self::from_weights(&Weights::open_model(path)?, device)
    }

    /// Builds the network from official-layout weights with the sizes their shapes give,
    /// strictly (only a Swin backbone's derived relative-position indices may stay unread).
    pub fn from_weights(weights: &Weights, device: &Device) -> Result<Self> {
        let config = ReferFormerConfig::from_weights(weights)?;
        let derived = match &config.backbone {
            VisualBackbone::Swin(c) => Layout::Official.derived_buffers(c, BACKBONE),
            VisualBackbone::VideoSwin(c) => Layout::Video.derived_buffers(c, BACKBONE),
            VisualBackbone::ResNet { .. } => Vec::new(),
        };
        let ignored: Vec<&str> = derived.iter().map(String::as_str).collect();
        weights.build(device, &ignored, |vb| ReferFormer::new(config, vb))
    }

    /// Builds the network from `vb` with the official key names.
    pub fn new(config: ReferFormerConfig, vb: VarBuilder) -> Result<Self> {
        let c = &config;
        if c.num_feature_levels != FEATURE_LEVELS {
            return Err(Error::invalid(format!(
                "referformer: {} feature levels; the cross-modal FPN needs {FEATURE_LEVELS}",
                c.num_feature_levels
            )));
        }
        let d = c.hidden_dim;
        let last = c
            .dec_layers
            .checked_sub(1)
            .ok_or_else(|| Error::invalid("referformer: the checkpoint has no decoder layers"))?;
        // The heads of every decoder layer are stored; inference uses the last one's.
        let mut class_embed = None;
        let mut bbox_embed = None;
        for i in 0..=last {
            class_embed = Some(candle_nn::linear(
                d,
                c.num_classes,
                vb.pp("class_embed").pp(i),
            )?);
            bbox_embed = Some(Mlp::new(&[d, d, d, 4], vb.pp("bbox_embed").pp(i))?);
        }
        let (ws, bs) = c.dynamic_layout();
        let params: usize = ws.iter().sum::<usize>() + bs.iter().sum::<usize>();
        let text = vb.pp("text_encoder");
        let th = c.text.hidden_size;
        // The last three backbone maps are projected; the extra level downsamples the last.
        let channels = c.backbone.out_channels()?;
        let mut input_proj = channels[1..]
            .iter()
            .enumerate()
            .map(|(i, &ch)| projection(ch, d, 1, vb.pp("input_proj").pp(i)))
            .collect::<Result<Vec<_>>>()?;
        input_proj.push(projection(channels[3], d, 3, vb.pp("input_proj").pp(3))?);
        Ok(ReferFormer {
            backbone: Backbone::new(&c.backbone, vb.pp("backbone").pp("0").pp("body"))?,
            text_encoder: Roberta::new(&c.text, text)?,
            resizer_fc: candle_nn::linear(th, d, vb.pp("resizer").pp("fc"))?,
            resizer_norm: candle_nn::layer_norm(d, 1e-12, vb.pp("resizer").pp("layer_norm"))?,
            input_proj,
            fusion: Fusion::new(d, vb.pp("fusion_module"))?,
            transformer: DeformableTransformer::new(c, vb.pp("transformer"))?,
            query_embed: vb.get((c.num_queries, d), "query_embed.weight")?,
            class_embed: class_embed.expect("at least one decoder layer"),
            bbox_embed: bbox_embed.expect("at least one decoder layer"),
            pixel_decoder: CrossModalFpn::new(
                channels[0],
                d,
                c.mask_dim,
                c.dim_feedforward,
                vb.pp("pixel_decoder"),
            )?,
            controller: Mlp::new(&[d, d, d, params], vb.pp("controller"))?,
            config,
        })
    }

    /// The checkpoint's sizes.
    pub fn config(&self) -> &ReferFormerConfig {
        &self.config
    }

    fn resize_text(&self, x: &Tensor) -> Result<Tensor> {
        Ok(self.resizer_norm.forward(&self.resizer_fc.forward(x)?)?)
    }

    /// Runs the network on a normalised image `[1, 3, h, w]` and the token ids of one
    /// expression.
    pub fn forward(&self, image: &Tensor, ids: &[i64]) -> Result<ReferFormerOutput> {
        let dev = image.device();
        let d = self.config.hidden_dim;
        let (_, _, ih, iw) = image.dims4()?;
        let (text_hidden, text_pooled) = self.text_encoder.forward(ids, dev)?;
        let text_features = self.resize_text(&text_hidden)?;
        let text_sentence = self.resize_text(&text_pooled)?;
        let words = Words {
            keys: (&text_features + sine_1d(ids.len(), d, dev)?)?,
            features: text_features.clone(),
        };
        let backbone = self.backbone.forward(image)?;
        let pos_of = |x: &Tensor| -> Result<Tensor> {
            let (_, _, h, w) = x.dims4()?;
            sine_position_embedding_shifted(h, w, d / 2, 0.5, dev)
        };
        let pos = backbone.iter().map(pos_of).collect::<Result<Vec<_>>>()?;
        let mut fused = Vec::with_capacity(FEATURE_LEVELS);
        let mut level_pos = Vec::with_capacity(FEATURE_LEVELS);
        for (l, proj) in self.input_proj.iter().enumerate() {
            let src = proj.forward(&backbone[(l + 1).min(3)])?;
            level_pos.push(if l < 3 {
                pos[l + 1].clone()
            } else {
                pos_of(&src)?
            });
            fused.push(self.fusion.forward(&src, &words)?);
        }
        let q = self.config.num_queries;
        let tgt = text_sentence
            .unsqueeze(1)?
            .broadcast_as((1, q, d))?
            .contiguous()?;
        let t = self
            .transformer
            .forward(&fused, &level_pos, &tgt, &self.query_embed)?;
        let mut memory = Vec::with_capacity(FEATURE_LEVELS - 1);
        let mut start = 0;
        for f in &fused[..FEATURE_LEVELS - 1] {
            let (_, _, h, w) = f.dims4()?;
            memory.push(
                t.memory
                    .narrow(1, start, h * w)?
                    .transpose(1, 2)?
                    .reshape((1, d, h, w))?,
            );
            start += h * w;
        }
        let hs = t.hs.last().expect("decoder layers").clone();
        let n = t.hs.len();
        let reference = if n >= 2 {
            &t.inter_references[n - 2]
        } else {
            &t.init_reference
        };
        let pred_logits = self.class_embed.forward(&hs)?.squeeze(0)?;
        let pred_boxes =
            super::transformer::refine(&self.bbox_embed.forward(&hs)?, reference)?.squeeze(0)?;
        let mask_features = self
            .pixel_decoder
            .forward(&backbone[0], &memory, &pos, &words)?;
        let last_ref = t.inter_references[n - 1].narrow(D::Minus1, 0, 2)?;
        let pred_masks = self.dynamic_masks(&mask_features, &hs, &last_ref, (ih, iw))?;
        Ok(ReferFormerOutput {
            text_hidden,
            text_pooled,
            text_features,
            text_sentence,
            backbone,
            pos,
            fused,
            memory,
            hs: t.hs,
            init_reference: t.init_reference,
            inter_references: t.inter_references,
            mask_features,
            pred_logits,
            pred_boxes,
            pred_masks,
        })
    }

    /// The dynamic mask head: each query's controller output is split into the weights and
    /// biases of 1×1 convolutions over the mask features and the pixels' offsets from the
    /// query's reference point (in input pixels). Returns `[q, h, w]`.
    fn dynamic_masks(
        &self,
        mask_features: &Tensor,
        hs: &Tensor,
        reference: &Tensor,
        (ih, iw): (usize, usize),
    ) -> Result<Tensor> {
        let dev = mask_features.device();
        let (_, m, h, w) = mask_features.dims4()?;
        let q = hs.dim(1)?;
        let params = self.controller.forward(hs)?.squeeze(0)?;
        let scale = Tensor::new(&[iw as f32, ih as f32], dev)?;
        let refs = reference.squeeze(0)?.broadcast_mul(&scale)?; // [q, 2]
        let half = (MASK_STRIDE / 2) as f32;
        let mut grid = Vec::with_capacity(2 * h * w);
        grid.extend((0..h * w).map(|p| ((p % w) * MASK_STRIDE) as f32 + half));
        grid.extend((0..h * w).map(|p| ((p / w) * MASK_STRIDE) as f32 + half));
        let grid = Tensor::from_vec(grid, (1, 2, h * w), dev)?;
        let rel = refs.unsqueeze(2)?.broadcast_sub(&grid)?; // [q, 2, hw]
        let feats = mask_features
            .reshape((1, m, h * w))?
            .broadcast_as((q, m, h * w))?;
        let mut x = Tensor::cat(&[feats, rel], 1)?.contiguous()?;
        let (ws, bs) = self.config.dynamic_layout();
        let layers = ws.len();
        let mut offset = 0;
        let mut weights = Vec::with_capacity(layers);
        for &n in &ws {
            weights.push(params.narrow(1, offset, n)?);
            offset += n;
        }
        for (l, (wt, &nb)) in weights.into_iter().zip(&bs).enumerate() {
            let b = params.narrow(1, offset, nb)?;
            offset += nb;
            let c_in = x.dim(1)?;
            let wt = wt.reshape((q, nb, c_in))?;
            x = wt.matmul(&x)?.broadcast_add(&b.unsqueeze(2)?)?;
            if l + 1 < layers {
                x = x.relu()?;
            }
        }
        Ok(x.reshape((q, h, w))?)
    }

    /// Per-query score: the sigmoid of the best class logit.
    pub fn scores(pred_logits: &Tensor) -> Result<Vec<f32>> {
        Ok(candle_nn::ops::sigmoid(&pred_logits.to_dtype(DType::F32)?)?
            .max(D::Minus1)?
            .to_vec1::<f32>()?)
    }
}
