//! The tracker: drives segmenter, propagator, consensus and merge over a stream of frames.
//!
//! Schedules (`tracker.temporal`, checked against the segmenter's kind: a segmenter of
//! reference masks needs `vos`, one of proposals any other; without a propagator, image-only):
//! - **image-only** (no propagator): every frame gets its own raw segmentation, with the
//!   segmenter's ids, at the original resolution;
//! - **VOS** (`vos`; segmenter kind [`SegmenterKind::Reference`](crate::segmenter::SegmenterKind::Reference)): masks given on any frame
//!   (by the segmenter or by [`Tracker::add_prompt`]) add new objects or overwrite re-listed
//!   ones; objects are never deleted;
//! - **online**: every `detection_every`-th frame's raw segmentation is merged (no lag);
//! - **semi-online**: the consensus of `num_voting_frames` frames is merged every
//!   `detection_every` frames (lag `num_voting_frames − 1`);
//! - **offline**: the whole video is buffered; a key-frame consensus of uniformly sampled
//!   frames is propagated backwards and forwards from the key frame (everything at
//!   [`Tracker::finish`]).
//!
//! Frames are resized to the internal size (`input.size`) before the propagator;
//! segmentations are made on the original frames and resized to the internal size with
//! nearest-neighbour sampling.

mod engine;
mod offline;
mod prompts;
mod semionline;
mod vos;

pub use prompts::Prompt;

use crate::config::{Config, Temporal};
use crate::error::{Error, Result};
use crate::mask::{BinaryMask, ObjectProbs, SegmentInfo, Segmentation};
use crate::propagator::Propagator;
use crate::refine::{Refine, RefineScore};
use crate::segmenter::sam::SamModel;
use crate::segmenter::ImageSegmenter;
use crate::video::{internal_size, Frame};
use engine::Engine;
use image::RgbImage;
use offline::Offline;
use prompts::Prompts;
use semionline::Clips;
use std::collections::HashSet;
use std::sync::Arc;

/// One finished frame.
#[derive(Debug, Clone, PartialEq)]
pub struct TrackedFrame {
    /// Position in the video.
    pub index: usize,
    /// Frame name (for output files).
    pub name: String,
    /// Original frame width.
    pub width: usize,
    /// Original frame height.
    pub height: usize,
    /// The frame's pixels (shared with the input frame, not copied).
    pub image: Arc<RgbImage>,
    /// Soft masks at the internal resolution (channel order = `probs.ids()`); at the original
    /// resolution in image-only mode.
    pub probs: ObjectProbs,
    /// Live objects with their voted category (mode, ties to the smallest), mean score and
    /// isthing.
    pub objects: Vec<SegmentInfo>,
}

impl TrackedFrame {
    /// The final segmentation at the original resolution: bilinear resize of `probs` and
    /// argmax; `segments` are the `objects` present in the map.
    pub fn segmentation(&self) -> Segmentation {
        let map = self.probs.resize_argmax(self.width, self.height);
        // Ids come in runs along rows: only record changes.
        let mut present = HashSet::new();
        let mut last = 0;
        for &id in map.data().iter().filter(|&&id| id != 0) {
            if id != last {
                present.insert(id);
                last = id;
            }
        }
        let segments = self
            .objects
            .iter()
            .filter(|o| present.contains(&o.id))
            .cloned()
            .collect();
        Segmentation { map, segments }
    }
}

/// A frame at its original and at the internal resolution.
pub(crate) struct Prepared {
    /// As fed to the tracker.
    original: Frame,
    /// Resized to the internal size (what the propagator sees).
    internal: Frame,
}

impl Prepared {
    /// Resizes `original` to the internal size for `size` (`input.size`).
    fn new(original: Frame, size: i32) -> Self {
        let (w, h) = internal_size(original.width(), original.height(), size);
        let internal = if (w, h) == (original.width(), original.height()) {
            original.clone()
        } else {
            original.resized(w, h)
        };
        Prepared { original, internal }
    }

    /// The finished frame with these masks and objects.
    fn finish(&self, probs: ObjectProbs, objects: Vec<SegmentInfo>) -> TrackedFrame {
        TrackedFrame {
            index: self.original.index,
            name: self.original.name.clone(),
            width: self.original.width(),
            height: self.original.height(),
            image: self.original.image.clone(),
            probs,
            objects,
        }
    }
}

/// The segmenter, the prompts given from memory, and the checks every schedule shares.
pub(crate) struct Input<'a> {
    segmenter: Box<dyn ImageSegmenter + 'a>,
    prompts: Prompts,
    size: i32,
    /// Size of the first frame; all must match it.
    dims: Option<(usize, usize)>,
    /// Index the next frame must have at least (frames come in order).
    next: usize,
}

