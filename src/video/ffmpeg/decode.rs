//! Decoding: a video file through `ffmpeg` into a raw RGB24 pipe, split into frames.

use super::{probe, Process, VideoInfo};
use crate::diagnostics::warn;
use crate::error::{Error, Result};
use crate::imageio::check_dimensions;
use crate::video::source::FrameSource;
use crate::video::Frame;
use image::RgbImage;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{ChildStdout, Command, Stdio};

/// What reading one frame of a raw RGB stream gave.
#[derive(Debug)]
pub enum RawRead {
    /// A whole frame.
    Frame(RgbImage),
    /// The stream ended cleanly, between frames.
    End,
    /// The stream ended inside a frame after `bytes` of its `expected` bytes.
    Truncated {
        /// Bytes of the frame that arrived.
        bytes: usize,
        /// Bytes of a whole frame.
        expected: usize,
    },
}

/// Splits a raw RGB24 byte stream (what `ffmpeg -f rawvideo -pix_fmt rgb24` writes) into
/// frames of a known size.
#[derive(Debug)]
pub struct RawFrames<R> {
    reader: R,
    width: usize,
    height: usize,
}

impl<R: Read> RawFrames<R> {
    /// Frames of `width × height` from `reader`; both must be positive and their product at
    /// most [`MAX_PIXELS`](crate::imageio::MAX_PIXELS) (`path` names the stream in errors).
    pub fn new(reader: R, width: usize, height: usize, path: &Path) -> Result<Self> {
        if width == 0 || height == 0 {
            return Err(Error::invalid(format!(
                "{}: video frames of {width}x{height} pixels",
                path.display()
            )));
        }
        check_dimensions(path, width as u64, height as u64)?;
        Ok(RawFrames {
            reader,
            width,
            height,
        })
    }

    /// Reads the next frame.
    pub fn read(&mut self) -> std::io::Result<RawRead> {
        let (w, h) = (self.width, self.height);
        let mut buf = vec![0u8; w * h * 3];
        let mut n = 0;
        while n < buf.len() {
            match self.reader.read(&mut buf[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(match n {
            0 => RawRead::End,
            n if n < buf.len() => RawRead::Truncated {
                bytes: n,
                expected: buf.len(),
            },
            _ => RawRead::Frame(
                RgbImage::from_raw(w as u32, h as u32, buf).expect("buffer of w * h * 3 bytes"),
            ),
        })
    }
}

/// Frames of a video file decoded by `ffmpeg` into a raw RGB pipe, one at a time. Frames are
/// named by their zero-padded index (`00000`, `00001`, ...).
pub struct VideoFileSource {
    path: PathBuf,
    info: VideoInfo,
    process: Option<Process>,
    stdout: Option<RawFrames<BufReader<ChildStdout>>>,
    index: usize,
}

impl VideoFileSource {
    /// Probes `path` and starts decoding it.
    pub fn open(path: &Path) -> Result<Self> {
        let info = probe(path)?;
        let mut process = Process::spawn(
            "ffmpeg",
            Command::new("ffmpeg")
                .args(["-nostdin", "-v", "error", "-i"])
                .arg(path)
                .args(["-map", "0:v:0", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"])
                .stdin(Stdio::null())
                .stdout(Stdio::piped()),
        )?;
        let stdout = match process.child.stdout.take() {
            Some(out) => Some(RawFrames::new(
                BufReader::new(out),
                info.width,
                info.height,
                path,
            )?),
            None => None,
        };
        Ok(VideoFileSource {
            path: path.to_path_buf(),
            info,
            process: Some(process),
            stdout,
            index: 0,
        })
    }

    /// What ffprobe said about the video.
    pub fn info(&self) -> &VideoInfo {
        &self.info
    }

    /// Ends decoding: the process must have exited cleanly without reporting errors (a
    /// damaged or cut file makes ffmpeg print errors and stop early with a success status)
    /// and produced at least one frame; fewer frames than the container declares give a
    /// warning.
    fn end(&mut self) -> Option<Result<Frame>> {
        self.stdout = None;
        let process = self.process.take()?;
        let stderr = match process.finish(&self.path) {
            Ok(stderr) => stderr,
            Err(e) => return Some(Err(e)),
        };
        if !stderr.is_empty() {
            return Some(Err(Error::External {
                program: "ffmpeg".into(),
                message: format!(
                    "{}: decoding failed after {} frames (damaged or truncated file?): {stderr}",
                    self.path.display(),
                    self.index
                ),
            }));
        }
        if let Some(declared) = self.info.frame_count.filter(|&n| n > self.index) {
            warn(format!(
                "{}: decoded {} frames but the container declares {declared}",
                self.path.display(),
                self.index
            ));
        }
        (self.index == 0).then(|| {
            Err(Error::invalid(format!(
                "{}: no frames could be decoded",
                self.path.display()
            )))
        })
    }

    fn read_frame(&mut self) -> Option<Result<Frame>> {
        let stdout = self.stdout.as_mut()?;
        match stdout.read() {
            Ok(RawRead::End) => self.end(),
            Ok(RawRead::Frame(image)) => {
                let frame = Frame {
                    index: self.index,
                    name: format!("{:05}", self.index),
                    image: image.into(),
                };
                self.index += 1;
                Some(Ok(frame))
            }
            Ok(RawRead::Truncated { bytes, expected }) => {
                let stderr = self.process.take().map(Process::kill).unwrap_or_default();
                self.stdout = None;
                Some(Err(Error::External {
                    program: "ffmpeg".into(),
                    message: format!(
                        "{}: frame {} is truncated ({bytes} of {expected} bytes): {stderr}",
                        self.path.display(),
                        self.index,
                    ),
                }))
            }
            Err(e) => {
                self.stdout = None;
                self.process.take().map(Process::kill);
                Some(Err(Error::io(&self.path, e)))
            }
        }
    }
}

impl Iterator for VideoFileSource {
    type Item = Result<Frame>;

    fn next(&mut self) -> Option<Result<Frame>> {
        self.read_frame()
    }
}

impl FrameSource for VideoFileSource {
    fn frame_count(&self) -> Option<usize> {
        self.info.frame_count
    }

    fn fps(&self) -> Option<f64> {
        self.info.fps
    }

    fn preflight(&mut self) -> Result<(usize, usize)> {
        Ok((self.info.width, self.info.height))
    }
}

impl Drop for VideoFileSource {
    fn drop(&mut self) {
        self.stdout = None;
        if let Some(p) = self.process.take() {
            p.kill();
        }
    }
}
