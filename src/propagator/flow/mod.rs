//! The weight-free optical-flow propagator: runs the whole pipeline on a CPU with nothing
//! downloaded.
//!
//! - `dis`: dense optical flow by Dense Inverse Search (Kroeger et al., ECCV 2016) on a
//!   binomial image pyramid, with variational refinement (`variational`);
//! - `field`: flow fields and the forward–backward consistency check;
//! - `warp`: backward warping of soft masks;
//! - `anchor`: filling of occluded pixels, per-object colour models and the colour-guided
//!   filter that re-anchors masks to the new frame;
//! - [`FlowPropagator`]: the [`Propagator`](crate::propagator::Propagator) on top.

mod anchor;
mod config;
mod dis;
mod field;
mod plane;
mod propagator;
mod variational;
mod warp;

pub use anchor::ColorModel;
pub use config::FlowConfig;
pub use dis::{coarsest_level, dis_flow, Pyramid};
pub use field::FlowField;
pub use plane::Plane;
pub use propagator::FlowPropagator;
pub use warp::{splat_channels, warp_channels};
