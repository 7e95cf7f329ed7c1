//! The `pred.json` documents: VIPSeg / demo panoptic style (`segments_info` per frame) and
//! BURST style (COCO compressed RLE per object).

use crate::error::{Error, Result};
use crate::fsutil::write_atomic;
use crate::mask::{BBox, ObjectId, Rle, SegmentInfo};
use serde::Serialize;
use serde_json::{json, Value};
use std::path::Path;

/// One segment of a panoptic-style frame record.
#[derive(Debug, Clone, Serialize)]
pub struct SegmentRecord {
    /// Object id (as in the PNG).
    pub id: ObjectId,
    /// Voted category, if any.
    pub category_id: Option<u32>,
    /// 1 for things, 0 for stuff, null when unknown (VIPSeg's convention).
    pub isthing: Option<u8>,
    /// Mean score, if any.
    pub score: Option<f32>,
    /// Pixel count in the written mask.
    pub area: usize,
    /// Tight box `[x, y, w, h]` in pixels.
    pub bbox: [u32; 4],
}

impl SegmentRecord {
    /// The record of `info` with its area and box in the frame.
    pub fn new(info: &SegmentInfo, area: usize, bbox: BBox) -> Self {
        SegmentRecord {
            id: info.id,
            category_id: info.category_id,
            isthing: info.isthing.map(u8::from),
            score: info.score,
            area,
            bbox: bbox.xywh(),
        }
    }
}

/// A COCO compressed RLE as written in BURST results.
#[derive(Debug, Clone, Serialize)]
pub struct RleRecord {
    /// `[height, width]`.
    pub size: [usize; 2],
    /// The compressed counts string (pycocotools format).
    pub counts: String,
}

impl From<&Rle> for RleRecord {
    fn from(rle: &Rle) -> Self {
        RleRecord {
            size: [rle.height, rle.width],
            counts: rle.to_compressed(),
        }
    }
}

/// One object of a BURST frame record.
#[derive(Debug, Clone, Serialize)]
pub struct BurstRecord {
    /// Object id.
    pub id: ObjectId,
    /// Mean score, if any.
    pub score: Option<f32>,
    /// Voted category, if any.
    pub category_id: Option<u32>,
    /// Tight box `[x, y, w, h]`.
    pub bbox: [u32; 4],
    /// The object's mask.
    pub rle: RleRecord,
}

/// What is recorded for one written frame.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum FrameRecord {
    /// VIPSeg / demo style.
    Panoptic {
        /// `<frame>.jpg`, as DEVA writes it.
        file_name: String,
        /// Segments with area > 0.
        segments_info: Vec<SegmentRecord>,
    },
    /// BURST style.
    Burst {
        /// `<frame>.jpg`.
        file_name: String,
        /// Objects with area > 0.
        segmentations: Vec<BurstRecord>,
    },
}

/// `{"annotations": frames}` (the demo layout).
pub fn demo_document(frames: &[FrameRecord]) -> Value {
    json!({ "annotations": frames })
}

/// `{"dataset", "seq_name", "segmentations": frames}`; `video` is `<dataset>/<sequence>` (the
/// dataset is empty when there is no `/`).
pub fn burst_document(video: &str, frames: &[FrameRecord]) -> Value {
    let (dataset, seq) = video.rsplit_once('/').unwrap_or(("", video));
    json!({ "dataset": dataset, "seq_name": seq, "segmentations": frames })
}

/// The VIPSeg document `{"annotations": [{"video_id", "annotations": frames}, ...]}`: `existing`
/// (an earlier `pred.json` of the same output folder, if any) keeps its other videos, and this
/// video's entry is replaced or appended.
pub fn vipseg_document(
    existing: Option<&Path>,
    video: &str,
    frames: &[FrameRecord],
) -> Result<Value> {
    let entry = json!({ "video_id": video, "annotations": frames });
    let mut videos = match existing.filter(|p| p.exists()) {
        None => Vec::new(),
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
            let doc: Value = serde_json::from_str(&text).map_err(|e| Error::parse(path, e))?;
            match doc.get("annotations").and_then(Value::as_array) {
                Some(list) => list.clone(),
                None => {
                    return Err(Error::parse(
                        path,
                        "expected {\"annotations\": [...]} (a VIPSeg pred.json); move it away or choose another --out",
                    ))
                }
            }
        }
    };
    match videos.iter_mut().find(|v| v["video_id"] == video) {
        Some(v) => *v = entry,
        None => videos.push(entry),
    }
    Ok(json!({ "annotations": videos }))
}

/// Writes `doc` to `path` atomically (pretty-printed).
pub fn write_json(path: &Path, doc: &Value) -> Result<()> {
    let text = serde_json::to_vec_pretty(doc).map_err(|e| Error::parse(path, e))?;
    write_atomic(path, &text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(name: &str) -> FrameRecord {
        let mut info = SegmentInfo::new(3);
        info.isthing = Some(true);
        info.score = Some(0.5);
        let bbox = BBox {
            x: 1,
            y: 2,
            w: 3,
            h: 4,
        };
        FrameRecord::Panoptic {
            file_name: format!("{name}.jpg"),
            segments_info: vec![SegmentRecord::new(&info, 7, bbox)],
        }
    }

    #[test]
    fn panoptic_records_serialise_like_vipseg() {
        let v = serde_json::to_value(frame("a")).unwrap();
        assert_eq!(
            v,
            json!({"file_name": "a.jpg", "segments_info": [
                {"id": 3, "category_id": null, "isthing": 1, "score": 0.5, "area": 7, "bbox": [1, 2, 3, 4]}
            ]})
        );
        let b = burst_document("YFCC100M/seq1", &[]);
        assert_eq!(
            b,
            json!({"dataset": "YFCC100M", "seq_name": "seq1", "segmentations": []})
        );
    }

    #[test]
    fn vipseg_document_replaces_its_own_video_and_keeps_others() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pred.json");
        let d1 = vipseg_document(Some(&p), "v1", &[frame("a")]).unwrap();
        write_json(&p, &d1).unwrap();
        let d2 = vipseg_document(Some(&p), "v2", &[frame("b")]).unwrap();
        write_json(&p, &d2).unwrap();
        let d3 = vipseg_document(Some(&p), "v1", &[frame("c"), frame("d")]).unwrap();
        let ids: Vec<&str> = d3["annotations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["video_id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["v1", "v2"]);
        assert_eq!(d3["annotations"][0]["annotations"][1]["file_name"], "d.jpg");

        std::fs::write(&p, "[1, 2]").unwrap();
        let e = vipseg_document(Some(&p), "v1", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("pred.json"), "{e}");
    }
}
