//! Precomputed detections in DEVA's input format: per frame an id-mask PNG (palette index or
//! RGB id = R + 256·G + 65536·B) plus an optional JSON list of
//! `{"id", "category_id", "isthing", "score"}`, matched to frames by file stem.

use super::ImageSegmenter;
use crate::error::{Error, Result};
use crate::imageio::{read_index_png, IndexPng};
use crate::mask::{BinaryMask, IdMap, ObjectId, SegmentInfo, Segmentation};
use crate::video::folder::{extension, file_stem, sorted_entries};
use crate::video::Frame;
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A folder of per-frame id-mask PNGs (and, where allowed, JSON side files), indexed by stem.
#[derive(Debug, Clone)]
pub(crate) struct MaskDir {
    dir: PathBuf,
    pngs: BTreeMap<String, PathBuf>,
    jsons: BTreeMap<String, PathBuf>,
    resize: bool,
}

impl MaskDir {
    /// Indexes `dir`. Every non-hidden entry must be a `.png` (or a `.json` when
    /// `allow_json`); a JSON needs a PNG of the same stem; at least one PNG must exist.
    pub(crate) fn open(dir: &Path, allow_json: bool, resize: bool) -> Result<Self> {
        let mut pngs = BTreeMap::new();
        let mut jsons = BTreeMap::new();
        for path in sorted_entries(dir)? {
            let ext = extension(&path).filter(|_| path.is_file());
            match ext.as_deref() {
                Some("png") => pngs.insert(file_stem(&path), path),
                Some("json") if allow_json => jsons.insert(file_stem(&path), path),
                _ => {
                    let expected = if allow_json { "PNG or JSON" } else { "PNG" };
                    return Err(Error::invalid(format!(
                        "{}: not a {expected} file (pass the folder that holds one video's per-frame {expected} files)",
                        path.display()
                    )));
                }
            };
        }
        if let Some((stem, json)) = jsons.iter().find(|(s, _)| !pngs.contains_key(*s)) {
            return Err(Error::invalid(format!(
                "{}: there is no {stem}.png beside it",
                json.display()
            )));
        }
        if pngs.is_empty() {
            return Err(Error::invalid(format!(
                "{}: no PNG masks found",
                dir.display()
            )));
        }
        Ok(MaskDir {
            dir: dir.to_path_buf(),
            pngs,
            jsons,
            resize,
        })
    }

    /// The frame names (stems) that have a mask, sorted.
    pub(crate) fn names(&self) -> impl Iterator<Item = &str> {
        self.pngs.keys().map(String::as_str)
    }

    /// Fails unless at least one mask names a frame of `frames` ([`check_coverage`]).
    pub(crate) fn check_frames(&self, frames: &[String]) -> Result<()> {
        let names: Vec<String> = self.names().map(String::from).collect();
        check_coverage(&self.dir, &names, frames)
    }

    /// The palette of the first mask (by name), if it is a palette PNG.
    pub(crate) fn first_palette(&self) -> Result<Option<Vec<u8>>> {
        let first = self.pngs.values().next().expect("at least one PNG");
        Ok(read_index_png(first)?.palette)
    }

    /// The mask of `frame` and its path, or `None` if the frame has none.
    pub(crate) fn read(&self, frame: &Frame) -> Result<Option<(IndexPng, &Path)>> {
        match self.pngs.get(&frame.name) {
            None => Ok(None),
            Some(p) => Ok(Some((read_index_png(p)?, p.as_path()))),
        }
    }

    /// The JSON side file of `frame`, if any.
    fn json(&self, frame: &Frame) -> Option<&Path> {
        self.jsons.get(&frame.name).map(PathBuf::as_path)
    }

    /// Brings `seg` (read from `path`) to the frame's size: an error naming the file and
    /// both sizes, or a nearest-neighbour resize when resizing is enabled.
    pub(crate) fn fit(
        &self,
        seg: Segmentation,
        path: &Path,
        frame: &Frame,
    ) -> Result<Segmentation> {
        let (w, h) = (seg.map.width(), seg.map.height());
        let (fw, fh) = (frame.width(), frame.height());
        if (w, h) == (fw, fh) {
            Ok(seg)
        } else if self.resize {
            Ok(seg.resize_nearest(fw, fh))
        } else {
            Err(Error::invalid(format!(
                "{}: mask is {w}x{h} but frame {} is {fw}x{fh} (masks must have their frame's size; --resize-masks resizes them)",
                path.display(),
                frame.name
            )))
        }
    }

    /// The folder.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }
}

/// Checks that at least one of the mask names (`masks`, from folder `dir`) is a frame name:
/// masks are matched to frames by file stem, and a complete mismatch would silently give
/// empty results.
pub fn check_coverage(dir: &Path, masks: &[String], frames: &[String]) -> Result<()> {
    let frame_set: BTreeSet<&str> = frames.iter().map(String::as_str).collect();
    if masks.iter().any(|m| frame_set.contains(m.as_str())) {
        return Ok(());
    }
    Err(Error::invalid(format!(
        "{}: no mask matches a frame (masks are matched by file name: masks are named like {:?}, frames like {:?})",
        dir.display(),
        masks.first().map(String::as_str).unwrap_or(""),
        frames.first().map(String::as_str).unwrap_or("")
    )))
}

