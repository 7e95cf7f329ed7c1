//! Deformable convolution (Dai et al. 2017) and its modulated form DCNv2 (Zhu et al. 2019), as
//! detectron2's `DeformConv` / `ModulatedDeformConv` and `torchvision.ops.deform_conv2d`
//! compute it: every kernel tap `k` of output pixel `(i, j)` reads the input at
//! `(i·stride − pad + ky·dilation + Δy, j·stride − pad + kx·dilation + Δx)`, bilinearly, with
//! zeros for neighbours outside the map (nothing at all once the point is a full pixel
//! outside), scaled by the tap's modulation mask. The offsets are `[n, 2·G·k², ho, wo]` with
//! `(Δy, Δx)` pairs per tap, deformable group by deformable group; the mask is
//! `[n, G·k², ho, wo]`. Channel group `g` of the input (`c / G` channels) follows the offsets of
//! deformable group `g`.
//!
//! The sampled and modulated taps form a column matrix `[c·k², ho·wo]` (channel-major, as the
//! weight `[c_out, c, k, k]` flattens), and one matrix product with the weight gives the output.
//! On the CPU the columns are built by a custom op in one pass; on other devices by tensor
//! operations (index gathers of the four neighbours), which give the same numbers.

use candle_core::{CpuStorage, CustomOp3, DType, Layout, Shape, Tensor, D};
use rayon::prelude::*;

use super::conv::ConvWeights;
use crate::error::{Error, Result};

/// A (modulated) deformable convolution with square kernel, zero padding, stride and dilation.
#[derive(Debug, Clone)]
pub struct DeformConv2d {
    /// `[c_out, c_in · k²]`.
    weight: Tensor,
    /// `[c_out, 1]`.
    bias: Tensor,
    geometry: Geometry,
}

/// Sizes of a deformable convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Geometry {
    c_in: usize,
    k: usize,
    stride: usize,
    pad: usize,
    dilation: usize,
    groups: usize,
}

impl Geometry {
    fn out_len(&self, len: usize) -> Result<usize> {
        let reach = self.dilation * (self.k - 1) + 1;
        (len + 2 * self.pad)
            .checked_sub(reach)
            .map(|n| n / self.stride + 1)
            .ok_or_else(|| Error::invalid(format!("deformable convolution: input {len} too small")))
    }
}

impl DeformConv2d {
    /// The convolution with parameters `w` (BatchNorm already folded where there is one),
    /// taps `dilation` apart and `deform_groups` deformable groups.
    pub fn new(w: ConvWeights, dilation: usize, deform_groups: usize) -> Result<Self> {
        let s = w.shape;
        if dilation == 0
            || s.stride == 0
            || deform_groups == 0
            || !s.c_in.is_multiple_of(deform_groups)
        {
            return Err(Error::invalid(format!(
                "deformable convolution: dilation {dilation}, stride {} and {deform_groups} \
                 deformable groups (of {} channels) are not valid",
                s.stride, s.c_in
            )));
        }
        Ok(DeformConv2d {
            weight: w
                .weight
                .to_dtype(DType::F32)?
                .reshape((s.c_out, s.c_in * s.k * s.k))?,
            bias: w.bias.to_dtype(DType::F32)?.reshape((s.c_out, 1))?,
            geometry: Geometry {
                c_in: s.c_in,
                k: s.k,
                stride: s.stride,
                pad: s.pad,
                dilation,
                groups: deform_groups,
            },
        })
    }

    /// Number of offset channels (`2 · G · k²`); DCNv2 adds `G · k²` mask channels.
    pub fn offset_channels(&self) -> usize {
        2 * self.geometry.groups * self.geometry.k * self.geometry.k
    }

    /// Applies the convolution to `x [n, c_in, h, w]` with `offset [n, 2·G·k², ho, wo]` and an
    /// optional modulation `mask [n, G·k², ho, wo]` (already through its sigmoid).
    pub fn forward(&self, x: &Tensor, offset: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        let cols = if x.device().is_cpu() {
            self.columns_cpu(x, offset, mask)?
        } else {
            self.columns(x, offset, mask)?
        };
        self.project(&cols, x, offset)
    }

    /// [`forward`](Self::forward) through the tensor-operation path on any device (the path
    /// other devices take; the tests compare it on the CPU).
    pub fn forward_tensor_ops(
        &self,
        x: &Tensor,
        offset: &Tensor,
        mask: Option<&Tensor>,
    ) -> Result<Tensor> {
        let cols = self.columns(x, offset, mask)?;
        self.project(&cols, x, offset)
    }

