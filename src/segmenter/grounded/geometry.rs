//! Per-level geometry of the flattened image tokens, computed on the host: padding masks,
//! valid ratios and extents, sine position embeddings and two-stage proposals.

use candle_core::{Device, Tensor};

use super::encoder::sine_embed;
use crate::error::Result;

/// Per-image valid-pixel masks of one feature level.
#[derive(Debug, Clone)]
pub struct LevelMask {
    /// Level height.
    pub h: usize,
    /// Level width.
    pub w: usize,
    /// `B × h × w`, true on image pixels.
    pub valid: Vec<bool>,
}

impl LevelMask {
    /// `F.interpolate(mask, size=(h, w))` (nearest: source index `⌊dst · in/out⌋`) of the
    /// `B × H × W` pixel mask.
    pub fn from_pixel_mask(
        mask: &[u8],
        b: usize,
        hh: usize,
        ww: usize,
        h: usize,
        w: usize,
    ) -> Self {
        let near = |dst: usize, inp: usize, out: usize| -> usize {
            if inp == out {
                dst
            } else {
                let scale = inp as f32 / out as f32;
                ((dst as f32 * scale).floor() as usize).min(inp - 1)
            }
        };
        let mut valid = Vec::with_capacity(b * h * w);
        for bi in 0..b {
            for y in 0..h {
                let sy = near(y, hh, h);
                for x in 0..w {
                    let sx = near(x, ww, w);
                    valid.push(mask[(bi * hh + sy) * ww + sx] != 0);
                }
            }
        }
        LevelMask { h, w, valid }
    }

    fn at(&self, b: usize, y: usize, x: usize) -> bool {
        self.valid[(b * self.h + y) * self.w + x]
    }

    /// (valid rows in column 0, valid columns in row 0) of image `b`.
    fn valid_extent(&self, b: usize) -> (usize, usize) {
        let vh = (0..self.h).filter(|&y| self.at(b, y, 0)).count();
        let vw = (0..self.w).filter(|&x| self.at(b, 0, x)).count();
        (vh, vw)
    }
}

/// Valid ratios `(B, levels, 2)`: (valid width / W, valid height / H) per level.
pub fn valid_ratios(levels: &[LevelMask], b: usize, dev: &Device) -> Result<Tensor> {
    let mut v = Vec::with_capacity(b * levels.len() * 2);
    for bi in 0..b {
        for l in levels {
            let (vh, vw) = l.valid_extent(bi);
            v.push(vw as f32 / l.w as f32);
            v.push(vh as f32 / l.h as f32);
        }
    }
    Ok(Tensor::from_vec(v, (b, levels.len(), 2), dev)?)
}

/// Sine position embedding `(B, h·w, 2·feats)` of one level: `cat(pos_y, pos_x)` of the
/// cumulative valid counts normalised to `(0, 2π]`.
pub fn level_position(
    l: &LevelMask,
    b: usize,
    feats: usize,
    temperature: f64,
    dev: &Device,
) -> Result<Tensor> {
    const EPS: f32 = 1e-6;
    let (h, w) = (l.h, l.w);
    let mut ys = vec![0f32; b * h * w];
    let mut xs = vec![0f32; b * h * w];
    for bi in 0..b {
        let base = bi * h * w;
        for y in 0..h {
            let mut acc = 0f32;
            for x in 0..w {
                acc += f32::from(u8::from(l.at(bi, y, x)));
                xs[base + y * w + x] = acc;
            }
        }
        for x in 0..w {
            let mut acc = 0f32;
            for y in 0..h {
                acc += f32::from(u8::from(l.at(bi, y, x)));
                ys[base + y * w + x] = acc;
            }
        }
        for y in 0..h {
            for x in 0..w {
                let i = base + y * w + x;
                ys[i] /= ys[base + (h - 1) * w + x] + EPS;
                xs[i] /= xs[base + y * w + w - 1] + EPS;
            }
        }
    }
    // sine_embed multiplies by 2π itself.
    let ys = Tensor::from_vec(ys, (b, h * w), dev)?;
    let xs = Tensor::from_vec(xs, (b, h * w), dev)?;
    Ok(Tensor::cat(
        &[
            sine_embed(&ys, feats, temperature)?,
            sine_embed(&xs, feats, temperature)?,
        ],
        2,
    )?)
}

/// `(valid rows, valid columns)` of every level, per image: the `valid` argument of
/// [`crate::nn::deform_attn::encoder_reference_points`].
pub fn valid_extents(levels: &[LevelMask], b: usize) -> Vec<Vec<(usize, usize)>> {
    (0..b)
        .map(|bi| levels.iter().map(|l| l.valid_extent(bi)).collect())
        .collect()
}

/// Two-stage proposals: `(B, S, 4)` boxes `(cx, cy, w, h)` in inverse-sigmoid space (+∞
/// where invalid or padded) and `(B, S, 1)` 0/1 f32 flags of the usable tokens.
pub fn proposals(levels: &[LevelMask], b: usize, dev: &Device) -> Result<(Tensor, Tensor)> {
    let s: usize = levels.iter().map(|l| l.h * l.w).sum();
    let mut boxes = Vec::with_capacity(b * s * 4);
    let mut keep = Vec::with_capacity(b * s);
    let inside = |p: f32| p > 0.01f32 && p < 0.99f32;
    for bi in 0..b {
        for (li, l) in levels.iter().enumerate() {
            let (vh, vw) = l.valid_extent(bi);
            let wh = 0.05f32 * 2f32.powi(li as i32);
            for y in 0..l.h {
                for x in 0..l.w {
                    let p = [
                        (x as f32 + 0.5) / vw as f32,
                        (y as f32 + 0.5) / vh as f32,
                        wh,
                        wh,
                    ];
                    let ok = l.at(bi, y, x) && p.iter().all(|&v| inside(v));
                    keep.push(f32::from(u8::from(ok)));
                    for v in p {
                        boxes.push(if ok {
                            (v / (1.0 - v)).ln()
                        } else {
                            f32::INFINITY
                        });
                    }
                }
            }
        }
    }
    Ok((
        Tensor::from_vec(boxes, (b, s, 4), dev)?,
        Tensor::from_vec(keep, (b, s, 1), dev)?,
    ))
}
