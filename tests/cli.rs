//! End-to-end tests of `deva track` (the built binary) and of the configuration presets.
//!
//! Real data come from `$DEVA_DATA` (default `../shared/data`): the DEVA VIPSeg example with its
//! detections, and the Cutie judo clip whose `00005.png` mask is one pixel narrower than its
//! frame. Output PNGs are decoded with the `image` crate (independently of deva's reader).

mod common;

use deva::config::{Config, Temporal};
use deva::mask::Rle;
use deva::video::synthetic::SyntheticClip;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn deva(args: &[&dyn AsRef<std::ffi::OsStr>]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_deva"))
        .args(args.iter().map(|a| a.as_ref()))
        .output()
        .expect("run deva")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts a clean failure: exit code 1 (our error, not clap's 2 or a panic's 101), no
/// panic message, and every `needle` in stderr.
fn assert_fails_naming(out: &Output, needles: &[&str]) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(1), "stderr: {err}");
    assert!(!err.contains("panicked"), "{err}");
    for n in needles {
        assert!(err.contains(n), "stderr should name {n:?}: {err}");
    }
}

fn assert_ok(out: &Output) {
    assert!(out.status.success(), "deva failed: {}", stderr(out));
}

fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, dst.join(p.file_name().unwrap())).unwrap();
    }
}