/// One entry of a detection JSON. Unknown fields are ignored.
#[derive(Debug, Deserialize)]
struct JsonSegment {
    id: ObjectId,
    #[serde(default)]
    category_id: Option<u32>,
    #[serde(default, deserialize_with = "flag")]
    isthing: Option<bool>,
    #[serde(default)]
    score: Option<f32>,
}

/// Reads `isthing` written as a boolean, as 0/1 or as null.
fn flag<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Option<bool>, D::Error> {
    match serde_json::Value::deserialize(d)? {
        serde_json::Value::Null => Ok(None),
        serde_json::Value::Bool(b) => Ok(Some(b)),
        serde_json::Value::Number(n) if n.as_u64() == Some(0) => Ok(Some(false)),
        serde_json::Value::Number(n) if n.as_u64() == Some(1) => Ok(Some(true)),
        other => Err(serde::de::Error::custom(format!(
            "isthing must be true, false, 0 or 1, not {other}"
        ))),
    }
}

/// Reads a detection JSON: a list of segments with unique non-zero ids.
fn read_segments(path: &Path) -> Result<Vec<SegmentInfo>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let list: Vec<JsonSegment> = serde_json::from_str(&text).map_err(|e| {
        Error::parse(
            path,
            format!("expected a list of {{\"id\", \"category_id\", \"isthing\", \"score\"}}: {e}"),
        )
    })?;
    let mut seen = BTreeSet::new();
    list.into_iter()
        .map(|s| {
            if s.id == 0 {
                return Err(Error::parse(
                    path,
                    "id 0 is the background and cannot be a segment",
                ));
            }
            if !seen.insert(s.id) {
                return Err(Error::parse(path, format!("id {} is listed twice", s.id)));
            }
            Ok(SegmentInfo {
                id: s.id,
                category_id: s.category_id,
                score: s.score,
                isthing: s.isthing,
            })
        })
        .collect()
}

/// Checks that the JSON ids and the PNG ids are the same set, naming the file at fault.
fn check_ids(map: &IdMap, png: &Path, segments: &[SegmentInfo], json: &Path) -> Result<()> {
    let present = map.areas();
    if let Some(s) = segments.iter().find(|s| !present.contains_key(&s.id)) {
        return Err(Error::invalid(format!(
            "{}: id {} is listed but does not occur in {}",
            json.display(),
            s.id,
            png.display()
        )));
    }
    let listed: BTreeSet<ObjectId> = segments.iter().map(|s| s.id).collect();
    if let Some(id) = present.keys().find(|id| !listed.contains(id)) {
        return Err(Error::invalid(format!(
            "{}: id {id} occurs in the mask but is not listed in {}",
            png.display(),
            json.display()
        )));
    }
    Ok(())
}

/// Precomputed image segmentations read from a folder (DEVA's detection input): noisy
/// proposals that the tracker denoises and merges.
#[derive(Debug, Clone)]
pub struct DetectionSegmenter {
    masks: MaskDir,
}

impl DetectionSegmenter {
    /// Indexes the detections in `dir` (`<frame>.png` + optional `<frame>.json`). With
    /// `resize`, masks of another size are resized (nearest) to their frame instead of failing.
    pub fn open(dir: &Path, resize: bool) -> Result<Self> {
        Ok(DetectionSegmenter {
            masks: MaskDir::open(dir, true, resize)?,
        })
    }

    /// The frame names that have detections, sorted.
    pub fn frame_names(&self) -> impl Iterator<Item = &str> {
        self.masks.names()
    }

    /// The folder read.
    pub fn dir(&self) -> &Path {
        self.masks.dir()
    }
}

impl ImageSegmenter for DetectionSegmenter {
    fn name(&self) -> &str {
        "detections"
    }

    fn check_frames(&self, frames: &[String]) -> Result<()> {
        self.masks.check_frames(frames)
    }

