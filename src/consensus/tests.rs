//! Tests of the in-clip consensus. Oracles: exhaustive enumeration of all selections, and a
//! naive re-statement of the reference algorithm (per-pair binary masks, first-match pairing,
//! sequential painting) written independently of the code under test.

use super::*;
use crate::mask::BinaryMask;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn config() -> TrackerConfig {
    TrackerConfig::default()
}

/// Sum of the weights of a selection.
fn objective(weights: &[f64], chosen: &[bool]) -> f64 {
    weights
        .iter()
        .zip(chosen)
        .filter(|(_, &c)| c)
        .map(|(w, _)| w)
        .sum()
}

/// Whether no conflicting pair is chosen.
fn feasible(chosen: &[bool], conflicts: &[(usize, usize)]) -> bool {
    conflicts.iter().all(|&(a, b)| !(chosen[a] && chosen[b]))
}

/// Enumerates every subset: (best objective, number of optimal subsets, one optimal subset).
fn brute_force(weights: &[f64], conflicts: &[(usize, usize)]) -> (f64, usize, Vec<bool>) {
    let n = weights.len();
    assert!(n <= 20);
    let mut adj = vec![0u32; n];
    for &(a, b) in conflicts {
        adj[a] |= 1 << b;
        adj[b] |= 1 << a;
    }
    let (mut best, mut count, mut arg) = (0.0f64, 0usize, 0u32);
    for set in 0u32..(1 << n) {
        if (0..n).any(|v| set & (1 << v) != 0 && adj[v] & set != 0) {
            continue;
        }
        let value: f64 = (0..n)
            .filter(|&v| set & (1 << v) != 0)
            .map(|v| weights[v])
            .sum();
        if value > best + 1e-9 {
            (best, count, arg) = (value, 1, set);
        } else if (value - best).abs() <= 1e-9 {
            count += 1;
        }
    }
    (best, count, (0..n).map(|v| arg & (1 << v) != 0).collect())
}

/// Erdős–Rényi conflicts with weights on a coarse grid (many ties, some non-positive).
fn random_instance(rng: &mut StdRng) -> (Vec<f64>, Vec<(usize, usize)>) {
    let n = rng.random_range(1..=16);
    let p = [0.1, 0.3, 0.6][rng.random_range(0..3)];
    let weights = (0..n)
        .map(|_| rng.random_range(-2i32..=6) as f64 * 0.25)
        .collect();
    let mut conflicts = Vec::new();
    for a in 0..n {
        for b in a + 1..n {
            if rng.random_bool(p) {
                conflicts.push((a, b));
            }
        }
    }
    (weights, conflicts)
}

/// DEVA-like clusters: each object is proposed on most of the clip's frames; proposals of one
/// object usually match pairwise with IoU in (0.5, 1] (sometimes a pair fails to match, so
/// clusters are not always cliques); rare spurious matches join clusters. IoUs are rounded to
/// 0.05, so equal supports (ties) are common. Weights are ΣIoU − 0.5.
fn clustered_instance(rng: &mut StdRng) -> (Vec<f64>, Vec<(usize, usize)>) {
    let frames = rng.random_range(2..=5);
    let mut members: Vec<(usize, usize)> = Vec::new(); // (object, frame)
    let mut object = 0;
    while members.len() < 16 {
        for f in 0..frames {
            if members.len() < 16 && rng.random_bool(0.8) {
                members.push((object, f));
            }
        }
        object += 1;
        if rng.random_bool(0.15) {
            break;
        }
    }
    let n = members.len();
    let mut support = vec![0.0; n];
    let mut conflicts = Vec::new();
    let iou = |rng: &mut StdRng| (rng.random_range(11..=20) as f64) * 0.05;
    for a in 0..n {
        for b in a + 1..n {
            let (same, other_frame) = (members[a].0 == members[b].0, members[a].1 != members[b].1);
            let linked = other_frame
                && if same {
                    rng.random_bool(0.9)
                } else {
                    rng.random_bool(0.03)
                };
            if linked {
                let v = iou(rng);
                support[a] += v;
                support[b] += v;
                conflicts.push((a, b));
            }
        }
    }
    (support.iter().map(|s| s - 0.5).collect(), conflicts)
}

