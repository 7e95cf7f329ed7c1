//! Resampling by integer factors with PyTorch's semantics.

use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor};
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::nn::vmath::multiversion;

/// Bilinear upsampling by `factor` (`align_corners = False`), `[n, c, h, w]`.
pub fn upsample_bilinear(x: &Tensor, factor: usize) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    resize_bilinear(x, h * factor, w * factor)
}

/// `upsample_bilinear(x, factor) + skip` with `skip` `[1, c, factor·h, factor·w]` broadcast
/// over the `n` of `x`; on the CPU the sum is taken as each output row is written (the same
/// values, bit for bit, without the upsampled tensor).
pub fn upsample_bilinear_add(x: &Tensor, factor: usize, skip: &Tensor) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    let (oh, ow) = (h * factor, w * factor);
    let (one, skip_c, skip_h, skip_w) = skip.dims4()?;
    if (one, skip_c, skip_h, skip_w) != (1, c, oh, ow) {
        return Err(Error::invalid(format!(
            "upsampling [{n}, {c}, {h}, {w}] by {factor} plus [{one}, {skip_c}, {skip_h}, \
             {skip_w}]: the addend must be [1, {c}, {oh}, {ow}]"
        )));
    }
    if !(super::is_host_f32(x) && super::is_host_f32(skip)) || factor == 1 {
        return Ok(upsample_bilinear(x, factor)?.broadcast_add(skip)?);
    }
    let resize = ResizeBilinear::new(h, w, oh, ow);
    let out = super::with_host_slices(&[x, skip], |sl| {
        let (x, skip) = (sl[0], sl[1]);
        let mut out = vec![0f32; n * c * oh * ow];
        out.par_chunks_mut((oh * ow).max(1))
            .zip(x.par_chunks((h * w).max(1)))
            .enumerate()
            .for_each(|(i, (dst, src))| {
                let add = &skip[(i % c) * oh * ow..][..oh * ow];
                resize_plane(src, w, &resize, Some(add), dst)
            });
        Ok(out)
    })?;
    Ok(Tensor::from_vec(out, (n, c, oh, ow), x.device())?)
}

/// `F.interpolate(mode='area')` down by an integer `factor` that divides both sides: the
/// mean of each `factor × factor` block.
pub fn area_downsample(x: &Tensor, factor: usize) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    if h % factor != 0 || w % factor != 0 {
        return Err(Error::invalid(format!(
            "area downsampling of {h}x{w} by {factor}: sides must be multiples of the factor"
        )));
    }
    if super::is_host_f32(x) {
        return Ok(x.contiguous()?.apply_op1_no_bwd(&AreaDown(factor))?);
    }
    Ok(x.avg_pool2d(factor)?)
}

/// [`area_downsample`] on the CPU, one plane per task; each block summed row by row from
/// zero and scaled by `1 / factor²` in f32, as candle's `avg_pool2d` does (same bits).
struct AreaDown(usize);

impl CustomOp1 for AreaDown {
    fn name(&self) -> &'static str {
        "deva-area-downsample"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (n, c, h, w) = l.shape().dims4()?;
        let x = super::contiguous_f32(s, l)?;
        let k = self.0;
        let (oh, ow) = (h / k, w / k);
        let scale = (1f64 / (k * k) as f64) as f32;
        let mut out = vec![0f32; n * c * oh * ow];
        out.par_chunks_mut((oh * ow).max(1))
            .zip(x.par_chunks((h * w).max(1)))
            .for_each(|(dst, src)| {
                for (oy, drow) in dst.chunks_mut(ow.max(1)).enumerate() {
                    for (ox, d) in drow.iter_mut().enumerate() {
                        let mut sum = 0f32;
                        for row in src[oy * k * w..].chunks(w).take(k) {
                            for v in &row[ox * k..ox * k + k] {
                                sum += v;
                            }
                        }
                        *d = sum * scale;
                    }
                }
            });
        Ok((CpuStorage::F32(out), Shape::from((n, c, oh, ow))))
    }
}