    fn segment(
        &mut self,
        frame: &Frame,
        _tracked: Option<&BinaryMask>,
    ) -> Result<Option<Segmentation>> {
        let Some((png, path)) = self.masks.read(frame)? else {
            return Ok(None);
        };
        let seg = match self.masks.json(frame) {
            None => Segmentation::from_map(png.map),
            Some(json) => {
                let segments = read_segments(json)?;
                check_ids(&png.map, path, &segments, json)?;
                Segmentation {
                    map: png.map,
                    segments,
                }
            }
        };
        self.masks.fit(seg, path, frame).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::imageio::{davis_palette, write_palette_png, write_rgb_id_png};
    use image::RgbImage;

    fn frame(name: &str, w: u32, h: u32) -> Frame {
        Frame {
            index: 0,
            name: name.into(),
            image: RgbImage::new(w, h).into(),
        }
    }

    fn map(w: usize, h: usize, ids: &[ObjectId]) -> IdMap {
        IdMap::from_vec(w, h, ids.to_vec()).unwrap()
    }

    #[test]
    fn reads_png_and_json_by_frame_name() {
        let dir = tempfile::tempdir().unwrap();
        let m = map(3, 2, &[0, 1, 1, 2, 2, 0]);
        write_palette_png(&dir.path().join("f1.png"), &m, &davis_palette()).unwrap();
        std::fs::write(
            dir.path().join("f1.json"),
            r#"[{"id": 2, "category_id": 63, "isthing": true, "score": 0.75},
                {"id": 1, "category_id": 7, "isthing": 0, "area": 2}]"#,
        )
        .unwrap();
        let big = map(3, 2, &[0, 70000, 0, 0, 0, 300]);
        write_rgb_id_png(&dir.path().join("f2.png"), &big).unwrap();

        let mut seg = DetectionSegmenter::open(dir.path(), false).unwrap();
        assert_eq!(seg.frame_names().collect::<Vec<_>>(), ["f1", "f2"]);
        let s = seg.segment(&frame("f1", 3, 2), None).unwrap().unwrap();
        assert_eq!(s.map, m);
        assert_eq!(
            s.segments,
            vec![
                SegmentInfo {
                    id: 2,
                    category_id: Some(63),
                    score: Some(0.75),
                    isthing: Some(true)
                },
                SegmentInfo {
                    id: 1,
                    category_id: Some(7),
                    score: None,
                    isthing: Some(false)
                },
            ]
        );
        // Without JSON the segments are the ids present; RGB ids decode to long ids.
        let s = seg.segment(&frame("f2", 3, 2), None).unwrap().unwrap();
        assert_eq!(s.map, big);
        assert_eq!(
            s.segments,
            vec![SegmentInfo::new(300), SegmentInfo::new(70000)]
        );
        // A frame without a PNG has nothing.
        assert!(seg.segment(&frame("f3", 3, 2), None).unwrap().is_none());
    }

    #[test]
    fn inconsistent_detections_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let png = dir.path().join("a.png");
        let json = dir.path().join("a.json");
        write_palette_png(&png, &map(2, 2, &[0, 1, 2, 2]), &davis_palette()).unwrap();
        let err =
            |seg: &mut DetectionSegmenter, f: &Frame| seg.segment(f, None).unwrap_err().to_string();

        std::fs::write(&json, r#"[{"id":1},{"id":2},{"id":3}]"#).unwrap();
        let mut seg = DetectionSegmenter::open(dir.path(), false).unwrap();
        let e = err(&mut seg, &frame("a", 2, 2));
        assert!(e.contains("a.json") && e.contains("id 3"), "{e}");

        std::fs::write(&json, r#"[{"id":1}]"#).unwrap();
        let e = err(&mut seg, &frame("a", 2, 2));
        assert!(e.contains("a.png") && e.contains("id 2"), "{e}");

        std::fs::write(&json, r#"[{"id":1},{"id":2}"#).unwrap();
        let e = err(&mut seg, &frame("a", 2, 2));
        assert!(e.contains("a.json"), "{e}");

        std::fs::write(&json, r#"[{"id":1},{"id":1},{"id":2}]"#).unwrap();
        let e = err(&mut seg, &frame("a", 2, 2));
        assert!(e.contains("a.json") && e.contains("twice"), "{e}");

        std::fs::write(&json, r#"[{"id":1},{"id":2}]"#).unwrap();
        let e = err(&mut seg, &frame("a", 3, 2));
        assert!(
            e.contains("a.png") && e.contains("2x2") && e.contains("3x2"),
            "{e}"
        );
        // With resizing, the mask is brought to the frame's size.
        let mut resizing = DetectionSegmenter::open(dir.path(), true).unwrap();
        let s = resizing.segment(&frame("a", 4, 4), None).unwrap().unwrap();
        assert_eq!((s.map.width(), s.map.height()), (4, 4));
        assert_eq!(s.map.get(3, 3), 2);

        std::fs::write(dir.path().join("b.json"), "[]").unwrap();
        let e = DetectionSegmenter::open(dir.path(), false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("b.json") && e.contains("b.png"), "{e}");
        std::fs::remove_file(dir.path().join("b.json")).unwrap();

        std::fs::create_dir(dir.path().join("video")).unwrap();
        let e = DetectionSegmenter::open(dir.path(), false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("video"), "{e}");

        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(check_coverage(dir.path(), &names(&["b", "c"]), &names(&["a", "b"])).is_ok());
        let e = check_coverage(dir.path(), &names(&["1"]), &names(&["00001"])).unwrap_err();
        assert!(e.to_string().contains("\"00001\""), "{e}");

        let empty = tempfile::tempdir().unwrap();
        let e = DetectionSegmenter::open(empty.path(), false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("no PNG"), "{e}");
    }
}
