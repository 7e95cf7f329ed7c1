//! Encoding: frames piped into `ffmpeg` to make an mp4.

use super::Process;
use crate::error::{Error, Result};
use image::RgbImage;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Command, Stdio};

/// Encodes frames piped to `ffmpeg` into an mp4 (H.264 when ffmpeg has it, yuv420p, odd sizes
/// padded to even). The file is written under a temporary name and renamed by
/// [`finish`](VideoFileWriter::finish); dropping the writer unfinished removes it.
pub struct VideoFileWriter {
    path: PathBuf,
    tmp: PathBuf,
    width: usize,
    height: usize,
    process: Option<Process>,
    stdin: Option<ChildStdin>,
}

impl VideoFileWriter {
    /// Starts an encoder for `width × height` frames at `fps` into `path`.
    pub fn create(path: &Path, width: usize, height: usize, fps: f64) -> Result<Self> {
        if width == 0 || height == 0 || !(fps.is_finite() && fps > 0.0) {
            return Err(Error::invalid(format!(
                "{}: cannot encode {width}x{height} frames at {fps} fps",
                path.display()
            )));
        }
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
        if let Some(dir) = dir {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
        let mut process = Process::spawn(
            "ffmpeg",
            Command::new("ffmpeg")
                .args(["-y", "-nostdin", "-v", "error", "-f", "rawvideo"])
                .args(["-pix_fmt", "rgb24", "-s", &format!("{width}x{height}")])
                .args(["-r", &format!("{fps}"), "-i", "-"])
                .args([
                    "-vf",
                    "pad=ceil(iw/2)*2:ceil(ih/2)*2",
                    "-pix_fmt",
                    "yuv420p",
                ])
                .args(["-movflags", "+faststart", "-f", "mp4"])
                .arg(&tmp)
                .stdin(Stdio::piped())
                .stdout(Stdio::null()),
        )?;
        let stdin = process.child.stdin.take();
        Ok(VideoFileWriter {
            path: path.to_path_buf(),
            tmp,
            width,
            height,
            process: Some(process),
            stdin,
        })
    }

    /// Appends one frame; it must have the size given at creation.
    pub fn write(&mut self, image: &RgbImage) -> Result<()> {
        let (w, h) = (image.width() as usize, image.height() as usize);
        if (w, h) != (self.width, self.height) {
            return Err(Error::invalid(format!(
                "{}: frame is {w}x{h} but the video is {}x{}",
                self.path.display(),
                self.width,
                self.height
            )));
        }
        let stdin = self
            .stdin
            .as_mut()
            .ok_or_else(|| Error::invalid(format!("{}: encoder stopped", self.path.display())))?;
        if let Err(e) = stdin.write_all(image.as_raw()) {
            self.stdin = None;
            let stderr = self.process.take().map(Process::kill).unwrap_or_default();
            return Err(Error::External {
                program: "ffmpeg".into(),
                message: format!("{}: encoding failed ({e}): {stderr}", self.path.display()),
            });
        }
        Ok(())
    }

    /// Closes the pipe, waits for ffmpeg and moves the finished file into place.
    pub fn finish(mut self) -> Result<()> {
        self.stdin = None;
        if let Some(p) = self.process.take() {
            p.finish(&self.path)?;
        }
        std::fs::rename(&self.tmp, &self.path).map_err(|e| Error::io(&self.path, e))
    }
}

impl Drop for VideoFileWriter {
    fn drop(&mut self) {
        self.stdin = None;
        if let Some(p) = self.process.take() {
            p.kill();
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}
