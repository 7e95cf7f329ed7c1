//! The refiner's decisions on synthetic masks, with a scripted proposer.

use super::*;
use candle_core::Device;
use image::RgbImage;

const W: usize = 40;
const H: usize = 30;

fn frame(index: usize) -> Frame {
    Frame {
        index,
        name: format!("{index:05}"),
        image: RgbImage::new(W as u32, H as u32).into(),
    }
}

/// A filled rectangle `[x0, x1) × [y0, y1)`.
fn rect(x0: usize, y0: usize, x1: usize, y1: usize) -> BinaryMask {
    BinaryMask::from_fn(W, H, |x, y| (x0..x1).contains(&x) && (y0..y1).contains(&y))
}

fn probs(objects: &[(ObjectId, &BinaryMask)]) -> ObjectProbs {
    let mut map = IdMap::new(W, H);
    for (id, m) in objects {
        map.paint(m, *id).unwrap();
    }
    let ids: Vec<ObjectId> = objects.iter().map(|(id, _)| *id).collect();
    ObjectProbs::one_hot(&map, &ids).unwrap()
}

fn cand(mask: BinaryMask, iou: f32) -> Candidate {
    Candidate {
        mask,
        iou,
        low_res: Some(Tensor::full(iou, (1, 4, 4), &Device::Cpu).unwrap()),
    }
}

/// Answers each call with the next scripted list of candidates per prompt, and records the
/// prompts it was given.
#[derive(Default)]
struct Scripted {
    answers: Vec<Vec<Vec<Candidate>>>,
    seen: Vec<Vec<BoxPrompt>>,
}

impl MaskProposer for Scripted {
    fn propose(
        &mut self,
        _: &Frame,
        prompts: &[BoxPrompt],
        _: bool,
    ) -> Result<Vec<Vec<Candidate>>> {
        self.seen.push(prompts.to_vec());
        assert!(!self.answers.is_empty(), "unexpected proposer call");
        let a = self.answers.remove(0);
        assert_eq!(a.len(), prompts.len());
        Ok(a)
    }
}

fn refiner(answers: Vec<Vec<Vec<Candidate>>>, config: RefineConfig) -> MaskRefiner<Scripted> {
    MaskRefiner::new(
        Scripted {
            answers,
            seen: Vec::new(),
        },
        config,
    )
    .unwrap()
}

#[test]
fn the_candidate_agreeing_with_the_propagated_mask_wins_over_a_confident_part() {
    let propagated = rect(10, 10, 20, 20);
    let part = rect(12, 12, 15, 15);
    let whole = rect(11, 10, 21, 20);
    let everything = rect(0, 0, W, H);
    let mut r = refiner(
        vec![vec![vec![
            cand(part.clone(), 0.99),
            cand(whole.clone(), 0.85),
            cand(everything, 0.95),
        ]]],
        RefineConfig::default(),
    );
    let out = r
        .refine(&frame(0), &probs(&[(7, &propagated)]))
        .unwrap()
        .expect("accepted");
    assert_eq!(out.argmax().mask(7), whole);
    let s = r.scores(0).unwrap();
    assert_eq!(s.len(), 1);
    assert!(s[0].accepted && !s[0].reprompted);
    assert_eq!(s[0].iou, 0.85);
    let expected = whole.iou(&propagated).unwrap() as f32;
    assert_eq!(s[0].agreement, Some(expected));
    // The prompt was the propagated box grown by the margin.
    let b = r.proposer_mut().seen[0][0].bbox;
    assert_eq!(b, grow_box([10.0, 10.0, 20.0, 20.0], 0.1, W, H));
    assert_eq!(b, [9.0, 9.0, 21.0, 21.0]);
}

