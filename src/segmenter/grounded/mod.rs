//! Text-prompted segmentation: Grounding-DINO (open-set detection from a text prompt) in
//! candle, and DEVA's text mode that turns its boxes into SAM masks.
//!
//! The detector follows Hugging Face `GroundingDinoForObjectDetection`: a Swin backbone
//! ([`crate::nn::swin`]), a BERT text encoder with phrase-block attention, a feature enhancer
//! with image-text fusion and multi-scale deformable attention
//! ([`crate::nn::deform_attn`]), two-stage query selection, a decoder with iterative box
//! refinement and a contrastive class head.

pub mod config;
pub mod decoder;
pub mod encoder;
pub mod geometry;
pub mod model;
pub mod postprocess;
pub mod preprocess;
pub mod segmenter;
pub mod text;
pub mod weights;

pub use config::{BertConfig, BertMaskMode, GroundingDinoConfig};
pub use model::{GroundingDino, GroundingDinoOutput};
pub use postprocess::{post_process, Detection};
pub use preprocess::{preprocess, PixelBatch, ResizeRule};
pub use segmenter::{
    split_prompt, Caption, GroundedSam, TextDetection, TextModeConfig, TextSpec, DEFAULT_GDINO,
    DEFAULT_GDINO_FILES,
};
pub use text::{phrase_masks, Bert, TextTokenizer, TokenBatch};
