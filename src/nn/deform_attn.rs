//! Multi-scale deformable attention (Deformable DETR, Zhu et al. 2021), as used by the
//! Mask2Former pixel decoder and Grounding-DINO.
//!
//! Each query looks at `n_points` learned locations per head and per feature level around its
//! reference point, samples the value maps there bilinearly (`grid_sample` semantics:
//! `align_corners = False`, zeros outside the map) and averages the samples with softmax
//! weights. The sampler is built from candle tensor ops (`floor`, comparisons,
//! `index_select`), so it runs on every candle device.
//!
//! Submodules and checkpoint keys follow Hugging Face transformers: `sampling_offsets`,
//! `attention_weights`, `value_proj`, `output_proj`.

use candle_core::{DType, Device, Tensor};
use candle_nn::{Linear, Module, VarBuilder};

use crate::error::{Error, Result};

/// Sizes of a multi-scale deformable attention block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeformAttnConfig {
    /// Channels of queries and values.
    pub d_model: usize,
    /// Number of feature levels.
    pub n_levels: usize,
    /// Number of attention heads (must divide `d_model`).
    pub n_heads: usize,
    /// Sampling points per head and level.
    pub n_points: usize,
}

/// Multi-scale deformable attention with its four linear layers.
#[derive(Debug, Clone)]
pub struct MultiScaleDeformableAttention {
    cfg: DeformAttnConfig,
    sampling_offsets: Linear,
    attention_weights: Linear,
    value_proj: Linear,
    output_proj: Linear,
}

/// Feature levels of a flattened multi-scale value: `(height, width)` of each level and the
/// index of its first element in the flattened sequence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Levels {
    /// `(height, width)` per level, finest or coarsest first as the caller stacked them.
    pub shapes: Vec<(usize, usize)>,
    /// Start of each level in the flattened sequence.
    pub starts: Vec<usize>,
}

impl Levels {
    /// Levels laid out one after the other in the given order.
    pub fn new(shapes: Vec<(usize, usize)>) -> Self {
        let starts = shapes
            .iter()
            .scan(0, |acc, &(h, w)| {
                let s = *acc;
                *acc += h * w;
                Some(s)
            })
            .collect();
        Levels { shapes, starts }
    }

    /// Total number of elements over all levels.
    pub fn len(&self) -> usize {
        self.shapes.iter().map(|(h, w)| h * w).sum()
    }

    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn check(&self, len_in: usize) -> Result<()> {
        if self.starts.len() != self.shapes.len() {
            return Err(Error::invalid(format!(
                "deformable attention: {} level starts for {} level shapes",
                self.starts.len(),
                self.shapes.len()
            )));
        }
        for (l, (&(h, w), &s)) in self.shapes.iter().zip(&self.starts).enumerate() {
            if s + h * w > len_in {
                return Err(Error::invalid(format!(
                    "deformable attention: level {l} ({h}x{w} at {s}) exceeds the value \
                     sequence of {len_in} elements"
                )));
            }
        }
        Ok(())
    }
}

impl MultiScaleDeformableAttention {
    /// Builds the block from `vb` (keys `sampling_offsets`, `attention_weights`, `value_proj`,
    /// `output_proj`, each with `weight` and `bias`).
    pub fn new(cfg: DeformAttnConfig, vb: VarBuilder) -> Result<Self> {
        if cfg.n_heads == 0 || !cfg.d_model.is_multiple_of(cfg.n_heads) {
            return Err(Error::invalid(format!(
                "deformable attention: d_model {} is not a multiple of {} heads",
                cfg.d_model, cfg.n_heads
            )));
        }
        let (d, h, l, p) = (cfg.d_model, cfg.n_heads, cfg.n_levels, cfg.n_points);
        Ok(MultiScaleDeformableAttention {
            cfg,
            sampling_offsets: candle_nn::linear(d, h * l * p * 2, vb.pp("sampling_offsets"))?,
            attention_weights: candle_nn::linear(d, h * l * p, vb.pp("attention_weights"))?,
            value_proj: candle_nn::linear(d, d, vb.pp("value_proj"))?,
            output_proj: candle_nn::linear(d, d, vb.pp("output_proj"))?,
        })
    }

