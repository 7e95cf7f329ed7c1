//! [`Mask2FormerSegmenter`]: Mask2Former as an [`ImageSegmenter`] (panoptic or instance).

use std::collections::BTreeMap;

use candle_core::Device;
use image::RgbImage;

use super::labels::LabelSet;
use super::model::Mask2Former;
use super::postprocess::{
    instance, instance_candidates, panoptic, resize_mask_logits, Convention, PanopticOptions,
    QueryPredictions, SegmentMap,
};
use super::preprocess::{aspect_size, normalize};
use crate::error::{Error, Result};
use crate::mask::{BinaryMask, CategoryNames, IdMap, ObjectId, SegmentInfo, Segmentation};
use crate::segmenter::ImageSegmenter;
use crate::video::pillow::resize_torchvision;
use crate::video::Frame;

/// Stride the network input must be padded to.
const SIZE_DIVISIBILITY: usize = 32;

/// What the segmenter outputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mask2FormerTask {
    /// Panoptic segments (things and fused stuff).
    Panoptic,
    /// Instances (top-k class/query pairs).
    Instance,
}

/// Thresholds and input size of the segmenter (detectron2's test defaults).
#[derive(Debug, Clone, PartialEq)]
pub struct Mask2FormerSettings {
    /// Panoptic or instance output.
    pub task: Mask2FormerTask,
    /// Panoptic: minimum class probability; instance: minimum final score.
    pub threshold: f32,
    /// Panoptic: probability that puts a pixel in a query's own mask.
    pub mask_threshold: f32,
    /// Panoptic: minimum fraction of its own mask a query must win.
    pub overlap_threshold: f32,
    /// Shorter side of the network input.
    pub shortest_edge: usize,
    /// Bound on the longer side of the network input.
    pub longest_edge: usize,
}

impl Default for Mask2FormerSettings {
    fn default() -> Self {
        Mask2FormerSettings {
            task: Mask2FormerTask::Panoptic,
            threshold: 0.8,
            mask_threshold: 0.5,
            overlap_threshold: 0.8,
            shortest_edge: 800,
            longest_edge: 1333,
        }
    }
}

/// Mask2Former segmenting single frames.
#[derive(Debug)]
pub struct Mask2FormerSegmenter {
    model: Mask2Former,
    labels: LabelSet,
    settings: Mask2FormerSettings,
    device: Device,
}

impl Mask2FormerSegmenter {
    /// A segmenter over a loaded model; `labels` must match its classes.
    pub fn new(
        model: Mask2Former,
        labels: LabelSet,
        settings: Mask2FormerSettings,
        device: &Device,
    ) -> Result<Self> {
        labels.check(model.config().num_labels())?;
        if settings.shortest_edge == 0 || settings.longest_edge == 0 {
            return Err(Error::Config(
                "mask2former: input edges must be positive".into(),
            ));
        }
        Ok(Mask2FormerSegmenter {
            model,
            labels,
            settings,
            device: device.clone(),
        })
    }

    /// Segments an image: resize (shorter side, longer side bounded), pad to a multiple of
    /// 32, forward, masks back to the image (crop the padding, bilinear), post-process.
    pub fn predict(&self, img: &RgbImage) -> Result<SegmentMap> {
        let (w, h) = (img.width() as usize, img.height() as usize);
        let s = &self.settings;
        let (oh, ow) = aspect_size(h, w, s.shortest_edge, s.longest_edge);
        let x = normalize(&resize_torchvision(img, ow, oh), &self.device)?;
        let (ph, pw) = (
            oh.div_ceil(SIZE_DIVISIBILITY) * SIZE_DIVISIBILITY,
            ow.div_ceil(SIZE_DIVISIBILITY) * SIZE_DIVISIBILITY,
        );
        let x = x
            .pad_with_zeros(2, 0, ph - oh)?
            .pad_with_zeros(3, 0, pw - ow)?;
        let out = self.model.forward(&x)?;
        let masks = out.masks_queries_logits().squeeze(0)?;
        let masks = resize_mask_logits(&masks, None, (ph, pw))?;
        let masks = resize_mask_logits(&masks, Some((oh, ow)), (h, w))?;
        let classes = out.class_queries_logits().squeeze(0)?;
        let pred = QueryPredictions::from_tensors(&classes, &masks)?;
        match s.task {
            Mask2FormerTask::Panoptic => Ok(panoptic(
                &pred,
                (h, w),
                &PanopticOptions {
                    threshold: s.threshold,
                    mask_threshold: s.mask_threshold,
                    overlap_mask_area_threshold: s.overlap_threshold,
                    label_ids_to_fuse: self.labels.stuff_ids(),
                    convention: Convention::Detectron2,
                },
            )),
            Mask2FormerTask::Instance => {
                instance(&pred, &instance_candidates(&pred), (h, w), s.threshold)
            }
        }
    }

    /// Turns a post-processed map into a [`Segmentation`]: one segment per id present in
    /// the map (fused stuff once, with its best score), ids renumbered from 1.
    pub fn to_segmentation(&self, r: &SegmentMap) -> Result<Segmentation> {
        let mut best: BTreeMap<i32, (usize, f32)> = BTreeMap::new();
        for s in &r.segments {
            let e = best.entry(s.id).or_insert((s.label_id, s.score));
            if s.score > e.1 {
                *e = (s.label_id, s.score);
            }
        }
        let present: std::collections::BTreeSet<i32> = r
            .map
            .iter()
            .copied()
            .filter(|v| best.contains_key(v))
            .collect();
        let renumber: BTreeMap<i32, ObjectId> = present
            .iter()
            .enumerate()
            .map(|(i, &v)| (v, i as ObjectId + 1))
            .collect();
        let data = r
            .map
            .iter()
            .map(|v| renumber.get(v).copied().unwrap_or(0))
            .collect();
        let map = IdMap::from_vec(r.width, r.height, data)?;
        let mut segments = Vec::with_capacity(renumber.len());
        for (v, &id) in &renumber {
            let (label, score) = best[v];
            let l = self.labels.labels.get(label).ok_or_else(|| {
                Error::invalid(format!("mask2former: class {label} outside the label set"))
            })?;
            segments.push(SegmentInfo {
                id,
                category_id: Some(l.category_id),
                score: Some(score),
                isthing: Some(l.isthing),
            });
        }
        Ok(Segmentation { map, segments })
    }

    /// The model.
    pub fn model(&self) -> &Mask2Former {
        &self.model
    }

    /// The model's classes with their category ids and kinds.
    pub fn labels(&self) -> &LabelSet {
        &self.labels
    }
}

impl ImageSegmenter for Mask2FormerSegmenter {
    fn name(&self) -> &str {
        "mask2former"
    }

    /// The label set's names by category id.
    fn category_names(&self) -> CategoryNames {
        self.labels.category_names()
    }

    fn segment(
        &mut self,
        frame: &Frame,
        _tracked: Option<&BinaryMask>,
    ) -> Result<Option<Segmentation>> {
        let r = self.predict(&frame.image)?;
        Ok(Some(self.to_segmentation(&r)?))
    }
}
