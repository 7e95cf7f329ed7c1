//! Every segmenter and propagator builds from a config file's `[segmenter]` / `[propagator]`
//! section alone (no flags), and a bad section is an error that names the field.

mod common;

use candle_core::Device;
use deva::mask::IdMap;
use deva::nn::synthetic;
use deva::{propagator, segmenter, Config, ModelStore};
use std::path::Path;

/// Reads `toml` as a config file in `dir`.
fn config(dir: &Path, toml: &str) -> deva::Result<Config> {
    let path = dir.join("c.toml");
    std::fs::write(&path, toml).unwrap();
    Config::from_toml_file(&path)
}

/// A DEVA checkpoint with the fixture's layout and formula weights, as safetensors.
fn deva_checkpoint(fixtures: &Path, path: &Path) {
    let (seed, layout) = common::deva::fixture_layout(&fixtures.join("deva_net"));
    let sd = synthetic::state_dict(&layout, seed).unwrap();
    let tensors: std::collections::HashMap<String, candle_core::Tensor> = sd
        .iter()
        .map(|(k, t)| (k.to_string(), t.to_tensor(&Device::Cpu).unwrap()))
        .collect();
    candle_core::safetensors::save(&tensors, path).unwrap();
}

#[test]
fn every_segmenter_and_propagator_builds_from_its_section() {
    let Some(fixtures) = common::fixtures("") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // A models folder holding U²-Netp, and folders of masks.
    let models = d.join("models");
    std::fs::create_dir(&models).unwrap();
    std::fs::copy(
        fixtures.join("saliency/u2netp.onnx"),
        models.join("u2netp.onnx"),
    )
    .unwrap();
    let store = ModelStore::new(&models).unwrap();
    let masks = d.join("masks");
    std::fs::create_dir(&masks).unwrap();
    let map = IdMap::from_vec(4, 2, vec![0, 1, 1, 0, 0, 2, 2, 0]).unwrap();
    deva::imageio::write_palette_png(
        &masks.join("00000.png"),
        &map,
        &deva::imageio::davis_palette(),
    )
    .unwrap();
    let sam = fixtures.join("sam/weights.pth");
    let deva_weights = d.join("deva.safetensors");
    deva_checkpoint(&fixtures, &deva_weights);

    let masks = masks.display();
    let sam = sam.display();
    let segmenters = [
        (format!("kind = \"detections\"\ndir = \"{masks}\""), "detections"),
        (format!("kind = \"masks\"\ndir = \"{masks}\""), "masks"),
        ("kind = \"saliency\"\nmodel = \"u2netp\"".into(), "u2netp"),
        (
            format!("kind = \"sam_boxes\"\nweights = \"{sam}\"\nboxes = [{{ x = 1, y = 0, w = 2, h = 2 }}]"),
            "sam-prompt",
        ),
        (
            format!("kind = \"sam_auto\"\nweights = \"{sam}\"\npoints_per_side = 4"),
            "sam-auto",
        ),
        ("kind = \"prompts\"".into(), "prompts"),
        (
            format!(
                "kind = \"mask2former\"\nweights = \"{}\"\nstuff = [6, 7, 8, 9]",
                fixtures.join("mask2former/model.safetensors").display()
            ),
            "mask2former",
        ),
    ];
    for (section, name) in segmenters {
        let c = config(d, &format!("[segmenter]\n{section}\n")).unwrap();
        let spec = c.segmenter.expect("a [segmenter] section");
        let s = segmenter::build(&spec, &store, &Device::Cpu).unwrap();
        assert_eq!(s.name(), name, "{section}");
    }
    let propagators = [
        ("kind = \"flow\"\npatch_size = 12".to_string(), Some("flow")),
        (
            format!(
                "kind = \"deva\"\nweights = \"{}\"\n[propagator.memory]\ntop_k = 20",
                deva_weights.display()
            ),
            Some("deva"),
        ),
        ("kind = \"static\"".into(), Some("static")),
        ("kind = \"none\"".into(), None),
    ];
    for (section, name) in propagators {
        let c = config(d, &format!("[propagator]\n{section}\n")).unwrap();
        let p = propagator::build(&c.propagator, &store, &Device::Cpu).unwrap();
        assert_eq!(p.as_ref().map(|p| p.name()), name, "{section}");
    }
}

#[test]
fn bad_sections_name_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cases = [
        (
            "[segmenter]\nkind = \"saliency\"\ntreshold = 0.5\n",
            "treshold",
        ),
        (
            "[segmenter]\nkind = \"saliency\"\nmodel = \"u3net\"\n",
            "u3net",
        ),
        ("[segmenter]\nkind = \"grounded\"\n", "grounded"),
        ("[segmenter]\nkind = \"detections\"\n", "dir"),
        (
            "[segmenter]\nkind = \"sam_auto\"\npoints_per_side = \"many\"\n",
            "many",
        ),
        (
            "[segmenter]\nkind = \"saliency\"\nthreshold = 1.5\n",
            "saliency.threshold",
        ),
        (
            "[propagator]\nkind = \"flow\"\npatch_size = 1\n",
            "flow.patch_size",
        ),
        (
            "[propagator]\nkind = \"deva\"\n[propagator.memory]\ntop_kk = 3\n",
            "top_kk",
        ),
        ("[propagator]\nkind = \"warp\"\n", "warp"),
    ];
    for (toml, field) in cases {
        let e = config(d, toml).unwrap_err().to_string();
        assert!(e.contains(field) && e.contains("c.toml"), "{toml}: {e}");
    }
}

#[test]
fn a_segmenter_of_given_masks_needs_the_vos_schedule() {
    let dir = tempfile::tempdir().unwrap();
    let c = config(
        dir.path(),
        "[segmenter]\nkind = \"prompts\"\n[tracker]\ntemporal = \"semionline\"\n",
    )
    .unwrap();
    let store = ModelStore::new(dir.path()).unwrap();
    let s = segmenter::build(c.segmenter.as_ref().unwrap(), &store, &Device::Cpu).unwrap();
    let p = propagator::build(&c.propagator, &store, &Device::Cpu).unwrap();
    let e = deva::Tracker::new(&c, s, p).err().unwrap().to_string();
    assert!(e.contains("vos") && e.contains("semionline"), "{e}");
}
