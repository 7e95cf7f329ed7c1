//! Online and semi-online schedules: clips of `n` frames (1 online, `num_voting_frames`
//! semi-online) whose consensus is merged every `detection_every` frames.
//!
//! As in the reference, frame `t` is buffered (and segmented) when `t + n > v`, where `v` is
//! the next voting frame (starting at `n − 1`); at `t = v` the clip is processed and `v`
//! advances by `detection_every`. With the defaults (n = 3, every 5) clips are (0,1,2),
//! (5,6,7), ...; other frames are plain propagation steps. In a clip, frames before the key
//! frame are propagated, the key frame gets the merge of the consensus, later frames are
//! propagated again. A clip cut short by the end of the video gets the consensus of the
//! frames it has (the reference's demos drop those detections). A clip in which the segmenter
//! returned nothing at all (`None` on every frame) is only propagated: nothing was detected,
//! so nothing counts as missed.

use super::{Engine, Input, Prepared, TrackedFrame};
use crate::config::{Config, KeyFrame, Temporal, TrackerConfig};
use crate::consensus::clip_consensus;
use crate::error::Result;
use crate::mask::Segmentation;

/// Index of the key frame in a clip of `len` frames (`Middle` is the reference's
/// `(len + 1) / 2`).
pub(crate) fn key_index(keyframe: KeyFrame, len: usize) -> usize {
    match keyframe {
        KeyFrame::First => 0,
        KeyFrame::Middle => len.div_ceil(2).min(len - 1),
        KeyFrame::Last => len - 1,
    }
}

/// State of the clip schedule.
pub(crate) struct Clips<'a> {
    pub(super) engine: Engine<'a>,
    config: TrackerConfig,
    /// Frames per clip.
    clip_len: usize,
    /// Frames seen so far.
    seen: usize,
    /// The next voting frame.
    next_vote: usize,
    /// Buffered frames of the current clip with their proposals (internal size).
    buffer: Vec<(Prepared, Option<Segmentation>)>,
}

impl<'a> Clips<'a> {
    /// Online (`temporal` = online: clips of one frame) or semi-online.
    pub fn new(engine: Engine<'a>, config: &Config, temporal: Temporal) -> Self {
        let clip_len = match temporal {
            Temporal::Online => 1,
            _ => config.tracker.num_voting_frames,
        };
        Clips {
            engine,
            config: config.tracker.clone(),
            clip_len,
            seen: 0,
            next_vote: clip_len - 1,
            buffer: Vec::new(),
        }
    }

    /// Takes the next frame; returns the frames that became final.
    pub fn step(&mut self, input: &mut Input, frame: Prepared) -> Result<Vec<TrackedFrame>> {
        let t = self.seen;
        self.seen += 1;
        if t + self.clip_len <= self.next_vote {
            let probs = self.engine.propagate(&frame.internal)?;
            return Ok(vec![frame.finish(probs, self.engine.infos())]);
        }
        let tracked = self
            .engine
            .tracked(frame.original.width(), frame.original.height());
        let proposals = input.segment_internal(&frame, tracked.as_ref())?;
        self.buffer.push((frame, proposals));
        if t < self.next_vote {
            return Ok(Vec::new());
        }
        self.next_vote += self.config.detection_every;
        self.run_clip()
    }

    /// End of the video: processes what is buffered.
    pub fn finish(&mut self) -> Result<Vec<TrackedFrame>> {
        if self.buffer.is_empty() {
            return Ok(Vec::new());
        }
        self.run_clip()
    }

    /// Consensus of the buffered clip, merged on its key frame.
    fn run_clip(&mut self) -> Result<Vec<TrackedFrame>> {
        let (frames, proposals): (Vec<Prepared>, Vec<Option<Segmentation>>) =
            std::mem::take(&mut self.buffer).into_iter().unzip();
        let key = key_index(self.config.keyframe, frames.len());
        let consensus = if proposals.iter().all(Option::is_none) {
            None
        } else {
            let engine = &mut self.engine;
            Some(clip_consensus(
                &proposals,
                key,
                &self.config,
                |src, dst, masks| engine.align(&frames[src].internal, masks, &frames[dst].internal),
            )?)
        };
        let mut out = Vec::with_capacity(frames.len());
        for (i, frame) in frames.iter().enumerate() {
            let probs = match &consensus {
                Some(c) if i == key => self.engine.merge(&frame.internal, c)?,
                _ => self.engine.propagate(&frame.internal)?,
            };
            out.push(frame.finish(probs, self.engine.infos()));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_frames_follow_the_reference_rules() {
        assert_eq!(key_index(KeyFrame::First, 3), 0);
        assert_eq!(key_index(KeyFrame::Last, 3), 2);
        assert_eq!(key_index(KeyFrame::Middle, 3), 2);
        assert_eq!(key_index(KeyFrame::Middle, 4), 2);
        assert_eq!(key_index(KeyFrame::Middle, 1), 0);
    }
}
