//! Whole runs: video files in and out, saliency with flow, the demo.

use super::util::*;

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
