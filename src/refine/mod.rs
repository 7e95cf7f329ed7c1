//! Mask refinement between propagation and merge / memory (HQTrack-style): each propagated
//! object's box (grown by a margin), and optionally its last accepted low-resolution logits,
//! prompt a promptable segmenter (SAM); the refined mask replaces the propagated one only when
//! the segmenter's predicted IoU and the agreement (IoU with the propagated mask) both pass
//! their gates.
//!
//! - Among SAM's multimask outputs the one agreeing best with the propagated mask is chosen
//!   (predicted IoU breaks ties), so SAM choosing a part instead of the whole is caught by the
//!   agreement rather than trusted.
//! - When an object's propagated mask is empty, it is re-prompted from its last good box (the
//!   box of its last accepted refinement, else of its last non-empty propagated mask) and
//!   accepted on the IoU gate alone: a lost object can come back.
//! - A refined mask whose area differs by more than the factor `max_area_change` from the
//!   propagated mask's (re-prompted: the last good mask's) is rejected: a sudden change, as
//!   when SAM takes a part or the background, unlike motion between frames.
//! - Creep, a refined mask a little larger (or smaller) than the propagated one on every frame,
//!   passes every per-frame gate, and in the closed loop (the accepted mask is what gets
//!   propagated next) it builds up. With `max_drift` the refiner keeps, per object, the product
//!   of its area changes (refined / propagated) since it first saw the object or last
//!   re-prompted it, and rejects a refined mask that would take it outside
//!   [1 / `max_drift`, `max_drift`]; the area change the propagation itself makes (the object
//!   moving or changing size) is not counted, and a mask that undoes earlier growth is still
//!   accepted.
//! - With `gate_reference = "last_good"` (for a propagator whose masks grow, as optical flow
//!   spreading into the background does), agreement is the fraction of the refined mask inside
//!   the propagated one and the area change is measured against the object's last good mask
//!   (last accepted refinement, else the first propagated mask seen); the multimask output
//!   kept is the one with the best agreement times size ratio to that mask, so a part lying
//!   inside the propagated mask does not win over the whole.
//! - With `gate_reference = "either"` a refined mask is accepted when it passes the gates of
//!   either mode above (the predicted-IoU, emptiness and creep gates hold in both); among SAM's
//!   outputs that pass, the one with the best IoU with the propagated mask is kept.
//! - The result is one-hot: the propagated argmax with accepted objects' pixels replaced
//!   (larger objects painted first, so smaller ones stay on top).
//! - Per object and frame, the predicted IoU, the agreement and the decision are kept as
//!   [`RefineScore`]s (a confidence for outputs such as `pred.json`).
//!
//! The stage works with any propagator: the tracker's engine calls [`Refine::refine`] on every
//! propagated prediction. [`SamRefiner`] is the SAM implementation; the frame's image
//! embedding is computed once per frame and shared with a SAM segmenter holding the same
//! model ([`crate::segmenter::sam::SamModel::embed_image`]).

pub mod config;
mod sam;

pub use config::{GateReference, RefineConfig};
pub use sam::{SamProposer, SamRefiner};

use crate::error::Result;
use crate::mask::{BinaryMask, IdMap, ObjectId, ObjectProbs};
use crate::video::Frame;
use candle_core::Tensor;
use std::collections::{BTreeMap, HashMap};

/// One object's prompt: a box `[x0, y0, x1, y1]` in frame pixels and optional
/// low-resolution logits `(1, 4h, 4w)` from an earlier refinement.
#[derive(Debug, Clone)]
pub struct BoxPrompt {
    /// The box.
    pub bbox: [f64; 4],
    /// Earlier low-resolution logits of the object.
    pub mask_input: Option<Tensor>,
}

/// One mask proposed for a prompt.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// The mask at the frame's size.
    pub mask: BinaryMask,
    /// The proposer's predicted IoU.
    pub iou: f32,
    /// Low-resolution logits usable as a later [`BoxPrompt::mask_input`].
    pub low_res: Option<Tensor>,
}

/// Proposes masks for box prompts on a frame.
pub trait MaskProposer {
    /// Candidates for each prompt (in order), at the frame's size; `multimask` asks for
    /// several candidates per prompt.
    fn propose(
        &mut self,
        frame: &Frame,
        prompts: &[BoxPrompt],
        multimask: bool,
    ) -> Result<Vec<Vec<Candidate>>>;
}

