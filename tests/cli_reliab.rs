//! `deva track` when things go wrong: damaged input, bad sizes, an output folder that cannot
//! be written, a missing ffmpeg, interrupts. A run fails before its first frame when the
//! problem can be known then, names incomplete outputs otherwise, and an interrupt exits with
//! 128 + the signal number.

mod common;

use deva::video::synthetic::SyntheticClip;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn deva(args: &[&dyn AsRef<std::ffi::OsStr>]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_deva"));
    c.args(args.iter().map(|a| a.as_ref()));
    c
}

fn run(args: &[&dyn AsRef<std::ffi::OsStr>]) -> Output {
    deva(args).output().expect("run deva")
}

/// A clean failure (exit 1, no panic) whose stderr holds every needle.
fn assert_fails_naming(out: &Output, needles: &[&str]) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {err}");
    assert!(!err.contains("panicked"), "{err}");
    for n in needles {
        assert!(err.contains(n), "stderr should name {n:?}: {err}");
    }
}

/// `n` frames of the generated clip as `ext` files, and a first-frame mask.
fn clip(dir: &Path, n: usize, (width, height): (usize, usize), ext: &str) -> (PathBuf, PathBuf) {
    let clip = SyntheticClip {
        frames: n,
        width,
        height,
    };
    let (frames, masks) = (dir.join("frames"), dir.join("masks"));
    std::fs::create_dir_all(&frames).unwrap();
    std::fs::create_dir_all(&masks).unwrap();
    for t in 0..n {
        clip.image(t)
            .save(frames.join(format!("{t:05}.{ext}")))
            .unwrap();
    }
    let m = clip.mask(0);
    image::GrayImage::from_fn(width as u32, height as u32, |x, y| {
        image::Luma([255 * m.get(x as usize, y as usize) as u8])
    })
    .save(masks.join("00000.png"))
    .unwrap();
    (frames, masks)
}

/// Defect 1: a JPEG cut short was decoded with grey in place of the lost part, exit 0.
#[test]
fn a_truncated_jpeg_frame_fails_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let (frames, masks) = clip(dir.path(), 3, (96, 64), "jpg");
    let f = frames.join("00001.jpg");
    let bytes = std::fs::read(&f).unwrap();
    std::fs::write(&f, &bytes[..bytes.len() / 2]).unwrap();
    let out = dir.path().join("out");
    let o = run(&[
        &"track",
        &frames,
        &"--init-masks",
        &masks,
        &"--propagator",
        &"flow",
        &"--out",
        &out,
    ]);
    assert_fails_naming(&o, &["00001.jpg", "truncated"]);
}

/// Defect 6: 0, negative and tiny sizes silently meant native or gave empty masks.
#[test]
fn sizes_out_of_range_are_refused_with_the_range() {
    let dir = tempfile::tempdir().unwrap();
    let (frames, masks) = clip(dir.path(), 2, (64, 48), "png");
    let out = dir.path().join("out");
    for size in ["0", "-5", "4", "100000"] {
        let o = run(&[
            &"track",
            &frames,
            &"--init-masks",
            &masks,
            &"--size",
            &size,
            &"--out",
            &out,
        ]);
        assert_fails_naming(&o, &[size, "-1", "16 to 8192"]);
    }
    let config = dir.path().join("c.toml");
    std::fs::write(&config, "[input]\nsize = 0\n").unwrap();
    let o = run(&[
        &"track",
        &frames,
        &"--init-masks",
        &masks,
        &"--config",
        &config,
        &"--out",
        &out,
    ]);
    assert_fails_naming(&o, &["input.size", "16 to 8192"]);
    assert!(!out.exists());
}

