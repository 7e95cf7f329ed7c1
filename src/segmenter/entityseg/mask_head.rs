//! CondInst's mask branch (`mask_branch`: P3 … P5 refined, summed at stride 8, a small
//! tower to a few mask-feature channels) and the dynamic mask head: every entity's own
//! 1×1 convolutions, with parameters from the controller, over the mask features and the
//! coordinates relative to the entity's location.

use candle_core::{Device, Tensor};
use candle_nn::VarBuilder;

use super::config::{EntitySegConfig, SIZES_OF_INTEREST};
use super::CONV;
use crate::error::{Error, Result};
use crate::nn::conv::{Conv2d, ConvShape};
use crate::nn::resample::aligned_bilinear;

/// `mask_branch`: `refine.{i}` (3×3 conv + BatchNorm + ReLU per input level) and `tower`.
#[derive(Debug, Clone)]
pub struct MaskBranch {
    refine: Vec<Conv2d>,
    tower: Vec<Conv2d>,
    out: Conv2d,
}

/// Stride of the mask features (that of P3).
pub const MASK_FEATURE_STRIDE: usize = 8;

impl MaskBranch {
    /// Loads `refine.{0,1,2}` (P3, P4, P5 of `in_channels`) and `tower` under `vb`.
    pub fn load(vb: &VarBuilder, cfg: &EntitySegConfig) -> Result<Self> {
        let m = &cfg.mask_branch;
        let conv_bn = |vb: VarBuilder, c_in: usize| {
            Conv2d::load_with_batch_norm(
                &vb.pp("0"),
                &vb.pp("1"),
                ConvShape::same(c_in, m.channels, 3),
                CONV,
            )
        };
        let refine = (0..3)
            .map(|i| conv_bn(vb.pp("refine").pp(i), cfg.fpn_out_channels))
            .collect::<Result<Vec<_>>>()?;
        let tower = (0..m.num_convs)
            .map(|i| conv_bn(vb.pp("tower").pp(i), m.channels))
            .collect::<Result<Vec<_>>>()?;
        let out = Conv2d::load(
            &vb.pp("tower").pp(m.num_convs),
            ConvShape::same(m.channels, m.out_channels, 1),
            CONV,
        )?;
        Ok(MaskBranch { refine, tower, out })
    }

    /// Mask features `[n, out_channels, h/8, w/8]` of P3, P4, P5.
    pub fn forward(&self, p3_to_p5: &[Tensor]) -> Result<Tensor> {
        let mut x: Option<Tensor> = None;
        for (conv, f) in self.refine.iter().zip(p3_to_p5) {
            let y = conv.forward_relu(f)?;
            x = Some(match x {
                None => y,
                Some(x) => {
                    let factor = x.dim(2)? / y.dim(2)?;
                    (x + aligned_bilinear(&y, factor)?)?
                }
            });
        }
        let mut x = x.ok_or_else(|| Error::invalid("mask branch: no input levels"))?;
        for conv in &self.tower {
            x = conv.forward_relu(&x)?;
        }
        self.out.forward(&x)
    }
}

/// Per-entity inputs of the dynamic mask head.
#[derive(Debug, Clone)]
pub struct Entities<'a> {
    /// Image positions `(x, y)` of the entities' locations.
    pub locations: &'a [[f32; 2]],
    /// FPN level index (0 = P3) of each entity.
    pub levels: &'a [usize],
    /// Dynamic parameters `[n, P]`.
    pub params: &'a Tensor,
}

/// The dynamic mask head's sizes.
#[derive(Debug, Clone, Copy)]
pub struct DynamicMaskHead {
    in_channels: usize,
    channels: usize,
    num_layers: usize,
    out_stride: usize,
}

impl DynamicMaskHead {
    /// The head of `cfg`.
    pub fn new(cfg: &EntitySegConfig) -> Self {
        DynamicMaskHead {
            in_channels: cfg.mask_branch.out_channels,
            channels: cfg.mask_head.channels,
            num_layers: cfg.mask_head.num_layers,
            out_stride: cfg.mask_out_stride,
        }
    }

