//! `deva track --segmenter mask2former` on DEVA's VIPSeg example with the Mask2Former parity
//! fixture's (random-weight) model: VIPSeg and BURST outputs parse, each id is listed once per
//! frame, and overlapping segments of consecutive frames keep their ids.

use super::util::*;

/// A config with the VIPSeg preset's schedule and a `[segmenter]` section for the fixture
/// (its weights in the section, or left to `--m2f-weights`).
fn config(
    dir: &std::path::Path,
    task: &str,
    in_section: bool,
    out: &std::path::Path,
) -> std::path::PathBuf {
    let preset = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/configs/vipseg_online.toml"
    ))
    .unwrap();
    // The preset's schedule; its [segmenter] section (VIPSeg's 124 labels) is replaced.
    let preset = &preset[..preset.find("\n[segmenter]").expect("a [segmenter] section")];
    let weights = match in_section {
        true => format!(
            "weights = {:?}\n",
            dir.join("model.safetensors").to_string_lossy()
        ),
        false => String::new(),
    };
    let text = format!(
        "{preset}\n[segmenter]\nkind = \"mask2former\"\n{weights}task = \"{task}\"\n\
         stuff = [6, 7, 8, 9]\nthreshold = 0.5\noverlap_threshold = 0.5\ninput_size = 256\n\
         max_size = 384\n"
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
    let cfg = config(&fixture, "panoptic", true, tmp.path());
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
    // Where segments of consecutive frames overlap (IoU > 0.5) they keep their id, unless
    // the random-weight model turned the blob's class from stuff into a thing or back (then
    // DEVA starts a new object: matching stays within a kind).
    check_ids_persist_by_kind(&maps, &vipseg_kinds(&out));

    let out = tmp.path().join("burst");
    // Weights from --m2f-weights, the rest from the section.
    let cfg = config(&fixture, "instance", false, tmp.path());
    let o = deva(&[
        &"track",
        &frames,
        &"--config",
        &cfg,
        &"--m2f-weights",
        &fixture.join("model.safetensors"),
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
    // --m2f-weights with another segmenter is refused.
    let o = deva(&[
        &"track",
        &frames,
        &"--segmenter",
        &"saliency:u2netp",
        &"--m2f-weights",
        &fixture.join("model.safetensors"),
        &"--out",
        &out,
    ]);
    assert_fails_naming(&o, &["--m2f-weights", "saliency"]);
}
