//! SAM's two-way transformer (prompt tokens ↔ image tokens), computed with the attention
//! projections folded into the few prompt tokens where that is cheaper.
//!
//! Attention between T prompt tokens and N ≫ T image tokens normally projects all N image
//! tokens (queries, keys or values, then the output projection). Because the projections
//! are linear, they can instead be moved onto the T tokens of each head: scores against image
//! tokens become dot products with `W_kᵀ q` (the key bias only shifts a softmax row and
//! drops out), outputs become `W_v (Σ a x) + b_v`; in the other direction, scores become
//! `x · W_qᵀ k + b_q · k` and outputs `Σ a (W_o,h v) + b_o`. The results are the official
//! ones up to float rounding, at about half the work per prompt. When the image side is the
//! same for every prompt (no mask inputs), the first block's image projections are shared.

use crate::error::Result;
use candle_core::{Module, Tensor};
use candle_nn::{LayerNorm, Linear, VarBuilder};

/// Multi-head attention with separate q/k/v/out projections (`internal = dim / rate`).
#[derive(Debug)]
struct Attention {
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
    heads: usize,
    /// `(heads, head_dim, dim)` views of the q, k and v weights.
    wq: Tensor,
    wk: Tensor,
    wv: Tensor,
    /// `(heads, head_dim, dim)`: the output weight's columns of each head, transposed.
    wo: Tensor,
    /// `(heads, head_dim)` q and v biases.
    bq: Tensor,
    bv: Tensor,
}

/// Splits `(.., heads·d)` into heads: `(B, N, H·d)` → `(H, B·N, d)`.
fn heads_first(x: &Tensor, heads: usize) -> Result<Tensor> {
    let (b, n, c) = x.dims3()?;
    Ok(x.reshape((b * n, heads, c / heads))?
        .transpose(0, 1)?
        .contiguous()?)
}

/// `(H, B·N, e)` → `(B, N, H·e)`.
fn heads_last(x: &Tensor, b: usize) -> Result<Tensor> {
    let (h, bn, e) = x.dims3()?;
    Ok(x.transpose(0, 1)?
        .contiguous()?
        .reshape((b, bn / b, h * e))?)
}

/// `(H, B·T, e)` → `(B, H·T, e)` (rows ordered head, token).
fn per_item(x: &Tensor, b: usize) -> Result<Tensor> {
    let (h, bt, e) = x.dims3()?;
    let t = bt / b;
    Ok(x.reshape((h, b, t, e))?
        .transpose(0, 1)?
        .contiguous()?
        .reshape((b, h * t, e))?)
}

impl Attention {
    fn new(dim: usize, heads: usize, rate: usize, vb: VarBuilder) -> Result<Self> {
        let internal = dim / rate;
        let d = internal / heads;
        let lin = |name: &str, i: usize, o: usize| candle_nn::linear(i, o, vb.pp(name));
        let q = lin("q_proj", dim, internal)?;
        let k = lin("k_proj", dim, internal)?;
        let v = lin("v_proj", dim, internal)?;
        let out = lin("out_proj", internal, dim)?;
        let split = |l: &Linear| l.weight().reshape((heads, d, dim));
        let bias = |l: &Linear| -> Result<Tensor> {
            Ok(l.bias().expect("linear with bias").reshape((heads, d))?)
        };
        Ok(Attention {
            wq: split(&q)?,
            wk: split(&k)?,
            wv: split(&v)?,
            wo: out.weight().t()?.reshape((heads, d, dim))?.contiguous()?,
            bq: bias(&q)?,
            bv: bias(&v)?,
            q,
            k,
            v,
            out,
            heads,
        })
    }

    fn scale(&self) -> f64 {
        1.0 / ((self.wq.dim(1).unwrap_or(1)) as f64).sqrt()
    }

