//! The tracker's schedules end to end, with a scripted segmenter (synthetic moving squares)
//! and the zero-motion `StaticPropagator`, wrapped in a recorder that logs every call.

mod common;

use deva::config::{Config, KeyFrame, Temporal};
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

#[test]
fn online_emits_every_frame_at_once_and_merges_every_k_frames() {
    let mut c = config(Temporal::Online);
    c.tracker.mem_every = 3;
    let (mut tr, h) = tracker(&c, SegmenterKind::Proposals, true, |t, w, hh| {
        Some(segmentation(
            w,
            hh,
            &[(info(3, Some(t as u32 % 2)), square(t, w, hh))],
        ))
    });
    let out = run_without_lag(&mut tr, 12);
    assert_eq!(h.segmented_frames(), vec![0, 5, 10]);
    // Frame 0 has no tracked object yet; later detection frames see the tracked square.
    let seen = h.segmented.borrow().clone();
    assert_eq!(seen[0].1, None);
    assert_eq!(seen[1].1, Some((400, W, H)));
    // Merged at 0, 5, 10; memorised there and when 3 frames passed since (3, 8).
    assert_eq!(h.memorised(), vec![0, 3, 5, 8, 10]);
    for f in &out {
        let seg = f.segmentation();
        assert_eq!(seg.map.ids(), vec![3], "frame {}", f.index);
    }
    // Frame 5 is the union of the propagated (frame 0's) and the new square.
    let mut union = square(0, W, H);
    union.union_with(&square(5, W, H)).unwrap();
    assert_eq!(out[5].segmentation().map.mask(3), union);
    assert_eq!(out[4].segmentation().map.mask(3), square(0, W, H));
    // Categories 0 (frames 0, 10) and 1 (frame 5): the mode is 0.
    assert_eq!(out[11].objects[0].category_id, Some(0));
}

/// Frames 0..n of the semi-online script: a square seen on every frame, a spurious blob on
/// frame 1 only, and a second object that appears from frame 10 on.
fn semi_online_script(t: usize, w: usize, h: usize) -> Option<Segmentation> {
    let mut parts = vec![(info(1, None), square(t, w, h))];
    if t == 1 {
        parts.push((info(2, None), rect(w, h, 50, 2, 6, 6)));
    }
    if t >= 10 {
        parts.push((info(4, None), rect(w, h, 40, 28, 8, 6)));
    }
    Some(segmentation(w, h, &parts))
}

#[test]
fn semi_online_lags_by_two_frames_and_votes_over_each_clip() {
    let c = config(Temporal::SemiOnline);
    let (mut tr, h) = tracker(&c, SegmenterKind::Proposals, true, semi_online_script);
    let expected: [&[usize]; 12] = [
        &[],
        &[],
        &[0, 1, 2],
        &[3],
        &[4],
        &[],
        &[],
        &[5, 6, 7],
        &[8],
        &[9],
        &[],
        &[],
    ];
    let mut out = Vec::new();
    for (t, want) in expected.iter().enumerate() {
        let done = tr.step(frame(t)).unwrap();
        assert_eq!(indices(&done), want.to_vec(), "step {t}");
        out.extend(done);
    }
    // The video ends inside the clip (10, 11, 12): the two buffered frames still vote.
    let done = tr.finish().unwrap();
    assert_eq!(indices(&done), vec![10, 11]);
    out.extend(done);
    assert_eq!(h.segmented_frames(), vec![0, 1, 2, 5, 6, 7, 10, 11]);
    let calls = h.calls.borrow().clone();
    let aligns: Vec<&Call> = calls
        .iter()
        .filter(|c| matches!(c, Call::Align(..)))
        .collect();
    assert_eq!(
        aligns,
        vec![
            &Call::Align(1, 0),
            &Call::Align(2, 0),
            &Call::Align(6, 5),
            &Call::Align(7, 5),
            &Call::Align(11, 10)
        ]
    );
    // The lone blob of frame 1 never becomes an object; the square is tracked from frame 0.
    let ids: Vec<Vec<ObjectId>> = out.iter().map(|f| f.segmentation().map.ids()).collect();
    for (t, i) in ids.iter().enumerate().take(10) {
        assert_eq!(i.len(), 1, "frame {t}: {i:?}");
    }
    let square_id = ids[0][0];
    assert!(ids.iter().all(|i| i.contains(&square_id)));
    // The object of frames 10-11 is supported by both and merged on frame 10.
    assert_eq!(ids[10].len(), 2);
    assert_eq!(ids[10], ids[11]);
    // Merge frames memorise, with objects in channel order.
    assert_eq!(h.memorised(), vec![0, 5, 10]);
}

