//! Swin Transformer backbone in the Hugging Face `SwinBackbone` layout (as used by
//! Grounding-DINO and Mask2Former): patch embedding, windowed multi-head self-attention with
//! relative position bias, shifted windows with their region mask, patch merging, and
//! per-stage outputs normalised by `hidden_states_norms.stageN`.
//!
//! Every size comes from [`SwinConfig`] (the `backbone_config` of a Hugging Face
//! `config.json`), so Swin-T/S/B/L differ only by configuration.

use candle_core::{Device, Module, Tensor, D};
use candle_nn::{Conv2d, Conv2dConfig, LayerNorm, Linear, VarBuilder};
use serde::Deserialize;

use crate::error::{Error, Result};

/// Additive attention bias between tokens of different regions of a shifted window.
const REGION_MASK: f32 = -100.0;

/// Sizes of a Swin backbone (the fields of a Hugging Face `SwinConfig` that matter here).
/// Missing sizes take `transformers`' `SwinConfig` defaults (Swin-T), as in checkpoints whose
/// `config.json` lists only the differences.
#[derive(Debug, Clone, Deserialize)]
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
        if self.window_size == 0 || self.patch_size == 0 {
            return bad("window_size and patch_size must be positive".into());
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
    fn stage_index(&self, name: &str) -> Result<usize> {
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

/// Index into the relative position bias table for every (query, key) pair of a window of
/// side `ws`, row-major: `(dy + ws - 1) * (2ws - 1) + (dx + ws - 1)`.
pub fn relative_position_index(ws: usize) -> Vec<u32> {
    let n = ws * ws;
    let mut out = Vec::with_capacity(n * n);
    for i in 0..n {
        let (yi, xi) = (i / ws, i % ws);
        for j in 0..n {
            let (yj, xj) = (j / ws, j % ws);
            let dy = yi + ws - 1 - yj;
            let dx = xi + ws - 1 - xj;
            out.push((dy * (2 * ws - 1) + dx) as u32);
        }
    }
    out
}

/// Additive mask `(nW, ws², ws²)` of a cyclically shifted `hp × wp` map: 0 between tokens of
/// the same region, −100 otherwise. Regions per axis: `[0, n-ws)`, `[n-ws, n-shift)`,
/// `[n-shift, n)`.
fn shifted_window_mask(
    hp: usize,
    wp: usize,
    ws: usize,
    shift: usize,
    dev: &Device,
) -> Result<Tensor> {
    let region = |i: usize, n: usize| -> usize {
        if i + ws < n {
            0
        } else if i + shift < n {
            1
        } else {
            2
        }
    };
    let (nh, nw) = (hp / ws, wp / ws);
    let n = ws * ws;
    let mut out = Vec::with_capacity(nh * nw * n * n);
    let mut ids = vec![0usize; n];
    for wy in 0..nh {
        for wx in 0..nw {
            for (t, id) in ids.iter_mut().enumerate() {
                let (y, x) = (wy * ws + t / ws, wx * ws + t % ws);
                *id = region(y, hp) * 3 + region(x, wp);
            }
            for &a in &ids {
                for &b in &ids {
                    out.push(if a == b { 0.0 } else { REGION_MASK });
                }
            }
        }
    }
    Ok(Tensor::from_vec(out, (nh * nw, n, n), dev)?)
}

/// `(B, H, W, C)` with `H`, `W` multiples of `ws` -> `(B·nW, ws², C)`.
fn window_partition(x: &Tensor, ws: usize) -> Result<Tensor> {
    let (b, h, w, c) = x.dims4()?;
    Ok(x.reshape((b, h / ws, ws, w / ws, ws, c))?
        .permute((0, 1, 3, 2, 4, 5))?
        .contiguous()?
        .reshape((b * (h / ws) * (w / ws), ws * ws, c))?)
}

/// Inverse of [`window_partition`].
fn window_reverse(x: &Tensor, ws: usize, b: usize, h: usize, w: usize) -> Result<Tensor> {
    let c = x.dim(D::Minus1)?;
    Ok(x.reshape((b, h / ws, w / ws, ws, ws, c))?
        .permute((0, 1, 3, 2, 4, 5))?
        .contiguous()?
        .reshape((b, h, w, c))?)
}

/// Windowed multi-head self-attention with relative position bias.
#[derive(Debug)]
struct WindowAttention {
    query: Linear,
    key: Linear,
    value: Linear,
    output: Linear,
    /// `(heads, ws², ws²)`.
    bias: Tensor,
    heads: usize,
    scale: f64,
}

impl WindowAttention {
    fn new(dim: usize, heads: usize, ws: usize, qkv_bias: bool, vb: VarBuilder) -> Result<Self> {
        let lin = |name: &str| {
            if qkv_bias {
                candle_nn::linear(dim, dim, vb.pp("self").pp(name))
            } else {
                candle_nn::linear_no_bias(dim, dim, vb.pp("self").pp(name))
            }
        };
        let table = vb.pp("self").get(
            ((2 * ws - 1) * (2 * ws - 1), heads),
            "relative_position_bias_table",
        )?;
        let n = ws * ws;
        let index = Tensor::from_vec(relative_position_index(ws), n * n, table.device())?;
        let bias = table
            .index_select(&index, 0)?
            .reshape((n, n, heads))?
            .permute((2, 0, 1))?
            .contiguous()?;
        Ok(WindowAttention {
            query: lin("query")?,
            key: lin("key")?,
            value: lin("value")?,
            output: candle_nn::linear(dim, dim, vb.pp("output").pp("dense"))?,
            bias,
            heads,
            scale: ((dim / heads) as f64).powf(-0.5),
        })
    }

    /// `x`: `(B·nW, N, C)` windows; `mask`: `(nW, N, N)` for shifted windows.
    fn forward(&self, x: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        let (bw, n, c) = x.dims3()?;
        let hd = c / self.heads;
        let split = |t: Tensor| -> Result<Tensor> {
            Ok(t.reshape((bw, n, self.heads, hd))?
                .transpose(1, 2)?
                .contiguous()?)
        };
        let q = (split(self.query.forward(x)?)? * self.scale)?;
        let k = split(self.key.forward(x)?)?;
        let v = split(self.value.forward(x)?)?;
        let mut scores = q.matmul(&k.t()?)?.broadcast_add(&self.bias)?;
        if let Some(mask) = mask {
            let nw = mask.dim(0)?;
            scores = scores
                .reshape((bw / nw, nw, self.heads, n, n))?
                .broadcast_add(&mask.unsqueeze(1)?)?
                .reshape((bw, self.heads, n, n))?;
        }
        let probs = candle_nn::ops::softmax_last_dim(&scores)?;
        let out = probs
            .matmul(&v)?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((bw, n, c))?;
        Ok(self.output.forward(&out)?)
    }
}

/// One Swin block: (shifted) window attention and an MLP, both pre-norm with residuals.
#[derive(Debug)]
struct SwinBlock {
    norm1: LayerNorm,
    attn: WindowAttention,
    norm2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    window: usize,
    shift: usize,
}

impl SwinBlock {
    fn new(c: &SwinConfig, dim: usize, heads: usize, shift: usize, vb: VarBuilder) -> Result<Self> {
        let eps = c.layer_norm_eps;
        let hidden = (dim as f64 * c.mlp_ratio) as usize;
        Ok(SwinBlock {
            norm1: candle_nn::layer_norm(dim, eps, vb.pp("layernorm_before"))?,
            attn: WindowAttention::new(dim, heads, c.window_size, c.qkv_bias, vb.pp("attention"))?,
            norm2: candle_nn::layer_norm(dim, eps, vb.pp("layernorm_after"))?,
            fc1: candle_nn::linear(dim, hidden, vb.pp("intermediate").pp("dense"))?,
            fc2: candle_nn::linear(hidden, dim, vb.pp("output").pp("dense"))?,
            window: c.window_size,
            shift,
        })
    }

    /// `x`: `(B, H, W, C)`.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, h, w, c) = x.dims4()?;
        let ws = self.window;
        let mut y = self.norm1.forward(x)?;
        let (hp, wp) = (h.div_ceil(ws) * ws, w.div_ceil(ws) * ws);
        if hp > h {
            y = y.pad_with_zeros(1, 0, hp - h)?;
        }
        if wp > w {
            y = y.pad_with_zeros(2, 0, wp - w)?;
        }
        let mask = if self.shift > 0 {
            y = y
                .roll(-(self.shift as i32), 1)?
                .roll(-(self.shift as i32), 2)?;
            Some(shifted_window_mask(hp, wp, ws, self.shift, x.device())?)
        } else {
            None
        };
        let windows = self
            .attn
            .forward(&window_partition(&y, ws)?, mask.as_ref())?;
        let mut y = window_reverse(&windows, ws, b, hp, wp)?;
        if self.shift > 0 {
            y = y.roll(self.shift as i32, 1)?.roll(self.shift as i32, 2)?;
        }
        if hp > h || wp > w {
            y = y.narrow(1, 0, h)?.narrow(2, 0, w)?;
        }
        let x = (x + y)?;
        let m = self.norm2.forward(&x)?;
        let m = self.fc2.forward(&self.fc1.forward(&m)?.gelu_erf()?)?;
        debug_assert_eq!(m.dim(3)?, c);
        Ok((x + m)?)
    }
}

/// Patch merging: 2×2 neighbourhoods concatenated (zero-padded when odd), LayerNorm(4C),
/// bias-free Linear(4C → 2C).
#[derive(Debug)]
struct PatchMerging {
    norm: LayerNorm,
    reduction: Linear,
}

impl PatchMerging {
    fn new(dim: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        Ok(PatchMerging {
            norm: candle_nn::layer_norm(4 * dim, eps, vb.pp("norm"))?,
            reduction: candle_nn::linear_no_bias(4 * dim, 2 * dim, vb.pp("reduction"))?,
        })
    }

    /// `(B, H, W, C)` -> `(B, ⌈H/2⌉, ⌈W/2⌉, 2C)`.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, h, w, c) = x.dims4()?;
        let x = x.pad_with_zeros(1, 0, h % 2)?.pad_with_zeros(2, 0, w % 2)?;
        let (h2, w2) = (h.div_ceil(2), w.div_ceil(2));
        // (B, h2, 2[dy], w2, 2[dx], C) -> (B, h2, w2, dx, dy, C): row offset varies fastest.
        let x = x
            .reshape((b, h2, 2, w2, 2, c))?
            .permute((0, 1, 3, 4, 2, 5))?
            .contiguous()?
            .reshape((b, h2, w2, 4 * c))?;
        Ok(self.reduction.forward(&self.norm.forward(&x)?)?)
    }
}