    /// The block's sizes.
    pub fn config(&self) -> DeformAttnConfig {
        self.cfg
    }

    /// Attends from `query` `[b, nq, d]` (position embedding already added) to `value`
    /// `[b, len_in, d]`, the flattened levels described by `levels`.
    ///
    /// `reference_points` is `[b, nq, n_levels, 2]` (normalised `x, y` in `[0, 1]` per level)
    /// or `[b, nq, n_levels, 4]` (boxes `cx, cy, w, h`: offsets are scaled by half the box
    /// size over `n_points`). `padding_mask` `[b, len_in]` (u8, 1 = padded element) zeroes
    /// the projected values of padded elements. Returns `[b, nq, d]`.
    pub fn forward(
        &self,
        query: &Tensor,
        reference_points: &Tensor,
        value: &Tensor,
        levels: &Levels,
        padding_mask: Option<&Tensor>,
    ) -> Result<Tensor> {
        let DeformAttnConfig {
            d_model,
            n_levels,
            n_heads,
            n_points,
        } = self.cfg;
        let (b, nq, dq) = query.dims3()?;
        let (bv, len_in, dv) = value.dims3()?;
        if dq != d_model || dv != d_model || bv != b {
            return Err(Error::invalid(format!(
                "deformable attention: query {:?} and value {:?} do not match d_model {d_model}",
                query.dims(),
                value.dims()
            )));
        }
        if levels.shapes.len() != n_levels {
            return Err(Error::invalid(format!(
                "deformable attention: {} levels given, the block has {n_levels}",
                levels.shapes.len()
            )));
        }
        levels.check(len_in)?;
        let mut v = self.value_proj.forward(value)?;
        if let Some(mask) = padding_mask {
            let keep = mask
                .to_dtype(DType::F32)?
                .affine(-1.0, 1.0)?
                .to_dtype(v.dtype())?;
            v = v.broadcast_mul(&keep.unsqueeze(2)?)?;
        }
        let v = v.reshape((b, len_in, n_heads, d_model / n_heads))?;
        let offsets = self
            .sampling_offsets
            .forward(query)?
            .reshape((b, nq, n_heads, n_levels, n_points, 2))?;
        let weights = self.attention_weights.forward(query)?.reshape((
            b,
            nq,
            n_heads,
            n_levels * n_points,
        ))?;
        let weights = candle_nn::ops::softmax_last_dim(&weights)?
            .reshape((b, nq, n_heads, n_levels, n_points))?;

        let rp = reference_points;
        let rdims = rp.dims();
        if rdims.len() != 4 || rdims[0] != b || rdims[1] != nq || rdims[2] != n_levels {
            return Err(Error::invalid(format!(
                "deformable attention: reference points {rdims:?}, expected [{b}, {nq}, \
                 {n_levels}, 2 or 4]"
            )));
        }
        let locations = match rdims[3] {
            2 => {
                let wh: Vec<f32> = levels
                    .shapes
                    .iter()
                    .flat_map(|&(h, w)| [w as f32, h as f32])
                    .collect();
                let norm = Tensor::from_vec(wh, (1, 1, 1, n_levels, 1, 2), query.device())?
                    .to_dtype(offsets.dtype())?;
                rp.reshape((b, nq, 1, n_levels, 1, 2))?
                    .broadcast_add(&offsets.broadcast_div(&norm)?)?
            }
            4 => {
                let xy = rp.narrow(3, 0, 2)?.reshape((b, nq, 1, n_levels, 1, 2))?;
                let wh = rp.narrow(3, 2, 2)?.reshape((b, nq, 1, n_levels, 1, 2))?;
                let scaled = (offsets / n_points as f64)?.broadcast_mul(&wh)?;
                xy.broadcast_add(&(scaled * 0.5)?)?
            }
            k => {
                return Err(Error::invalid(format!(
                    "deformable attention: reference points end in {k}, expected 2 or 4"
                )))
            }
        };
        let out = ms_deform_sample(&v, levels, &locations, &weights)?;
        Ok(self.output_proj.forward(&out)?)
    }
}

/// Rows of gathered values held at once by [`ms_deform_sample`] (bounds its memory).
const GATHER_ROWS: usize = 1 << 19;

