//! The per-frame engine shared by every schedule that propagates: plain propagation steps,
//! merge steps and steps with given masks, with the reference's memory schedule.
//!
//! Memory schedule: a frame is memorised when `t − last_mem_t ≥ mem_every` (t counts the
//! frames processed since the last reset) or when masks were merged or given there; a frame
//! without objects is never memorised (and does not restart the count).

use crate::config::{Config, TrackerConfig};
use crate::consensus::{Consensus, VotedSegment};
use crate::error::{Error, Result};
use crate::mask::{BinaryMask, IdMap, ObjectProbs, SegmentInfo};
use crate::merge::merge;
use crate::objects::ObjectManager;
use crate::propagator::Propagator;
use crate::refine::{Refine, RefineScore};
use crate::video::Frame;

/// Propagator, objects and memory schedule of one pass over a video.
pub(crate) struct Engine<'a> {
    propagator: Box<dyn Propagator + 'a>,
    objects: ObjectManager,
    config: TrackerConfig,
    mem_every: usize,
    /// Frames processed since the last reset.
    steps: usize,
    /// Step of the last memorised frame.
    last_mem: usize,
    /// Output of the last processed frame.
    last: Option<ObjectProbs>,
    /// Refines every propagated prediction, if set.
    refiner: Option<Box<dyn Refine + 'a>>,
}

/// Fails unless `probs` has `frame`'s size.
fn check_size(probs: &ObjectProbs, frame: &Frame, what: &str) -> Result<()> {
    if probs.width() != frame.width() || probs.height() != frame.height() {
        return Err(Error::invalid(format!(
            "{what} for frame {} ({}) are {}x{}, expected {}x{}",
            frame.index,
            frame.name,
            probs.width(),
            probs.height(),
            frame.width(),
            frame.height()
        )));
    }
    Ok(())
}

impl<'a> Engine<'a> {
    /// An engine around `propagator` with nothing tracked.
    pub fn new(propagator: Box<dyn Propagator + 'a>, config: &Config) -> Self {
        Engine {
            propagator,
            objects: ObjectManager::new(),
            config: config.tracker.clone(),
            mem_every: config.tracker.mem_every,
            steps: 0,
            last_mem: 0,
            last: None,
            refiner: None,
        }
    }

    /// Runs `refiner` on every propagated prediction from now on.
    pub fn set_refiner(&mut self, refiner: Box<dyn Refine + 'a>) {
        self.refiner = Some(refiner);
    }

    /// The refiner's scores for frame `index`, if it was refined.
    pub fn refine_scores(&self, index: usize) -> Option<&[RefineScore]> {
        self.refiner.as_ref()?.scores(index)
    }

    /// Starts a new pass: forgets objects, memory and the schedule.
    pub fn reset(&mut self) {
        self.propagator.reset();
        self.objects = ObjectManager::new();
        self.steps = 0;
        self.last_mem = 0;
        self.last = None;
        if let Some(r) = &mut self.refiner {
            r.reset();
        }
    }

    /// The live objects as segment information, in channel order.
    pub fn infos(&self) -> Vec<SegmentInfo> {
        self.objects.infos()
    }

    /// Pixels covered by tracked objects in the last output, at `width × height` (bilinear
    /// resize and argmax); `None` while nothing is tracked.
    pub fn tracked(&self, width: usize, height: usize) -> Option<BinaryMask> {
        let last = self.last.as_ref().filter(|p| !p.ids().is_empty())?;
        let map = last.resize_argmax(width, height);
        let fg = map.data().iter().map(|&id| id != 0).collect();
        Some(BinaryMask::from_vec(width, height, fg).expect("sizes agree by construction"))
    }

    /// Projects `masks` of `src` onto `dst` without touching the tracking state.
    pub fn align(&mut self, src: &Frame, masks: &ObjectProbs, dst: &Frame) -> Result<ObjectProbs> {
        let out = self.propagator.align(src, masks, dst)?;
        check_size(&out, dst, "aligned masks")?;
        Ok(out)
    }

    /// Drops the propagator's cached work for frame `index`.
    pub fn release(&mut self, index: usize) {
        self.propagator.release_frame(index);
    }

    /// The propagator's prediction for `frame`, in the object manager's channel order, refined
    /// when a refiner is set.
    fn predict(&mut self, frame: &Frame) -> Result<ObjectProbs> {
        let probs = self.propagator.propagate(frame)?;
        check_size(&probs, frame, "propagated masks")?;
        let ids = self.objects.ids();
        let probs = if probs.ids() == ids.as_slice() {
            probs
        } else {
            probs.select(&ids)
        };
        Ok(match &mut self.refiner {
            Some(r) => r.refine(frame, &probs)?.unwrap_or(probs),
            None => probs,
        })
    }

