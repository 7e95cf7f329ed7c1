//! Running a whole video: frames from a source through a tracker into sinks.

use crate::error::Result;
use crate::mask::Segmentation;
use crate::refine::RefineScore;
use crate::tracker::{TrackedFrame, Tracker};
use crate::video::{Frame, FrameSource};
use image::RgbImage;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// The final segmentation of one frame, at the frame's original resolution, with the frame's
/// image (shared, not copied).
#[derive(Debug, Clone)]
pub struct FrameResult {
    /// Position in the video.
    pub index: usize,
    /// Frame name (used for output file names).
    pub name: String,
    /// The frame's pixels.
    pub image: Arc<RgbImage>,
    /// Object ids and their information.
    pub segmentation: Segmentation,
    /// The refiner's judgement of each refined object on this frame (empty when the frame
    /// was not refined).
    pub refine: Vec<RefineScore>,
}

/// Something that turns frames into final segmentations in order, possibly with a delay.
pub trait Tracking {
    /// Feeds the next frame; returns the frames that became final, in order.
    fn step(&mut self, frame: Frame) -> Result<Vec<FrameResult>>;
    /// Ends the video; returns the remaining frames, in order.
    fn finish(&mut self) -> Result<Vec<FrameResult>>;
}

/// Receives the finished frames of one video in order: mask and JSON writers, overlays, box
/// recorders.
pub trait Sink {
    /// Takes the next finished frame.
    fn write(&mut self, frame: &FrameResult) -> Result<()>;
    /// The video ended, or was stopped cleanly after the frames written: completes what is
    /// written at the end (JSON documents, videos, box files).
    fn finish(&mut self) -> Result<()>;
}

/// Several sinks fed the same frames, in order.
#[derive(Default)]
pub struct Sinks(pub Vec<Box<dyn Sink>>);

impl Sink for Sinks {
    fn write(&mut self, frame: &FrameResult) -> Result<()> {
        self.0.iter_mut().try_for_each(|s| s.write(frame))
    }

    fn finish(&mut self) -> Result<()> {
        self.0.iter_mut().try_for_each(|s| s.finish())
    }
}

impl From<&TrackedFrame> for FrameResult {
    fn from(t: &TrackedFrame) -> Self {
        FrameResult {
            index: t.index,
            name: t.name.clone(),
            image: t.image.clone(),
            segmentation: t.segmentation(),
            refine: Vec::new(),
        }
    }
}

impl Tracker<'_> {
    /// The results of `frames`, with the refiner's scores of each.
    fn results(&self, frames: &[TrackedFrame]) -> Vec<FrameResult> {
        frames
            .iter()
            .map(|t| FrameResult {
                refine: self.refine_scores(t.index).unwrap_or_default().to_vec(),
                ..FrameResult::from(t)
            })
            .collect()
    }
}

impl Tracking for Tracker<'_> {
    fn step(&mut self, frame: Frame) -> Result<Vec<FrameResult>> {
        let frames = Tracker::step(self, frame)?;
        Ok(self.results(&frames))
    }

    fn finish(&mut self) -> Result<Vec<FrameResult>> {
        let frames = Tracker::finish(self)?;
        Ok(self.results(&frames))
    }
}

/// Counts reported while running and at the end.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunStats {
    /// Frames taken from the source.
    pub frames_read: usize,
    /// Frames written.
    pub frames_written: usize,
    /// Whether the run was stopped early (outputs cover the frames written).
    pub stopped: bool,
    /// Whether all frames are read and the tracker is finishing.
    pub finishing: bool,
}

