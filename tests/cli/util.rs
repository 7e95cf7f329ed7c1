//! Helpers shared by the command-line tests: running the binary, reading outputs, data.
#![allow(dead_code)]

pub(crate) use super::common;
pub use deva::config::{Config, Temporal};
pub use deva::mask::Rle;
pub use deva::video::synthetic::SyntheticClip;
pub use serde_json::Value;
pub use std::collections::{BTreeMap, BTreeSet};
pub use std::path::{Path, PathBuf};
pub use std::process::{Command, Output};

pub fn deva(args: &[&dyn AsRef<std::ffi::OsStr>]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_deva"))
        .args(args.iter().map(|a| a.as_ref()))
        .output()
        .expect("run deva")
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts a clean failure: exit code 1 (our error, not clap's 2 or a panic's 101), no
/// panic message, and every `needle` in stderr.
pub fn assert_fails_naming(out: &Output, needles: &[&str]) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(1), "stderr: {err}");
    assert!(!err.contains("panicked"), "{err}");
    for n in needles {
        assert!(err.contains(n), "stderr should name {n:?}: {err}");
    }
}

pub fn assert_ok(out: &Output) {
    assert!(out.status.success(), "deva failed: {}", stderr(out));
}

pub fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, dst.join(p.file_name().unwrap())).unwrap();
    }
}

pub fn stems(dir: &Path, ext: &str) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// An RGB-id PNG decoded with the `image` crate: (width, height, ids).
pub fn read_rgb_ids(path: &Path) -> (u32, u32, Vec<u32>) {
    let img = image::open(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .to_rgb8();
    let ids = img
        .pixels()
        .map(|p| p.0[0] as u32 + 256 * p.0[1] as u32 + 65536 * p.0[2] as u32)
        .collect();
    (img.width(), img.height(), ids)
}

pub fn areas(ids: &[u32]) -> BTreeMap<u32, usize> {
    let mut m = BTreeMap::new();
    for &id in ids.iter().filter(|&&id| id != 0) {
        *m.entry(id).or_insert(0) += 1;
    }
    m
}

/// `[x, y, w, h]` of every id.
pub fn boxes(w: u32, ids: &[u32]) -> BTreeMap<u32, [u64; 4]> {
    let mut m: BTreeMap<u32, [u64; 4]> = BTreeMap::new();
    for (i, &id) in ids.iter().enumerate().filter(|(_, &id)| id != 0) {
        let (x, y) = ((i as u32 % w) as u64, (i as u32 / w) as u64);
        let b = m.entry(id).or_insert([x, y, x, y]);
        *b = [b[0].min(x), b[1].min(y), b[2].max(x), b[3].max(y)];
    }
    m.into_iter()
        .map(|(id, b)| (id, [b[0], b[1], b[2] - b[0] + 1, b[3] - b[1] + 1]))
        .collect()
}

pub fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

pub fn vipseg() -> Option<(PathBuf, PathBuf, String)> {
    let root = common::data("deva-example/vipseg")?;
    let video = std::fs::read_dir(root.join("images"))
        .unwrap()
        .next()
        .expect("a video folder")
        .unwrap()
        .file_name()
        .to_string_lossy()
        .into_owned();
    Some((
        root.join("images").join(&video),
        root.join("source").join(&video),
        video,
    ))
}

/// Checks a VIPSeg-layout output of `frames` against itself: PNG sizes, JSON frame list,
/// areas and boxes equal to the PNG pixels; returns the id maps per frame.
pub fn check_vipseg_output(out: &Path, frames: &Path, video: &str) -> Vec<(u32, u32, Vec<u32>)> {
    let names = stems(frames, "jpg");
    let first = image::open(frames.join(format!("{}.jpg", names[0]))).unwrap();
    let doc = read_json(&out.join("pred.json"));
    let videos = doc["annotations"].as_array().unwrap();
    assert_eq!(videos.len(), 1);
    assert_eq!(videos[0]["video_id"], video);
    let records = videos[0]["annotations"].as_array().unwrap();
    let listed: Vec<&str> = records
        .iter()
        .map(|r| r["file_name"].as_str().unwrap())
        .collect();
    let expected: Vec<String> = names.iter().map(|n| format!("{n}.jpg")).collect();
    assert_eq!(listed, expected);
    let mut maps = Vec::new();
    for (name, record) in names.iter().zip(records) {
        let (w, h, ids) =
            read_rgb_ids(&out.join("pan_pred").join(video).join(format!("{name}.png")));
        assert_eq!((w, h), (first.width(), first.height()), "{name}");
        let px_areas = areas(&ids);
        let px_boxes = boxes(w, &ids);
        let segs = record["segments_info"].as_array().unwrap();
        let json_ids: BTreeSet<u32> = segs
            .iter()
            .map(|s| s["id"].as_u64().unwrap() as u32)
            .collect();
        assert_eq!(json_ids.len(), segs.len(), "{name}: an id listed twice");
        assert_eq!(json_ids, px_areas.keys().copied().collect(), "{name}");
        for s in segs {
            let id = s["id"].as_u64().unwrap() as u32;
            assert_eq!(
                s["area"].as_u64().unwrap() as usize,
                px_areas[&id],
                "{name} id {id}"
            );
            let b: Vec<u64> = s["bbox"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap())
                .collect();
            assert_eq!(b, px_boxes[&id], "{name} id {id}");
            assert!(s.get("category_id").is_some() && s.get("isthing").is_some());
        }
        maps.push((w, h, ids));
    }
    maps
}

/// Where masks of consecutive frames overlap (IoU > 0.5) they carry the same id, and at
/// least one object keeps its id through the whole clip.
pub fn check_ids_persist(maps: &[(u32, u32, Vec<u32>)]) {
    check_ids_persist_by_kind(maps, &[]);
}

/// Per frame, each id's `isthing` as the VIPSeg `pred.json` in `out` lists it.
pub fn vipseg_kinds(out: &Path) -> Vec<BTreeMap<u32, bool>> {
    let doc = read_json(&out.join("pred.json"));
    doc["annotations"][0]["annotations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r["segments_info"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|s| Some((s["id"].as_u64()? as u32, s["isthing"].as_u64()? == 1)))
                .collect()
        })
        .collect()
}

