//! Depthwise convolution as one CPU pass: per-channel `k × k` taps, bias and activation, in
//! channels-first or channels-last layout.

use std::mem::MaybeUninit;

use crate::nn::act::Activation;
use crate::nn::contiguous_f32;
use crate::nn::vmath::multiversion;
use candle_core::{CpuStorage, CustomOp3, Layout, Shape};
use rayon::prelude::*;

/// Depthwise convolution with `(C, 1, k, k)` kernels, zero padding `k / 2`, then a bias per
/// channel and an activation, on `(B, C, H, W)` inputs or, `channels_last`, `(B, H, W, C)`.
pub(crate) struct Depthwise {
    /// Stride on both axes.
    pub stride: usize,
    /// Activation after the bias.
    pub act: Activation,
    /// Whether inputs and outputs are `(B, H, W, C)`.
    pub channels_last: bool,
}

impl Depthwise {
    /// Output side for an input side `len`.
    fn out_len(&self, len: usize, k: usize) -> usize {
        (len + 2 * (k / 2) - k) / self.stride + 1
    }

    /// The output columns `ox` whose tap `kx` reads inside a row of `w` pixels.
    fn valid_columns(&self, kx: usize, k: usize, w: usize, ow: usize) -> std::ops::Range<usize> {
        let (pad, s) = (k / 2, self.stride);
        let lo = pad.saturating_sub(kx).div_ceil(s);
        let hi = if w + pad > kx {
            ((w + pad - kx - 1) / s + 1).min(ow)
        } else {
            0
        };
        lo..hi.max(lo)
    }

    /// One channel plane `src (h, w)` into `dst (oh, ow)`, every element written
    /// ([`plane_stride1`](Self::plane_stride1) for odd kernels up to 7 at stride 1,
    /// [`plane_by_taps`](Self::plane_by_taps) for the others); `scratch` is reused.
    #[inline(always)]
    fn plane(
        &self,
        src: &[f32],
        hw: (usize, usize),
        kern: &[f32],
        bias: f32,
        dst: &mut [f32],
        scratch: &mut Vec<f32>,
    ) {
        match (self.stride, kern.len()) {
            (1, 9) => self.plane_stride1::<3>(src, hw, kern, bias, dst, scratch),
            (1, 25) => self.plane_stride1::<5>(src, hw, kern, bias, dst, scratch),
            (1, 49) => self.plane_stride1::<7>(src, hw, kern, bias, dst, scratch),
            _ => self.plane_by_taps(src, hw, kern, bias, dst, scratch),
        }
    }

    /// [`plane`](Self::plane) tap by tap: each output row starts as the bias and each tap adds
    /// a contiguous run of one input row's phase (the row itself at stride 1; at stride s, its
    /// columns `j, j + s, …` copied once into `phases`), so every loop is vectorised.
    #[inline(always)]
    fn plane_by_taps(
        &self,
        src: &[f32],
        (h, w): (usize, usize),
        kern: &[f32],
        bias: f32,
        dst: &mut [f32],
        phases: &mut Vec<f32>,
    ) {
        let k = (kern.len() as f64).sqrt() as usize;
        let (pad, s) = (k / 2, self.stride);
        let ow = self.out_len(w, k);
        let phase_len = w.div_ceil(s);
        for (oy, drow) in dst.chunks_mut(ow).enumerate() {
            drow.fill(bias);
            for ky in 0..k {
                let Some(iy) = (oy * s + ky).checked_sub(pad).filter(|&iy| iy < h) else {
                    continue;
                };
                let row = &src[iy * w..(iy + 1) * w];
                let split: &[f32] = if s == 1 {
                    row
                } else {
                    phases.clear();
                    for j in 0..s {
                        phases.extend(row.iter().skip(j).step_by(s));
                        phases.resize((j + 1) * phase_len, 0.0);
                    }
                    phases
                };
                for kx in 0..k {
                    let cols = self.valid_columns(kx, k, w, ow);
                    if cols.is_empty() {
                        continue;
                    }
                    // Column `ox · s + kx − pad` is element `ox + q` of phase `r`.
                    let offset = kx as isize - pad as isize;
                    let (q, r) = (offset.div_euclid(s as isize), offset.rem_euclid(s as isize));
                    let start = (r as usize) * phase_len + (cols.start as isize + q) as usize;
                    let kv = kern[ky * k + kx];
                    let d = &mut drow[cols];
                    let x = &split[start..start + d.len()];
                    for (d, x) in d.iter_mut().zip(x) {
                        *d += kv * x;
                    }
                }
            }
            self.act.apply_slice(drow);
        }
    }