/// Runs a video: reads every frame of `source`, feeds it to `tracking` and hands the results
/// to `sink`, calling `progress` after each frame.
///
/// When `stop` becomes true, reading stops, the tracker is not finished, and the sink
/// completes its files for the frames written so far (a clean stop); a stop before any frame
/// was written does not finish the sink, so an earlier run's JSON document, video and box
/// files in the same folder are not replaced by empty ones. On an error nothing more is
/// written and the sink is not finished (no JSON document is produced).
pub fn run(
    source: &mut dyn FrameSource,
    tracking: &mut dyn Tracking,
    sink: &mut dyn Sink,
    stop: &AtomicBool,
    progress: &mut dyn FnMut(&RunStats),
) -> Result<RunStats> {
    let mut stats = RunStats::default();
    let mut write_all = |results: Vec<FrameResult>, stats: &mut RunStats| -> Result<()> {
        for r in &results {
            sink.write(r)?;
            stats.frames_written += 1;
        }
        Ok(())
    };
    for frame in &mut *source {
        if stop.load(Ordering::Relaxed) {
            stats.stopped = true;
            break;
        }
        let frame = frame?;
        stats.frames_read += 1;
        write_all(tracking.step(frame)?, &mut stats)?;
        progress(&stats);
    }
    if !stats.stopped {
        stats.finishing = true;
        progress(&stats);
        write_all(tracking.finish()?, &mut stats)?;
    }
    if !(stats.stopped && stats.frames_written == 0) {
        sink.finish()?;
    }
    progress(&stats);
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mask::IdMap;
    use crate::output::{OutputFormat, OutputOptions, Writer};
    use crate::video::FolderSource;
    use image::{Rgb, RgbImage};
    use std::path::Path;

    /// Labels pixels brighter than 100 as object 1 and returns frames with a delay of one.
    struct Threshold {
        pending: Option<Frame>,
    }

    fn label(f: Frame) -> FrameResult {
        let data = f.image.pixels().map(|p| (p.0[0] > 100) as u32).collect();
        let map = IdMap::from_vec(f.width(), f.height(), data).unwrap();
        FrameResult {
            index: f.index,
            name: f.name,
            image: f.image,
            segmentation: Segmentation::from_map(map),
            refine: Vec::new(),
        }
    }

    impl Tracking for Threshold {
        fn step(&mut self, frame: Frame) -> Result<Vec<FrameResult>> {
            Ok(self.pending.replace(frame).map(label).into_iter().collect())
        }
        fn finish(&mut self) -> Result<Vec<FrameResult>> {
            Ok(self.pending.take().map(label).into_iter().collect())
        }
    }

    fn frames(dir: &Path, n: usize) {
        for i in 0..n {
            let mut img = RgbImage::new(4, 2);
            img.put_pixel(i as u32 % 4, 0, Rgb([200, 0, 0]));
            img.save(dir.join(format!("{i:03}.png"))).unwrap();
        }
    }

    #[test]
    fn runs_a_delayed_tracker_with_overlays() {
        let input = tempfile::tempdir().unwrap();
        frames(input.path(), 5);
        let out = tempfile::tempdir().unwrap();
        let mut opts = OutputOptions::new(out.path(), OutputFormat::Demo, "v");
        opts.overlay = true;
        let mut src = FolderSource::open(input.path()).unwrap();
        let mut seen = Vec::new();
        let stats = run(
            &mut src,
            &mut Threshold { pending: None },
            &mut crate::output::writers(&opts).unwrap(),
            &AtomicBool::new(false),
            &mut |s| seen.push(*s),
        )
        .unwrap();
        assert_eq!(
            (stats.frames_read, stats.frames_written, stats.stopped),
            (5, 5, false)
        );
        assert_eq!(
            seen[0].frames_written, 0,
            "first result arrives with the second frame"
        );
        let doc: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.path().join("pred.json")).unwrap()).unwrap();
        let frames = doc["annotations"].as_array().unwrap();
        assert_eq!(frames.len(), 5);
        assert_eq!(frames[3]["file_name"], "003.jpg");
        assert_eq!(
            frames[3]["segments_info"][0]["bbox"],
            serde_json::json!([3, 0, 1, 1])
        );
        assert!(out.path().join("Visualizations/004.jpg").is_file());
    }

    #[test]
    fn a_stop_writes_what_is_done_and_an_error_writes_no_json() {
        let input = tempfile::tempdir().unwrap();
        frames(input.path(), 4);
        let out = tempfile::tempdir().unwrap();
        let stop = AtomicBool::new(false);
        let mut src = FolderSource::open(input.path()).unwrap();
        let opts = OutputOptions::new(out.path(), OutputFormat::Demo, "v");
        let stats = run(
            &mut src,
            &mut Threshold { pending: None },
            &mut Writer::new(opts.clone()).unwrap(),
            &stop,
            &mut |s| {
                if s.frames_read == 3 {
                    stop.store(true, Ordering::Relaxed)
                }
            },
        )
        .unwrap();
        assert!(stats.stopped);
        assert_eq!((stats.frames_read, stats.frames_written), (3, 2));
        let doc: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.path().join("pred.json")).unwrap()).unwrap();
        assert_eq!(doc["annotations"].as_array().unwrap().len(), 2);

        std::fs::write(input.path().join("002.png"), b"broken").unwrap();
        let out2 = tempfile::tempdir().unwrap();
        let mut src = FolderSource::open(input.path()).unwrap();
        let e = run(
            &mut src,
            &mut Threshold { pending: None },
            &mut Writer::new(OutputOptions::new(out2.path(), OutputFormat::Demo, "v")).unwrap(),
            &AtomicBool::new(false),
            &mut |_| {},
        )
        .unwrap_err();
        assert!(e.to_string().contains("002.png"), "{e}");
        assert!(!out2.path().join("pred.json").exists());
    }

    /// A stop before the first result (the tracker's delay) must not replace the complete
    /// `pred.json` of an earlier run with an empty one.
    #[test]
    fn a_stop_before_any_result_keeps_the_earlier_json() {
        let input = tempfile::tempdir().unwrap();
        frames(input.path(), 3);
        let out = tempfile::tempdir().unwrap();
        let opts = OutputOptions::new(out.path(), OutputFormat::Demo, "v");
        let go = |stop_at: Option<usize>| {
            let stop = AtomicBool::new(false);
            let mut src = FolderSource::open(input.path()).unwrap();
            run(
                &mut src,
                &mut Threshold { pending: None },
                &mut Writer::new(opts.clone()).unwrap(),
                &stop,
                &mut |s| {
                    if Some(s.frames_read) == stop_at {
                        stop.store(true, Ordering::Relaxed)
                    }
                },
            )
            .unwrap()
        };
        assert_eq!(go(None).frames_written, 3);
        let json = out.path().join("pred.json");
        let complete = std::fs::read(&json).unwrap();
        let stats = go(Some(1));
        assert!(stats.stopped);
        assert_eq!(stats.frames_written, 0);
        assert_eq!(std::fs::read(&json).unwrap(), complete);
    }
}
