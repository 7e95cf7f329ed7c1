//! Settings of the automatic SAM segmenter (`[segmenter] kind = "sam_auto"`): the checkpoint,
//! automatic mask generator settings with DEVA's defaults (reference §4.3) and the official
//! generator's names.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Which family of SAM checkpoint is expected (DEVA's `sam_variant`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SamVariant {
    /// SAM with a ViT image encoder (ViT-B/L/H; sizes read from the checkpoint).
    #[default]
    Original,
    /// MobileSAM (TinyViT image encoder).
    Mobile,
}

/// Automatic SAM settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SamConfig {
    /// Checkpoint (official `.pth` or a safetensors conversion; the encoder size is read from
    /// the file).
    pub weights: Option<PathBuf>,
    /// Expected checkpoint family; a checkpoint of the other family is an error.
    pub variant: SamVariant,
    /// Grid points per image side (n × n point prompts per crop).
    pub points_per_side: usize,
    /// Point prompts decoded together.
    pub points_per_batch: usize,
    /// Masks with a predicted IoU at or below this are dropped (0 disables the filter).
    pub pred_iou_thresh: f64,
    /// Masks with a stability score below this are dropped (0 disables the filter).
    pub stability_score_thresh: f64,
    /// Logit offset of the two thresholds whose masks' IoU is the stability score.
    pub stability_score_offset: f64,
    /// Box IoU above which a lower-scored mask of the same crop is suppressed.
    pub box_nms_thresh: f64,
    /// Layers of image crops besides the whole image (layer i has (2^i)² crops).
    pub crop_n_layers: usize,
    /// Box IoU above which masks of different crops are suppressed (smaller crops win).
    pub crop_nms_thresh: f64,
    /// Overlap of neighbouring crops in the first crop layer, as a fraction of the shorter
    /// image side.
    pub crop_overlap_ratio: f64,
    /// Points per side in crop layer i are divided by this to the power i.
    pub crop_n_points_downscale_factor: usize,
    /// Holes and islands smaller than this many pixels are removed (0 disables).
    pub min_mask_region_area: usize,
    /// When turning masks into one segmentation, prefer large objects (small masks are
    /// swallowed) instead of small ones.
    pub suppress_small_objects: bool,
    /// With `suppress_small_objects`, a mask is kept only if it wins at least this fraction of
    /// its own pixels.
    pub overlap_threshold: f64,
}

impl Default for SamConfig {
    fn default() -> Self {
        SamConfig {
            weights: None,
            variant: SamVariant::Original,
            points_per_side: 64,
            points_per_batch: 64,
            pred_iou_thresh: 0.88,
            stability_score_thresh: 0.95,
            stability_score_offset: 1.0,
            box_nms_thresh: 0.7,
            crop_n_layers: 0,
            crop_nms_thresh: 0.7,
            crop_overlap_ratio: 512.0 / 1500.0,
            crop_n_points_downscale_factor: 1,
            min_mask_region_area: 0,
            suppress_small_objects: false,
            overlap_threshold: 0.8,
        }
    }
}

impl SamConfig {
    /// Checks value ranges; errors name the key.
    pub fn validate(&self) -> Result<()> {
        let unit = |v: f64| (0.0..=1.0).contains(&v);
        let checks: [(bool, &str); 8] = [
            (
                self.points_per_side >= 1,
                "sam.points_per_side must be at least 1",
            ),
            (
                self.points_per_batch >= 1,
                "sam.points_per_batch must be at least 1",
            ),
            (
                unit(self.pred_iou_thresh) && unit(self.stability_score_thresh),
                "sam.pred_iou_thresh and sam.stability_score_thresh must be in [0, 1]",
            ),
            (
                self.stability_score_offset >= 0.0,
                "sam.stability_score_offset must not be negative",
            ),
            (
                unit(self.box_nms_thresh) && unit(self.crop_nms_thresh),
                "sam.box_nms_thresh and sam.crop_nms_thresh must be in [0, 1]",
            ),
            (
                (0.0..1.0).contains(&self.crop_overlap_ratio),
                "sam.crop_overlap_ratio must be in [0, 1)",
            ),
            (
                self.crop_n_points_downscale_factor >= 1,
                "sam.crop_n_points_downscale_factor must be at least 1",
            ),
            (
                unit(self.overlap_threshold),
                "sam.overlap_threshold must be in [0, 1]",
            ),
        ];
        match checks.iter().find(|(ok, _)| !ok) {
            Some((_, msg)) => Err(Error::Config(msg.to_string())),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_devas_automatic_mode() {
        let c = SamConfig::default();
        assert_eq!((c.points_per_side, c.points_per_batch), (64, 64));
        assert_eq!((c.pred_iou_thresh, c.stability_score_thresh), (0.88, 0.95));
        assert_eq!((c.stability_score_offset, c.box_nms_thresh), (1.0, 0.7));
        assert_eq!((c.crop_n_layers, c.min_mask_region_area), (0, 0));
        assert!(!c.suppress_small_objects);
        assert_eq!(c.overlap_threshold, 0.8);
        assert_eq!(c.variant, SamVariant::Original);
        assert!(c.validate().is_ok());
    }

    #[test]
    fn out_of_range_values_name_the_key() {
        let c = SamConfig {
            crop_overlap_ratio: 1.5,
            ..Default::default()
        };
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("sam.crop_overlap_ratio"), "{e}");
    }

    #[test]
    fn the_sam_section_reads_from_toml() {
        let c: crate::Config = toml::from_str(
            "[segmenter]\nkind = \"sam_auto\"\npoints_per_side = 8\nvariant = \"mobile\"\n",
        )
        .unwrap();
        let Some(crate::SegmenterSpec::SamAuto(sam)) = c.segmenter else {
            panic!("not sam_auto: {:?}", c.segmenter)
        };
        assert_eq!(sam.points_per_side, 8);
        assert_eq!(sam.variant, SamVariant::Mobile);
        assert_eq!(sam.points_per_batch, 64);
        let e = toml::from_str::<crate::Config>(
            "[segmenter]\nkind = \"sam_auto\"\npoints_per_sid = 8\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("points_per_sid"), "{e}");
    }
}
