//! The multi-scale deformable-attention pixel decoder: input projections of the three
//! coarsest backbone maps, a deformable transformer encoder over them, FPN levels down to
//! the common stride and the mask projection.

use candle_core::{Device, Tensor};
use candle_nn::VarBuilder;

use super::config::Mask2FormerConfig;
use super::resnet::CONV;
use crate::error::{Error, Result};
use crate::nn::conv::{Conv2d, ConvShape};
use crate::nn::conv_norm::{ConvGroupNorm, GroupNormSpec};
use crate::nn::deform_attn::{
    encoder_reference_points, split_levels, DeformAttnConfig, Levels, MultiScaleDeformableAttention,
};
use crate::nn::ffn::PostNormFfn;
use crate::nn::norm::LayerNorm;
use crate::nn::resample::resize_bilinear;

/// Feature levels seen by the deformable encoder.
pub const NUM_LEVELS: usize = 3;
/// Sampling points of the deformable encoder.
pub const NUM_POINTS: usize = 4;
/// Groups of every GroupNorm in the pixel decoder.
const GN_GROUPS: usize = 32;
/// Epsilon of PyTorch's LayerNorm and GroupNorm defaults.
const NORM_EPS: f64 = 1e-5;

/// Sine position embedding of DETR with `normalize = True` and no mask: `[1, 2·feats, h, w]`,
/// the `y` half first, sines and cosines interleaved.
pub fn sine_position_embedding(
    h: usize,
    w: usize,
    feats: usize,
    device: &Device,
) -> Result<Tensor> {
    sine_position_embedding_shifted(h, w, feats, 0.0, device)
}

/// [`sine_position_embedding`] with the cumulative positions shifted by `−shift` before
/// normalising (`(i − shift) / (n + 1e-6) · 2π`; ReferFormer's variant uses 0.5).
pub fn sine_position_embedding_shifted(
    h: usize,
    w: usize,
    feats: usize,
    shift: f32,
    device: &Device,
) -> Result<Tensor> {
    let scale = 2.0 * std::f32::consts::PI;
    let dim_t: Vec<f32> = (0..feats)
        .map(|k| 10000f32.powf((2 * (k / 2)) as f32 / feats as f32))
        .collect();
    let mut out = vec![0f32; 2 * feats * h * w];
    let ye: Vec<f32> = (1..=h)
        .map(|i| (i as f32 - shift) / (h as f32 + 1e-6) * scale)
        .collect();
    let xe: Vec<f32> = (1..=w)
        .map(|j| (j as f32 - shift) / (w as f32 + 1e-6) * scale)
        .collect();
    for (k, &d) in dim_t.iter().enumerate() {
        let f = |v: f32| {
            if k % 2 == 0 {
                (v / d).sin()
            } else {
                (v / d).cos()
            }
        };
        for i in 0..h {
            let py = f(ye[i]);
            for j in 0..w {
                out[(k * h + i) * w + j] = py;
                out[((feats + k) * h + i) * w + j] = f(xe[j]);
            }
        }
    }
    Ok(Tensor::from_vec(out, (1, 2 * feats, h, w), device)?)
}

/// A bias-free (or, `bias`, biased) `k × k` convolution followed by GroupNorm, as the
/// `nn.Sequential` of the checkpoint (`.0` conv, `.1` norm).
fn conv_norm(
    c_in: usize,
    c_out: usize,
    k: usize,
    bias: bool,
    vb: VarBuilder,
) -> Result<ConvGroupNorm> {
    let spec = GroupNormSpec {
        groups: GN_GROUPS,
        eps: NORM_EPS,
    };
    let shape = ConvShape::same(c_in, c_out, k);
    ConvGroupNorm::load(&vb.pp("0"), &vb.pp("1"), (shape, bias), spec, CONV)
}

/// One post-norm deformable encoder layer (self-attention over all levels, ReLU FFN).
#[derive(Debug, Clone)]
struct EncoderLayer {
    self_attn: MultiScaleDeformableAttention,
    self_attn_layer_norm: LayerNorm,
    ffn: PostNormFfn,
}

impl EncoderLayer {
    fn new(cfg: &Mask2FormerConfig, vb: VarBuilder) -> Result<Self> {
        let d = cfg.feature_size;
        let attn = DeformAttnConfig {
            d_model: d,
            n_levels: NUM_LEVELS,
            n_heads: cfg.num_attention_heads,
            n_points: NUM_POINTS,
        };
        Ok(EncoderLayer {
            self_attn: MultiScaleDeformableAttention::new(attn, vb.pp("self_attn"))?,
            self_attn_layer_norm: LayerNorm::load(vb.pp("self_attn_layer_norm"), d, NORM_EPS)?,
            ffn: PostNormFfn::load(
                [vb.pp("fc1"), vb.pp("fc2"), vb.pp("final_layer_norm")],
                (d, cfg.encoder_feedforward_dim),
                NORM_EPS,
            )?,
        })
    }

    fn forward(&self, x: &Tensor, pos: &Tensor, refs: &Tensor, levels: &Levels) -> Result<Tensor> {
        let q = x.broadcast_add(pos)?;
        let a = self.self_attn.forward(&q, refs, x, levels, None)?;
        let x = self.self_attn_layer_norm.forward(&(x + a)?)?;
        self.ffn.forward(&x)
    }
}

