//! `deva track --segmenter entityseg` on a few DAVIS-16 frames with the EntitySeg oracle
//! fixture's (random-weight) model: the BURST JSON it writes, turned into a BURST results
//! file, is read by `deva eval burst`'s reader and scores OWTA 1 against itself.

use super::util::*;

/// Frames `00000` … of a DAVIS-16 clip copied into `dir` (at most `n`).
fn clip(dir: &Path, n: usize) -> Option<PathBuf> {
    let src = common::data("davis16")?.join("JPEGImages/480p/blackswan");
    let dst = dir.join("frames");
    std::fs::create_dir_all(&dst).unwrap();
    for name in stems(&src, "jpg").into_iter().take(n) {
        std::fs::copy(
            src.join(format!("{name}.jpg")),
            dst.join(format!("{name}.jpg")),
        )
        .unwrap();
    }
    Some(dst)
}

/// A BURST results document (`deva eval burst`'s input) from deva's per-video BURST JSON,
/// every track in class 1.
fn burst_results(doc: &Value, width: u64, height: u64) -> Value {
    let mut images = Vec::new();
    let mut segs = Vec::new();
    let mut classes = serde_json::Map::new();
    for f in doc["segmentations"].as_array().unwrap() {
        images.push(f["file_name"].clone());
        let mut tracks = serde_json::Map::new();
        for o in f["segmentations"].as_array().unwrap() {
            let id = o["id"].as_u64().unwrap().to_string();
            tracks.insert(
                id.clone(),
                serde_json::json!({"rle": o["rle"]["counts"], "score": o["score"]}),
            );
            classes.insert(id, Value::from(1));
        }
        segs.push(Value::Object(tracks));
    }
    serde_json::json!({
        "split": "val",
        "sequences": [{
            "id": 1, "width": width, "height": height,
            "dataset": doc["dataset"], "seq_name": doc["seq_name"],
            "annotated_image_paths": images, "track_category_ids": classes,
            "segmentations": segs,
        }]
    })
}

#[test]
fn entityseg_tracks_a_davis_clip_and_writes_burst() {
    let Some(fixture) =
        common::oracle_fixtures("entityseg", "tests/oracle/entityseg/make_fixture.py")
    else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let Some(frames) = clip(tmp.path(), 4) else {
        return;
    };
    // The model input sizes the fixture was made with (its `min_size_test` / `max_size_test`).
    let fx_cfg = read_json(&fixture.join("config.json"));
    let size = |k: &str| {
        fx_cfg[k]
            .as_u64()
            .unwrap_or_else(|| panic!("config.json {k}"))
    };
    let cfg = tmp.path().join("entityseg.toml");
    std::fs::write(
        &cfg,
        format!(
            "[input]\nsize = 240\n\n[segmenter]\nkind = \"entityseg\"\nweights = \"unused.pth\"\n\
             config = {:?}\nscore_threshold = 0.0\ninput_size = {}\nmax_size = {}\n",
            fixture.join("config.json").to_string_lossy(),
            size("min_size_test"),
            size("max_size_test")
        ),
    )
    .unwrap();
    let out = tmp.path().join("out");
    let o = deva(&[
        &"track",
        &frames,
        &"--config",
        &cfg,
        &"--segmenter",
        &"entityseg",
        &"--entityseg-weights",
        &fixture.join("weights.pth"),
        &"--temporal",
        &"semionline",
        &"--detection-every",
        &"2",
        &"--format",
        &"burst",
        &"--video-name",
        &"davis/blackswan",
        &"--out",
        &out,
    ]);
    assert_ok(&o);
    let doc = read_json(&out.join("davis/blackswan/pred.json"));
    let records = doc["segmentations"].as_array().unwrap();
    assert_eq!(records.len(), stems(&frames, "jpg").len());
    let objects: usize = records
        .iter()
        .map(|r| r["segmentations"].as_array().unwrap().len())
        .sum();
    assert!(objects > 0, "no entity was tracked: {doc}");
    // Under the semi-online consensus the first frames of another random-weight set may have
    // no entity (seed 7 of the oracle: frames 0-2 empty, frame 3 has 14), so the size is read
    // from the first frame that has one.
    let first = records
        .iter()
        .find_map(|r| r["segmentations"].as_array().unwrap().first())
        .map(|o| &o["rle"]["size"])
        .unwrap();
    let (h, w) = (first[0].as_u64().unwrap(), first[1].as_u64().unwrap());
    assert_eq!((w, h), (854, 480));

    let results = burst_results(&doc, w, h);
    let gt = tmp.path().join("gt");
    std::fs::create_dir_all(&gt).unwrap();
    let text = serde_json::to_string(&results).unwrap();
    std::fs::write(gt.join("all_classes.json"), &text).unwrap();
    let pred = tmp.path().join("results.json");
    std::fs::write(&pred, &text).unwrap();
    let report = deva::eval::burst::evaluate(&gt, &pred, &|_| {}).unwrap();
    assert!(
        (report.owta.all - 1.0).abs() < 1e-9,
        "self-evaluation OWTA {}",
        report.owta.all
    );

    // Without weights the flag says what it needs.
    let o = deva(&[
        &"track",
        &frames,
        &"--segmenter",
        &"entityseg",
        &"--out",
        &out,
    ]);
    assert_fails_naming(&o, &["--entityseg-weights", "entityseg"]);
}