#[test]
fn selection_equals_brute_force_on_random_instances() {
    let mut rng = StdRng::seed_from_u64(20231001);
    let mut solved_by_program = 0;
    for case in 0..600 {
        let (weights, conflicts) = match case % 3 {
            0 => random_instance(&mut rng),
            1 => clustered_instance(&mut rng),
            // All weights equal: every maximum independent set ties.
            _ => {
                let (w, c) = random_instance(&mut rng);
                (vec![0.5; w.len()], c)
            }
        };
        let chosen = select(&weights, &conflicts).unwrap();
        let (best, _, _) = brute_force(&weights, &conflicts);
        assert!(feasible(&chosen, &conflicts), "case {case}: infeasible");
        let got = objective(&weights, &chosen);
        assert!(
            (got - best).abs() < 1e-9,
            "case {case}: objective {got}, optimum {best}, weights {weights:?}, conflicts {conflicts:?}"
        );
        // Count instances that reach the integer program (a component that is no clique).
        let live: Vec<bool> = weights.iter().map(|&w| w > 0.0).collect();
        let degree = |v: usize| {
            conflicts
                .iter()
                .filter(|&&(a, b)| (a == v && live[b]) || (b == v && live[a]))
                .count()
        };
        if (0..weights.len()).any(|v| live[v] && degree(v) >= 2) {
            solved_by_program += 1;
        }
    }
    // The exact program (not only the direct cases) must have been exercised.
    assert!(solved_by_program > 100, "{solved_by_program}");
}

#[test]
fn selection_rejects_bad_input() {
    assert!(select(&[1.0, 1.0], &[(0, 2)]).is_err());
    assert!(select(&[f64::NAN], &[]).is_err());
    assert_eq!(select(&[], &[]).unwrap(), Vec::<bool>::new());
    // Non-positive weights are never chosen, even without conflicts.
    assert_eq!(
        select(&[0.0, -1.0, 0.1], &[]).unwrap(),
        vec![false, false, true]
    );
}

/// A filled rectangle (also used by the merge tests).
pub(crate) fn rect(w: usize, h: usize, x0: i32, y0: i32, rw: i32, rh: i32) -> BinaryMask {
    BinaryMask::from_fn(w, h, |x, y| {
        let (x, y) = (x as i32, y as i32);
        x >= x0 && x < x0 + rw && y >= y0 && y < y0 + rh
    })
}

/// Paints `(info, mask)` in order (later ones on top) and lists the segments in order.
fn paint(w: usize, h: usize, segments: &[(SegmentInfo, BinaryMask)]) -> Segmentation {
    let mut map = IdMap::new(w, h);
    for (info, mask) in segments {
        map.paint(mask, info.id).unwrap();
    }
    Segmentation {
        map,
        segments: segments.iter().map(|(i, _)| i.clone()).collect(),
    }
}

fn info(id: ObjectId, isthing: Option<bool>, category: u32, score: f32) -> SegmentInfo {
    SegmentInfo {
        id,
        category_id: Some(category),
        score: Some(score),
        isthing,
    }
}

/// A random clip of aligned proposals (at most 16 in all) made of jittered rectangles.
fn random_clip(rng: &mut StdRng) -> Vec<Option<Segmentation>> {
    let (w, h) = (24, 24);
    let frames = rng.random_range(2..=4);
    let objects: Vec<(i32, i32, i32, i32, Option<bool>)> = (0..rng.random_range(1..=5))
        .map(|_| {
            let isthing = [None, Some(false), Some(true)][rng.random_range(0..3)];
            (
                rng.random_range(0..18),
                rng.random_range(0..18),
                rng.random_range(4..12),
                rng.random_range(4..12),
                isthing,
            )
        })
        .collect();
    let mixed_groups = rng.random_bool(0.5);
    let mut total = 0;
    (0..frames)
        .map(|f| {
            if rng.random_bool(0.1) {
                return None;
            }
            let mut segs = Vec::new();
            for (k, &(x, y, rw, rh, isthing)) in objects.iter().enumerate() {
                if total >= 16 || !rng.random_bool(0.8) {
                    continue;
                }
                let j = |rng: &mut StdRng| rng.random_range(-2..=2);
                let mask = rect(w, h, x + j(rng), y + j(rng), rw + j(rng), rh + j(rng));
                let isthing = if mixed_groups { isthing } else { None };
                let id = (10 * k + f + 1) as ObjectId;
                let cat = rng.random_range(0..3);
                segs.push((info(id, isthing, cat, rng.random()), mask));
                total += 1;
            }
            if total < 16 && rng.random_bool(0.3) {
                let mask = rect(w, h, rng.random_range(0..20), rng.random_range(0..20), 4, 4);
                segs.push((info(99, None, 0, 0.5), mask));
                total += 1;
            }
            let mut seg = paint(w, h, &segs);
            // Proposals can vanish in the alignment: listed but absent from the map.
            let present = seg.map.areas();
            seg.segments.sort_by_key(|s| !present.contains_key(&s.id));
            Some(seg)
        })
        .collect()
}