#[test]
fn semi_online_key_frame_last_merges_on_the_last_clip_frame() {
    let mut c = config(Temporal::SemiOnline);
    c.tracker.keyframe = KeyFrame::Last;
    let (mut tr, h) = tracker(&c, SegmenterKind::Proposals, true, semi_online_script);
    let mut out = Vec::new();
    for t in 0..3 {
        out.extend(tr.step(frame(t)).unwrap());
    }
    assert_eq!(indices(&out), vec![0, 1, 2]);
    // Frames 0 and 1 are propagated (nothing tracked yet), frame 2 gets the merge.
    assert!(out[0].segmentation().map.ids().is_empty());
    assert!(out[1].segmentation().map.ids().is_empty());
    assert_eq!(out[2].segmentation().map.ids().len(), 1);
    let calls = h.calls.borrow().clone();
    assert!(calls.contains(&Call::Align(0, 2)) && calls.contains(&Call::Align(1, 2)));
}

#[test]
fn a_clip_without_any_proposal_is_only_propagated() {
    let mut c = config(Temporal::Online);
    c.tracker.max_missed_detection_count = 0;
    // Proposals on frame 0 only; None afterwards (e.g. precomputed detections skipping).
    let (mut tr, _h) = tracker(&c, SegmenterKind::Proposals, true, |t, w, hh| {
        (t == 0).then(|| segmentation(w, hh, &[(info(1, None), square(0, w, hh))]))
    });
    for t in 0..12 {
        let f = tr.step(frame(t)).unwrap().remove(0);
        assert_eq!(f.segmentation().map.ids(), vec![1], "frame {t}");
    }
    // An empty segmentation, however, is a detection of nothing: the object is missed.
    let (mut tr, _h) = tracker(&c, SegmenterKind::Proposals, true, |t, w, hh| {
        let parts = if t == 0 {
            vec![(info(1, None), square(0, w, hh))]
        } else {
            vec![]
        };
        Some(segmentation(w, hh, &parts))
    });
    assert_eq!(tr.step(frame(0)).unwrap()[0].objects.len(), 1);
    for t in 1..5 {
        tr.step(frame(t)).unwrap();
    }
    let f = tr.step(frame(5)).unwrap().remove(0);
    assert!(f.objects.is_empty() && f.segmentation().map.ids().is_empty());
}

#[test]
fn offline_returns_every_frame_at_finish_from_the_key_frame() {
    let mut c = config(Temporal::Offline);
    c.tracker.num_voting_frames = 3;
    // Sampled frames of 10: 1, 4, 7. Frame 4's object is the largest (most confident pixels).
    let (mut tr, h) = tracker(&c, SegmenterKind::Proposals, true, |t, w, hh| {
        let size = if t == 4 { 20 } else { 12 };
        Some(segmentation(
            w,
            hh,
            &[(info(9, Some(t as u32)), rect(w, hh, 10, 8, size, size))],
        ))
    });
    for t in 0..10 {
        assert!(tr.step(frame(t)).unwrap().is_empty());
    }
    let out = tr.finish().unwrap();
    assert_eq!(indices(&out), (0..10).collect::<Vec<_>>());
    assert_eq!(h.segmented_frames(), vec![1, 4, 7]);
    assert!(h.segmented.borrow().iter().all(|s| s.1.is_none()));
    let calls = h.calls.borrow().clone();
    let aligns: Vec<&Call> = calls
        .iter()
        .filter(|c| matches!(c, Call::Align(..)))
        .collect();
    assert_eq!(aligns, vec![&Call::Align(1, 4), &Call::Align(7, 4)]);
    // Backward pass 4, 3, 2, 1, 0 and forward pass 4..9, each after a reset; the key frame
    // is given (memorised) in both.
    let order: Vec<String> = calls
        .iter()
        .filter_map(|c| match c {
            Call::Reset => Some("reset".to_string()),
            Call::Update(t, _, m) => Some(format!("{t}{}", if *m { "m" } else { "" })),
            _ => None,
        })
        .collect();
    let want: Vec<&str> = vec![
        "reset", "4m", "3", "2", "1", "0", "reset", "4m", "5", "6", "7", "8", "9m",
    ];
    assert_eq!(order, want);
    // Weighted average (1/3 each): the 12x12 core is 1, the rest of the 20x20 square 1/3, so
    // the object covers the 12x12 core everywhere (zero motion).
    for f in &out {
        let seg = f.segmentation();
        assert_eq!(
            seg.map.mask(9),
            rect(W, H, 10, 8, 12, 12),
            "frame {}",
            f.index
        );
        // Categories 1, 4 and 7 once each: the smallest wins.
        assert_eq!(seg.segments[0].category_id, Some(1));
    }
}

