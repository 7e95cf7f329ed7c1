//! The offline schedule: every frame at finish, from the key frame.

use super::*;

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
