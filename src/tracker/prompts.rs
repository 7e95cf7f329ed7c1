//! Objects given from memory on chosen frames ([`Prompt`]), painted over the segmenter's own
//! masks of that frame.

use crate::error::{Error, Result};
use crate::mask::{BBox, ObjectId, Segmentation};
use crate::segmenter::sam::{ObjectPrompt, PointPrompt, SamModel, SamPromptSegmenter};
use crate::segmenter::ImageSegmenter;
use crate::video::Frame;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Objects given on one frame.
#[derive(Debug, Clone, PartialEq)]
pub enum Prompt {
    /// Object masks at the frame's size, with their ids and information.
    Masks(Segmentation),
    /// One box per object (`x, y, w, h` in frame pixels); SAM makes the masks.
    Boxes(Vec<(ObjectId, BBox)>),
    /// Click points per object (in frame pixels); SAM makes the masks.
    Points(Vec<(ObjectId, Vec<PointPrompt>)>),
}

impl Prompt {
    /// The ids the prompt gives (checked: non-zero, each once).
    fn ids(&self) -> Vec<ObjectId> {
        match self {
            Prompt::Masks(s) => s.segments.iter().map(|s| s.id).collect(),
            Prompt::Boxes(b) => b.iter().map(|(id, _)| *id).collect(),
            Prompt::Points(p) => p.iter().map(|(id, _)| *id).collect(),
        }
    }

    /// The SAM prompts of boxes and points (`None` for masks).
    fn sam_objects(&self) -> Option<Vec<ObjectPrompt>> {
        match self {
            Prompt::Masks(_) => None,
            Prompt::Boxes(b) => Some(
                b.iter()
                    .map(|&(id, bbox)| ObjectPrompt {
                        id,
                        bbox: Some(bbox),
                        points: Vec::new(),
                    })
                    .collect(),
            ),
            Prompt::Points(p) => Some(
                p.iter()
                    .map(|(id, points)| ObjectPrompt {
                        id: *id,
                        bbox: None,
                        points: points.clone(),
                    })
                    .collect(),
            ),
        }
    }
}

/// Prompts waiting for their frames.
#[derive(Default)]
pub(crate) struct Prompts {
    by_frame: BTreeMap<usize, Vec<Prompt>>,
    sam: Option<Arc<SamModel>>,
}

impl Prompts {
    /// The SAM for box and point prompts.
    pub(crate) fn set_sam(&mut self, model: Arc<SamModel>) {
        self.sam = Some(model);
    }

    /// Queues `prompt` for frame `frame`.
    pub(crate) fn add(&mut self, frame: usize, prompt: Prompt) -> Result<()> {
        let ids = prompt.ids();
        if ids.is_empty() {
            return Err(Error::invalid(format!(
                "the prompt for frame {frame} gives no object"
            )));
        }
        let mut seen = std::collections::BTreeSet::new();
        if let Some(id) = ids.iter().find(|&&id| id == 0 || !seen.insert(id)) {
            return Err(Error::invalid(format!(
                "the prompt for frame {frame}: object id {id} is zero or given twice"
            )));
        }
        if let Prompt::Masks(seg) = &prompt {
            seg.validate()
                .map_err(|e| Error::invalid(format!("the mask prompt for frame {frame}: {e}")))?;
        } else if self.sam.is_none() {
            return Err(Error::Config(format!(
                "the box or point prompt for frame {frame} needs a SAM to make masks (Tracker::set_sam)"
            )));
        }
        self.by_frame.entry(frame).or_default().push(prompt);
        Ok(())
    }