/// The reference's pairing, restated: for each pair of frames and each isthing group, every
/// proposal of the earlier frame takes the first not-yet-taken proposal of the later frame
/// with IoU > 0.5. Returns (weights ΣIoU − 0.5, matched pairs).
fn naive_support(clip: &[Option<Segmentation>]) -> (Vec<f64>, Vec<(usize, usize)>) {
    let frames: Vec<&Segmentation> = clip.iter().flatten().collect();
    let mut masks: Vec<Vec<BinaryMask>> = Vec::new();
    let mut offsets = Vec::new();
    let mut n = 0;
    for seg in &frames {
        offsets.push(n);
        n += seg.segments.len();
        masks.push(seg.segments.iter().map(|s| seg.map.mask(s.id)).collect());
    }
    let mut support = vec![0.0; n];
    let mut pairs = Vec::new();
    for i in 0..frames.len() {
        for j in i + 1..frames.len() {
            for group in [None, Some(false), Some(true)] {
                let mut taken = vec![false; frames[j].segments.len()];
                for (a, sa) in frames[i].segments.iter().enumerate() {
                    if sa.isthing != group {
                        continue;
                    }
                    for (b, sb) in frames[j].segments.iter().enumerate() {
                        if sb.isthing != group || taken[b] {
                            continue;
                        }
                        let inter = masks[i][a].intersection(&masks[j][b]).unwrap();
                        if inter == 0 {
                            continue;
                        }
                        let union = masks[i][a].area() + masks[j][b].area() - inter;
                        let iou = inter as f64 / union as f64;
                        if iou > 0.5 {
                            let (u, v) = (offsets[i] + a, offsets[j] + b);
                            support[u] += iou;
                            support[v] += iou;
                            pairs.push((u, v));
                            taken[b] = true;
                            break;
                        }
                    }
                }
            }
        }
    }
    (support.iter().map(|s| s - 0.5).collect(), pairs)
}

/// The reference's drawing, restated: chosen proposals painted one by one, largest first.
fn naive_render(clip: &[Option<Segmentation>], chosen: &[bool]) -> IdMap {
    let frames: Vec<&Segmentation> = clip.iter().flatten().collect();
    let mut all = Vec::new();
    for seg in &frames {
        for s in &seg.segments {
            all.push(seg.map.mask(s.id));
        }
    }
    let mut order: Vec<usize> = (0..all.len()).filter(|&i| chosen[i]).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(all[i].area()));
    let (w, h) = (frames[0].map.width(), frames[0].map.height());
    let mut map = IdMap::new(w, h);
    for i in order {
        map.paint(&all[i], i as ObjectId + 1).unwrap();
    }
    map
}

#[test]
fn vote_equals_the_naive_reference_on_random_clips() {
    let mut rng = StdRng::seed_from_u64(4);
    let mut unique = 0;
    for case in 0..300 {
        let clip = random_clip(&mut rng);
        if clip.iter().all(Option::is_none) {
            assert!(vote(&clip, &config()).is_err());
            continue;
        }
        let graph = SupportGraph::new(&clip, &config()).unwrap();
        let (weights, pairs) = naive_support(&clip);
        assert_eq!(graph.weights.len(), weights.len(), "case {case}");
        for (a, b) in graph.weights.iter().zip(&weights) {
            assert!((a - b).abs() < 1e-12, "case {case}: {a} vs {b}");
        }
        let mut ours = graph.conflicts.clone();
        let mut theirs = pairs.clone();
        ours.sort_unstable();
        theirs.sort_unstable();
        assert_eq!(ours, theirs, "case {case}");

        let chosen = select(&graph.weights, &graph.conflicts).unwrap();
        let (best, count, optimal) = brute_force(&weights, &pairs);
        assert!(feasible(&chosen, &pairs));
        assert!(
            (objective(&weights, &chosen) - best).abs() < 1e-9,
            "case {case}"
        );
        if count == 1 {
            unique += 1;
            assert_eq!(chosen, optimal, "case {case}");
            let out = vote(&clip, &config()).unwrap();
            assert_eq!(out.map, naive_render(&clip, &optimal), "case {case}");
            let ids: BTreeSet<ObjectId> = out.segments.iter().map(|s| s.id).collect();
            assert_eq!(ids, out.map.ids().into_iter().collect(), "case {case}");
        }
    }
    assert!(unique > 100, "{unique}");
}

