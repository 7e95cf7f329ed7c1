//! The ViT image encoder of SAM (ViT-B/L/H): patch embedding, absolute position embedding,
//! transformer blocks with windowed or global attention and decomposed relative position
//! embeddings, and the convolutional neck.

use super::attention::rel_pos_attention;
use super::neck::Neck;
use super::rel_pos::{decomposed_rel_pos, rel_pos_softmax, rel_pos_table, resized_table};
use crate::error::{Error, Result};
use crate::nn::act::Activation;
use crate::nn::dense::Dense;
use crate::nn::transpose::to_channels_first;
use crate::nn::window_attn::{window_partition, window_unpartition};
use crate::nn::{is_host_f32, Weights};
use candle_core::{DType, Module, Tensor};
use candle_nn::{LayerNorm, VarBuilder};

/// Size of a ViT image encoder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VitConfig {
    /// Side of the square input image (1024).
    pub img_size: usize,
    /// Side of a patch (16).
    pub patch_size: usize,
    /// Token dimension.
    pub embed_dim: usize,
    /// Number of transformer blocks.
    pub depth: usize,
    /// Attention heads per block.
    pub num_heads: usize,
    /// Side of the attention windows of non-global blocks.
    pub window_size: usize,
    /// Blocks that attend globally.
    pub global_attn_indexes: Vec<usize>,
    /// Channels of the output embedding (256).
    pub out_chans: usize,
    /// Whether the qkv projection has a bias.
    pub qkv_bias: bool,
    /// Whether an absolute position embedding is added after the patch embedding.
    pub use_abs_pos: bool,
}

impl VitConfig {
    fn official(embed_dim: usize, depth: usize, num_heads: usize, global: [usize; 4]) -> Self {
        VitConfig {
            img_size: 1024,
            patch_size: 16,
            embed_dim,
            depth,
            num_heads,
            window_size: 14,
            global_attn_indexes: global.to_vec(),
            out_chans: 256,
            qkv_bias: true,
            use_abs_pos: true,
        }
    }

    /// SAM ViT-B (`sam_vit_b_01ec64.pth`).
    pub fn vit_b() -> Self {
        Self::official(768, 12, 12, [2, 5, 8, 11])
    }

    /// SAM ViT-L (`sam_vit_l_0b3195.pth`).
    pub fn vit_l() -> Self {
        Self::official(1024, 24, 16, [5, 11, 17, 23])
    }

    /// SAM ViT-H (`sam_vit_h_4b8939.pth`).
    pub fn vit_h() -> Self {
        Self::official(1280, 32, 16, [7, 15, 23, 31])
    }

    /// Reads the size from the shapes of the tensors under `prefix` (e.g. `image_encoder`):
    /// depth from the block keys, heads from the relative position tables, global blocks from
    /// tables that span the whole token grid, window size from the others.
    pub fn from_checkpoint(ck: &Weights, prefix: &str) -> Result<Self> {
        let pw = ck.dims(&format!("{prefix}.patch_embed.proj.weight"))?;
        if pw.len() != 4 || pw[1] != 3 || pw[2] != pw[3] {
            return Err(ck.error(format!(
                "{prefix}.patch_embed.proj.weight has shape {pw:?}, expected (dim, 3, p, p)"
            )));
        }
        let (embed_dim, patch_size) = (pw[0], pw[2]);
        let pos_key = format!("{prefix}.pos_embed");
        let use_abs_pos = ck.contains(&pos_key);
        let grid = if use_abs_pos {
            let p = ck.dims(&pos_key)?;
            if p.len() != 4 || p[1] != p[2] || p[3] != embed_dim {
                return Err(ck.error(format!(
                    "{pos_key} has shape {p:?}, expected (1, g, g, {embed_dim})"
                )));
            }
            p[1]
        } else {
            1024 / patch_size
        };
        let depth = ck.count(&format!("{prefix}.blocks"), "norm1.weight");
        if depth == 0 {
            return Err(ck.error(format!("missing key {prefix}.blocks.0.norm1.weight")));
        }
        let mut window_size = 0;
        let mut global_attn_indexes = Vec::new();
        let mut head_dim = 0;
        for i in 0..depth {
            let r = ck.dims(&format!("{prefix}.blocks.{i}.attn.rel_pos_h"))?;
            if r.len() != 2 || r[0] % 2 == 0 {
                return Err(ck.error(format!(
                    "{prefix}.blocks.{i}.attn.rel_pos_h has shape {r:?}, expected (2s - 1, head_dim)"
                )));
            }
            head_dim = r[1];
            let side = r[0].div_ceil(2);
            if side == grid {
                global_attn_indexes.push(i);
            } else if window_size == 0 || window_size == side {
                window_size = side;
            } else {
                return Err(ck.error(format!(
                    "{prefix}.blocks.{i}.attn.rel_pos_h implies window {side}, other blocks use {window_size}"
                )));
            }
        }
        if head_dim == 0 || embed_dim % head_dim != 0 {
            return Err(ck.error(format!(
                "relative position tables of width {head_dim} do not divide the embedding dimension {embed_dim}"
            )));
        }
        let neck = ck.dims(&format!("{prefix}.neck.0.weight"))?;
        Ok(VitConfig {
            img_size: grid * patch_size,
            patch_size,
            embed_dim,
            depth,
            num_heads: embed_dim / head_dim,
            window_size,
            global_attn_indexes,
            out_chans: neck[0],
            qkv_bias: ck.contains(&format!("{prefix}.blocks.0.attn.qkv.bias")),
            use_abs_pos,
        })
    }
}

