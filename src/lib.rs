//! deva: decoupled open-world video segmentation ("track anything").
//!
//! An image segmenter proposes segments on some frames; a class-agnostic propagator carries
//! them through time; bi-directional propagation (in-clip consensus, then merging with what was
//! propagated) joins the two. Data flows one way:
//! frames → segmenter → consensus → merge → memory → outputs.
//!
//! Components are described by specs (a `[segmenter]` / `[propagator]` section of a config
//! file, or built in code) and turned into trait objects by [`segmenter::build`] and
//! [`propagator::build`]; a [`Tracker`] runs them over frames, and objects can be given on
//! any frame from memory with [`Tracker::add_prompt`]:
//!
//! ```
//! use deva::config::Temporal;
//! use deva::mask::IdMap;
//! use deva::{propagator, segmenter, Config, Frame, ModelStore, Prompt, PropagatorSpec};
//! use deva::{Segmentation, SegmenterSpec, Tracker};
//!
//! # fn main() -> deva::Result<()> {
//! let mut config = Config::default();
//! config.tracker.temporal = Temporal::Vos; // given objects are followed exactly
//! config.propagator = PropagatorSpec::Static; // weight-free: masks stay in place
//! let store = ModelStore::new(std::env::temp_dir())?; // where named models would be
//! let device = candle_core::Device::Cpu;
//! let seg = segmenter::build(&SegmenterSpec::Prompts, &store, &device)?;
//! let prop = propagator::build(&config.propagator, &store, &device)?;
//! let mut tracker = Tracker::new(&config, seg, prop)?;
//!
//! // Object 7 covers the right half of frame 0.
//! let mask = IdMap::from_vec(4, 2, vec![0, 0, 7, 7, 0, 0, 7, 7])?;
//! tracker.add_prompt(0, Prompt::Masks(Segmentation::from_map(mask.clone())))?;
//! for t in 0..3 {
//!     let frame = Frame::new(t, format!("{t:05}"), image::RgbImage::new(4, 2));
//!     for done in tracker.step(frame)? {
//!         assert_eq!(done.segmentation().map, mask);
//!     }
//! }
//! tracker.finish()?;
//! # Ok(())
//! # }
//! ```

pub mod config;
pub mod consensus;
pub mod dataset;
pub mod diagnostics;
pub mod error;
pub mod eval;
pub mod fsutil;
pub mod heap;
pub mod imageio;
pub mod mask;
pub mod merge;
pub mod models;
pub mod nn;
pub mod objects;
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
