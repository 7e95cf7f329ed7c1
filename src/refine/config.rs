//! The `[refine]` configuration section: when and how propagated masks are refined by SAM.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

/// Refiner settings (`[refine]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RefineConfig {
    /// A refined mask is accepted only if SAM's predicted IoU is at least this.
    pub iou_gate: f64,
    /// A refined mask is accepted only if its IoU with the propagated mask is at least this.
    pub agreement_gate: f64,
    /// Refine on frames whose index is a multiple of this (1: every frame).
    pub every: usize,
    /// The box prompt is the propagated mask's box grown on each side by this fraction of its
    /// width / height.
    pub box_margin: f64,
    /// Also prompt with the object's last accepted low-resolution SAM logits.
    pub mask_prompt: bool,
    /// Ask SAM for its three multimask outputs and keep the one agreeing best with the
    /// propagated mask (otherwise the single-mask output).
    pub multimask: bool,
    /// When an object's propagated mask is empty (or below `min_area`), prompt with its last
    /// accepted box and accept on the IoU gate alone.
    pub reprompt_empty: bool,
    /// Propagated masks with fewer pixels than this count as empty.
    pub min_area: usize,
    /// A refined mask is rejected when its area differs from the propagated mask's (when
    /// re-prompted: the last good mask's) by more than this factor either way (a sudden
    /// change: SAM took a part, or the background); 0 turns the gate off.
    pub max_area_change: f64,
    /// Creep gate: the refiner's area changes (refined area / propagated area) multiply up
    /// over the frames since the refiner first saw the object or last re-prompted it; a
    /// refined mask is rejected when that product would leave [1 / `max_drift`, `max_drift`]
    /// (a mask that grows or shrinks a little every frame in the closed loop); 0 turns the
    /// gate off.
    pub max_drift: f64,
    /// What the agreement and area gates compare a refined mask with (see [`GateReference`]).
    pub gate_reference: GateReference,
}

/// What the agreement and area-change gates compare a refined mask with (`[refine]
/// gate_reference`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GateReference {
    /// Agreement: IoU with the propagated mask; area change: against the propagated mask's
    /// area.
    #[default]
    Propagated,
    /// For a propagator whose masks grow (optical flow spreading into the background):
    /// agreement is the fraction of the refined mask inside the propagated mask, so the
    /// propagated mask's growth does not count against a refined mask that lies within it, and
    /// the area change is measured against the object's last good mask (its last accepted
    /// refinement; before one, the first propagated mask the refiner saw), so a refined mask
    /// that is only a part of the object is still rejected.
    LastGood,
    /// A refined mask is accepted when it passes either the `propagated` gates or the
    /// `last_good` gates (the same thresholds; the predicted-IoU, emptiness and creep gates
    /// apply to both). Of SAM's outputs that pass, the one with the best IoU with the
    /// propagated mask is kept (as with `propagated`): a fast object whose propagated mask lags
    /// behind passes on IoU, one inside a grown propagated mask passes on the share inside and
    /// the last good area.
    Either,
}

impl GateReference {
    /// The single gate sets a refined mask is judged by: one, or both for [`Self::Either`].
    pub fn gate_sets(self) -> &'static [GateReference] {
        match self {
            GateReference::Propagated => &[GateReference::Propagated],
            GateReference::LastGood => &[GateReference::LastGood],
            GateReference::Either => &[GateReference::Propagated, GateReference::LastGood],
        }
    }
}

impl Default for RefineConfig {
    fn default() -> Self {
        RefineConfig {
            iou_gate: 0.8,
            agreement_gate: 0.5,
            every: 1,
            box_margin: 0.1,
            mask_prompt: false,
            multimask: true,
            reprompt_empty: true,
            min_area: 1,
            max_area_change: 0.0,
            max_drift: 0.0,
            gate_reference: GateReference::Propagated,
        }
    }
}

impl RefineConfig {
    /// Checks value ranges; errors name the key.
    pub fn validate(&self) -> Result<()> {
        let unit = |v: f64| (0.0..=1.0).contains(&v);
        if !unit(self.iou_gate) || !unit(self.agreement_gate) {
            return Err(Error::Config(
                "refine.iou_gate and refine.agreement_gate must be in [0, 1]".into(),
            ));
        }
        if self.every == 0 {
            return Err(Error::Config("refine.every must be at least 1".into()));
        }
        if !(self.max_area_change == 0.0 || self.max_area_change > 1.0) {
            return Err(Error::Config(
                "refine.max_area_change must be 0 (off) or above 1".into(),
            ));
        }
        if !(self.max_drift == 0.0 || self.max_drift > 1.0) {
            return Err(Error::Config(
                "refine.max_drift must be 0 (off) or above 1".into(),
            ));
        }
        if !(0.0..=2.0).contains(&self.box_margin) {
            return Err(Error::Config("refine.box_margin must be in [0, 2]".into()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn section_parses_with_defaults_and_rejects_bad_values() {
        let c: RefineConfig = toml::from_str("iou_gate = 0.9\nevery = 2").unwrap();
        assert_eq!(c.iou_gate, 0.9);
        assert_eq!(c.every, 2);
        assert_eq!(c.agreement_gate, RefineConfig::default().agreement_gate);
        c.validate().unwrap();
        assert!(toml::from_str::<RefineConfig>("gate = 1").is_err());
        let bad = RefineConfig {
            every: 0,
            ..RefineConfig::default()
        };
        assert!(bad
            .validate()
            .unwrap_err()
            .to_string()
            .contains("refine.every"));
        let bad = RefineConfig {
            agreement_gate: 1.5,
            ..RefineConfig::default()
        };
        assert!(bad
            .validate()
            .unwrap_err()
            .to_string()
            .contains("agreement_gate"));
    }
}
