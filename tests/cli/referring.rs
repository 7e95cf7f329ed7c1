//! `deva track --referring`: referring expressions with the fixture ReferFormer (random
//! weights, official key layout) on a real DAVIS-16 clip, offline (the shipped preset), one
//! palette PNG per frame with one object per expression at most.

use super::util::*;

#[test]
fn referring_expressions_track_a_real_clip_offline() {
    let Some(fx) =
        common::oracle_fixtures("referformer", "tests/oracle/referformer/make_fixture.py")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let frames = dir.path().join("blackswan");
    if davis_frames("blackswan", 4, &frames).is_none() {
        return;
    }
    // The shipped preset with the fixture's small ReferFormer input, to keep the test short.
    let preset = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/referring_offline.toml");
    let text = std::fs::read_to_string(&preset).unwrap();
    let fixture_size = read_json(&fx.join("config.json"))["size"].as_u64().unwrap();
    assert!(
        text.contains("\nsize = 360\n"),
        "the preset sets ReferFormer's input size"
    );
    let config = dir.path().join("referring.toml");
    std::fs::write(
        &config,
        text.replace("\nsize = 360\n", &format!("\nsize = {fixture_size}\n")),
    )
    .unwrap();
    let out = dir.path().join("out");
    let expressions = [
        "a black swan swimming on the left",
        "the water behind the bird",
    ];
    let o = deva(&[
        &"track",
        &frames,
        &"--referring",
        &expressions[0],
        &"--referring",
        &expressions[1],
        &"--referformer-weights",
        &fx.join("weights.pth"),
        &"--config",
        &config,
        &"--propagator",
        &"flow",
        &"--size",
        &"240",
        &"--out",
        &out,
    ]);
    assert_ok(&o);
    let names = stems(&frames, "jpg");
    let masks = out.join("blackswan");
    assert_eq!(stems(&masks, "png"), names, "one palette PNG per frame");
    let mut seen = BTreeSet::new();
    for name in &names {
        let png = masks.join(format!("{name}.png"));
        let ids = palette_indices(&png);
        let size = image::image_dimensions(&png).unwrap();
        assert_eq!(
            size,
            image::image_dimensions(frames.join(format!("{name}.jpg"))).unwrap()
        );
        assert!(
            ids.iter().all(|&v| (v as usize) <= expressions.len()),
            "{name}: objects {ids:?} beyond the {} expressions",
            expressions.len()
        );
        seen.extend(ids);
    }
    assert!(
        seen.len() > 1,
        "no expression's object was tracked: {seen:?}"
    );
}