/// [`check_ids_persist`], except for pairs whose kinds (`kinds[t][id]`, thing or stuff) both
/// are known and differ: DEVA matches a new segment only with objects of its own kind
/// (reference §2.6), so a blob whose class turns from stuff to thing starts a new object.
pub fn check_ids_persist_by_kind(maps: &[(u32, u32, Vec<u32>)], kinds: &[BTreeMap<u32, bool>]) {
    for (t, pair) in maps.windows(2).enumerate() {
        let (a, b) = (&pair[0].2, &pair[1].2);
        let mut inter: BTreeMap<(u32, u32), usize> = BTreeMap::new();
        for (&x, &y) in a.iter().zip(b) {
            if x != 0 && y != 0 {
                *inter.entry((x, y)).or_insert(0) += 1;
            }
        }
        let (aa, ab) = (areas(a), areas(b));
        for (&(x, y), &i) in &inter {
            let iou = i as f64 / (aa[&x] + ab[&y] - i) as f64;
            let kind = |f: usize, id: u32| kinds.get(f).and_then(|k| k.get(&id)).copied();
            let (kx, ky) = (kind(t, x), kind(t + 1, y));
            if iou > 0.5 && x != y && kx.is_some() && ky.is_some() && kx != ky {
                eprintln!(
                    "frames {t}->{}: id {x} ({kx:?}) became {y} ({ky:?}), IoU {iou:.2}: \
                     kinds differ",
                    t + 1
                );
                continue;
            }
            assert!(
                iou <= 0.5 || x == y,
                "frames {t}->{}: ids {x} and {y} overlap with IoU {iou:.2}",
                t + 1
            );
        }
    }
    let common: BTreeSet<u32> = maps
        .iter()
        .map(|m| areas(&m.2).into_keys().collect::<BTreeSet<u32>>())
        .reduce(|a, b| a.intersection(&b).copied().collect())
        .unwrap();
    assert!(!common.is_empty(), "no id survives the clip");
}

