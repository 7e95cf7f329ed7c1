//! The Grounding-DINO network (Hugging Face `GroundingDinoForObjectDetection` layout): Swin
//! and BERT backbones, feature enhancer, two-stage query selection, decoder and heads.

use candle_core::{DType, Device, Module, Tensor, D};
use candle_nn::{Conv2d, Conv2dConfig, GroupNorm, LayerNorm, Linear, VarBuilder};

use super::config::GroundingDinoConfig;
use super::decoder::{logit, Decoder, Memory};
use super::encoder::{neg_inf_bias, Encoder, EncoderInput};
use super::geometry::{self, LevelMask};
use super::text::{additive_mask, batch_phrase_masks, Bert, TokenBatch};
use crate::error::{Error, Result};
use crate::nn::deform_attn::{encoder_reference_points, Levels};
use crate::nn::mlp::Mlp;
use crate::nn::swin::SwinBackbone;

/// GroupNorm groups of the input projections.
const PROJ_GROUPS: usize = 32;

/// Everything the forward pass computes (intermediates included, for parity checks).
#[derive(Debug)]
pub struct GroundingDinoOutput {
    /// `(B, L, L)` u8 phrase self-attention mask.
    pub text_self_attention_mask: Tensor,
    /// `(B, L)` i64 phrase position ids.
    pub text_position_ids: Tensor,
    /// BERT output `(B, L, hidden)`.
    pub text_bert: Tensor,
    /// Projected text features `(B, L, d)`.
    pub text_projected: Tensor,
    /// Normalised Swin outputs `(B, C_i, H_i, W_i)`.
    pub backbone_maps: Vec<Tensor>,
    /// `(B, S)` u8: 1 on valid image tokens.
    pub mask_flatten: Tensor,
    /// Projected, flattened image tokens `(B, S, d)`.
    pub vision_features: Tensor,
    /// `(H_l, W_l)` of every level.
    pub spatial_shapes: Vec<(usize, usize)>,
    /// `(B, levels, 2)`.
    pub valid_ratios: Tensor,
    /// Encoder text memory `(B, L, d)`.
    pub encoder_text: Tensor,
    /// Encoder vision memory `(B, S, d)`.
    pub encoder_vision: Tensor,
    /// Per-token class logits of the proposals `(B, S, L)`.
    pub enc_outputs_class: Tensor,
    /// Proposal boxes after the encoder box head, inverse-sigmoid space `(B, S, 4)`.
    pub enc_outputs_coord_logits: Tensor,
    /// Proposal anchors, inverse-sigmoid space `(B, S, 4)`.
    pub output_proposals: Tensor,
    /// Selected proposals per image, best first.
    pub topk_indices: Vec<Vec<usize>>,
    /// Class logits of the decoder targets against the projected text `(B, Q, L)`.
    pub encoder_logits: Tensor,
    /// Initial decoder boxes `(B, Q, 4)`.
    pub init_reference_points: Tensor,
    /// `(B, layers, Q, d)`.
    pub intermediate_hidden_states: Tensor,
    /// `(B, layers, Q, 4)`.
    pub intermediate_reference_points: Tensor,
    /// Last decoder state after the final LayerNorm `(B, Q, d)`.
    pub last_hidden_state: Tensor,
    /// `(B, Q, max_text_len)` token logits, −∞ on padding and past the text.
    pub logits: Tensor,
    /// `(B, Q, 4)` normalised boxes `(cx, cy, w, h)`.
    pub pred_boxes: Tensor,
}

/// The Grounding-DINO detector.
#[derive(Debug)]
pub struct GroundingDino {
    config: GroundingDinoConfig,
    bert: Bert,
    text_projection: Linear,
    backbone: SwinBackbone,
    input_proj: Vec<(Conv2d, GroupNorm)>,
    level_embed: Tensor,
    query_embed: Tensor,
    encoder: Encoder,
    enc_output: Linear,
    enc_output_norm: LayerNorm,
    enc_bbox: Mlp,
    decoder: Decoder,
    bbox_head: Mlp,
    device: Device,
}

/// Contrastive logits `x @ text^T` with `bias` `(B, 1, L)` (−∞ on padded tokens).
fn contrastive(x: &Tensor, text: &Tensor, bias: &Tensor) -> Result<Tensor> {
    Ok(x.matmul(&text.t()?.contiguous()?)?.broadcast_add(bias)?)
}

