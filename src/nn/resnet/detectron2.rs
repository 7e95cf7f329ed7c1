//! detectron2's `build_resnet_backbone` (`MODEL.RESNETS.*`): stem and stages `res2` …
//! `res5`, deformable 3×3 convolutions where `DEFORM_ON_PER_STAGE` says, frozen BatchNorm
//! folded.

use candle_nn::VarBuilder;

use super::{Deform, Layout, Loading, ResNet};
use crate::error::Result;
use crate::nn::conv::ConvKernel;
use crate::nn::weights::Weights;

/// `MODEL.RESNETS` settings of a detectron2 ResNet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Detectron2ResNetConfig {
    /// 50, 101 or 152 (bottleneck depths).
    pub depth: usize,
    /// `STEM_OUT_CHANNELS`.
    pub stem_out_channels: usize,
    /// `RES2_OUT_CHANNELS` (doubling per stage).
    pub res2_out_channels: usize,
    /// `WIDTH_PER_GROUP` (one group): the bottleneck width of `res2`, doubling per stage.
    pub width_per_group: usize,
    /// `STRIDE_IN_1X1`.
    pub stride_in_1x1: bool,
    /// `DEFORM_ON_PER_STAGE`: deformable 3×3 convolutions in `res2` … `res5`.
    #[serde(default)]
    pub deform_on_per_stage: [bool; 4],
    /// `DEFORM_MODULATED`: DCNv2 (offsets and a mask) rather than DCNv1.
    #[serde(default)]
    pub deform_modulated: bool,
    /// `DEFORM_NUM_GROUPS`.
    #[serde(default = "one")]
    pub deform_num_groups: usize,
}

fn one() -> usize {
    1
}

impl Detectron2ResNetConfig {
    /// Blocks per stage of the depth.
    pub fn blocks(&self) -> Result<[usize; 4]> {
        match self.depth {
            50 => Ok([3, 4, 6, 3]),
            101 => Ok([3, 4, 23, 3]),
            152 => Ok([3, 8, 36, 3]),
            d => Err(crate::Error::Config(format!(
                "resnet depth {d}: only the bottleneck depths 50, 101 and 152 are supported"
            ))),
        }
    }

    /// Output channels of `res2` … `res5`.
    pub fn out_channels(&self) -> [usize; 4] {
        [1, 2, 4, 8].map(|m| self.res2_out_channels * m)
    }

    /// This configuration with the depth and the deformable stages a checkpoint's keys under
    /// `prefix` (e.g. `backbone.bottom_up.`) show: the number of `res4` blocks (6, 23, 36 for
    /// depths 50, 101, 152), and per stage whether `resN.0.conv2_offset` exists, its output
    /// channels telling modulated (27 per deformable group) from plain (18) offsets (without
    /// deformable stages: detectron2's defaults, unmodulated, one group).
    pub fn read_from(self, w: &Weights, prefix: &str) -> Result<Self> {
        let depth = match w.count(&format!("{prefix}res4"), "conv1.weight") {
            6 => 50,
            23 => 101,
            36 => 152,
            n => {
                return Err(w.error(format!(
                    "{prefix}res4 has {n} blocks: not a ResNet-50, -101 or -152"
                )))
            }
        };
        let mut cfg = Detectron2ResNetConfig { depth, ..self };
        cfg.deform_on_per_stage =
            [2, 3, 4, 5].map(|s| w.contains(&format!("{prefix}res{s}.0.conv2_offset.weight")));
        // detectron2's defaults when no stage is deformable.
        (cfg.deform_modulated, cfg.deform_num_groups) = (false, 1);
        if let Some(s) = cfg.deform_on_per_stage.iter().position(|&d| d) {
            let key = format!("{prefix}res{}.0.conv2_offset.weight", s + 2);
            let c = w.dims(&key)?[0];
            (cfg.deform_modulated, cfg.deform_num_groups) = match c {
                c if c % 27 == 0 => (true, c / 27),
                c if c % 18 == 0 => (false, c / 18),
                c => return Err(w.error(format!("{key}: {c} offset channels"))),
            };
        }
        Ok(cfg)
    }
}

