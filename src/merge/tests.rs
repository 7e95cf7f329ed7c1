//! Tests of the merge. The oracle for random instances is a naive re-statement of the
//! reference `segment_merging.py` (per-object binary masks, first-match pairing, painting one
//! mask after the other), written independently of the code under test.

use super::*;
use crate::consensus::tests::rect;
use crate::consensus::VotedSegment;
use crate::mask::BinaryMask;
use crate::objects::Votes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn map_of(w: usize, h: usize, parts: &[(ObjectId, BinaryMask)]) -> IdMap {
    let mut map = IdMap::new(w, h);
    for (id, m) in parts {
        map.paint(m, *id).unwrap();
    }
    map
}

fn segment(id: ObjectId, isthing: Option<bool>, category: u32, score: Option<f32>) -> VotedSegment {
    VotedSegment {
        id,
        isthing,
        votes: Votes {
            categories: vec![category],
            scores: score.into_iter().collect(),
        },
    }
}

fn consensus(w: usize, h: usize, parts: &[(VotedSegment, BinaryMask)]) -> Consensus {
    let pairs: Vec<(ObjectId, BinaryMask)> = parts.iter().map(|(s, m)| (s.id, m.clone())).collect();
    Consensus {
        map: map_of(w, h, &pairs),
        segments: parts.iter().map(|(s, _)| s.clone()).collect(),
    }
}

fn manager(objects: &[(ObjectId, Option<bool>)]) -> ObjectManager {
    let mut m = ObjectManager::new();
    for &(id, isthing) in objects {
        assert_eq!(m.add(id, isthing, Votes::default()).unwrap(), id);
    }
    m
}

fn config(max_missed: usize, incremental: bool, limit: i64) -> TrackerConfig {
    TrackerConfig {
        max_missed_detection_count: max_missed,
        incremental,
        max_num_objects: limit,
        ..TrackerConfig::default()
    }
}

/// The reference algorithm, restated naively.
fn naive_merge(
    forward: &IdMap,
    objects: &mut ObjectManager,
    proposals: &Consensus,
    config: &TrackerConfig,
) -> IdMap {
    let ours: Vec<(ObjectId, Option<bool>)> = objects
        .objects()
        .iter()
        .map(|o| (o.id, o.isthing))
        .collect();
    let our_masks: Vec<BinaryMask> = ours.iter().map(|&(id, _)| forward.mask(id)).collect();
    let new_masks: Vec<BinaryMask> = proposals
        .segments
        .iter()
        .map(|s| proposals.map.mask(s.id))
        .collect();
    let mut merged = IdMap::new(forward.width(), forward.height());
    for group in [None, Some(false), Some(true)] {
        let mut matched: Vec<Option<usize>> = vec![None; ours.len()];
        // (area, kind, index): kind 0 = new object, 1 = matched (index = ours), 2 = kept
        let mut items: Vec<(usize, u8, usize)> = Vec::new();
        for (j, s) in proposals.segments.iter().enumerate() {
            if s.isthing != group {
                continue;
            }
            let mut found = false;
            for (i, &(_, isthing)) in ours.iter().enumerate() {
                if isthing != group || matched[i].is_some() {
                    continue;
                }
                let inter = new_masks[j].intersection(&our_masks[i]).unwrap();
                if inter == 0 {
                    continue;
                }
                let union = new_masks[j].area() + our_masks[i].area() - inter;
                if inter as f64 / union as f64 > 0.5 {
                    matched[i] = Some(j);
                    items.push((union, 1, i));
                    found = true;
                    break;
                }
            }
            if !found {
                items.push((new_masks[j].area(), 0, j));
            }
        }
        for (i, &(_, isthing)) in ours.iter().enumerate() {
            if isthing == group && matched[i].is_none() {
                items.push((our_masks[i].area(), 2, i));
            }
        }
        items.sort_by_key(|&(area, _, _)| std::cmp::Reverse(area));
        for (_, kind, k) in items {
            match kind {
                0 => {
                    let s = &proposals.segments[k];
                    let id = objects.add(s.id, s.isthing, s.votes.clone()).unwrap();
                    merged.paint(&new_masks[k], id).unwrap();
                }
                1 => {
                    let (id, _) = ours[k];
                    let j = matched[k].unwrap();
                    merged.paint(&our_masks[k], id).unwrap();
                    merged.paint(&new_masks[j], id).unwrap();
                    let o = objects.get_mut(id).unwrap();
                    o.votes.absorb(&proposals.segments[j].votes);
                    o.misses = 0;
                }
                _ => {
                    let (id, _) = ours[k];
                    merged.paint(&our_masks[k], id).unwrap();
                    let o = objects.get_mut(id).unwrap();
                    if config.incremental && our_masks[k].area() >= 1 {
                        o.misses = 0;
                    } else {
                        o.misses += 1;
                    }
                }
            }
        }
    }
    let deleted = objects.remove_missed(config.max_missed_detection_count);
    merged.remap(|id| if deleted.contains(&id) { 0 } else { id })
}