/// 3×3 max-pooling with stride 2 and padding 1 (padding never chosen, as PyTorch's
/// `MaxPool2d(3, 2, 1)`), `[n, c, h, w]`; one plane per task on the CPU.
pub fn max_pool3_stride2(x: &Tensor) -> Result<Tensor> {
    if super::is_host_f32(x) {
        return Ok(x.contiguous()?.apply_op1_no_bwd(&MaxPool3Stride2)?);
    }
    let x = x.pad_with_same(2, 1, 1)?.pad_with_same(3, 1, 1)?;
    Ok(x.max_pool2d_with_stride(3, 2)?)
}

struct MaxPool3Stride2;

impl CustomOp1 for MaxPool3Stride2 {
    fn name(&self) -> &'static str {
        "deva-max-pool3-stride2"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (n, c, h, w) = l.shape().dims4()?;
        let x = super::contiguous_f32(s, l)?;
        // Output i covers inputs 2i − 1 … 2i + 1, clipped to the input.
        let (oh, ow) = (h.div_ceil(2), w.div_ceil(2));
        let window = |i: usize, len: usize| (2 * i).saturating_sub(1)..(2 * i + 2).min(len);
        let mut out = vec![0f32; n * c * oh * ow];
        out.par_chunks_mut((oh * ow).max(1))
            .zip(x.par_chunks((h * w).max(1)))
            .for_each(|(dst, src)| {
                // The maximum over the window's rows first (a vectorisable pass), then over
                // each window's columns.
                let mut rows = vec![f32::NEG_INFINITY; w];
                for (oy, drow) in dst.chunks_mut(ow.max(1)).enumerate() {
                    rows.fill(f32::NEG_INFINITY);
                    for y in window(oy, h) {
                        for (m, v) in rows.iter_mut().zip(&src[y * w..(y + 1) * w]) {
                            *m = m.max(*v);
                        }
                    }
                    for (ox, d) in drow.iter_mut().enumerate() {
                        *d = rows[window(ox, w)]
                            .iter()
                            .copied()
                            .fold(f32::NEG_INFINITY, f32::max);
                    }
                }
            });
        Ok((CpuStorage::F32(out), Shape::from((n, c, oh, ow))))
    }
}

/// 2×2 max-pooling with stride 2 and `ceil_mode = True` of `[n, c, h, w]`: an odd last row or
/// column forms a window of its own. One plane per task on the CPU.
pub fn max_pool2_ceil(x: &Tensor) -> Result<Tensor> {
    if super::is_host_f32(x) {
        return Ok(x.contiguous()?.apply_op1_no_bwd(&MaxPool2Ceil)?);
    }
    let (_, _, h, w) = x.dims4()?;
    // Replicating the last row or column leaves every window's maximum unchanged.
    let x = if h % 2 == 1 {
        x.pad_with_same(2, 0, 1)?
    } else {
        x.clone()
    };
    let x = if w % 2 == 1 {
        x.pad_with_same(3, 0, 1)?
    } else {
        x
    };
    Ok(x.max_pool2d(2)?)
}

struct MaxPool2Ceil;

impl CustomOp1 for MaxPool2Ceil {
    fn name(&self) -> &'static str {
        "deva-max-pool2-ceil"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (n, c, h, w) = l.shape().dims4()?;
        let x = super::contiguous_f32(s, l)?;
        let (oh, ow) = (h.div_ceil(2), w.div_ceil(2));
        let mut out = vec![0f32; n * c * oh * ow];
        out.par_chunks_mut((oh * ow).max(1))
            .zip(x.par_chunks((h * w).max(1)))
            .for_each(|(dst, src)| max_pool_plane(src, h, w, dst));
        Ok((CpuStorage::F32(out), Shape::from((n, c, oh, ow))))
    }
}

