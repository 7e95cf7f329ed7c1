//! The `[propagator] kind = "flow"` settings: DIS optical flow plus mask warping, occlusion
//! filling and edge-aware re-anchoring.

use crate::config::first_failure;
use crate::error::Result;
use serde::{Deserialize, Serialize};

/// Settings of the optical-flow propagator (`[flow]`): DIS optical flow (Kroeger et al., ECCV
/// 2016) plus mask warping, occlusion filling and edge-aware re-anchoring.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FlowConfig {
    /// Finest pyramid level the flow is estimated on (0 = full internal resolution, 1 = half,
    /// ...); the result is upsampled bilinearly.
    pub finest_level: usize,
    /// Coarsest pyramid level; unset: chosen so that the coarsest image is about four
    /// patches across (the DIS rule).
    pub coarsest_level: Option<usize>,
    /// Side of the square patches of the inverse search, in pixels.
    pub patch_size: usize,
    /// Distance between neighbouring patches, in pixels (overlap = size − stride).
    pub patch_stride: usize,
    /// Gauss–Newton iterations of the inverse search per patch.
    pub iterations: usize,
    /// Fixed-point iterations of the variational refinement per level (0 = none).
    pub refine_iterations: usize,
    /// SOR sweeps per fixed-point iteration.
    pub sor_iterations: usize,
    /// Smoothness weight α of the variational refinement.
    pub refine_alpha: f32,
    /// Brightness-constancy weight δ of the variational refinement.
    pub refine_delta: f32,
    /// Gradient-constancy weight γ of the variational refinement.
    pub refine_gamma: f32,
    /// Forward–backward consistency: absolute round-trip tolerance in pixels.
    pub consistency_px: f32,
    /// Forward–backward consistency: tolerance relative to the squared motion.
    pub consistency_rel: f32,
    /// Radius (pixels) of the neighbourhood from which inconsistent (occluded) pixels take the
    /// masks of consistent pixels of similar colour (0 = off: they rely on the forward splat
    /// and the colour model).
    pub fill_radius: usize,
    /// Colour scale σ (colours in [0, 1]) of the joint-bilateral weights of that filling.
    pub fill_color_sigma: f32,
    /// Radius of the guided filter that re-anchors masks to image edges (0 = off).
    pub filter_radius: usize,
    /// Regularisation ε of the guided filter (colours in [0, 1]); smaller follows edges
    /// more closely.
    pub filter_eps: f32,
    /// Exponent γ that sharpens the final masks (`p_k^γ / Σ_j p_j^γ`) so that soft tails left
    /// by warping and filtering do not accumulate over time (1 = off).
    pub sharpen: f32,
    /// Histogram bins per colour channel of the per-object colour models.
    pub color_bins: usize,
    /// Exponent of the colour likelihood on occluded (inconsistent) pixels (0 = off).
    pub color_weight_occluded: f32,
    /// Exponent of the colour likelihood on consistent pixels (0 = off).
    pub color_weight_visible: f32,
}

impl Default for FlowConfig {
    fn default() -> Self {
        FlowConfig {
            finest_level: 1,
            coarsest_level: None,
            patch_size: 8,
            patch_stride: 4,
            iterations: 16,
            refine_iterations: 5,
            sor_iterations: 5,
            refine_alpha: 20.0,
            refine_delta: 5.0,
            refine_gamma: 10.0,
            consistency_px: 1.0,
            consistency_rel: 0.05,
            fill_radius: 10,
            fill_color_sigma: 0.1,
            filter_radius: 4,
            filter_eps: 1e-3,
            sharpen: 2.0,
            color_bins: 16,
            color_weight_occluded: 1.0,
            color_weight_visible: 0.1,
        }
    }
}

impl FlowConfig {
    /// Checks value ranges; messages name the `flow.*` key.
    pub fn validate(&self) -> Result<()> {
        let checks: [(bool, &str); 6] = [
            (
                (2..=32).contains(&self.patch_size),
                "flow.patch_size must be between 2 and 32",
            ),
            (
                self.patch_stride >= 1 && self.patch_stride <= self.patch_size,
                "flow.patch_stride must be between 1 and flow.patch_size",
            ),
            (
                self.coarsest_level.is_none_or(|c| c >= self.finest_level && c <= 16),
                "flow.coarsest_level must be between flow.finest_level and 16",
            ),
            (
                self.finest_level <= 16,
                "flow.finest_level must be at most 16",
            ),
            (
                [self.refine_alpha, self.refine_delta, self.refine_gamma, self.filter_eps]
                    .iter()
                    .all(|v| v.is_finite() && *v >= 0.0)
                    && self.consistency_px > 0.0
                    && self.fill_color_sigma > 0.0
                    && self.consistency_rel >= 0.0
                    && self.sharpen >= 1.0
                    && self.color_weight_occluded >= 0.0
                    && self.color_weight_visible >= 0.0,
                "flow weights (refine_*, filter_eps, color_weight_*) must be finite and not negative, flow.consistency_px and flow.fill_color_sigma positive, flow.sharpen at least 1",
            ),
            (
                (2..=64).contains(&self.color_bins),
                "flow.color_bins must be between 2 and 64",
            ),
        ];
        first_failure(&checks)
    }
}
