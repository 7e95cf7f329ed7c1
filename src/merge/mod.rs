//! Merging propagation with a consensus (paper §3.2.2): tracked objects and new segments are
//! associated by maximum bipartite matching on IoU; matched pairs become their union under the
//! tracked id (or the new segment alone, with `matched_mask = "segment"`), unmatched segments become new objects, unmatched objects keep their propagated
//! mask and count a miss; objects missed too often are deleted.
//!
//! Matching and drawing go group by group in the order unknown, stuff, things (`isthing`
//! None, false, true), so things are drawn last; within a group the largest area is drawn
//! first so that smaller segments stay visible. Areas are the union for matched pairs, the
//! segment's own for new objects and the propagated one for unmatched objects.
//!
//! Object limit (`max_num_objects`): unlike the reference, which drops every new segment of
//! the frame (matched ones included) once the limit would be exceeded, only the excess new
//! objects are dropped. Those kept are the ones with the highest voted score (segments
//! without a score last), then the largest area, then the earliest listed.

use crate::config::{MatchedMask, TrackerConfig};
use crate::consensus::Consensus;
use crate::error::{Error, Result};
use crate::mask::{IdMap, ObjectId};
use crate::objects::ObjectManager;
use crate::overlap::{dense_labels, group, Overlap, GROUPS};
use std::cmp::{Ordering, Reverse};

/// What a merge did.
#[derive(Debug, Clone, PartialEq)]
pub struct MergeOutcome {
    /// The merged frame in object ids; deleted objects are background.
    pub map: IdMap,
    /// Ids of the objects created by this merge, in creation order.
    pub added: Vec<ObjectId>,
    /// Ids of the objects deleted after this merge (missed too often).
    pub deleted: Vec<ObjectId>,
    /// Segment ids of the consensus that the object limit dropped.
    pub dropped: Vec<ObjectId>,
}

/// One thing to draw.
#[derive(Debug, Clone, Copy)]
enum Item {
    /// Tracked object `our` confirmed by segment `new`.
    Matched { our: usize, new: usize },
    /// Segment `new` starts a new object.
    New { new: usize },
    /// Tracked object `our` without a segment.
    Kept { our: usize },
}

