//! `deva track --referring`: referring expressions with the fixture ReferFormer (random
//! weights, official key layout), offline (the shipped preset): on a real DAVIS-16 clip, one
//! palette PNG per frame with one object per expression at most; on a still clip of each oracle
//! case's image, the mask the official code selects there, on every frame.

use super::util::*;

const SCRIPT: &str = "tests/oracle/referformer/make_fixture.py";

/// The shipped offline preset with the fixture's small ReferFormer input (to keep the tests
/// short), written into `dir`.
fn offline_config(fx: &Path, dir: &Path) -> PathBuf {
    let preset = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/referring_offline.toml");
    let text = std::fs::read_to_string(&preset).unwrap();
    let fixture_size = read_json(&fx.join("config.json"))["size"].as_u64().unwrap();
    assert!(
        text.contains("\nsize = 360\n"),
        "the preset sets ReferFormer's input size"
    );
    let config = dir.join("referring.toml");
    std::fs::write(
        &config,
        text.replace("\nsize = 360\n", &format!("\nsize = {fixture_size}\n")),
    )
    .unwrap();
    config
}

#[test]
fn referring_expressions_track_a_real_clip_offline() {
    let Some(fx) = common::oracle_fixtures("referformer", SCRIPT) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let frames = dir.path().join("blackswan");
    if davis_frames("blackswan", 4, &frames).is_none() {
        return;
    }
    let config = offline_config(&fx, dir.path());
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
    }
}

/// Each oracle case's image as a still clip (three lossless copies, native resolution) with the
/// case's expression alone, offline: the consensus of identical frames, the key frame's mask and
/// its propagation keep the official `selected_mask` (empty when the best query's mask is) on
/// every frame. A random-weight model may select an empty mask on most frames of a real clip
/// (seed 2 of the oracle: one of four blackswan frames, which the consensus then outvotes), so
/// this is where the object must appear. Flow propagation moves the contour: allowed are the
/// pixels of the one-pixel band on both sides of the official mask's contour
/// ([`contour_band`]) plus 0.1 % of the frame; measured up to 0.49 of the band on the third
/// frame (seeds 0, 1, 2, 3, 7, 12 and 13, inputs 64 to 200; an area bound failed on seed 13's
/// thin 2249-pixel mask, 136 pixels moved).
#[test]
fn referring_offline_keeps_the_official_selected_mask_on_a_still_clip() {
    let Some(fx) = common::oracle_fixtures("referformer", SCRIPT) else {
        return;
    };
    let (tensors, json) = common::safetensors_cases(&fx);
    let meta: Value = serde_json::from_str(&json).unwrap();
    let get = |case: &str, name: &str| {
        tensors
            .get(&format!("{case}.{name}"))
            .unwrap_or_else(|| panic!("cases.safetensors has no {case}.{name}"))
            .flatten_all()
            .unwrap()
            .to_vec1::<u8>()
            .unwrap()
    };
    let dir = tempfile::tempdir().unwrap();
    let config = offline_config(&fx, dir.path());
    let cases = meta["cases"].as_object().expect("cases");
    assert!(!cases.is_empty(), "no cases in the fixture");
    for (case, info) in cases {
        let size = info["original_size"].as_array().unwrap();
        let (h, w) = (size[0].as_u64().unwrap(), size[1].as_u64().unwrap());
        let image = image::RgbImage::from_raw(w as u32, h as u32, get(case, "image")).unwrap();
        let want = get(case, "selected_mask");
        let clip = dir.path().join(case);
        std::fs::create_dir_all(&clip).unwrap();
        for i in 0..3 {
            image.save(clip.join(format!("{i:05}.png"))).unwrap();
        }
        let out = dir.path().join(format!("out-{case}"));
        let o = deva(&[
            &"track",
            &clip,
            &"--referring",
            &info["expression"].as_str().unwrap(),
            &"--referformer-weights",
            &fx.join("weights.pth"),
            &"--config",
            &config,
            &"--propagator",
            &"flow",
            &"--size",
            &"-1",
            &"--out",
            &out,
        ]);
        assert_ok(&o);
        let area = want.iter().filter(|&&v| v != 0).count();
        let allowed = contour_band(&want, w as usize) + want.len() / 1000;
        let masks = out.join(case);
        assert_eq!(stems(&masks, "png").len(), 3, "{case}: one PNG per frame");
        for name in stems(&masks, "png") {
            let (pw, ph, got) = palette_pixels(&masks.join(format!("{name}.png")));
            assert_eq!((pw as u64, ph as u64), (w, h), "{case}/{name}: size");
            assert!(got.iter().all(|&v| v <= 1), "{case}/{name}: ids beyond 1");
            let differ = got
                .iter()
                .zip(&want)
                .filter(|(&g, &m)| (g == 1) != (m != 0))
                .count();
            eprintln!(
                "{case}/{name}: {differ} pixels differ from a mask of {area} (allowed {allowed})"
            );
            assert!(
                differ <= allowed,
                "{case}/{name}: {differ} pixels differ from the official selected mask of \
                 {area} pixels"
            );
        }
    }
}

/// Pixels of `mask` (row-major, `width` wide) with a 4-neighbour of the other value: the
/// one-pixel band on both sides of its contour.
fn contour_band(mask: &[u8], width: usize) -> usize {
    let on = |i: usize| mask[i] != 0;
    (0..mask.len())
        .filter(|&i| {
            let (y, x) = (i / width, i % width);
            let mut n = Vec::with_capacity(4);
            if x > 0 {
                n.push(i - 1);
            }
            if x + 1 < width {
                n.push(i + 1);
            }
            if y > 0 {
                n.push(i - width);
            }
            if i + width < mask.len() {
                n.push(i + width);
            }
            n.into_iter().any(|j| on(j) != on(i))
        })
        .count()
}