    /// `weight · columns + bias`, reshaped to `[n, c_out, ho, wo]`.
    fn project(&self, cols: &Tensor, x: &Tensor, offset: &Tensor) -> Result<Tensor> {
        let (n, _, ho, wo) = self.check(x, offset)?;
        let c_out = self.weight.dim(0)?;
        let y = self
            .weight
            .broadcast_matmul(cols)?
            .broadcast_add(&self.bias)?;
        Ok(y.reshape((n, c_out, ho, wo))?)
    }

    /// Checks the operands' shapes; gives `(n, c_in, ho, wo)`.
    fn check(&self, x: &Tensor, offset: &Tensor) -> Result<(usize, usize, usize, usize)> {
        let g = self.geometry;
        let (n, c, h, w) = x.dims4()?;
        let (ho, wo) = (g.out_len(h)?, g.out_len(w)?);
        let want = (n, self.offset_channels(), ho, wo);
        if c != g.c_in || offset.dims4()? != want {
            return Err(Error::invalid(format!(
                "deformable convolution: input {:?} and offset {:?} do not fit {} channels and \
                 offsets {want:?}",
                x.dims(),
                offset.dims(),
                g.c_in
            )));
        }
        Ok((n, c, ho, wo))
    }

    /// The modulation mask, or ones.
    fn mask_or_ones(&self, offset: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        let (n, _, ho, wo) = offset.dims4()?;
        let want = (n, self.offset_channels() / 2, ho, wo);
        match mask {
            Some(m) if m.dims4()? == want => Ok(m.to_dtype(DType::F32)?),
            Some(m) => Err(Error::invalid(format!(
                "deformable convolution: mask {:?}, expected {want:?}",
                m.dims()
            ))),
            None => Ok(Tensor::ones(want, DType::F32, offset.device())?),
        }
    }

    /// The columns `[n, c_in·k², ho·wo]` by the CPU custom op.
    fn columns_cpu(&self, x: &Tensor, offset: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        self.check(x, offset)?;
        let mask = self.mask_or_ones(offset, mask)?;
        let op = DeformColumns(self.geometry);
        Ok(x.to_dtype(DType::F32)?.contiguous()?.apply_op3_no_bwd(
            &offset.to_dtype(DType::F32)?.contiguous()?,
            &mask.contiguous()?,
            &op,
        )?)
    }

    /// The columns `[n, c_in·k², ho·wo]` by tensor operations: per deformable group, the four
    /// neighbours of every sampling point gathered from `[n·h·w, c/G]` rows, weighted by their
    /// bilinear factor (zero outside the map) and the mask.
    fn columns(&self, x: &Tensor, offset: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        let g = self.geometry;
        let (n, c, ho, wo) = self.check(x, offset)?;
        let (_, _, h, w) = x.dims4()?;
        let dev = x.device();
        let kk = g.k * g.k;
        let cg = c / g.groups;
        let l = ho * wo;
        let mask = self.mask_or_ones(offset, mask)?;
        let offset = offset.to_dtype(DType::F32)?;
        // Tap positions without offsets, [k², ho·wo].
        let (mut base_y, mut base_x) = (Vec::with_capacity(kk * l), Vec::with_capacity(kk * l));
        for t in 0..kk {
            let (ky, kx) = (t / g.k, t % g.k);
            for i in 0..ho {
                for j in 0..wo {
                    base_y.push((i * g.stride + ky * g.dilation) as f32 - g.pad as f32);
                    base_x.push((j * g.stride + kx * g.dilation) as f32 - g.pad as f32);
                }
            }
        }
        let base_y = Tensor::from_vec(base_y, (1, kk, l), dev)?;
        let base_x = Tensor::from_vec(base_x, (1, kk, l), dev)?;
        // Rows [n·h·w, c] of the input, and the first row of every image.
        let rows = x
            .to_dtype(DType::F32)?
            .permute((0, 2, 3, 1))?
            .reshape((n * h * w, c))?;
        let image_start = Tensor::arange(0f32, n as f32, dev)?
            .affine((h * w) as f64, 0.0)?
            .reshape((n, 1, 1))?;
        let mut groups = Vec::with_capacity(g.groups);
        for gi in 0..g.groups {
            let off = offset
                .narrow(1, 2 * kk * gi, 2 * kk)?
                .reshape((n, kk, 2, l))?;
            let py = off.narrow(2, 0, 1)?.squeeze(2)?.broadcast_add(&base_y)?;
            let px = off.narrow(2, 1, 1)?.squeeze(2)?.broadcast_add(&base_x)?;
            let m = mask.narrow(1, kk * gi, kk)?.reshape((n, kk, l))?;
            let (y0, x0) = (py.floor()?, px.floor()?);
            let (ly, lx) = ((&py - &y0)?, (&px - &x0)?);
            let rows_g = rows.narrow(1, cg * gi, cg)?.contiguous()?;
            let mut acc: Option<Tensor> = None;
            for (dy, dx) in [(0.0, 0.0), (0.0, 1.0), (1.0, 0.0), (1.0, 1.0)] {
                let yy = (&y0 + dy)?;
                let xx = (&x0 + dx)?;
                let fy = if dy == 0.0 { (1.0 - &ly)? } else { ly.clone() };
                let fx = if dx == 0.0 { (1.0 - &lx)? } else { lx.clone() };
                let inside = yy
                    .ge(0.0)?
                    .mul(&yy.le((h - 1) as f64)?)?
                    .mul(&xx.ge(0.0)?)?
                    .mul(&xx.le((w - 1) as f64)?)?
                    .to_dtype(DType::F32)?;
                let factor = (fy * fx)?.mul(&inside)?.mul(&m)?;
                // Clamped indices (a point outside has factor 0).
                let idx = (yy.clamp(0.0, (h - 1) as f64)? * w as f64)?
                    .add(&xx.clamp(0.0, (w - 1) as f64)?)?
                    .broadcast_add(&image_start)?
                    .to_dtype(DType::U32)?
                    .flatten_all()?;
                let v = rows_g
                    .index_select(&idx, 0)?
                    .reshape((n, kk, l, cg))?
                    .broadcast_mul(&factor.unsqueeze(D::Minus1)?)?;
                acc = Some(match acc {
                    None => v,
                    Some(a) => (a + v)?,
                });
            }
            let acc = acc.expect("four neighbours");
            // [n, k², l, cg] → [n, cg, k², l].
            groups.push(acc.permute((0, 3, 1, 2))?.reshape((n, cg * kk, l))?);
        }
        Ok(Tensor::cat(&groups, 1)?)
    }
}

