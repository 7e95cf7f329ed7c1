//! The semi-online schedule (clip voting, key frame last) and image-only mode.

use super::*;
use deva::config::KeyFrame;

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
