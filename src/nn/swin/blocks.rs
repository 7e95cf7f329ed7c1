//! The pieces of a Swin stage: windowed multi-head self-attention with relative position
//! bias, shifted windows with their region mask, the transformer block and patch merging.

use candle_core::{Device, Module, Tensor, D};
use candle_nn::{Linear, VarBuilder};

use super::layout::{BlockKeys, Layout};
use super::SwinConfig;
use crate::error::Result;
use crate::nn::act::Activation;
use crate::nn::dense::Dense;
use crate::nn::is_host_f32;
use crate::nn::norm::LayerNorm;
use crate::nn::window_attn::{window_attention, window_attention_tensor_ops};

/// Additive attention bias between tokens of different regions of a shifted window.
const REGION_MASK: f32 = -100.0;

/// Index into the relative position bias table of a `[frames, side, side]` window for every
/// (query, key) pair of its first `n` tokens (tokens ordered frame, row, column): the offsets
/// `(dt, dy, dx)` shifted to start at 0, mixed radix `(2·frames-1, 2·side-1, 2·side-1)`. Image
/// Swin has one frame and `n = side²`; Video-Swin with a clamped window reads such a prefix.
fn relative_position_index(window: [usize; 3], n: usize) -> Vec<u32> {
    let [wd, wh, ww] = window;
    let coords = |t: usize| (t / (wh * ww), (t / ww) % wh, t % ww);
    let mut out = Vec::with_capacity(n * n);
    for i in 0..n {
        let (di, yi, xi) = coords(i);
        for j in 0..n {
            let (dj, yj, xj) = coords(j);
            let dd = di + wd - 1 - dj;
            let dy = yi + wh - 1 - yj;
            let dx = xi + ww - 1 - xj;
            out.push(((dd * (2 * wh - 1) + dy) * (2 * ww - 1) + dx) as u32);
        }
    }
    out
}

/// A window's extent along the two axes of a map: (rows, columns) for sizes, shifts or padded
/// map sides.
type Pair = (usize, usize);