/// Defect 5: problems that can be known before the first frame stop the run there, with
/// nothing written.
#[test]
fn problems_known_in_advance_fail_before_the_first_frame() {
    let dir = tempfile::tempdir().unwrap();
    let (frames, masks) = clip(dir.path(), 3, (64, 48), "png");
    let track = |out: &PathBuf, extra: &[&dyn AsRef<std::ffi::OsStr>]| {
        let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![
            &"track",
            &frames,
            &"--init-masks",
            &masks,
            &"--propagator",
            &"flow",
            &"--out",
            out,
        ];
        args.extend_from_slice(extra);
        run(&args)
    };
    // --out is a file.
    let file = dir.path().join("taken");
    std::fs::write(&file, b"x").unwrap();
    assert_fails_naming(&track(&file, &[]), &["taken", "is a file"]);

    // A frame of another size, last in the folder.
    let out = dir.path().join("out");
    image::RgbImage::new(60, 48)
        .save(frames.join("00003.png"))
        .unwrap();
    assert_fails_naming(&track(&out, &[]), &["00003.png", "60x48", "64x48"]);
    assert!(!out.exists(), "nothing is written before the check");
    std::fs::remove_file(frames.join("00003.png")).unwrap();

    // A mask of another size on a later frame.
    image::GrayImage::new(64, 40)
        .save(masks.join("00002.png"))
        .unwrap();
    assert_fails_naming(&track(&out, &[]), &["00002.png", "64x40", "64x48"]);
    assert!(!out.exists());
    std::fs::remove_file(masks.join("00002.png")).unwrap();

    // --overlay-video without ffmpeg on PATH.
    let empty = dir.path().join("no-tools");
    std::fs::create_dir_all(&empty).unwrap();
    let o = deva(&[
        &"track",
        &frames,
        &"--init-masks",
        &masks,
        &"--propagator",
        &"flow",
        &"--overlay-video",
        &"--out",
        &out,
    ])
    .env("PATH", &empty)
    .output()
    .unwrap();
    assert_fails_naming(&o, &["ffmpeg", "overlay video"]);
    assert!(!out.exists());
}

/// Defect 5 (real data): the Cutie judo mask `00005.png` is one pixel narrower than its
/// frame; the run used to write frames 0-4 before failing.
#[test]
fn a_mask_of_another_size_in_real_data_leaves_no_partial_output() {
    let Some(judo) = common::data("cutie-judo") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let o = run(&[
        &"track",
        &judo.join("images/judo"),
        &"--init-masks",
        &judo.join("masks/judo"),
        &"--out",
        &dir.path(),
    ]);
    assert_fails_naming(&o, &["00005.png"]);
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

/// Defect 4: Ctrl-C exited 0 and SIGTERM left `.Visualizations.mp4.*.tmp`. Each signal stops
/// the run cleanly: exit 128 + signal, the partial overlay video completed, no temporaries.
#[test]
fn interrupts_exit_130_and_143_and_leave_no_temporaries() {
    let video = deva::video::ffmpeg::available();
    let dir = tempfile::tempdir().unwrap();
    let (frames, masks) = clip(dir.path(), 400, (320, 180), "png");
    for (signal, code) in [("INT", 130), ("TERM", 143)] {
        let out = dir.path().join(format!("out-{signal}"));
        let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![
            &"track",
            &frames,
            &"--init-masks",
            &masks,
            &"--propagator",
            &"flow",
            &"--size",
            &"-1",
            &"--format",
            &"demo",
            &"--out",
            &out,
        ];
        if video {
            args.push(&"--overlay-video");
        }
        let child = deva(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Wait until a few frames are written, then signal.
        let masks_dir = out.join("Annotations");
        let start = std::time::Instant::now();
        while std::fs::read_dir(&masks_dir).map_or(0, |d| d.count()) < 3 {
            assert!(start.elapsed().as_secs() < 120, "no output after 120 s");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let kill = Command::new("kill")
            .args([format!("-{signal}"), child.id().to_string()])
            .status()
            .unwrap();
        assert!(kill.success());
        let o = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(code), "{err}");
        assert!(
            err.contains(&format!("interrupted by SIG{signal}")),
            "{err}"
        );
        let written = std::fs::read_dir(&masks_dir).unwrap().count();
        assert!(written < 400, "the run finished before the signal");
        let doc: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join("pred.json")).unwrap()).unwrap();
        assert_eq!(doc["annotations"].as_array().unwrap().len(), written);
        let leftovers: Vec<String> = std::fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
        if video {
            assert!(out.join("Visualizations.mp4").is_file());
        }
    }
}

/// Defect 8: `--init-box` with a negative or fractional number said "invalid digit found in
/// string" (or clap took the negative number for a flag).
#[test]
fn init_box_numbers_get_clear_messages() {
    let dir = tempfile::tempdir().unwrap();
    let (frames, _) = clip(dir.path(), 1, (64, 48), "png");
    let weights = dir.path().join("sam.pth");
    std::fs::write(&weights, b"not read before the boxes are").unwrap();
    for (boxes, says) in [
        ("-5,2,3,4", "-5 is negative"),
        ("1.5,2,3,4", "1.5 is not a whole number"),
    ] {
        let o = run(&[
            &"track",
            &frames,
            &"--init-box",
            &boxes,
            &"--sam-weights",
            &weights,
            &"--out",
            &dir.path().join("out"),
        ]);
        assert_fails_naming(&o, &["--init-box", says]);
    }
}

