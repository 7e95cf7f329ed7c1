//! The tracker's schedules end to end, with a scripted segmenter (synthetic moving squares)
//! and the zero-motion `StaticPropagator`, wrapped in a recorder that logs every call.
//!
//! By schedule: `online`, `semi_online` (and image-only), `offline`, `vos` (given masks, the
//! cutie-judo clip). The recorder, the scripted segmenter and the shapes are here.

#[path = "../common/mod.rs"]
mod common;
mod offline;
mod online;
mod semi_online;
mod vos;

use deva::config::{Config, Temporal};
use deva::mask::{BinaryMask, IdMap, ObjectId, ObjectProbs, SegmentInfo, Segmentation};
use deva::propagator::{Propagator, StaticPropagator};
use deva::segmenter::{ImageSegmenter, SegmenterKind};
use deva::tracker::{TrackedFrame, Tracker};
use deva::video::Frame;
use deva::Result;
use std::cell::RefCell;
use std::rc::Rc;

const W: usize = 64;
const H: usize = 36;

/// One propagator call.
#[derive(Debug, Clone, PartialEq)]
enum Call {
    Propagate(usize),
    Update(usize, Vec<ObjectId>, bool),
    Align(usize, usize),
    Remove(Vec<ObjectId>),
    Reset,
}

type Log<T> = Rc<RefCell<Vec<T>>>;

/// A segmenter call: frame index and, if given, the `tracked` mask's (area, width, height).
type SegmentCall = (usize, Option<(usize, usize, usize)>);

/// `StaticPropagator` plus a log of calls and of the frame sizes it saw.
struct Recorder {
    inner: StaticPropagator,
    calls: Log<Call>,
    sizes: Log<(usize, usize)>,
}

impl Propagator for Recorder {
    fn name(&self) -> &str {
        "recorder"
    }
    fn objects(&self) -> &[ObjectId] {
        self.inner.objects()
    }
    fn has_memory(&self) -> bool {
        self.inner.has_memory()
    }
    fn propagate(&mut self, frame: &Frame) -> Result<ObjectProbs> {
        self.calls.borrow_mut().push(Call::Propagate(frame.index));
        self.sizes
            .borrow_mut()
            .push((frame.width(), frame.height()));
        self.inner.propagate(frame)
    }
    fn update(&mut self, frame: &Frame, masks: &ObjectProbs, memorize: bool) -> Result<()> {
        let ids = masks.ids().to_vec();
        self.calls
            .borrow_mut()
            .push(Call::Update(frame.index, ids, memorize));
        self.inner.update(frame, masks, memorize)
    }
    fn remove_objects(&mut self, ids: &[ObjectId]) -> Result<()> {
        self.calls.borrow_mut().push(Call::Remove(ids.to_vec()));
        self.inner.remove_objects(ids)
    }
    fn align(&mut self, src: &Frame, masks: &ObjectProbs, dst: &Frame) -> Result<ObjectProbs> {
        self.calls
            .borrow_mut()
            .push(Call::Align(src.index, dst.index));
        self.inner.align(src, masks, dst)
    }
    fn release_frame(&mut self, _index: usize) {}
    fn reset(&mut self) {
        self.calls.borrow_mut().push(Call::Reset);
        self.inner.reset()
    }
}

/// What a scripted segmenter proposes on frame `t` of a `w × h` video.
type ScriptFn = dyn Fn(usize, usize, usize) -> Option<Segmentation>;

/// Returns scripted segmentations and logs (frame, area of the `tracked` mask, its size).
struct Script {
    kind: SegmenterKind,
    script: Box<ScriptFn>,
    log: Log<SegmentCall>,
}

impl ImageSegmenter for Script {
    fn name(&self) -> &str {
        "script"
    }
    fn kind(&self) -> SegmenterKind {
        self.kind
    }
    fn segment(
        &mut self,
        frame: &Frame,
        tracked: Option<&BinaryMask>,
    ) -> Result<Option<Segmentation>> {
        let t = tracked.map(|m| (m.area(), m.width(), m.height()));
        self.log.borrow_mut().push((frame.index, t));
        Ok((self.script)(frame.index, frame.width(), frame.height()))
    }
}