impl GroundingDino {
    /// Builds the model from variables with the Hugging Face key names.
    pub fn new(config: &GroundingDinoConfig, vb: VarBuilder) -> Result<Self> {
        config.validate()?;
        let c = config;
        let d = c.d_model;
        let m = vb.pp("model");
        let backbone = SwinBackbone::new(&c.backbone_config, m.pp("backbone.conv_encoder.model"))?;
        let channels = c.backbone_config.out_channels()?;
        let mut input_proj = Vec::with_capacity(c.num_feature_levels);
        let mut in_ch = *channels.last().expect("validated: at least one output");
        for l in 0..c.num_feature_levels {
            let p = m.pp("input_proj_vision").pp(l);
            let conv = if l < channels.len() {
                candle_nn::conv2d(channels[l], d, 1, Conv2dConfig::default(), p.pp(0))?
            } else {
                let cfg = Conv2dConfig {
                    padding: 1,
                    stride: 2,
                    ..Default::default()
                };
                let conv = candle_nn::conv2d(in_ch, d, 3, cfg, p.pp(0))?;
                in_ch = d;
                conv
            };
            let norm = candle_nn::group_norm(PROJ_GROUPS, d, c.layer_norm_eps, p.pp(1))?;
            input_proj.push((conv, norm));
        }
        let t = &c.text_config;
        Ok(GroundingDino {
            config: c.clone(),
            bert: Bert::new(t, m.pp("text_backbone"))?,
            text_projection: candle_nn::linear(t.hidden_size, d, m.pp("text_projection"))?,
            backbone,
            input_proj,
            level_embed: m.get((c.num_feature_levels, d), "level_embed")?,
            query_embed: m.get((c.num_queries, d), "query_position_embeddings.weight")?,
            encoder: Encoder::new(c, m.pp("encoder"))?,
            enc_output: candle_nn::linear(d, d, m.pp("enc_output"))?,
            enc_output_norm: candle_nn::layer_norm(d, c.layer_norm_eps, m.pp("enc_output_norm"))?,
            enc_bbox: Mlp::new(&[d, d, d, 4], m.pp("encoder_output_bbox_embed"))?,
            decoder: Decoder::new(c, m.pp("decoder"))?,
            bbox_head: Mlp::new(&[d, d, d, 4], vb.pp("bbox_embed").pp(0))?,
            device: vb.device().clone(),
        })
    }

    /// The model's sizes.
    pub fn config(&self) -> &GroundingDinoConfig {
        &self.config
    }

