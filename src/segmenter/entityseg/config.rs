//! EntitySeg hyper-parameters: the detectron2 config keys of `EntityFPN` (`MODEL.RESNETS` or
//! `MODEL.SWINT`, `MODEL.FPN`, `MODEL.FCOS`, `MODEL.KERNEL_HEAD`, `MODEL.CONDINST`, `INPUT`),
//! with the defaults of the published R50 configuration (`configs/entity_r50_*.yaml` on top of
//! `add_entity_config`).

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::nn::resnet::Detectron2ResNetConfig;
use crate::nn::swin::SwinConfig;

/// FCOS detection head and proposal settings (`MODEL.FCOS`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct FcosConfig {
    /// Convolutions of the classification tower.
    pub num_cls_convs: usize,
    /// Convolutions of the box tower.
    pub num_box_convs: usize,
    /// Convolutions shared before both towers.
    pub num_share_convs: usize,
    /// Strides of P3 … P7.
    pub fpn_strides: Vec<usize>,
    /// Class probability a location needs to be a candidate (`INFERENCE_TH_TEST`).
    pub inference_threshold: f32,
    /// Candidates kept per level, best first (`PRE_NMS_TOPK_TEST`).
    pub pre_nms_topk: usize,
    /// Proposals kept after NMS (`POST_NMS_TOPK_TEST`).
    pub post_nms_topk: usize,
    /// IoU above which NMS suppresses a box (`NMS_TH`).
    pub nms_threshold: f32,
    /// Threshold the product of class and centerness probabilities instead of the class
    /// probability alone (`THRESH_WITH_CTR`).
    pub thresh_with_ctr: bool,
}

impl Default for FcosConfig {
    fn default() -> Self {
        FcosConfig {
            num_cls_convs: 4,
            num_box_convs: 4,
            num_share_convs: 0,
            fpn_strides: vec![8, 16, 32, 64, 128],
            inference_threshold: 0.05,
            pre_nms_topk: 1000,
            post_nms_topk: 100,
            nms_threshold: 0.6,
            thresh_with_ctr: false,
        }
    }
}

/// The controller that predicts each location's dynamic mask-head parameters
/// (`MODEL.KERNEL_HEAD`, PanopticFCN's kernel head with coordinate channels).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct KernelHeadConfig {
    /// Channels of its convolutions.
    pub convs_dim: usize,
    /// Number of 3×3 convolution + GroupNorm + ReLU layers.
    pub num_convs: usize,
}

impl Default for KernelHeadConfig {
    fn default() -> Self {
        KernelHeadConfig {
            convs_dim: 256,
            num_convs: 3,
        }
    }
}

/// The mask branch over P3 … P5 (`MODEL.CONDINST.MASK_BRANCH`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MaskBranchConfig {
    /// Channels of the refine and tower convolutions.
    pub channels: usize,
    /// Tower convolutions before the 1×1 output.
    pub num_convs: usize,
    /// Mask feature channels.
    pub out_channels: usize,
}

impl Default for MaskBranchConfig {
    fn default() -> Self {
        MaskBranchConfig {
            channels: 128,
            num_convs: 4,
            out_channels: 8,
        }
    }
}

/// The dynamic (per-entity) mask head (`MODEL.CONDINST.MASK_HEAD`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MaskHeadConfig {
    /// Channels of its hidden 1×1 layers.
    pub channels: usize,
    /// Number of 1×1 layers.
    pub num_layers: usize,
}

impl Default for MaskHeadConfig {
    fn default() -> Self {
        MaskHeadConfig {
            channels: 8,
            num_layers: 3,
        }
    }
}

