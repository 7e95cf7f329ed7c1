//! The weight-free optical-flow propagator.

mod dis;
mod field;
mod plane;
mod variational;

pub use dis::{coarsest_level, dis_flow, Pyramid};
pub use field::FlowField;
pub use plane::Plane;