#[test]
fn gates_reject_low_predicted_iou_and_disagreement() {
    let propagated = rect(10, 10, 20, 20);
    let p = probs(&[(1, &propagated)]);
    // Good shape, low confidence.
    let mut r = refiner(
        vec![vec![vec![cand(rect(10, 10, 20, 21), 0.79)]]],
        RefineConfig::default(),
    );
    assert!(r.refine(&frame(0), &p).unwrap().is_none());
    assert!(!r.scores(0).unwrap()[0].accepted);
    // Confident, but elsewhere.
    let mut r = refiner(
        vec![vec![vec![cand(rect(25, 0, 40, 10), 0.99)]]],
        RefineConfig::default(),
    );
    assert!(r.refine(&frame(0), &p).unwrap().is_none());
    assert_eq!(r.scores(0).unwrap()[0].agreement, Some(0.0));
    // The same with the gates open is accepted.
    let open = RefineConfig {
        iou_gate: 0.0,
        agreement_gate: 0.0,
        ..RefineConfig::default()
    };
    let mut r = refiner(vec![vec![vec![cand(rect(25, 0, 40, 10), 0.5)]]], open);
    let out = r.refine(&frame(0), &p).unwrap().unwrap();
    assert_eq!(out.argmax().mask(1), rect(25, 0, 40, 10));
}

#[test]
fn a_sudden_area_change_is_rejected_when_gated() {
    let propagated = rect(10, 10, 20, 20); // 100 pixels
    let p = probs(&[(1, &propagated)]);
    let gated = RefineConfig {
        max_area_change: 1.3,
        ..RefineConfig::default()
    };
    // 144 pixels (× 1.44), agreement 0.69: passes the IoU and agreement gates.
    let grown = || vec![vec![vec![cand(rect(10, 10, 22, 22), 0.9)]]];
    let mut r = refiner(grown(), RefineConfig::default());
    assert!(r.refine(&frame(0), &p).unwrap().is_some());
    let mut r = refiner(grown(), gated.clone());
    assert!(r.refine(&frame(0), &p).unwrap().is_none());
    assert!(!r.scores(0).unwrap()[0].accepted);
    // 121 pixels (× 1.21) and 81 pixels (÷ 1.23) are within the factor.
    for m in [rect(10, 10, 21, 21), rect(11, 11, 20, 20)] {
        let mut r = refiner(vec![vec![vec![cand(m.clone(), 0.9)]]], gated.clone());
        let out = r.refine(&frame(0), &p).unwrap().unwrap();
        assert_eq!(out.argmax().mask(1), m);
    }
    // 64 pixels (÷ 1.56) is not.
    let mut r = refiner(
        vec![vec![vec![cand(rect(12, 12, 20, 20), 0.9)]]],
        gated.clone(),
    );
    assert!(r.refine(&frame(0), &p).unwrap().is_none());
    let bad = RefineConfig {
        max_area_change: 0.5,
        ..RefineConfig::default()
    };
    assert!(bad
        .validate()
        .unwrap_err()
        .to_string()
        .contains("max_area_change"));
}

#[test]
fn creep_is_rejected_once_the_area_changes_multiply_past_max_drift() {
    // Each frame SAM returns a mask a little larger than the propagated one (the accepted
    // mask is what gets propagated next): 100 → 110 → 121 → 132 pixels.
    let steps = [
        (rect(10, 10, 20, 20), rect(10, 10, 21, 20)),
        (rect(10, 10, 21, 20), rect(10, 10, 21, 21)),
        (rect(10, 10, 21, 21), rect(10, 10, 22, 21)),
    ];
    let run = |config: RefineConfig| -> Vec<bool> {
        let answers = steps
            .iter()
            .map(|(_, c)| vec![vec![cand(c.clone(), 0.95)]])
            .collect();
        let mut r = refiner(answers, config);
        steps
            .iter()
            .enumerate()
            .map(|(i, (p, _))| {
                r.refine(&frame(i), &probs(&[(1, p)])).unwrap();
                r.scores(i).unwrap()[0].accepted
            })
            .collect()
    };
    // Per-frame gates (× 1.1 a frame) accept every step.
    let per_frame = RefineConfig {
        max_area_change: 1.15,
        ..RefineConfig::default()
    };
    assert_eq!(run(per_frame.clone()), [true, true, true]);
    // × 1.1, × 1.21 are within 1.25; × 1.32 is not.
    let drift = RefineConfig {
        max_drift: 1.25,
        ..per_frame
    };
    assert_eq!(run(drift), [true, true, false]);

    // What the propagation changes does not count, and a mask undoing growth is accepted.
    let mut r = refiner(
        vec![
            vec![vec![cand(rect(10, 10, 21, 21), 0.95)]], // 100 → 121: × 1.21
            vec![vec![cand(rect(0, 0, 5, 5), 0.95)]],     // 25 → 25 (object shrank)
            vec![vec![cand(rect(0, 0, 5, 6), 0.95)]],     // 25 → 30: × 1.45 in all
            vec![vec![cand(rect(0, 0, 4, 6), 0.95)]],     // 25 → 24: × 1.16 in all
            vec![vec![cand(rect(0, 0, 5, 5), 0.95)]],     // re-prompted: a new history
            vec![vec![cand(rect(0, 0, 6, 5), 0.95)]],     // 25 → 30: × 1.2, not × 1.39
        ],
        RefineConfig {
            max_drift: 1.25,
            ..RefineConfig::default()
        },
    );
    let empty = BinaryMask::from_fn(W, H, |_, _| false);
    let seq = [
        rect(10, 10, 20, 20),
        rect(0, 0, 5, 5),
        rect(0, 0, 5, 5),
        rect(0, 0, 5, 5),
        empty,
        rect(0, 0, 5, 5),
    ];
    let accepted: Vec<bool> = seq
        .iter()
        .enumerate()
        .map(|(i, p)| {
            r.refine(&frame(i), &probs(&[(1, p)])).unwrap();
            r.scores(i).unwrap()[0].accepted
        })
        .collect();
    assert_eq!(accepted, [true, true, false, true, true, true]);
    assert!(r.scores(4).unwrap()[0].reprompted);

    let bad = RefineConfig {
        max_drift: 1.0,
        ..RefineConfig::default()
    };
    assert!(bad
        .validate()
        .unwrap_err()
        .to_string()
        .contains("max_drift"));
}