/// The deformable sampling core: bilinear samples of `value` `[b, len_in, heads, hd]` at
/// `locations` `[b, nq, heads, levels, points, 2]` (normalised `x, y` in `[0, 1]`,
/// `grid_sample` with `align_corners = False` and zero padding), weighted by `weights`
/// `[b, nq, heads, levels, points]` and summed over levels and points. Returns
/// `[b, nq, heads * hd]`.
pub fn ms_deform_sample(
    value: &Tensor,
    levels: &Levels,
    locations: &Tensor,
    weights: &Tensor,
) -> Result<Tensor> {
    let (b, len_in, heads, hd) = value.dims4()?;
    let ld = locations.dims();
    let (nq, n_levels, n_points) = match ld {
        &[lb, nq, lh, nl, np, 2] if lb == b && lh == heads && nl == levels.shapes.len() => {
            (nq, nl, np)
        }
        _ => {
            return Err(Error::invalid(format!(
                "deformable sampling: locations {ld:?} do not match value {:?} and {} levels",
                value.dims(),
                levels.shapes.len()
            )))
        }
    };
    if weights.dims() != [b, nq, heads, n_levels, n_points] {
        return Err(Error::invalid(format!(
            "deformable sampling: weights {:?}, expected [{b}, {nq}, {heads}, {n_levels}, \
             {n_points}]",
            weights.dims()
        )));
    }
    levels.check(len_in)?;
    let dev = value.device();
    let dtype = value.dtype();
    let per_level = |f: &dyn Fn(usize) -> f32| -> Result<Tensor> {
        let v: Vec<f32> = (0..n_levels).map(f).collect();
        Ok(Tensor::from_vec(v, (1, 1, 1, n_levels, 1), dev)?)
    };
    let w_l = per_level(&|l| levels.shapes[l].1 as f32)?;
    let h_l = per_level(&|l| levels.shapes[l].0 as f32)?;
    let start_l = per_level(&|l| levels.starts[l] as f32)?;

    // Work in f32 on [b, heads, nq, levels, points] so that the gathered rows of one
    // (batch, head) are contiguous.
    let loc = locations
        .to_dtype(DType::F32)?
        .permute((0, 2, 1, 3, 4, 5))?;
    let attn = weights.to_dtype(DType::F32)?.permute((0, 2, 1, 3, 4))?;
    let x = loc
        .narrow(5, 0, 1)?
        .squeeze(5)?
        .broadcast_mul(&w_l)?
        .affine(1.0, -0.5)?;
    let y = loc
        .narrow(5, 1, 1)?
        .squeeze(5)?
        .broadcast_mul(&h_l)?
        .affine(1.0, -0.5)?;
    let x0 = x.floor()?;
    let y0 = y.floor()?;
    let fx = (&x - &x0)?;
    let fy = (&y - &y0)?;
    let gx = fx.affine(-1.0, 1.0)?;
    let gy = fy.affine(-1.0, 1.0)?;
    let w_max = w_l.affine(1.0, -1.0)?;
    let h_max = h_l.affine(1.0, -1.0)?;

    let mut idx = Vec::with_capacity(4);
    let mut wts = Vec::with_capacity(4);
    for (dx, dy) in [(0.0, 0.0), (1.0, 0.0), (0.0, 1.0), (1.0, 1.0)] {
        let xi = x0.affine(1.0, dx)?;
        let yi = y0.affine(1.0, dy)?;
        let inside = |t: &Tensor, max: &Tensor| -> Result<Tensor> {
            let lo = t.ge(0f32)?.to_dtype(DType::F32)?;
            let hi = t.broadcast_le(max)?.to_dtype(DType::F32)?;
            Ok((lo * hi)?)
        };
        let valid = (inside(&xi, &w_max)? * inside(&yi, &h_max)?)?;
        let wx = if dx == 0.0 { &gx } else { &fx };
        let wy = if dy == 0.0 { &gy } else { &fy };
        wts.push(((wx * wy)? * valid)?.mul(&attn)?);
        let xc = xi.maximum(0f32)?.broadcast_minimum(&w_max)?;
        let yc = yi.maximum(0f32)?.broadcast_minimum(&h_max)?;
        let local = yc.broadcast_mul(&w_l)?.add(&xc)?.broadcast_add(&start_l)?;
        idx.push(local.to_dtype(DType::U32)?);
    }
    // [b, heads, nq, levels * points * 4]
    let k = n_levels * n_points * 4;
    let idx = Tensor::stack(&idx, 5)?.reshape((b, heads, nq, k))?;
    let wts = Tensor::stack(&wts, 5)?
        .reshape((b, heads, nq, k))?
        .to_dtype(dtype)?;
    let base: Vec<u32> = (0..(b * heads) as u32).map(|i| i * len_in as u32).collect();
    let base = Tensor::from_vec(base, (b, heads, 1, 1), dev)?;
    let idx = idx.broadcast_add(&base)?;
    let table = value
        .permute((0, 2, 1, 3))?
        .contiguous()?
        .reshape((b * heads * len_in, hd))?;

    let chunk = (GATHER_ROWS / (b * heads * k).max(1)).max(1);
    let mut parts = Vec::with_capacity(nq.div_ceil(chunk));
    let mut s = 0;
    while s < nq {
        let n = chunk.min(nq - s);
        let i = idx.narrow(2, s, n)?.contiguous()?.flatten_all()?;
        let g = table.index_select(&i, 0)?.reshape((b * heads * n, k, hd))?;
        let w = wts.narrow(2, s, n)?.reshape((b * heads * n, k, 1))?;
        parts.push(g.broadcast_mul(&w)?.sum(1)?.reshape((b, heads, n, hd))?);
        s += n;
    }
    let out = Tensor::cat(&parts, 2)?;
    Ok(out.permute((0, 2, 1, 3))?.reshape((b, nq, heads * hd))?)
}