/// The column builder as a CPU op over `x [n, c, h, w]`, `offset [n, 2·G·k², ho, wo]` and
/// `mask [n, G·k², ho, wo]` (f32, contiguous); gives `[n, c·k², ho·wo]`.
struct DeformColumns(Geometry);

impl CustomOp3 for DeformColumns {
    fn name(&self) -> &'static str {
        "deva-deform-columns"
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
        let g = self.0;
        let x = super::contiguous_f32(s1, l1)?;
        let offset = super::contiguous_f32(s2, l2)?;
        let mask = super::contiguous_f32(s3, l3)?;
        let (n, c, h, w) = l1.shape().dims4()?;
        let (_, _, ho, wo) = l2.shape().dims4()?;
        let kk = g.k * g.k;
        let l = ho * wo;
        let cg = c / g.groups;
        let mut out = vec![0f32; n * c * kk * l];
        // One task per (image, channel): its k² rows of columns.
        out.par_chunks_mut(kk * l)
            .enumerate()
            .for_each(|(nc, rows)| {
                let (b, ch) = (nc / c, nc % c);
                let gi = ch / cg;
                let plane = &x[(b * c + ch) * h * w..][..h * w];
                for t in 0..kk {
                    let (ky, kx) = (t / g.k, t % g.k);
                    let oy = &offset[((b * g.groups + gi) * 2 * kk + 2 * t) * l..][..l];
                    let ox = &offset[((b * g.groups + gi) * 2 * kk + 2 * t + 1) * l..][..l];
                    let m = &mask[((b * g.groups + gi) * kk + t) * l..][..l];
                    let row = &mut rows[t * l..][..l];
                    for i in 0..ho {
                        for j in 0..wo {
                            let p = i * wo + j;
                            let y = (i * g.stride + ky * g.dilation) as f32 - g.pad as f32 + oy[p];
                            let xx = (j * g.stride + kx * g.dilation) as f32 - g.pad as f32 + ox[p];
                            row[p] = bilinear(plane, h, w, y, xx) * m[p];
                        }
                    }
                }
            });
        Ok((CpuStorage::F32(out), Shape::from((n, c * kk, l))))
    }
}

/// The bilinear value of `plane [h, w]` at `(y, x)`, neighbours outside the map counting zero.
fn bilinear(plane: &[f32], h: usize, w: usize, y: f32, x: f32) -> f32 {
    if y <= -1.0 || y >= h as f32 || x <= -1.0 || x >= w as f32 {
        return 0.0;
    }
    let (y0, x0) = (y.floor(), x.floor());
    let (ly, lx) = (y - y0, x - x0);
    let (y0, x0) = (y0 as isize, x0 as isize);
    let at = |yy: isize, xx: isize| {
        if yy >= 0 && xx >= 0 && (yy as usize) < h && (xx as usize) < w {
            plane[yy as usize * w + xx as usize]
        } else {
            0.0
        }
    };
    (1.0 - ly) * (1.0 - lx) * at(y0, x0)
        + (1.0 - ly) * lx * at(y0, x0 + 1)
        + ly * (1.0 - lx) * at(y0 + 1, x0)
        + ly * lx * at(y0 + 1, x0 + 1)
}

#[cfg(test)]
mod tests;
