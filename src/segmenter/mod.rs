//! Image segmenters: anything that proposes non-overlapping segments on a single frame.

pub mod detections;
pub mod grounded;
pub mod masks;
pub mod saliency;
pub mod sam;

pub use detections::DetectionSegmenter;
pub use masks::MaskSegmenter;

use crate::error::Result;
use crate::mask::{BinaryMask, Segmentation};
use crate::video::Frame;

/// How the tracker treats a segmenter's output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegmenterKind {
    /// Noisy proposals: denoised by the in-clip consensus and merged with propagation;
    /// unconfirmed objects are deleted.
    Proposals,
    /// Reference masks to follow exactly (semi-supervised VOS, box initialisation): given
    /// objects are added or overwritten on the frames that have them and never deleted.
    Reference,
}

/// Proposes segments on single frames, independently of time.
pub trait ImageSegmenter {
    /// Short name for logs and errors.
    fn name(&self) -> &str;

    /// How the tracker should treat the segments.
    fn kind(&self) -> SegmenterKind {
        SegmenterKind::Proposals
    }

    /// Segments `frame` (at its original resolution). `tracked`, when given, marks pixels that
    /// tracked objects already cover (same size as the frame), so that segmenters looking for
    /// new objects can skip them. Returns `None` when there is nothing for this frame (for
    /// example precomputed detections that skip it); otherwise the segmentation has the
    /// frame's size.
    fn segment(
        &mut self,
        frame: &Frame,
        tracked: Option<&BinaryMask>,
    ) -> Result<Option<Segmentation>>;
}
