//! Referring segmentation: ReferFormer (Wu et al., CVPR 2022; official code wjn922/ReferFormer)
//! in candle, used as DEVA's image-level segmenter for referring expressions.
//!
//! The network follows the official `models/referformer.py`: a ResNet (`models/backbone.py`)
//! Swin (`models/swin_transformer.py`, Swin-T/S/B/L window 7, all four stage outputs normed,
//! read in the original key layout [`crate::nn::swin::Layout::Official`]) or Video-Swin
//! (`models/video_swin_transformer.py`, Video-Swin-T/S/B, [`crate::nn::swin::Layout::Video`],
//! recognised by its 5-D patch embedding) backbone, chosen by the checkpoint's keys, with the shifted sine position embedding; the last three backbone
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
//! Video-Swin on one frame. ReferFormer's model zoo reports Ref-DAVIS with R50, Swin-L and
//! Video-Swin-B models (trained on Ref-YouTube-VOS), its strongest rows Video-Swin-B's; DEVA's
//! documentation does not name the checkpoint behind its detections, so all three are read.
//! The official Video-Swin (`video_swin_{t,s,b}_p4w7`) has a temporal patch of 1 (its
//! `patch_size` is `(1, 4, 4)`; it sums Kinetics' `(2, 4, 4)` kernel over time when loading
//! them), so its checkpoints store a `[C, 3, 1, 4, 4]` kernel and every frame is embedded on
//! its own: with one frame the Conv3d is a 2D convolution. Its `(8, 7, 7)` windows meet a
//! one-frame map, and the official code then shrinks the window on every axis whose side is
//! not larger than it, with no shift on that axis: the temporal window becomes 1 (no temporal
//! shift, no temporal mask region), and so does any spatial side of 7 or less (deep stages of
//! small inputs) instead of padding to a full window. The relative position bias of such a
//! shrunken window reads the first `n` rows and columns of the full `8·7·7` window's index
//! (tokens ordered frame, row, column), which is the right geometry only when the column
//! width stays 7; the port reads the same prefix (see [`crate::nn::swin`]). Its stage outputs
//! have no LayerNorm (the wrapper drops the final norm) and patch merging sits at
//! `downsamples.i`. A clip of several frames (temporal attention) is not built.

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
