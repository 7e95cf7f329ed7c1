//! Box results of tracked objects: MOT-style text with every object on every frame, and
//! single-object result files in the LaSOT and GOT-10k layouts (as read by `deva eval boxes`).
//!
//! Coordinate conventions follow each benchmark's ground truth: MOT and LaSOT use 1-based
//! pixel coordinates (the top-left pixel is (1, 1)), GOT-10k 0-based ones; widths and heights
//! are pixel extents of the tight box of the object's mask.

use super::{FrameResult, Sink};
use crate::error::Result;
use crate::fsutil::write_atomic_with;
use crate::mask::{BBox, ObjectId, Segmentation};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// One object's box on one frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BoxRecord {
    /// The object.
    pub id: ObjectId,
    /// Its tight box.
    pub bbox: BBox,
    /// The segment's score, if any.
    pub score: Option<f32>,
}

/// The boxes of every object on every frame of a sequence, recorded frame by frame (only
/// boxes are kept, so long videos stay cheap).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BoxRecorder {
    frames: Vec<Vec<BoxRecord>>,
}

impl BoxRecorder {
    /// An empty recorder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a whole sequence of segmentations, in frame order.
    pub fn from_frames(frames: &[Segmentation]) -> Self {
        let mut r = Self::new();
        frames.iter().for_each(|s| r.push(s));
        r
    }

    /// Records the next frame.
    pub fn push(&mut self, seg: &Segmentation) {
        let boxes = seg
            .map
            .bboxes()
            .into_iter()
            .map(|(id, bbox)| BoxRecord {
                id,
                bbox,
                score: seg.info(id).and_then(|s| s.score),
            })
            .collect();
        self.frames.push(boxes);
    }

    /// Number of frames recorded.
    pub fn len(&self) -> usize {
        self.frames.len()
    }

    /// Whether no frame was recorded.
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// The boxes of each frame, objects by id.
    pub fn frames(&self) -> &[Vec<BoxRecord>] {
        &self.frames
    }

    /// The box of every object on every frame (`None` where the object is absent), by id.
    pub fn object_boxes(&self) -> BTreeMap<ObjectId, Vec<Option<BBox>>> {
        let mut out: BTreeMap<ObjectId, Vec<Option<BBox>>> = BTreeMap::new();
        for (t, boxes) in self.frames.iter().enumerate() {
            for b in boxes {
                out.entry(b.id)
                    .or_insert_with(|| vec![None; self.frames.len()])[t] = Some(b.bbox);
            }
        }
        out
    }

    /// Writes MOT-style text: `frame,id,x,y,w,h,score,-1,-1,-1` for each object on each
    /// frame (frames numbered from 1 in sequence order, objects by id, 1-based pixels; the
    /// score is the segment's score, or 1 when it has none).
    pub fn write_mot(&self, path: &Path) -> Result<()> {
        write_atomic_with(path, |w| {
            for (t, boxes) in self.frames.iter().enumerate() {
                for r in boxes {
                    let b = r.bbox;
                    writeln!(
                        w,
                        "{},{},{},{},{},{},{},-1,-1,-1",
                        t + 1,
                        r.id,
                        b.x + 1,
                        b.y + 1,
                        b.w,
                        b.h,
                        r.score.unwrap_or(1.0)
                    )?;
                }
            }
            Ok(())
        })
    }

    /// Writes one result file per object under `dir` and returns their paths. A sequence
    /// with one object is named `sequence`; with several, each object is named
    /// `<sequence>_<id>`.
    pub fn write_sequence(
        &self,
        dir: &Path,
        sequence: &str,
        format: BoxFormat,
    ) -> Result<Vec<PathBuf>> {
        let objects = self.object_boxes();
        let single = objects.len() == 1;
        objects
            .iter()
            .map(|(id, boxes)| {
                let name = if single {
                    sequence.to_string()
                } else {
                    format!("{sequence}_{id}")
                };
                let path = match format {
                    BoxFormat::Lasot => dir.join(format!("{name}.txt")),
                    BoxFormat::Got10k => dir.join(&name).join(format!("{name}_001.txt")),
                };
                write_box_file(&path, boxes, format)?;
                Ok(path)
            })
            .collect()
    }
}

/// A [`Sink`] that records every frame's boxes and writes them at the end under `dir`:
/// `mot.txt`, `lasot/<name>[_<id>].txt` and `got10k/<name>/<name>_001.txt`, where `name` is
/// the last part of the video name (BURST names have a `/`).
pub struct BoxSink {
    /// The boxes of the frames written so far.
    pub boxes: BoxRecorder,
    dir: PathBuf,
    name: String,
}

