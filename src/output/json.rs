//! The `pred.json` documents: VIPSeg / demo panoptic style (`segments_info` per frame) and
//! BURST style (COCO compressed RLE per object). When the category names are known, each
//! document also has a top-level `"categories"` list of `{"id", "name"}` (readers that do not
//! know it ignore it).

use super::CategoryNames;
use crate::error::{Error, Result};
use crate::eval::input::read_json;
use crate::fsutil::{write_atomic, FileLock};
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

/// Key of the category list in the documents.
pub const CATEGORIES: &str = "categories";

/// `[{"id", "name"}]` of `names`, by id.
pub fn categories_list(names: &CategoryNames) -> Value {
    names
        .iter()
        .map(|(id, name)| json!({ "id": id, "name": name }))
        .collect()
}

/// Reads a `"categories"` list back; `None` when it is not a list of `{"id": integer,
/// "name": string}`.
fn read_categories(list: &Value) -> Option<CategoryNames> {
    list.as_array()?
        .iter()
        .map(|c| {
            let id = u32::try_from(c.get("id")?.as_u64()?).ok()?;
            Some((id, c.get("name")?.as_str()?.to_string()))
        })
        .collect()
}

/// The union of the `"categories"` lists of `docs` (documents without one are skipped);
/// `None` when no document has one, or when two give one id different names or a list is
/// malformed (then the merged document has no list rather than a wrong one).
pub fn merged_categories<'a>(docs: impl IntoIterator<Item = &'a Value>) -> Option<CategoryNames> {
    let mut all = CategoryNames::new();
    let mut any = false;
    for doc in docs {
        let Some(list) = doc.get(CATEGORIES) else {
            continue;
        };
        any = true;
        for (id, name) in read_categories(list)? {
            if all.get(&id).is_some_and(|n| *n != name) {
                return None;
            }
            all.insert(id, name);
        }
    }
    any.then_some(all)
}

/// `doc` with `"categories"` added when `names` is not empty.
fn with_categories(mut doc: Value, names: &CategoryNames) -> Value {
    if !names.is_empty() {
        doc[CATEGORIES] = categories_list(names);
    }
    doc
}

/// `{"annotations": frames}` (the demo layout), with the categories when known.
pub fn demo_document(frames: &[FrameRecord], names: &CategoryNames) -> Value {
    with_categories(json!({ "annotations": frames }), names)
}

/// `{"dataset", "seq_name", "segmentations": frames}`, with the categories when known;
/// `video` is `<dataset>/<sequence>` (the dataset is empty when there is no `/`).
pub fn burst_document(video: &str, frames: &[FrameRecord], names: &CategoryNames) -> Value {
    let (dataset, seq) = video.rsplit_once('/').unwrap_or(("", video));
    let doc = json!({ "dataset": dataset, "seq_name": seq, "segmentations": frames });
    with_categories(doc, names)
}

/// Folder of the per-video VIPSeg entries, beside `pred.json`.
pub const VIPSEG_ENTRIES: &str = "pred.d";

/// One video's entry of a VIPSeg `pred.json`: `{"video_id", "annotations": frames}`, with the
/// categories when known.
pub fn vipseg_entry(video: &str, frames: &[FrameRecord], names: &CategoryNames) -> Value {
    with_categories(json!({ "video_id": video, "annotations": frames }), names)
}

/// The VIPSeg document `{"annotations": entries}`, with the union of the entries'
/// categories ([`merged_categories`]) when they have any.
pub fn vipseg_document(entries: Vec<Value>) -> Value {
    let names = merged_categories(&entries).unwrap_or_default();
    with_categories(json!({ "annotations": entries }), &names)
}

/// Writes one video's VIPSeg entry to `<dir>/pred.d/<video>.json`, then rebuilds
/// `<dir>/pred.json` from every entry there (sorted by video id) while holding a lock file:
/// processes writing other videos into the same folder never lose each other's entries, and
/// `pred.json` is complete after the last of them.
pub fn write_vipseg_video(
    dir: &Path,
    video: &str,
    frames: &[FrameRecord],
    names: &CategoryNames,
) -> Result<()> {
    let entries = dir.join(VIPSEG_ENTRIES);
    write_json(
        &entries.join(format!("{video}.json")),
        &vipseg_entry(video, frames, names),
    )?;
    let lock = FileLock::acquire(&dir.join(".pred.json.lock"))?;
    let mut all = Vec::new();
    collect_entries(&entries, &mut all)?;
    all.sort_by(|a, b| a["video_id"].as_str().cmp(&b["video_id"].as_str()));
    write_json(&dir.join("pred.json"), &vipseg_document(all))?;
    lock.remove()
}

