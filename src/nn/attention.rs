//! Multi-head scaled dot-product attention written with candle's tensor operations (any
//! device): the text encoders' attention and the reference of the fused CPU kernels.

use candle_core::Tensor;

use crate::error::Result;

/// Multi-head scaled dot-product attention with an optional additive bias broadcastable to
/// `(B, heads, Lq, Lk)`; `q`, `k`, `v` are `(B, L, heads·hd)`.
pub fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    heads: usize,
    bias: Option<&Tensor>,
) -> Result<Tensor> {
    let (b, lq, c) = q.dims3()?;
    let lk = k.dim(1)?;
    let hd = c / heads;
    let split = |t: &Tensor, l: usize| -> Result<Tensor> {
        Ok(t.reshape((b, l, heads, hd))?
            .transpose(1, 2)?
            .contiguous()?)
    };
    let q = (split(q, lq)? * (hd as f64).powf(-0.5))?;
    let (k, v) = (split(k, lk)?, split(v, lk)?);
    let mut scores = q.matmul(&k.t()?)?;
    if let Some(bias) = bias {
        scores = scores.broadcast_add(bias)?;
    }
    let probs = candle_nn::ops::softmax_last_dim(&scores)?;
    Ok(probs
        .matmul(&v)?
        .transpose(1, 2)?
        .contiguous()?
        .reshape((b, lq, c))?)
}