/// Multi-head self-attention with decomposed relative position embeddings.
#[derive(Debug)]
struct Attention {
    qkv: Dense,
    proj: Dense,
    num_heads: usize,
    rel_pos_h: Tensor,
    rel_pos_w: Tensor,
    /// `(3·C)`: the projection of a zero token, which the windows past the grid's edge hold.
    pad: Vec<f32>,
}

/// Largest attention matrix (in elements) computed at once: 16 MiB, below the size past which
/// the allocator maps fresh pages for every buffer, so that the blocks reuse their memory.
/// Larger batches are split by items, and one item's attention by rows of queries.
const ATTENTION_CHUNK: usize = 1 << 22;

impl Attention {
    fn new(
        dim: usize,
        num_heads: usize,
        qkv_bias: bool,
        size: usize,
        vb: VarBuilder,
    ) -> Result<Self> {
        let qkv = if qkv_bias {
            Dense::load(vb.pp("qkv"), (dim, 3 * dim), Activation::Identity)?
        } else {
            Dense::load_without_bias(vb.pp("qkv"), (dim, 3 * dim), Activation::Identity)?
        };
        let head_dim = dim / num_heads;
        let rel_pos_h = vb.get((2 * size - 1, head_dim), "rel_pos_h")?;
        let rel_pos_w = vb.get((2 * size - 1, head_dim), "rel_pos_w")?;
        let zero = Tensor::zeros((1, dim), DType::F32, vb.device())?;
        let pad = qkv.forward(&zero)?.flatten_all()?.to_vec1()?;
        Ok(Attention {
            qkv,
            pad,
            proj: Dense::load(vb.pp("proj"), (dim, dim), Activation::Identity)?,
            num_heads,
            rel_pos_h,
            rel_pos_w,
        })
    }

    /// Attention over the token grid `x (B, H, W, C)`: inside the windows of side `window`
    /// (zero tokens past the grid's edge), or over the whole grid when it is 0.
    fn forward_grid(&self, x: &Tensor, window: usize) -> Result<Tensor> {
        let (b, h, w, c) = x.dims4()?;
        if is_host_f32(x) {
            let (sh, sw) = if window == 0 {
                (h, w)
            } else {
                (window, window)
            };
            let tables = (
                resized_table(&self.rel_pos_h, 2 * sh - 1)?,
                resized_table(&self.rel_pos_w, 2 * sw - 1)?,
            );
            let qkv = self.qkv.forward(x)?;
            let out = rel_pos_attention(
                &qkv,
                &self.pad,
                (&tables.0, &tables.1),
                self.num_heads,
                window,
            )?;
            return Ok(self
                .proj
                .forward(&out.reshape((b, h * w, c))?)?
                .reshape((b, h, w, c))?);
        }
        self.forward_grid_tensor_ops(x, window)
    }

    /// [`Self::forward_grid`] written with candle's tensor operations (any device).
    fn forward_grid_tensor_ops(&self, x: &Tensor, window: usize) -> Result<Tensor> {
        let (_, h, w, _) = x.dims4()?;
        if window == 0 {
            return self.forward_in_chunks(x, ATTENTION_CHUNK);
        }
        let (windows, padded) = window_partition(x, window)?;
        let attended = self.forward_in_chunks(&windows, ATTENTION_CHUNK)?;
        window_unpartition(&attended, window, padded, (h, w))
    }

