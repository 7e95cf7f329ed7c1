//! Frames and where they come from: image folders, video files, and the internal resolution.

pub mod ffmpeg;
pub mod folder;
pub mod pillow;
mod resize;
mod source;
pub mod synthetic;

pub use ffmpeg::{VideoFileSource, VideoFileWriter};
pub use folder::FolderSource;
pub use resize::{internal_size, resize_rgb};
pub use source::{is_video_file, open, video_name, FrameSource, VIDEO_EXTENSIONS};

use image::RgbImage;

/// One video frame in 8-bit RGB.
#[derive(Debug, Clone)]
pub struct Frame {
    /// Position in the video, from 0.
    pub index: usize,
    /// Name used for output files (the source file stem, or a zero-padded index for videos).
    pub name: String,
    /// The pixels.
    pub image: RgbImage,
}

impl Frame {
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
            image: resize_rgb(&self.image, width, height),
        }
    }
}
