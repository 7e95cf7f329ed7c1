//! Video files through the system's `ffmpeg` and `ffprobe`, run as subprocesses: decoding to a
//! raw RGB pipe (one frame in memory at a time) and encoding piped frames to mp4.

use super::source::FrameSource;
use super::Frame;
use crate::error::{Error, Result};
use image::RgbImage;
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::thread::JoinHandle;

/// How to get ffmpeg, shown when it is missing.
pub const INSTALL_HINT: &str = "install FFmpeg so that `ffmpeg` and `ffprobe` are on PATH \
(Debian/Ubuntu: `sudo apt-get install ffmpeg`; Fedora: `sudo dnf install ffmpeg`; macOS: \
`brew install ffmpeg`; Windows: `winget install ffmpeg`)";

/// The last this many bytes of a program's stderr are kept for error messages.
const STDERR_TAIL: usize = 2000;

/// A running ffmpeg/ffprobe whose stderr is collected on a background thread.
struct Process {
    program: &'static str,
    child: Child,
    stderr: Option<JoinHandle<String>>,
}

impl Process {
    /// Starts `cmd` with stderr captured; a missing program gives an install hint.
    fn spawn(program: &'static str, cmd: &mut Command) -> Result<Process> {
        let mut child = cmd
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| spawn_error(program, e))?;
        let mut err = child.stderr.take().expect("stderr is piped");
        let stderr = std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = err.read_to_end(&mut bytes);
            let start = bytes.len().saturating_sub(STDERR_TAIL);
            String::from_utf8_lossy(&bytes[start..]).trim().to_string()
        });
        Ok(Process {
            program,
            child,
            stderr: Some(stderr),
        })
    }

    fn stderr_text(&mut self) -> String {
        self.stderr
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default()
    }

    /// Waits for the program; a failure exit becomes an error naming `path` with its stderr.
    fn finish(mut self, path: &Path) -> Result<()> {
        let status = self.child.wait().map_err(|e| Error::io(path, e))?;
        let stderr = self.stderr_text();
        if status.success() {
            Ok(())
        } else {
            Err(Error::External {
                program: self.program.to_string(),
                message: format!("{}: {status}: {stderr}", path.display()),
            })
        }
    }

    /// Stops the program at once and returns what it printed.
    fn kill(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.stderr_text()
    }
}

fn spawn_error(program: &str, e: std::io::Error) -> Error {
    let message = if e.kind() == std::io::ErrorKind::NotFound {
        format!("not found; {INSTALL_HINT}")
    } else {
        format!("cannot start: {e}")
    };
    Error::External {
        program: program.to_string(),
        message,
    }
}

/// What `ffprobe` reports about a video's first video stream.
#[derive(Debug, Clone, PartialEq)]
pub struct VideoInfo {
    /// Displayed width (after rotation metadata is applied, as ffmpeg decodes it).
    pub width: usize,
    /// Displayed height.
    pub height: usize,
    /// Frames per second, if the container states a rate.
    pub fps: Option<f64>,
    /// Number of frames, if the container states it.
    pub frame_count: Option<usize>,
}

/// Parses an ffprobe rate such as `30000/1001` or `25`; `0/0` and nonsense give `None`.
fn parse_rate(s: &str) -> Option<f64> {
    let (num, den) = match s.split_once('/') {
        Some((n, d)) => (n.trim().parse::<f64>().ok()?, d.trim().parse::<f64>().ok()?),
        None => (s.trim().parse::<f64>().ok()?, 1.0),
    };
    let r = num / den;
    (r.is_finite() && r > 0.0).then_some(r)
}

/// Reads the size, rate and frame count of `path` with `ffprobe`.
pub fn probe(path: &Path) -> Result<VideoInfo> {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0", "-show_entries"])
        .arg("stream=width,height,avg_frame_rate,r_frame_rate,nb_frames:stream_tags=rotate:stream_side_data=rotation")
        .args(["-of", "json"])
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| spawn_error("ffprobe", e))?;
    if !out.status.success() {
        return Err(Error::External {
            program: "ffprobe".into(),
            message: format!(
                "{}: cannot read the video: {}",
                path.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        });
    }
    parse_probe(path, &out.stdout)
}

fn parse_probe(path: &Path, json: &[u8]) -> Result<VideoInfo> {
    let v: serde_json::Value = serde_json::from_slice(json)
        .map_err(|e| Error::parse(path, format!("unexpected ffprobe output: {e}")))?;
    let stream = v["streams"]
        .get(0)
        .ok_or_else(|| Error::invalid(format!("{}: has no video stream", path.display())))?;
    let dim = |key: &str| {
        stream[key]
            .as_u64()
            .filter(|&d| d > 0)
            .map(|d| d as usize)
            .ok_or_else(|| Error::invalid(format!("{}: video stream has no {key}", path.display())))
    };
    let (w, h) = (dim("width")?, dim("height")?);
    let rotation = stream["side_data_list"]
        .as_array()
        .into_iter()
        .flatten()
        .find_map(|d| d["rotation"].as_f64())
        .or_else(|| stream["tags"]["rotate"].as_str()?.parse().ok())
        .unwrap_or(0.0);
    let quarter_turn = (rotation.round() as i64).rem_euclid(180) == 90;
    let (width, height) = if quarter_turn { (h, w) } else { (w, h) };
    let rate = |key: &str| stream[key].as_str().and_then(parse_rate);
    Ok(VideoInfo {
        width,
        height,
        fps: rate("avg_frame_rate").or_else(|| rate("r_frame_rate")),
        frame_count: stream["nb_frames"]
            .as_str()
            .and_then(|n| n.parse().ok())
            .filter(|&n| n > 0),
    })
}