    /// [`Self::forward_grid_tensor_ops`] over whole items (windows or grids), with attention
    /// matrices of at most `chunk` elements where one row of an item's query grid fits.
    fn forward_in_chunks(&self, xs: &Tensor, chunk: usize) -> Result<Tensor> {
        let (b, h, w, c) = xs.dims4()?;
        let heads = self.num_heads;
        let hd = c / heads;
        let qkv = self
            .qkv
            .forward(&xs.reshape((b, h * w, c))?)?
            .reshape((b, h * w, 3, heads, hd))?
            .permute((2, 0, 3, 1, 4))?
            .contiguous()?
            .reshape((3, b * heads, h * w, hd))?;
        let (q, k, v) = (qkv.get(0)?, qkv.get(1)?, qkv.get(2)?);
        let r_h = rel_pos_table(h, h, &self.rel_pos_h)?;
        let r_w = rel_pos_table(w, w, &self.rel_pos_w)?;
        let scale = 1.0 / (hd as f64).sqrt();
        let n = b * heads;
        let per_row = w * (h * w);
        // Blocks of whole items, or of whole rows of one item's query grid.
        let rows = (chunk / per_row).clamp(1, h);
        let items = if rows == h {
            (chunk / (h * per_row)).clamp(1, n)
        } else {
            1
        };
        let mut outs = Vec::with_capacity(n.div_ceil(items));
        for start in (0..n).step_by(items) {
            let len = items.min(n - start);
            let (q, k, v) = (
                q.narrow(0, start, len)?,
                k.narrow(0, start, len)?,
                v.narrow(0, start, len)?,
            );
            let kt = k.t()?;
            let mut blocks = Vec::with_capacity(h.div_ceil(rows));
            for y0 in (0..h).step_by(rows) {
                let ry = rows.min(h - y0);
                let q = q.narrow(1, y0 * w, ry * w)?;
                let attn = (&q * scale)?.matmul(&kt)?;
                let (rel_h, rel_w) =
                    decomposed_rel_pos(&q, (ry, w), &r_h.narrow(0, y0, ry)?, &r_w)?;
                let attn = rel_pos_softmax(&attn, &rel_h, &rel_w)?;
                blocks.push(attn.matmul(&v)?);
            }
            outs.push(Tensor::cat(&blocks, 1)?);
        }
        let out = Tensor::cat(&outs, 0)?
            .reshape((b, heads, h, w, hd))?
            .permute((0, 2, 3, 1, 4))?
            .contiguous()?
            .reshape((b, h * w, c))?;
        Ok(self.proj.forward(&out)?.reshape((b, h, w, c))?)
    }
}

/// One transformer block; `window == 0` attends globally.
#[derive(Debug)]
struct Block {
    norm1: LayerNorm,
    attn: Attention,
    norm2: LayerNorm,
    /// `mlp.lin1` with its GELU.
    lin1: Dense,
    /// `mlp.lin2`.
    lin2: Dense,
    window: usize,
}

impl Block {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let shortcut = xs;
        let x = self
            .attn
            .forward_grid(&self.norm1.forward(xs)?, self.window)?;
        let x = (shortcut + x)?;
        let mlp = mlp_in_blocks(&self.lin1, &self.lin2, &self.norm2.forward(&x)?)?;
        Ok((&x + mlp)?)
    }
}

/// `lin2(lin1(x))` over the tokens of `x` (`(B, H, W, C)`), [`MLP_ROWS`] tokens at a time:
/// each token is computed on its own, so the blocks give the same values, and the 4·C-wide
/// hidden activations stay small enough for the allocator to reuse.
fn mlp_in_blocks(lin1: &Dense, lin2: &Dense, x: &Tensor) -> Result<Tensor> {
    let c = x.dim(candle_core::D::Minus1)?;
    let tokens = x.elem_count() / c.max(1);
    let flat = x.reshape((tokens, c))?;
    let blocks = (0..tokens)
        .step_by(MLP_ROWS)
        .map(|r0| {
            let rows = flat.narrow(0, r0, MLP_ROWS.min(tokens - r0))?;
            lin2.forward(&lin1.forward(&rows)?)
        })
        .collect::<Result<Vec<_>>>()?;
    let out = Tensor::cat(&blocks, 0)?;
    let mut dims = x.dims().to_vec();
    let last = dims.len() - 1;
    dims[last] = out.dim(1)?;
    Ok(out.reshape(dims)?)
}

