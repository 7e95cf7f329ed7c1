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

    /// Checks what can be checked before decoding (a folder: every file's image header, one
    /// size for all, within [`MAX_PIXELS`](crate::imageio::MAX_PIXELS); a video: its probed
    /// size) and returns the frame size, so that a run fails before its first frame instead of
    /// part-way.
    fn preflight(&mut self) -> Result<(usize, usize)>;
}
