//! Vision-language fusion: the early fusion applied to every transformer level
//! (`fusion_module`) and the cross-modal FPN (`pixel_decoder`) that turns backbone features,
//! encoder memory and words into the mask features.

use candle_core::{Device, Module, Tensor};
use candle_nn::{LayerNorm, VarBuilder};

use super::config::HEADS;
use super::model::CONV;
use crate::error::{Error, Result};
use crate::nn::conv::{Conv2d, ConvShape};
use crate::nn::conv_norm::{ConvGroupNorm, GroupNormSpec};
use crate::nn::ffn::PostNormFfn;
use crate::nn::resample::resize_bilinear;
use crate::segmenter::mask2former::transformer_decoder::Attention;

/// GroupNorm groups of the FPN's convolutions.
const FPN_GROUPS: usize = 8;
/// Epsilon of PyTorch's LayerNorm and GroupNorm defaults.
const NORM_EPS: f64 = 1e-5;
/// Spatial reduction of the self-attention keys of each FPN level, finest (stride 4) first.
const SR_RATIOS: [usize; 4] = [8, 4, 2, 1];

/// Normalised 1-D sine embedding of `len` positions (`[1, len, feats]`, sines and cosines
/// interleaved, positions `i / (len + 1e-6) · 2π` for `i = 1..=len`): the words' positions.
pub fn sine_1d(len: usize, feats: usize, dev: &Device) -> Result<Tensor> {
    let scale = 2.0 * std::f32::consts::PI;
    let mut v = Vec::with_capacity(len * feats);
    for i in 1..=len {
        let x = i as f32 / (len as f32 + 1e-6) * scale;
        for k in 0..feats {
            let a = x / 10000f32.powf((2 * (k / 2)) as f32 / feats as f32);
            v.push(if k % 2 == 0 { a.sin() } else { a.cos() });
        }
    }
    Ok(Tensor::from_vec(v, (1, len, feats), dev)?)
}

/// Words as keys and values: features `[1, L, d]` and their position embedding.
#[derive(Debug, Clone)]
pub struct Words {
    /// Resized word features `[1, L, d]`.
    pub features: Tensor,
    /// `features + position embedding`, the attention keys.
    pub keys: Tensor,
}

/// `[1, d, h, w]` → `[1, hw, d]`.
fn to_seq(x: &Tensor) -> Result<Tensor> {
    Ok(x.flatten_from(2)?.transpose(1, 2)?.contiguous()?)
}

/// `[1, hw, d]` → `[1, d, h, w]`.
fn to_map(x: &Tensor, h: usize, w: usize) -> Result<Tensor> {
    let d = x.dim(2)?;
    Ok(x.transpose(1, 2)?.reshape((1, d, h, w))?)
}

/// `fusion_module`: a map multiplied by its attention over the words.
#[derive(Debug, Clone)]
pub struct Fusion {
    attn: Attention,
}

impl Fusion {
    /// Loads `multihead_attn` under `vb`.
    pub fn new(d: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Fusion {
            attn: Attention::packed(d, HEADS, vb.pp("multihead_attn"))?,
        })
    }

    /// Fuses a map `[1, d, h, w]` with the words.
    pub fn forward(&self, x: &Tensor, words: &Words) -> Result<Tensor> {
        let (_, _, h, w) = x.dims4()?;
        let s = to_seq(x)?;
        let a = self.attn.forward(&s, &words.keys, &words.features, None)?;
        to_map(&(s * a)?, h, w)
    }
}

/// `VisionLanguageBlock` (post-norm): self-attention over the map (keys and values
/// downsampled `sr` times), cross-attention to the words, FFN.
#[derive(Debug, Clone)]
struct VisionLanguageBlock {
    self_attn: Attention,
    multihead_attn: Attention,
    norms: [LayerNorm; 2],
    ffn: PostNormFfn,
    sr: usize,
}

impl VisionLanguageBlock {
    fn new(d: usize, ffn: usize, sr: usize, vb: VarBuilder) -> Result<Self> {
        let n = |i: usize| candle_nn::layer_norm(d, NORM_EPS, vb.pp(format!("norm{i}")));
        Ok(VisionLanguageBlock {
            self_attn: Attention::packed(d, HEADS, vb.pp("self_attn"))?,
            multihead_attn: Attention::packed(d, HEADS, vb.pp("multihead_attn"))?,
            norms: [n(1)?, n(2)?],
            ffn: super::transformer::ffn(d, ffn, &vb, "norm3")?,
            sr,
        })
    }