    /// [`plane`](Self::plane) at stride 1 for odd `K × K` kernels: each output row in one pass
    /// over `K` zero-padded copies of its input rows (in `rows`), its taps summed in a register
    /// in [`plane_by_taps`](Self::plane_by_taps)' order (ky, then kx; it reads and writes the
    /// row once per tap). A tap past the image's edge adds a zero product where that one skips
    /// it, the same value.
    #[inline(always)]
    fn plane_stride1<const K: usize>(
        &self,
        src: &[f32],
        (h, w): (usize, usize),
        kern: &[f32],
        bias: f32,
        dst: &mut [f32],
        rows: &mut Vec<f32>,
    ) {
        let pad = K / 2;
        let wp = w + 2 * pad;
        let mut taps = [[0f32; K]; K];
        for (ky, t) in taps.iter_mut().enumerate() {
            t.copy_from_slice(&kern[ky * K..(ky + 1) * K]);
        }
        rows.clear();
        rows.resize(K * wp, 0.0);
        for (oy, drow) in dst.chunks_mut(w).enumerate() {
            // The padding columns stay zero: only the middle of each row is written.
            for (ky, row) in rows.chunks_mut(wp).enumerate() {
                let mid = &mut row[pad..pad + w];
                match (oy + ky).checked_sub(pad).filter(|&iy| iy < h) {
                    Some(iy) => mid.copy_from_slice(&src[iy * w..(iy + 1) * w]),
                    None => mid.fill(0.0),
                }
            }
            let r: [&[f32]; K] = std::array::from_fn(|ky| &rows[ky * wp..(ky + 1) * wp]);
            for (ox, d) in drow.iter_mut().enumerate() {
                let mut v = bias;
                for ky in 0..K {
                    let x = &r[ky][ox..ox + K];
                    for kx in 0..K {
                        v += taps[ky][kx] * x[kx];
                    }
                }
                *d = v;
            }
            self.act.apply_slice(drow);
        }
    }

    /// One output row `dst (ow, C)` of a channels-last image `src (h, w, C)`; `taps` is
    /// `(k·k, C)`.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn row_channels_last(
        &self,
        src: &[f32],
        (h, w, c): (usize, usize, usize),
        taps: &[f32],
        k: usize,
        bias: &[f32],
        oy: usize,
        dst: &mut [f32],
    ) {
        let (pad, s) = (k / 2, self.stride);
        let ow = dst.len() / c;
        for px in dst.chunks_mut(c) {
            px.copy_from_slice(bias);
        }
        for ky in 0..k {
            let Some(iy) = (oy * s + ky).checked_sub(pad).filter(|&iy| iy < h) else {
                continue;
            };
            for kx in 0..k {
                let tap = &taps[(ky * k + kx) * c..(ky * k + kx + 1) * c];
                for ox in self.valid_columns(kx, k, w, ow) {
                    let ix = ox * s + kx - pad;
                    let px = &src[(iy * w + ix) * c..(iy * w + ix + 1) * c];
                    let acc = &mut dst[ox * c..(ox + 1) * c];
                    for ((a, t), x) in acc.iter_mut().zip(tap).zip(px) {
                        *a += t * x;
                    }
                }
            }
        }
        self.act.apply_slice(dst);
    }
}

impl CustomOp3 for Depthwise {
    fn name(&self) -> &'static str {
        "depthwise-conv2d"
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
        let (kc, one, k, k2) = l2.shape().dims4()?;
        let x = contiguous_f32(s1, l1)?;
        let (kern, bias) = (contiguous_f32(s2, l2)?, contiguous_f32(s3, l3)?);
        let dims = l1.shape().dims4()?;
        let c = if self.channels_last { dims.3 } else { dims.1 };
        if (one, k2, kc, bias.len()) != (1, k, c, c) || k == 0 {
            candle_core::bail!(
                "depthwise convolution: kernels {:?} and {} biases for input {:?}",
                l2.shape(),
                bias.len(),
                l1.shape()
            );
        }
        if self.channels_last {
            let (b, h, w, c) = l1.shape().dims4()?;
            let (oh, ow) = (self.out_len(h, k), self.out_len(w, k));
            // (C, k·k) → (k·k, C), so that a tap's weights are contiguous like a pixel.
            let taps: Vec<f32> = (0..k * k)
                .flat_map(|t| (0..c).map(move |ch| kern[ch * k * k + t]))
                .collect();
            let len = b * oh * ow * c;
            let mut out = Vec::with_capacity(len);
            out.spare_capacity_mut()[..len]
                .par_chunks_mut((ow * c).max(1))
                .enumerate()
                .for_each(|(row, dst)| {
                    let (bi, oy) = (row / oh, row % oh);
                    let src = &x[bi * h * w * c..(bi + 1) * h * w * c];
                    // SAFETY: the row writes every element of `dst` (each pixel starts as the
                    // bias), and nothing reads it before.
                    let dst = unsafe { &mut *(dst as *mut [MaybeUninit<f32>] as *mut [f32]) };
                    channels_last_row(self, src, (h, w, c), (&taps, k), (bias, oy), dst);
                });
            // SAFETY: every row of the output was written above.
            unsafe { out.set_len(len) };
            return Ok((CpuStorage::F32(out), Shape::from((b, oh, ow, c))));
        }
        let (b, c, h, w) = l1.shape().dims4()?;
        let (oh, ow) = (self.out_len(h, k), self.out_len(w, k));
        let len = b * c * oh * ow;
        let mut out = Vec::with_capacity(len);
        out.spare_capacity_mut()[..len]
            .par_chunks_mut((oh * ow).max(1))
            .enumerate()
            .for_each_init(Vec::new, |phases, (bc, dst)| {
                let ch = bc % c;
                let src = &x[bc * h * w..(bc + 1) * h * w];
                let kern = &kern[ch * k * k..(ch + 1) * k * k];
                // SAFETY: `plane` writes every element of `dst` (each row is filled first),
                // and nothing reads it before.
                let dst = unsafe { &mut *(dst as *mut [MaybeUninit<f32>] as *mut [f32]) };
                plane(self, src, (h, w), kern, bias[ch], dst, phases);
            });
        // SAFETY: every plane of the output was written above.
        unsafe { out.set_len(len) };
        Ok((CpuStorage::F32(out), Shape::from((b, c, oh, ow))))
    }
}