multiversion! {
/// One plane of [`MaxPool2Ceil`]: `src` (`h × w`) into `dst` (`⌈h/2⌉ × ⌈w/2⌉`). With the
/// widest vectors of the CPU.
fn max_pool_plane(src: &[f32], h: usize, w: usize, dst: &mut [f32]) {
    let ow = w.div_ceil(2);
    // The maximum of the two rows first, then of column pairs (both vectorisable passes),
    // then an odd last column alone.
    let mut both = vec![0f32; w];
    for (oy, drow) in dst.chunks_mut(ow).enumerate() {
        let r0 = &src[2 * oy * w..(2 * oy + 1) * w];
        let r1 = if 2 * oy + 1 < h {
            &src[(2 * oy + 1) * w..(2 * oy + 2) * w]
        } else {
            r0
        };
        for ((m, a), b) in both.iter_mut().zip(r0).zip(r1) {
            *m = a.max(*b);
        }
        for (i, d) in drow[..w / 2].iter_mut().enumerate() {
            *d = both[2 * i].max(both[2 * i + 1]);
        }
        if w % 2 == 1 {
            drow[w / 2] = both[w - 1];
        }
    }
}
}

/// Bilinear resize of `[n, c, h, w]` to `height × width` with half-pixel centres and no
/// antialiasing (PyTorch's `align_corners = False`, ONNX `linear` + `pytorch_half_pixel`),
/// interpolated in f64 like candle's `upsample_bilinear2d`; one plane per task on the CPU.
pub fn resize_bilinear(x: &Tensor, height: usize, width: usize) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    if (h, w) == (height, width) {
        return Ok(x.clone());
    }
    if super::is_host_f32(x) {
        return Ok(x
            .contiguous()?
            .apply_op1_no_bwd(&ResizeBilinear::new(h, w, height, width))?);
    }
    Ok(x.upsample_bilinear2d(height, width, false)?)
}

/// CondInst's `aligned_bilinear`: upsampling `[n, c, h, w]` by an integer `factor` so that
/// output pixel centres stay aligned with the input's (replicate-pad right and bottom, bilinear
/// with aligned corners to `factor·h + 1`, shift by `factor / 2`, crop to `factor·h`). On the
/// CPU one pass whose taps fold in the padding, shift and crop (the same values as the
/// sequence of candle operations, bit for bit).
pub fn aligned_bilinear(x: &Tensor, factor: usize) -> Result<Tensor> {
    if factor <= 1 {
        return Ok(x.clone());
    }
    let (_, _, h, w) = x.dims4()?;
    if super::is_host_f32(x) {
        return Ok(x.contiguous()?.apply_op1_no_bwd(&ResizeBilinear {
            ys: aligned_taps(h, factor),
            xs: aligned_taps(w, factor),
            doubles: false,
        })?);
    }
    let y = x.pad_with_same(3, 0, 1)?.pad_with_same(2, 0, 1)?;
    let (oh, ow) = (factor * h + 1, factor * w + 1);
    let y = y.upsample_bilinear2d(oh, ow, true)?;
    let s = factor / 2;
    let y = y.pad_with_same(3, s, 0)?.pad_with_same(2, s, 0)?;
    Ok(y.narrow(2, 0, oh - 1)?.narrow(3, 0, ow - 1)?)
}

/// Bilinear resampling of each `[h, w]` plane with per-axis taps (see [`taps`]): one plane per
/// task.
struct ResizeBilinear {
    ys: Vec<(usize, usize, f64)>,
    xs: Vec<(usize, usize, f64)>,
    /// Whether `xs` are [`taps`] of an axis doubled (`w → 2w`), whose rows [`double_row`]
    /// interpolates.
    doubles: bool,
}

impl ResizeBilinear {
    /// The half-pixel resize of `h × w` planes to `height × width`.
    fn new(h: usize, w: usize, height: usize, width: usize) -> Self {
        ResizeBilinear {
            ys: taps(h, height),
            xs: taps(w, width),
            doubles: w > 0 && width == 2 * w,
        }
    }
}

