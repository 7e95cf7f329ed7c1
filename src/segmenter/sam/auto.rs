//! DEVA's automatic mode on top of the mask generator (reference §4.3): grid points are only
//! queried where nothing is tracked yet, and the generated masks become one non-overlapping
//! segmentation that prefers small objects (or large ones with `suppress_small_objects`).

use super::amg::{self, AmgMask};
use super::config::SamConfig;
use super::model::SamModel;
use crate::error::{Error, Result};
use crate::mask::{BinaryMask, IdMap, SegmentInfo, Segmentation};
use crate::segmenter::ImageSegmenter;
use crate::video::{internal_size, Frame};
use std::sync::Arc;

/// Blurred-mask value below which a grid point counts as untracked.
const UNTRACKED_BELOW: f32 = 0.01;
/// Downscaling factor of the blur applied to the tracked mask before sampling.
const BLUR_FACTOR: usize = 16;

/// Antialiased bilinear downscaling by an integer `factor` with PyTorch's rule for a given
/// `scale_factor` (output `floor(len / factor)`, filter support `factor`): for each output
/// sample, the first input index and the normalised weights.
fn downscale_taps(len: usize, factor: usize) -> Vec<(usize, Vec<f32>)> {
    let scale = factor as f64;
    (0..len / factor)
        .map(|i| {
            let center = scale * (i as f64 + 0.5);
            let lo = ((center - scale + 0.5) as i64).max(0) as usize;
            let hi = ((center + scale + 0.5) as i64).min(len as i64) as usize;
            let w: Vec<f64> = (lo..hi)
                .map(|j| (1.0 - ((j as f64 - center + 0.5) / scale).abs()).max(0.0))
                .collect();
            let total: f64 = w.iter().sum();
            (lo, w.iter().map(|v| (v / total) as f32).collect())
        })
        .collect()
}

/// The tracked mask blurred: `F.interpolate(mask, scale_factor=1/16, mode="bilinear",
/// antialias=True)`, as a row-major `(h, w)` map.
fn blur(mask: &BinaryMask) -> (Vec<f32>, usize, usize) {
    let (w, h) = (mask.width(), mask.height());
    let xt = downscale_taps(w, BLUR_FACTOR);
    let yt = downscale_taps(h, BLUR_FACTOR);
    let (ow, oh) = (xt.len(), yt.len());
    let mut rows = vec![0f32; h * ow];
    for y in 0..h {
        for (x, (lo, wt)) in xt.iter().enumerate() {
            rows[y * ow + x] = wt
                .iter()
                .enumerate()
                .filter(|(k, _)| mask.get(lo + k, y))
                .map(|(_, v)| v)
                .sum();
        }
    }
    let mut out = vec![0f32; oh * ow];
    for (y, (lo, wt)) in yt.iter().enumerate() {
        for x in 0..ow {
            out[y * ow + x] = wt
                .iter()
                .enumerate()
                .map(|(k, v)| v * rows[(lo + k) * ow + x])
                .sum();
        }
    }
    (out, ow, oh)
}

/// Bilinear sample of a row-major map at pixel position `(x, y)` with zeros outside
/// (`grid_sample(..., align_corners=False, padding_mode="zeros")` after unnormalising).
fn sample(map: &[f32], w: usize, h: usize, x: f64, y: f64) -> f32 {
    let (x0, y0) = (x.floor(), y.floor());
    let (tx, ty) = ((x - x0) as f32, (y - y0) as f32);
    let at = |xi: f64, yi: f64| -> f32 {
        if xi < 0.0 || yi < 0.0 || xi >= w as f64 || yi >= h as f64 {
            0.0
        } else {
            map[yi as usize * w + xi as usize]
        }
    };
    at(x0, y0) * (1.0 - tx) * (1.0 - ty)
        + at(x0 + 1.0, y0) * tx * (1.0 - ty)
        + at(x0, y0 + 1.0) * (1.0 - tx) * ty
        + at(x0 + 1.0, y0 + 1.0) * tx * ty
}

/// The points of the `n × n` grid (normalised, row-major) that lie well outside `tracked`:
/// the mask is blurred by a 1/16 antialiased downscale and a point is kept when the blurred
/// value there is below 0.01.
pub fn untracked_points(tracked: &BinaryMask, n: usize) -> Vec<[f64; 2]> {
    let (map, w, h) = blur(tracked);
    amg::point_grid(n)
        .into_iter()
        .filter(|p| {
            let x = p[0] * w as f64 - 0.5;
            let y = p[1] * h as f64 - 0.5;
            w == 0 || h == 0 || sample(&map, w, h, x, y) < UNTRACKED_BELOW
        })
        .collect()
}

