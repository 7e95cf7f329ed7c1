//! Merging a run's per-video results into the files a benchmark takes:
//!
//! | format (layout) | submission |
//! |---|---|
//! | davis | `<video>/<frame>.png` palette PNGs |
//! | davis (youtube-vos layout) | `Annotations/<video>/<frame>.png` and the same in `submission.zip` |
//! | vipseg | `pan_pred/<video>/<frame>.png` and `pred.json` |
//! | burst | `results.json` in the BURST annotation format (COCO RLE per track) |
//!
//! VIPSeg `pred.json` and BURST `results.json` get a top-level `"categories"` list, the union
//! of the videos' lists, when the videos have them and agree on the names.
//! | demo | `<video>/Annotations/` and `<video>/pred.json` |
//!
//! The merge refuses, naming them, videos that are not finished or were made with another
//! config. It builds the submission in a temporary folder and renames it into place.

use super::store::{RunManifest, RunStore, VideoState};
use super::DatasetLayout;
use crate::error::{Error, Result};
use crate::eval::input::read_json;
use crate::output::json::{
    categories_list, merged_categories, vipseg_document, write_json, CATEGORIES, VIPSEG_ENTRIES,
};
use crate::output::{Layout, OutputFormat, OutputOptions};
use serde_json::{json, Map, Value};
use std::path::{Path, PathBuf};

/// What a merge produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Merged {
    /// The submission folder.
    pub dir: PathBuf,
    /// Videos merged.
    pub videos: usize,
    /// Frames merged.
    pub frames: usize,
}

/// How many names an error lists before "and N more".
const LISTED: usize = 10;

fn name_list(names: &[String]) -> String {
    let mut s = names[..names.len().min(LISTED)].join(", ");
    if names.len() > LISTED {
        s.push_str(&format!(" and {} more", names.len() - LISTED));
    }
    s
}

/// Checks that every video of the run is finished with the run's config; returns the frames.
fn check_complete(store: &RunStore, m: &RunManifest) -> Result<usize> {
    let mut unfinished = Vec::new();
    let mut other_config = Vec::new();
    let mut frames = 0;
    for v in &m.videos {
        match store.state(&v.name, &m.config_hash)? {
            VideoState::Done(r) => frames += r.frames,
            VideoState::Failed(e) => unfinished.push(format!("{} (failed: {e})", v.name)),
            VideoState::Running => unfinished.push(format!("{} (running)", v.name)),
            VideoState::Pending => match store.record(&v.name)? {
                Some(r) => other_config.push(format!("{} (config {})", v.name, r.config_hash)),
                None => unfinished.push(v.name.clone()),
            },
        }
    }
    let mut problems = Vec::new();
    if !unfinished.is_empty() {
        problems.push(format!(
            "{} of {} videos are not finished: {}",
            unfinished.len(),
            m.videos.len(),
            name_list(&unfinished)
        ));
    }
    if !other_config.is_empty() {
        problems.push(format!(
            "{} videos were made with another config than the run's {}: {}",
            other_config.len(),
            m.config_hash,
            name_list(&other_config)
        ));
    }
    if problems.is_empty() {
        Ok(frames)
    } else {
        Err(Error::invalid(format!(
            "{}: cannot merge: {} (run `deva run` again to finish them)",
            store.root().display(),
            problems.join("; ")
        )))
    }
}

/// Copies the files of `src` (not sub-folders, not hidden files) into `dst`.
fn copy_files(src: &Path, dst: &Path) -> Result<()> {
    std::fs::create_dir_all(dst).map_err(|e| Error::io(dst, e))?;
    for e in std::fs::read_dir(src).map_err(|e| Error::io(src, e))? {
        let path = e.map_err(|e| Error::io(src, e))?.path();
        let Some(name) = path.file_name() else {
            continue;
        };
        if path.is_file() && !name.to_string_lossy().starts_with('.') {
            let to = dst.join(name);
            std::fs::copy(&path, &to).map_err(|e| Error::io(&to, e))?;
        }
    }
    Ok(())
}

