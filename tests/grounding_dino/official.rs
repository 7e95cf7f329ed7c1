//! The official checkpoint layout: the fixture weights renamed to the original key names
//! load strictly and give the same outputs.

use super::*;

/// The fixture weights under the official key names, through the mapping table (fused
/// q/k/v re-concatenated, tied box-head copies added, buffers the port derives included).
fn official_state_dict(fx: &Fixture, config: &GroundingDinoConfig) -> HashMap<String, Tensor> {
    let hf =
        candle_core::safetensors::load(fx.dir.join("model.safetensors"), &Device::Cpu).unwrap();
    let mut out: HashMap<String, Tensor> = HashMap::new();
    let mut parts: HashMap<String, Vec<(usize, Tensor)>> = HashMap::new();
    for (hf_name, src) in official_table(config) {
        let t = hf
            .get(&hf_name)
            .unwrap_or_else(|| panic!("fixture lacks {hf_name}"))
            .clone();
        match src {
            OfficialSource::Rename(n) => {
                out.insert(n, t);
            }
            OfficialSource::Split { name, part, .. } => {
                parts.entry(name).or_default().push((part, t))
            }
        }
    }
    for (name, mut p) in parts {
        p.sort_by_key(|(i, _)| *i);
        let ts: Vec<Tensor> = p.into_iter().map(|(_, t)| t).collect();
        out.insert(name, Tensor::cat(&ts, 0).unwrap());
    }
    for (copy, orig) in official_tied(config) {
        let t = out[&orig].clone();
        out.insert(copy, t);
    }
    let idx = Tensor::zeros((49, 49), DType::I64, &Device::Cpu).unwrap();
    out.insert(
        "backbone.0.layers.0.blocks.0.attn.relative_position_index".into(),
        idx,
    );
    out
}

#[test]
fn official_checkpoint_layout_loads_strictly() {
    let Some(dir) = common::fixtures("grounding_dino") else {
        return;
    };
    let fx = load_fixture(&dir);
    let config = fx.config();
    let official = official_state_dict(&fx, &config);
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("official.safetensors");
    candle_core::safetensors::save(&official, &path).unwrap();
    let model = GroundingDino::load_official(&path, Some(&config), &Device::Cpu)
        .expect("official layout loads");
    let reference = fx.model();
    let case = fx.cases().into_iter().next().unwrap();
    let (a, b) = (fx.run(&model, &case), fx.run(&reference, &case));
    for (name, x, y) in [
        ("logits", &a.logits, &b.logits),
        ("pred_boxes", &a.pred_boxes, &b.pred_boxes),
    ] {
        assert_eq!(
            max_diff(name, x, y),
            0.0,
            "{name}: official and HF layouts differ"
        );
    }
    check_forward(&fx, &case, &a);

    // A missing key is named.
    let missing = "transformer.encoder.fusion_layers.0.gamma_v";
    let mut broken = official.clone();
    broken.remove(missing);
    candle_core::safetensors::save(&broken, &path).unwrap();
    let err = GroundingDino::load_official(&path, Some(&config), &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(missing),
        "error does not name {missing}: {err}"
    );

    // A renamed key is named twice: missing under its name, unexpected under the new one.
    let old = "transformer.decoder.layers.0.catext_norm.weight";
    let mut renamed = official.clone();
    let t = renamed.remove(old).unwrap();
    renamed.insert("transformer.decoder.layers.0.catext_nrm.weight".into(), t);
    candle_core::safetensors::save(&renamed, &path).unwrap();
    let err = GroundingDino::load_official(&path, Some(&config), &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(err.contains(old), "error does not name {old}: {err}");
    let mut extra = official.clone();
    extra.insert(
        "transformer.decoder.layers.0.catext_nrm.weight".into(),
        official[old].clone(),
    );
    candle_core::safetensors::save(&extra, &path).unwrap();
    let err = GroundingDino::load_official(&path, Some(&config), &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("catext_nrm"),
        "error does not name the unexpected key: {err}"
    );

    // A mis-shaped tensor is named with its official name.
    let key = "feat_map.weight";
    let mut bad = official.clone();
    let t = bad[key].clone();
    bad.insert(key.into(), t.narrow(1, 0, t.dim(1).unwrap() - 1).unwrap());
    candle_core::safetensors::save(&bad, &path).unwrap();
    let err = GroundingDino::load_official(&path, Some(&config), &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(key) && err.contains("shape"),
        "error does not name {key}: {err}"
    );
}
