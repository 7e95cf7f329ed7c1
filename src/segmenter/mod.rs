//! Image segmenters: anything that proposes non-overlapping segments on a single frame.

pub mod detections;
pub mod grounded;
pub mod mask2former;
pub mod masks;
pub mod saliency;
pub mod sam;
mod spec;

pub use detections::DetectionSegmenter;
pub use masks::MaskSegmenter;
pub use spec::{build, FolderSpec, PromptsOnly, SamBoxesSpec, SegmenterSpec};

use crate::error::Result;
use crate::mask::{BinaryMask, CategoryNames, Segmentation};
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

    /// Tells the segmenter the tracker's internal shorter side (`input.size`, -1 native), at
    /// which segmenters that look at tracked regions judge them. Does nothing by default.
    fn set_internal_size(&mut self, _size: i32) {}

    /// Checks the segmenter against the input's frame names before the first frame (a
    /// segmenter that reads per-frame files fails when none of them names a frame). Accepts
    /// anything by default.
    fn check_frames(&self, _frames: &[String]) -> Result<()> {
        Ok(())
    }

    /// The palette of given masks, so that outputs keep their colours. `None` by default.
    fn palette(&self) -> Result<Option<Vec<u8>>> {
        Ok(None)
    }

    /// Names of the category ids the segmenter writes, when it knows them (the text mode's
    /// phrases, a closed-world model's labels), for output labels and JSON. Empty by default.
    fn category_names(&self) -> CategoryNames {
        CategoryNames::new()
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

    /// Checks, before any frame is segmented, what can be known in advance for frames of
    /// `width × height` (for example that precomputed masks have that size).
    fn check_frame_size(&self, _width: usize, _height: usize) -> Result<()> {
        Ok(())
    }
}
