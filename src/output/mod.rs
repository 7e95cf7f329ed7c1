//! Result writers: DAVIS palette PNGs, RGB-id PNGs with a VIPSeg or demo `pred.json`, BURST
//! `pred.json` with COCO RLE, overlay frames and an overlay mp4; and [`run`], which drives a
//! tracker from a frame source into a [`Writer`].
//!
//! Every file is written atomically; JSON documents and the mp4 are completed by
//! [`Writer::finish`] (at the end of the video or on a clean stop).

pub mod boxes;
pub mod font;
pub mod json;
pub mod overlay;
mod run;

pub use run::{run, FrameResult, RunStats, Tracking};

use crate::error::{Error, Result};
use crate::imageio::{davis_palette, write_jpeg, write_palette_png, write_rgb_id_png};
use crate::mask::{Rle, Segmentation};
use crate::video::VideoFileWriter;
use image::RgbImage;
use json::{BurstRecord, FrameRecord, SegmentRecord};
use std::path::{Path, PathBuf};

/// Output layout and mask encoding (reference §3.2).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
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
    /// Category names for labels, indexed by category id.
    pub category_names: Vec<String>,
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
            category_names: Vec::new(),
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

/// Writes the results of one video, frame by frame.
pub struct Writer {
    opts: OutputOptions,
    layout: Layout,
    palette: Vec<u8>,
    records: Vec<FrameRecord>,
    video: Option<VideoFileWriter>,
    written: usize,
}

impl Writer {
    /// Prepares writing; nothing is created until the first frame.
    pub fn new(opts: OutputOptions) -> Result<Writer> {
        check_video_name(&opts.video)?;
        if opts.overlay_video && !(opts.fps.is_finite() && opts.fps > 0.0) {
            return Err(Error::invalid(format!(
                "overlay video frame rate must be positive, not {}",
                opts.fps
            )));
        }
        let palette = opts.palette.clone().unwrap_or_else(davis_palette);
        Ok(Writer {
            layout: Layout::new(&opts),
            opts,
            palette,
            records: Vec::new(),
            video: None,
            written: 0,
        })
    }

    /// Where files go.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Whether [`write`](Writer::write) needs the frame's image (for overlays).
    pub fn needs_images(&self) -> bool {
        self.opts.overlay || self.opts.overlay_video
    }

    /// Number of frames written so far.
    pub fn frames_written(&self) -> usize {
        self.written
    }

    /// Writes one frame's masks (and overlays, from `image`, when enabled) and records its
    /// segments for the JSON document.
    pub fn write(&mut self, result: &FrameResult, image: Option<&RgbImage>) -> Result<()> {
        let seg = &result.segmentation;
        seg.validate().map_err(|e| {
            Error::invalid(format!("frame {}: inconsistent result: {e}", result.name))
        })?;
        let image = match (self.needs_images(), image) {
            (false, _) => None,
            (true, Some(image)) => Some(image),
            (true, None) => {
                return Err(Error::invalid(format!(
                    "frame {}: no image for the overlay",
                    result.name
                )))
            }
        };
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
        if let Some(image) = image {
            self.write_overlay(result, image)?;
        }
        self.written += 1;
        Ok(())
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

    fn write_overlay(&mut self, result: &FrameResult, image: &RgbImage) -> Result<()> {
        let seg: &Segmentation = &result.segmentation;
        let blended = overlay::render(image, seg, &self.palette, &self.opts.category_names)
            .map_err(|e| Error::invalid(format!("frame {}: {e}", result.name)))?;
        if self.opts.overlay {
            let path = self.layout.overlays.join(format!("{}.jpg", result.name));
            write_jpeg(&path, &blended, 90)?;
        }
        if self.opts.overlay_video {
            if self.video.is_none() {
                self.video = Some(VideoFileWriter::create(
                    &self.layout.video,
                    seg.map.width(),
                    seg.map.height(),
                    self.opts.fps,
                )?);
            }
            self.video.as_mut().expect("created").write(&blended)?;
        }
        Ok(())
    }

    /// Writes the JSON document and completes the overlay mp4. Returns the frames written.
    pub fn finish(self) -> Result<usize> {
        if let Some(path) = &self.layout.json {
            match self.opts.format {
                OutputFormat::Vipseg => {
                    json::write_vipseg_video(&self.opts.dir, &self.opts.video, &self.records)?
                }
                OutputFormat::Burst => {
                    json::write_json(path, &json::burst_document(&self.opts.video, &self.records))?
                }
                _ => json::write_json(path, &json::demo_document(&self.records))?,
            }
        }
        if let Some(v) = self.video {
            v.finish()?;
        }
        Ok(self.written)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::imageio::read_index_png;
    use crate::mask::{IdMap, SegmentInfo};
    use serde_json::Value;

    fn result(index: usize, ids: &[u32], infos: Vec<SegmentInfo>) -> FrameResult {
        FrameResult {
            index,
            name: format!("f{index}"),
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
    fn demo_writer_records_areas_boxes_and_overlays() {
        let dir = tempfile::tempdir().unwrap();
        let mut opts = OutputOptions::new(dir.path(), OutputFormat::Demo, "v");
        opts.overlay = true;
        let mut w = Writer::new(opts).unwrap();
        let r0 = result(
            0,
            &[0, 5, 5, 0, 5, 300],
            vec![info(300, 63, 0.5), info(5, 7, 0.25)],
        );
        let image = RgbImage::new(3, 2);
        assert!(w.write(&r0, None).is_err());
        w.write(&r0, Some(&image)).unwrap();
        let r1 = result(1, &[0; 6], vec![]);
        w.write(&r1, Some(&image)).unwrap();
        let json_path = dir.path().join("pred.json");
        assert!(!json_path.exists(), "JSON is written at the end");
        assert_eq!(w.finish().unwrap(), 2);

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
        w.write(
            &result(0, &ids, vec![info(5, 1, 0.5), info(2, 1, 0.5)]),
            None,
        )
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
        let e = w.write(
            &result(0, &[0, 0, 0, 0, 0, 256], vec![SegmentInfo::new(256)]),
            None,
        );
        assert!(e.unwrap_err().to_string().contains("256"));
        let bad = result(0, &[0, 0, 0, 0, 0, 4], vec![]);
        assert!(w.write(&bad, None).unwrap_err().to_string().contains("f0"));
    }
}
