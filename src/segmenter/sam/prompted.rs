//! Masks from box and point prompts on given frames (e.g. a first-frame box to start a
//! track): SAM is prompted once per object and the best of its three masks is kept.

use super::model::SamModel;
use super::predictor::{PointPrompt, Prompt};
use crate::error::{Error, Result};
use crate::mask::{BBox, BinaryMask, IdMap, ObjectId, SegmentInfo, Segmentation};
use crate::segmenter::{ImageSegmenter, SegmenterKind};
use crate::video::Frame;
use std::collections::BTreeMap;
use std::sync::Arc;

/// The prompt for one object.
#[derive(Debug, Clone, PartialEq)]
pub struct ObjectPrompt {
    /// The object's id in the output segmentation (non-zero).
    pub id: ObjectId,
    /// A box around the object in frame pixels (`x, y, w, h`).
    pub bbox: Option<BBox>,
    /// Point prompts in frame pixels.
    pub points: Vec<PointPrompt>,
}

/// Parses boxes written `x,y,w,h` (pixels, integers), several separated by `;`.
pub fn parse_boxes(text: &str) -> Result<Vec<BBox>> {
    text.split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|b| {
            let v: Vec<u32> = b
                .split(',')
                .map(|n| {
                    pixel_count(n.trim()).map_err(|e| Error::invalid(format!("box {b:?}: {e}")))
                })
                .collect::<Result<_>>()?;
            match v[..] {
                [x, y, w, h] if w > 0 && h > 0 => Ok(BBox { x, y, w, h }),
                [_, _, _, _] => Err(Error::invalid(format!(
                    "box {b:?}: width and height must be positive"
                ))),
                _ => Err(Error::invalid(format!(
                    "box {b:?}: expected 4 numbers x,y,w,h"
                ))),
            }
        })
        .collect::<Result<Vec<_>>>()
        .and_then(|boxes| {
            if boxes.is_empty() {
                Err(Error::invalid(format!(
                    "no box in {text:?} (expected x,y,w,h[;x,y,w,h...])"
                )))
            } else {
                Ok(boxes)
            }
        })
}

/// One box coordinate: a whole, non-negative number of pixels below 2^32.
fn pixel_count(n: &str) -> std::result::Result<u32, String> {
    let expected = "box numbers are x,y,w,h in whole pixels";
    let v: f64 = n
        .parse()
        .map_err(|_| format!("{n:?} is not a number ({expected})"))?;
    if !v.is_finite() || v < 0.0 {
        return Err(format!(
            "{n} is negative or not finite ({expected}, 0 or more)"
        ));
    }
    if v.fract() != 0.0 {
        return Err(format!("{n} is not a whole number ({expected})"));
    }
    if v > u32::MAX as f64 {
        return Err(format!("{n} is too large ({expected})"));
    }
    Ok(v as u32)
}

/// Segments the frames that have prompts; other frames get nothing. Its masks are reference
/// masks (followed exactly by the tracker).
#[derive(Debug)]
pub struct SamPromptSegmenter {
    model: Arc<SamModel>,
    prompts: BTreeMap<usize, Vec<ObjectPrompt>>,
}

impl SamPromptSegmenter {
    /// A segmenter with prompts per frame index; every prompt needs a box or points, and ids
    /// must be non-zero and unique within a frame.
    pub fn new(model: Arc<SamModel>, prompts: BTreeMap<usize, Vec<ObjectPrompt>>) -> Result<Self> {
        for (frame, objects) in &prompts {
            let mut seen = std::collections::BTreeSet::new();
            for o in objects {
                if o.id == 0 || !seen.insert(o.id) {
                    return Err(Error::invalid(format!(
                        "frame {frame}: object id {} is zero or given twice",
                        o.id
                    )));
                }
                if o.bbox.is_none() && o.points.is_empty() {
                    return Err(Error::invalid(format!(
                        "frame {frame}: object {} has neither a box nor points",
                        o.id
                    )));
                }
            }
        }
        Ok(SamPromptSegmenter { model, prompts })
    }