#[test]
fn an_emptied_object_is_reprompted_from_its_last_good_box() {
    let first = rect(5, 5, 15, 12);
    let refined = rect(5, 5, 16, 12);
    let back = rect(6, 6, 16, 13);
    let config = RefineConfig {
        mask_prompt: true,
        ..RefineConfig::default()
    };
    let mut r = refiner(
        vec![
            vec![vec![cand(refined.clone(), 0.9)]],
            // Re-prompted: no agreement to check, the predicted IoU decides.
            vec![vec![cand(back.clone(), 0.85)]],
        ],
        config,
    );
    r.refine(&frame(0), &probs(&[(3, &first)]))
        .unwrap()
        .unwrap();
    let empty = BinaryMask::new(W, H);
    let out = r
        .refine(&frame(1), &probs(&[(3, &empty)]))
        .unwrap()
        .expect("re-prompted object comes back");
    assert_eq!(out.argmax().mask(3), back);
    let s = r.scores(1).unwrap()[0];
    assert!(s.accepted && s.reprompted && s.agreement.is_none());
    let seen = &r.proposer_mut().seen;
    // The box of the accepted refinement (not of the propagated mask), grown.
    assert_eq!(seen[1][0].bbox, grow_box([5.0, 5.0, 16.0, 12.0], 0.1, W, H));
    // The mask prompt is the accepted candidate's low-resolution logits.
    assert!(seen[0][0].mask_input.is_none());
    let m = seen[1][0].mask_input.as_ref().expect("mask prompt");
    assert_eq!(m.flatten_all().unwrap().to_vec1::<f32>().unwrap()[0], 0.9);
    // Without re-prompting an empty object is left alone (no proposer call).
    let mut r = refiner(
        vec![vec![vec![cand(refined, 0.9)]]],
        RefineConfig {
            reprompt_empty: false,
            ..RefineConfig::default()
        },
    );
    r.refine(&frame(0), &probs(&[(3, &first)])).unwrap();
    assert!(r
        .refine(&frame(1), &probs(&[(3, &empty)]))
        .unwrap()
        .is_none());
}

#[test]
fn only_every_kth_frame_is_refined() {
    let m = rect(10, 10, 20, 20);
    let config = RefineConfig {
        every: 2,
        ..RefineConfig::default()
    };
    let mut r = refiner(vec![vec![vec![cand(rect(10, 10, 21, 20), 0.9)]]], config);
    assert!(r.refine(&frame(1), &probs(&[(1, &m)])).unwrap().is_none());
    assert!(r.scores(1).is_none());
    assert!(r.refine(&frame(2), &probs(&[(1, &m)])).unwrap().is_some());
}