/// The refiner's judgement of one object on one frame.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct RefineScore {
    /// The object.
    pub id: ObjectId,
    /// Predicted IoU of the chosen candidate.
    pub iou: f32,
    /// IoU of the chosen candidate with the propagated mask (with `gate_reference =
    /// "last_good"`: the share of it inside the propagated mask; `None` when re-prompted from
    /// an empty mask).
    pub agreement: Option<f32>,
    /// Whether the refined mask replaced the propagated one.
    pub accepted: bool,
    /// Whether the object was re-prompted from its last good box.
    pub reprompted: bool,
}

/// Counts over a run's refiner scores (one per object and refined frame).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RefineSummary {
    /// Objects refined, summed over frames.
    pub refined: usize,
    /// Of those, refined masks accepted by the gates.
    pub accepted: usize,
    /// Objects re-prompted from their last good box (empty propagated mask).
    pub reprompted: usize,
    /// Of those, accepted.
    pub reprompted_accepted: usize,
}

impl RefineSummary {
    /// The counts of `scores`.
    pub fn of<'s>(scores: impl IntoIterator<Item = &'s RefineScore>) -> Self {
        let mut s = RefineSummary::default();
        for r in scores {
            s.refined += 1;
            s.accepted += usize::from(r.accepted);
            s.reprompted += usize::from(r.reprompted);
            s.reprompted_accepted += usize::from(r.reprompted && r.accepted);
        }
        s
    }
}

impl std::fmt::Display for RefineSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let pct = |n: usize, d: usize| 100.0 * n as f64 / d.max(1) as f64;
        write!(
            f,
            "{} object-frames refined, {} accepted ({:.1} %), {} re-prompted from an empty mask ({} accepted)",
            self.refined,
            self.accepted,
            pct(self.accepted, self.refined),
            self.reprompted,
            self.reprompted_accepted
        )
    }
}

/// A refinement stage the tracker can run on propagated masks.
pub trait Refine {
    /// Refines `probs` (masks of `frame`, at its size); `None` when nothing changed.
    fn refine(&mut self, frame: &Frame, probs: &ObjectProbs) -> Result<Option<ObjectProbs>>;
    /// The scores recorded for frame `index`, if it was refined.
    fn scores(&self, index: usize) -> Option<&[RefineScore]>;
    /// Forgets per-object state (a new pass over the video).
    fn reset(&mut self);
}

/// What is remembered about an object between frames.
#[derive(Debug, Clone, Default)]
struct ObjectState {
    /// Tight box `[x0, y0, x1, y1]` (exclusive right/bottom) of the last good mask.
    last_box: Option<[f64; 4]>,
    /// Whether `last_box` comes from an accepted refinement.
    box_refined: bool,
    /// Low-resolution logits of the last accepted refinement.
    low_res: Option<Tensor>,
    /// Pixel count of the last good mask (as `last_box`).
    last_area: Option<usize>,
    /// Pixel count of the last accepted refinement, else of the first propagated mask the
    /// refiner saw (the area reference of [`GateReference::LastGood`]).
    good_area: Option<usize>,
    /// Product of the accepted refinements' area changes (refined / propagated) since the
    /// refiner first saw the object or last re-prompted it (`None`: 1).
    drift: Option<f64>,
}

/// Whether `area` is within `factor` of `reference` either way (always when the gate is off,
/// `factor` 0, or there is no reference).
fn area_plausible(area: usize, reference: Option<usize>, factor: f64) -> bool {
    match reference {
        Some(r) if factor > 0.0 => {
            let ratio = area as f64 / r.max(1) as f64;
            (1.0 / factor..=factor).contains(&ratio)
        }
        _ => true,
    }
}

/// The mask refiner around a proposer.
pub struct MaskRefiner<P: MaskProposer> {
    proposer: P,
    config: RefineConfig,
    states: HashMap<ObjectId, ObjectState>,
    history: BTreeMap<usize, Vec<RefineScore>>,
}

/// `[x0, y0, x1, y1]` of a mask's tight box (exclusive right/bottom).
fn tight_box(mask: &BinaryMask) -> Option<[f64; 4]> {
    mask.bbox().map(|b| {
        let [x0, y0, x1, y1] = b.xyxy();
        [x0 as f64, y0 as f64, x1 as f64, y1 as f64]
    })
}