/// For each output index along an axis of `len_in → len_out`: the two input indices and the
/// weight of the second (half-pixel source positions, as candle and PyTorch compute them).
fn taps(len_in: usize, len_out: usize) -> Vec<(usize, usize, f64)> {
    let scale = len_in as f64 / len_out as f64;
    (0..len_out)
        .map(|o| tap(scale * (o as f64 + 0.5) - 0.5, len_in))
        .collect()
}

/// The taps of [`aligned_bilinear`] along an axis of `len`: output `o` is output
/// `max(o − factor / 2, 0)` of the aligned-corner resize of the axis padded by one replicated
/// value (`len + 1 → factor·len + 1`), whose second index, where it is the padding, is the
/// last value.
fn aligned_taps(len: usize, factor: usize) -> Vec<(usize, usize, f64)> {
    let scale = len as f64 / (factor * len) as f64;
    (0..factor * len)
        .map(|o| tap(scale * o.saturating_sub(factor / 2) as f64, len))
        .collect()
}

/// The two input indices around source position `src` (clamped at 0) of an axis of `len` and
/// the weight of the second.
fn tap(src: f64, len: usize) -> (usize, usize, f64) {
    let src = src.max(0.0);
    let i0 = src.floor() as usize;
    (
        i0.min(len - 1),
        (i0 + 1).min(len - 1),
        (src - i0 as f64).clamp(0.0, 1.0),
    )
}

impl CustomOp1 for ResizeBilinear {
    fn name(&self) -> &'static str {
        "deva-resize-bilinear"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (n, c, h, w) = l.shape().dims4()?;
        let x = super::contiguous_f32(s, l)?;
        let (oh, ow) = (self.ys.len(), self.xs.len());
        let mut out = vec![0f32; n * c * oh * ow];
        out.par_chunks_mut((oh * ow).max(1))
            .zip(x.par_chunks((h * w).max(1)))
            .for_each(|(dst, src)| resize_plane(src, w, self, None, dst));
        Ok((CpuStorage::F32(out), Shape::from((n, c, oh, ow))))
    }
}

multiversion! {
/// One plane of [`ResizeBilinear`] `r`: `src` (rows of `w`) into `dst` (rows of
/// `r.xs.len()`), plus `add` (a plane like `dst`) where given. With the widest vectors of
/// the CPU.
fn resize_plane(src: &[f32], w: usize, r: &ResizeBilinear, add: Option<&[f32]>, dst: &mut [f32]) {
    let (ys, xs) = (&r.ys, &r.xs);
    let ow = xs.len();
    // Input rows interpolated along x (in f64), kept for the next output rows that read them:
    // each is computed once instead of once per output row.
    let mut rows = [(usize::MAX, vec![0f64; ow]), (usize::MAX, vec![0f64; ow])];
    for (oy, (drow, &(y0, y1, wy))) in dst.chunks_mut(ow).zip(ys).enumerate() {
        for y in [y0, y1] {
            if rows[0].0 != y && rows[1].0 != y {
                // The slot that holds neither needed row.
                let slot = usize::from(rows[0].0 == y0 || rows[0].0 == y1);
                let row = &src[y * w..(y + 1) * w];
                if r.doubles {
                    double_row(row, xs, &mut rows[slot].1);
                } else {
                    for (v, &(x0, x1, wx)) in rows[slot].1.iter_mut().zip(xs) {
                        *v = lerp(row[x0], row[x1], wx);
                    }
                }
                rows[slot].0 = y;
            }
        }
        let (top, bottom) = (
            &rows[usize::from(rows[0].0 != y0)].1,
            &rows[usize::from(rows[0].0 != y1)].1,
        );
        let mix = |top: f64, bottom: f64| (top * (1.0 - wy) + bottom * wy) as f32;
        match add {
            Some(add) => {
                let add = &add[oy * ow..(oy + 1) * ow];
                for (((d, &top), &bottom), &a) in drow.iter_mut().zip(top).zip(bottom).zip(add) {
                    *d = mix(top, bottom) + a;
                }
            }
            None => {
                for ((d, &top), &bottom) in drow.iter_mut().zip(top).zip(bottom) {
                    *d = mix(top, bottom);
                }
            }
        }
    }
}
}

