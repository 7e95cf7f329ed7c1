//! Result sinks: [`Writer`] (DAVIS palette PNGs, RGB-id PNGs with a VIPSeg or demo
//! `pred.json`, BURST `pred.json` with COCO RLE), [`overlay::OverlaySink`] (overlay frames and
//! an overlay mp4), [`boxes::BoxSink`] (MOT / LaSOT / GOT-10k boxes) and [`Foreground`]; and
//! [`run`], which drives a tracker from a frame source into a [`Sink`].
//!
//! Every file is written atomically; JSON documents and the mp4 are completed by
//! [`Sink::finish`] (at the end of the video or on a clean stop).

pub mod boxes;
pub mod font;
pub mod json;
pub mod overlay;
mod run;

pub use run::{run, FrameResult, RunStats, Sink, Sinks, Tracking};

use crate::error::{Error, Result};
use crate::imageio::{davis_palette, write_palette_png, write_rgb_id_png};
use crate::mask::{Rle, SegmentInfo, Segmentation};
use json::{BurstRecord, FrameRecord, SegmentRecord};
use std::path::{Path, PathBuf};

pub use crate::mask::CategoryNames;

/// Output layout and mask encoding (reference §3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputFormat {
    /// `<out>/<video>/<frame>.png`: 8-bit palette PNGs (ids up to 255), no JSON.
    Davis,
    /// `<out>/pan_pred/<video>/<frame>.png` RGB-id PNGs and `<out>/pred.json` (all videos,
    /// rebuilt from the per-video entries `<out>/pred.d/<video>.json`).
    Vipseg,
    /// `<out>/<video>/<frame>.png` RGB-id PNGs and `<out>/<video>/pred.json` with COCO RLEs;
    /// `<video>` is `<dataset>/<sequence>`.
    Burst,
    /// `<out>/Annotations/<frame>.png` RGB-id PNGs and `<out>/pred.json` (one video).
    #[default]
    Demo,
}

/// What to write and where.
#[derive(Debug, Clone)]
pub struct OutputOptions {
    /// Output folder.
    pub dir: PathBuf,
    /// Layout and encoding.
    pub format: OutputFormat,
    /// Video name used in paths and JSON (BURST: `<dataset>/<sequence>`).
    pub video: String,
    /// Palette of palette PNGs and of overlay colours for ids below 256 (DAVIS palette if
    /// `None`).
    pub palette: Option<Vec<u8>>,
    /// Write overlay JPEGs.
    pub overlay: bool,
    /// Write an overlay mp4 (needs ffmpeg).
    pub overlay_video: bool,
    /// Frame rate of the overlay mp4.
    pub fps: f64,
    /// Category names by category id: overlay labels, and the `"categories"` list of the
    /// JSON documents (left out when empty).
    pub category_names: CategoryNames,
    /// Draw boxes around stuff segments too (`isthing` false) in overlays; off by default, as
    /// frame-sized stuff boxes clutter them.
    pub stuff_boxes: bool,
}

impl OutputOptions {
    /// Options for `format` into `dir` with video name `video`, no overlays, 24 fps.
    pub fn new(dir: &Path, format: OutputFormat, video: &str) -> Self {
        OutputOptions {
            dir: dir.to_path_buf(),
            format,
            video: video.to_string(),
            palette: None,
            overlay: false,
            overlay_video: false,
            fps: 24.0,
            category_names: CategoryNames::new(),
            stuff_boxes: false,
        }
    }
}

/// Where each kind of file goes.
#[derive(Debug, Clone, PartialEq)]
pub struct Layout {
    /// Folder of the per-frame mask PNGs.
    pub masks: PathBuf,
    /// The JSON document, if the format has one.
    pub json: Option<PathBuf>,
    /// Folder of the overlay JPEGs.
    pub overlays: PathBuf,
    /// The overlay mp4.
    pub video: PathBuf,
}

impl Layout {
    /// The layout of `opts`.
    pub fn new(opts: &OutputOptions) -> Layout {
        let d = &opts.dir;
        let v = &opts.video;
        let (masks, json, overlays) = match opts.format {
            OutputFormat::Davis => (d.join(v), None, d.join("Visualizations").join(v)),
            OutputFormat::Vipseg => (
                d.join("pan_pred").join(v),
                Some(d.join("pred.json")),
                d.join("Visualizations").join(v),
            ),
            OutputFormat::Burst => (
                d.join(v),
                Some(d.join(v).join("pred.json")),
                d.join("Visualizations").join(v),
            ),
            OutputFormat::Demo => (
                d.join("Annotations"),
                Some(d.join("pred.json")),
                d.join("Visualizations"),
            ),
        };
        let mut video = overlays.clone().into_os_string();
        video.push(".mp4");
        Layout {
            masks,
            json,
            overlays,
            video: video.into(),
        }
    }
}