impl<'a> Input<'a> {
    /// Fails unless `frame` has the size of the video's first frame, and (on the first frame)
    /// unless the internal resolution fits [`MAX_PIXELS`](crate::imageio::MAX_PIXELS).
    fn check(&mut self, frame: &Frame) -> Result<()> {
        let dims = (frame.width(), frame.height());
        match self.dims {
            None => {
                let (w, h) = internal_size(dims.0, dims.1, self.size);
                if (w as u64).saturating_mul(h as u64) > crate::imageio::MAX_PIXELS {
                    return Err(Error::Config(format!(
                        "input size {} makes the {}x{} frames {w}x{h} internally, more than \
                         the limit of {} pixels; choose a smaller size",
                        self.size,
                        dims.0,
                        dims.1,
                        crate::imageio::MAX_PIXELS
                    )));
                }
                self.dims = Some(dims)
            }
            Some(d) if d != dims => {
                return Err(Error::invalid(format!(
                    "frame {} ({}) is {}x{} but the video's frames are {}x{}",
                    frame.index, frame.name, dims.0, dims.1, d.0, d.1
                )))
            }
            Some(_) => {}
        }
        if frame.index < self.next {
            return Err(Error::invalid(format!(
                "frame {} ({}) comes after frame {}: frames must come in order",
                frame.index,
                frame.name,
                self.next - 1
            )));
        }
        self.next = frame.index + 1;
        Ok(())
    }

    /// Segments `frame` (original resolution), paints the frame's prompts on top, and checks
    /// the result.
    fn segment(
        &mut self,
        frame: &Frame,
        tracked: Option<&BinaryMask>,
    ) -> Result<Option<Segmentation>> {
        let seg = self.segmenter.segment(frame, tracked)?;
        let Some(seg) = self.prompts.apply(frame, seg)? else {
            return Ok(None);
        };
        let name = self.segmenter.name();
        if seg.map.width() != frame.width() || seg.map.height() != frame.height() {
            return Err(Error::invalid(format!(
                "segmenter {name} returned a {}x{} segmentation for frame {} ({}) of size {}x{}",
                seg.map.width(),
                seg.map.height(),
                frame.index,
                frame.name,
                frame.width(),
                frame.height()
            )));
        }
        seg.validate().map_err(|e| {
            Error::invalid(format!(
                "segmenter {name}, frame {} ({}): {e}",
                frame.index, frame.name
            ))
        })?;
        Ok(Some(seg))
    }

    /// Segments a prepared frame and resizes the result to the internal size.
    fn segment_internal(
        &mut self,
        frame: &Prepared,
        tracked: Option<&BinaryMask>,
    ) -> Result<Option<Segmentation>> {
        let seg = self.segment(&frame.original, tracked)?;
        Ok(seg.map(|s| s.resize_nearest(frame.internal.width(), frame.internal.height())))
    }
}

