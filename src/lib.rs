//! deva: decoupled open-world video segmentation ("track anything").
//!
//! An image segmenter proposes segments on some frames; a class-agnostic propagator carries
//! them through time; bi-directional propagation (in-clip consensus, then merging with what was
//! propagated) joins the two. Data flows one way:
//! frames → segmenter → consensus → merge → memory → outputs.

pub mod config;
pub mod consensus;
pub mod error;
pub mod eval;
pub mod fsutil;
pub mod imageio;
pub mod mask;
pub mod merge;
pub mod models;
pub mod nn;
pub mod objects;
pub mod onnx;
pub mod output;
pub mod overlap;
pub mod propagator;
pub mod refine;
pub mod segmenter;
pub mod tracker;
pub mod video;

pub use config::Config;
pub use error::{Error, Result};
pub use mask::Segmentation;
pub use models::ModelStore;
pub use propagator::{Propagator, PropagatorSpec};
pub use segmenter::{ImageSegmenter, SegmenterSpec};
pub use tracker::{Prompt, TrackedFrame, Tracker};
pub use video::Frame;
