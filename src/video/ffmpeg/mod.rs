//! Video files through the system's `ffmpeg` and `ffprobe`, run as subprocesses: decoding to a
//! raw RGB pipe (one frame in memory at a time) and encoding piped frames to mp4. This module
//! runs the processes and probes files; `decode` and `encode` stream the frames.

mod decode;
mod encode;

pub use decode::{RawFrames, RawRead, VideoFileSource};
pub use encode::VideoFileWriter;

use crate::error::{Error, Result};
use crate::imageio::check_dimensions;
use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};
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
        // A process group of its own: Ctrl-C in a terminal reaches this process, which stops
        // cleanly and then ends the child, instead of killing the encoder mid-file.
        #[cfg(unix)]
        std::os::unix::process::CommandExt::process_group(cmd, 0);
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

    /// Waits for the program and returns what it printed; a failure exit becomes an error
    /// naming `path` with its stderr.
    fn finish(mut self, path: &Path) -> Result<String> {
        let status = self.child.wait().map_err(|e| Error::io(path, e))?;
        let stderr = self.stderr_text();
        if status.success() {
            Ok(stderr)
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

/// Parses ffprobe's JSON (`-show_entries stream=width,height,...`) about `path`; a size over
/// [`MAX_PIXELS`](crate::imageio::MAX_PIXELS) is refused.
pub fn parse_probe(path: &Path, json: &[u8]) -> Result<VideoInfo> {
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
    check_dimensions(path, width as u64, height as u64)?;
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
    use crate::video::source::FrameSource;
    use crate::video::Frame;
    use image::Rgb;
    use image::RgbImage;

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

    /// An mp4 with its index at the front (`+faststart`), cut in half: ffmpeg decodes what it
    /// can, prints errors and exits 0; the source must end with an error naming the file.
    #[test]
    fn a_truncated_video_is_an_error() {
        if !available() {
            eprintln!("skipped: ffmpeg/ffprobe not found; {INSTALL_HINT}");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cut.mp4");
        let mut w = VideoFileWriter::create(&path, 64, 48, 10.0).unwrap();
        let mut seed = 1u32;
        for _ in 0..20 {
            let img = RgbImage::from_fn(64, 48, |_, _| {
                seed = seed.wrapping_mul(1664525).wrapping_add(1013904223);
                Rgb([(seed >> 24) as u8, (seed >> 16) as u8, (seed >> 8) as u8])
            });
            w.write(&img).unwrap();
        }
        w.finish().unwrap();
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
        let src = VideoFileSource::open(&path).unwrap();
        assert_eq!(src.frame_count(), Some(20));
        let results: Vec<Result<Frame>> = src.collect();
        assert!(results.len() < 20, "{} results", results.len());
        let e = results.last().unwrap().as_ref().unwrap_err().to_string();
        assert!(
            e.contains("cut.mp4") && e.contains("decoding failed"),
            "{e}"
        );
    }

    #[test]
    fn raw_frame_streams_split_into_frames() {
        let p = Path::new("pipe");
        let bytes: Vec<u8> = (0..2 * 12 + 5).map(|i| i as u8).collect();
        let mut frames = RawFrames::new(bytes.as_slice(), 2, 2, p).unwrap();
        for k in 0..2u8 {
            match frames.read().unwrap() {
                RawRead::Frame(img) => assert_eq!(
                    img.get_pixel(1, 1).0,
                    [9 + 12 * k, 10 + 12 * k, 11 + 12 * k]
                ),
                other => panic!("{other:?}"),
            }
        }
        assert!(matches!(
            frames.read().unwrap(),
            RawRead::Truncated {
                bytes: 5,
                expected: 12
            }
        ));
        assert!(matches!(frames.read().unwrap(), RawRead::End));
        let e = RawFrames::new(&[][..], 100_000, 100_000, p)
            .unwrap_err()
            .to_string();
        assert!(e.contains("pipe") && e.contains("100000x100000"), "{e}");
        assert!(RawFrames::new(&[][..], 0, 5, p).is_err());
        let json = br#"{"streams":[{"width":100000,"height":90000}]}"#;
        let e = parse_probe(Path::new("big.mp4"), json)
            .unwrap_err()
            .to_string();
        assert!(e.contains("big.mp4") && e.contains("100000x90000"), "{e}");
    }
}