impl BoxSink {
    /// Boxes of video `video` into folder `dir`.
    pub fn new(dir: &Path, video: &str) -> Self {
        BoxSink {
            boxes: BoxRecorder::new(),
            dir: dir.to_path_buf(),
            name: video.rsplit('/').next().unwrap_or(video).to_string(),
        }
    }
}

impl Sink for BoxSink {
    fn write(&mut self, frame: &FrameResult) -> Result<()> {
        self.boxes.push(&frame.segmentation);
        Ok(())
    }

    fn finish(&mut self) -> Result<()> {
        self.boxes.write_mot(&self.dir.join("mot.txt"))?;
        self.boxes
            .write_sequence(&self.dir.join("lasot"), &self.name, BoxFormat::Lasot)?;
        self.boxes
            .write_sequence(&self.dir.join("got10k"), &self.name, BoxFormat::Got10k)?;
        Ok(())
    }
}

/// A single-object box result layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BoxFormat {
    /// LaSOT: `<name>.txt`, one `x,y,w,h` line per frame in 1-based pixels; frames without
    /// the object are `NaN,NaN,NaN,NaN` (the toolkit repeats the previous box).
    Lasot,
    /// GOT-10k: `<name>/<name>_001.txt`, one `x,y,w,h` line per frame in 0-based pixels;
    /// frames without the object are `0,0,0,0`.
    Got10k,
}

/// Writes one object's boxes (one per frame) to `path` in `format`.
pub fn write_box_file(path: &Path, boxes: &[Option<BBox>], format: BoxFormat) -> Result<()> {
    let offset = match format {
        BoxFormat::Lasot => 1,
        BoxFormat::Got10k => 0,
    };
    write_atomic_with(path, |w| {
        for b in boxes {
            match (b, format) {
                (Some(b), _) => writeln!(w, "{},{},{},{}", b.x + offset, b.y + offset, b.w, b.h)?,
                (None, BoxFormat::Lasot) => writeln!(w, "NaN,NaN,NaN,NaN")?,
                (None, BoxFormat::Got10k) => writeln!(w, "0,0,0,0")?,
            }
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mask::{BinaryMask, IdMap, SegmentInfo};

    fn frame(objects: &[(ObjectId, [usize; 4], Option<f32>)]) -> Segmentation {
        let mut map = IdMap::new(20, 10);
        let mut segments = Vec::new();
        for &(id, [x, y, w, h], score) in objects {
            let m = BinaryMask::from_fn(20, 10, |px, py| {
                px >= x && px < x + w && py >= y && py < y + h
            });
            map.paint(&m, id).unwrap();
            segments.push(SegmentInfo {
                score,
                ..SegmentInfo::new(id)
            });
        }
        Segmentation { map, segments }
    }

    fn sequence() -> Vec<Segmentation> {
        vec![
            frame(&[(1, [0, 0, 3, 2], Some(0.5)), (7, [10, 4, 5, 6], None)]),
            frame(&[(7, [11, 5, 2, 2], None)]),
        ]
    }

    #[test]
    fn mot_lines_are_one_based_with_scores() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("mot.txt");
        BoxRecorder::from_frames(&sequence()).write_mot(&p).unwrap();
        assert_eq!(
            std::fs::read_to_string(&p).unwrap(),
            "1,1,1,1,3,2,0.5,-1,-1,-1\n1,7,11,5,5,6,1,-1,-1,-1\n2,7,12,6,2,2,1,-1,-1,-1\n"
        );
    }

    #[test]
    fn lasot_and_got10k_files_per_object() {
        let dir = tempfile::tempdir().unwrap();
        let paths = BoxRecorder::from_frames(&sequence())
            .write_sequence(dir.path(), "seq", BoxFormat::Lasot)
            .unwrap();
        assert_eq!(
            paths,
            vec![dir.path().join("seq_1.txt"), dir.path().join("seq_7.txt")]
        );
        assert_eq!(
            std::fs::read_to_string(&paths[0]).unwrap(),
            "1,1,3,2\nNaN,NaN,NaN,NaN\n"
        );
        assert_eq!(
            std::fs::read_to_string(&paths[1]).unwrap(),
            "11,5,5,6\n12,6,2,2\n"
        );

        let one = vec![frame(&[(3, [2, 1, 4, 4], None)]), frame(&[])];
        let paths = BoxRecorder::from_frames(&one)
            .write_sequence(dir.path(), "solo", BoxFormat::Got10k)
            .unwrap();
        assert_eq!(paths, vec![dir.path().join("solo/solo_001.txt")]);
        assert_eq!(
            std::fs::read_to_string(&paths[0]).unwrap(),
            "2,1,4,4\n0,0,0,0\n"
        );
    }
}