/// Additive mask `(nW, wh·ww, wh·ww)` of a cyclically shifted `hp × wp` map with windows
/// `win` and shifts `shift`: 0 between tokens of the same region, −100 otherwise. Regions per
/// axis of side `n`: `[0, n-w)`, `[n-w, n-s)`, `[n-s, n)` (a single region when `n = w`).
fn shifted_window_mask((hp, wp): Pair, win: Pair, shift: Pair, dev: &Device) -> Result<Tensor> {
    let region = |i: usize, n: usize, w: usize, s: usize| -> usize {
        if i + w < n {
            0
        } else if i + s < n {
            1
        } else {
            2
        }
    };
    let (nh, nw) = (hp / win.0, wp / win.1);
    let n = win.0 * win.1;
    let mut out = Vec::with_capacity(nh * nw * n * n);
    let mut ids = vec![0usize; n];
    for wy in 0..nh {
        for wx in 0..nw {
            for (t, id) in ids.iter_mut().enumerate() {
                let (y, x) = (wy * win.0 + t / win.1, wx * win.1 + t % win.1);
                *id = region(y, hp, win.0, shift.0) * 3 + region(x, wp, win.1, shift.1);
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

/// `(B, H, W, C)` with `H`, `W` multiples of the window `(wh, ww)` -> `(B·nW, wh·ww, C)`.
fn window_partition(x: &Tensor, (wh, ww): Pair) -> Result<Tensor> {
    let (b, h, w, c) = x.dims4()?;
    Ok(x.reshape((b, h / wh, wh, w / ww, ww, c))?
        .permute((0, 1, 3, 2, 4, 5))?
        .contiguous()?
        .reshape((b * (h / wh) * (w / ww), wh * ww, c))?)
}

/// Inverse of [`window_partition`].
fn window_reverse(x: &Tensor, (wh, ww): Pair, b: usize, h: usize, w: usize) -> Result<Tensor> {
    let c = x.dim(D::Minus1)?;
    Ok(x.reshape((b, h / wh, w / ww, wh, ww, c))?
        .permute((0, 1, 3, 2, 4, 5))?
        .contiguous()?
        .reshape((b, h, w, c))?)
}

/// The bias `(heads, n, n)` between the first `n` tokens of a `window` from its `table`.
fn gather_bias(table: &Tensor, window: [usize; 3], n: usize) -> Result<Tensor> {
    let heads = table.dim(1)?;
    let index = Tensor::from_vec(relative_position_index(window, n), n * n, table.device())?;
    Ok(table
        .index_select(&index, 0)?
        .reshape((n, n, heads))?
        .permute((2, 0, 1))?
        .contiguous()?)
}

/// Windowed multi-head self-attention with relative position bias.
#[derive(Debug, Clone)]
struct WindowAttention {
    /// The query, key and value projections as one, rows `[query; key; value]`.
    qkv: Dense,
    output: Dense,
    /// `(heads, ws², ws²)`: the bias of an unclamped window's first frame.
    bias: Tensor,
    /// `((2·frames-1)·(2·ws-1)², heads)`, for the bias of a clamped window.
    table: Tensor,
    /// `[frames, ws, ws]`.
    window: [usize; 3],
    heads: usize,
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
        let window = [c.window_frames, ws, ws];
        // One projection with rows [query; key; value]: the official `qkv`, or the three of
        // the Hugging Face layout stacked.
        let (weight, bias) = match layout {
            Layout::HuggingFace => {
                let get = |name: &str, what: &str, shape: &[usize]| vb.pp(name).get(shape, what);
                let names = ["query", "key", "value"];
                let w = names.map(|n| get(n, "weight", &[dim, dim]));
                let w = Tensor::cat(&w.into_iter().collect::<candle_core::Result<Vec<_>>>()?, 0)?;
                let b = if c.qkv_bias {
                    let b = names.map(|n| get(n, "bias", &[dim]));
                    let b = b.into_iter().collect::<candle_core::Result<Vec<_>>>()?;
                    Some(Tensor::cat(&b, 0)?)
                } else {
                    None
                };
                (w, b)
            }
            Layout::Official | Layout::Video => {
                let w = vb.pp("qkv").get((3 * dim, dim), "weight")?;
                let b = if c.qkv_bias {
                    Some(vb.pp("qkv").get(3 * dim, "bias")?)
                } else {
                    None
                };
                (w, b)
            }
        };
        let qkv = Dense::new(weight, bias, Activation::Identity)?;
        let table = vb.get(
            ((2 * window[0] - 1) * (2 * ws - 1) * (2 * ws - 1), heads),
            "relative_position_bias_table",
        )?;
        let bias = gather_bias(&table, window, ws * ws)?;
        Ok(WindowAttention {
            qkv,
            output: Dense::load(proj, (dim, dim), Activation::Identity)?,
            bias,
            table,
            window,
            heads,
        })
    }

    /// `x`: `(B·nW, N, C)` windows; `mask`: `(nW, N, N)` for shifted windows.
    fn forward(&self, x: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        let n = x.dim(1)?;
        let bias = if n == self.bias.dim(1)? {
            self.bias.clone()
        } else {
            gather_bias(&self.table, self.window, n)?
        };
        let qkv = self.qkv.forward(x)?;
        let out = if is_host_f32(&qkv) {
            window_attention(&qkv, &bias, mask, self.heads)?
        } else {
            window_attention_tensor_ops(&qkv, &bias, mask, self.heads)?
        };
        self.output.forward(&out)
    }
}

/// One Swin block: (shifted) window attention and an MLP, both pre-norm with residuals.
#[derive(Debug, Clone)]
pub(super) struct SwinBlock {
    norm1: LayerNorm,
    attn: WindowAttention,
    norm2: LayerNorm,
    /// The MLP's first layer, GELU fused.
    fc1: Dense,
    fc2: Dense,
    window: usize,
    shift: usize,
    /// Whether a map side not larger than the window shrinks it to that side, unshifted
    /// (Video-Swin), rather than being padded to one window (image Swin).
    clamp: bool,
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
            norm1: LayerNorm::load(norm1, dim, eps)?,
            attn: WindowAttention::new(dim, heads, c, layout, attn, proj)?,
            norm2: LayerNorm::load(norm2, dim, eps)?,
            fc1: Dense::load(fc1, (dim, hidden), Activation::GeluErf)?,
            fc2: Dense::load(fc2, (hidden, dim), Activation::Identity)?,
            window: c.window_size,
            shift,
            clamp: layout.clamps_windows(),
        })
    }

    /// Window side and shift along an axis of side `n`.
    fn window_on(&self, n: usize) -> Pair {
        if self.clamp && n <= self.window {
            (n, 0)
        } else {
            (self.window, self.shift)
        }
    }

    /// `x`: `(B, H, W, C)`.
    pub(super) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, h, w, _) = x.dims4()?;
        let ((wh, sh), (ww, sw)) = (self.window_on(h), self.window_on(w));
        let mut y = self.norm1.forward(x)?;
        let (hp, wp) = (h.div_ceil(wh) * wh, w.div_ceil(ww) * ww);
        if hp > h {
            y = y.pad_with_zeros(1, 0, hp - h)?;
        }
        if wp > w {
            y = y.pad_with_zeros(2, 0, wp - w)?;
        }
        let shifted = sh > 0 || sw > 0;
        let mask = if shifted {
            y = y.roll(-(sh as i32), 1)?.roll(-(sw as i32), 2)?;
            Some(shifted_window_mask(
                (hp, wp),
                (wh, ww),
                (sh, sw),
                x.device(),
            )?)
        } else {
            None
        };
        let windows = self
            .attn
            .forward(&window_partition(&y, (wh, ww))?, mask.as_ref())?;
        let mut y = window_reverse(&windows, (wh, ww), b, hp, wp)?;
        if shifted {
            y = y.roll(sh as i32, 1)?.roll(sw as i32, 2)?;
        }
        if hp > h || wp > w {
            y = y.narrow(1, 0, h)?.narrow(2, 0, w)?;
        }
        let x = (x + y)?;
        let m = self.fc1.forward(&self.norm2.forward(&x)?)?;
        self.fc2.forward_add(&m, &x)
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
            norm: LayerNorm::load(vb.pp("norm"), 4 * dim, eps)?,
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

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::DType;
    use candle_nn::VarMap;

    /// The fused CPU window attention equals the tensor operations (the other devices' path)
    /// in both checkpoint layouts: plain windows, shifted windows with their region mask
    /// (windows of several images sharing the masks), and windows shorter than the bias, whose
    /// bias is gathered from the table.
    #[test]
    fn fused_window_attention_equals_the_tensor_path() {
        let dev = Device::Cpu;
        let c: SwinConfig =
            serde_json::from_str(r#"{"window_size": 3, "out_features": []}"#).unwrap();
        let (dim, heads) = (8, 2);
        for layout in [Layout::HuggingFace, Layout::Official] {
            let map = VarMap::new();
            let vb = VarBuilder::from_varmap(&map, DType::F32, &dev);
            let build = || {
                WindowAttention::new(dim, heads, &c, layout, vb.pp("attn"), vb.pp("proj")).unwrap()
            };
            // The first build creates the variables; drawn at random, they make the second.
            build();
            for var in map.all_vars() {
                let values = Tensor::randn(0f32, 1.0, var.shape(), &dev).unwrap();
                var.set(&values).unwrap();
            }
            let attn = build();
            // Two images of a 6 × 6 map: 8 windows of 9 tokens, 4 masks.
            let mask = shifted_window_mask((6, 6), (3, 3), (1, 1), &dev).unwrap();
            for (windows, n, m) in [(8, 9, None), (8, 9, Some(&mask)), (3, 4, None)] {
                let x = Tensor::randn(0f32, 1.0, (windows, n, dim), &dev).unwrap();
                let fused = attn.forward(&x, m).unwrap();
                let bias = gather_bias(&attn.table, attn.window, n).unwrap();
                let qkv = attn.qkv.forward(&x).unwrap();
                let tensor = window_attention_tensor_ops(&qkv, &bias, m, attn.heads).unwrap();
                let tensor = attn.output.forward(&tensor).unwrap();
                // The paths round differently (their score products run different gemm
                // kernels), and the random weights make outputs of up to about 60: the
                // bound is relative to the outputs' magnitude (at most 9.3e-7 of it in 100
                // draws).
                let d = crate::nn::max_abs_diff(&fused, &tensor);
                let big = tensor.abs().unwrap().max_all().unwrap();
                let big = big.to_scalar::<f32>().unwrap().max(1.0);
                assert!(
                    d < 4e-6 * big,
                    "{layout:?}, {windows} × {n}, masked {}: difference {d}, outputs up to {big}",
                    m.is_some()
                );
            }
        }
    }
}