/// Checks that a video name is a relative path without `..` (BURST names have one `/`).
fn check_video_name(name: &str) -> Result<()> {
    let p = Path::new(name);
    let ok = !name.is_empty()
        && p.components()
            .all(|c| matches!(c, std::path::Component::Normal(_)));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "video name {name:?} must be a plain relative name (like \"blackswan\" or \"YFCC100M/seq\")"
        )))
    }
}

/// Checks, without creating anything, that `dir` can become the output folder: it is a
/// folder or does not exist yet, and the nearest existing folder above it can be written.
pub fn check_destination(dir: &Path) -> Result<()> {
    let mut existing = dir;
    while !existing.exists() {
        existing = match existing.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
    }
    if !existing.is_dir() {
        return Err(Error::invalid(format!(
            "{}: is a file, so the output folder {} cannot be made",
            existing.display(),
            dir.display()
        )));
    }
    let probe = existing.join(format!(".deva-write-test-{}", std::process::id()));
    std::fs::write(&probe, b"").map_err(|e| {
        Error::invalid(format!(
            "{}: cannot write there, so the output folder {} cannot be made: {e}",
            existing.display(),
            dir.display()
        ))
    })?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

/// Writes the masks of one video frame by frame, and its JSON document at the end.
pub struct Writer {
    opts: OutputOptions,
    layout: Layout,
    palette: Vec<u8>,
    records: Vec<FrameRecord>,
    written: usize,
}

/// The sinks that `opts` asks for: the [`Writer`], and the [`overlay::OverlaySink`] when
/// overlays are on.
pub fn writers(opts: &OutputOptions) -> Result<Sinks> {
    let mut sinks: Vec<Box<dyn Sink>> = vec![Box::new(Writer::new(opts.clone())?)];
    if opts.overlay || opts.overlay_video {
        sinks.push(Box::new(overlay::OverlaySink::new(opts)?));
    }
    Ok(Sinks(sinks))
}

impl Writer {
    /// Prepares writing; nothing is created until the first frame.
    pub fn new(opts: OutputOptions) -> Result<Writer> {
        check_video_name(&opts.video)?;
        check_destination(&opts.dir)?;
        let palette = opts.palette.clone().unwrap_or_else(davis_palette);
        Ok(Writer {
            layout: Layout::new(&opts),
            opts,
            palette,
            records: Vec::new(),
            written: 0,
        })
    }

    /// Where files go.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Number of frames written so far.
    pub fn frames_written(&self) -> usize {
        self.written
    }

    fn record(&self, result: &FrameResult) -> Option<FrameRecord> {
        let seg = &result.segmentation;
        let areas = seg.map.areas();
        let boxes = seg.map.bboxes();
        let present = seg
            .segments
            .iter()
            .filter_map(|s| Some((s, *areas.get(&s.id)?, *boxes.get(&s.id)?)));
        let file_name = format!("{}.jpg", result.name);
        match self.opts.format {
            OutputFormat::Davis => None,
            OutputFormat::Vipseg | OutputFormat::Demo => Some(FrameRecord::Panoptic {
                file_name,
                segments_info: present
                    .map(|(s, area, bbox)| SegmentRecord::new(s, area, bbox))
                    .collect(),
            }),
            OutputFormat::Burst => Some(FrameRecord::Burst {
                file_name,
                segmentations: present
                    .map(|(s, _, bbox)| BurstRecord {
                        id: s.id,
                        score: s.score,
                        category_id: s.category_id,
                        bbox: bbox.xywh(),
                        rle: (&Rle::encode(&seg.map.mask(s.id))).into(),
                    })
                    .collect(),
            }),
        }
    }
}

impl Sink for Writer {
    /// Writes one frame's masks and records its segments for the JSON document.
    fn write(&mut self, result: &FrameResult) -> Result<()> {
        let seg = &result.segmentation;
        seg.validate().map_err(|e| {
            Error::invalid(format!("frame {}: inconsistent result: {e}", result.name))
        })?;
        let png = self.layout.masks.join(format!("{}.png", result.name));
        match self.opts.format {
            OutputFormat::Davis => {
                if let Some(&id) = seg.map.ids().iter().find(|&&id| id > 255) {
                    return Err(Error::invalid(format!(
                        "frame {}: object id {id} does not fit a DAVIS palette PNG (ids up to 255); use --format demo, vipseg or burst",
                        result.name
                    )));
                }
                write_palette_png(&png, &seg.map, &self.palette)?
            }
            _ => write_rgb_id_png(&png, &seg.map)?,
        }
        if let Some(record) = self.record(result) {
            self.records.push(record);
        }
        self.written += 1;
        Ok(())
    }

    /// Writes the JSON document.
    fn finish(&mut self) -> Result<()> {
        let (names, records) = (&self.opts.category_names, &self.records);
        if let Some(path) = &self.layout.json {
            match self.opts.format {
                OutputFormat::Vipseg => {
                    json::write_vipseg_video(&self.opts.dir, &self.opts.video, records, names)?
                }
                OutputFormat::Burst => json::write_json(
                    path,
                    &json::burst_document(&self.opts.video, records, names),
                )?,
                _ => json::write_json(path, &json::demo_document(records, names))?,
            }
        }
        Ok(())
    }
}

/// All objects of a segmentation as one object, id 1 (binary foreground, the DAVIS-2016
/// convention). Its information is that of the largest object.
pub fn foreground(seg: &Segmentation) -> Segmentation {
    let map = seg.map.remap(|id| u32::from(id != 0));
    let areas = seg.map.areas();
    let largest = seg
        .segments
        .iter()
        .filter_map(|s| Some((*areas.get(&s.id)?, s)))
        .max_by_key(|(area, s)| (*area, std::cmp::Reverse(s.id)));
    let segments = match largest {
        Some((_, s)) => vec![SegmentInfo { id: 1, ..s.clone() }],
        None if map.data().contains(&1) => vec![SegmentInfo::new(1)],
        None => Vec::new(),
    };
    Segmentation { map, segments }
}

/// A sink that hands every frame on with all its objects merged into one ([`foreground`]).
pub struct Foreground<S>(pub S);

impl<S: Sink> Sink for Foreground<S> {
    fn write(&mut self, frame: &FrameResult) -> Result<()> {
        self.0.write(&FrameResult {
            segmentation: foreground(&frame.segmentation),
            ..frame.clone()
        })
    }

    fn finish(&mut self) -> Result<()> {
        self.0.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::imageio::read_index_png;
    use crate::mask::{IdMap, SegmentInfo};
    use image::RgbImage;
    use serde_json::Value;

    fn result(index: usize, ids: &[u32], infos: Vec<SegmentInfo>) -> FrameResult {
        FrameResult {
            index,
            name: format!("f{index}"),
            image: RgbImage::new(3, 2).into(),
            segmentation: Segmentation {
                map: IdMap::from_vec(3, 2, ids.to_vec()).unwrap(),
                segments: infos,
            },
        }
    }

    fn info(id: u32, cat: u32, score: f32) -> SegmentInfo {
        SegmentInfo {
            id,
            category_id: Some(cat),
            score: Some(score),
            isthing: Some(cat == 63),
        }
    }

    fn read_json(p: &Path) -> Value {
        serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
    }

    #[test]
    fn layouts_follow_the_reference() {
        let d = Path::new("/o");
        let l = Layout::new(&OutputOptions::new(d, OutputFormat::Vipseg, "v"));
        assert_eq!(l.masks, d.join("pan_pred/v"));
        assert_eq!(l.json.as_deref(), Some(d.join("pred.json").as_path()));
        let l = Layout::new(&OutputOptions::new(d, OutputFormat::Burst, "ds/s"));
        assert_eq!(
            (l.masks.clone(), l.json.unwrap()),
            (d.join("ds/s"), d.join("ds/s/pred.json"))
        );
        let l = Layout::new(&OutputOptions::new(d, OutputFormat::Demo, "v"));
        assert_eq!(
            (l.masks, l.overlays, l.video),
            (
                d.join("Annotations"),
                d.join("Visualizations"),
                d.join("Visualizations.mp4")
            )
        );
        let l = Layout::new(&OutputOptions::new(d, OutputFormat::Davis, "v"));
        assert_eq!((l.masks, l.json), (d.join("v"), None));
        assert!(Writer::new(OutputOptions::new(d, OutputFormat::Davis, "../x")).is_err());
        assert!(Writer::new(OutputOptions::new(d, OutputFormat::Davis, "")).is_err());
    }

    #[test]
    fn an_output_folder_under_a_file_is_refused_up_front() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("out");
        std::fs::write(&file, b"x").unwrap();
        for target in [file.clone(), file.join("sub")] {
            let e = Writer::new(OutputOptions::new(&target, OutputFormat::Demo, "v"))
                .err()
                .unwrap()
                .to_string();
            assert!(e.contains("out: is a file"), "{e}");
        }
        let fresh = dir.path().join("new/out");
        Writer::new(OutputOptions::new(&fresh, OutputFormat::Demo, "v")).unwrap();
        assert!(
            !dir.path().join("new").exists(),
            "nothing is created before a frame"
        );
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn demo_writer_records_areas_boxes_and_overlays() {
        let dir = tempfile::tempdir().unwrap();
        let mut opts = OutputOptions::new(dir.path(), OutputFormat::Demo, "v");
        opts.overlay = true;
        let mut w = writers(&opts).unwrap();
        let r0 = result(
            0,
            &[0, 5, 5, 0, 5, 300],
            vec![info(300, 63, 0.5), info(5, 7, 0.25)],
        );
        w.write(&r0).unwrap();
        let r1 = result(1, &[0; 6], vec![]);
        w.write(&r1).unwrap();
        let json_path = dir.path().join("pred.json");
        assert!(!json_path.exists(), "JSON is written at the end");
        w.finish().unwrap();

        let png = read_index_png(&dir.path().join("Annotations/f0.png")).unwrap();
        assert!(png.rgb_ids);
        assert_eq!(png.map.data(), &[0, 5, 5, 0, 5, 300]);
        assert!(dir.path().join("Visualizations/f1.jpg").is_file());
        let doc = read_json(&json_path);
        let frames = doc["annotations"].as_array().unwrap();
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[0]["file_name"], "f0.jpg");
        let segs = &frames[0]["segments_info"];
        assert_eq!(segs[0]["id"], 300);
        assert_eq!(segs[0]["area"], 1);
        assert_eq!(segs[0]["bbox"], serde_json::json!([2, 1, 1, 1]));
        assert_eq!(segs[0]["isthing"], 1);
        assert_eq!(segs[1]["area"], 3);
        assert_eq!(segs[1]["bbox"], serde_json::json!([1, 0, 2, 2]));
        assert_eq!(segs[1]["score"], 0.25);
        assert_eq!(frames[1]["segments_info"], serde_json::json!([]));
    }

    #[test]
    fn burst_rles_decode_to_the_masks_and_davis_rejects_long_ids() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = Writer::new(OutputOptions::new(
            dir.path(),
            OutputFormat::Burst,
            "ds/seq",
        ))
        .unwrap();
        let ids = [0, 5, 5, 0, 5, 2];
        w.write(&result(0, &ids, vec![info(5, 1, 0.5), info(2, 1, 0.5)]))
            .unwrap();
        w.finish().unwrap();
        let doc = read_json(&dir.path().join("ds/seq/pred.json"));
        assert_eq!(
            (doc["dataset"].as_str(), doc["seq_name"].as_str()),
            (Some("ds"), Some("seq"))
        );
        for s in doc["segmentations"][0]["segmentations"].as_array().unwrap() {
            let id = s["id"].as_u64().unwrap() as u32;
            let size = &s["rle"]["size"];
            assert_eq!(size, &serde_json::json!([2, 3]));
            let rle = Rle::from_compressed(2, 3, s["rle"]["counts"].as_str().unwrap()).unwrap();
            let mask = rle.decode().unwrap();
            let expected: Vec<bool> = ids.iter().map(|&v| v == id).collect();
            assert_eq!(mask.data(), expected.as_slice());
        }

        let mut w = Writer::new(OutputOptions::new(dir.path(), OutputFormat::Davis, "v")).unwrap();
        let e = w.write(&result(
            0,
            &[0, 0, 0, 0, 0, 256],
            vec![SegmentInfo::new(256)],
        ));
        assert!(e.unwrap_err().to_string().contains("256"));
        let bad = result(0, &[0, 0, 0, 0, 0, 4], vec![]);
        assert!(w.write(&bad).unwrap_err().to_string().contains("f0"));
    }

    #[test]
    fn foreground_merges_every_object_into_object_one() {
        use crate::mask::IdMap;
        let map = IdMap::from_vec(3, 2, vec![0, 7, 7, 9, 0, 7]).unwrap();
        let info = |id, score| SegmentInfo {
            id,
            category_id: Some(id),
            score: Some(score),
            isthing: None,
        };
        let seg = Segmentation {
            map,
            segments: vec![info(9, 0.2), info(7, 0.9)],
        };
        let fg = foreground(&seg);
        assert_eq!(fg.map.data(), [0, 1, 1, 1, 0, 1]);
        // The largest object (7, three pixels) gives its information.
        assert_eq!(
            fg.segments,
            vec![info(7, 0.9)]
                .into_iter()
                .map(|s| SegmentInfo { id: 1, ..s })
                .collect::<Vec<_>>()
        );
        fg.validate().unwrap();
        let empty = Segmentation::from_map(IdMap::new(2, 2));
        assert_eq!(foreground(&empty), empty);
    }
}