/// Fills `buf` from `r`; returns how many bytes were read (fewer only at end of stream).
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Frames of a video file decoded by `ffmpeg` into a raw RGB pipe, one at a time. Frames are
/// named by their zero-padded index (`00000`, `00001`, ...).
pub struct VideoFileSource {
    path: PathBuf,
    info: VideoInfo,
    process: Option<Process>,
    stdout: Option<BufReader<ChildStdout>>,
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
        let stdout = process.child.stdout.take().map(BufReader::new);
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

    /// Ends decoding: the process must have exited cleanly and produced at least one frame.
    fn end(&mut self) -> Option<Result<Frame>> {
        self.stdout = None;
        let process = self.process.take()?;
        if let Err(e) = process.finish(&self.path) {
            return Some(Err(e));
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
        let (w, h) = (self.info.width, self.info.height);
        let mut buf = vec![0u8; w * h * 3];
        match read_full(stdout, &mut buf) {
            Ok(0) => self.end(),
            Ok(n) if n == buf.len() => {
                let image = RgbImage::from_raw(w as u32, h as u32, buf).expect("buffer size");
                let frame = Frame {
                    index: self.index,
                    name: format!("{:05}", self.index),
                    image: image.into(),
                };
                self.index += 1;
                Some(Ok(frame))
            }
            Ok(n) => {
                let stderr = self.process.take().map(Process::kill).unwrap_or_default();
                self.stdout = None;
                Some(Err(Error::External {
                    program: "ffmpeg".into(),
                    message: format!(
                        "{}: frame {} is truncated ({n} of {} bytes): {stderr}",
                        self.path.display(),
                        self.index,
                        buf.len()
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
}

impl Drop for VideoFileSource {
    fn drop(&mut self) {
        self.stdout = None;
        if let Some(p) = self.process.take() {
            p.kill();
        }
    }
}

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

/// Whether `ffmpeg` and `ffprobe` can be run.
pub fn available() -> bool {
    ["ffmpeg", "ffprobe"].iter().all(|p| {
        Command::new(p)
            .arg("-version")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgb;

    #[test]
    fn parses_rates_and_probe_output() {
        assert_eq!(parse_rate("25/1"), Some(25.0));
        assert!((parse_rate("30000/1001").unwrap() - 29.97002997).abs() < 1e-6);
        assert_eq!(parse_rate("0/0"), None);
        assert_eq!(parse_rate("x"), None);

        let p = Path::new("v.mp4");
        let json = br#"{"streams":[{"width":640,"height":360,"avg_frame_rate":"0/0",
            "r_frame_rate":"24/1","nb_frames":"48",
            "side_data_list":[{"side_data_type":"Display Matrix","rotation":-90}]}]}"#;
        let info = parse_probe(p, json).unwrap();
        assert_eq!(
            info,
            VideoInfo {
                width: 360,
                height: 640,
                fps: Some(24.0),
                frame_count: Some(48)
            }
        );
        let info = parse_probe(p, br#"{"streams":[{"width":8,"height":6}]}"#).unwrap();
        assert_eq!(
            (info.width, info.height, info.fps, info.frame_count),
            (8, 6, None, None)
        );
        let e = parse_probe(p, br#"{"streams":[]}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("v.mp4") && e.contains("no video stream"), "{e}");
    }

    /// Encodes frames with distinct flat colours, decodes them back and compares; lossy
    /// coding of flat colours stays within a few levels.
    #[test]
    fn mp4_round_trip_through_ffmpeg() {
        if !available() {
            eprintln!("skipped: ffmpeg/ffprobe not found; {INSTALL_HINT}");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("clip.mp4");
        let colours = [
            [200u8, 30, 30],
            [30, 200, 30],
            [30, 30, 200],
            [120, 120, 120],
        ];
        let mut w = VideoFileWriter::create(&path, 33, 20, 12.0).unwrap();
        for c in colours {
            w.write(&RgbImage::from_pixel(33, 20, Rgb(c))).unwrap();
        }
        assert!(w.write(&RgbImage::new(2, 2)).is_err());
        w.finish().unwrap();
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, ["clip.mp4"]);

        let src = VideoFileSource::open(&path).unwrap();
        // Odd widths are padded to even by the encoder.
        assert_eq!((src.info().width, src.info().height), (34, 20));
        assert_eq!(src.fps(), Some(12.0));
        assert_eq!(src.frame_count(), Some(4));
        let frames: Vec<Frame> = src.map(|f| f.unwrap()).collect();
        assert_eq!(frames.len(), 4);
        for (i, (f, c)) in frames.iter().zip(colours).enumerate() {
            assert_eq!((f.index, f.name.as_str()), (i, format!("{i:05}").as_str()));
            let p = f.image.get_pixel(10, 10).0;
            for k in 0..3 {
                assert!(
                    (p[k] as i32 - c[k] as i32).abs() <= 6,
                    "frame {i}: {p:?} vs {c:?}"
                );
            }
        }
    }

    #[test]
    fn unfinished_writer_leaves_nothing_and_bad_files_are_named() {
        if !available() {
            eprintln!("skipped: ffmpeg/ffprobe not found; {INSTALL_HINT}");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.mp4");
        let mut w = VideoFileWriter::create(&path, 8, 8, 5.0).unwrap();
        w.write(&RgbImage::new(8, 8)).unwrap();
        drop(w);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);

        std::fs::write(&path, b"not a video").unwrap();
        let e = VideoFileSource::open(&path).err().unwrap().to_string();
        assert!(e.contains("x.mp4") && e.contains("ffprobe"), "{e}");
    }
}
