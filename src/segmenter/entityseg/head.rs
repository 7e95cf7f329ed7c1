//! The FCOS-style entity detection head (`det_head.fcos_head`: class, box and centerness
//! towers shared over P3 … P7, one class) and the controller (`controller`: PanopticFCN's
//! kernel head on the box tower with two coordinate channels) that predicts every location's
//! dynamic mask-head parameters.

use candle_core::{Device, Tensor};
use candle_nn::VarBuilder;

use super::config::EntitySegConfig;
use super::CONV;
use crate::error::Result;
use crate::nn::conv::{Conv2d, ConvShape, ConvWeights};
use crate::nn::conv_norm::{ConvGroupNorm, GroupNormSpec};

/// GroupNorm groups of the towers and the controller (detectron2's `get_norm("GN")`).
const GN_GROUPS: usize = 32;
/// `nn.GroupNorm`'s epsilon.
const GN_EPS: f64 = 1e-5;

/// The towers' and the controller's GroupNorm (detectron2's `get_norm("GN")`).
const GN: GroupNormSpec = GroupNormSpec {
    groups: GN_GROUPS,
    eps: GN_EPS,
};

/// `nn.Sequential` of `count` × (conv with bias, GroupNorm, ReLU): keys `{3i}` and `{3i+1}`.
fn tower(vb: &VarBuilder, count: usize, c: usize) -> Result<Vec<ConvGroupNorm>> {
    (0..count)
        .map(|i| {
            let shape = (ConvShape::same(c, c, 3), true);
            Ok(ConvGroupNorm::load(&vb.pp(3 * i), &vb.pp(3 * i + 1), shape, GN, CONV)?.with_relu())
        })
        .collect()
}

fn run(layers: &[ConvGroupNorm], x: &Tensor) -> Result<Tensor> {
    let mut y = x.clone();
    for l in layers {
        y = l.forward(&y)?;
    }
    Ok(y)
}

/// Head outputs of one level, `[n, ·, h, w]`.
#[derive(Debug, Clone)]
pub struct LevelOutput {
    /// Class logits `[n, 1, h, w]`.
    pub logits: Tensor,
    /// Distances to the box sides (left, top, right, bottom) in units of the level's stride,
    /// after the level's scale and ReLU, `[n, 4, h, w]`.
    pub bbox_reg: Tensor,
    /// Centerness logits `[n, 1, h, w]`.
    pub ctrness: Tensor,
    /// Dynamic mask-head parameters `[n, P, h, w]`.
    pub controller: Tensor,
}

/// `det_head.fcos_head` with the `controller`.
#[derive(Debug, Clone)]
pub struct EntityHead {
    share: Vec<ConvGroupNorm>,
    cls: Vec<ConvGroupNorm>,
    bbox: Vec<ConvGroupNorm>,
    cls_logits: Conv2d,
    bbox_pred: Conv2d,
    ctrness: Conv2d,
    scales: Vec<f32>,
    controller: Vec<ConvGroupNorm>,
    controller_out: Conv2d,
}