    /// Plain attention among few tokens: `(B, Nq, C)`, `(B, Nk, C)`, `(B, Nk, C)`.
    fn full(&self, q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Tensor> {
        let b = q.dim(0)?;
        let q = heads_first(&self.q.forward(q)?, self.heads)?;
        let k = heads_first(&self.k.forward(k)?, self.heads)?;
        let v = heads_first(&self.v.forward(v)?, self.heads)?;
        let (h, bn, d) = q.dims3()?;
        let nk = k.dim(1)? / b;
        let q = q.reshape((h * b, bn / b, d))?;
        let k = k.reshape((h * b, nk, d))?;
        let v = v.reshape((h * b, nk, d))?;
        let a = (q.matmul(&k.t()?)? * self.scale())?;
        let a = candle_nn::ops::softmax_last_dim(&a)?;
        let o = a.matmul(&v)?.reshape((h, bn, d))?;
        Ok(self.out.forward(&heads_last(&o, b)?)?)
    }

    /// Image-side projections shared by every prompt: keys `(H, d, N)` and values `(H, N, d)`
    /// of image tokens `k_in`, `v_in` `(1, N, C)`.
    fn shared_image_kv(&self, k_in: &Tensor, v_in: &Tensor) -> Result<(Tensor, Tensor)> {
        let k = heads_first(&self.k.forward(k_in)?, self.heads)?;
        let v = heads_first(&self.v.forward(v_in)?, self.heads)?;
        Ok((k.transpose(1, 2)?.contiguous()?, v))
    }

    /// Prompt tokens `(B, T, C)` attending to image tokens. `image` is either the shared
    /// projections of [`shared_image_kv`](Self::shared_image_kv) or per-prompt inputs
    /// `(B, N, C)` for keys and values.
    fn tokens_to_image(&self, q_tok: &Tensor, image: &ImageKv) -> Result<Tensor> {
        let b = q_tok.dim(0)?;
        let q = heads_first(&self.q.forward(q_tok)?, self.heads)?; // (H, B·T, d)
        let o = match image {
            ImageKv::Shared(k, v) => {
                let a = (q.matmul(k)? * self.scale())?;
                candle_nn::ops::softmax_last_dim(&a)?.matmul(v)? // (H, B·T, d)
            }
            ImageKv::PerPrompt(k_in, v_in) => {
                // Scores x_j · (W_k,hᵀ q_t): the key bias adds a per-row constant.
                let qk = per_item(&q.matmul(&self.wk)?, b)?; // (B, H·T, C)
                let a = (qk.matmul(&k_in.t()?)? * self.scale())?;
                let a = candle_nn::ops::softmax_last_dim(&a)?; // (B, H·T, N)
                let s = a.matmul(v_in)?; // (B, H·T, C): weighted image tokens
                let (h, c) = (self.heads, s.dim(2)?);
                let t = s.dim(1)? / h;
                let s = s
                    .reshape((b, h, t, c))?
                    .transpose(0, 1)?
                    .contiguous()?
                    .reshape((h, b * t, c))?;
                s.matmul(&self.wv.transpose(1, 2)?)?
                    .broadcast_add(&self.bv.unsqueeze(1)?)?
            }
        };
        Ok(self.out.forward(&heads_last(&o, b)?)?)
    }

    /// Image tokens `q_img` `(B or 1, N, C)` attending to prompt tokens `(B, T, C)`.
    fn image_to_tokens(&self, q_img: &Tensor, k_tok: &Tensor, v_tok: &Tensor) -> Result<Tensor> {
        let b = k_tok.dim(0)?;
        let (h, n, c) = (self.heads, q_img.dim(1)?, q_img.dim(2)?);
        let k = heads_first(&self.k.forward(k_tok)?, h)?; // (H, B·T, d)
        let v = heads_first(&self.v.forward(v_tok)?, h)?;
        let t = k.dim(1)? / b;
        // Scores x_i · (W_q,hᵀ k_t) + b_q,h · k_t.
        let kq = per_item(&k.matmul(&self.wq)?, b)?; // (B, H·T, C)
        let beta = per_item(&k.matmul(&self.bq.unsqueeze(2)?)?, b)?.squeeze(2)?; // (B, H·T)
        let logits = if q_img.dim(0)? == 1 && b > 1 {
            let all = q_img
                .squeeze(0)?
                .matmul(&kq.reshape((b * h * t, c))?.t()?)?; // (N, B·H·T)
            all.reshape((n, b, h * t))?.transpose(0, 1)?.contiguous()?
        } else {
            q_img.matmul(&kq.t()?)?
        };
        let logits = (logits.broadcast_add(&beta.unsqueeze(1)?)? * self.scale())?;
        let a = candle_nn::ops::softmax_last_dim(&logits.reshape((b, n * h, t))?)?.reshape((
            b,
            n,
            h * t,
        ))?;
        // Outputs Σ a (W_o,h v_t) + b_o.
        let u = per_item(&v.matmul(&self.wo)?, b)?; // (B, H·T, C)
        let out = a.matmul(&u)?;
        let bias = self.out.bias().expect("linear with bias");
        Ok(out.broadcast_add(bias)?)
    }
}

/// The image-side keys and values of a token-to-image attention.
enum ImageKv {
    /// Projections shared by all prompts, `(H, d, N)` and `(H, N, d)`.
    Shared(Tensor, Tensor),
    /// Unprojected keys and values per prompt, `(B, N, C)`.
    PerPrompt(Tensor, Tensor),
}

/// One two-way block.
#[derive(Debug)]
struct Block {
    self_attn: Attention,
    norm1: LayerNorm,
    t2i: Attention,
    norm2: LayerNorm,
    lin1: Linear,
    lin2: Linear,
    norm3: LayerNorm,
    norm4: LayerNorm,
    i2t: Attention,
    skip_first_pe: bool,
}

/// Image-side inputs of the first block computed once for all prompts.
#[derive(Debug)]
pub struct SharedImage {
    keys: Tensor,
    pe: Tensor,
    k: Tensor,
    v: Tensor,
}

/// The image tokens a forward pass runs on.
pub enum ImageTokens<'a> {
    /// The same for every prompt, with the first block's projections precomputed.
    Shared(&'a SharedImage),
    /// Per prompt: tokens `(B, N, C)` and position encoding `(1, N, C)`.
    PerPrompt {
        /// Image tokens.
        keys: &'a Tensor,
        /// Position encoding.
        pe: &'a Tensor,
    },
}

/// The two-way transformer.
#[derive(Debug)]
pub struct TwoWayTransformer {
    layers: Vec<Block>,
    final_attn: Attention,
    norm_final: LayerNorm,
}

impl TwoWayTransformer {
    /// Builds the transformer from the variables under `vb` (official key names).
    pub fn new(depth: usize, dim: usize, heads: usize, mlp: usize, vb: VarBuilder) -> Result<Self> {
        let ln = |vb: VarBuilder| candle_nn::layer_norm(dim, 1e-5, vb);
        let layers = (0..depth)
            .map(|i| {
                let vb = vb.pp(format!("layers.{i}"));
                Ok(Block {
                    self_attn: Attention::new(dim, heads, 1, vb.pp("self_attn"))?,
                    norm1: ln(vb.pp("norm1"))?,
                    t2i: Attention::new(dim, heads, 2, vb.pp("cross_attn_token_to_image"))?,
                    norm2: ln(vb.pp("norm2"))?,
                    lin1: candle_nn::linear(dim, mlp, vb.pp("mlp.lin1"))?,
                    lin2: candle_nn::linear(mlp, dim, vb.pp("mlp.lin2"))?,
                    norm3: ln(vb.pp("norm3"))?,
                    norm4: ln(vb.pp("norm4"))?,
                    i2t: Attention::new(dim, heads, 2, vb.pp("cross_attn_image_to_token"))?,
                    skip_first_pe: i == 0,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(TwoWayTransformer {
            layers,
            final_attn: Attention::new(dim, heads, 2, vb.pp("final_attn_token_to_image"))?,
            norm_final: ln(vb.pp("norm_final_attn"))?,
        })
    }

    /// Precomputes the first block's image side for image tokens `keys` and position
    /// encoding `pe`, both `(1, N, C)`, shared by all prompts.
    pub fn share_image(&self, keys: &Tensor, pe: &Tensor) -> Result<SharedImage> {
        let first = &self.layers[0];
        let (k, v) = first.t2i.shared_image_kv(&(keys + pe)?, keys)?;
        Ok(SharedImage {
            keys: keys.clone(),
            pe: pe.clone(),
            k,
            v,
        })
    }

    /// Runs the transformer for prompt tokens `(B, T, C)` on `image` tokens. Returns the
    /// updated tokens `(B, T, C)` and image tokens `(B, N, C)`.
    pub fn forward(&self, tokens: &Tensor, image: ImageTokens) -> Result<(Tensor, Tensor)> {
        let (mut keys, pe, shared) = match image {
            ImageTokens::Shared(s) => (s.keys.clone(), s.pe.clone(), Some(s)),
            ImageTokens::PerPrompt { keys, pe } => (keys.clone(), pe.clone(), None),
        };
        let mut queries = tokens.clone();
        for (i, l) in self.layers.iter().enumerate() {
            queries = if l.skip_first_pe {
                l.self_attn.full(&queries, &queries, &queries)?
            } else {
                let q = (&queries + tokens)?;
                (&queries + l.self_attn.full(&q, &q, &queries)?)?
            };
            queries = l.norm1.forward(&queries)?;
            let keys_pe = keys.broadcast_add(&pe)?;
            let kv = match shared {
                Some(s) if i == 0 => ImageKv::Shared(s.k.clone(), s.v.clone()),
                _ => ImageKv::PerPrompt(keys_pe.clone(), keys.clone()),
            };
            let q = (&queries + tokens)?;
            queries = l
                .norm2
                .forward(&(&queries + l.t2i.tokens_to_image(&q, &kv)?)?)?;
            let mlp = l.lin2.forward(&l.lin1.forward(&queries)?.relu()?)?;
            queries = l.norm3.forward(&(&queries + mlp)?)?;
            let q = (&queries + tokens)?;
            let attn = l.i2t.image_to_tokens(&keys_pe, &q, &queries)?;
            keys = l.norm4.forward(&attn.broadcast_add(&keys)?)?;
        }
        let q = (&queries + tokens)?;
        let kv = ImageKv::PerPrompt(keys.broadcast_add(&pe)?, keys.clone());
        let attn = self.final_attn.tokens_to_image(&q, &kv)?;
        let queries = self.norm_final.forward(&(&queries + attn)?)?;
        Ok((queries, keys))
    }
}