fn stems(dir: &Path, ext: &str) -> Vec<String> {
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
fn read_rgb_ids(path: &Path) -> (u32, u32, Vec<u32>) {
    let img = image::open(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .to_rgb8();
    let ids = img
        .pixels()
        .map(|p| p.0[0] as u32 + 256 * p.0[1] as u32 + 65536 * p.0[2] as u32)
        .collect();
    (img.width(), img.height(), ids)
}

fn areas(ids: &[u32]) -> BTreeMap<u32, usize> {
    let mut m = BTreeMap::new();
    for &id in ids.iter().filter(|&&id| id != 0) {
        *m.entry(id).or_insert(0) += 1;
    }
    m
}

/// `[x, y, w, h]` of every id.
fn boxes(w: u32, ids: &[u32]) -> BTreeMap<u32, [u64; 4]> {
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

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn vipseg() -> Option<(PathBuf, PathBuf, String)> {
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
fn check_vipseg_output(out: &Path, frames: &Path, video: &str) -> Vec<(u32, u32, Vec<u32>)> {
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
fn check_ids_persist(maps: &[(u32, u32, Vec<u32>)]) {
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

fn track_vipseg(temporal: &str) {
    let Some((frames, detections, video)) = vipseg() else {
        return;
    };
    let out = tempfile::tempdir().unwrap();
    let o = deva(&[
        &"track",
        &frames,
        &"--detections",
        &detections,
        &"--out",
        &out.path(),
        &"--format",
        &"vipseg",
        &"--temporal",
        &temporal,
        &"--detection-every",
        &"1",
        &"--config",
        &concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/configs/vipseg_semionline.toml"
        ),
    ]);
    assert_ok(&o);
    let maps = check_vipseg_output(out.path(), &frames, &video);
    check_ids_persist(&maps);

    // BURST: RLEs decode to exactly the pixels of each id in the PNGs.
    let out = tempfile::tempdir().unwrap();
    let o = deva(&[
        &"track",
        &frames,
        &"--detections",
        &detections,
        &"--out",
        &out.path(),
        &"--format",
        &"burst",
        &"--temporal",
        &temporal,
        &"--video-name",
        &"ds/seq",
    ]);
    assert_ok(&o);
    let doc = read_json(&out.path().join("ds/seq/pred.json"));
    assert_eq!(
        (doc["dataset"].as_str(), doc["seq_name"].as_str()),
        (Some("ds"), Some("seq"))
    );
    let names = stems(&frames, "jpg");
    let records = doc["segmentations"].as_array().unwrap();
    assert_eq!(records.len(), names.len());
    for (name, record) in names.iter().zip(records) {
        assert_eq!(record["file_name"], format!("{name}.jpg"));
        let (w, h, ids) = read_rgb_ids(&out.path().join("ds/seq").join(format!("{name}.png")));
        let px_areas = areas(&ids);
        let objects = record["segmentations"].as_array().unwrap();
        assert_eq!(objects.len(), px_areas.len(), "{name}");
        for s in objects {
            let id = s["id"].as_u64().unwrap() as u32;
            assert_eq!(s["rle"]["size"], serde_json::json!([h, w]));
            let rle =
                Rle::from_compressed(h as usize, w as usize, s["rle"]["counts"].as_str().unwrap())
                    .unwrap();
            assert_eq!(rle.area() as usize, px_areas[&id], "{name} id {id}");
            let mask = rle.decode().unwrap();
            let same = ids.iter().zip(mask.data()).all(|(&p, &m)| (p == id) == m);
            assert!(same, "{name} id {id}: RLE differs from the PNG");
        }
    }
}

#[test]
fn tracks_vipseg_detections_online() {
    track_vipseg("online");
}

#[test]
fn tracks_vipseg_detections_semionline() {
    track_vipseg("semionline");
}

/// Asserts that `deva <command> --help` lists every flag with a paragraph that states its
/// default (or that it is required).
fn assert_help_documents(command: &str, flags: &[&str]) {
    let o = deva(&[&command, &"--help"]);
    assert_ok(&o);
    let help = String::from_utf8_lossy(&o.stdout);
    for flag in flags {
        // The flag's own paragraph, from its line in the options list to the next flag.
        let lines: Vec<&str> = help.lines().collect();
        let is_flag_line = |l: &str| {
            let t = l.trim_start();
            let t = t.strip_prefix("-o, ").unwrap_or(t);
            t.starts_with(&format!("{flag} ")) || t == *flag
        };
        let at = lines
            .iter()
            .position(|l| is_flag_line(l))
            .unwrap_or_else(|| panic!("{flag} missing from {command} --help:\n{help}"));
        let paragraph: Vec<&str> = std::iter::once(lines[at])
            .chain(lines[at + 1..].iter().copied().take_while(|l| {
                let t = l.trim_start();
                !(t.starts_with("--") || t.get(2..4) == Some(", "))
            }))
            .collect();
        let text = paragraph.join("\n");
        assert!(
            text.contains("default") || text.contains("required"),
            "{flag} states no default in {command} --help:\n{text}"
        );
    }
}

#[test]
fn help_explains_every_flag_with_its_default() {
    assert_help_documents(
        "track",
        &[
            "--out",
            "--detections",
            "--init-masks",
            "--segmenter",
            "--init-box",
            "--sam-auto",
            "--sam-weights",
            "--boxes",
            "--models-dir",
            "--config",
            "--temporal",
            "--size",
            "--detection-every",
            "--num-voting-frames",
            "--max-missed-detection-count",
            "--max-num-objects",
            "--format",
            "--propagator",
            "--weights",
            "--video-name",
            "--resize-masks",
            "--foreground",
            "--overlay",
            "--overlay-video",
            "--fps",
            "--category-names",
        ],
    );
    assert_help_documents(
        "demo",
        &["--out", "--segmenter", "--frames", "--models-dir"],
    );
}

#[test]
fn config_presets_parse_with_the_papers_settings() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs");
    let mut parsed = BTreeMap::new();
    for name in stems(&dir, "toml") {
        let c = Config::from_toml_file(&dir.join(format!("{name}.toml")))
            .unwrap_or_else(|e| panic!("configs/{name}.toml: {e}"));
        parsed.insert(name, c);
    }
    // Reference §2.1 (eval_args, demo defaults, evaluation scripts).
    let t = |n: &str| &parsed[n].tracker;
    assert_eq!(t("vipseg_online").temporal, Temporal::Online);
    assert_eq!(t("vipseg_semionline").temporal, Temporal::SemiOnline);
    assert_eq!(
        (
            t("vipseg_semionline").detection_every,
            t("vipseg_semionline").num_voting_frames
        ),
        (5, 3)
    );
    assert_eq!(t("burst").max_missed_detection_count, 5);
    assert_eq!(t("text").max_missed_detection_count, 10);
    assert_eq!(
        (t("automatic").max_num_objects, t("automatic").incremental),
        (200, true)
    );
    assert_eq!(
        (
            t("referring_offline").temporal,
            t("referring_offline").num_voting_frames
        ),
        (Temporal::Offline, 5)
    );
    assert_eq!(
        (
            t("unsupervised_offline").temporal,
            t("unsupervised_offline").num_voting_frames
        ),
        (Temporal::Offline, 10)
    );
    assert_eq!(parsed["davis"].propagator, Config::default().propagator);
    assert_eq!(t("davis").temporal, Temporal::Vos);
    assert!(parsed.values().all(|c| c.input.size == 480));
}

#[test]
fn unknown_config_key_is_named() {
    let Some((frames, detections, _)) = vipseg() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    std::fs::write(&cfg, "[tracker]\ndetection_evry = 3\n").unwrap();
    let o = deva(&[
        &"track",
        &frames,
        &"--detections",
        &detections,
        &"--out",
        &dir.path().join("o"),
        &"--config",
        &cfg,
    ]);
    assert_fails_naming(&o, &["bad.toml", "detection_evry"]);
    assert!(!dir.path().join("o").exists());
}

#[test]
fn bad_frames_are_named() {
    let Some((frames, detections, _)) = vipseg() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let run = |input: &Path| {
        deva(&[
            &"track",
            &input,
            &"--detections",
            &detections,
            &"--out",
            &out,
        ])
    };

    let missing = dir.path().join("no_such_frames");
    assert_fails_naming(&run(&missing), &["no_such_frames"]);

    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    assert_fails_naming(&run(&empty), &["empty", "no frames"]);

    let names = stems(&frames, "jpg");
    let copy = dir.path().join("frames");
    copy_dir(&frames, &copy);
    std::fs::write(copy.join("notes.txt"), "not a frame").unwrap();
    assert_fails_naming(&run(&copy), &["notes.txt"]);
    std::fs::remove_file(copy.join("notes.txt")).unwrap();

    // An unreadable (corrupt) frame in the middle of the video.
    let bad = copy.join(format!("{}.jpg", names[2]));
    std::fs::write(&bad, b"\xff\xd8 truncated").unwrap();
    assert_fails_naming(&run(&copy), &[&format!("{}.jpg", names[2])]);
}

#[test]
fn inconsistent_detections_are_named() {
    let Some((frames, detections, _)) = vipseg() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let det = dir.path().join("det");
    copy_dir(&detections, &det);
    let name = stems(&det, "json").remove(1);
    let json_path = det.join(format!("{name}.json"));
    let mut list: Vec<Value> =
        serde_json::from_str(&std::fs::read_to_string(&json_path).unwrap()).unwrap();
    let max_id = list
        .iter()
        .map(|s| s["id"].as_u64().unwrap())
        .max()
        .unwrap();
    let absent = max_id + 100;
    list.push(serde_json::json!({"id": absent, "category_id": 0, "isthing": false}));
    std::fs::write(&json_path, serde_json::to_string(&list).unwrap()).unwrap();
    let o = deva(&[
        &"track",
        &frames,
        &"--detections",
        &det,
        &"--out",
        &dir.path().join("o"),
        &"--propagator",
        &"none",
    ]);
    assert_fails_naming(&o, &[&format!("{name}.json"), &format!("id {absent}")]);

    std::fs::write(&json_path, "[{\"id\": 1,").unwrap();
    let o = deva(&[
        &"track",
        &frames,
        &"--detections",
        &det,
        &"--out",
        &dir.path().join("o"),
    ]);
    assert_fails_naming(&o, &[&format!("{name}.json")]);
}

#[test]
fn mask_of_another_size_is_named_or_resized() {
    let Some(judo) = common::data("cutie-judo") else {
        return;
    };
    let frames = judo.join("images/judo");
    let masks = judo.join("masks/judo");
    // Find the mask whose size differs from the frames (00005.png in this data set).
    let frame_size = image::image_dimensions(frames.join("00000.jpg")).unwrap();
    let odd = stems(&masks, "png")
        .into_iter()
        .map(|n| {
            (
                image::image_dimensions(masks.join(format!("{n}.png"))).unwrap(),
                n,
            )
        })
        .find(|(size, _)| *size != frame_size)
        .expect("a mask of another size");
    let dir = tempfile::tempdir().unwrap();
    let o = deva(&[
        &"track",
        &frames,
        &"--init-masks",
        &masks,
        &"--out",
        &dir.path(),
    ]);
    let (w, h) = odd.0;
    assert_fails_naming(
        &o,
        &[
            &format!("{}.png", odd.1),
            &format!("{w}x{h}"),
            &format!("{}x{}", frame_size.0, frame_size.1),
        ],
    );

    // With --resize-masks it runs; palette PNGs at the frame size for every frame.
    let o = deva(&[
        &"track",
        &frames,
        &"--init-masks",
        &masks,
        &"--out",
        &dir.path(),
        &"--resize-masks",
    ]);
    assert_ok(&o);
    let written = dir.path().join("judo");
    assert_eq!(stems(&written, "png"), stems(&frames, "jpg"));
    let png = image::open(written.join(format!("{}.png", odd.1))).unwrap();
    assert_eq!((png.width(), png.height()), frame_size);
}

#[test]
fn video_file_round_trip() {
    let Some(judo) = common::data("cutie-judo") else {
        return;
    };
    if !deva::video::ffmpeg::available() {
        eprintln!(
            "skipped: ffmpeg/ffprobe not found ({})",
            deva::video::ffmpeg::INSTALL_HINT
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let frames = judo.join("images/judo");
    let n = stems(&frames, "jpg").len();
    let clip = dir.path().join("judo.mp4");
    let made = Command::new("ffmpeg")
        .args(["-v", "error", "-framerate", "10", "-i"])
        .arg(frames.join("%05d.jpg"))
        .args(["-pix_fmt", "yuv420p"])
        .arg(&clip)
        .status()
        .unwrap();
    assert!(made.success());
    let out = dir.path().join("out");
    let o = deva(&[
        &"track",
        &clip,
        &"--init-masks",
        &judo.join("masks/judo"),
        &"--resize-masks",
        &"--out",
        &out,
        &"--format",
        &"demo",
        &"--overlay-video",
    ]);
    assert_ok(&o);
    // Video frames are named by index, so the masks (named by frame number) line up.
    let written = stems(&out.join("Annotations"), "png");
    assert_eq!(
        written,
        (0..n).map(|i| format!("{i:05}")).collect::<Vec<_>>()
    );
    let size = image::image_dimensions(frames.join("00000.jpg")).unwrap();
    let (w, h, ids) = read_rgb_ids(&out.join("Annotations/00000.png"));
    assert_eq!((w, h), size);
    assert!(!areas(&ids).is_empty());
    let doc = read_json(&out.join("pred.json"));
    assert_eq!(doc["annotations"].as_array().unwrap().len(), n);

    let probe = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-count_frames",
            "-select_streams",
            "v:0",
            "-show_entries",
        ])
        .args([
            "stream=nb_read_frames,width,height,avg_frame_rate",
            "-of",
            "json",
        ])
        .arg(out.join("Visualizations.mp4"))
        .output()
        .unwrap();
    let info: Value = serde_json::from_slice(&probe.stdout).unwrap();
    let s = &info["streams"][0];
    assert_eq!(s["nb_read_frames"], n.to_string());
    assert_eq!(
        (s["width"].as_u64(), s["height"].as_u64()),
        (Some(size.0 as u64), Some(size.1 as u64))
    );
    assert_eq!(s["avg_frame_rate"], "10/1");

    // Without ffmpeg on PATH the error says how to install it.
    let o = Command::new(env!("CARGO_BIN_EXE_deva"))
        .args(["track"])
        .arg(&clip)
        .args(["--init-masks"])
        .arg(judo.join("masks/judo"))
        .arg("--out")
        .arg(dir.path().join("o2"))
        .env("PATH", "")
        .output()
        .unwrap();
    assert_fails_naming(&o, &["ffprobe", "install"]);
}

/// Frames of the generated demo clip (`clip`), as PNGs in `dir`.
fn write_clip(dir: &Path, clip: &SyntheticClip) {
    std::fs::create_dir_all(dir).unwrap();
    for t in 0..clip.frames {
        clip.image(t).save(dir.join(format!("{t:05}.png"))).unwrap();
    }
}

/// A two-frame clip with a first-frame mask: enough to reach the propagator.
fn tiny_vos(dir: &Path) -> (PathBuf, PathBuf) {
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
fn models_with_u2netp() -> Option<PathBuf> {
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

#[test]
fn weights_and_propagator_errors_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let (frames, masks) = tiny_vos(dir.path());
    let out = dir.path().join("out");
    let track = |extra: &[&dyn AsRef<std::ffi::OsStr>]| {
        let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> =
            vec![&"track", &frames, &"--init-masks", &masks, &"--out", &out];
        args.extend_from_slice(extra);
        deva(&args)
    };
    let missing = dir.path().join("DEVA-missing.pth");
    assert_fails_naming(
        &track(&[&"--weights", &missing]),
        &["DEVA-missing.pth", "not found"],
    );
    let corrupt = dir.path().join("DEVA-corrupt.pth");
    std::fs::write(&corrupt, b"not a checkpoint").unwrap();
    assert_fails_naming(&track(&[&"--weights", &corrupt]), &["DEVA-corrupt.pth"]);
    let empty = dir.path().join("models");
    std::fs::create_dir(&empty).unwrap();
    assert_fails_naming(
        &track(&[&"--propagator", &"deva", &"--models-dir", &empty]),
        &["deva models fetch deva-propagation"],
    );
    assert_fails_naming(
        &track(&[&"--weights", &corrupt, &"--propagator", &"flow"]),
        &["--weights", "flow"],
    );
    assert!(!out.exists(), "nothing is written when set-up fails");

    // Each weight-free propagator runs and says which one it is; flow is the default.
    for (flag, name) in [
        (None, "flow"),
        (Some("static"), "static"),
        (Some("none"), "none"),
    ] {
        let o = match flag {
            Some(p) => track(&[&"--propagator", &p]),
            None => track(&[]),
        };
        assert_ok(&o);
        assert!(
            stderr(&o).contains(&format!("propagator {name}")),
            "{}",
            stderr(&o)
        );
        assert_eq!(stems(&out.join("frames"), "png"), ["00000", "00001"]);
    }
}

#[test]
fn segmenter_errors_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let (frames, masks) = tiny_vos(dir.path());
    let out = dir.path().join("out");
    // An unknown name is a usage error (exit 2) that lists the known ones.
    let o = deva(&[
        &"track",
        &frames,
        &"--segmenter",
        &"saliency:u3net",
        &"--out",
        &out,
    ]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    for n in [
        "saliency:u3net",
        "saliency:u2netp",
        "saliency:u2net",
        "saliency:isnet",
    ] {
        assert!(err.contains(n), "{n}: {err}");
    }
    // Two segmenters at once.
    let o = deva(&[
        &"track",
        &frames,
        &"--segmenter",
        &"saliency:u2netp",
        &"--init-masks",
        &masks,
        &"--out",
        &out,
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    // A model that is not in the models folder: the error says how to fetch it.
    let empty = dir.path().join("models");
    std::fs::create_dir(&empty).unwrap();
    for model in ["u2netp", "u2net", "isnet"] {
        let o = deva(&[
            &"track",
            &frames,
            &"--segmenter",
            &format!("saliency:{model}"),
            &"--models-dir",
            &empty,
            &"--out",
            &out,
        ]);
        assert_fails_naming(&o, &[&format!("deva models fetch {model}")]);
    }
    // A corrupt model file is named.
    std::fs::write(empty.join("u2netp.onnx"), b"truncated").unwrap();
    let o = deva(&[
        &"track",
        &frames,
        &"--segmenter",
        &"saliency:u2netp",
        &"--models-dir",
        &empty,
        &"--out",
        &out,
    ]);
    assert_fails_naming(&o, &["u2netp.onnx", "deva models fetch u2netp"]);
}

/// The distinct raw indices of an 8-bit palette PNG (decoded with the `png` crate, without
/// expanding the palette).
fn palette_indices(path: &Path) -> BTreeSet<u8> {
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    assert_eq!(reader.info().color_type, png::ColorType::Indexed);
    assert_eq!(reader.info().bit_depth, png::BitDepth::Eight);
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let frame = reader.next_frame(&mut buf).unwrap();
    buf[..frame.buffer_size()].iter().copied().collect()
}

/// Intersection over union of the foreground of a DAVIS palette PNG and `truth`.
fn foreground_iou(png: &Path, truth: &deva::mask::BinaryMask) -> f64 {
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

#[test]
fn saliency_with_flow_tracks_the_generated_clip() {
    let Some(models) = models_with_u2netp() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let clip = SyntheticClip {
        frames: 12,
        width: 320,
        height: 180,
    };
    let frames = dir.path().join("clip");
    write_clip(&frames, &clip);
    for (propagator, temporal) in [
        ("flow", "semionline"),
        ("flow", "offline"),
        ("none", "online"),
    ] {
        let out = dir.path().join(format!("{propagator}-{temporal}"));
        let o = deva(&[
            &"track",
            &"--foreground",
            &frames,
            &"--segmenter",
            &"saliency:u2netp",
            &"--models-dir",
            &models,
            &"--propagator",
            &propagator,
            &"--temporal",
            &temporal,
            &"--size",
            &"-1",
            &"--format",
            &"davis",
            &"--out",
            &out,
        ]);
        assert_ok(&o);
        // The generator's own object masks are the ground truth.
        let ious: Vec<f64> = (0..clip.frames)
            .map(|t| foreground_iou(&out.join("clip").join(format!("{t:05}.png")), &clip.mask(t)))
            .collect();
        // --foreground: every object is written as object 1.
        for t in 0..clip.frames {
            let ids = palette_indices(&out.join("clip").join(format!("{t:05}.png")));
            assert!(ids.iter().all(|&i| i <= 1), "frame {t}: ids {ids:?}");
        }
        let worst = ious.iter().cloned().fold(1.0, f64::min);
        assert!(
            worst > 0.85,
            "{propagator} {temporal}: IoU per frame {ious:?}"
        );
    }
}

#[test]
fn demo_writes_masks_json_and_overlays() {
    let Some(models) = models_with_u2netp() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("demo");
    let o = deva(&[
        &"demo",
        &"--frames",
        &"6",
        &"--out",
        &out,
        &"--models-dir",
        &models,
    ]);
    assert_ok(&o);
    let names: Vec<String> = (0..6).map(|t| format!("{t:05}")).collect();
    assert_eq!(stems(&out.join("input"), "jpg"), names);
    assert_eq!(stems(&out.join("Annotations"), "png"), names);
    assert_eq!(stems(&out.join("Visualizations"), "jpg"), names);
    let doc = read_json(&out.join("pred.json"));
    let records = doc["annotations"].as_array().unwrap();
    assert_eq!(records.len(), 6);
    let clip = SyntheticClip::default();
    for (t, r) in records.iter().enumerate() {
        // One object, found where the generator put it.
        let segs = r["segments_info"].as_array().unwrap();
        assert_eq!(segs.len(), 1, "frame {t}: {r}");
        let (w, _, ids) = read_rgb_ids(&out.join(format!("Annotations/{t:05}.png")));
        let mask = clip.mask(t);
        let id = segs[0]["id"].as_u64().unwrap() as u32;
        let inter = ids
            .iter()
            .zip(mask.data())
            .filter(|(&i, &m)| i == id && m)
            .count();
        let union = ids
            .iter()
            .zip(mask.data())
            .filter(|(&i, &m)| i == id || m)
            .count();
        assert!(inter as f64 / union as f64 > 0.85, "frame {t}");
        assert_eq!(w as usize, clip.width);
    }
    let mp4 = out.join("Visualizations.mp4");
    if deva::video::ffmpeg::available() {
        let info = deva::video::ffmpeg::probe(&mp4).unwrap();
        assert_eq!(info.frame_count, Some(6), "{info:?}");
    } else {
        assert!(!mp4.exists());
        assert!(stderr(&o).contains("ffmpeg"), "{}", stderr(&o));
    }
}