/// Encoder reference points `[b, len, n_levels, 2]` (the Deformable-DETR encoder's): each
/// element's pixel centre `(x, y)` normalised by the valid extent of its own level, then scaled
/// by every level's valid ratio. `valid[i][l]` is the `(rows, columns)` of level `l` that hold
/// image (not padding) in batch item `i`; without padding it is the level's shape and the
/// points are the pixel centres normalised to `[0, 1]`.
pub fn encoder_reference_points(
    levels: &Levels,
    valid: &[Vec<(usize, usize)>],
    device: &Device,
) -> Result<Tensor> {
    let n = levels.shapes.len();
    let mut v = Vec::with_capacity(valid.len() * levels.len() * n * 2);
    for extents in valid {
        if extents.len() != n {
            return Err(Error::invalid(format!(
                "encoder reference points: {} valid extents for {n} levels",
                extents.len()
            )));
        }
        // (width, height) ratio of the valid part of each level.
        let ratios: Vec<(f32, f32)> = levels
            .shapes
            .iter()
            .zip(extents)
            .map(|(&(h, w), &(vh, vw))| (vw as f32 / w as f32, vh as f32 / h as f32))
            .collect();
        for (&(h, w), &(wr_own, hr_own)) in levels.shapes.iter().zip(&ratios) {
            for y in 0..h {
                for x in 0..w {
                    let ry = (y as f32 + 0.5) / (hr_own * h as f32);
                    let rx = (x as f32 + 0.5) / (wr_own * w as f32);
                    for &(wr, hr) in &ratios {
                        v.push(rx * wr);
                        v.push(ry * hr);
                    }
                }
            }
        }
    }
    Ok(Tensor::from_vec(
        v,
        (valid.len(), levels.len(), n, 2),
        device,
    )?)
}

