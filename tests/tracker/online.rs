//! The online schedule: merging every k frames, frames without proposals, resizing and errors.

use super::*;

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
