//! Frames and where they come from: image folders, video files, and the internal resolution.

pub mod ffmpeg;
pub mod folder;
mod opener;
pub mod pillow;
mod resize;
mod source;
pub mod synthetic;

pub use ffmpeg::{VideoFileSource, VideoFileWriter};
pub use folder::FolderSource;
pub use opener::{is_video_file, open, video_name, VIDEO_EXTENSIONS};
pub use resize::{internal_size, resize_rgb};
pub use source::FrameSource;

use image::RgbImage;
use std::sync::Arc;

/// One video frame in 8-bit RGB. The pixels are shared: cloning a frame (and handing it to
/// outputs) never copies them.
#[derive(Debug, Clone)]
pub struct Frame {
    /// Position in the video, from 0.
    pub index: usize,
    /// Name used for output files (the source file stem, or a zero-padded index for videos).
    pub name: String,
    /// The pixels.
    pub image: Arc<RgbImage>,
}

impl Frame {
    /// Frame `index` called `name` with `image`.
    pub fn new(index: usize, name: impl Into<String>, image: RgbImage) -> Frame {
        Frame {
            index,
            name: name.into(),
            image: Arc::new(image),
        }
    }

    /// Width in pixels.
    pub fn width(&self) -> usize {
        self.image.width() as usize
    }

    /// Height in pixels.
    pub fn height(&self) -> usize {
        self.image.height() as usize
    }

    /// This frame resized to `width × height` (antialiased bilinear); same index and name.
    pub fn resized(&self, width: usize, height: usize) -> Frame {
        Frame {
            index: self.index,
            name: self.name.clone(),
            image: Arc::new(resize_rgb(&self.image, width, height)),
        }
    }
}
