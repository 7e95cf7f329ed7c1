//! Offline key-frame mode (reference: saliency and referring-segmentation evaluation).
//!
//! The whole video is buffered. The segmenter runs on `num_voting_frames` uniformly spread
//! frames; their segmentations are taken as already associated (the same id is the same
//! object on every frame) and combined by [`associated_consensus`] on a key frame. The result
//! is then propagated backwards (key frame down to the first frame) and forwards (key frame to
//! the last frame), each pass from a reset propagator; the key frame's output is the forward
//! pass's. Frame scores for the consensus are the mean score of each frame's segments (0 for a
//! frame without scores); without any score the frames weigh the same.

use super::{Engine, Input, Prepared, TrackedFrame};
use crate::config::Config;
use crate::consensus::{associated_consensus, VotedSegment};
use crate::error::Result;
use crate::mask::{ObjectProbs, Segmentation};
use crate::objects::Votes;
use crate::video::{internal_size, Frame};

/// `m` of `n` frames, uniformly spread (the reference's `i·n/m + n/(2m)`).
pub(crate) fn sample_indices(n: usize, m: usize) -> Vec<usize> {
    let m = m.min(n);
    (0..m).map(|i| i * n / m + n / (2 * m)).collect()
}

/// Every object of the sampled segmentations, in order of first appearance, with the votes of
/// all its appearances.
fn union_of_objects(segs: &[Segmentation]) -> Vec<VotedSegment> {
    let mut objects: Vec<VotedSegment> = Vec::new();
    for s in segs.iter().flat_map(|seg| &seg.segments) {
        match objects.iter_mut().find(|o| o.id == s.id) {
            Some(o) => o.votes.absorb(&Votes::of(s)),
            None => objects.push(VotedSegment {
                id: s.id,
                isthing: s.isthing,
                votes: Votes::of(s),
            }),
        }
    }
    objects
}

/// Mean segment score per frame, `None` when no segment has a score.
fn frame_scores(segs: &[Segmentation]) -> Option<Vec<f32>> {
    let scores: Vec<Option<f32>> = segs
        .iter()
        .map(|seg| {
            let mut v = Votes::default();
            seg.segments.iter().for_each(|s| v.absorb(&Votes::of(s)));
            v.score()
        })
        .collect();
    scores
        .iter()
        .any(Option::is_some)
        .then(|| scores.iter().map(|s| s.unwrap_or(0.0)).collect())
}

/// The buffered video.
pub(crate) struct Offline<'a> {
    pub(super) engine: Engine<'a>,
    voting: usize,
    size: i32,
    frames: Vec<Frame>,
}

impl<'a> Offline<'a> {
    /// An empty buffer.
    pub fn new(engine: Engine<'a>, config: &Config) -> Self {
        Offline {
            engine,
            voting: config.tracker.num_voting_frames,
            size: config.input.size,
            frames: Vec::new(),
        }
    }

    /// Buffers a frame.
    pub fn push(&mut self, frame: Frame) {
        self.frames.push(frame);
    }

    /// Runs the key-frame consensus and both propagation passes.
    pub fn finish(&mut self, input: &mut Input) -> Result<Vec<TrackedFrame>> {
        let frames = std::mem::take(&mut self.frames);
        let n = frames.len();
        let mut sampled = Vec::new();
        let mut segs = Vec::new();
        for t in sample_indices(n, self.voting) {
            let p = Prepared::new(frames[t].clone(), self.size);
            if let Some(seg) = input.segment_internal(&p, None)? {
                sampled.push((t, p));
                segs.push(seg);
            }
        }
        let objects = union_of_objects(&segs);
        if objects.is_empty() {
            return Ok(frames.into_iter().map(|f| self.background(f)).collect());
        }
        let ids: Vec<_> = objects.iter().map(|o| o.id).collect();
        let masks = segs
            .iter()
            .map(|s| ObjectProbs::one_hot(&s.map, &ids))
            .collect::<Result<Vec<_>>>()?;
        let engine = &mut self.engine;
        let (k, soft) = associated_consensus(&masks, frame_scores(&segs).as_deref(), |s, d, m| {
            engine.align(&sampled[s].1.internal, m, &sampled[d].1.internal)
        })?;
        for (_, p) in &sampled {
            self.engine.release(p.original.index);
        }
        let key = sampled[k].0;
        let mut out: Vec<Option<TrackedFrame>> = vec![None; n];
        let backward: Vec<usize> = (0..=key).rev().collect();
        for pass in [backward, (key..n).collect()] {
            self.engine.reset();
            for t in pass {
                let p = Prepared::new(frames[t].clone(), self.size);
                let probs = if t == key {
                    self.engine.given(&p.internal, &soft, &objects)?
                } else {
                    self.engine.propagate(&p.internal)?
                };
                out[t] = Some(p.finish(probs, self.engine.infos()));
            }
        }
        Ok(out.into_iter().flatten().collect())
    }

    /// A frame with nothing on it.
    fn background(&self, frame: Frame) -> TrackedFrame {
        let (width, height) = (frame.width(), frame.height());
        let (w, h) = internal_size(width, height, self.size);
        TrackedFrame {
            index: frame.index,
            name: frame.name,
            width,
            height,
            image: frame.image,
            probs: ObjectProbs::background(w, h),
            objects: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_spread_like_the_reference() {
        // Reference formula i*n//m + n//(2m), evaluated by hand.
        assert_eq!(sample_indices(10, 3), vec![1, 4, 7]);
        assert_eq!(
            sample_indices(100, 10),
            (0..10).map(|i| i * 10 + 5).collect::<Vec<_>>()
        );
        assert_eq!(sample_indices(2, 5), vec![0, 1]);
        assert!(sample_indices(0, 5).is_empty());
    }
}