#[test]
fn offline_without_proposals_gives_background() {
    let c = config(Temporal::Offline);
    let (mut tr, _h) = tracker(&c, SegmenterKind::Proposals, true, |_, _, _| None);
    for t in 0..4 {
        tr.step(frame(t)).unwrap();
    }
    let out = tr.finish().unwrap();
    assert_eq!(indices(&out), vec![0, 1, 2, 3]);
    assert!(out
        .iter()
        .all(|f| f.objects.is_empty() && f.segmentation().map.ids().is_empty()));
}

#[test]
fn image_only_gives_each_frame_its_raw_segmentation() {
    let c = config(Temporal::SemiOnline);
    let (mut tr, h) = tracker(&c, SegmenterKind::Proposals, false, |t, w, hh| {
        (t != 2).then(|| segmentation(w, hh, &[(info(42 + t as u32, Some(5)), square(t, w, hh))]))
    });
    for t in 0..4 {
        let f = tr.step(frame(t)).unwrap().remove(0);
        assert_eq!(f.index, t);
        let seg = f.segmentation();
        if t == 2 {
            assert!(seg.map.ids().is_empty());
        } else {
            assert_eq!(seg, semi_raw(t));
        }
    }
    assert!(tr.finish().unwrap().is_empty());
    assert!(h.segmented.borrow().iter().all(|s| s.1.is_none()));
}

fn semi_raw(t: usize) -> Segmentation {
    segmentation(W, H, &[(info(42 + t as u32, Some(5)), square(t, W, H))])
}

/// Masks like the cutie-judo example: objects 1, 2, 3, 4 introduced at frames 0, 5, 8, 13;
/// frame 8 also re-lists object 1 at a new place.
fn vos_script(t: usize, w: usize, h: usize) -> Option<Segmentation> {
    let parts = match t {
        0 => vec![(info(1, None), rect(w, h, 2, 2, 10, 10))],
        5 => vec![(info(2, Some(7)), rect(w, h, 8, 8, 10, 10))],
        8 => vec![
            (info(1, None), rect(w, h, 30, 2, 10, 10)),
            (info(3, None), rect(w, h, 50, 20, 8, 8)),
        ],
        13 => vec![(info(4, None), rect(w, h, 20, 24, 6, 6))],
        _ => return None,
    };
    Some(segmentation(w, h, &parts))
}

