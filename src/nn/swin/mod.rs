//! Swin Transformer backbone: patch embedding, windowed multi-head self-attention with
//! relative position bias, shifted windows with their region mask, patch merging, and
//! per-stage outputs normalised by their own LayerNorm. One set of blocks reads three checkpoint
//! key layouts ([`Layout`]): Hugging Face's `SwinBackbone` (Grounding-DINO, Mask2Former),
//! the original Microsoft code's (EntitySeg, ReferFormer), and ReferFormer's Video-Swin.
//!
//! Video-Swin ([`Layout::Video`]) runs here on one frame, as a generalisation of the same
//! blocks: its 3D patch embedding has a temporal patch of 1 (a 2D convolution per frame), its
//! bias tables cover `[window_frames, w, w]` windows of which a single frame reads the
//! zero-time-offset slice, windows shrink to a map side not larger than them (unshifted on
//! that axis, as the official `get_window_size` does) with the bias of the shrunken window's
//! `n` tokens read from the first `n` rows and columns of the full window's index, patch
//! merging sits at `downsamples.i`, and stage outputs are not normalised.
//!
//! Every size comes from [`SwinConfig`] (the `backbone_config` of a Hugging Face
//! `config.json`, or [`SwinConfig::from_official`] reading an original-layout checkpoint's
//! shapes), so Swin-T/S/B/L differ only by configuration. Both codes agree on everything
//! else: pre-norm blocks, zero padding of the patch embedding's input to multiples of the
//! patch and of each block's (normed) input to multiples of the window, shift by half a
//! window on odd blocks, patch merging of zero-padded 2×2 neighbourhoods, and the output norm
//! applied to a stage's output before its patch merging. Absolute position embeddings
//! (`ape`, off in every published detection config) are not supported.

mod blocks;
mod layout;

use candle_core::{Module, Tensor};
use candle_nn::{Conv2d, Conv2dConfig, LayerNorm, VarBuilder};
use serde::{Deserialize, Serialize};

use self::blocks::{PatchMerging, SwinBlock};
pub use self::layout::Layout;
use crate::error::{Error, Result};
use crate::nn::transpose::to_channels_first;

/// Sizes of a Swin backbone (the fields of a Hugging Face `SwinConfig` that matter here).
/// Missing sizes take `transformers`' `SwinConfig` defaults (Swin-T), as in checkpoints whose
/// `config.json` lists only the differences.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SwinConfig {
    /// Channels of the first stage.
    #[serde(default = "default_embed_dim")]
    pub embed_dim: usize,
    /// Blocks per stage.
    #[serde(default = "default_depths")]
    pub depths: Vec<usize>,
    /// Attention heads per stage.
    #[serde(default = "default_num_heads")]
    pub num_heads: Vec<usize>,
    /// Side of the square attention windows.
    #[serde(default = "default_window_size")]
    pub window_size: usize,
    /// Frames of the attention windows (Video-Swin's temporal window; 1 for image Swin). Only
    /// the bias table's size depends on it: the port runs one frame at a time.
    #[serde(default = "default_one")]
    pub window_frames: usize,
    /// Side (and stride) of the patch-embedding convolution.
    #[serde(default = "default_patch_size")]
    pub patch_size: usize,
    /// MLP hidden width relative to the stage's channels.
    #[serde(default = "default_mlp_ratio")]
    pub mlp_ratio: f64,
    /// Whether the query/key/value projections have biases.
    #[serde(default = "default_true")]
    pub qkv_bias: bool,
    /// LayerNorm epsilon.
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    /// Input channels.
    #[serde(default = "default_channels")]
    pub num_channels: usize,
    /// Returned stages, `stage1` .. `stageN` (stride 4 .. 4·2^(N-1)).
    pub out_features: Vec<String>,
    /// Whether a learned absolute position embedding is added (not supported).
    #[serde(default)]
    pub use_absolute_embeddings: bool,
}

fn default_embed_dim() -> usize {
    96
}
fn default_depths() -> Vec<usize> {
    vec![2, 2, 6, 2]
}
fn default_num_heads() -> Vec<usize> {
    vec![3, 6, 12, 24]
}
fn default_window_size() -> usize {
    7
}
fn default_one() -> usize {
    1
}
fn default_patch_size() -> usize {
    4
}
fn default_mlp_ratio() -> f64 {
    4.0
}
fn default_true() -> bool {
    true
}
fn default_eps() -> f64 {
    1e-5
}
fn default_channels() -> usize {
    3
}

impl SwinConfig {
    /// Checks the sizes for consistency.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(format!("swin backbone: {m}")));
        if self.depths.is_empty() || self.depths.len() != self.num_heads.len() {
            return bad(format!(
                "depths {:?} and num_heads {:?} must be non-empty and of equal length",
                self.depths, self.num_heads
            ));
        }
        if self.window_size == 0 || self.patch_size == 0 || self.window_frames == 0 {
            return bad("window_size, window_frames and patch_size must be positive".into());
        }
        if self.use_absolute_embeddings {
            return bad("use_absolute_embeddings is not supported".into());
        }
        for (i, &h) in self.num_heads.iter().enumerate() {
            if h == 0 || !self.stage_channels(i).is_multiple_of(h) {
                return bad(format!(
                    "stage {} has {} channels, not divisible by {h} heads",
                    i + 1,
                    self.stage_channels(i)
                ));
            }
        }
        for name in &self.out_features {
            self.stage_index(name)?;
        }
        Ok(())
    }

    /// Channels of stage `i` (0-based).
    pub fn stage_channels(&self, i: usize) -> usize {
        self.embed_dim << i
    }

    /// Channels of each returned stage, in `out_features` order.
    pub fn out_channels(&self) -> Result<Vec<usize>> {
        self.out_features
            .iter()
            .map(|n| Ok(self.stage_channels(self.stage_index(n)?)))
            .collect()
    }

    /// 0-based stage index of an output name `stageN`.
    pub fn stage_index(&self, name: &str) -> Result<usize> {
        name.strip_prefix("stage")
            .and_then(|n| n.parse::<usize>().ok())
            .filter(|&n| n >= 1 && n <= self.depths.len())
            .map(|n| n - 1)
            .ok_or_else(|| {
                Error::Config(format!(
                    "swin backbone: unknown output '{name}' (stage1..stage{})",
                    self.depths.len()
                ))
            })
    }
}