#[test]
fn merge_equals_the_naive_reference_on_random_frames() {
    let mut rng = StdRng::seed_from_u64(11);
    let (w, h) = (32, 24);
    let groups = [None, Some(false), Some(true)];
    for case in 0..400 {
        let mixed = rng.random_bool(0.5);
        let group = |rng: &mut StdRng| {
            if mixed {
                groups[rng.random_range(0..3)]
            } else {
                None
            }
        };
        let n_ours = rng.random_range(0..6);
        let mut objects = ObjectManager::new();
        let mut parts = Vec::new();
        let mut boxes = Vec::new();
        for k in 0..n_ours {
            let id = objects
                .add(k as ObjectId + 1, group(&mut rng), Votes::default())
                .unwrap();
            objects.get_mut(id).unwrap().misses = rng.random_range(0..3);
            let b = (
                rng.random_range(0..26),
                rng.random_range(0..18),
                rng.random_range(3..12),
                rng.random_range(3..10),
            );
            boxes.push(b);
            // Some tracked objects have vanished from the propagated frame.
            if rng.random_bool(0.85) {
                parts.push((id, rect(w, h, b.0, b.1, b.2, b.3)));
            }
        }
        let forward = map_of(w, h, &parts);
        let mut props = Vec::new();
        for (k, b) in boxes.iter().enumerate() {
            if rng.random_bool(0.6) {
                let j = |rng: &mut StdRng| rng.random_range(-2..=2);
                let isthing = if rng.random_bool(0.8) {
                    objects.objects()[k].isthing
                } else {
                    group(&mut rng)
                };
                let s = segment(
                    rng.random_range(1..12),
                    isthing,
                    rng.random_range(0..4),
                    Some(rng.random()),
                );
                props.push((
                    s,
                    rect(
                        w,
                        h,
                        b.0 + j(&mut rng),
                        b.1 + j(&mut rng),
                        b.2 + j(&mut rng),
                        b.3 + j(&mut rng),
                    ),
                ));
            }
        }
        for _ in 0..rng.random_range(0..4) {
            let s = segment(rng.random_range(1..12), group(&mut rng), 0, None);
            props.push((
                s,
                rect(w, h, rng.random_range(0..28), rng.random_range(0..20), 4, 4),
            ));
        }
        // Segment ids must be unique within a frame.
        let mut seen = std::collections::HashSet::new();
        props.retain(|(s, _)| seen.insert(s.id));
        let mut proposals = consensus(w, h, &props);
        let present = proposals.map.areas();
        proposals.segments.retain(|s| present.contains_key(&s.id));

        let config = config(rng.random_range(0..3), rng.random_bool(0.5), -1);
        let mut expected_objects = objects.clone();
        let expected = naive_merge(&forward, &mut expected_objects, &proposals, &config);
        let out = merge(&forward, &mut objects, &proposals, &config).unwrap();
        assert_eq!(out.map, expected, "case {case}");
        assert_eq!(objects.objects(), expected_objects.objects(), "case {case}");
        assert!(out.dropped.is_empty());
    }
}

/// Objects 1 (10×10 at the origin) and 2 (5×5 at x = 20), tracked and propagated.
fn two_tracked_squares(w: usize, h: usize) -> (ObjectManager, IdMap) {
    let forward = map_of(
        w,
        h,
        &[(1, rect(w, h, 0, 0, 10, 10)), (2, rect(w, h, 20, 0, 5, 5))],
    );
    (manager(&[(1, None), (2, None)]), forward)
}