/// Merges `proposals` into the objects tracked in `forward` (the propagated frame in object
/// ids; objects of `objects` absent from it have vanished). Updates `objects`: new objects,
/// votes, miss counters and deletions after more than `max_missed_detection_count` misses.
pub fn merge(
    forward: &IdMap,
    objects: &mut ObjectManager,
    proposals: &Consensus,
    config: &TrackerConfig,
) -> Result<MergeOutcome> {
    let (w, h) = (forward.width(), forward.height());
    if proposals.map.width() != w || proposals.map.height() != h {
        return Err(Error::invalid(format!(
            "cannot merge a {}x{} segmentation into a {}x{} frame",
            proposals.map.width(),
            proposals.map.height(),
            w,
            h
        )));
    }
    let ours = objects.ids();
    let our_isthing: Vec<Option<bool>> = objects.objects().iter().map(|o| o.isthing).collect();
    let segs = &proposals.segments;
    let new_ids: Vec<ObjectId> = segs.iter().map(|s| s.id).collect();
    let our_labels = dense_labels(forward, &ours);
    let new_labels = dense_labels(&proposals.map, &new_ids);
    let ov = Overlap::from_labels(&our_labels, ours.len(), &new_labels, segs.len());
    let (our_area, new_area) = ov.areas();

    let mut match_of_new: Vec<Option<usize>> = vec![None; segs.len()];
    let mut matched_our = vec![false; ours.len()];
    let new_isthing: Vec<Option<bool>> = segs.iter().map(|s| s.isthing).collect();
    for p in ov.match_groups(&our_isthing, &new_isthing, config.merge_iou) {
        match_of_new[p.col] = Some(p.row);
        matched_our[p.row] = true;
    }

    // The object limit keeps only as many new objects as there is room for.
    let mut keep = vec![true; segs.len()];
    let mut fresh: Vec<usize> = (0..segs.len())
        .filter(|&j| match_of_new[j].is_none())
        .collect();
    let room = config
        .object_limit()
        .map(|limit| limit.saturating_sub(ours.len()));
    let mut dropped = Vec::new();
    if let Some(room) = room.filter(|&r| r < fresh.len()) {
        let score = |j: usize| segs[j].votes.score();
        fresh.sort_by(|&a, &b| {
            match (score(a), score(b)) {
                (Some(x), Some(y)) => y.total_cmp(&x),
                (Some(_), None) => Ordering::Less,
                (None, Some(_)) => Ordering::Greater,
                (None, None) => Ordering::Equal,
            }
            .then(new_area[b].cmp(&new_area[a]))
            .then(a.cmp(&b))
        });
        for &j in &fresh[room..] {
            keep[j] = false;
            dropped.push(segs[j].id);
        }
    }

    // Drawing order: group by group; within a group, descending area (stable).
    let mut items: Vec<Item> = Vec::new();
    for g in 0..GROUPS {
        let mut in_group: Vec<(u64, Item)> = Vec::new();
        for j in (0..segs.len()).filter(|&j| keep[j] && group(segs[j].isthing) == g) {
            in_group.push(match match_of_new[j] {
                Some(i) => (
                    match config.matched_mask {
                        MatchedMask::Union => our_area[i] + new_area[j] - ov.intersection(i, j),
                        MatchedMask::Segment => new_area[j],
                    },
                    Item::Matched { our: i, new: j },
                ),
                None => (new_area[j], Item::New { new: j }),
            });
        }
        for i in (0..ours.len()).filter(|&i| group(our_isthing[i]) == g && !matched_our[i]) {
            in_group.push((our_area[i], Item::Kept { our: i }));
        }
        in_group.sort_by_key(|&(area, _)| Reverse(area));
        items.extend(in_group.into_iter().map(|(_, item)| item));
    }

    // Update the objects in drawing order (new ids are created in that order) and note, for
    // every tracked object and segment, the position of the item that draws it.
    let mut our_rank = vec![0usize; ours.len()];
    let mut new_rank = vec![0usize; segs.len()];
    let mut label = vec![0 as ObjectId; items.len() + 1];
    let mut added = Vec::new();
    for (k, item) in items.iter().enumerate() {
        let rank = k + 1;
        label[rank] = match *item {
            Item::Matched { our, new } => {
                if config.matched_mask == MatchedMask::Union {
                    our_rank[our] = rank;
                }
                new_rank[new] = rank;
                let o = objects.get_mut(ours[our]).expect("tracked object");
                o.votes.absorb(&segs[new].votes);
                o.misses = 0;
                ours[our]
            }
            Item::New { new } => {
                new_rank[new] = rank;
                let s = &segs[new];
                let id = objects.add(s.id, s.isthing, s.votes.clone())?;
                added.push(id);
                id
            }
            Item::Kept { our } => {
                our_rank[our] = rank;
                let o = objects.get_mut(ours[our]).expect("tracked object");
                if config.incremental && our_area[our] > 0 {
                    o.misses = 0;
                } else {
                    o.misses += 1;
                }
                ours[our]
            }
        };
    }
    let deleted = objects.remove_missed(config.max_missed_detection_count);
    for id in label.iter_mut() {
        if deleted.contains(id) {
            *id = 0;
        }
    }

    // Painter's algorithm in one pass: a pixel is covered by at most two items (its tracked
    // object's and its segment's); the one drawn later wins.
    let data = our_labels
        .iter()
        .zip(&new_labels)
        .map(|(&a, &b)| {
            let ra = if a > 0 { our_rank[a as usize - 1] } else { 0 };
            let rb = if b > 0 { new_rank[b as usize - 1] } else { 0 };
            label[ra.max(rb)]
        })
        .collect();
    Ok(MergeOutcome {
        map: IdMap::from_vec(w, h, data)?,
        added,
        deleted,
        dropped,
    })
}

#[cfg(test)]
mod tests;