/// Figure 4 of the paper: three frames projected on the key frame. Object A is proposed on all
/// three frames with slight shifts; B only on frame 1; C on frames 0 and 2.
#[test]
fn figure_4_keeps_the_best_supported_drops_the_lone_and_never_both() {
    let (w, h) = (48, 24);
    let a = |dx| rect(w, h, dx, 0, 10, 10);
    let clip = vec![
        Some(paint(
            w,
            h,
            &[
                (info(1, None, 1, 0.9), a(0)),
                (info(2, None, 5, 0.8), rect(w, h, 30, 0, 10, 10)),
            ],
        )),
        Some(paint(
            w,
            h,
            &[
                (info(1, None, 2, 0.6), a(1)),
                (info(2, None, 7, 0.9), rect(w, h, 20, 14, 6, 6)),
            ],
        )),
        Some(paint(
            w,
            h,
            &[
                (info(1, None, 1, 0.3), a(2)),
                (info(2, None, 5, 0.4), rect(w, h, 30, 0, 10, 8)),
            ],
        )),
    ];
    // Supports by hand: IoU(A0,A1) = IoU(A1,A2) = 90/110, IoU(A0,A2) = 80/120, so A1 (frame 1,
    // global id 3) has the most support; B (id 4) has none; C0 (id 2) and C2 (id 6) support
    // each other with IoU 80/100 and only one may stay.
    let out = vote(&clip, &config()).unwrap();
    let ids: Vec<ObjectId> = out.segments.iter().map(|s| s.id).collect();
    assert_eq!(ids.len(), 2, "{ids:?}");
    assert!(ids.contains(&3));
    assert!(ids.contains(&2) ^ ids.contains(&6));
    assert_eq!(out.map.mask(3), a(1));
    assert!(out.map.mask(4).is_empty());
    // A1 absorbed the votes of A0 and A2: categories {2, 1, 1} -> 1, scores mean 0.6.
    let a1 = out.segments.iter().find(|s| s.id == 3).unwrap();
    assert_eq!(a1.info().category_id, Some(1));
    assert!((a1.info().score.unwrap() - 0.6).abs() < 1e-6);
}

#[test]
fn smaller_chosen_proposals_are_drawn_on_top() {
    // Frames 0-2 see a 10x10 square E; frames 3-4 see E with a 3x3 hole filled by F.
    let (w, h) = (16, 16);
    let e = rect(w, h, 2, 2, 10, 10);
    let f = rect(w, h, 5, 5, 3, 3);
    let mut holed = e.clone();
    for (d, &v) in holed.data_mut().iter_mut().zip(f.data()) {
        *d &= !v;
    }
    let full = || Some(paint(w, h, &[(info(1, None, 0, 1.0), e.clone())]));
    let split = || {
        Some(paint(
            w,
            h,
            &[
                (info(1, None, 0, 1.0), holed.clone()),
                (info(2, None, 0, 1.0), f.clone()),
            ],
        ))
    };
    let clip = vec![full(), full(), full(), split(), split()];
    let out = vote(&clip, &config()).unwrap();
    // A full E (ids 1..3) is chosen over a holed one; F (id 5 or 7) stays visible on top.
    let e_id = out.map.get(2, 2);
    let f_id = out.map.get(6, 6);
    assert!((1..=3).contains(&e_id), "{e_id}");
    assert!(f_id == 5 || f_id == 7, "{f_id}");
    assert_eq!(out.map.mask(f_id), f);
    assert_eq!(out.map.mask(e_id), holed);
}