/// Zips the folder `root/top` as `top/...` into `zip_path`, entries sorted by path, stored
/// (PNGs are compressed already) with a fixed date, so equal folders give equal zips.
fn write_zip(root: &Path, top: &str, zip_path: &Path) -> Result<()> {
    let mut paths = Vec::new();
    let mut stack = vec![root.join(top)];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).map_err(|e| Error::io(&dir, e))? {
            let p = e.map_err(|e| Error::io(&dir, e))?.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                paths.push(p);
            }
        }
    }
    paths.sort();
    let zip_err = |e: zip::result::ZipError| Error::io(zip_path, std::io::Error::other(e));
    let file = std::fs::File::create(zip_path).map_err(|e| Error::io(zip_path, e))?;
    let mut zip = zip::ZipWriter::new(std::io::BufWriter::new(file));
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Stored)
        .last_modified_time(zip::DateTime::default())
        .unix_permissions(0o644);
    for p in paths {
        let name = p
            .strip_prefix(root)
            .expect("under root")
            .to_string_lossy()
            .replace('\\', "/");
        zip.start_file(name, options).map_err(zip_err)?;
        let bytes = std::fs::read(&p).map_err(|e| Error::io(&p, e))?;
        std::io::Write::write_all(&mut zip, &bytes).map_err(|e| Error::io(zip_path, e))?;
    }
    zip.finish().map_err(zip_err)?;
    Ok(())
}

/// A BURST results sequence from deva's per-video BURST document `doc` (read from `path`).
fn burst_sequence(doc: &Value, path: &Path) -> Result<Value> {
    let bad = |what: &str| Error::parse(path, format!("not a deva BURST result: {what}"));
    let frames = doc["segmentations"]
        .as_array()
        .ok_or_else(|| bad("no \"segmentations\" list"))?;
    let mut images = Vec::new();
    let mut segmentations = Vec::new();
    let mut categories = Map::new();
    let mut size = None;
    for f in frames {
        images.push(f["file_name"].clone());
        let mut tracks = Map::new();
        for o in f["segmentations"]
            .as_array()
            .ok_or_else(|| bad("a frame without objects list"))?
        {
            let id = o["id"]
                .as_u64()
                .ok_or_else(|| bad("an object without id"))?;
            size = size.or_else(|| o["rle"]["size"].as_array().cloned());
            tracks.insert(
                id.to_string(),
                json!({ "rle": o["rle"]["counts"], "score": o["score"] }),
            );
            if !o["category_id"].is_null() {
                categories.insert(id.to_string(), o["category_id"].clone());
            }
        }
        segmentations.push(Value::Object(tracks));
    }
    let mut seq = Map::new();
    seq.insert("dataset".into(), doc["dataset"].clone());
    seq.insert("seq_name".into(), doc["seq_name"].clone());
    if let Some([h, w]) = size.as_deref() {
        seq.insert("width".into(), w.clone());
        seq.insert("height".into(), h.clone());
    }
    seq.insert("annotated_image_paths".into(), Value::Array(images));
    seq.insert("track_category_ids".into(), Value::Object(categories));
    seq.insert("segmentations".into(), Value::Array(segmentations));
    Ok(Value::Object(seq))
}