/// The whole `EntityFPN` (ResNet or Swin + FPN) configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EntitySegConfig {
    /// The ResNet (used when `swin` is absent).
    pub resnet: Detectron2ResNetConfig,
    /// The Swin backbone (`MODEL.SWINT`, in [`SwinConfig`]'s spelling: output stages
    /// `stage1` … `stage4` are detectron2's `stage2` … `stage5`). When absent,
    /// [`super::EntitySeg::load`] reads it from an original-layout Swin checkpoint's shapes.
    pub swin: Option<SwinConfig>,
    /// FPN channels (`MODEL.FPN.OUT_CHANNELS`).
    pub fpn_out_channels: usize,
    /// Detection head.
    pub fcos: FcosConfig,
    /// Controller.
    pub kernel_head: KernelHeadConfig,
    /// Mask branch.
    pub mask_branch: MaskBranchConfig,
    /// Dynamic mask head.
    pub mask_head: MaskHeadConfig,
    /// Stride of the mask head's output (`MODEL.CONDINST.MASK_OUT_STRIDE`).
    pub mask_out_stride: usize,
    /// BGR pixel mean (`MODEL.PIXEL_MEAN`).
    pub pixel_mean: [f32; 3],
    /// BGR pixel standard deviation (`MODEL.PIXEL_STD`).
    pub pixel_std: [f32; 3],
    /// Shorter side of the network input (`INPUT.MIN_SIZE_TEST`).
    pub min_size_test: usize,
    /// Bound on the longer side (`INPUT.MAX_SIZE_TEST`).
    pub max_size_test: usize,
}

impl Default for EntitySegConfig {
    fn default() -> Self {
        EntitySegConfig {
            resnet: Detectron2ResNetConfig {
                depth: 50,
                stem_out_channels: 64,
                res2_out_channels: 256,
                width_per_group: 64,
                stride_in_1x1: true,
                deform_on_per_stage: [false; 4],
                deform_modulated: false,
                deform_num_groups: 1,
            },
            swin: None,
            fpn_out_channels: 256,
            fcos: FcosConfig::default(),
            kernel_head: KernelHeadConfig::default(),
            mask_branch: MaskBranchConfig::default(),
            mask_head: MaskHeadConfig::default(),
            mask_out_stride: 4,
            pixel_mean: [103.53, 116.28, 123.675],
            pixel_std: [1.0, 1.0, 1.0],
            min_size_test: 800,
            max_size_test: 1333,
        }
    }
}

/// Sizes of the mask-generation relative-coordinate normalisation per FPN level (the mask
/// head's `sizes_of_interest` buffer).
pub const SIZES_OF_INTEREST: [f32; 5] = [64.0, 128.0, 256.0, 512.0, 1024.0];

impl EntitySegConfig {
    /// Reads a JSON file of this struct's fields (missing fields keep the R50 defaults).
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let cfg: Self = serde_json::from_str(&text).map_err(|e| Error::parse(path, e))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Number of dynamic parameters per entity: `(in + 2)·c + c` for the first layer, `c·c + c`
    /// for hidden ones and `c + 1` for the last.
    pub fn num_dynamic_params(&self) -> usize {
        let (c, n) = (self.mask_head.channels, self.mask_head.num_layers);
        let first = (self.mask_branch.out_channels + 2) * c + c;
        let hidden = n.saturating_sub(2) * (c * c + c);
        first + hidden + c + 1
    }

    /// Checks the sizes the architecture relies on; messages name the field.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(format!("entityseg: {m}")));
        if self.fcos.fpn_strides.len() != 5 {
            return bad(format!(
                "fcos.fpn_strides has {} levels, expected 5 (P3 … P7)",
                self.fcos.fpn_strides.len()
            ));
        }
        if self.mask_head.num_layers < 2 {
            return bad("mask_head.num_layers must be at least 2".into());
        }
        for (name, c) in [
            ("fpn_out_channels", self.fpn_out_channels),
            ("kernel_head.convs_dim", self.kernel_head.convs_dim),
        ] {
            if c == 0 || !c.is_multiple_of(32) {
                return bad(format!(
                    "{name} = {c} must be a multiple of 32 (GroupNorm groups)"
                ));
            }
        }
        if self.mask_out_stride == 0 || !8usize.is_multiple_of(self.mask_out_stride) {
            return bad(format!(
                "mask_out_stride = {} must divide the mask branch stride 8",
                self.mask_out_stride
            ));
        }
        if let Some(swin) = &self.swin {
            swin.validate()?;
            let stages = swin
                .out_features
                .iter()
                .map(|n| swin.stage_index(n))
                .collect::<Result<Vec<_>>>()?;
            if !stages.windows(2).all(|w| w[1] == w[0] + 1) || stages.is_empty() {
                return bad(format!(
                    "swin.out_features {:?} must be consecutive stages, finest first (the FPN's inputs)",
                    swin.out_features
                ));
            }
        }
        if self.min_size_test == 0 || self.max_size_test < self.min_size_test {
            return bad("min_size_test must be positive and at most max_size_test".into());
        }
        Ok(())
    }
}
