//! `deva track --segmenter mask2former` on DEVA's VIPSeg example with the Mask2Former parity
//! fixture's (random-weight) model: VIPSeg and BURST outputs parse and an object keeps its id
//! through the clip.

use super::util::*;

/// A config with the VIPSeg preset's schedule and a `[segmenter]` section for the fixture.
fn config(dir: &std::path::Path, task: &str, out: &std::path::Path) -> std::path::PathBuf {
    let preset = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/configs/vipseg_online.toml"
    ))
    .unwrap();
    let weights = dir.join("model.safetensors");
    let text = format!(
        "{preset}\n[segmenter]\nkind = \"mask2former\"\nweights = {:?}\ntask = \"{task}\"\n\
         stuff = [6, 7, 8, 9]\nthreshold = 0.5\noverlap_threshold = 0.5\ninput_size = 256\n\
         max_size = 384\n",
        weights.to_string_lossy()
    );
    let path = out.join("m2f.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn mask2former_tracks_vipseg_and_writes_burst() {
    let Some(fixture) = common::fixtures("mask2former") else {
        return;
    };
    let Some((frames, _, video)) = vipseg() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("vipseg");
    let cfg = config(&fixture, "panoptic", tmp.path());
    let o = deva(&[
        &"track",
        &frames,
        &"--config",
        &cfg,
        &"--segmenter",
        &"mask2former",
        &"--temporal",
        &"semionline",
        &"--detection-every",
        &"1",
        &"--format",
        &"vipseg",
        &"--out",
        &out,
    ]);
    assert_ok(&o);
    let maps = check_vipseg_output(&out, &frames, &video);
    // Some object keeps its id through the clip. (The random-weight model's blobs change
    // from frame to frame, so the stricter `check_ids_persist` rule that overlapping masks
    // of consecutive frames share ids is not asserted here.)
    let ids: Vec<std::collections::BTreeSet<u32>> = maps
        .iter()
        .map(|m| m.2.iter().copied().filter(|&v| v != 0).collect())
        .collect();
    let survivors = ids
        .iter()
        .skip(1)
        .fold(ids[0].clone(), |a, b| a.intersection(b).copied().collect());
    assert!(!survivors.is_empty(), "no id survives the clip: {ids:?}");

    let out = tmp.path().join("burst");
    let cfg = config(&fixture, "instance", tmp.path());
    let o = deva(&[
        &"track",
        &frames,
        &"--config",
        &cfg,
        &"--segmenter",
        &"mask2former",
        &"--temporal",
        &"semionline",
        &"--format",
        &"burst",
        &"--video-name",
        &"ds/seq",
        &"--out",
        &out,
    ]);
    assert_ok(&o);
    let doc = read_json(&out.join("ds/seq/pred.json"));
    let records = doc["segmentations"].as_array().unwrap();
    assert_eq!(records.len(), stems(&frames, "jpg").len());
    // The checkpoint's label names are the document's categories (category id = class id).
    let labels = read_json(&fixture.join("config.json"))["id2label"].clone();
    let categories = doc["categories"].as_array().expect("a categories list");
    assert_eq!(categories.len(), labels.as_object().unwrap().len());
    for c in categories {
        assert_eq!(c["name"], labels[c["id"].to_string()], "{c}");
    }

    // Without a [segmenter] section the flag explains what it needs.
    let o = deva(&[
        &"track",
        &frames,
        &"--segmenter",
        &"mask2former",
        &"--out",
        &out,
    ]);
    assert_fails_naming(&o, &["[segmenter]", "mask2former"]);
}