/// One stage: its blocks and the patch merging that follows (all but the last stage).
#[derive(Debug)]
struct SwinStage {
    blocks: Vec<SwinBlock>,
    downsample: Option<PatchMerging>,
}

/// The Swin backbone: feature maps `(B, C_i, H_i, W_i)` of the configured output stages.
#[derive(Debug)]
pub struct SwinBackbone {
    patch_embed: Conv2d,
    embed_norm: LayerNorm,
    stages: Vec<SwinStage>,
    /// (stage index, its output norm), in `out_features` order.
    outputs: Vec<(usize, LayerNorm)>,
    patch: usize,
}

impl SwinBackbone {
    /// Builds the backbone from variables under a Hugging Face `SwinBackbone` prefix
    /// (`embeddings.*`, `encoder.layers.*`, `hidden_states_norms.*`).
    pub fn new(c: &SwinConfig, vb: VarBuilder) -> Result<Self> {
        c.validate()?;
        let eps = c.layer_norm_eps;
        let emb = vb.pp("embeddings");
        let patch_embed = candle_nn::conv2d(
            c.num_channels,
            c.embed_dim,
            c.patch_size,
            Conv2dConfig {
                stride: c.patch_size,
                ..Default::default()
            },
            emb.pp("patch_embeddings").pp("projection"),
        )?;
        let embed_norm = candle_nn::layer_norm(c.embed_dim, eps, emb.pp("norm"))?;
        let n = c.depths.len();
        let mut stages = Vec::with_capacity(n);
        for i in 0..n {
            let dim = c.stage_channels(i);
            let vs = vb.pp("encoder").pp("layers").pp(i);
            let blocks = (0..c.depths[i])
                .map(|j| {
                    let shift = if j % 2 == 1 { c.window_size / 2 } else { 0 };
                    SwinBlock::new(c, dim, c.num_heads[i], shift, vs.pp("blocks").pp(j))
                })
                .collect::<Result<Vec<_>>>()?;
            let downsample = if i + 1 < n {
                Some(PatchMerging::new(dim, eps, vs.pp("downsample"))?)
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
                let norm = candle_nn::layer_norm(
                    c.stage_channels(i),
                    eps,
                    vb.pp("hidden_states_norms").pp(name),
                )?;
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
                Ok(norm.forward(m)?.permute((0, 3, 1, 2))?.contiguous()?)
            })
            .collect()
    }
}