    /// `(weights, biases)` element counts of each layer, in the parameter vector's order
    /// (all weights, then all biases).
    fn sizes(&self) -> (Vec<(usize, usize)>, Vec<usize>) {
        let c = self.channels;
        let mut w = Vec::with_capacity(self.num_layers);
        let mut b = Vec::with_capacity(self.num_layers);
        for l in 0..self.num_layers {
            let (rows, cols) = match l {
                0 => (c, self.in_channels + 2),
                l if l == self.num_layers - 1 => (1, c),
                _ => (c, c),
            };
            w.push((rows, cols));
            b.push(rows);
        }
        (w, b)
    }

    /// Mask probabilities `[n, 1, 8h/out_stride, 8w/out_stride]` of the entities over the
    /// mask features `feats` `[1, C, h, w]` (stride 8).
    pub fn forward(&self, feats: &Tensor, e: &Entities) -> Result<Tensor> {
        let (_, c, h, w) = feats.dims4()?;
        let n = e.locations.len();
        let dev: &Device = feats.device();
        if c != self.in_channels || e.levels.len() != n || e.params.dim(0)? != n {
            return Err(Error::invalid(format!(
                "dynamic mask head: {c} feature channels (expected {}), {n} locations, {} \
                 levels, {} parameter rows",
                self.in_channels,
                e.levels.len(),
                e.params.dim(0)?
            )));
        }
        if n == 0 {
            let f = MASK_FEATURE_STRIDE / self.out_stride;
            return Ok(Tensor::zeros((0, 1, h * f, w * f), feats.dtype(), dev)?);
        }
        // Relative coordinates [n, 2, h·w]: (entity − pixel centre) / size of interest.
        let s = MASK_FEATURE_STRIDE as f32;
        let half = (MASK_FEATURE_STRIDE / 2) as f32;
        let mut rel = Vec::with_capacity(n * 2 * h * w);
        for (loc, &lvl) in e.locations.iter().zip(e.levels) {
            let soi = SIZES_OF_INTEREST.get(lvl).copied().ok_or_else(|| {
                Error::invalid(format!("dynamic mask head: FPN level {lvl} out of range"))
            })?;
            for (axis, &l) in loc.iter().enumerate() {
                for y in 0..h {
                    for x in 0..w {
                        let pixel = if axis == 0 { x } else { y };
                        rel.push((l - (pixel as f32 * s + half)) / soi);
                    }
                }
            }
        }
        let rel = Tensor::from_vec(rel, (n, 2, h * w), dev)?;
        let f = feats
            .reshape((1, c, h * w))?
            .broadcast_as((n, c, h * w))?
            .contiguous()?;
        let mut x = Tensor::cat(&[&rel, &f], 1)?;
        let (ws, bs) = self.sizes();
        let total: usize = ws.iter().map(|(r, c)| r * c).sum::<usize>() + bs.iter().sum::<usize>();
        if e.params.dim(1)? != total {
            return Err(Error::invalid(format!(
                "dynamic mask head: {} parameters per entity, expected {total}",
                e.params.dim(1)?
            )));
        }
        let mut off_w = 0;
        let mut off_b: usize = ws.iter().map(|(r, c)| r * c).sum();
        for (l, (&(rows, cols), &nb)) in ws.iter().zip(&bs).enumerate() {
            let wt = e
                .params
                .narrow(1, off_w, rows * cols)?
                .reshape((n, rows, cols))?;
            let b = e.params.narrow(1, off_b, nb)?.reshape((n, nb, 1))?;
            off_w += rows * cols;
            off_b += nb;
            x = wt.matmul(&x)?.broadcast_add(&b)?;
            if l + 1 < self.num_layers {
                x = x.relu()?;
            }
        }
        let logits = x.reshape((n, 1, h, w))?;
        let up = aligned_bilinear(&logits, MASK_FEATURE_STRIDE / self.out_stride)?;
        Ok(candle_nn::ops::sigmoid(&up)?)
    }
}