impl EntityHead {
    /// Loads `fcos_head` from `det` (`det_head.fcos_head`) and the controller from `ctrl`
    /// (`controller`).
    pub fn load(det: &VarBuilder, ctrl: &VarBuilder, cfg: &EntitySegConfig) -> Result<Self> {
        let c = cfg.fpn_out_channels;
        let f = &cfg.fcos;
        let no_bias = |name: &str, c_out: usize| -> Result<Conv2d> {
            let w = ConvWeights::load_without_bias(&det.pp(name), ConvShape::same(c, c_out, 3))?;
            Conv2d::new(w, CONV)
        };
        let scales = (0..f.fpn_strides.len())
            .map(|l| {
                let s = det.pp("scales").pp(l).get(1, "scale")?;
                Ok(s.to_vec1::<f32>()?[0])
            })
            .collect::<Result<Vec<f32>>>()?;
        let kh = ctrl.pp("kernel_head");
        let dim = cfg.kernel_head.convs_dim;
        let controller = (0..cfg.kernel_head.num_convs)
            .map(|k| {
                let vb = kh.pp(format!("kernel_head_head_{}", k + 1));
                let c_in = if k == 0 { c + 2 } else { dim };
                let shape = (ConvShape::same(c_in, dim, 3), false);
                Ok(ConvGroupNorm::load(&vb, &vb.pp("norm"), shape, GN, CONV)?.with_relu())
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(EntityHead {
            share: tower(&det.pp("share_tower"), f.num_share_convs, c)?,
            cls: tower(&det.pp("cls_tower"), f.num_cls_convs, c)?,
            bbox: tower(&det.pp("bbox_tower"), f.num_box_convs, c)?,
            cls_logits: Conv2d::load(&det.pp("cls_logits"), ConvShape::same(c, 1, 3), CONV)?,
            bbox_pred: no_bias("bbox_pred", 4)?,
            ctrness: no_bias("ctrness", 1)?,
            scales,
            controller,
            controller_out: Conv2d::load(
                &ctrl.pp("out_conv"),
                ConvShape::same(dim, cfg.num_dynamic_params(), 3),
                CONV,
            )?,
        })
    }

    /// Runs the head on P3 … P7.
    pub fn forward(&self, levels: &[Tensor]) -> Result<Vec<LevelOutput>> {
        levels
            .iter()
            .zip(&self.scales)
            .map(|(x, &scale)| {
                let x = run(&self.share, x)?;
                let cls = run(&self.cls, &x)?;
                let bbox = run(&self.bbox, &x)?;
                let with_coords = Tensor::cat(&[&bbox, &coord_channels(&bbox)?], 1)?;
                let controller = self
                    .controller_out
                    .forward(&run(&self.controller, &with_coords)?)?;
                Ok(LevelOutput {
                    logits: self.cls_logits.forward(&cls)?,
                    bbox_reg: (self.bbox_pred.forward(&bbox)? * scale as f64)?.relu()?,
                    ctrness: self.ctrness.forward(&bbox)?,
                    controller,
                })
            })
            .collect()
    }
}

/// `torch.linspace(-1, 1, n)` (computed from both ends, as PyTorch does).
fn linspace(n: usize) -> Vec<f32> {
    if n == 1 {
        return vec![-1.0];
    }
    let step = 2.0 / (n - 1) as f32;
    (0..n)
        .map(|i| {
            if i < n / 2 {
                -1.0 + step * i as f32
            } else {
                1.0 - step * (n - 1 - i) as f32
            }
        })
        .collect()
}

/// The kernel head's two coordinate channels for `x` `[n, c, h, w]`: the first varies along
/// the rows, the second along the columns, both from −1 to 1.
fn coord_channels(x: &Tensor) -> Result<Tensor> {
    let (n, _, h, w) = x.dims4()?;
    let dev: &Device = x.device();
    let rows = Tensor::from_vec(linspace(h), (h, 1), dev)?.broadcast_as((h, w))?;
    let cols = Tensor::from_vec(linspace(w), (1, w), dev)?.broadcast_as((h, w))?;
    Ok(Tensor::stack(&[rows, cols], 0)?
        .unsqueeze(0)?
        .broadcast_as((n, 2, h, w))?
        .contiguous()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linspace_is_symmetric_and_spans_minus_one_to_one() {
        let v = linspace(5);
        assert_eq!(v, vec![-1.0, -0.5, 0.0, 0.5, 1.0]);
        assert_eq!(linspace(1), vec![-1.0]);
        let c = coord_channels(
            &Tensor::zeros((1, 3, 2, 3), candle_core::DType::F32, &Device::Cpu).unwrap(),
        )
        .unwrap();
        let c: Vec<Vec<Vec<f32>>> = c.squeeze(0).unwrap().to_vec3().unwrap();
        assert_eq!(c[0], vec![vec![-1.0; 3], vec![1.0; 3]]);
        assert_eq!(c[1], vec![vec![-1.0, 0.0, 1.0]; 2]);
    }
}
