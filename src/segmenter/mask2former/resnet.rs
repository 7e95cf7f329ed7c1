//! ResNet backbone in the Hugging Face `ResNetBackbone` layout (`embedder.embedder`,
//! `encoder.stages.{s}.layers.{l}`), eval-mode BatchNorm; all four stages out. detectron2's
//! R50 (basic stem, stride in the 3x3 convolution, frozen BatchNorm) maps onto it.
//!
//! Kept here rather than in `nn::resnet` (the DEVA propagator's ResNet, being rewritten) until
//! the two can share one implementation.

use candle_core::{DType, Tensor};
use candle_nn::{BatchNorm, Conv2d, Conv2dConfig, Module, ModuleT, VarBuilder};

use super::config::ResNetBackboneConfig;
use crate::error::{Error, Result};

/// BatchNorm epsilon of PyTorch's default (and detectron2's FrozenBatchNorm2d).
const BN_EPS: f64 = 1e-5;

/// Convolution without bias followed by BatchNorm (`convolution`, `normalization`).
#[derive(Debug, Clone)]
struct ConvBn {
    conv: Conv2d,
    bn: BatchNorm,
}

impl ConvBn {
    fn new(c_in: usize, c_out: usize, k: usize, stride: usize, vb: VarBuilder) -> Result<Self> {
        let cfg = Conv2dConfig {
            padding: k / 2,
            stride,
            ..Default::default()
        };
        let norm = vb.pp("normalization");
        // The step counter is training state: Hugging Face ResNets carry it, detectron2's
        // frozen BatchNorm does not.
        if norm.contains_tensor("num_batches_tracked") {
            norm.get_unchecked_dtype("num_batches_tracked", DType::I64)?;
        }
        Ok(ConvBn {
            conv: candle_nn::conv2d_no_bias(c_in, c_out, k, cfg, vb.pp("convolution"))?,
            bn: candle_nn::batch_norm(c_out, BN_EPS, norm)?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(self.bn.forward_t(&self.conv.forward(x)?, false)?)
    }
}

/// A bottleneck block (1x1, 3x3 with the stride, 1x1 ×4) with an optional projection.
#[derive(Debug, Clone)]
struct Bottleneck {
    shortcut: Option<ConvBn>,
    layers: [ConvBn; 3],
}

impl Bottleneck {
    fn new(c_in: usize, c_out: usize, stride: usize, vb: VarBuilder) -> Result<Self> {
        let mid = c_out / 4;
        let shortcut = (c_in != c_out || stride != 1)
            .then(|| ConvBn::new(c_in, c_out, 1, stride, vb.pp("shortcut")))
            .transpose()?;
        let l = vb.pp("layer");
        Ok(Bottleneck {
            shortcut,
            layers: [
                ConvBn::new(c_in, mid, 1, 1, l.pp("0"))?,
                ConvBn::new(mid, mid, 3, stride, l.pp("1"))?,
                ConvBn::new(mid, c_out, 1, 1, l.pp("2"))?,
            ],
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = self.layers[0].forward(x)?.relu()?;
        let y = self.layers[1].forward(&y)?.relu()?;
        let y = self.layers[2].forward(&y)?;
        let s = match &self.shortcut {
            Some(s) => s.forward(x)?,
            None => x.clone(),
        };
        Ok((y + s)?.relu()?)
    }
}

/// ResNet backbone returning the outputs of the four stages (strides 4, 8, 16, 32).
#[derive(Debug, Clone)]
pub struct ResNetBackbone {
    stem: ConvBn,
    stages: Vec<Vec<Bottleneck>>,
}

impl ResNetBackbone {
    /// Loads the backbone from `vb` (the `model.pixel_level_module.encoder` level).
    pub fn new(cfg: &ResNetBackboneConfig, vb: VarBuilder) -> Result<Self> {
        if cfg.depths.len() != cfg.hidden_sizes.len() || cfg.depths.is_empty() {
            return Err(Error::invalid(format!(
                "ResNet backbone: {} depths for {} stage sizes",
                cfg.depths.len(),
                cfg.hidden_sizes.len()
            )));
        }
        let stem = ConvBn::new(3, cfg.embedding_size, 7, 2, vb.pp("embedder.embedder"))?;
        let mut c_in = cfg.embedding_size;
        let mut stages = Vec::with_capacity(cfg.depths.len());
        for (s, (&depth, &c_out)) in cfg.depths.iter().zip(&cfg.hidden_sizes).enumerate() {
            let vs = vb.pp(format!("encoder.stages.{s}.layers"));
            let mut blocks = Vec::with_capacity(depth);
            for l in 0..depth {
                let stride = if s > 0 && l == 0 { 2 } else { 1 };
                blocks.push(Bottleneck::new(c_in, c_out, stride, vs.pp(l.to_string()))?);
                c_in = c_out;
            }
            stages.push(blocks);
        }
        Ok(ResNetBackbone { stem, stages })
    }

    /// Feature maps of every stage, finest first.
    pub fn forward(&self, x: &Tensor) -> Result<Vec<Tensor>> {
        let x = self.stem.forward(x)?.relu()?;
        let mut x = x
            .pad_with_same(2, 1, 1)?
            .pad_with_same(3, 1, 1)?
            .max_pool2d_with_stride(3, 2)?;
        let mut out = Vec::with_capacity(self.stages.len());
        for stage in &self.stages {
            for block in stage {
                x = block.forward(&x)?;
            }
            out.push(x.clone());
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::Weights;
    use candle_core::Device;

    /// Hugging Face ResNet checkpoints carry BatchNorm step counters: the layout asks for one
    /// beside every running variance, so such files load strictly; the four maps have the
    /// stage widths at strides 4 to 32.
    #[test]
    fn batchnorm_step_counters_load_and_stages_have_their_strides() {
        let cfg = ResNetBackboneConfig {
            embedding_size: 8,
            hidden_sizes: vec![16, 16, 32, 32],
            depths: vec![2, 1, 1, 1],
        };
        let build = |vb: VarBuilder| ResNetBackbone::new(&cfg, vb);
        let layout = Weights::layout_of(build).unwrap();
        let names: Vec<&str> = layout.iter().map(|s| s.name.as_str()).collect();
        let vars: Vec<&&str> = names
            .iter()
            .filter(|n| n.ends_with(".running_var"))
            .collect();
        assert_eq!(
            vars.len(),
            1 + 3 * 5 + 4,
            "stem, bottleneck convs, shortcuts"
        );
        for v in vars {
            let counter = v.replace(".running_var", ".num_batches_tracked");
            assert!(names.contains(&counter.as_str()), "{counter}");
        }
        let net = Weights::synthetic(3, &Device::Cpu, build).unwrap();
        let x = Tensor::ones((1, 3, 64, 96), candle_core::DType::F32, &Device::Cpu).unwrap();
        let dims: Vec<Vec<usize>> = net
            .forward(&x)
            .unwrap()
            .iter()
            .map(|t| t.dims().to_vec())
            .collect();
        assert_eq!(
            dims,
            [
                [1, 16, 16, 24],
                [1, 16, 8, 12],
                [1, 32, 4, 6],
                [1, 32, 2, 3]
            ]
        );
    }
}