    /// The device the model runs on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Runs the detector on preprocessed images `(B, 3, H, W)` with their pixel mask
    /// `(B, H, W)` (1 = image) and one tokenised prompt per image.
    pub fn forward(
        &self,
        pixel_values: &Tensor,
        pixel_mask: &Tensor,
        tokens: &TokenBatch,
    ) -> Result<GroundingDinoOutput> {
        let c = &self.config;
        let dev = &self.device;
        let (b, _, hh, ww) = pixel_values.dims4()?;
        if tokens.ids.len() != b {
            return Err(Error::invalid(format!(
                "grounding-dino: {} prompts for {b} images",
                tokens.ids.len()
            )));
        }
        // Phrase masks come from the whole prompt, then everything is cut to max_text_len.
        let (self_mask, positions) = batch_phrase_masks(tokens, c.max_text_len, dev)?;
        let mut tokens = tokens.clone();
        for r in tokens
            .ids
            .iter_mut()
            .chain(tokens.attention_mask.iter_mut())
        {
            r.truncate(c.max_text_len);
        }
        if tokens.is_empty() {
            return Err(Error::invalid("grounding-dino: empty prompt"));
        }

        // Text.
        let ids = tokens.ids_tensor(dev)?;
        let text_mask = tokens.mask_tensor(dev)?;
        let text_bert = self
            .bert
            .forward(&ids, &self_mask, &positions, c.bert_mask)?;
        let text_projected = self.text_projection.forward(&text_bert)?;

        // Image levels.
        let backbone_maps = self.backbone.forward(&pixel_values.to_device(dev)?)?;
        let pmask = pixel_mask
            .to_dtype(DType::U8)?
            .flatten_all()?
            .to_vec1::<u8>()?;
        let mut sources = Vec::with_capacity(c.num_feature_levels);
        for (l, (conv, norm)) in self.input_proj.iter().enumerate() {
            let input = if l < backbone_maps.len() {
                &backbone_maps[l]
            } else if l == backbone_maps.len() {
                backbone_maps.last().expect("at least one backbone map")
            } else {
                &sources[l - 1]
            };
            let x = norm.forward(&conv.forward(input)?)?;
            sources.push(x);
        }
        let mut level_masks = Vec::with_capacity(sources.len());
        let mut flat = Vec::with_capacity(sources.len());
        let mut pos = Vec::with_capacity(sources.len());
        for (l, s) in sources.iter().enumerate() {
            let (_, _, h, w) = s.dims4()?;
            let lm = LevelMask::from_pixel_mask(&pmask, b, hh, ww, h, w);
            let p = geometry::level_position(
                &lm,
                b,
                c.d_model / 2,
                c.positional_embedding_temperature,
                dev,
            )?;
            pos.push(p.broadcast_add(&self.level_embed.get(l)?)?);
            flat.push(s.flatten_from(2)?.transpose(1, 2)?);
            level_masks.push(lm);
        }
        let vision_features = Tensor::cat(&flat, 1)?.contiguous()?;
        let vision_pos = Tensor::cat(&pos, 1)?;
        let spatial_shapes: Vec<(usize, usize)> = level_masks.iter().map(|l| (l.h, l.w)).collect();
        let valid: Vec<u8> = (0..b)
            .flat_map(|bi| {
                level_masks.iter().flat_map(move |l| {
                    let n = l.h * l.w;
                    l.valid[bi * n..(bi + 1) * n].iter().map(|&v| u8::from(v))
                })
            })
            .collect();
        let s_len = valid.len() / b;
        let mask_flatten = Tensor::from_vec(valid, (b, s_len), dev)?;
        let padding = (1.0 - mask_flatten.to_dtype(DType::F32)?)?.to_dtype(DType::U8)?;
        let valid_ratios = geometry::valid_ratios(&level_masks, b, dev)?;
        let levels = Levels::new(spatial_shapes.clone());

        // Encoder.
        let input = EncoderInput {
            vision_pos,
            reference_points: encoder_reference_points(
                &levels,
                &geometry::valid_extents(&level_masks, b),
                dev,
            )?,
            levels,
            padding,
            valid: mask_flatten.clone(),
            text_mask: text_mask.clone(),
            text_self_mask: self_mask.clone(),
            text_positions: positions.clone(),
        };
        let (encoder_vision, encoder_text) =
            self.encoder
                .forward(&vision_features, &text_projected, &input)?;

        // Two-stage query selection.
        let text_bias = neg_inf_bias(&text_mask)?.squeeze(1)?;
        let (output_proposals, keep) = geometry::proposals(&level_masks, b, dev)?;
        let object_query = self.enc_output_norm.forward(
            &self
                .enc_output
                .forward(&encoder_vision.broadcast_mul(&keep)?)?,
        )?;
        let enc_outputs_class = contrastive(&object_query, &encoder_text, &text_bias)?;
        let enc_outputs_coord_logits = (self.enc_bbox.forward(&object_query)? + &output_proposals)?;
        let best = enc_outputs_class.max(D::Minus1)?.to_vec2::<f32>()?;
        let q = c.num_queries.min(s_len);
        let topk_indices: Vec<Vec<usize>> = best
            .iter()
            .map(|row| {
                let mut idx: Vec<usize> = (0..row.len()).collect();
                idx.sort_by(|&i, &j| row[j].total_cmp(&row[i]));
                idx.truncate(q);
                idx
            })
            .collect();
        let gathered = topk_indices
            .iter()
            .enumerate()
            .map(|(bi, idx)| {
                let idx = Tensor::from_vec(
                    idx.iter().map(|&i| i as u32).collect::<Vec<_>>(),
                    idx.len(),
                    dev,
                )?;
                Ok(enc_outputs_coord_logits.get(bi)?.index_select(&idx, 0)?)
            })
            .collect::<Result<Vec<_>>>()?;
        let init_reference_points = candle_nn::ops::sigmoid(&Tensor::stack(&gathered, 0)?)?;
        let target = self
            .query_embed
            .narrow(0, 0, q)?
            .unsqueeze(0)?
            .repeat((b, 1, 1))?;
        let encoder_logits = contrastive(&target, &text_projected, &text_bias)?;

        // Decoder.
        let dec_text_bias = additive_mask(&text_mask)?.unsqueeze(1)?.unsqueeze(1)?;
        let memory = Memory {
            vision: &encoder_vision,
            text: &encoder_text,
            text_bias: &dec_text_bias,
            levels: &input.levels,
            padding: &input.padding,
            valid_ratios: &valid_ratios,
        };
        let dec =
            self.decoder
                .forward(&target, &init_reference_points, &memory, &self.bbox_head)?;

        // Heads.
        let n = self.config.decoder_layers;
        let last_hidden_state = dec.intermediate_hidden_states.get_on_dim(1, n - 1)?;
        let l = tokens.len();
        let logits = contrastive(&last_hidden_state, &encoder_text, &text_bias)?;
        let logits = if l < c.max_text_len {
            let pad = Tensor::full(f32::NEG_INFINITY, (b, q, c.max_text_len - l), dev)?;
            Tensor::cat(&[&logits, &pad], 2)?
        } else {
            logits
        };
        let before_last = if n > 1 {
            dec.intermediate_reference_points.get_on_dim(1, n - 2)?
        } else {
            init_reference_points.clone()
        };
        let pred_boxes = candle_nn::ops::sigmoid(
            &(self.bbox_head.forward(&last_hidden_state)? + logit(&before_last, 1e-5)?)?,
        )?;
        Ok(GroundingDinoOutput {
            text_self_attention_mask: self_mask,
            text_position_ids: positions,
            text_bert,
            text_projected,
            backbone_maps,
            mask_flatten,
            vision_features,
            spatial_shapes,
            valid_ratios,
            encoder_text,
            encoder_vision,
            enc_outputs_class,
            enc_outputs_coord_logits,
            output_proposals,
            topk_indices,
            encoder_logits,
            init_reference_points,
            intermediate_hidden_states: dec.intermediate_hidden_states,
            intermediate_reference_points: dec.intermediate_reference_points,
            last_hidden_state,
            logits,
            pred_boxes,
        })
    }
}