impl Detectron2ResNetConfig {
    /// Loads `stem.*` and `res2.*` … `res5.*` under `vb` (detectron2's `bottom_up`), computed
    /// by `kernel`: a [`ResNet`] whose outputs are `res2` … `res5` (strides 4 … 32).
    pub fn load(&self, vb: &VarBuilder, kernel: ConvKernel) -> Result<ResNet> {
        if self.res2_out_channels != 4 * self.width_per_group {
            return Err(crate::Error::Config(format!(
                "resnet: res2_out_channels {} must be 4 × width_per_group {}",
                self.res2_out_channels, self.width_per_group
            )));
        }
        let how = Loading {
            layout: Layout::Detectron2 {
                stride_in_1x1: self.stride_in_1x1,
            },
            kernel,
        };
        let stages: Vec<_> = self
            .blocks()?
            .into_iter()
            .zip(self.out_channels())
            .collect();
        let deform = |i: usize| {
            self.deform_on_per_stage[i].then_some(Deform {
                modulated: self.deform_modulated,
                groups: self.deform_num_groups,
            })
        };
        let stage_vb = |i: usize| vb.pp(format!("res{}", i + 2));
        ResNet::load_bottlenecks(
            &vb.pp("stem"),
            stage_vb,
            self.stem_out_channels,
            &stages,
            deform,
            how,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Tensor;
    use candle_core::{DType, Device};
    use candle_nn::VarMap;

    /// The kernel of these tests (EntitySeg's, the one user of detectron2's layout).
    const KERNEL: ConvKernel = ConvKernel::Direct;

    fn config(deform_on_per_stage: [bool; 4]) -> Detectron2ResNetConfig {
        Detectron2ResNetConfig {
            depth: 50,
            stem_out_channels: 4,
            res2_out_channels: 8,
            width_per_group: 2,
            stride_in_1x1: true,
            deform_on_per_stage,
            deform_modulated: true,
            deform_num_groups: 1,
        }
    }

    /// A DCNv2 stage whose offset branch predicts zero offsets and mask logits `c` is the plain
    /// stage with its 3×3 weights scaled by sigmoid(c): this pins the keys (`conv2_offset`,
    /// `conv2`, `conv2.norm`) and which third of the prediction is the mask.
    #[test]
    fn zero_offset_dcnv2_is_a_scaled_plain_convolution() {
        let dev = Device::Cpu;
        let vars = VarMap::new();
        let vb = VarBuilder::from_varmap(&vars, DType::F32, &dev);
        config([false, true, false, false])
            .load(&vb, KERNEL)
            .unwrap();
        let c = 1.3f64;
        for (name, var) in vars.data().lock().unwrap().iter() {
            let shape = var.shape().clone();
            let t = if name.contains("conv2_offset.weight") {
                Tensor::zeros(shape, DType::F32, &dev)
            } else if name.contains("conv2_offset.bias") {
                let n = shape.elem_count();
                let v: Vec<f32> = (0..n)
                    .map(|i| if i < 2 * n / 3 { 0.0 } else { c as f32 })
                    .collect();
                Tensor::from_vec(v, shape, &dev)
            } else if name.ends_with("running_var") {
                Tensor::rand(0.5f32, 1.5, shape, &dev)
            } else {
                Tensor::randn(0f32, 0.3, shape, &dev)
            };
            var.set(&t.unwrap()).unwrap();
        }
        let deformable = config([false, true, false, false])
            .load(&vb, KERNEL)
            .unwrap();
        let s = 1.0 / (1.0 + (-c).exp());
        for (name, var) in vars.data().lock().unwrap().iter() {
            if name.starts_with("res3.") && name.ends_with("conv2.weight") {
                var.set(&(var.as_tensor() * s).unwrap()).unwrap();
            }
        }
        let plain = config([false; 4]).load(&vb, KERNEL).unwrap();
        let x = Tensor::randn(0f32, 1.0, (1, 3, 64, 48), &dev).unwrap();
        let (a, b) = (deformable.forward(&x).unwrap(), plain.forward(&x).unwrap());
        for (a, b) in a.iter().zip(&b) {
            let scale = crate::nn::max_abs_diff(b, &b.zeros_like().unwrap());
            let d = crate::nn::max_abs_diff(a, b);
            assert!(scale > 0.0 && d <= 1e-5 * scale.max(1.0), "{d} of {scale}");
        }
    }

    /// Depth and deformable stages are read back from a checkpoint's keys.
    #[test]
    fn depth_and_deformable_stages_are_read_from_the_keys() {
        let dev = Device::Cpu;
        for (depth, deform, modulated, groups) in [
            (101, [false, true, true, true], true, 1),
            (50, [false; 4], false, 1),
            (50, [false, false, true, false], false, 2),
        ] {
            let want = Detectron2ResNetConfig {
                depth,
                deform_on_per_stage: deform,
                deform_modulated: modulated,
                deform_num_groups: groups,
                ..config([false; 4])
            };
            let vars = VarMap::new();
            let vb = VarBuilder::from_varmap(&vars, DType::F32, &dev);
            want.load(&vb.pp("backbone.bottom_up"), KERNEL).unwrap();
            let named = vars
                .data()
                .lock()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
                .collect();
            let w = Weights::from_tensors("r.safetensors", named).unwrap();
            let got = config([false; 4])
                .read_from(&w, "backbone.bottom_up.")
                .unwrap();
            assert_eq!(got, want);
        }
    }
}
