//! Class-agnostic propagators: carry object masks from frame to frame.

pub mod deva;
pub mod flow;
mod spec;
mod static_motion;

pub use flow::FlowPropagator;
pub use spec::{build, DevaSpec, PropagatorSpec};
pub use static_motion::StaticPropagator;

use crate::error::Result;
use crate::mask::{ObjectId, ObjectProbs};
use crate::video::Frame;

/// Carries object masks through time with a memory of past frames.
///
/// All frames passed in are at the tracker's internal resolution, and all returned
/// probabilities have that frame's size. Per-frame work (image features) may be cached by
/// [`Frame::index`] until [`release_frame`](Propagator::release_frame).
pub trait Propagator {
    /// Short name for logs and errors.
    fn name(&self) -> &str;

    /// The tracked objects, in channel order.
    fn objects(&self) -> &[ObjectId];

    /// Tells the propagator the video's length when known (the DEVA memory decides from it
    /// whether to count long-term usage). Does nothing by default.
    fn set_video_length(&mut self, _frames: Option<usize>) {}

    /// Whether memory holds at least one frame.
    fn has_memory(&self) -> bool;

    /// Predicts the tracked objects on `frame` from memory and the previous frame's masks.
    /// Without memory the result is background everywhere.
    fn propagate(&mut self, frame: &Frame) -> Result<ObjectProbs>;

    /// Records the final masks of `frame`: they become the previous-frame masks of the next
    /// propagation and, when `memorize` is set, are written to memory. Ids not yet tracked
    /// become new objects (added together); every tracked object must be present.
    fn update(&mut self, frame: &Frame, masks: &ObjectProbs, memorize: bool) -> Result<()>;

    /// Stops tracking `ids` and purges everything stored about them.
    fn remove_objects(&mut self, ids: &[ObjectId]) -> Result<()>;

    /// Projects `masks` of frame `src` onto frame `dst` through a temporary one-frame memory,
    /// leaving the tracker's memory and state untouched. The result has the ids of `masks`.
    fn align(&mut self, src: &Frame, masks: &ObjectProbs, dst: &Frame) -> Result<ObjectProbs>;

    /// Drops whatever was cached for frame `index`.
    fn release_frame(&mut self, index: usize);

    /// Forgets everything: objects, memory, state and cached frames.
    fn reset(&mut self);
}
