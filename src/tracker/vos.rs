//! VOS / reference mode: masks given on any frame are followed exactly.
//!
//! A frame with a non-empty given segmentation is a step with given masks (new objects are
//! added, re-listed ones overwritten — the reference crashes on re-listed ids); other frames
//! are plain propagation steps. Objects are never deleted. With a propagator that matches the
//! reference network this reproduces `DEVAInferenceCore.step` in VOS mode call for call.

use super::{Engine, Input, Prepared, TrackedFrame};
use crate::consensus::Consensus;
use crate::error::Result;
use crate::mask::ObjectProbs;

/// Processes one frame in VOS mode.
pub(crate) fn step(
    engine: &mut Engine,
    input: &mut Input,
    frame: Prepared,
) -> Result<TrackedFrame> {
    let tracked = engine.tracked(frame.original.width(), frame.original.height());
    let probs = match input.segment_internal(&frame, tracked.as_ref())? {
        Some(seg) if !seg.segments.is_empty() => {
            let given = Consensus::from_segmentation(&seg);
            let ids: Vec<_> = given.segments.iter().map(|s| s.id).collect();
            let masks = ObjectProbs::one_hot(&given.map, &ids)?;
            engine.given(&frame.internal, &masks, &given.segments)?
        }
        _ => engine.propagate(&frame.internal)?,
    };
    Ok(frame.finish(probs, engine.infos()))
}
