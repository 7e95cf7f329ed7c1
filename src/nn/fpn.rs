//! detectron2's feature pyramid (`FPN`, no normalisation, sum fusion) with the RetinaNet /
//! FCOS top block `LastLevelP6P7` (P6 from the last bottom-up feature or from the pyramid's
//! last output, [`TopBlock`]; P7 from ReLU(P6)).
//! Keys: `fpn_lateral{s}`, `fpn_output{s}` (s = log2 of the stride) and `top_block.p6`,
//! `top_block.p7`.

use candle_core::Tensor;
use candle_nn::VarBuilder;

use super::act::Activation;
use super::conv::{Conv2d, ConvKernel, ConvShape};
use crate::error::{Error, Result};

/// The pyramid's extra P6/P7 levels (`top_block.p6`, `top_block.p7`, stride 2 each).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopBlock {
    /// No extra levels.
    None,
    /// P6 from the last bottom-up feature (`LastLevelP6P7(C5 channels, …)`, e.g. the ResNet
    /// RetinaNet / FCOS backbones).
    FromInput,
    /// P6 from the pyramid's last output (`LastLevelP6P7(out_channels, …, "p5")`, e.g.
    /// EntitySeg's Swin backbone).
    FromOutput,
}

/// A feature pyramid over bottom-up features of consecutive power-of-two strides.
#[derive(Debug, Clone)]
pub struct Fpn {
    /// `(lateral 1×1, output 3×3)` per input level, finest first.
    levels: Vec<(Conv2d, Conv2d)>,
    /// `top_block.p6` and `top_block.p7`, when present.
    top: Option<(Conv2d, Conv2d)>,
    /// Where P6 reads its input.
    top_source: TopBlock,
}

impl Fpn {
    /// Loads the pyramid for inputs of `in_channels` (finest first) whose finest stride is
    /// `2^first_stage`, with `out_channels`, and the `top` block, computed by `kernel`.
    pub fn load(
        vb: &VarBuilder,
        in_channels: &[usize],
        first_stage: usize,
        out_channels: usize,
        top: TopBlock,
        kernel: ConvKernel,
    ) -> Result<Self> {
        let mut levels = Vec::with_capacity(in_channels.len());
        for (i, &c) in in_channels.iter().enumerate() {
            let s = first_stage + i;
            levels.push((
                Conv2d::load(
                    &vb.pp(format!("fpn_lateral{s}")),
                    ConvShape::same(c, out_channels, 1),
                    kernel,
                )?,
                Conv2d::load(
                    &vb.pp(format!("fpn_output{s}")),
                    ConvShape::same(out_channels, out_channels, 3),
                    kernel,
                )?,
            ));
        }
        let p6_in = match top {
            TopBlock::None => None,
            TopBlock::FromInput => in_channels.last().copied(),
            TopBlock::FromOutput => Some(out_channels),
        };
        let top_source = top;
        let top = match p6_in {
            Some(c_last) => {
                let t = vb.pp("top_block");
                Some((
                    Conv2d::load(
                        &t.pp("p6"),
                        ConvShape::same(c_last, out_channels, 3).with_stride(2),
                        kernel,
                    )?,
                    Conv2d::load(
                        &t.pp("p7"),
                        ConvShape::same(out_channels, out_channels, 3).with_stride(2),
                        kernel,
                    )?,
                ))
            }
            None => None,
        };
        Ok(Fpn {
            levels,
            top,
            top_source,
        })
    }

    /// The pyramid of `features` (finest first): one output per input level, then P6 and P7
    /// when the top block is present. Each coarser input must be half the size of the finer.
    pub fn forward(&self, features: &[Tensor]) -> Result<Vec<Tensor>> {
        if features.len() != self.levels.len() {
            return Err(Error::invalid(format!(
                "FPN: {} input levels for {} lateral convolutions",
                features.len(),
                self.levels.len()
            )));
        }
        let mut out = vec![None; features.len()];
        let mut prev: Option<Tensor> = None;
        for (i, ((lateral, output), x)) in self.levels.iter().zip(features).enumerate().rev() {
            // The lateral convolution adds the upsampled coarser level in its output pass.
            let merged = match prev {
                None => lateral.forward(x)?,
                Some(p) => {
                    let (_, _, h, w) = p.dims4()?;
                    let up = p.upsample_nearest2d(2 * h, 2 * w)?;
                    lateral.forward_with(&[x], Activation::Identity, Some(&up))?
                }
            };
            out[i] = Some(output.forward(&merged)?);
            prev = Some(merged);
        }
        let mut out: Vec<Tensor> = out.into_iter().flatten().collect();
        let source = match self.top_source {
            TopBlock::FromOutput => out.last(),
            _ => features.last(),
        };
        if let (Some((p6, p7)), Some(last)) = (&self.top, source) {
            let y6 = p6.forward(last)?;
            let y7 = p7.forward(&y6.relu()?)?;
            out.push(y6);
            out.push(y7);
        }
        Ok(out)
    }
}
