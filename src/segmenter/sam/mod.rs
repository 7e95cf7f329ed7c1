//! Segment Anything (SAM, Kirillov et al. 2023): the network (ViT image encoders, prompt
//! encoder, mask decoder) loaded from official checkpoints, the prompted predictor, the
//! automatic mask generator, and the segmenters built on them.

pub mod amg;
mod attention;
mod auto;
mod config;
mod decoder;
mod embedding;
pub mod minisam;
mod model;
mod neck;
mod predictor;
mod prompt;
mod prompted;
mod regions;
mod rel_pos;
mod tiny_vit;
pub mod transform;
mod transformer;
mod vit;

pub use amg::AmgMask;
pub use auto::{masks_to_segmentation, untracked_points, SamAutoSegmenter};
pub use config::{SamConfig, SamVariant};
pub use decoder::DecoderConfig;
pub use embedding::ImageEmbedding;
pub use model::{EncoderConfig, SamArch, SamModel};
pub use predictor::{PointPrompt, Prediction, Prompt};
pub use prompt::PromptEmbeddings;
pub use prompted::{parse_boxes, ObjectPrompt, SamPromptSegmenter};
pub use tiny_vit::TinyVitConfig;
pub use transform::CoordScale;
pub use vit::VitConfig;
