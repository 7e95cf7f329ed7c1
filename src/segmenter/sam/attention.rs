//! Softmax of attention logits plus a decomposed relative position bias, fused into one pass
//! on the CPU (the bias is never materialised at full size).

use crate::error::Result;
use crate::nn::contiguous_f32;
use crate::nn::vmath::{multiversion, softmax_in_place};
use candle_core::{CpuStorage, CustomOp3, Layout, Shape, Tensor};
use rayon::prelude::*;

/// `softmax(attn + rel_h[.., :, None] + rel_w[.., None, :])` over the last dimension, where
/// `attn` is `(n, qh·qw, kh·kw)`, `rel_h` is `(n, qh, qw, kh)` and `rel_w` is `(n, qh, qw, kw)`.
pub fn rel_pos_softmax(attn: &Tensor, rel_h: &Tensor, rel_w: &Tensor) -> Result<Tensor> {
    let (n, q, k) = attn.dims3()?;
    let (_, qh, qw, kh) = rel_h.dims4()?;
    let kw = rel_w.dim(3)?;
    if attn.device().is_cpu() {
        let op = RelPosSoftmax { kh, kw };
        return Ok(attn.contiguous()?.apply_op3_no_bwd(
            &rel_h.contiguous()?,
            &rel_w.contiguous()?,
            &op,
        )?);
    }
    let biased = (attn
        .reshape((n, qh, qw, kh, kw))?
        .broadcast_add(&rel_h.unsqueeze(4)?)?
        .broadcast_add(&rel_w.unsqueeze(3)?))?
    .reshape((n, q, k))?;
    Ok(candle_nn::ops::softmax_last_dim(&biased)?)
}

multiversion! {
    /// One row: `dst[i·kw + j] = src[i·kw + j] + bh[i] + bw[j]`, then its softmax in place.
    fn biased_softmax(src: &[f32], bh: &[f32], bw: &[f32], dst: &mut [f32]) {
        let kw = bw.len();
        for ((d, s), &h) in dst.chunks_mut(kw).zip(src.chunks(kw)).zip(bh) {
            for ((d, &a), &w) in d.iter_mut().zip(s).zip(bw) {
                *d = a + h + w;
            }
        }
        softmax_in_place(dst);
    }
}

struct RelPosSoftmax {
    kh: usize,
    kw: usize,
}

impl CustomOp3 for RelPosSoftmax {
    fn name(&self) -> &'static str {
        "rel-pos-softmax"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (kh, kw) = (self.kh, self.kw);
        let attn = contiguous_f32(s1, l1)?;
        let rel_h = contiguous_f32(s2, l2)?;
        let rel_w = contiguous_f32(s3, l3)?;
        let row = kh * kw;
        let rows = attn.len() / row;
        if rel_h.len() != rows * kh || rel_w.len() != rows * kw {
            candle_core::bail!("rel_pos_softmax: bias shapes do not match the attention")
        }
        let mut out = vec![0f32; attn.len()];
        out.par_chunks_mut(row).enumerate().for_each(|(r, dst)| {
            let src = &attn[r * row..(r + 1) * row];
            let bh = &rel_h[r * kh..(r + 1) * kh];
            let bw = &rel_w[r * kw..(r + 1) * kw];
            biased_softmax(src, bh, bw, dst);
        });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn fused_op_equals_broadcast_add_then_softmax() {
        let dev = Device::Cpu;
        let (n, qh, qw, kh, kw) = (3, 2, 3, 4, 5);
        let attn = Tensor::randn(0f32, 1.0, (n, qh * qw, kh * kw), &dev).unwrap();
        let rel_h = Tensor::randn(0f32, 1.0, (n, qh, qw, kh), &dev).unwrap();
        let rel_w = Tensor::randn(0f32, 1.0, (n, qh, qw, kw), &dev).unwrap();
        let fused = rel_pos_softmax(&attn, &rel_h, &rel_w).unwrap();
        // Independent path: explicit broadcast of the two bias terms, then candle's softmax.
        let biased = attn
            .reshape((n, qh, qw, kh, kw))
            .unwrap()
            .broadcast_add(&rel_h.unsqueeze(4).unwrap())
            .unwrap()
            .broadcast_add(&rel_w.unsqueeze(3).unwrap())
            .unwrap()
            .reshape((n, qh * qw, kh * kw))
            .unwrap();
        let expected = candle_nn::ops::softmax_last_dim(&biased).unwrap();
        let diff = crate::nn::max_abs_diff(&fused, &expected);
        assert!(diff < 1e-6, "max difference {diff}");
    }
}