/// Turns generated masks into one segmentation of `width × height` (DEVA's rules, reference
/// §4.3). By default every pixel goes to the smallest mask covering it (first mask on equal
/// areas). With `suppress_small`, the largest mask wins and a mask is kept only if it wins at
/// least `overlap_threshold` of its pixels. Ids are consecutive from 1 over the masks that
/// keep pixels (the reference's id misalignment is fixed); scores are predicted IoUs.
pub fn masks_to_segmentation(
    masks: &[AmgMask],
    width: usize,
    height: usize,
    suppress_small: bool,
    overlap_threshold: f64,
) -> Result<Segmentation> {
    if let Some(m) = masks
        .iter()
        .find(|m| m.mask.width() != width || m.mask.height() != height)
    {
        return Err(Error::invalid(format!(
            "SAM mask is {}x{}, the frame {width}x{height}",
            m.mask.width(),
            m.mask.height()
        )));
    }
    let max_area = masks.iter().map(|m| m.area).max().unwrap_or(0) as f64;
    let score = |m: &AmgMask| {
        if suppress_small {
            m.area as f64
        } else {
            2.0 * max_area - m.area as f64
        }
    };
    // Argmax over [background 0.1, score_k · mask_k], first maximum on ties.
    let mut best = vec![0.1f64; width * height];
    let mut owner = vec![usize::MAX; width * height];
    for (k, m) in masks.iter().enumerate() {
        let s = score(m);
        for (p, _) in m.mask.data().iter().enumerate().filter(|(_, &v)| v) {
            if s > best[p] {
                best[p] = s;
                owner[p] = k;
            }
        }
    }
    let mut won = vec![0usize; masks.len()];
    owner
        .iter()
        .filter(|&&k| k != usize::MAX)
        .for_each(|&k| won[k] += 1);
    let mut ids = vec![0u32; masks.len()];
    let mut segments = Vec::new();
    for (k, m) in masks.iter().enumerate() {
        let keep =
            won[k] > 0 && (!suppress_small || won[k] as f64 / m.area as f64 >= overlap_threshold);
        if keep {
            ids[k] = segments.len() as u32 + 1;
            segments.push(SegmentInfo {
                score: Some(m.predicted_iou),
                ..SegmentInfo::new(ids[k])
            });
        }
    }
    let data = owner
        .iter()
        .map(|&k| if k == usize::MAX { 0 } else { ids[k] })
        .collect();
    Ok(Segmentation {
        map: IdMap::from_vec(width, height, data)?,
        segments,
    })
}

/// DEVA's automatic segmenter: SAM's mask generator on a point grid, restricted to untracked
/// regions when the tracker reports them. Its segments are proposals (consensus and
/// incremental merge).
#[derive(Debug)]
pub struct SamAutoSegmenter {
    model: Arc<SamModel>,
    config: SamConfig,
    internal_size: i32,
}

impl SamAutoSegmenter {
    /// A segmenter with `config` (validated). Tracked regions are blurred at the tracker's
    /// internal size as in the reference (480 until the tracker sets it).
    pub fn new(model: Arc<SamModel>, config: SamConfig) -> Result<Self> {
        config.validate()?;
        Ok(SamAutoSegmenter {
            model,
            config,
            internal_size: crate::config::InputConfig::default().size,
        })
    }

    /// The grid points to query on a frame, or `None` for the whole grid.
    fn query_points(
        &self,
        frame: &Frame,
        tracked: Option<&BinaryMask>,
    ) -> Result<Option<Vec<[f64; 2]>>> {
        let Some(tracked) = tracked else {
            return Ok(None);
        };
        let (w, h) = (frame.width(), frame.height());
        if (tracked.width(), tracked.height()) != (w, h) {
            return Err(Error::invalid(format!(
                "frame {} ({}): tracked mask is {}x{}, the frame {w}x{h}",
                frame.index,
                frame.name,
                tracked.width(),
                tracked.height()
            )));
        }
        let (iw, ih) = internal_size(w, h, self.internal_size);
        let tracked = tracked.resize_nearest(iw, ih);
        Ok(Some(untracked_points(
            &tracked,
            self.config.points_per_side,
        )))
    }
}

impl ImageSegmenter for SamAutoSegmenter {
    fn name(&self) -> &str {
        "sam-auto"
    }

    fn sam(&self) -> Option<Arc<SamModel>> {
        Some(self.model.clone())
    }

    fn set_internal_size(&mut self, size: i32) {
        self.internal_size = size;
    }