/// Merges the finished run in `store` into the submission folder `into` (replaced if it
/// exists). Fails, naming them, when videos are unfinished or made with another config.
pub fn merge(store: &RunStore, into: &Path) -> Result<Merged> {
    let m = store.manifest()?;
    let frames = check_complete(store, &m)?;
    let name = into
        .file_name()
        .ok_or_else(|| Error::invalid(format!("{}: not a folder path", into.display())))?;
    let staging = into.with_file_name(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = build(store, &m, &staging).and_then(|()| {
        if into.exists() {
            std::fs::remove_dir_all(into).map_err(|e| Error::io(into, e))?;
        }
        std::fs::rename(&staging, into).map_err(|e| Error::io(into, e))
    });
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    result?;
    Ok(Merged {
        dir: into.to_path_buf(),
        videos: m.videos.len(),
        frames,
    })
}

/// Writes the submission files into `out`.
fn build(store: &RunStore, m: &RunManifest, out: &Path) -> Result<()> {
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let mut entries = Vec::new();
    let mut sequences = Vec::new();
    let mut burst_docs = Vec::new();
    for v in &m.videos {
        let dir = store.video_dir(&v.name);
        let layout = Layout::new(&OutputOptions::new(&dir, m.format, &v.name));
        match m.format {
            OutputFormat::Davis => {
                let dst = match m.layout {
                    DatasetLayout::YoutubeVos => out.join("Annotations").join(&v.name),
                    _ => out.join(&v.name),
                };
                copy_files(&layout.masks, &dst)?;
            }
            OutputFormat::Vipseg => {
                copy_files(&layout.masks, &out.join("pan_pred").join(&v.name))?;
                let entry = dir.join(VIPSEG_ENTRIES).join(format!("{}.json", v.name));
                entries.push(read_json::<Value>(&entry)?);
            }
            OutputFormat::Burst => {
                let path = layout.json.as_deref().expect("BURST results have JSON");
                let doc: Value = read_json(path)?;
                sequences.push(burst_sequence(&doc, path)?);
                burst_docs.push(doc);
            }
            OutputFormat::Demo => {
                let dst = out.join(&v.name);
                copy_files(&layout.masks, &dst.join("Annotations"))?;
                if let Some(doc) = &layout.json {
                    let to = dst.join("pred.json");
                    std::fs::copy(doc, &to).map_err(|e| Error::io(&to, e))?;
                }
            }
        }
    }
    if (m.format, m.layout) == (OutputFormat::Davis, DatasetLayout::YoutubeVos) {
        write_zip(out, "Annotations", &out.join("submission.zip"))?;
    }
    match m.format {
        OutputFormat::Vipseg => write_json(&out.join("pred.json"), &vipseg_document(entries)),
        OutputFormat::Burst => {
            let mut doc = json!({ "sequences": sequences });
            if let Some(names) = merged_categories(&burst_docs) {
                doc[CATEGORIES] = categories_list(&names);
            }
            write_json(&out.join("results.json"), &doc)
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::store::{ListedVideo, VideoRecord, TOOL_VERSION};
    use crate::mask::{IdMap, SegmentInfo, Segmentation};
    use crate::output::{CategoryNames, FrameResult, Sink, Writer};
    use std::sync::Arc;

    fn result(index: usize, ids: &[u32]) -> FrameResult {
        let map = IdMap::from_vec(2, 2, ids.to_vec()).unwrap();
        let mut seg = Segmentation::from_map(map);
        seg.segments = seg
            .map
            .ids()
            .into_iter()
            .map(|id| SegmentInfo {
                category_id: Some(7),
                score: Some(0.5),
                ..SegmentInfo::new(id)
            })
            .collect();
        FrameResult {
            index,
            name: format!("{index:05}"),
            image: Arc::new(image::RgbImage::new(2, 2)),
            segmentation: seg,
        }
    }

    /// A finished run of `videos` in `format`, each frame with object 3 (category 7) on one
    /// pixel; the first video names category 7 "dog", the others name nothing.
    fn run(out: &Path, format: OutputFormat, layout: DatasetLayout, videos: &[&str]) -> RunStore {
        let store = RunStore::new(out);
        store
            .prepare(&RunManifest {
                tool_version: TOOL_VERSION.into(),
                dataset: "/data".into(),
                layout,
                format,
                config_hash: "h".into(),
                settings: Value::Null,
                shards: 1,
                videos: videos
                    .iter()
                    .map(|v| ListedVideo {
                        name: v.to_string(),
                        frames: 2,
                    })
                    .collect(),
            })
            .unwrap();
        for (i, v) in videos.iter().enumerate() {
            let claim = store.begin(v, "h").unwrap().unwrap();
            let mut opts = OutputOptions::new(claim.staging(), format, v);
            if i == 0 {
                opts.category_names = CategoryNames::from([(7, "dog".to_string())]);
            }
            let mut w = Writer::new(opts).unwrap();
            w.write(&result(0, &[0, 3, 0, 0])).unwrap();
            w.write(&result(1, &[0, 0, 3, 0])).unwrap();
            w.finish().unwrap();
            claim
                .publish(&VideoRecord {
                    video: v.to_string(),
                    frames: 2,
                    config_hash: "h".into(),
                    tool_version: TOOL_VERSION.into(),
                    shard: "0/1".into(),
                    seconds: 0.0,
                })
                .unwrap();
        }
        store
    }

    #[test]
    fn vipseg_and_davis_submissions_have_every_video() {
        let d = tempfile::tempdir().unwrap();
        let store = run(
            &d.path().join("out"),
            OutputFormat::Vipseg,
            DatasetLayout::Vipseg,
            &["b", "a"],
        );
        let into = d.path().join("sub");
        let merged = merge(&store, &into).unwrap();
        assert_eq!((merged.videos, merged.frames), (2, 4));
        let doc: Value = read_json(&into.join("pred.json")).unwrap();
        let ids: Vec<&str> = doc["annotations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["video_id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["b", "a"], "the run's order");
        let dog = json!([{"id": 7, "name": "dog"}]);
        assert_eq!(doc[CATEGORIES], dog, "from b; a has none");
        assert_eq!(doc["annotations"][0][CATEGORIES], dog);
        assert!(doc["annotations"][1].get(CATEGORIES).is_none());
        assert!(into.join("pan_pred/a/00001.png").is_file());

        let store = run(
            &d.path().join("yt"),
            OutputFormat::Davis,
            DatasetLayout::YoutubeVos,
            &["v"],
        );
        merge(&store, &into).unwrap();
        let png = std::fs::read(into.join("Annotations/v/00001.png")).unwrap();
        let mut zip =
            zip::ZipArchive::new(std::fs::File::open(into.join("submission.zip")).unwrap())
                .unwrap();
        let mut names: Vec<String> = zip.file_names().map(|n| n.unwrap().into_owned()).collect();
        names.sort();
        assert_eq!(
            names,
            ["Annotations/v/00000.png", "Annotations/v/00001.png"]
        );
        let mut zipped = Vec::new();
        std::io::Read::read_to_end(
            &mut zip.by_name("Annotations/v/00001.png").unwrap(),
            &mut zipped,
        )
        .unwrap();
        assert_eq!(zipped, png);
        assert!(
            !into.join("pred.json").exists(),
            "the old submission is replaced"
        );
    }

    #[test]
    fn burst_results_hold_one_rle_per_track_and_frame() {
        let d = tempfile::tempdir().unwrap();
        let store = run(
            d.path(),
            OutputFormat::Burst,
            DatasetLayout::Burst,
            &["YFCC/s1"],
        );
        let into = d.path().join("sub");
        merge(&store, &into).unwrap();
        let doc: Value = read_json(&into.join("results.json")).unwrap();
        let seq = &doc["sequences"][0];
        assert_eq!(
            (seq["dataset"].as_str(), seq["seq_name"].as_str()),
            (Some("YFCC"), Some("s1"))
        );
        assert_eq!(
            (seq["width"].as_u64(), seq["height"].as_u64()),
            (Some(2), Some(2))
        );
        assert_eq!(
            seq["annotated_image_paths"],
            json!(["00000.jpg", "00001.jpg"])
        );
        assert_eq!(seq["track_category_ids"], json!({"3": 7}));
        assert_eq!(doc[CATEGORIES], json!([{"id": 7, "name": "dog"}]));
        let rle = seq["segmentations"][1]["3"]["rle"].as_str().unwrap();
        let rle = crate::mask::Rle::from_compressed(2, 2, rle).unwrap();
        assert_eq!(rle.area(), 1);
    }

    #[test]
    fn unfinished_and_foreign_videos_are_named() {
        let d = tempfile::tempdir().unwrap();
        let store = run(
            d.path(),
            OutputFormat::Davis,
            DatasetLayout::Davis,
            &["a", "b"],
        );
        let mut m = store.manifest().unwrap();
        m.videos.push(ListedVideo {
            name: "c".into(),
            frames: 1,
        });
        store.prepare(&m).unwrap();
        let rec = store.video_dir("b").join("record.json");
        let text = std::fs::read_to_string(&rec)
            .unwrap()
            .replace("\"h\"", "\"other\"");
        std::fs::write(&rec, text).unwrap();
        let into = d.path().join("sub");
        let e = merge(&store, &into).unwrap_err().to_string();
        assert!(e.contains("1 of 3 videos are not finished: c"), "{e}");
        assert!(e.contains("b (config other)"), "{e}");
        assert!(!into.exists());
    }
}
