//! Object manager: stable ids that are never reused, category and score votes, miss counters.
//!
//! Objects are kept in insertion order; that order is the channel order of every soft mask
//! the tracker hands to the propagator (the reference's "temporary ids").

use crate::error::{Error, Result};
use crate::mask::{ObjectId, SegmentInfo};
use std::collections::{BTreeMap, HashSet};

/// Category and score votes gathered from the segments an object was matched with.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Votes {
    /// One entry per supporting segment that had a category.
    pub categories: Vec<u32>,
    /// One entry per supporting segment that had a score.
    pub scores: Vec<f32>,
}

impl Votes {
    /// The votes of a single segment.
    pub fn of(info: &SegmentInfo) -> Self {
        Votes {
            categories: info.category_id.into_iter().collect(),
            scores: info.score.into_iter().collect(),
        }
    }

    /// Adds the votes of `other`.
    pub fn absorb(&mut self, other: &Votes) {
        self.categories.extend_from_slice(&other.categories);
        self.scores.extend_from_slice(&other.scores);
    }

    /// The most frequent category (ties go to the smallest), `None` without any vote.
    pub fn category(&self) -> Option<u32> {
        let mut counts: BTreeMap<u32, usize> = BTreeMap::new();
        for &c in &self.categories {
            *counts.entry(c).or_insert(0) += 1;
        }
        // `max_by_key` keeps the last maximum; iterate from the largest key so that the last
        // maximum seen is the smallest category.
        counts
            .into_iter()
            .rev()
            .max_by_key(|&(_, n)| n)
            .map(|(c, _)| c)
    }

    /// Segment information with the voted category and the mean score.
    pub fn info(&self, id: ObjectId, isthing: Option<bool>) -> SegmentInfo {
        SegmentInfo {
            id,
            category_id: self.category(),
            score: self.score(),
            isthing,
        }
    }

    /// The mean score, `None` without any score.
    pub fn score(&self) -> Option<f32> {
        if self.scores.is_empty() {
            return None;
        }
        let sum: f64 = self.scores.iter().map(|&s| s as f64).sum();
        Some((sum / self.scores.len() as f64) as f32)
    }
}

/// One tracked object.
#[derive(Debug, Clone, PartialEq)]
pub struct TrackedObject {
    /// The object's id, fixed for its lifetime.
    pub id: ObjectId,
    /// Thing (`true`), stuff (`false`) or unknown; matching only pairs equal values.
    pub isthing: Option<bool>,
    /// Votes of every segment merged into this object.
    pub votes: Votes,
    /// Merges since the object was last confirmed (the reference's "poke count").
    pub misses: usize,
}

impl TrackedObject {
    /// The object as segment information: voted category and mean score.
    pub fn info(&self) -> SegmentInfo {
        self.votes.info(self.id, self.isthing)
    }
}

/// The live objects, in insertion order, plus every id ever handed out.
#[derive(Debug, Clone)]
pub struct ObjectManager {
    objects: Vec<TrackedObject>,
    used: HashSet<ObjectId>,
    /// No id below this one is free (the used set only grows).
    next_free: ObjectId,
}

impl Default for ObjectManager {
    fn default() -> Self {
        ObjectManager::new()
    }
}

impl ObjectManager {
    /// No objects, no ids used.
    pub fn new() -> Self {
        ObjectManager {
            objects: Vec::new(),
            used: HashSet::new(),
            next_free: 1,
        }
    }

    /// The live objects in insertion (channel) order.
    pub fn objects(&self) -> &[TrackedObject] {
        &self.objects
    }

    /// Ids of the live objects in insertion (channel) order.
    pub fn ids(&self) -> Vec<ObjectId> {
        self.objects.iter().map(|o| o.id).collect()
    }

    /// Number of live objects.
    pub fn len(&self) -> usize {
        self.objects.len()
    }