/// `a` and `b` interpolated in f64 with weight `t` on `b`.
#[inline(always)]
fn lerp(a: f32, b: f32, t: f64) -> f64 {
    a as f64 * (1.0 - t) + b as f64 * t
}

/// Row `r` interpolated along the [`taps`] `xs` of `r.len() → 2 · r.len()` into `out`: the
/// same values as the general pass, the interior without gathers (output `2i` is
/// `r[i − 1]` and `r[i]` with weight ¾ on the second, `2i + 1` is `r[i]` and `r[i + 1]` with
/// weight ¼ on the second: the source positions `i ∓ ¼` are exact in f64).
#[inline(always)]
fn double_row(r: &[f32], xs: &[(usize, usize, f64)], out: &mut [f64]) {
    let w = r.len();
    for i in 1..w {
        out[2 * i - 1] = lerp(r[i - 1], r[i], 0.25);
        out[2 * i] = lerp(r[i - 1], r[i], 0.75);
    }
    // The first and last outputs clamp their source position: by their taps.
    for o in [0, 2 * w - 1] {
        let (x0, x1, t) = xs[o];
        out[o] = lerp(r[x0], r[x1], t);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn resize_equals_candle_upsampling() {
        for (h, w, oh, ow) in [
            (5, 7, 10, 14),
            (6, 4, 6, 9),
            (9, 9, 4, 3),
            (1, 1, 3, 2),
            (1, 1, 2, 2),
            (3, 40, 6, 80),
            (4, 6, 17, 25),
            (3, 5, 1, 1),
        ] {
            let x = Tensor::randn(0f32, 1.0, (2, 3, h, w), &Device::Cpu).unwrap();
            let ours = resize_bilinear(&x, oh, ow).unwrap();
            let theirs = x.upsample_bilinear2d(oh, ow, false).unwrap();
            assert_eq!(
                super::super::max_abs_diff(&ours, &theirs),
                0.0,
                "{h}x{w} → {oh}x{ow}"
            );
        }
    }

    /// Upsampling with the addend summed in equals the two candle operations bit for bit,
    /// and an addend of another shape is refused with both shapes named.
    #[test]
    fn upsample_add_equals_upsampling_then_adding() {
        for (n, h, w, factor) in [(2, 5, 7, 2), (1, 4, 6, 4), (3, 1, 1, 2), (1, 3, 2, 3)] {
            let x = Tensor::randn(0f32, 1.0, (n, 3, h, w), &Device::Cpu).unwrap();
            let skip =
                Tensor::randn(0f32, 1.0, (1, 3, factor * h, factor * w), &Device::Cpu).unwrap();
            let ours = upsample_bilinear_add(&x, factor, &skip).unwrap();
            let theirs = x
                .upsample_bilinear2d(factor * h, factor * w, false)
                .unwrap()
                .broadcast_add(&skip)
                .unwrap();
            assert_eq!(
                super::super::max_abs_diff(&ours, &theirs),
                0.0,
                "{n}x3x{h}x{w} by {factor}"
            );
        }
        let x = Tensor::zeros((1, 3, 4, 4), DType::F32, &Device::Cpu).unwrap();
        let skip = Tensor::zeros((1, 3, 8, 9), DType::F32, &Device::Cpu).unwrap();
        let err = upsample_bilinear_add(&x, 2, &skip).unwrap_err().to_string();
        assert!(
            err.contains("[1, 3, 8, 9]") && err.contains("[1, 3, 8, 8]"),
            "{err}"
        );
    }

    /// CondInst's aligned upsampling in one pass equals its definition as candle operations
    /// (replicate padding, aligned-corner resize, shift, crop) bit for bit.
    #[test]
    fn aligned_bilinear_equals_its_candle_definition() {
        for (h, w, factor) in [(5, 7, 2), (4, 6, 4), (3, 2, 3), (1, 1, 8), (6, 9, 8)] {
            let x = Tensor::randn(0f32, 1.0, (2, 3, h, w), &Device::Cpu).unwrap();
            let ours = aligned_bilinear(&x, factor).unwrap();
            let y = x
                .pad_with_same(3, 0, 1)
                .unwrap()
                .pad_with_same(2, 0, 1)
                .unwrap();
            let (oh, ow) = (factor * h + 1, factor * w + 1);
            let y = y.upsample_bilinear2d(oh, ow, true).unwrap();
            let s = factor / 2;
            let y = y
                .pad_with_same(3, s, 0)
                .unwrap()
                .pad_with_same(2, s, 0)
                .unwrap();
            let theirs = y
                .narrow(2, 0, oh - 1)
                .unwrap()
                .narrow(3, 0, ow - 1)
                .unwrap();
            assert_eq!(ours.dims(), theirs.dims(), "{h}x{w} × {factor}");
            assert_eq!(
                super::super::max_abs_diff(&ours, &theirs),
                0.0,
                "{h}x{w} × {factor}"
            );
        }
    }

    use super::*;
    use candle_core::{DType, Device};

    /// Area downsampling and the stem's pooling give candle's values bit for bit (the
    /// pooling on inputs of both signs, padded with the smallest value so padding never wins).
    #[test]
    fn area_and_stem_pooling_equal_candle() {
        for (h, w, k) in [(8, 12, 2), (16, 32, 4), (4, 4, 4), (3, 6, 3)] {
            let x = Tensor::randn(0f32, 1.0, (2, 3, h, w), &Device::Cpu).unwrap();
            let ours = area_downsample(&x, k).unwrap();
            let theirs = x.avg_pool2d(k).unwrap();
            assert_eq!(
                super::super::max_abs_diff(&ours, &theirs),
                0.0,
                "{h}x{w} / {k}"
            );
        }
        for (h, w) in [(8, 12), (7, 9), (1, 1), (2, 5)] {
            let x = Tensor::randn(0f32, 1.0, (2, 3, h, w), &Device::Cpu).unwrap();
            let ours = max_pool3_stride2(&x).unwrap();
            let low = |t: Tensor, d: usize| {
                let pad = t
                    .narrow(d, 0, 1)
                    .unwrap()
                    .ones_like()
                    .unwrap()
                    .affine(0.0, -1e30)
                    .unwrap();
                Tensor::cat(&[&pad, &t, &pad], d).unwrap()
            };
            let theirs = low(low(x, 2), 3).max_pool2d_with_stride(3, 2).unwrap();
            assert_eq!(ours.dims(), theirs.dims(), "{h}x{w}");
            assert_eq!(super::super::max_abs_diff(&ours, &theirs), 0.0, "{h}x{w}");
        }
    }

    #[test]
    fn max_pool_ceil_equals_padded_candle_pooling() {
        for (h, w) in [(6, 8), (7, 9), (1, 5), (5, 1), (4, 70), (3, 33)] {
            let x = Tensor::randn(0f32, 1.0, (2, 3, h, w), &Device::Cpu).unwrap();
            let ours = max_pool2_ceil(&x).unwrap();
            let padded = x
                .pad_with_same(2, 0, h % 2)
                .and_then(|t| t.pad_with_same(3, 0, w % 2))
                .unwrap();
            let theirs = padded.max_pool2d(2).unwrap();
            assert_eq!(super::super::max_abs_diff(&ours, &theirs), 0.0, "{h}x{w}");
        }
    }
}