#[test]
fn matched_pairs_become_their_union_and_the_rest_passes_through() {
    let (w, h) = (30, 20);
    let (mut objects, forward) = two_tracked_squares(w, h);
    let proposals = consensus(
        w,
        h,
        &[
            // IoU with object 1: 80 / 110 > 0.5.
            (segment(9, None, 3, Some(0.5)), rect(w, h, 2, 0, 9, 10)),
            // Touches nothing: a new object, requesting id 2 (taken) -> a fresh id.
            (segment(2, None, 4, Some(0.7)), rect(w, h, 0, 12, 6, 6)),
        ],
    );
    let out = merge(&forward, &mut objects, &proposals, &config(5, false, -1)).unwrap();
    assert_eq!(out.map.mask(1), rect(w, h, 0, 0, 11, 10));
    assert_eq!(out.map.mask(2), rect(w, h, 20, 0, 5, 5));
    assert_eq!(out.added, vec![3]);
    assert_eq!(out.map.mask(3), rect(w, h, 0, 12, 6, 6));
    let o = |id| objects.get(id).unwrap().clone();
    assert_eq!((o(1).misses, o(2).misses, o(3).misses), (0, 1, 0));
    assert_eq!(o(1).votes.categories, vec![3]);
    assert_eq!(o(3).info().category_id, Some(4));
    assert_eq!(objects.ids(), vec![1, 2, 3]);
}

#[test]
fn matched_mask_segment_replaces_the_propagated_shape() {
    let (w, h) = (30, 20);
    let (mut objects, forward) = two_tracked_squares(w, h);
    // IoU with object 1: 80 / 110 > 0.5; it covers columns 2..11 only.
    let proposals = consensus(
        w,
        h,
        &[(segment(9, None, 3, Some(0.5)), rect(w, h, 2, 0, 9, 10))],
    );
    let config = TrackerConfig {
        matched_mask: crate::config::MatchedMask::Segment,
        ..config(5, false, -1)
    };
    let out = merge(&forward, &mut objects, &proposals, &config).unwrap();
    // Object 1 is exactly the segment: its propagated columns 0 and 1 become background.
    assert_eq!(out.map.mask(1), rect(w, h, 2, 0, 9, 10));
    assert_eq!(out.map.mask(0).area(), w * h - 90 - 25);
    assert_eq!(out.map.mask(2), rect(w, h, 20, 0, 5, 5));
    assert!(out.added.is_empty());
    assert_eq!(objects.get(1).unwrap().misses, 0);
}

#[test]
fn objects_are_deleted_after_more_than_l_misses() {
    let (w, h) = (20, 10);
    let forward = map_of(w, h, &[(1, rect(w, h, 0, 0, 5, 5))]);
    let nothing = consensus(w, h, &[]);
    // Non-incremental, L = 2: misses 1, 2 keep the object; the third merge deletes it.
    let mut objects = manager(&[(1, None)]);
    let cfg = config(2, false, -1);
    for round in 1..=3 {
        let out = merge(&forward, &mut objects, &nothing, &cfg).unwrap();
        if round < 3 {
            assert_eq!(objects.ids(), vec![1]);
            assert_eq!(out.map.mask(1).area(), 25);
        } else {
            assert_eq!(out.deleted, vec![1]);
            assert!(objects.is_empty());
            assert!(out.map.ids().is_empty());
        }
    }
    // A confirmation resets the count.
    let mut objects = manager(&[(1, None)]);
    merge(&forward, &mut objects, &nothing, &cfg).unwrap();
    merge(&forward, &mut objects, &nothing, &cfg).unwrap();
    let again = consensus(w, h, &[(segment(5, None, 0, None), rect(w, h, 0, 0, 5, 5))]);
    merge(&forward, &mut objects, &again, &cfg).unwrap();
    merge(&forward, &mut objects, &nothing, &cfg).unwrap();
    merge(&forward, &mut objects, &nothing, &cfg).unwrap();
    assert_eq!(objects.ids(), vec![1]);

    // Incremental: a visible object is never counted missing; a vanished one is.
    let mut objects = manager(&[(1, None), (2, None)]);
    let cfg = config(2, true, -1);
    for round in 1..=3 {
        let out = merge(&forward, &mut objects, &nothing, &cfg).unwrap();
        assert_eq!(out.deleted, if round == 3 { vec![2] } else { vec![] });
    }
    for _ in 0..10 {
        merge(&forward, &mut objects, &nothing, &cfg).unwrap();
    }
    assert_eq!(objects.ids(), vec![1]);
}

