//! Frames from a folder of JPEG/PNG images, taken in file-name order.

use super::source::FrameSource;
use super::Frame;
use crate::error::{Error, Result};
use crate::imageio::read_rgb;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Image extensions (lower case) accepted as frames.
pub const FRAME_EXTENSIONS: [&str; 3] = ["jpg", "jpeg", "png"];

/// A folder of frames: every non-hidden entry must be a JPEG or PNG file; frames are sorted
/// by file name and named by file stem. All frames must have the size of the first.
#[derive(Debug)]
pub struct FolderSource {
    files: Vec<PathBuf>,
    next: usize,
    first_size: Option<(u32, u32)>,
}

impl FolderSource {
    /// Lists the frames of `dir`; fails (naming the entry) on an empty folder, a non-image
    /// entry or two frames with the same stem.
    pub fn open(dir: &Path) -> Result<Self> {
        let files = list_frames(dir)?;
        Ok(FolderSource {
            files,
            next: 0,
            first_size: None,
        })
    }

    /// The frame files in order.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    fn read(&mut self, index: usize) -> Result<Frame> {
        let path = &self.files[index];
        let image = read_rgb(path)?;
        let size = image.dimensions();
        match self.first_size {
            None => self.first_size = Some(size),
            Some(first) if first != size => {
                return Err(Error::invalid(format!(
                    "{}: frame is {}x{} but the first frame {} is {}x{} (all frames of a video must have one size)",
                    path.display(),
                    size.0,
                    size.1,
                    self.files[0].display(),
                    first.0,
                    first.1
                )))
            }
            Some(_) => {}
        }
        Ok(Frame {
            index,
            name: file_stem(path),
            image: image.into(),
        })
    }
}

impl Iterator for FolderSource {
    type Item = Result<Frame>;

    fn next(&mut self) -> Option<Result<Frame>> {
        if self.next >= self.files.len() {
            return None;
        }
        let i = self.next;
        self.next += 1;
        Some(self.read(i))
    }
}

impl FrameSource for FolderSource {
    fn frame_count(&self) -> Option<usize> {
        Some(self.files.len())
    }

    fn fps(&self) -> Option<f64> {
        None
    }
}

/// The file name without its extension.
pub(crate) fn file_stem(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Whether a folder entry is hidden (starts with a dot) and should be ignored.
pub(crate) fn is_hidden(path: &Path) -> bool {
    path.file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with('.'))
}

/// The lower-case extension of `path`, if any.
pub(crate) fn extension(path: &Path) -> Option<String> {
    path.extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
}

/// The non-hidden entries of `dir`, sorted by file name.
pub(crate) fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>> {
    let read = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    let mut entries = Vec::new();
    for entry in read {
        let path = entry.map_err(|e| Error::io(dir, e))?.path();
        if !is_hidden(&path) {
            entries.push(path);
        }
    }
    entries.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    Ok(entries)
}

fn list_frames(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = sorted_entries(dir)?;
    let mut stems: HashMap<String, &PathBuf> = HashMap::new();
    for path in &entries {
        let is_image = path.is_file()
            && extension(path).is_some_and(|e| FRAME_EXTENSIONS.contains(&e.as_str()));
        if !is_image {
            return Err(Error::invalid(format!(
                "{}: not a JPEG or PNG frame (a frame folder must hold only .jpg, .jpeg or .png files)",
                path.display()
            )));
        }
        if let Some(other) = stems.insert(file_stem(path), path) {
            return Err(Error::invalid(format!(
                "{} and {} are two frames with the same name",
                other.display(),
                path.display()
            )));
        }
    }
    if entries.is_empty() {
        return Err(Error::invalid(format!(
            "{}: no frames (expected .jpg, .jpeg or .png files)",
            dir.display()
        )));
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{Rgb, RgbImage};

    fn save(dir: &Path, name: &str, w: u32, h: u32, v: u8) {
        RgbImage::from_pixel(w, h, Rgb([v, v, v]))
            .save(dir.join(name))
            .unwrap();
    }

    #[test]
    fn reads_frames_in_name_order_and_skips_hidden_files() {
        let dir = tempfile::tempdir().unwrap();
        save(dir.path(), "b.png", 4, 3, 20);
        save(dir.path(), "a.png", 4, 3, 10);
        save(dir.path(), "c.jpg", 4, 3, 200);
        std::fs::write(dir.path().join(".DS_Store"), b"junk").unwrap();
        let src = FolderSource::open(dir.path()).unwrap();
        assert_eq!(src.frame_count(), Some(3));
        let frames: Vec<Frame> = src.map(|f| f.unwrap()).collect();
        let names: Vec<&str> = frames.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["a", "b", "c"]);
        assert_eq!(
            frames.iter().map(|f| f.index).collect::<Vec<_>>(),
            [0, 1, 2]
        );
        assert_eq!(frames[1].image.get_pixel(2, 1), &Rgb([20, 20, 20]));
        assert_eq!((frames[2].width(), frames[2].height()), (4, 3));
    }

    #[test]
    fn bad_folders_name_the_culprit() {
        let dir = tempfile::tempdir().unwrap();
        let e = FolderSource::open(dir.path()).unwrap_err().to_string();
        assert!(e.contains("no frames"), "{e}");

        save(dir.path(), "0.png", 4, 3, 0);
        std::fs::write(dir.path().join("readme.txt"), b"hi").unwrap();
        let e = FolderSource::open(dir.path()).unwrap_err().to_string();
        assert!(e.contains("readme.txt"), "{e}");
        std::fs::remove_file(dir.path().join("readme.txt")).unwrap();

        save(dir.path(), "0.jpg", 4, 3, 0);
        let e = FolderSource::open(dir.path()).unwrap_err().to_string();
        assert!(e.contains("0.jpg") && e.contains("0.png"), "{e}");
        std::fs::remove_file(dir.path().join("0.jpg")).unwrap();

        // A corrupt frame and a frame of another size fail when reached, naming the file.
        std::fs::write(dir.path().join("1.jpg"), b"not a jpeg").unwrap();
        save(dir.path(), "2.png", 5, 3, 0);
        let mut src = FolderSource::open(dir.path()).unwrap();
        assert!(src.next().unwrap().is_ok());
        let e = src.next().unwrap().unwrap_err().to_string();
        assert!(e.contains("1.jpg"), "{e}");
        let e = src.next().unwrap().unwrap_err().to_string();
        assert!(
            e.contains("2.png") && e.contains("5x3") && e.contains("4x3"),
            "{e}"
        );
        assert!(src.next().is_none());

        let e = FolderSource::open(&dir.path().join("absent"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("absent"), "{e}");
    }
}
