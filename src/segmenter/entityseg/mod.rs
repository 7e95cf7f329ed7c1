//! EntitySeg (Qi et al., "Open-world entity segmentation"; qqlu/Entity, `Entity/EntitySeg`,
//! the `EntityFPN` meta-architecture): class-agnostic entities for open-world tracking and
//! unsupervised VOS.
//!
//! The network is a detectron2 ResNet or a Swin Transformer with an FPN on its four stage
//! outputs (strides 4 … 32) and the P6/P7 top block (P6 from res5 for ResNet, from P5 for
//! Swin, as the official backbone builders do), an FCOS-style detection head with one class
//! on P3 … P7, a controller (PanopticFCN kernel head with coordinate channels) predicting each
//! location's dynamic mask-head parameters from the box tower, CondInst's mask branch on
//! P3 … P5 and the dynamic 1×1 mask head over the mask features and relative coordinates.
//!
//! Inference follows the official test path (`EntityFPN.forward` in eval mode with the
//! `configs/entity_r50_*.yaml` settings): detectron2's `DefaultPredictor` preprocessing (BGR,
//! shorter side 800 with the longer at most 1333, Pillow bilinear, padding to 32); candidates
//! with class probability > 0.05, at most 1000 per level, score √(class · centerness), NMS at
//! IoU 0.6, the best 100 kept; masks thresholded at 0.5 after `aligned_bilinear` and a
//! bilinear resize to the frame; overlaps resolved in score order (every pixel to the best
//! entity covering it); entities whose exclusive part is a single row or column dropped; no
//! mask rescoring (`USE_MASK_RESCORE` is off in every published config). The segmenter then
//! keeps entities scoring at least `score_threshold` (default 0.2, the official demo's),
//! at most `max_entities`.
//!
//! Backbones: ResNet-50/101 (`entity_r50_*`, `entity_r101_1x`, `entity_r101_3x`, and
//! `entity_r101_dcnv2_3x` with modulated deformable convolutions in res3 … res5,
//! [`crate::nn::deform_conv`]; without a config file the depth and deformable stages are read
//! from the checkpoint) and Swin (`entity_swin_t_1x`: Swin-T; `entity_swin_lw7_1x`,
//! `entity_swin_lw7_3x`: Swin-L window 7), read in the original Swin key layout
//! ([`crate::nn::swin::Layout::Official`], `backbone.bottom_up.{patch_embed, layers, norm0 …
//! norm3}`; its `stage2` … `stage5` outputs are the FPN's inputs as in `MODEL.FPN.IN_FEATURES`,
//! each normed by its `norm{i}`, no absolute position embedding). A checkpoint with the Swin
//! patch embedding selects it and its sizes come from its shapes (or `config.swin`). The
//! deformable convolution is checked against `torchvision.ops.deform_conv2d` (the CPU
//! stand-in for detectron2's CUDA-only op); there is no end-to-end oracle fixture of the DCN
//! model yet. Out of reach for now: the MiT backbones (`entity_mit_*`).

pub mod config;
pub mod head;
pub mod mask_head;
pub mod model;
pub mod postprocess;
mod segmenter;

/// The kernel of the network's convolutions: the direct one (the parity tests of
/// `tests/entityseg.rs` hold within their fixtures' tolerances with it).
const CONV: crate::nn::conv::ConvKernel = crate::nn::conv::ConvKernel::Direct;

pub use config::EntitySegConfig;
pub use model::EntitySeg;
pub use segmenter::{EntitySegSegmenter, EntitySegSpec};