#[test]
fn object_limit_drops_only_the_excess_new_objects() {
    let (w, h) = (40, 10);
    let mut objects = manager(&[(1, None)]);
    let forward = map_of(w, h, &[(1, rect(w, h, 0, 0, 5, 5))]);
    let proposals = consensus(
        w,
        h,
        &[
            (segment(10, None, 0, Some(0.9)), rect(w, h, 0, 0, 5, 5)), // matches object 1
            (segment(11, None, 0, Some(0.2)), rect(w, h, 10, 0, 6, 6)),
            (segment(12, None, 0, Some(0.8)), rect(w, h, 20, 0, 2, 2)),
            (segment(13, None, 0, None), rect(w, h, 30, 0, 8, 8)),
            (segment(14, None, 0, Some(0.8)), rect(w, h, 25, 0, 3, 3)),
        ],
    );
    // Room for 2 new objects: the highest scores win (0.8 twice: the larger one first).
    let out = merge(&forward, &mut objects, &proposals, &config(5, false, 3)).unwrap();
    assert_eq!(out.dropped, vec![11, 13]);
    assert_eq!(objects.ids(), vec![1, 14, 12]);
    assert_eq!(objects.get(1).unwrap().misses, 0);
    assert_eq!(objects.get(1).unwrap().votes.scores, vec![0.9]);
    assert!(out.map.mask(11).is_empty() && out.map.mask(13).is_empty());
    // At the limit, nothing new is added, but matches still merge.
    let out = merge(&forward, &mut objects, &proposals, &config(5, false, 3)).unwrap();
    assert!(out.added.is_empty());
    assert_eq!(out.dropped.len(), 4);
    assert_eq!(objects.get(1).unwrap().votes.scores, vec![0.9, 0.9]);
}

#[test]
fn ids_are_stable_and_never_reused() {
    let (w, h) = (20, 10);
    let mut objects = manager(&[(1, None)]);
    let cfg = config(0, false, -1);
    let nothing = consensus(w, h, &[]);
    let forward = map_of(w, h, &[(1, rect(w, h, 0, 0, 5, 5))]);
    assert_eq!(
        merge(&forward, &mut objects, &nothing, &cfg)
            .unwrap()
            .deleted,
        vec![1]
    );
    // The same region proposed again, requesting id 1: a fresh id.
    let props = consensus(w, h, &[(segment(1, None, 0, None), rect(w, h, 0, 0, 5, 5))]);
    let out = merge(&IdMap::new(w, h), &mut objects, &props, &cfg).unwrap();
    assert_eq!(out.added, vec![2]);
    // Matching keeps the id across merges.
    let forward = out.map.clone();
    let props = consensus(w, h, &[(segment(7, None, 0, None), rect(w, h, 1, 0, 5, 5))]);
    let out = merge(&forward, &mut objects, &props, &cfg).unwrap();
    assert!(out.added.is_empty());
    assert_eq!(out.map.ids(), vec![2]);
}

#[test]
fn groups_match_separately_and_things_are_drawn_over_stuff() {
    let (w, h) = (20, 10);
    let mut objects = manager(&[(1, Some(false))]);
    let forward = map_of(w, h, &[(1, rect(w, h, 0, 0, 10, 10))]);
    let proposals = consensus(
        w,
        h,
        &[
            // Same pixels as the stuff object but a thing: no match, a new object drawn on top.
            (segment(5, Some(true), 0, None), rect(w, h, 0, 0, 10, 10)),
            // A separate stuff segment: a new object.
            (segment(6, Some(false), 0, None), rect(w, h, 12, 0, 2, 2)),
        ],
    );
    let out = merge(&forward, &mut objects, &proposals, &config(5, false, -1)).unwrap();
    assert_eq!(out.map.mask(5), rect(w, h, 0, 0, 10, 10));
    assert!(out.map.mask(1).is_empty());
    assert_eq!(objects.get(1).unwrap().misses, 1);
    assert_eq!(out.map.mask(6).area(), 4);
    assert!(merge(
        &IdMap::new(3, 3),
        &mut objects,
        &proposals,
        &config(5, false, -1)
    )
    .is_err());
}