#[test]
fn refined_objects_replace_their_pixels_and_smaller_ones_stay_on_top() {
    let big = rect(0, 0, 30, 30);
    let small = rect(20, 5, 30, 15);
    let p = probs(&[(1, &big), (2, &small)]);
    let big_refined = rect(0, 0, 32, 30);
    let small_refined = rect(22, 5, 32, 15);
    let mut r = refiner(
        vec![vec![
            vec![cand(big_refined.clone(), 0.9)],
            vec![cand(small_refined.clone(), 0.9)],
        ]],
        RefineConfig::default(),
    );
    let out = r.refine(&frame(0), &p).unwrap().unwrap();
    let map = out.argmax();
    assert_eq!(map.mask(2), small_refined);
    let mut expect_big = big_refined;
    for (b, s) in expect_big.data_mut().iter_mut().zip(small_refined.data()) {
        *b &= !*s;
    }
    assert_eq!(map.mask(1), expect_big);
    assert_eq!(out.ids(), [1, 2]);
}

#[test]
fn boxes_grow_by_the_margin_and_stay_in_the_frame() {
    assert_eq!(
        grow_box([10.0, 10.0, 30.0, 20.0], 0.5, 100, 100),
        [0.0, 5.0, 40.0, 25.0]
    );
    assert_eq!(
        grow_box([90.0, 0.0, 100.0, 10.0], 0.2, 95, 50),
        [88.0, 0.0, 95.0, 12.0]
    );
    assert_eq!(
        grow_box([1.0, 2.0, 3.0, 4.0], 0.0, 9, 9),
        [1.0, 2.0, 3.0, 4.0]
    );
}

#[test]
fn last_good_gates_accept_the_object_inside_a_grown_propagated_mask() {
    // Frame 0: the object (10 × 10) is first seen; frame 1: the propagated mask has grown to
    // 20 × 16 around it (a drifting flow), and SAM offers the object, a part of it, and
    // everything around.
    let object = rect(10, 10, 20, 20);
    let grown = rect(5, 7, 25, 23);
    let offers = || {
        vec![
            vec![vec![cand(object.clone(), 0.95)]],
            vec![vec![
                cand(rect(12, 12, 16, 16), 0.97),
                cand(object.clone(), 0.9),
                cand(rect(0, 0, W, H), 0.85),
            ]],
        ]
    };
    let config = |reference| RefineConfig {
        agreement_gate: 0.7,
        max_area_change: 1.3,
        gate_reference: reference,
        ..RefineConfig::default()
    };
    // Against the propagated mask (IoU 100 / 320, area × 3.2) the object is rejected.
    let mut r = refiner(offers(), config(GateReference::Propagated));
    r.refine(&frame(0), &probs(&[(1, &object)])).unwrap();
    assert!(r
        .refine(&frame(1), &probs(&[(1, &grown)]))
        .unwrap()
        .is_none());
    assert!(!r.scores(1).unwrap()[0].accepted);
    // Against the last good mask: all of it lies inside the propagated mask and its area is
    // the first seen one's; the part (inside too, 16 pixels) and everything (area × 12) lose.
    let mut r = refiner(offers(), config(GateReference::LastGood));
    r.refine(&frame(0), &probs(&[(1, &object)])).unwrap();
    let out = r
        .refine(&frame(1), &probs(&[(1, &grown)]))
        .unwrap()
        .unwrap();
    assert_eq!(out.argmax().mask(1), object);
    let score = r.scores(1).unwrap()[0];
    assert!(score.accepted);
    assert_eq!(score.agreement, Some(1.0));
    // The part alone, though inside the propagated mask, fails the area gate (÷ 6.25).
    let mut r = refiner(
        vec![
            vec![vec![cand(object.clone(), 0.95)]],
            vec![vec![cand(rect(12, 12, 16, 16), 0.97)]],
        ],
        config(GateReference::LastGood),
    );
    r.refine(&frame(0), &probs(&[(1, &object)])).unwrap();
    assert!(r
        .refine(&frame(1), &probs(&[(1, &grown)]))
        .unwrap()
        .is_none());
    assert_eq!(r.scores(1).unwrap()[0].agreement, Some(1.0));
    let c: RefineConfig = toml::from_str("gate_reference = \"last_good\"").unwrap();
    assert_eq!(c.gate_reference, GateReference::LastGood);
}