multiversion! {
    /// `Depthwise::plane`, vectorised.
    fn plane(
        op: &Depthwise,
        src: &[f32],
        hw: (usize, usize),
        kern: &[f32],
        bias: f32,
        dst: &mut [f32],
        phases: &mut Vec<f32>,
    ) {
        op.plane(src, hw, kern, bias, dst, phases)
    }
}

multiversion! {
    /// `Depthwise::row_channels_last`, vectorised.
    fn channels_last_row(
        op: &Depthwise,
        src: &[f32],
        hwc: (usize, usize, usize),
        taps_k: (&[f32], usize),
        bias_oy: (&[f32], usize),
        dst: &mut [f32],
    ) {
        let ((taps, k), (bias, oy)) = (taps_k, bias_oy);
        op.row_channels_last(src, hwc, taps, k, bias, oy, dst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    /// The one-pass stride-1 planes give the tap-by-tap planes' values (equal as floats: a
    /// zero product added where the other skips a tap can only turn −0 into +0).
    #[test]
    fn stride_one_planes_equal_the_tap_by_tap_sums() {
        let op = Depthwise {
            stride: 1,
            act: Activation::Identity,
            channels_last: false,
        };
        for (k, h, w) in [(3, 9, 8), (3, 1, 1), (5, 7, 11), (7, 4, 13)] {
            let random = |n| {
                let t = Tensor::randn(0f32, 1.0, n, &Device::Cpu).unwrap();
                t.to_vec1::<f32>().unwrap()
            };
            let (x, kern) = (random(h * w), random(k * k));
            let (mut fast, mut taps) = (vec![f32::NAN; h * w], vec![f32::NAN; h * w]);
            op.plane(&x, (h, w), &kern, 0.25, &mut fast, &mut Vec::new());
            op.plane_by_taps(&x, (h, w), &kern, 0.25, &mut taps, &mut Vec::new());
            assert_eq!(fast, taps, "k {k}, {h} × {w}");
        }
    }

    #[test]
    fn depthwise_op_equals_grouped_convolution() {
        let dev = Device::Cpu;
        // Even and odd sides, and a 5 × 5 kernel (two columns of padding, two phases).
        for ((b, c, h, w), k) in [((2, 3, 9, 8), 3), ((1, 2, 7, 11), 3), ((1, 2, 10, 13), 5)] {
            let x = Tensor::randn(0f32, 1.0, (b, c, h, w), &dev).unwrap();
            let kern = Tensor::randn(0f32, 1.0, (c, 1, k, k), &dev).unwrap();
            let bias = Tensor::randn(0f32, 1.0, c, &dev).unwrap();
            for stride in [1, 2] {
                let candle = x
                    .conv2d(&kern, k / 2, stride, 1, c)
                    .unwrap()
                    .broadcast_add(&bias.reshape((1, c, 1, 1)).unwrap())
                    .unwrap()
                    .gelu_erf()
                    .unwrap();
                for channels_last in [false, true] {
                    let op = Depthwise {
                        stride,
                        act: Activation::GeluErf,
                        channels_last,
                    };
                    let input = if channels_last {
                        x.permute((0, 2, 3, 1)).unwrap().contiguous().unwrap()
                    } else {
                        x.clone()
                    };
                    let ours = input.apply_op3_no_bwd(&kern, &bias, &op).unwrap();
                    let ours = if channels_last {
                        ours.permute((0, 3, 1, 2)).unwrap()
                    } else {
                        ours
                    };
                    assert_eq!(ours.dims(), candle.dims());
                    let d = crate::nn::max_abs_diff(&ours, &candle);
                    assert!(
                        d < 1e-5,
                        "{:?}, k {k}, stride {stride}, channels last {channels_last}: {d}",
                        x.dims()
                    );
                }
            }
        }
    }
}
