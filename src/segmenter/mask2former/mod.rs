//! Mask2Former (Cheng et al. 2022, "Masked-attention Mask Transformer for Universal Image
//! Segmentation"): a backbone, a multi-scale deformable-attention pixel decoder and a
//! masked-attention transformer decoder whose queries each predict a class and a mask;
//! panoptic, instance and semantic post-processing turn them into segments.

pub mod config;
pub mod detectron2;
pub mod heads;
pub mod infer;
pub mod labels;
pub mod model;
pub mod pixel_decoder;
pub mod postprocess;
pub mod preprocess;
pub mod resnet;
mod segmenter;
pub mod spec;
pub mod transformer_decoder;

pub use config::{BackboneConfig, Mask2FormerConfig};
pub use detectron2::read_detectron2;
pub use infer::infer_config;
pub use labels::{Label, LabelSet};
pub use model::{Mask2Former, Mask2FormerOutput};
pub use segmenter::{Mask2FormerSegmenter, Mask2FormerSettings, Mask2FormerTask};
pub use spec::{Mask2FormerSpec, TaskName};
