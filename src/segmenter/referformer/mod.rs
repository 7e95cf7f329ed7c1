//! Referring segmentation: ReferFormer (Wu et al., CVPR 2022; official code wjn922/ReferFormer)
//! in candle, used as DEVA's image-level segmenter for referring expressions.
//!
//! The network follows the official `models/referformer.py`: a ResNet (`models/backbone.py`)
//! or Swin (`models/swin_transformer.py`, Swin-T/S/B/L window 7, all four stage outputs normed,
//! read in the original key layout [`crate::nn::swin::Layout::Official`]) backbone, chosen by
//! the checkpoint's keys, with the shifted sine position embedding; the last three backbone
//! maps plus one downsampled extra level make the transformer's four feature levels
//! (`num_feature_levels` 4, the official default) and the first map feeds the cross-modal
//! FPN; a RoBERTa text encoder ([`text`]) whose words and sentence feature are resized to the
//! transformer width, an early vision-language fusion of every
//! feature level, a deformable transformer ([`crate::nn::deform_attn`]) whose decoder queries
//! start from the sentence feature and refine their boxes layer by layer, class and box heads,
//! a cross-modal FPN ([`fpn`]) and a dynamic mask head whose convolution weights each query
//! generates.
//!
//! It runs on one frame at a time (`num_frames` = 1). DEVA uses ReferFormer as an image-level
//! model: the offline schedule runs it on uniformly sampled key frames only, scores them, and
//! the propagator carries the chosen mask through the video, so no clip of neighbouring frames
//! is ever given to it. With one frame every `(b t)` rearrangement of the official code is the
//! identity, and the Ref-COCO image checkpoints were trained that way.
//!
//! Video-Swin (`models/video_swin_transformer.py`) is not built. DEVA's documentation
//! (`docs/EVALUATION.md`) links ReferFormer for Ref-DAVIS and Ref-YouTube-VOS without naming a
//! checkpoint, and DEVA's code only reads precomputed masks. ReferFormer's model zoo reports
//! Ref-DAVIS with R50, Swin-L and Video-Swin-B models (all trained on Ref-YouTube-VOS), and
//! its strongest rows are Video-Swin-B's; which one made DEVA's detections is not recorded, so
//! reproducing the paper's referring numbers may need Video-Swin-B.

pub mod config;
pub mod fpn;
pub mod model;
pub mod segmenter;
pub mod text;
pub mod transformer;

pub use config::{ReferFormerConfig, VisualBackbone};
pub use model::{ReferFormer, ReferFormerOutput};
pub use segmenter::{ReferringSegmenter, ReferringSpec, Selection};
pub use text::Roberta;
