//! Multi-scale deformable attention (Deformable DETR, Zhu et al. 2021), as used by the
//! Mask2Former pixel decoder and Grounding-DINO.
//!
//! Each query looks at `n_points` learned locations per head and per feature level around its
//! reference point, samples the value maps there bilinearly (`grid_sample` semantics:
//! `align_corners = False`, zeros outside the map) and averages the samples with softmax
//! weights. On the CPU (f32) a direct kernel samples; on other devices the sampler is built
//! from candle tensor ops (`floor`, comparisons, `index_select`).
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
/// `[b, nq, heads * hd]`. On the CPU in f32 a direct kernel does it; elsewhere candle ops.
pub fn ms_deform_sample(
    value: &Tensor,
    levels: &Levels,
    locations: &Tensor,
    weights: &Tensor,
) -> Result<Tensor> {
    let (b, len_in, heads, _) = value.dims4()?;
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
    if crate::nn::is_host_f32(value) {
        let op = super::deform_sample_cpu::DeformSample {
            shapes: levels.shapes.clone(),
            starts: levels.starts.clone(),
        };
        return Ok(value.contiguous()?.apply_op3_no_bwd(
            &locations.to_dtype(DType::F32)?.contiguous()?,
            &weights.to_dtype(DType::F32)?.contiguous()?,
            &op,
        )?);
    }
    sample_with_tensor_ops(value, levels, locations, weights)
}

/// [`ms_deform_sample`] from candle tensor ops, for every device and dtype (the CPU runs f32
/// through a direct kernel instead).
fn sample_with_tensor_ops(
    value: &Tensor,
    levels: &Levels,
    locations: &Tensor,
    weights: &Tensor,
) -> Result<Tensor> {
    let (b, len_in, heads, hd) = value.dims4()?;
    let (nq, n_levels, n_points) = (weights.dim(1)?, weights.dim(3)?, weights.dim(4)?);
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
mod tests;
