//! ResNet backbone in the Hugging Face `ResNetBackbone` layout (`embedder.embedder`,
//! `encoder.stages.{s}.layers.{l}`), eval-mode BatchNorm; all four stages out. detectron2's
//! R50 (basic stem, stride in the 3x3 convolution, frozen BatchNorm) maps onto it. The blocks
//! are `nn::resnet`'s, read in its [`Layout::HuggingFace`].

use candle_core::Tensor;
use candle_nn::VarBuilder;

use super::config::ResNetBackboneConfig;
use crate::error::{Error, Result};
use crate::nn::conv::ConvKernel;
use crate::nn::resnet::{Layout, Loading, ResNet};

/// The kernel of the convolutions (backbone and pixel decoder): the direct one (the parity
/// tests of `tests/mask2former` hold within their fixtures' tolerances with it).
pub(super) const CONV: ConvKernel = ConvKernel::Direct;

/// ResNet backbone returning the outputs of the four stages (strides 4, 8, 16, 32).
#[derive(Debug, Clone)]
pub struct ResNetBackbone {
    body: ResNet,
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
        if let Some(c) = cfg.hidden_sizes.iter().find(|&&c| c % 4 != 0) {
            return Err(Error::invalid(format!(
                "ResNet backbone: stage width {c} is not a multiple of 4 (bottleneck expansion)"
            )));
        }
        let how = Loading {
            layout: Layout::HuggingFace,
            kernel: CONV,
        };
        let stages: Vec<_> = cfg
            .depths
            .iter()
            .copied()
            .zip(cfg.hidden_sizes.iter().copied())
            .collect();
        let stage_vb = |s: usize| vb.pp(format!("encoder.stages.{s}.layers"));
        let stem_vb = vb.pp("embedder.embedder");
        let body = ResNet::load_bottlenecks(
            &stem_vb,
            stage_vb,
            cfg.embedding_size,
            &stages,
            |_| None,
            how,
        )?;
        Ok(ResNetBackbone { body })
    }

    /// Feature maps of every stage, finest first.
    pub fn forward(&self, x: &Tensor) -> Result<Vec<Tensor>> {
        self.body.forward(x)
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