    fn segment(
        &mut self,
        frame: &Frame,
        tracked: Option<&BinaryMask>,
    ) -> Result<Option<Segmentation>> {
        let (w, h) = (frame.width(), frame.height());
        let points = self.query_points(frame, tracked)?;
        if points.as_ref().is_some_and(|p| p.is_empty()) {
            return Ok(Some(Segmentation::empty(w, h)));
        }
        let masks = amg::generate(&self.model, &frame.image, &self.config, points.as_deref())?;
        masks_to_segmentation(
            &masks,
            w,
            h,
            self.config.suppress_small_objects,
            self.config.overlap_threshold,
        )
        .map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn amg_mask(mask: BinaryMask, iou: f32) -> AmgMask {
        AmgMask {
            area: mask.area(),
            bbox: [0; 4],
            predicted_iou: iou,
            stability_score: 1.0,
            point: [0.0, 0.0],
            crop_box: [0, 0, mask.width(), mask.height()],
            mask,
        }
    }

    fn rect(x0: usize, x1: usize) -> BinaryMask {
        BinaryMask::from_fn(10, 2, |x, _| x >= x0 && x < x1)
    }

    #[test]
    fn small_objects_win_by_default_and_ids_skip_fully_covered_masks() {
        // Mask 0 covers 0..8, mask 1 (hidden entirely under mask 2) covers 2..4 like mask 2,
        // mask 2 covers 2..4 and comes later, mask 3 covers 6..7.
        let masks = vec![
            amg_mask(rect(0, 8), 0.9),
            amg_mask(rect(2, 4), 0.8),
            amg_mask(rect(2, 4), 0.7),
            amg_mask(rect(6, 7), 0.6),
        ];
        let seg = masks_to_segmentation(&masks, 10, 2, false, 0.8).unwrap();
        // Equal areas: the first of masks 1 and 2 wins; mask 2 gets nothing and no id.
        let row: Vec<u32> = seg.map.data()[..10].to_vec();
        assert_eq!(row, vec![1, 1, 2, 2, 1, 1, 3, 1, 0, 0]);
        let scores: Vec<(u32, Option<f32>)> =
            seg.segments.iter().map(|s| (s.id, s.score)).collect();
        assert_eq!(scores, vec![(1, Some(0.9)), (2, Some(0.8)), (3, Some(0.6))]);
        seg.validate().unwrap();
    }

    #[test]
    fn suppress_small_objects_keeps_large_masks_and_drops_eaten_ones() {
        let masks = vec![
            amg_mask(rect(2, 4), 0.9),
            amg_mask(rect(0, 8), 0.5),
            amg_mask(rect(7, 10), 0.4),
        ];
        let seg = masks_to_segmentation(&masks, 10, 2, true, 0.8).unwrap();
        // The large mask wins everywhere it covers; the small one wins nothing; the third
        // wins 2 of its 3 pixels (0.67 < 0.8) and is dropped, leaving its pixels empty.
        assert_eq!(
            seg.map.data()[..10].to_vec(),
            vec![1, 1, 1, 1, 1, 1, 1, 1, 0, 0]
        );
        assert_eq!(seg.segments.len(), 1);
        assert_eq!(seg.segments[0].score, Some(0.5));
        let seg = masks_to_segmentation(&masks, 10, 2, true, 0.6).unwrap();
        assert_eq!(
            seg.map.data()[..10].to_vec(),
            vec![1, 1, 1, 1, 1, 1, 1, 1, 2, 2]
        );
    }

    #[test]
    fn blur_taps_follow_pytorch_scale_factor_rule() {
        // 854 columns at scale 1/16: 53 outputs, each averaging 32 inputs with a triangle
        // (support 16 around centre 16·(i + 0.5)).
        let taps = downscale_taps(854, 16);
        assert_eq!(taps.len(), 53);
        assert_eq!(taps[0].0, 0);
        assert_eq!(taps[0].1.len(), 24);
        assert_eq!(taps[10].0, 152);
        assert_eq!(taps[10].1.len(), 32);
        let sum: f32 = taps[10].1.iter().sum();
        assert!((sum - 1.0).abs() < 1e-6);
    }

    #[test]
    fn only_points_far_from_tracked_regions_are_queried() {
        // Left half tracked: a 4x4 grid keeps the two right columns, except points whose
        // blurred value (the blur reaches 16 px) is at least 0.01.
        let tracked = BinaryMask::from_fn(128, 64, |x, _| x < 64);
        let pts = untracked_points(&tracked, 4);
        assert_eq!(
            pts,
            vec![
                [0.875, 0.125],
                [0.875, 0.375],
                [0.875, 0.625],
                [0.875, 0.875]
            ]
        );
        let all = untracked_points(&BinaryMask::new(128, 64), 4);
        assert_eq!(all.len(), 16);
        assert!(untracked_points(&BinaryMask::from_fn(128, 64, |_, _| true), 4).is_empty());
    }
}
