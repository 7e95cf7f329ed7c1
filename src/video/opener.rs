//! Opening a path as a [`FrameSource`]: a folder of frames or a video file.

use super::ffmpeg::VideoFileSource;
use super::folder::FolderSource;
use super::source::FrameSource;
use crate::error::{Error, Result};
use std::path::Path;

/// File extensions (lower case) read as video files through ffmpeg.
pub const VIDEO_EXTENSIONS: [&str; 6] = ["mp4", "avi", "mkv", "webm", "mov", "m4v"];

/// Opens `path` as a frame source: a folder of JPEG/PNG frames, or a video file
/// (`mp4`, `avi`, `mkv`, `webm`, `mov`, `m4v`) decoded by the system's ffmpeg.
pub fn open(path: &Path) -> Result<Box<dyn FrameSource>> {
    if path.is_dir() {
        return Ok(Box::new(FolderSource::open(path)?));
    }
    if !path.exists() {
        return Err(Error::io(
            path,
            std::io::Error::new(std::io::ErrorKind::NotFound, "no such file or folder"),
        ));
    }
    if is_video_file(path) {
        return Ok(Box::new(VideoFileSource::open(path)?));
    }
    Err(Error::invalid(format!(
        "{}: not a folder of frames or a video file (expected a folder or one of: {})",
        path.display(),
        VIDEO_EXTENSIONS.join(", ")
    )))
}

/// Whether `path` has a video file extension.
pub fn is_video_file(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| VIDEO_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// The name of a video for output paths: the folder name, or the file name without extension.
pub fn video_name(path: &Path) -> String {
    let p = if path.is_dir() {
        path.file_name()
    } else {
        path.file_stem()
    };
    p.map(|s| s.to_string_lossy().into_owned())
        .filter(|s| !s.is_empty() && s != "." && s != "..")
        .unwrap_or_else(|| "video".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_readers_by_path() {
        let dir = tempfile::tempdir().unwrap();
        assert!(is_video_file(Path::new("a/b.MP4")));
        assert!(!is_video_file(Path::new("a/b.jpg")));
        assert_eq!(video_name(Path::new("x/clip.webm")), "clip");
        assert_eq!(
            video_name(dir.path()),
            dir.path().file_name().unwrap().to_str().unwrap()
        );

        let missing = dir.path().join("nothing.mp4");
        let e = open(&missing).err().unwrap().to_string();
        assert!(e.contains("nothing.mp4"), "{e}");

        let text = dir.path().join("notes.txt");
        std::fs::write(&text, "x").unwrap();
        let e = open(&text).err().unwrap().to_string();
        assert!(e.contains("notes.txt") && e.contains("mp4"), "{e}");
    }
}