struct Harness {
    calls: Log<Call>,
    sizes: Log<(usize, usize)>,
    segmented: Log<SegmentCall>,
}

impl Harness {
    fn updates(&self) -> Vec<(usize, Vec<ObjectId>, bool)> {
        self.calls
            .borrow()
            .iter()
            .filter_map(|c| match c {
                Call::Update(t, ids, m) => Some((*t, ids.clone(), *m)),
                _ => None,
            })
            .collect()
    }
    fn memorised(&self) -> Vec<usize> {
        self.updates()
            .into_iter()
            .filter(|u| u.2)
            .map(|u| u.0)
            .collect()
    }
    fn segmented_frames(&self) -> Vec<usize> {
        self.segmented.borrow().iter().map(|s| s.0).collect()
    }
}

fn tracker(
    config: &Config,
    kind: SegmenterKind,
    propagate: bool,
    script: impl Fn(usize, usize, usize) -> Option<Segmentation> + 'static,
) -> (Tracker<'static>, Harness) {
    let h = Harness {
        calls: Rc::default(),
        sizes: Rc::default(),
        segmented: Rc::default(),
    };
    let seg = Script {
        kind,
        script: Box::new(script),
        log: h.segmented.clone(),
    };
    let prop: Option<Box<dyn Propagator>> = propagate.then(|| {
        Box::new(Recorder {
            inner: StaticPropagator::new(),
            calls: h.calls.clone(),
            sizes: h.sizes.clone(),
        }) as Box<dyn Propagator>
    });
    (Tracker::new(config, Box::new(seg), prop).unwrap(), h)
}

fn frame(t: usize) -> Frame {
    Frame {
        index: t,
        name: format!("{t:05}"),
        image: image::RgbImage::new(W as u32, H as u32).into(),
    }
}

fn rect(w: usize, h: usize, x0: usize, y0: usize, rw: usize, rh: usize) -> BinaryMask {
    BinaryMask::from_fn(w, h, |x, y| {
        x >= x0 && x < x0 + rw && y >= y0 && y < y0 + rh
    })
}

fn info(id: ObjectId, category: Option<u32>) -> SegmentInfo {
    SegmentInfo {
        id,
        category_id: category,
        score: None,
        isthing: None,
    }
}

/// Paints the parts in order and lists them (those left with pixels).
fn segmentation(w: usize, h: usize, parts: &[(SegmentInfo, BinaryMask)]) -> Segmentation {
    let mut map = IdMap::new(w, h);
    for (i, m) in parts {
        map.paint(m, i.id).unwrap();
    }
    let present = map.areas();
    let segments = parts
        .iter()
        .map(|(i, _)| i.clone())
        .filter(|i| present.contains_key(&i.id))
        .collect();
    Segmentation { map, segments }
}

/// A 20×20 square moving right one pixel every other frame (scaled to the frame size).
fn square(t: usize, w: usize, h: usize) -> BinaryMask {
    let s = |v: usize, full: usize, of: usize| v * of / full;
    rect(
        w,
        h,
        s(4 + t / 2, W, w),
        s(6, H, h),
        s(20, W, w),
        s(20, H, h),
    )
}

fn indices(frames: &[TrackedFrame]) -> Vec<usize> {
    frames.iter().map(|f| f.index).collect()
}

/// Steps through frames `0..n`, checking that each frame is final at once (no lag).
fn run_without_lag(tr: &mut Tracker, n: usize) -> Vec<TrackedFrame> {
    let mut out = Vec::new();
    for t in 0..n {
        let done = tr.step(frame(t)).unwrap();
        assert_eq!(indices(&done), vec![t]);
        out.extend(done);
    }
    assert!(tr.finish().unwrap().is_empty());
    out
}

fn config(temporal: Temporal) -> Config {
    let mut c = Config::default();
    c.input.size = -1;
    c.tracker.temporal = temporal;
    c
}