#[test]
fn vos_adds_objects_mid_video_and_keeps_them() {
    let mut c = config(Temporal::Vos);
    c.tracker.max_missed_detection_count = 0;
    c.tracker.mem_every = 4;
    let (mut tr, h) = tracker(&c, SegmenterKind::Reference, true, vos_script);
    let out = run_without_lag(&mut tr, 16);
    let ids = |t: usize| out[t].segmentation().map.ids();
    assert_eq!(ids(4), vec![1]);
    assert_eq!(ids(5), vec![1, 2]);
    assert_eq!(ids(8), vec![1, 2, 3]);
    assert_eq!(ids(15), vec![1, 2, 3, 4]);
    // Object 2 is given over part of object 1: 1 keeps only what 2 does not claim.
    let mut one = rect(W, H, 2, 2, 10, 10);
    for (d, &v) in one
        .data_mut()
        .iter_mut()
        .zip(rect(W, H, 8, 8, 10, 10).data())
    {
        *d &= !v;
    }
    assert_eq!(out[5].segmentation().map.mask(1), one);
    // Re-listed object 1 is overwritten with its new mask (no new id, no crash).
    assert_eq!(out[8].segmentation().map.mask(1), rect(W, H, 30, 2, 10, 10));
    assert_eq!(
        out[15].segmentation().map.mask(1),
        rect(W, H, 30, 2, 10, 10)
    );
    assert_eq!(out[15].objects.len(), 4);
    assert_eq!(out[15].objects[1].category_id, Some(7));
    // Channel order = insertion order; memory at given frames and every 4 frames after.
    let ups = h.updates();
    assert_eq!(ups[15].1, vec![1, 2, 3, 4]);
    assert_eq!(h.memorised(), vec![0, 4, 5, 8, 12, 13]);
    // Propagation is skipped only where a mask is given and nothing is tracked yet (frame 0).
    let calls = h.calls.borrow().clone();
    let propagated: Vec<usize> = calls
        .iter()
        .filter_map(|c| match c {
            Call::Propagate(t) => Some(*t),
            _ => None,
        })
        .collect();
    assert_eq!(propagated, (1..16).collect::<Vec<_>>());
}

#[test]
fn vos_given_step_zeroes_predictions_under_the_new_mask_then_aggregates() {
    let c = config(Temporal::Vos);
    let (mut tr, _h) = tracker(&c, SegmenterKind::Reference, true, vos_script);
    let mut out = Vec::new();
    for t in 0..6 {
        out.extend(tr.step(frame(t)).unwrap());
    }
    // The static propagator predicts frame 4's output for frame 5.
    let prev = &out[4].probs;
    let given = rect(W, H, 8, 8, 10, 10);
    let mut data = vec![0.0f32; W * H];
    data.extend(
        prev.object(1)
            .unwrap()
            .iter()
            .zip(given.data())
            .map(|(&v, &g)| if g { 0.0 } else { v }),
    );
    data.extend(given.data().iter().map(|&g| if g { 1.0 } else { 0.0 }));
    let expected = ObjectProbs::new(vec![1, 2], W, H, data)
        .unwrap()
        .aggregate();
    assert_eq!(out[5].probs, expected);
    // Frame 0: the aggregation of the one-hot given mask.
    let first = IdMap::from_vec(W, H, {
        let m = rect(W, H, 2, 2, 10, 10);
        m.data().iter().map(|&v| v as ObjectId).collect()
    })
    .unwrap();
    assert_eq!(
        out[0].probs,
        ObjectProbs::one_hot(&first, &[1]).unwrap().aggregate()
    );
}

#[test]
fn frames_are_resized_to_the_internal_size() {
    let mut c = config(Temporal::Online);
    c.input.size = 24; // 64x36 -> 42x24
    let (mut tr, h) = tracker(&c, SegmenterKind::Proposals, true, |t, w, hh| {
        Some(segmentation(w, hh, &[(info(1, None), square(t, w, hh))]))
    });
    let mut out = Vec::new();
    for t in 0..6 {
        out.extend(tr.step(frame(t)).unwrap());
    }
    assert!(h.sizes.borrow().iter().all(|&s| s == (42, 24)));
    assert!(out
        .iter()
        .all(|f| (f.probs.width(), f.probs.height()) == (42, 24)));
    assert!(out.iter().all(|f| (f.width, f.height) == (W, H)));
    let seg = out[0].segmentation();
    assert_eq!((seg.map.width(), seg.map.height()), (W, H));
    // The tracked mask handed to the segmenter is at the original size.
    let seen = h.segmented.borrow().clone();
    assert_eq!(seen[1].1.map(|s| (s.1, s.2)), Some((W, H)));
    assert!(seg.map.mask(1).iou(&square(0, W, H)).unwrap() > 0.8);
}