/// Tokens per block of the MLP: a ViT-H hidden block is 1024 × 5120 floats (20 MiB), under
/// the size past which the allocator maps fresh pages for every buffer.
const MLP_ROWS: usize = 1024;

/// The ViT image encoder.
#[derive(Debug)]
pub struct ImageEncoderVit {
    patch_embed: candle_nn::Conv2d,
    pos_embed: Option<Tensor>,
    blocks: Vec<Block>,
    neck: Neck,
}

impl ImageEncoderVit {
    /// Builds the encoder from the variables under `vb` (official key names).
    pub fn new(config: &VitConfig, vb: VarBuilder) -> Result<Self> {
        let c = config;
        if c.patch_size == 0 || !c.img_size.is_multiple_of(c.patch_size) || c.num_heads == 0 {
            return Err(Error::invalid(format!("invalid ViT configuration {c:?}")));
        }
        let grid = c.img_size / c.patch_size;
        let patch_cfg = candle_nn::Conv2dConfig {
            stride: c.patch_size,
            ..Default::default()
        };
        let patch_embed = candle_nn::conv2d(
            3,
            c.embed_dim,
            c.patch_size,
            patch_cfg,
            vb.pp("patch_embed.proj"),
        )?;
        let pos_embed = if c.use_abs_pos {
            Some(vb.get((1, grid, grid, c.embed_dim), "pos_embed")?)
        } else {
            None
        };
        let blocks = (0..c.depth)
            .map(|i| {
                let vb = vb.pp(format!("blocks.{i}"));
                let window = if c.global_attn_indexes.contains(&i) {
                    0
                } else {
                    c.window_size
                };
                let size = if window == 0 { grid } else { window };
                Ok(Block {
                    norm1: candle_nn::layer_norm(c.embed_dim, 1e-6, vb.pp("norm1"))?,
                    attn: Attention::new(
                        c.embed_dim,
                        c.num_heads,
                        c.qkv_bias,
                        size,
                        vb.pp("attn"),
                    )?,
                    norm2: candle_nn::layer_norm(c.embed_dim, 1e-6, vb.pp("norm2"))?,
                    lin1: Dense::load(
                        vb.pp("mlp.lin1"),
                        (c.embed_dim, 4 * c.embed_dim),
                        Activation::GeluErf,
                    )?,
                    lin2: Dense::load(
                        vb.pp("mlp.lin2"),
                        (4 * c.embed_dim, c.embed_dim),
                        Activation::Identity,
                    )?,
                    window,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(ImageEncoderVit {
            patch_embed,
            pos_embed,
            blocks,
            neck: Neck::load(vb.pp("neck"), c.embed_dim, c.out_chans)?,
        })
    }

    /// Encodes a preprocessed `(B, 3, S, S)` image into `(B, out_chans, S/p, S/p)`. When
    /// `trace` is given, it receives the tokens after the position embedding and after each
    /// block (`(B, S/p, S/p, dim)`).
    pub fn forward(&self, image: &Tensor, mut trace: Option<&mut Vec<Tensor>>) -> Result<Tensor> {
        let mut x = self.patch_embed.forward(image)?.permute((0, 2, 3, 1))?;
        if let Some(pos) = &self.pos_embed {
            x = x.broadcast_add(pos)?;
        }
        let mut x = x.contiguous()?;
        if let Some(t) = trace.as_deref_mut() {
            t.push(x.clone());
        }
        for block in &self.blocks {
            x = block.forward(&x)?;
            if let Some(t) = trace.as_deref_mut() {
                t.push(x.clone());
            }
        }
        self.neck.forward(&to_channels_first(&x)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use candle_nn::VarMap;

    /// The MLP over blocks of tokens equals the two layers over all tokens at once, exactly
    /// (every token is computed on its own), with a partial last block.
    #[test]
    fn mlp_in_blocks_equals_the_whole_product() {
        let map = VarMap::new();
        let vb = VarBuilder::from_varmap(&map, DType::F32, &Device::Cpu);
        let lin1 = Dense::load(vb.pp("lin1"), (16, 64), Activation::GeluErf).unwrap();
        let lin2 = Dense::load(vb.pp("lin2"), (64, 16), Activation::Identity).unwrap();
        let side = 47; // 2209 tokens: two full blocks and a partial one.
        assert!(side * side > 2 * MLP_ROWS);
        let x = Tensor::randn(0f32, 1.0, (1, side, side, 16), &Device::Cpu).unwrap();
        let blocked = mlp_in_blocks(&lin1, &lin2, &x).unwrap();
        let whole = lin2.forward(&lin1.forward(&x).unwrap()).unwrap();
        assert_eq!(blocked.dims(), whole.dims());
        assert_eq!(crate::nn::max_abs_diff(&blocked, &whole), 0.0);
    }

    /// Attention in blocks of items and in blocks of query rows (whole and partial) gives the
    /// values of the whole batch at once, within 1e-6 of their magnitude (the products of a
    /// row block may round apart in the last bit).
    #[test]
    fn attention_in_row_blocks_equals_the_whole_batch() {
        let dev = Device::Cpu;
        let map = VarMap::new();
        let vb = VarBuilder::from_varmap(&map, DType::F32, &dev);
        let (h, w, dim, heads) = (6, 5, 8, 2);
        let hd = dim / heads;
        let attn = Attention {
            qkv: Dense::load(vb.pp("qkv"), (dim, 3 * dim), Activation::Identity).unwrap(),
            proj: Dense::load(vb.pp("proj"), (dim, dim), Activation::Identity).unwrap(),
            num_heads: heads,
            rel_pos_h: Tensor::randn(0f32, 1.0, (2 * h - 1, hd), &dev).unwrap(),
            rel_pos_w: Tensor::randn(0f32, 1.0, (2 * w - 1, hd), &dev).unwrap(),
            pad: Vec::new(),
        };
        let x = Tensor::randn(0f32, 1.0, (2, h, w, dim), &dev).unwrap();
        let whole = attn.forward_in_chunks(&x, usize::MAX).unwrap();
        let scale = whole.abs().unwrap().max_all().unwrap();
        let tol = 1e-6 * scale.to_scalar::<f32>().unwrap().max(1.0);
        let per_row = w * h * w;
        // One item at a time, then blocks of 4 query rows (4 + 2), then one row at a time.
        for chunk in [h * per_row, 4 * per_row, per_row] {
            let blocked = attn.forward_in_chunks(&x, chunk).unwrap();
            let d = crate::nn::max_abs_diff(&blocked, &whole);
            assert!(
                d <= tol,
                "chunk {chunk}: max difference {d} (tolerance {tol})"
            );
        }
    }

    /// The fused CPU attention (from the unpadded grid's projections) equals the tensor
    /// operations (zero-padded windows, partition, chunks, reverse partition) within 1e-6 of
    /// the output's magnitude: global, in windows that fit and windows that overhang, with
    /// random weights, biases and tables, some of which need resizing.
    #[test]
    fn fused_attention_equals_the_tensor_path() {
        let dev = Device::Cpu;
        let map = VarMap::new();
        let vb = VarBuilder::from_varmap(&map, DType::F32, &dev);
        let (dim, heads) = (8, 2);
        for (h, w, window, table_side) in [(6, 6, 3, 3), (7, 5, 3, 4), (5, 4, 0, 5), (4, 6, 0, 5)] {
            let vb = vb.pp(format!("{h}x{w}w{window}"));
            // The first build creates the variables (the tables as zeros); drawn at random,
            // they make the second.
            Attention::new(dim, heads, true, table_side, vb.clone()).unwrap();
            for var in map.all_vars() {
                let values = Tensor::randn(0f32, 1.0, var.shape(), &dev).unwrap();
                var.set(&values).unwrap();
            }
            let attn = Attention::new(dim, heads, true, table_side, vb).unwrap();
            let x = Tensor::randn(0f32, 1.0, (2, h, w, dim), &dev).unwrap();
            let fused = attn.forward_grid(&x, window).unwrap();
            let tensor = attn.forward_grid_tensor_ops(&x, window).unwrap();
            let d = crate::nn::max_abs_diff(&fused, &tensor);
            let size = tensor.abs().unwrap().max_all().unwrap();
            let tol = 1e-6 * size.to_scalar::<f32>().unwrap().max(1.0);
            assert!(
                d <= tol,
                "{h}×{w}, window {window}: max difference {d} (tolerance {tol})"
            );
        }
    }
}