/// Which schedule runs.
enum Schedule<'a> {
    /// No propagator.
    ImageOnly,
    /// Given masks, never deleted.
    Vos(Engine<'a>),
    /// Online (clips of one frame) and semi-online.
    Clips(Clips<'a>),
    /// Whole-video key-frame consensus.
    Offline(Offline<'a>),
}

/// Tracks objects through a video, one frame at a time.
pub struct Tracker<'a> {
    input: Input<'a>,
    schedule: Schedule<'a>,
}

impl<'a> Tracker<'a> {
    /// A tracker for one video. `propagator = None` is image-only mode: every frame gets its
    /// own raw segmentation with the segmenter's ids (the `--propagator none` baseline).
    pub fn new(
        config: &Config,
        segmenter: Box<dyn ImageSegmenter + 'a>,
        propagator: Option<Box<dyn Propagator + 'a>>,
    ) -> Result<Self> {
        config.validate()?;
        let mut segmenter = segmenter;
        segmenter.set_internal_size(config.input.size);
        let schedule = match propagator {
            None => Schedule::ImageOnly,
            Some(p) => {
                let temporal = config.tracker.temporal;
                temporal.check_segmenter(segmenter.kind(), segmenter.name())?;
                let engine = Engine::new(p, config);
                match temporal {
                    Temporal::Vos => Schedule::Vos(engine),
                    Temporal::Offline => Schedule::Offline(Offline::new(engine, config)),
                    temporal => Schedule::Clips(Clips::new(engine, config, temporal)),
                }
            }
        };
        Ok(Tracker {
            input: Input {
                segmenter,
                prompts: Prompts::default(),
                size: config.input.size,
                dims: None,
                next: 0,
            },
            schedule,
        })
    }

    /// The engine of a propagating schedule.
    fn engine(&self) -> Option<&Engine<'a>> {
        match &self.schedule {
            Schedule::ImageOnly => None,
            Schedule::Vos(e) => Some(e),
            Schedule::Clips(c) => Some(&c.engine),
            Schedule::Offline(o) => Some(&o.engine),
        }
    }

    /// Refines every propagated prediction with `refiner` (at the internal size), between
    /// propagation and merge / memory. Image-only mode has nothing to refine: an error.
    pub fn set_refiner(&mut self, refiner: Box<dyn Refine + 'a>) -> Result<()> {
        let engine = match &mut self.schedule {
            Schedule::ImageOnly => {
                return Err(Error::invalid(
                    "a refiner refines propagated masks: it needs a propagator",
                ))
            }
            Schedule::Vos(e) => e,
            Schedule::Clips(c) => &mut c.engine,
            Schedule::Offline(o) => &mut o.engine,
        };
        engine.set_refiner(refiner);
        Ok(())
    }

    /// The refiner's per-object scores (predicted IoU, agreement, decision) for frame
    /// `index`, if it was refined.
    pub fn refine_scores(&self, index: usize) -> Option<&[RefineScore]> {
        self.engine()?.refine_scores(index)
    }

    /// Gives objects on frame `frame_index` (not yet fed): masks, or boxes and points that
    /// SAM turns into masks ([`set_sam`](Self::set_sam)). They are added as new objects, or
    /// overwrite tracked objects of the same id, exactly as given masks are; only the `vos`
    /// schedule follows given masks.
    pub fn add_prompt(&mut self, frame_index: usize, prompt: Prompt) -> Result<()> {
        if !matches!(self.schedule, Schedule::Vos(_)) {
            return Err(Error::Config(
                "prompts are followed exactly, which needs tracker.temporal = \"vos\" and a propagator".into(),
            ));
        }
        if frame_index < self.input.next {
            return Err(Error::invalid(format!(
                "a prompt for frame {frame_index} came after that frame was tracked (next frame: {})",
                self.input.next
            )));
        }
        self.input.prompts.add(frame_index, prompt)
    }

    /// The SAM that turns box and point prompts into masks.
    pub fn set_sam(&mut self, model: Arc<SamModel>) {
        self.input.prompts.set_sam(model);
    }

    /// Feeds the next frame at its original resolution (all frames of a video must have one
    /// size). Returns the frames that became final, in order (semi-online: a lag of
    /// `num_voting_frames − 1`; offline: nothing until [`finish`](Self::finish)).
    pub fn step(&mut self, frame: Frame) -> Result<Vec<TrackedFrame>> {
        self.input.check(&frame)?;
        match &mut self.schedule {
            Schedule::ImageOnly => Ok(vec![image_only(&mut self.input, frame)?]),
            Schedule::Vos(engine) => {
                let frame = Prepared::new(frame, self.input.size);
                Ok(vec![vos::step(engine, &mut self.input, frame)?])
            }
            Schedule::Clips(clips) => {
                let frame = Prepared::new(frame, self.input.size);
                clips.step(&mut self.input, frame)
            }
            Schedule::Offline(offline) => {
                offline.push(frame);
                Ok(Vec::new())
            }
        }
    }

    /// End of video: returns all remaining frames, in order. A semi-online clip cut short by
    /// the end still gets the consensus of the frames it has.
    pub fn finish(&mut self) -> Result<Vec<TrackedFrame>> {
        match &mut self.schedule {
            Schedule::ImageOnly | Schedule::Vos(_) => Ok(Vec::new()),
            Schedule::Clips(clips) => clips.finish(),
            Schedule::Offline(offline) => offline.finish(&mut self.input),
        }
    }
}

/// Image-only mode: the frame's raw segmentation as one-hot masks at the original size.
fn image_only(input: &mut Input, frame: Frame) -> Result<TrackedFrame> {
    let seg = input
        .segment(&frame, None)?
        .unwrap_or_else(|| Segmentation::empty(frame.width(), frame.height()));
    let ids: Vec<_> = seg.segments.iter().map(|s| s.id).collect();
    let probs = ObjectProbs::one_hot(&seg.map, &ids)?;
    Ok(TrackedFrame {
        index: frame.index,
        name: frame.name,
        width: seg.map.width(),
        height: seg.map.height(),
        image: frame.image,
        probs,
        objects: seg.segments,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::propagator::StaticPropagator;
    use crate::segmenter::SegmenterKind;

    struct Nothing;

    impl ImageSegmenter for Nothing {
        fn name(&self) -> &str {
            "nothing"
        }
        fn kind(&self) -> SegmenterKind {
            SegmenterKind::Proposals
        }
        fn segment(&mut self, _: &Frame, _: Option<&BinaryMask>) -> Result<Option<Segmentation>> {
            Ok(None)
        }
    }

    /// A large size on a long thin frame used to allocate gigabytes in the resize and abort.
    #[test]
    fn an_internal_size_over_the_pixel_limit_is_an_error() {
        let mut config = Config::default();
        config.input.size = 8192;
        let propagator: Box<dyn Propagator> = Box::new(StaticPropagator::default());
        let mut t = Tracker::new(&config, Box::new(Nothing), Some(propagator)).unwrap();
        let frame = Frame {
            index: 0,
            name: "00000".into(),
            image: image::RgbImage::new(1, 40).into(),
        };
        let e = t.step(frame).unwrap_err().to_string();
        assert!(e.contains("8192") && e.contains("8192x327680"), "{e}");
    }
}
