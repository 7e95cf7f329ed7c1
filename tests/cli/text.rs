//! `deva track --prompt`: DEVA's text mode (Grounding-DINO boxes, SAM masks) on a real clip,
//! with the fixture Grounding-DINO and the fixture SAM.

use super::util::*;

/// The first `n` frames of a DAVIS-2016 sequence copied to `dst`.
fn davis_frames(seq: &str, n: usize, dst: &Path) -> Option<()> {
    let src = common::data("davis16")?.join("JPEGImages/480p").join(seq);
    std::fs::create_dir_all(dst).unwrap();
    for name in stems(&src, "jpg").iter().take(n) {
        let f = format!("{name}.jpg");
        std::fs::copy(src.join(&f), dst.join(&f)).unwrap();
    }
    Some(())
}

#[test]
fn text_prompt_tracks_a_real_clip_with_phrase_categories() {
    let (Some(gdino), Some(sam)) = (common::fixtures("grounding_dino"), common::fixtures("sam"))
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let frames = dir.path().join("dog");
    if davis_frames("dog", 4, &frames).is_none() {
        return;
    }
    let out = dir.path().join("out");
    // The shipped preset with a smaller detector input, to keep the test short.
    let preset = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/text.toml");
    let text = std::fs::read_to_string(&preset).unwrap();
    assert!(text.contains("shortest_edge = 800") && text.contains("longest_edge = 1333"));
    let config = dir.path().join("text.toml");
    let small = text
        .replace("shortest_edge = 800", "shortest_edge = 240")
        .replace("longest_edge = 1333", "longest_edge = 427");
    std::fs::write(&config, small).unwrap();
    let phrases = ["dog", "green grass", "person"];
    let o = deva(&[
        &"track",
        &frames,
        &"--prompt",
        &phrases.join("."),
        &"--gdino-weights",
        &gdino.join("model.safetensors"),
        &"--sam-weights",
        &sam.join("weights.pth"),
        &"--config",
        &config,
        &"--propagator",
        &"flow",
        &"--detection-every",
        &"2",
        &"--size",
        &"240",
        &"--overlay",
        &"--out",
        &out,
    ]);
    assert_ok(&o);
    let names = stems(&frames, "jpg");
    assert_eq!(stems(&out.join("Annotations"), "png"), names);
    assert_eq!(stems(&out.join("Visualizations"), "jpg"), names);
    let doc = read_json(&out.join("pred.json"));
    // The prompt's phrases are the categories, phrase i with id i + 1.
    let categories: Vec<(u64, &str)> = doc["categories"]
        .as_array()
        .expect("a categories list")
        .iter()
        .map(|c| (c["id"].as_u64().unwrap(), c["name"].as_str().unwrap()))
        .collect();
    let expected: Vec<(u64, &str)> = (1..).zip(phrases).collect();
    assert_eq!(categories, expected);
    let records = doc["annotations"].as_array().unwrap();
    assert_eq!(records.len(), names.len());
    let mut segments = 0;
    for (name, r) in names.iter().zip(records) {
        let (_, _, ids) = read_rgb_ids(&out.join("Annotations").join(format!("{name}.png")));
        let px = areas(&ids);
        for s in r["segments_info"].as_array().unwrap() {
            let c = s["category_id"]
                .as_u64()
                .expect("every object has its phrase's category");
            assert!(
                (1..=phrases.len() as u64).contains(&c),
                "{name}: category {c}"
            );
            let id = s["id"].as_u64().unwrap() as u32;
            assert_eq!(
                s["area"].as_u64().unwrap() as usize,
                px[&id],
                "{name}: area of {id}"
            );
            segments += 1;
        }
    }
    assert!(segments > 0, "no object was tracked");
}