/// `b` grown on each side by `margin` × its width / height, clipped to `width × height`.
pub fn grow_box(b: [f64; 4], margin: f64, width: usize, height: usize) -> [f64; 4] {
    let (mw, mh) = (margin * (b[2] - b[0]), margin * (b[3] - b[1]));
    [
        (b[0] - mw).max(0.0),
        (b[1] - mh).max(0.0),
        (b[2] + mw).min(width as f64),
        (b[3] + mh).min(height as f64),
    ]
}

/// How much `refined` agrees with `propagated`: their IoU, or with
/// [`GateReference::LastGood`] the fraction of `refined` inside `propagated`.
fn agreement(
    refined: &BinaryMask,
    propagated: &BinaryMask,
    reference: GateReference,
) -> Result<f64> {
    Ok(match reference {
        GateReference::Propagated | GateReference::Either => refined.iou(propagated)?,
        GateReference::LastGood => {
            refined.intersection(propagated)? as f64 / refined.area().max(1) as f64
        }
    })
}

/// The smaller of `a / b` and `b / a` (1 for equal sizes, 0 when one is empty).
fn size_ratio(a: usize, b: usize) -> f64 {
    a.min(b) as f64 / a.max(b).max(1) as f64
}

/// The candidate of `pool` (indices into `candidates`) to keep, by the best ranking value
/// (then the best predicted IoU): with a propagated mask its agreement, times, with
/// [`GateReference::LastGood`], the size ratio to the object's last good mask (`good_area`),
/// so that a part lying inside the propagated mask does not win over the whole; without a
/// propagated mask the best predicted IoU. Returns its index and agreement.
fn choose(
    candidates: &[Candidate],
    pool: &[usize],
    propagated: Option<&BinaryMask>,
    reference: GateReference,
    good_area: Option<usize>,
) -> Result<(usize, Option<f32>)> {
    let mut best: Option<(usize, Option<f32>, f64)> = None;
    for &i in pool {
        let c = &candidates[i];
        let agreement = match propagated {
            Some(p) => Some(agreement(&c.mask, p, reference)?),
            None => None,
        };
        let rank = match (reference, good_area) {
            (GateReference::LastGood, Some(g)) => {
                agreement.unwrap_or(0.0) * size_ratio(c.mask.area(), g)
            }
            _ => agreement.unwrap_or(0.0),
        };
        let better = match best {
            None => true,
            Some((j, _, r)) => (rank, c.iou) > (r, candidates[j].iou),
        };
        if better {
            best = Some((i, agreement.map(|a| a as f32), rank));
        }
    }
    Ok(best.map_or((0, None), |(i, a, _)| (i, a)))
}

/// The product of the object's refiner area changes if `cand` were accepted (re-prompted
/// masks, without a propagated mask, start a new history at 1).
fn drift_after(state: &ObjectState, cand: &Candidate, propagated: Option<&BinaryMask>) -> f64 {
    match propagated {
        Some(p) => state.drift.unwrap_or(1.0) * cand.mask.area() as f64 / p.area().max(1) as f64,
        None => 1.0,
    }
}

/// Whether `cand` passes every gate of `c` with the agreement and area references of any of
/// `c.gate_reference`'s gate sets ([`GateReference::gate_sets`]).
fn passes(
    c: &RefineConfig,
    cand: &Candidate,
    propagated: Option<&BinaryMask>,
    state: &ObjectState,
) -> Result<bool> {
    let drift = drift_after(state, cand, propagated);
    if (cand.iou as f64) < c.iou_gate
        || cand.mask.is_empty()
        || !(c.max_drift == 0.0 || (1.0 / c.max_drift..=c.max_drift).contains(&drift))
    {
        return Ok(false);
    }
    for &set in c.gate_reference.gate_sets() {
        let agreement = match propagated {
            Some(p) => Some(agreement(&cand.mask, p, set)?),
            None => None,
        };
        let reference = match set {
            GateReference::LastGood => state.good_area,
            _ => propagated.map(|p| p.area()),
        }
        .or(state.last_area);
        if agreement.is_none_or(|a| a >= c.agreement_gate)
            && area_plausible(cand.mask.area(), reference, c.max_area_change)
        {
            return Ok(true);
        }
    }
    Ok(false)
}

impl<P: MaskProposer> MaskRefiner<P> {
    /// A refiner with `config` (validated) around `proposer`.
    pub fn new(proposer: P, config: RefineConfig) -> Result<Self> {
        config.validate()?;
        Ok(MaskRefiner {
            proposer,
            config,
            states: HashMap::new(),
            history: BTreeMap::new(),
        })
    }

    /// The proposer.
    pub fn proposer_mut(&mut self) -> &mut P {
        &mut self.proposer
    }
}