#[test]
fn bad_frames_and_segmentations_are_reported() {
    let c = config(Temporal::Online);
    let (mut tr, _h) = tracker(&c, SegmenterKind::Proposals, true, |t, w, hh| {
        Some(segmentation(w, hh, &[(info(1, None), square(t, w, hh))]))
    });
    tr.step(frame(0)).unwrap();
    let odd = Frame {
        index: 1,
        name: "odd".into(),
        image: image::RgbImage::new(W as u32 - 1, H as u32).into(),
    };
    let e = tr.step(odd).unwrap_err().to_string();
    assert!(e.contains("frame 1 (odd)") && e.contains("63x36"), "{e}");

    let (mut tr, _h) = tracker(&c, SegmenterKind::Proposals, true, |_, w, hh| {
        Some(Segmentation::empty(w / 2, hh))
    });
    let e = tr.step(frame(0)).unwrap_err().to_string();
    assert!(e.contains("script") && e.contains("frame 0"), "{e}");

    let (mut tr, _h) = tracker(&c, SegmenterKind::Proposals, true, |_, w, hh| {
        let mut s = segmentation(w, hh, &[(info(1, None), square(0, w, hh))]);
        s.segments.clear();
        Some(s)
    });
    let e = tr.step(frame(0)).unwrap_err().to_string();
    assert!(e.contains("not listed") && e.contains("00000"), "{e}");
}

/// Reads the cutie-judo masks (a reference segmenter); the one mask that is a pixel narrower
/// than the frames is resized to the frame, as a robust reader would.
struct JudoMasks {
    dir: std::path::PathBuf,
}

impl ImageSegmenter for JudoMasks {
    fn name(&self) -> &str {
        "judo-masks"
    }
    fn kind(&self) -> SegmenterKind {
        SegmenterKind::Reference
    }
    fn segment(&mut self, frame: &Frame, _: Option<&BinaryMask>) -> Result<Option<Segmentation>> {
        let path = self.dir.join(format!("{}.png", frame.name));
        if !path.exists() {
            return Ok(None);
        }
        let map = deva::imageio::read_index_png(&path)?.map;
        Ok(Some(Segmentation::from_map(
            map.resize_nearest(frame.width(), frame.height()),
        )))
    }
}

#[test]
fn vos_on_cutie_judo_keeps_every_object_introduced_mid_video() {
    let Some(root) = common::data("cutie-judo") else {
        return;
    };
    let images = root.join("images/judo");
    let masks = JudoMasks {
        dir: root.join("masks/judo"),
    };
    let mut names: Vec<String> = std::fs::read_dir(&images)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let mut vos = Config::default();
    vos.tracker.temporal = Temporal::Vos;
    let mut tracker = Tracker::new(
        &vos,
        Box::new(masks),
        Some(Box::new(StaticPropagator::new())),
    )
    .unwrap();
    let mut out = Vec::new();
    for (t, file) in names.iter().enumerate() {
        let image = deva::imageio::read_rgb(&images.join(file)).unwrap();
        let name = file.trim_end_matches(".jpg").to_string();
        let done = tracker
            .step(Frame {
                index: t,
                name,
                image: image.into(),
            })
            .unwrap();
        assert_eq!(indices(&done), vec![t]);
        out.extend(done);
    }
    // Objects appear with their masks (frames 0, 5, 8, 13) and none is ever dropped: with
    // zero motion each keeps its given mask minus what later given masks claimed.
    let (w, h) = (out[0].width, out[0].height);
    let given: Vec<(usize, BinaryMask)> = [(0, 1), (5, 2), (8, 3), (13, 4)]
        .iter()
        .map(|&(t, id)| {
            let p = root.join(format!("masks/judo/{t:05}.png"));
            let map = deva::imageio::read_index_png(&p).unwrap().map;
            (t, map.resize_nearest(w, h).mask(id))
        })
        .collect();
    for f in &out {
        let seg = f.segmentation();
        let live: Vec<usize> = given
            .iter()
            .filter(|g| g.0 <= f.index)
            .map(|g| g.0)
            .collect();
        assert_eq!(f.objects.len(), live.len(), "frame {}", f.index);
        for (k, (t, mask)) in given.iter().enumerate().filter(|(_, g)| g.0 <= f.index) {
            let mut expected = mask.clone();
            for (_, later) in given.iter().filter(|g| g.0 > *t && g.0 <= f.index) {
                for (e, &l) in expected.data_mut().iter_mut().zip(later.data()) {
                    *e &= !l;
                }
            }
            let id = k as ObjectId + 1;
            assert_eq!(seg.map.mask(id), expected, "object {id}, frame {}", f.index);
        }
    }
    assert_eq!(out.len(), names.len());
}