    /// Ends step `t`: `remember` becomes the propagator's previous masks (memorised when due
    /// or `force_mem`), `output` the frame's result.
    fn conclude(
        &mut self,
        frame: &Frame,
        t: usize,
        remember: &ObjectProbs,
        output: ObjectProbs,
        force_mem: bool,
    ) -> Result<ObjectProbs> {
        let memorize =
            (force_mem || t - self.last_mem >= self.mem_every) && !remember.ids().is_empty();
        self.propagator.update(frame, remember, memorize)?;
        if memorize {
            self.last_mem = t;
        }
        self.propagator.release_frame(frame.index);
        self.last = Some(output.clone());
        Ok(output)
    }

    /// Takes the next step number.
    fn begin(&mut self) -> usize {
        self.steps += 1;
        self.steps - 1
    }

    /// A plain propagation step.
    pub fn propagate(&mut self, frame: &Frame) -> Result<ObjectProbs> {
        let t = self.begin();
        let probs = self.predict(frame)?;
        self.conclude(frame, t, &probs, probs.clone(), false)
    }

    /// A merge step: the propagated frame is merged with `consensus` (at the frame's size);
    /// objects missed too often are deleted. The merged one-hot masks are memorised; the
    /// output is their soft aggregation.
    pub fn merge(&mut self, frame: &Frame, consensus: &Consensus) -> Result<ObjectProbs> {
        let t = self.begin();
        let forward = if self.propagator.has_memory() {
            self.predict(frame)?.argmax()
        } else {
            IdMap::new(frame.width(), frame.height())
        };
        let outcome = merge(&forward, &mut self.objects, consensus, &self.config)?;
        if !outcome.deleted.is_empty() {
            self.propagator.remove_objects(&outcome.deleted)?;
        }
        let hot = ObjectProbs::one_hot(&outcome.map, &self.objects.ids())?;
        let output = hot.aggregate();
        self.conclude(frame, t, &hot, output, true)
    }

    /// A step with given masks (`masks` channel i ↔ `segments[i]`, soft or one-hot): tracked
    /// objects not given keep their prediction except where the given masks are foreground
    /// (> 0.5); given objects already tracked are overwritten, others are added (in order).
    /// The output is the soft aggregation of the result, and is memorised.
    pub fn given(
        &mut self,
        frame: &Frame,
        masks: &ObjectProbs,
        segments: &[VotedSegment],
    ) -> Result<ObjectProbs> {
        check_size(masks, frame, "given masks")?;
        if masks.ids().len() != segments.len()
            || masks.ids().iter().zip(segments).any(|(&a, s)| a != s.id)
        {
            return Err(Error::invalid(format!(
                "given masks of frame {} ({}) have ids {:?} but the segments list {:?}",
                frame.index,
                frame.name,
                masks.ids(),
                segments.iter().map(|s| s.id).collect::<Vec<_>>()
            )));
        }
        let t = self.begin();
        let tracked = self.objects.ids();
        let prediction = if tracked.is_empty() {
            None
        } else {
            Some(self.predict(frame)?)
        };
        let hw = frame.width() * frame.height();
        let given_channel = |id| masks.ids().iter().position(|&g| g == id).map(|i| i + 1);
        let fg: Vec<bool> = (0..hw)
            .map(|p| (1..masks.num_channels()).any(|c| masks.channel(c)[p] > 0.5))
            .collect();
        let mut ids = tracked.clone();
        let mut data = vec![0.0f32; hw];
        for (k, &id) in tracked.iter().enumerate() {
            match given_channel(id) {
                Some(c) => data.extend_from_slice(masks.channel(c)),
                None => {
                    let pred = prediction.as_ref().expect("predicted when tracking");
                    let kept = pred.channel(k + 1).iter().zip(&fg);
                    data.extend(kept.map(|(&v, &f)| if f { 0.0 } else { v }));
                }
            }
        }
        for (c, seg) in segments.iter().enumerate() {
            match self.objects.get_mut(seg.id) {
                Some(o) => {
                    o.votes.absorb(&seg.votes);
                    o.misses = 0;
                }
                None => {
                    ids.push(self.objects.add(seg.id, seg.isthing, seg.votes.clone())?);
                    data.extend_from_slice(masks.channel(c + 1));
                }
            }
        }
        let output = ObjectProbs::new(ids, frame.width(), frame.height(), data)?.aggregate();
        let remember = output.clone();
        self.conclude(frame, t, &remember, output, true)
    }
}
