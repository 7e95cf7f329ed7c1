//! The pieces of a Swin stage: windowed multi-head self-attention with relative position
//! bias, shifted windows with their region mask, the transformer block and patch merging.

use candle_core::{Device, Module, Tensor, D};
use candle_nn::{LayerNorm, Linear, VarBuilder};

use super::layout::{BlockKeys, Layout};
use super::SwinConfig;
use crate::error::Result;

/// Additive attention bias between tokens of different regions of a shifted window.
const REGION_MASK: f32 = -100.0;

/// Index into the relative position bias table for every (query, key) pair of a window of
/// side `ws`, row-major: `(dy + ws - 1) * (2ws - 1) + (dx + ws - 1)`.
fn relative_position_index(ws: usize) -> Vec<u32> {
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
#[derive(Debug, Clone)]
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
    /// `vb` holds the projections and the bias table (`keys.attn`), `proj` the output.
    fn new(
        dim: usize,
        heads: usize,
        c: &SwinConfig,
        layout: Layout,
        vb: VarBuilder,
        proj: VarBuilder,
    ) -> Result<Self> {
        let ws = c.window_size;
        let (query, key, value) = match layout {
            Layout::HuggingFace => {
                let lin = |name: &str| {
                    if c.qkv_bias {
                        candle_nn::linear(dim, dim, vb.pp(name))
                    } else {
                        candle_nn::linear_no_bias(dim, dim, vb.pp(name))
                    }
                };
                (lin("query")?, lin("key")?, lin("value")?)
            }
            Layout::Official => {
                // One fused `qkv` projection: rows [query; key; value].
                let w = vb.pp("qkv").get((3 * dim, dim), "weight")?;
                let b = if c.qkv_bias {
                    Some(vb.pp("qkv").get(3 * dim, "bias")?)
                } else {
                    None
                };
                let part = |i: usize| -> Result<Linear> {
                    let bias = match &b {
                        Some(b) => Some(b.narrow(0, i * dim, dim)?.contiguous()?),
                        None => None,
                    };
                    Ok(Linear::new(w.narrow(0, i * dim, dim)?.contiguous()?, bias))
                };
                (part(0)?, part(1)?, part(2)?)
            }
        };
        let table = vb.get(
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
            query,
            key,
            value,
            output: candle_nn::linear(dim, dim, proj)?,
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
#[derive(Debug, Clone)]
pub(super) struct SwinBlock {
    norm1: LayerNorm,
    attn: WindowAttention,
    norm2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    window: usize,
    shift: usize,
}

impl SwinBlock {
    pub(super) fn new(
        c: &SwinConfig,
        dim: usize,
        heads: usize,
        shift: usize,
        layout: Layout,
        vb: VarBuilder,
    ) -> Result<Self> {
        let eps = c.layer_norm_eps;
        let hidden = (dim as f64 * c.mlp_ratio) as usize;
        let BlockKeys {
            norm1,
            norm2,
            attn,
            proj,
            fc1,
            fc2,
        } = layout.block(&vb);
        Ok(SwinBlock {
            norm1: candle_nn::layer_norm(dim, eps, norm1)?,
            attn: WindowAttention::new(dim, heads, c, layout, attn, proj)?,
            norm2: candle_nn::layer_norm(dim, eps, norm2)?,
            fc1: candle_nn::linear(dim, hidden, fc1)?,
            fc2: candle_nn::linear(hidden, dim, fc2)?,
            window: c.window_size,
            shift,
        })
    }

    /// `x`: `(B, H, W, C)`.
    pub(super) fn forward(&self, x: &Tensor) -> Result<Tensor> {
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
#[derive(Debug, Clone)]
pub(super) struct PatchMerging {
    norm: LayerNorm,
    reduction: Linear,
}

impl PatchMerging {
    pub(super) fn new(dim: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        Ok(PatchMerging {
            norm: candle_nn::layer_norm(4 * dim, eps, vb.pp("norm"))?,
            reduction: candle_nn::linear_no_bias(4 * dim, 2 * dim, vb.pp("reduction"))?,
        })
    }

    /// `(B, H, W, C)` -> `(B, ⌈H/2⌉, ⌈W/2⌉, 2C)`.
    pub(super) fn forward(&self, x: &Tensor) -> Result<Tensor> {
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
