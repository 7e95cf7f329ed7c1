//! Where frames come from: the [`FrameSource`] trait.

use super::Frame;
use crate::error::Result;

/// A stream of frames in display order, all of one size, numbered from 0.
///
/// The iterator yields `Err` for a frame that cannot be read; the error names the file.
pub trait FrameSource: Iterator<Item = Result<Frame>> {
    /// The number of frames, when known in advance.
    fn frame_count(&self) -> Option<usize>;

    /// Frames per second, when the source has a rate (video files).
    fn fps(&self) -> Option<f64>;
}