/// Reads every `*.json` entry under `dir` (video names may contain `/`).
fn collect_entries(dir: &Path, out: &mut Vec<Value>) -> Result<()> {
    for e in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let path = e.map_err(|e| Error::io(dir, e))?.path();
        let hidden = path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with('.'));
        if hidden {
            continue;
        }
        if path.is_dir() {
            collect_entries(&path, out)?;
        } else if path.extension().is_some_and(|x| x == "json") {
            out.push(read_json::<Value>(&path)?);
        }
    }
    Ok(())
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
        let b = burst_document("YFCC100M/seq1", &[], &CategoryNames::new());
        assert_eq!(
            b,
            json!({"dataset": "YFCC100M", "seq_name": "seq1", "segmentations": []})
        );
    }

    fn none() -> CategoryNames {
        CategoryNames::new()
    }

    fn names(pairs: &[(u32, &str)]) -> CategoryNames {
        pairs.iter().map(|&(i, n)| (i, n.to_string())).collect()
    }

    #[test]
    fn documents_list_known_categories_by_id() {
        let n = names(&[(2, "horse"), (1, "person")]);
        let list = json!([{"id": 1, "name": "person"}, {"id": 2, "name": "horse"}]);
        assert_eq!(demo_document(&[], &n)[CATEGORIES], list);
        assert_eq!(burst_document("d/s", &[], &n)[CATEGORIES], list);
        assert_eq!(vipseg_entry("v", &[], &n)[CATEGORIES], list);
        assert!(demo_document(&[], &none()).get(CATEGORIES).is_none());
    }

    #[test]
    fn merged_categories_are_the_union_unless_names_disagree() {
        let a = vipseg_entry("a", &[], &names(&[(1, "person")]));
        let b = vipseg_entry("b", &[], &names(&[(1, "person"), (3, "dog")]));
        let plain = vipseg_entry("c", &[], &none());
        assert_eq!(
            merged_categories([&a, &plain, &b]),
            Some(names(&[(1, "person"), (3, "dog")]))
        );
        assert_eq!(merged_categories([&plain]), None);
        let other = vipseg_entry("d", &[], &names(&[(1, "car")]));
        assert_eq!(merged_categories([&a, &other]), None);
        let broken = json!({ CATEGORIES: [{"id": "1", "name": "x"}] });
        assert_eq!(merged_categories([&a, &broken]), None);
        let doc = vipseg_document(vec![a, plain, b]);
        assert_eq!(
            doc[CATEGORIES],
            json!([{"id": 1, "name": "person"}, {"id": 3, "name": "dog"}])
        );
    }

    #[test]
    fn vipseg_videos_written_concurrently_are_all_in_pred_json() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_path_buf();
        let names: Vec<String> = (0..8).map(|i| format!("v{i}")).collect();
        std::thread::scope(|s| {
            for name in &names {
                let d = &d;
                s.spawn(move || write_vipseg_video(d, name, &[frame(name)], &none()).unwrap());
            }
        });
        // A rewritten video replaces its own entry.
        write_vipseg_video(&d, "v3", &[frame("x"), frame("y")], &none()).unwrap();
        let doc: Value = read_json(&d.join("pred.json")).unwrap();
        let videos = doc["annotations"].as_array().unwrap();
        let ids: Vec<&str> = videos
            .iter()
            .map(|v| v["video_id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, names.iter().map(String::as_str).collect::<Vec<_>>());
        assert_eq!(videos[3]["annotations"][1]["file_name"], "y.jpg");
        assert!(!d.join(".pred.json.lock").exists());
        assert!(doc.get(CATEGORIES).is_none(), "no names, no list");

        std::fs::write(d.join("pred.d/bad.json"), "[1,").unwrap();
        let e = write_vipseg_video(&d, "v1", &[], &none())
            .unwrap_err()
            .to_string();
        assert!(e.contains("bad.json"), "{e}");
    }
}