    /// Objects 1, 2, … from boxes on frame `frame`.
    pub fn from_boxes(model: Arc<SamModel>, frame: usize, boxes: &[BBox]) -> Result<Self> {
        let objects = boxes
            .iter()
            .enumerate()
            .map(|(i, b)| ObjectPrompt {
                id: i as ObjectId + 1,
                bbox: Some(*b),
                points: Vec::new(),
            })
            .collect();
        Self::new(model, BTreeMap::from([(frame, objects)]))
    }
}

impl ImageSegmenter for SamPromptSegmenter {
    fn name(&self) -> &str {
        "sam-prompt"
    }

    fn sam(&self) -> Option<Arc<SamModel>> {
        Some(self.model.clone())
    }

    fn kind(&self) -> SegmenterKind {
        SegmenterKind::Reference
    }

    fn segment(
        &mut self,
        frame: &Frame,
        _tracked: Option<&BinaryMask>,
    ) -> Result<Option<Segmentation>> {
        let Some(objects) = self.prompts.get(&frame.index) else {
            return Ok(None);
        };
        let (w, h) = (frame.width(), frame.height());
        for o in objects {
            if let Some(b) = o.bbox {
                if b.x as usize >= w || b.y as usize >= h {
                    return Err(Error::invalid(format!(
                        "frame {} ({}): box {},{},{},{} of object {} starts outside the {w}x{h} frame",
                        frame.index, frame.name, b.x, b.y, b.w, b.h, o.id
                    )));
                }
            }
        }
        let emb = self.model.embed_image(&frame.image)?;
        let mut masks = Vec::with_capacity(objects.len());
        for o in objects {
            let prompt = Prompt {
                points: o.points.clone(),
                bbox: o.bbox.map(|b| b.xyxy().map(f64::from)),
                mask_input: None,
            };
            let pred = self.model.predict(&emb, &prompt, true)?;
            let best = pred.best();
            masks.push((o.id, pred.mask(best), pred.iou[best]));
        }
        // Larger masks first, so that smaller ones end up on top.
        masks.sort_by_key(|(_, m, _)| std::cmp::Reverse(m.area()));
        let mut map = IdMap::new(w, h);
        for (id, mask, _) in &masks {
            map.paint(mask, *id)?;
        }
        let present = map.areas();
        let segments = objects
            .iter()
            .filter(|o| present.contains_key(&o.id))
            .map(|o| {
                let iou = masks.iter().find(|(id, _, _)| *id == o.id).map(|m| m.2);
                SegmentInfo {
                    score: iou,
                    ..SegmentInfo::new(o.id)
                }
            })
            .collect();
        Ok(Some(Segmentation { map, segments }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boxes_parse_and_bad_ones_are_named() {
        assert_eq!(
            parse_boxes("10,20,30,40; 1,2,3,4").unwrap(),
            vec![
                BBox {
                    x: 10,
                    y: 20,
                    w: 30,
                    h: 40
                },
                BBox {
                    x: 1,
                    y: 2,
                    w: 3,
                    h: 4
                }
            ]
        );
        for bad in ["1,2,3", "1,2,3,x", "1,2,0,4", "", ";"] {
            let e = parse_boxes(bad).unwrap_err().to_string();
            assert!(e.contains("box") || e.contains("no box"), "{bad}: {e}");
        }
        assert!(parse_boxes("1,2,3")
            .unwrap_err()
            .to_string()
            .contains("\"1,2,3\""));
        for (bad, says) in [
            ("-5,2,3,4", "-5 is negative"),
            ("1.5,2,3,4", "1.5 is not a whole number"),
            ("1,2,3,abc", "\"abc\" is not a number"),
            ("1,2,3,1e12", "too large"),
        ] {
            let e = parse_boxes(bad).unwrap_err().to_string();
            assert!(e.contains(says) && e.contains("whole pixels"), "{bad}: {e}");
            assert!(!e.contains("invalid digit"), "{bad}: {e}");
        }
        assert_eq!(parse_boxes("1.0,2,3,4").unwrap()[0].x, 1);
    }
}