impl<P: MaskProposer> Refine for MaskRefiner<P> {
    fn refine(&mut self, frame: &Frame, probs: &ObjectProbs) -> Result<Option<ObjectProbs>> {
        if !frame.index.is_multiple_of(self.config.every) || probs.ids().is_empty() {
            return Ok(None);
        }
        let (w, h) = (probs.width(), probs.height());
        let map = probs.argmax();
        let c = &self.config;
        // (object, propagated mask if not empty, prompt)
        let mut jobs: Vec<(ObjectId, Option<BinaryMask>, BoxPrompt)> = Vec::new();
        for &id in probs.ids() {
            let mask = map.mask(id);
            let state = self.states.entry(id).or_default();
            let mask_input = if c.mask_prompt {
                state.low_res.clone()
            } else {
                None
            };
            if mask.area() >= c.min_area.max(1) {
                let b = tight_box(&mask).expect("non-empty mask has a box");
                if !state.box_refined {
                    state.last_box = Some(b);
                    state.last_area = Some(mask.area());
                }
                state.good_area.get_or_insert(mask.area());
                let bbox = grow_box(b, c.box_margin, w, h);
                jobs.push((id, Some(mask), BoxPrompt { bbox, mask_input }));
            } else if let Some(b) = state.last_box.filter(|_| c.reprompt_empty) {
                let bbox = grow_box(b, c.box_margin, w, h);
                jobs.push((id, None, BoxPrompt { bbox, mask_input }));
            }
        }
        if jobs.is_empty() {
            return Ok(None);
        }
        let prompts: Vec<BoxPrompt> = jobs.iter().map(|j| j.2.clone()).collect();
        let proposals = self.proposer.propose(frame, &prompts, c.multimask)?;
        let mut scores = Vec::with_capacity(jobs.len());
        let mut accepted: Vec<(ObjectId, BinaryMask)> = Vec::new();
        for ((id, propagated, _), candidates) in jobs.into_iter().zip(proposals) {
            if candidates.is_empty() {
                continue;
            }
            let state = self.states.entry(id).or_default();
            let propagated = propagated.as_ref();
            // With "either", the choice is among the candidates that pass (all when none does).
            let mut pool: Vec<usize> = (0..candidates.len()).collect();
            if c.gate_reference == GateReference::Either {
                let mut passing = Vec::new();
                for &k in &pool {
                    if passes(c, &candidates[k], propagated, state)? {
                        passing.push(k);
                    }
                }
                if !passing.is_empty() {
                    pool = passing;
                }
            }
            let (i, agreement) = choose(
                &candidates,
                &pool,
                propagated,
                c.gate_reference,
                state.good_area,
            )?;
            let cand = &candidates[i];
            let drift = drift_after(state, cand, propagated);
            let ok = passes(c, cand, propagated, state)?;
            scores.push(RefineScore {
                id,
                iou: cand.iou,
                agreement,
                accepted: ok,
                reprompted: propagated.is_none(),
            });
            if ok {
                state.last_box = tight_box(&cand.mask);
                state.last_area = Some(cand.mask.area());
                state.good_area = Some(cand.mask.area());
                state.box_refined = true;
                state.low_res = cand.low_res.clone();
                state.drift = Some(drift);
                accepted.push((id, cand.mask.clone()));
            }
        }
        self.history.insert(frame.index, scores);
        if accepted.is_empty() {
            return Ok(None);
        }
        Ok(Some(compose(map, probs.ids(), accepted)?))
    }

    fn scores(&self, index: usize) -> Option<&[RefineScore]> {
        self.history.get(&index).map(|s| s.as_slice())
    }

    fn reset(&mut self) {
        self.states.clear();
    }
}

/// One-hot masks of `ids`: `map` with the accepted objects' pixels replaced by their refined
/// masks (larger masks first, so smaller ones stay on top).
fn compose(
    mut map: IdMap,
    ids: &[ObjectId],
    mut accepted: Vec<(ObjectId, BinaryMask)>,
) -> Result<ObjectProbs> {
    for v in map.data_mut() {
        if accepted.iter().any(|(id, _)| *id == *v) {
            *v = 0;
        }
    }
    accepted.sort_by_key(|(_, m)| std::cmp::Reverse(m.area()));
    for (id, mask) in &accepted {
        map.paint(mask, *id)?;
    }
    ObjectProbs::one_hot(&map, ids)
}

#[cfg(test)]
mod tests;