    /// `seg` (the segmenter's result for `frame`) with the frame's prompts painted on top, in
    /// the order they were given; `seg` unchanged when the frame has none.
    pub(crate) fn apply(
        &mut self,
        frame: &Frame,
        seg: Option<Segmentation>,
    ) -> Result<Option<Segmentation>> {
        let Some(prompts) = self.by_frame.remove(&frame.index) else {
            return Ok(seg);
        };
        let mut out = seg.unwrap_or_else(|| Segmentation::empty(frame.width(), frame.height()));
        for prompt in prompts {
            let top = match (prompt.sam_objects(), prompt) {
                (None, Prompt::Masks(m)) => m,
                (Some(objects), _) => {
                    let sam = self.sam.clone().expect("checked when the prompt was added");
                    let mut s =
                        SamPromptSegmenter::new(sam, BTreeMap::from([(frame.index, objects)]))?;
                    s.segment(frame, None)?
                        .expect("the prompt segmenter has this frame")
                }
                (None, _) => unreachable!("only mask prompts have no SAM objects"),
            };
            if (top.map.width(), top.map.height()) != (frame.width(), frame.height()) {
                return Err(Error::invalid(format!(
                    "the mask prompt for frame {} ({}) is {}x{} but the frame is {}x{}",
                    frame.index,
                    frame.name,
                    top.map.width(),
                    top.map.height(),
                    frame.width(),
                    frame.height()
                )));
            }
            out = paint_over(out, &top);
        }
        Ok(Some(out))
    }
}

/// `base` with the objects of `top` painted over it: `top`'s ids replace `base`'s (also
/// where `top` does not cover them), and only objects left with pixels keep their entries.
fn paint_over(base: Segmentation, top: &Segmentation) -> Segmentation {
    let replaced: std::collections::HashSet<ObjectId> = top.segments.iter().map(|s| s.id).collect();
    let mut map = base.map;
    for (b, &t) in map.data_mut().iter_mut().zip(top.map.data()) {
        if t != 0 {
            *b = t;
        } else if replaced.contains(b) {
            *b = 0;
        }
    }
    let kept = base.segments.iter().filter(|s| !replaced.contains(&s.id));
    Segmentation::of_present(map, top.segments.iter().chain(kept))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mask::{IdMap, SegmentInfo};
    use image::RgbImage;

    fn seg(ids: &[ObjectId], infos: &[ObjectId]) -> Segmentation {
        Segmentation {
            map: IdMap::from_vec(3, 2, ids.to_vec()).unwrap(),
            segments: infos.iter().map(|&id| SegmentInfo::new(id)).collect(),
        }
    }

    #[test]
    fn prompts_replace_their_ids_and_cover_other_objects() {
        let base = seg(&[1, 1, 2, 2, 0, 0], &[1, 2]);
        // Object 2 moves to the bottom row; new object 3 covers one pixel of object 1.
        let top = seg(&[0, 3, 0, 0, 2, 2], &[2, 3]);
        let out = paint_over(base, &top);
        assert_eq!(out.map.data(), &[1, 3, 0, 0, 2, 2]);
        let ids: Vec<_> = out.segments.iter().map(|s| s.id).collect();
        assert_eq!(ids, vec![2, 3, 1]);
    }

    #[test]
    fn prompts_wait_for_their_frame_and_are_checked() {
        let frame = Frame::new(4, "00004", RgbImage::new(3, 2));
        let mut p = Prompts::default();
        assert!(p.add(4, Prompt::Masks(seg(&[0; 6], &[]))).is_err());
        let e = p
            .add(
                4,
                Prompt::Boxes(vec![(
                    1,
                    BBox {
                        x: 0,
                        y: 0,
                        w: 2,
                        h: 2,
                    },
                )]),
            )
            .unwrap_err()
            .to_string();
        assert!(e.contains("needs a SAM"), "{e}");
        let e = p
            .add(4, Prompt::Masks(seg(&[0, 0, 0, 0, 0, 0], &[0])))
            .unwrap_err()
            .to_string();
        assert!(e.contains("id 0"), "{e}");
        p.add(4, Prompt::Masks(seg(&[0, 0, 0, 0, 0, 5], &[5])))
            .unwrap();
        let other = Frame::new(3, "00003", RgbImage::new(3, 2));
        assert_eq!(p.apply(&other, None).unwrap(), None);
        let out = p.apply(&frame, None).unwrap().unwrap();
        assert_eq!(out.map.data(), &[0, 0, 0, 0, 0, 5]);
        // Used once.
        assert_eq!(p.apply(&frame, None).unwrap(), None);
        p.add(
            4,
            Prompt::Masks(Segmentation::from_map(
                IdMap::from_vec(2, 1, vec![7, 0]).unwrap(),
            )),
        )
        .unwrap();
        let e = p.apply(&frame, None).unwrap_err().to_string();
        assert!(e.contains("2x1") && e.contains("3x2"), "{e}");
    }
}