    /// Whether no object is live.
    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }

    /// The live object `id`, if any.
    pub fn get(&self, id: ObjectId) -> Option<&TrackedObject> {
        self.objects.iter().find(|o| o.id == id)
    }

    /// The live object `id`, mutably, if any.
    pub fn get_mut(&mut self, id: ObjectId) -> Option<&mut TrackedObject> {
        self.objects.iter_mut().find(|o| o.id == id)
    }

    /// Whether `id` was ever handed out (live or deleted).
    pub fn was_used(&self, id: ObjectId) -> bool {
        self.used.contains(&id)
    }

    /// Adds a new object and returns its id: `requested` if it was never used (and is not 0),
    /// otherwise the smallest id never used. Deterministic; ids are never reused.
    pub fn add(
        &mut self,
        requested: ObjectId,
        isthing: Option<bool>,
        votes: Votes,
    ) -> Result<ObjectId> {
        let id = if requested != 0 && !self.used.contains(&requested) {
            requested
        } else {
            while self.used.contains(&self.next_free) {
                self.next_free = self
                    .next_free
                    .checked_add(1)
                    .ok_or_else(|| Error::invalid("all object ids are used up"))?;
            }
            self.next_free
        };
        self.used.insert(id);
        self.objects.push(TrackedObject {
            id,
            isthing,
            votes,
            misses: 0,
        });
        Ok(id)
    }

    /// Deletes the objects missed more than `max_missed` times in a row and returns their ids
    /// in channel order. Their ids stay used.
    pub fn remove_missed(&mut self, max_missed: usize) -> Vec<ObjectId> {
        let gone: Vec<ObjectId> = self
            .objects
            .iter()
            .filter(|o| o.misses > max_missed)
            .map(|o| o.id)
            .collect();
        self.objects.retain(|o| o.misses <= max_missed);
        gone
    }

    /// Segment information of every live object, in channel order.
    pub fn infos(&self) -> Vec<SegmentInfo> {
        self.objects.iter().map(TrackedObject::info).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn votes(categories: &[u32], scores: &[f32]) -> Votes {
        Votes {
            categories: categories.to_vec(),
            scores: scores.to_vec(),
        }
    }

    #[test]
    fn category_vote_is_the_mode_with_ties_to_the_smallest() {
        assert_eq!(votes(&[7, 3, 7, 3, 9], &[]).category(), Some(3));
        assert_eq!(votes(&[7, 3, 7], &[]).category(), Some(7));
        assert_eq!(votes(&[60], &[]).category(), Some(60));
        assert_eq!(votes(&[], &[]).category(), None);
    }

    #[test]
    fn score_vote_is_the_mean_of_given_scores() {
        assert_eq!(votes(&[], &[0.5, 1.0, 0.0]).score(), Some(0.5));
        assert_eq!(votes(&[], &[]).score(), None);
        let mut v = Votes::of(&SegmentInfo {
            id: 1,
            category_id: Some(4),
            score: None,
            isthing: None,
        });
        v.absorb(&votes(&[4, 5], &[0.25]));
        assert_eq!(v, votes(&[4, 4, 5], &[0.25]));
    }

    #[test]
    fn ids_are_requested_when_free_and_never_reused() {
        let mut m = ObjectManager::new();
        assert_eq!(m.add(5, None, Votes::default()).unwrap(), 5);
        assert_eq!(m.add(5, None, Votes::default()).unwrap(), 1);
        assert_eq!(m.add(0, None, Votes::default()).unwrap(), 2);
        m.get_mut(5).unwrap().misses = 3;
        assert_eq!(m.remove_missed(2), vec![5]);
        assert_eq!(m.ids(), vec![1, 2]);
        // 5 is deleted but was used: a request for it gets a fresh id (3, then 4, then 6).
        assert_eq!(m.add(5, None, Votes::default()).unwrap(), 3);
        assert_eq!(m.add(3, None, Votes::default()).unwrap(), 4);
        assert_eq!(m.add(4, None, Votes::default()).unwrap(), 6);
        assert_eq!(m.ids(), vec![1, 2, 3, 4, 6]);
        assert!(m.was_used(5) && m.get(5).is_none());
    }

    #[test]
    fn deletion_keeps_the_order_of_the_rest() {
        let mut m = ObjectManager::new();
        for id in [10, 20, 30, 40] {
            m.add(id, Some(true), Votes::default()).unwrap();
        }
        m.get_mut(20).unwrap().misses = 2;
        m.get_mut(40).unwrap().misses = 1;
        assert_eq!(m.remove_missed(1), vec![20]);
        assert_eq!(m.ids(), vec![10, 30, 40]);
        assert_eq!(m.infos()[2].isthing, Some(true));
    }
}