/// What the pixel decoder produces.
#[derive(Debug, Clone)]
pub struct PixelDecoderOutput {
    /// Per-pixel embeddings at the common stride `[b, mask_feature_size, h/4, w/4]`.
    pub mask_features: Tensor,
    /// Encoder outputs, coarsest first (strides 32, 16, 8), `[b, feature_size, h_l, w_l]`.
    pub multi_scale_features: Vec<Tensor>,
}

/// The pixel decoder (`model.pixel_level_module.decoder`).
#[derive(Debug, Clone)]
pub struct PixelDecoder {
    input_projections: Vec<ConvGroupNorm>,
    level_embed: Tensor,
    layers: Vec<EncoderLayer>,
    /// (adapter, layer) per FPN level, applied from the stride-8 map downwards.
    fpn: Vec<(ConvGroupNorm, ConvGroupNorm)>,
    mask_projection: Conv2d,
    feature_size: usize,
}

impl PixelDecoder {
    /// Builds the decoder for backbone maps with `channels` (strides 4, 8, 16, 32).
    pub fn new(cfg: &Mask2FormerConfig, channels: &[usize], vb: VarBuilder) -> Result<Self> {
        let d = cfg.feature_size;
        let n = channels.len();
        if n < NUM_LEVELS {
            return Err(Error::invalid(format!(
                "pixel decoder: {n} backbone maps, at least {NUM_LEVELS} needed"
            )));
        }
        let input_projections = (0..NUM_LEVELS)
            .map(|l| {
                conv_norm(
                    channels[n - 1 - l],
                    d,
                    1,
                    true,
                    vb.pp(format!("input_projections.{l}")),
                )
            })
            .collect::<Result<Vec<_>>>()?;
        let level_embed = vb.get((NUM_LEVELS, d), "level_embed")?;
        let layers = (0..cfg.encoder_layers)
            .map(|i| EncoderLayer::new(cfg, vb.pp(format!("encoder.layers.{i}"))))
            .collect::<Result<Vec<_>>>()?;
        let finest = cfg.feature_strides[n - NUM_LEVELS];
        let mut num_fpn = 0;
        while cfg.common_stride << num_fpn < finest {
            num_fpn += 1;
        }
        if num_fpn > n - NUM_LEVELS {
            return Err(Error::invalid(format!(
                "pixel decoder: common stride {} needs {num_fpn} FPN maps, the backbone has {}",
                cfg.common_stride,
                n - NUM_LEVELS
            )));
        }
        let fpn = (0..num_fpn)
            .rev()
            .map(|k| {
                Ok((
                    conv_norm(
                        channels[k],
                        d,
                        1,
                        false,
                        vb.pp(format!("adapter_{}", k + 1)),
                    )?,
                    conv_norm(d, d, 3, false, vb.pp(format!("layer_{}", k + 1)))?.with_relu(),
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        let mask_projection = Conv2d::load(
            &vb.pp("mask_projection"),
            ConvShape::same(d, cfg.mask_feature_size, 1),
            CONV,
        )?;
        Ok(PixelDecoder {
            input_projections,
            level_embed,
            layers,
            fpn,
            mask_projection,
            feature_size: d,
        })
    }

    /// Decodes the backbone maps (finest first).
    pub fn forward(&self, features: &[Tensor]) -> Result<PixelDecoderOutput> {
        let n = features.len();
        let dev = features[0].device();
        let mut embeds = Vec::with_capacity(NUM_LEVELS);
        let mut pos = Vec::with_capacity(NUM_LEVELS);
        let mut shapes = Vec::with_capacity(NUM_LEVELS);
        for (l, proj) in self.input_projections.iter().enumerate() {
            let x = &features[n - 1 - l];
            let (_, _, h, w) = x.dims4()?;
            shapes.push((h, w));
            embeds.push(proj.forward(x)?.flatten_from(2)?.transpose(1, 2)?);
            let p = sine_position_embedding(h, w, self.feature_size / 2, dev)?
                .flatten_from(2)?
                .transpose(1, 2)?;
            let e = self.level_embed.narrow(0, l, 1)?.unsqueeze(0)?;
            pos.push(p.broadcast_add(&e)?);
        }
        let levels = Levels::new(shapes);
        let mut x = Tensor::cat(&embeds, 1)?;
        let pos = Tensor::cat(&pos, 1)?;
        let refs = encoder_reference_points(&levels, std::slice::from_ref(&levels.shapes), dev)?;
        for layer in &self.layers {
            x = layer.forward(&x, &pos, &refs, &levels)?;
        }
        let multi_scale_features = split_levels(&x, &levels)?;
        let mut last = multi_scale_features[NUM_LEVELS - 1].clone();
        for (k, (adapter, layer)) in self.fpn.iter().enumerate() {
            let lateral = adapter.forward(&features[self.fpn.len() - 1 - k])?;
            let (_, _, h, w) = lateral.dims4()?;
            last = layer.forward(&(lateral + resize_bilinear(&last, h, w)?)?)?;
        }
        Ok(PixelDecoderOutput {
            mask_features: self.mask_projection.forward(&last)?,
            multi_scale_features,
        })
    }
}