/// Splits the last dimension of a sequence into `[b, len, d]` levels back to maps
/// `[b, d, h, w]`.
pub fn split_levels(x: &Tensor, levels: &Levels) -> Result<Vec<Tensor>> {
    let (b, _, d) = x.dims3()?;
    levels
        .shapes
        .iter()
        .zip(&levels.starts)
        .map(|(&(h, w), &s)| {
            Ok(x.narrow(1, s, h * w)?
                .transpose(1, 2)?
                .reshape((b, d, h, w))?)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn close(a: &[f32], b: &[f32]) {
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() < 1e-5, "{a:?} vs {b:?}");
        }
    }

    /// One level 2x3 with values 1..6 (row-major), one head of one channel.
    fn sample(levels: &Levels, values: &[f32], locs: &[(f32, f32)], w: &[f32]) -> Vec<f32> {
        let dev = Device::Cpu;
        let n_levels = levels.shapes.len();
        let n_points = locs.len() / n_levels;
        let value = Tensor::from_vec(values.to_vec(), (1, values.len(), 1, 1), &dev).unwrap();
        let l: Vec<f32> = locs.iter().flat_map(|&(x, y)| [x, y]).collect();
        let l = Tensor::from_vec(l, (1, 1, 1, n_levels, n_points, 2), &dev).unwrap();
        let w = Tensor::from_vec(w.to_vec(), (1, 1, 1, n_levels, n_points), &dev).unwrap();
        ms_deform_sample(&value, levels, &l, &w)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    }

    #[test]
    fn sampler_matches_hand_computed_bilinear_values() {
        // Map (h=2, w=3):  1 2 3 / 4 5 6. Pixel centres are at normalised (j+0.5)/3, (i+0.5)/2.
        let one = Levels::new(vec![(2, 3)]);
        let v = [1., 2., 3., 4., 5., 6.];
        // Exactly on pixel (1, 2) = 6.
        close(&sample(&one, &v, &[(2.5 / 3.0, 0.75)], &[1.0]), &[6.0]);
        // Midway between the four top-left pixels: (1+2+4+5)/4 = 3.
        close(&sample(&one, &v, &[(1.0 / 3.0, 0.5)], &[1.0]), &[3.0]);
        // x = -0.25 px, row 0: 0.25 of an outside pixel (zero) + 0.75 of pixel (0, 0) = 0.75.
        close(&sample(&one, &v, &[(0.25 / 3.0, 0.25)], &[1.0]), &[0.75]);
        // Column 1, y = 1.5 px: half of pixel (1, 1) = 5 and half of an outside row.
        close(&sample(&one, &v, &[(1.5 / 3.0, 1.0)], &[1.0]), &[2.5]);
        // Far outside: zero.
        close(&sample(&one, &v, &[(-1.0, 2.0)], &[1.0]), &[0.0]);
        // Two points weighted 0.25 / 0.75: 0.25·6 + 0.75·3.
        close(
            &sample(
                &one,
                &v,
                &[(2.5 / 3.0, 0.75), (1.0 / 3.0, 0.5)],
                &[0.25, 0.75],
            ),
            &[3.75],
        );
        // Two levels: (2x3) then (1x2) with values 10, 20 starting at 6.
        let two = Levels::new(vec![(2, 3), (1, 2)]);
        let v2 = [1., 2., 3., 4., 5., 6., 10., 20.];
        // Level 1 at x = 0.5 (between its two pixels) → 15; level 0 on pixel (0, 0) → 1.
        close(
            &sample(&two, &v2, &[(0.5 / 3.0, 0.25), (0.5, 0.5)], &[0.5, 0.5]),
            &[8.0],
        );
    }

    fn linear(map: &mut HashMap<String, Tensor>, name: &str, w: Tensor, b: Tensor) {
        map.insert(format!("{name}.weight"), w);
        map.insert(format!("{name}.bias"), b);
    }

    #[test]
    fn block_offsets_points_by_level_size_and_by_box() {
        // d = 1, one head, one level of 1x4 with values 1..4, two points.
        let dev = Device::Cpu;
        let cfg = DeformAttnConfig {
            d_model: 1,
            n_levels: 1,
            n_heads: 1,
            n_points: 2,
        };
        let t = |v: Vec<f32>, s: &[usize]| Tensor::from_vec(v, s, &dev).unwrap();
        let mut map = HashMap::new();
        // Offsets (+1, 0) and (-1, 0) in pixels of the level, whatever the query.
        linear(
            &mut map,
            "sampling_offsets",
            t(vec![0.0; 4], &[4, 1]),
            t(vec![1.0, 0.0, -1.0, 0.0], &[4]),
        );
        linear(
            &mut map,
            "attention_weights",
            t(vec![0.0; 2], &[2, 1]),
            t(vec![0.0; 2], &[2]),
        );
        linear(
            &mut map,
            "value_proj",
            t(vec![1.0], &[1, 1]),
            t(vec![0.0], &[1]),
        );
        linear(
            &mut map,
            "output_proj",
            t(vec![2.0], &[1, 1]),
            t(vec![0.0], &[1]),
        );
        let vb = VarBuilder::from_tensors(map, DType::F32, &dev);
        let block = MultiScaleDeformableAttention::new(cfg, vb).unwrap();
        let levels = Levels::new(vec![(1, 4)]);
        let value = t(vec![1., 2., 3., 4.], &[1, 4, 1]);
        let query = t(vec![0.0], &[1, 1, 1]);
        // Reference at pixel 1's centre: samples pixels 2 and 0 → mean 2, times 2.
        let rp = t(vec![1.5 / 4.0, 0.5], &[1, 1, 1, 2]);
        let out = block.forward(&query, &rp, &value, &levels, None).unwrap();
        close(&out.flatten_all().unwrap().to_vec1().unwrap(), &[4.0]);
        // Padding pixel 2 out: only pixel 0 (value 1) and a zero → 0.5 · 2.
        let pad = Tensor::from_vec(vec![0u8, 0, 1, 0], (1, 4), &dev).unwrap();
        let out = block
            .forward(&query, &rp, &value, &levels, Some(&pad))
            .unwrap();
        close(&out.flatten_all().unwrap().to_vec1().unwrap(), &[1.0]);
        // Box form: centre x = 2.5/4, width 0.5: offsets ±1 / 2 points · 0.5 · 0.5 = ±0.125
        // normalised = ±0.5 px around pixel coordinate 2.0.
        let rp = t(vec![2.5 / 4.0, 0.5, 0.5, 1.0], &[1, 1, 1, 4]);
        let out = block.forward(&query, &rp, &value, &levels, None).unwrap();
        // Pixel coordinates 2.5 and 1.5: values 3.5 and 2.5, mean 3, times 2.
        close(&out.flatten_all().unwrap().to_vec1().unwrap(), &[6.0]);
        // Wrong reference-point width is refused.
        let rp = t(vec![0.5; 3], &[1, 1, 1, 3]);
        assert!(block.forward(&query, &rp, &value, &levels, None).is_err());
    }

    #[test]
    fn reference_points_and_level_split() {
        let levels = Levels::new(vec![(2, 2), (1, 1)]);
        assert_eq!(levels.starts, vec![0, 4]);
        let rp = encoder_reference_points(&levels, &[levels.shapes.clone()], &Device::Cpu).unwrap();
        assert_eq!(rp.dims(), &[1, 5, 2, 2]);
        let v: Vec<f32> = rp.flatten_all().unwrap().to_vec1().unwrap();
        // Element 1 = level 0, (i=0, j=1): x = 0.75, y = 0.25 for both levels.
        close(&v[4..8], &[0.75, 0.25, 0.75, 0.25]);
        close(&v[16..20], &[0.5, 0.5, 0.5, 0.5]);
        // Second image: level 0 has one valid row and column (level 1 stays whole). Level 0's
        // element (0, 1) lies at x = 1.5 of 1 valid column, y = 0.5 of 1 valid row; scaled
        // by the ratios (0.5, 0.5) of level 0 and (1, 1) of level 1.
        let valid = [levels.shapes.clone(), vec![(1, 1), (1, 1)]];
        let rp = encoder_reference_points(&levels, &valid, &Device::Cpu).unwrap();
        assert_eq!(rp.dims(), &[2, 5, 2, 2]);
        let v: Vec<f32> = rp.flatten_all().unwrap().to_vec1().unwrap();
        close(&v[20 + 4..20 + 8], &[0.75, 0.25, 1.5, 0.5]);
        assert!(encoder_reference_points(&levels, &[vec![(1, 1)]], &Device::Cpu).is_err());
        let x = Tensor::arange(0f32, 10.0, &Device::Cpu)
            .unwrap()
            .reshape((1, 5, 2))
            .unwrap();
        let maps = split_levels(&x, &levels).unwrap();
        assert_eq!(maps[0].dims(), &[1, 2, 2, 2]);
        let m0: Vec<f32> = maps[0].flatten_all().unwrap().to_vec1().unwrap();
        close(&m0, &[0., 2., 4., 6., 1., 3., 5., 7.]);
    }
}