/// One stage: its blocks and the patch merging that follows (all but the last stage).
#[derive(Debug, Clone)]
struct SwinStage {
    blocks: Vec<SwinBlock>,
    downsample: Option<PatchMerging>,
}

/// The Swin backbone: feature maps `(B, C_i, H_i, W_i)` of the configured output stages.
#[derive(Debug, Clone)]
pub struct SwinBackbone {
    patch_embed: Conv2d,
    embed_norm: LayerNorm,
    stages: Vec<SwinStage>,
    /// (stage index, its output norm if the layout has one), in `out_features` order.
    outputs: Vec<(usize, Option<LayerNorm>)>,
    patch: usize,
}

impl SwinBackbone {
    /// Builds the backbone from variables under a Hugging Face `SwinBackbone` prefix
    /// (`embeddings.*`, `encoder.layers.*`, `hidden_states_norms.*`).
    pub fn new(c: &SwinConfig, vb: VarBuilder) -> Result<Self> {
        Self::load(c, Layout::HuggingFace, vb)
    }

    /// Builds the backbone from variables spelled as `layout` says under `vb`'s prefix.
    pub fn load(c: &SwinConfig, layout: Layout, vb: VarBuilder) -> Result<Self> {
        c.validate()?;
        let eps = c.layer_norm_eps;
        let (proj, norm) = layout.patch_embed(&vb);
        let (p, cin, dim) = (c.patch_size, c.num_channels, c.embed_dim);
        let weight = match layout {
            // Video-Swin's Conv3d has a temporal patch of 1: per frame, a 2D convolution.
            Layout::Video => proj.get((dim, cin, 1, p, p), "weight")?.squeeze(2)?,
            _ => proj.get((dim, cin, p, p), "weight")?,
        };
        let conv = Conv2dConfig {
            stride: p,
            ..Default::default()
        };
        let patch_embed = Conv2d::new(weight, Some(proj.get(dim, "bias")?), conv);
        let embed_norm = candle_nn::layer_norm(c.embed_dim, eps, norm)?;
        let n = c.depths.len();
        let mut stages = Vec::with_capacity(n);
        for i in 0..n {
            let dim = c.stage_channels(i);
            let vs = layout.stage(&vb, i);
            let blocks = (0..c.depths[i])
                .map(|j| {
                    let shift = if j % 2 == 1 { c.window_size / 2 } else { 0 };
                    SwinBlock::new(c, dim, c.num_heads[i], shift, layout, vs.pp("blocks").pp(j))
                })
                .collect::<Result<Vec<_>>>()?;
            let downsample = if i + 1 < n {
                Some(PatchMerging::new(dim, eps, layout.downsample(&vb, i))?)
            } else {
                None
            };
            stages.push(SwinStage { blocks, downsample });
        }
        let outputs = c
            .out_features
            .iter()
            .map(|name| {
                let i = c.stage_index(name)?;
                let norm = layout
                    .output_norm(&vb, i)
                    .map(|v| candle_nn::layer_norm(c.stage_channels(i), eps, v))
                    .transpose()?;
                Ok((i, norm))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(SwinBackbone {
            patch_embed,
            embed_norm,
            stages,
            outputs,
            patch: c.patch_size,
        })
    }

    /// Feature maps `(B, C, H, W)` of the output stages for `pixels` `(B, C_in, H, W)`.
    pub fn forward(&self, pixels: &Tensor) -> Result<Vec<Tensor>> {
        let (_, _, h, w) = pixels.dims4()?;
        let p = self.patch;
        let x = pixels
            .pad_with_zeros(3, 0, (p - w % p) % p)?
            .pad_with_zeros(2, 0, (p - h % p) % p)?;
        let x = self.patch_embed.forward(&x)?.permute((0, 2, 3, 1))?;
        let mut x = self.embed_norm.forward(&x.contiguous()?)?;
        let mut maps: Vec<Option<Tensor>> = vec![None; self.stages.len()];
        let last = self.outputs.iter().map(|(i, _)| *i).max().unwrap_or(0);
        for (i, stage) in self.stages.iter().enumerate().take(last + 1) {
            for block in &stage.blocks {
                x = block.forward(&x)?;
            }
            maps[i] = Some(x.clone());
            if let Some(down) = &stage.downsample {
                if i < last {
                    x = down.forward(&x)?;
                }
            }
        }
        self.outputs
            .iter()
            .map(|(i, norm)| {
                let m = maps[*i]
                    .as_ref()
                    .ok_or_else(|| Error::invalid("swin: stage output missing"))?;
                let m = match norm {
                    Some(norm) => norm.forward(m)?,
                    None => m.clone(),
                };
                to_channels_first(&m)
            })
            .collect()
    }
}