    /// `x` `[1, d, h, w]` with its position embedding `pos`; returns the same shape.
    fn forward(&self, x: &Tensor, pos: &Tensor, words: &Words) -> Result<Tensor> {
        let (_, _, h, w) = x.dims4()?;
        let qk = (x + pos)?;
        let a = if self.sr > 1 {
            let (nh, nw) = (h / self.sr, w / self.sr);
            if nh == 0 || nw == 0 {
                return Err(Error::invalid(format!(
                    "referformer: a {h}x{w} feature map is too small for the FPN's {}x \
                     reduction (use a larger input)",
                    self.sr
                )));
            }
            let q = to_seq(&qk.upsample_nearest2d(nh, nw)?)?;
            let v = to_seq(&x.upsample_nearest2d(nh, nw)?)?;
            let a = to_map(&self.self_attn.forward(&q, &q, &v, None)?, nh, nw)?;
            to_seq(&resize_bilinear(&a, h, w)?)?
        } else {
            let q = to_seq(&qk)?;
            self.self_attn.forward(&q, &q, &to_seq(x)?, None)?
        };
        let t = self.norms[0].forward(&(to_seq(x)? + a)?)?;
        let a = self.multihead_attn.forward(
            &(&t + to_seq(pos)?)?,
            &words.keys,
            &words.features,
            None,
        )?;
        let t = self.norms[1].forward(&(t + a)?)?;
        to_map(&self.ffn.forward(&t)?, h, w)
    }
}

/// A bias-free `k × k` convolution with GroupNorm at `vb` (`weight`, `norm.*`).
fn conv_gn(c_in: usize, c_out: usize, k: usize, vb: &VarBuilder) -> Result<ConvGroupNorm> {
    let spec = GroupNormSpec {
        groups: FPN_GROUPS,
        eps: NORM_EPS,
    };
    let shape = ConvShape::same(c_in, c_out, k);
    ConvGroupNorm::load(vb, &vb.pp("norm"), (shape, false), spec, CONV)
}

/// One FPN level: lateral convolution, vision-language block, output convolution.
#[derive(Debug, Clone)]
struct FpnLevel {
    adapter: ConvGroupNorm,
    cross_attn: VisionLanguageBlock,
    layer: ConvGroupNorm,
}

/// The cross-modal FPN decoder (`pixel_decoder`).
#[derive(Debug, Clone)]
pub struct CrossModalFpn {
    /// Levels finest (stride 4, `adapter_1`) first.
    levels: Vec<FpnLevel>,
    mask_features: Conv2d,
}

impl CrossModalFpn {
    /// Loads `adapter_i`, `layer_i`, `cross_attn_i` (i = 1…4) and `mask_features`; the
    /// finest level reads `c_res2` backbone channels, the others `d`.
    pub fn new(
        c_res2: usize,
        d: usize,
        mask_dim: usize,
        ffn: usize,
        vb: VarBuilder,
    ) -> Result<Self> {
        let levels = SR_RATIOS
            .iter()
            .enumerate()
            .map(|(i, &sr)| {
                let s = i + 1;
                let c_in = if i == 0 { c_res2 } else { d };
                Ok(FpnLevel {
                    adapter: conv_gn(c_in, d, 1, &vb.pp(format!("adapter_{s}")))?,
                    cross_attn: VisionLanguageBlock::new(
                        d,
                        ffn,
                        sr,
                        vb.pp(format!("cross_attn_{s}")),
                    )?,
                    layer: conv_gn(d, d, 3, &vb.pp(format!("layer_{s}")))?.with_relu(),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(CrossModalFpn {
            levels,
            mask_features: Conv2d::load(
                &vb.pp("mask_features"),
                ConvShape::same(d, mask_dim, 3),
                CONV,
            )?,
        })
    }

    /// Mask features `[1, mask_dim, h/4, w/4]` from the stride-4 backbone map `res2`, the
    /// encoder memory maps at strides 8, 16, 32 and the backbone position embeddings of
    /// strides 4, 8, 16, 32.
    pub fn forward(
        &self,
        res2: &Tensor,
        memory: &[Tensor],
        pos: &[Tensor],
        words: &Words,
    ) -> Result<Tensor> {
        let inputs = std::iter::once(res2).chain(memory.iter());
        let mut y: Option<Tensor> = None;
        let stages: Vec<_> = inputs.zip(pos).zip(&self.levels).collect();
        for ((x, p), level) in stages.into_iter().rev() {
            let v = level.adapter.forward(x)?;
            let cur = level.cross_attn.forward(&v, p, words)?;
            let sum = match y {
                None => cur,
                Some(prev) => {
                    let (_, _, h, w) = cur.dims4()?;
                    (cur + prev.upsample_nearest2d(h, w)?)?
                }
            };
            y = Some(level.layer.forward(&sum)?);
        }
        let y = y.ok_or_else(|| Error::invalid("referformer: the FPN has no levels"))?;
        self.mask_features.forward(&y)
    }
}