#[test]
fn clip_consensus_aligns_other_frames_onto_the_key_frame() {
    let (w, h) = (20, 10);
    let seg = |x| {
        Some(paint(
            w,
            h,
            &[(info(7, None, 0, 1.0), rect(w, h, x, 2, 6, 6))],
        ))
    };
    // The object moves 4 px per frame; the test aligner shifts masks back by 4 px per frame
    // of distance, so aligned proposals coincide on the key frame (the middle one, x = 8).
    let clip = vec![seg(4), seg(8), seg(12)];
    let mut calls = Vec::new();
    let out = clip_consensus(&clip, 1, &config(), |src, dst, masks| {
        calls.push((src, dst));
        let shift = 4 * (dst as i32 - src as i32);
        let map = masks.argmax();
        let moved = IdMap::from_vec(
            w,
            h,
            (0..w * h)
                .map(|p| {
                    let (x, y) = ((p % w) as i32 - shift, p / w);
                    if x >= 0 && (x as usize) < w {
                        map.get(x as usize, y)
                    } else {
                        0
                    }
                })
                .collect(),
        )
        .unwrap();
        ObjectProbs::one_hot(&moved, masks.ids())
    })
    .unwrap();
    assert_eq!(calls, vec![(0, 1), (2, 1)]);
    assert_eq!(out.segments.len(), 1);
    // All three coincide: equal support; the earliest (frame 0's, id 1) is kept.
    assert_eq!(out.map.mask(1), rect(w, h, 8, 2, 6, 6));
    assert_eq!(out.segments[0].votes.categories.len(), 3);

    // A clip of one frame is its own consensus.
    let single = clip_consensus(&clip[..1], 0, &config(), |_, _, _| unreachable!()).unwrap();
    assert_eq!(single.map, clip[0].as_ref().unwrap().map);
    assert_eq!(single.segments[0].id, 7);
    assert!(clip_consensus(&clip, 3, &config(), |_, _, m| Ok(m.clone())).is_err());
}

#[test]
fn associated_consensus_weights_frames_and_picks_the_key_frame() {
    let probs = |v: [f32; 2]| {
        ObjectProbs::new(vec![3], 2, 1, vec![1.0 - v[0], 1.0 - v[1], v[0], v[1]]).unwrap()
    };
    let masks = vec![probs([0.9, 0.1]), probs([0.9, 0.85]), probs([0.2, 0.0])];
    // Without scores: key = most values > 0.8 (frame 1), uniform weights 1/3.
    let (key, avg) = associated_consensus(&masks, None, |_, _, m| Ok(m.clone())).unwrap();
    assert_eq!(key, 1);
    let expected = [(0.9 + 0.9 + 0.2) / 3.0, (0.1 + 0.85 + 0.0) / 3.0];
    for (got, want) in avg.object(3).unwrap().iter().zip(expected) {
        assert!((got - want).abs() < 1e-6, "{got} vs {want}");
    }
    // With scores: weights softmax(2·s) = e^(2s)/Σ; key = highest score (frame 2).
    let scores = [0.0f32, 0.5, 1.0];
    let mut seen = Vec::new();
    let (key, avg) = associated_consensus(&masks, Some(&scores), |s, d, m| {
        seen.push((s, d));
        Ok(m.clone())
    })
    .unwrap();
    assert_eq!(key, 2);
    assert_eq!(seen, vec![(0, 2), (1, 2)]);
    let e: Vec<f64> = scores.iter().map(|&s| (2.0 * s as f64).exp()).collect();
    let total: f64 = e.iter().sum();
    let want = (0.9 * e[0] + 0.9 * e[1] + 0.2 * e[2]) / total;
    assert!((avg.object(3).unwrap()[0] as f64 - want).abs() < 1e-6);
    assert!(associated_consensus(&masks, Some(&scores[..2]), |_, _, m| Ok(m.clone())).is_err());
    assert!(associated_consensus(&[], None, |_, _, m| Ok(m.clone())).is_err());
}

#[test]
fn clip_consensus_numbers_its_segments_from_one() {
    // Frame 0's proposal is alone (dropped), so the kept proposal is a later one (vote id 2
    // or 3); as new objects are requested by these ids, the clip's segments are numbered
    // from 1.
    let (w, h) = (12, 8);
    let seg = || {
        Some(paint(
            w,
            h,
            &[(info(5, None, 0, 1.0), rect(w, h, 2, 2, 4, 4))],
        ))
    };
    let lone = Some(paint(
        w,
        h,
        &[(info(9, None, 0, 1.0), rect(w, h, 8, 0, 3, 3))],
    ));
    let clip = vec![lone, seg(), seg()];
    let out = clip_consensus(&clip, 1, &config(), |_, _, masks| Ok(masks.clone())).unwrap();
    assert_eq!(
        out.segments.iter().map(|s| s.id).collect::<Vec<_>>(),
        vec![1]
    );
    assert_eq!(out.map.mask(1), rect(w, h, 2, 2, 4, 4));
}