/// The mask `reference`'s refiner keeps on frame 1 (`None`: rejected), after frame 0 where the
/// object `rect(10, 10, 20, 20)` was propagated and SAM's identical mask accepted; on frame 1
/// the propagated mask is `propagated` and SAM offers `offers`.
fn frame1_decision(
    reference: GateReference,
    propagated: &BinaryMask,
    offers: Vec<Candidate>,
) -> Option<BinaryMask> {
    let object = rect(10, 10, 20, 20);
    let config = RefineConfig {
        agreement_gate: 0.7,
        max_area_change: 1.3,
        gate_reference: reference,
        ..RefineConfig::default()
    };
    let mut r = refiner(
        vec![vec![vec![cand(object.clone(), 0.95)]], vec![offers]],
        config,
    );
    assert!(r
        .refine(&frame(0), &probs(&[(1, &object)]))
        .unwrap()
        .is_some());
    let out = r.refine(&frame(1), &probs(&[(1, propagated)])).unwrap();
    assert_eq!(r.scores(1).unwrap()[0].accepted, out.is_some());
    out.map(|o| o.argmax().mask(1))
}

#[test]
fn either_gates_accept_what_one_gate_set_accepts_and_keep_the_best_iou_among_passing() {
    use GateReference::{Either, LastGood, Propagated};
    let object = rect(10, 10, 20, 20);
    // The object grew by half in one frame and the propagated mask followed: IoU 1 with the
    // propagated mask (A passes), area × 1.5 against the last good mask (L fails).
    let grew = rect(10, 10, 25, 20);
    let offer = || vec![cand(grew.clone(), 0.9)];
    assert_eq!(
        frame1_decision(Propagated, &grew, offer()),
        Some(grew.clone())
    );
    assert_eq!(frame1_decision(LastGood, &grew, offer()), None);
    assert_eq!(frame1_decision(Either, &grew, offer()), Some(grew.clone()));
    // The propagated mask grew around the object: IoU 100 / 320 (A fails), all of it inside
    // and the last good area (L passes).
    let grown = rect(5, 7, 25, 23);
    let offer = || vec![cand(object.clone(), 0.9)];
    assert_eq!(frame1_decision(Propagated, &grown, offer()), None);
    assert_eq!(
        frame1_decision(LastGood, &grown, offer()),
        Some(object.clone())
    );
    assert_eq!(
        frame1_decision(Either, &grown, offer()),
        Some(object.clone())
    );
    // A part inside the grown mask: IoU 16 / 320 (A fails), area ÷ 6.25 (L fails); and
    // everything: IoU 320 / 1200, area × 12.
    for part in [rect(12, 12, 16, 16), rect(0, 0, W, H)] {
        for reference in [Propagated, LastGood, Either] {
            let offer = vec![cand(part.clone(), 0.97)];
            assert_eq!(frame1_decision(reference, &grown, offer), None);
        }
    }
    // Of several outputs, "either" keeps the one that passes (the object, though its IoU with
    // the grown mask is below everything's)...
    let offers = || {
        vec![
            cand(rect(12, 12, 16, 16), 0.97),
            cand(object.clone(), 0.9),
            cand(rect(0, 0, W, H), 0.85),
        ]
    };
    assert_eq!(
        frame1_decision(Either, &grown, offers()),
        Some(object.clone())
    );
    // ...and among outputs that pass, the best IoU with the propagated mask (110 pixels,
    // IoU 1), where "last_good" keeps the one of the last good size (100 pixels inside).
    let wider = rect(10, 10, 21, 20);
    let offers = || vec![cand(object.clone(), 0.9), cand(wider.clone(), 0.9)];
    assert_eq!(
        frame1_decision(LastGood, &wider, offers()),
        Some(object.clone())
    );
    assert_eq!(
        frame1_decision(Either, &wider, offers()),
        Some(wider.clone())
    );
    assert_eq!(frame1_decision(Propagated, &wider, offers()), Some(wider));
    let c: RefineConfig = toml::from_str("gate_reference = \"either\"").unwrap();
    assert_eq!(c.gate_reference, Either);
}