/// Frames of the generated demo clip (`clip`), as PNGs in `dir`.
pub fn write_clip(dir: &Path, clip: &SyntheticClip) {
    std::fs::create_dir_all(dir).unwrap();
    for t in 0..clip.frames {
        clip.image(t).save(dir.join(format!("{t:05}.png"))).unwrap();
    }
}

/// A two-frame clip with a first-frame mask: enough to reach the propagator.
pub fn tiny_vos(dir: &Path) -> (PathBuf, PathBuf) {
    let clip = SyntheticClip {
        frames: 2,
        width: 64,
        height: 48,
    };
    let (frames, masks) = (dir.join("frames"), dir.join("masks"));
    write_clip(&frames, &clip);
    std::fs::create_dir_all(&masks).unwrap();
    let m = clip.mask(0);
    image::GrayImage::from_fn(64, 48, |x, y| {
        image::Luma([m.get(x as usize, y as usize) as u8])
    })
    .save(masks.join("00000.png"))
    .unwrap();
    (frames, masks)
}

/// The models folder when U²-Netp is fetched there, else `None` with a "skipped" line.
pub fn models_with_u2netp() -> Option<PathBuf> {
    let dir = deva::models::default_dir().unwrap();
    let entry = deva::models::Manifest::builtin().unwrap();
    if entry.get("u2netp").unwrap().presence(&dir) == deva::models::Presence::Present {
        Some(dir)
    } else {
        eprintln!(
            "skipped: run deva models fetch u2netp (looked in {})",
            dir.display()
        );
        None
    }
}

/// The raw indices of an 8-bit palette PNG, row-major, and its width and height (decoded with
/// the `png` crate, without expanding the palette).
pub fn palette_pixels(path: &Path) -> (u32, u32, Vec<u8>) {
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    assert_eq!(reader.info().color_type, png::ColorType::Indexed);
    assert_eq!(reader.info().bit_depth, png::BitDepth::Eight);
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let frame = reader.next_frame(&mut buf).unwrap();
    buf.truncate(frame.buffer_size());
    (frame.width, frame.height, buf)
}

/// The distinct raw indices of an 8-bit palette PNG.
pub fn palette_indices(path: &Path) -> BTreeSet<u8> {
    palette_pixels(path).2.into_iter().collect()
}

/// Intersection over union of the foreground of a DAVIS palette PNG and `truth`.
pub fn foreground_iou(png: &Path, truth: &deva::mask::BinaryMask) -> f64 {
    let img = image::open(png).unwrap().to_luma8();
    assert_eq!(
        (img.width() as usize, img.height() as usize),
        (truth.width(), truth.height())
    );
    let (mut inter, mut union) = (0usize, 0usize);
    for (p, &t) in img.pixels().zip(truth.data()) {
        let f = p.0[0] != 0;
        inter += (f && t) as usize;
        union += (f || t) as usize;
    }
    inter as f64 / union.max(1) as f64
}

/// The first `n` frames of a DAVIS-2016 sequence copied to `dst` (`None`: no data, skipped).
pub fn davis_frames(seq: &str, n: usize, dst: &Path) -> Option<()> {
    let src = common::data("davis16")?.join("JPEGImages/480p").join(seq);
    std::fs::create_dir_all(dst).unwrap();
    for name in stems(&src, "jpg").iter().take(n) {
        let f = format!("{name}.jpg");
        std::fs::copy(src.join(&f), dst.join(&f)).unwrap();
    }
    Some(())
}
