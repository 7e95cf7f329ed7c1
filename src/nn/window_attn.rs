//! Multi-head self-attention inside windows with an additive bias per head (TinyViT's and
//! Swin's window attention), computed on the CPU in one pass per window: the scores, bias,
//! softmax and weighted sum stay in a window-sized buffer, read `q`, `k` and `v` in place from
//! the packed projection and write each head's output into its columns, so that no `(q, k, v)`
//! split, transpose or score tensor is materialised.

use candle_core::{CpuStorage, CustomOp2, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::linalg::{gemm_acc, MatRef};
use super::vmath::softmax_in_place;
use crate::error::Result;

/// Attention of windows `qkv (nW, N, heads · 3 · key_dim)`, each token's projection laid out
/// head by head as `[q k v]` (TinyViT's order), with `bias (heads, N, N)` added to the scaled
/// scores; returns `(nW, N, heads · key_dim)`, heads side by side.
pub fn window_attention(qkv: &Tensor, bias: &Tensor, heads: usize) -> Result<Tensor> {
    let (nw, n, three_c) = qkv.dims3()?;
    let kd = three_c / (3 * heads.max(1));
    if qkv.device().is_cpu() && qkv.dtype() == candle_core::DType::F32 {
        let op = WindowAttention { heads, key_dim: kd };
        return Ok(qkv.contiguous()?.apply_op2_no_bwd(bias, &op)?);
    }
    let qkv = qkv.reshape((nw, n, heads, 3 * kd))?.permute((0, 2, 1, 3))?;
    let q = qkv.narrow(3, 0, kd)?.contiguous()?;
    let k = qkv.narrow(3, kd, kd)?.contiguous()?;
    let v = qkv.narrow(3, 2 * kd, kd)?.contiguous()?;
    let attn = (q.matmul(&k.t()?)? * (1.0 / (kd as f64).sqrt()))?.broadcast_add(bias)?;
    let attn = candle_nn::ops::softmax_last_dim(&attn)?;
    Ok(attn
        .matmul(&v)?
        .transpose(1, 2)?
        .contiguous()?
        .reshape((nw, n, heads * kd))?)
}

struct WindowAttention {
    heads: usize,
    key_dim: usize,
}

impl CustomOp2 for WindowAttention {
    fn name(&self) -> &'static str {
        "deva-window-attention"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (nw, n, three_c) = l1.shape().dims3()?;
        let (h, kd) = (self.heads, self.key_dim);
        if three_c != 3 * h * kd || l2.shape().dims() != [h, n, n] {
            candle_core::bail!(
                "window attention: qkv {:?} and bias {:?} do not fit {h} heads of {kd}",
                l1.shape(),
                l2.shape()
            );
        }
        let qkv = super::contiguous_f32(s1, l1)?;
        let bias = super::contiguous_f32(s2, l2)?;
        let c = h * kd;
        let scale = (1.0 / (kd as f64).sqrt()) as f32;
        let mut out = vec![0f32; nw * n * c];
        out.par_chunks_mut(n * c)
            .zip(qkv.par_chunks(n * three_c))
            .for_each_init(
                || vec![0f32; n * n],
                |scores, (o, x)| {
                    for head in 0..h {
                        let at = head * 3 * kd;
                        scores.fill(0.0);
                        gemm_acc(
                            n,
                            n,
                            kd,
                            scores,
                            n,
                            MatRef {
                                data: &x[at..],
                                rs: three_c,
                                cs: 1,
                            },
                            MatRef {
                                data: &x[at + kd..],
                                rs: 1,
                                cs: three_c,
                            },
                            false,
                        );
                        let b = &bias[head * n * n..(head + 1) * n * n];
                        for (row, brow) in scores.chunks_mut(n).zip(b.chunks(n)) {
                            row.iter_mut()
                                .zip(brow)
                                .for_each(|(s, b)| *s = *s * scale + b);
                            softmax_in_place(row);
                        }
                        gemm_acc(
                            n,
                            kd,
                            n,
                            &mut o[head * kd..],
                            c,
                            MatRef::rows(scores, n),
                            MatRef {
                                data: &x[at + 2 * kd..],
                                rs: three_c,
                                cs: 1,
                            },
                            false,
                        );
                    }
                },
            );
        Ok((CpuStorage::F32(out), Shape::from((nw, n, c))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// The fused CPU kernel against the same attention written with candle's tensor ops.
    #[test]
    fn fused_kernel_equals_tensor_ops() {
        let dev = Device::Cpu;
        let (nw, n, heads, kd) = (3, 10, 2, 4);
        let qkv = Tensor::randn(0f32, 1.0, (nw, n, 3 * heads * kd), &dev).unwrap();
        let bias = Tensor::randn(0f32, 1.0, (heads, n, n), &dev).unwrap();
        let ours = window_attention(&qkv, &bias, heads).unwrap();
        let x = qkv.reshape((nw, n, heads, 3 * kd)).unwrap();
        let x = x.permute((0, 2, 1, 3)).unwrap();
        let part = |i: usize| x.narrow(3, i * kd, kd).unwrap().contiguous().unwrap();
        let (q, k, v) = (part(0), part(1), part(2));
        let scores = (q.matmul(&k.t().unwrap()).unwrap() / (kd as f64).sqrt()).unwrap();
        let p = candle_nn::ops::softmax_last_dim(&scores.broadcast_add(&bias).unwrap()).unwrap();
        let theirs = p.matmul(&v).unwrap().transpose(1, 2).unwrap();
        let theirs = theirs
            .contiguous()
            .unwrap()
            .reshape((nw, n, heads * kd))
            .unwrap();
        let d = super::super::max_abs_diff(&ours, &theirs);
        assert!(d < 1e-5, "max diff {d}");
    }
}