/// Runs `ffmpeg -v error -y ARGS`, which must succeed.
fn ffmpeg(args: &[&dyn AsRef<std::ffi::OsStr>]) {
    let o = Command::new("ffmpeg")
        .args(["-v", "error", "-y"])
        .args(args.iter().map(|a| a.as_ref()))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// Encodes the PNG frames of `frames` at 10 fps into the mp4 `video` (one keyframe).
fn encode(frames: &Path, video: &Path, extra: &[&str]) {
    use std::ffi::{OsStr, OsString};
    let mut args: Vec<OsString> = ["-framerate", "10", "-i"].map(OsString::from).into();
    args.push(frames.join("%05d.png").into());
    args.extend(["-pix_fmt", "yuv420p", "-g", "100"].map(OsString::from));
    args.extend(extra.iter().map(OsString::from));
    args.push(video.into());
    ffmpeg(
        &args
            .iter()
            .map(|a| a as &dyn AsRef<OsStr>)
            .collect::<Vec<_>>(),
    );
}

/// `deva track VIDEO --init-masks MASKS --propagator flow --out OUT`.
fn track_video(video: &Path, masks: &Path, out: &Path) -> Output {
    run(&[
        &"track",
        &video,
        &"--init-masks",
        &masks,
        &"--propagator",
        &"flow",
        &"--out",
        &out,
    ])
}

/// Whether ffmpeg is there; prints that the test is skipped when not.
fn ffmpeg_available() -> bool {
    let ok = deva::video::ffmpeg::available();
    if !ok {
        eprintln!(
            "skipped: ffmpeg/ffprobe not found ({})",
            deva::video::ffmpeg::INSTALL_HINT
        );
    }
    ok
}

/// Defect 2: a video that decodes cleanly but gives fewer frames than its container declares
/// (here an mp4 whose edit list starts a second in, so that 20 stored frames play as about
/// 10) is tracked with a warning naming the file and both counts.
#[test]
fn a_video_shorter_than_declared_is_tracked_with_a_warning() {
    if !ffmpeg_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (frames, masks) = clip(dir.path(), 20, (64, 48), "png");
    let (full, cut) = (dir.path().join("full.mp4"), dir.path().join("cut.mp4"));
    encode(&frames, &full, &[]);
    ffmpeg(&[&"-ss", &"1.05", &"-i", &full, &"-c", &"copy", &cut]);
    let out = dir.path().join("out");
    let o = track_video(&cut, &masks, &out);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    let written = walk_pngs(&out);
    assert!((1..20).contains(&written), "{written} masks written");
    assert!(
        err.contains(&format!(
            "cut.mp4: decoded {written} frames but the container declares 20"
        )),
        "{err}"
    );
}

/// Defects 2 and 5: a `+faststart` mp4 cut short fails once decoding fails, and the error
/// says which outputs are incomplete (the masks written so far, no `pred.json`).
#[test]
fn a_truncated_video_fails_naming_the_incomplete_outputs() {
    if !ffmpeg_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (frames, masks) = clip(dir.path(), 60, (64, 48), "png");
    let cut = dir.path().join("cut.mp4");
    encode(&frames, &cut, &["-movflags", "+faststart"]);
    let bytes = std::fs::read(&cut).unwrap();
    std::fs::write(&cut, &bytes[..bytes.len() * 4 / 5]).unwrap();
    let out = dir.path().join("out");
    let o = track_video(&cut, &masks, &out);
    let written = walk_pngs(&out);
    assert!((1..60).contains(&written), "{written} masks written");
    assert_fails_naming(
        &o,
        &[
            "the outputs are incomplete",
            &format!("masks of the first {written} frames"),
            "cut.mp4",
            "decoding failed",
        ],
    );
    assert!(!out.join("pred.json").exists());
}

/// The number of PNG files under `dir` (recursively).
fn walk_pngs(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|d| {
            d.map(|e| e.unwrap().path())
                .map(|p| match p.is_dir() {
                    true => walk_pngs(&p),
                    false => usize::from(p.extension().is_some_and(|e| e == "png")),
                })
                .sum()
        })
        .unwrap_or(0)
}
