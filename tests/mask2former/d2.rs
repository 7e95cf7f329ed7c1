//! The detectron2 `.pkl` path: the fixture weights written as a detectron2 pickle (by a small
//! Rust pickle writer, so no Python is needed) load into the same model, with or without a
//! `config.json` (sizes read from the tensors); bad layouts and code-calling pickles are
//! refused, naming the key.

use super::common::npy_pickle::{self, Obj};
use super::{check_decoder, load, Fixture};
use candle_core::{Device, Tensor};
use deva::segmenter::mask2former::{
    infer_config, read_detectron2, BackboneConfig, Mask2Former, Mask2FormerConfig, Mask2FormerSpec,
};
use deva::segmenter::ImageSegmenter;
use deva::ModelStore;
use std::collections::BTreeMap;
use std::path::Path;

/// The detectron2 name of a ResNet backbone key (`embedder.embedder.*`,
/// `encoder.stages.S.layers.L.*` under the encoder prefix): detectron2's `stem.conv1`,
/// `res{S+2}.L.conv{K+1}` and `shortcut`, with `norm` for the (frozen) BatchNorm, which has
/// no step counter. `None` for other keys.
fn detectron2_resnet_name(r: &str) -> Option<Option<(String, Option<usize>)>> {
    let norm = |p: &str| match p.strip_prefix("normalization.") {
        Some("num_batches_tracked") => None,
        Some(n) => Some(format!("norm.{n}")),
        None => Some(p.strip_prefix("convolution.").unwrap().to_string()),
    };
    if let Some(p) = r.strip_prefix("embedder.embedder.") {
        return Some(norm(p).map(|p| (format!("backbone.stem.conv1.{p}"), None)));
    }
    let r = r.strip_prefix("encoder.stages.")?;
    let (stage, r) = r.split_once(".layers.").unwrap();
    let (layer, r) = r.split_once('.').unwrap();
    let stage: usize = stage.parse().unwrap();
    let (module, p) = match r.strip_prefix("layer.") {
        Some(r) => {
            let (k, p) = r.split_once('.').unwrap();
            (format!("conv{}", k.parse::<usize>().unwrap() + 1), p)
        }
        None => ("shortcut".to_string(), r.strip_prefix("shortcut.").unwrap()),
    };
    Some(norm(p).map(|p| {
        (
            format!("backbone.res{}.{layer}.{module}.{p}", stage + 2),
            None,
        )
    }))
}

/// The detectron2 name of a Hugging Face key of the fixture model, written from the original
/// Mask2Former module names (`D2SwinTransformer` or detectron2's ResNet,
/// `MSDeformAttnPixelDecoder`, `MultiScaleMaskedTransformerDecoder`); `None` for keys
/// detectron2 does not have. Fused projections come back as `(name, part)` with part 0..3 for
/// q, k, v.
fn detectron2_name(k: &str) -> Option<(String, Option<usize>)> {
    let sub = |s: &str, rules: &[(&str, &str)]| -> String {
        rules
            .iter()
            .fold(s.to_string(), |acc, (a, b)| acc.replace(a, b))
    };
    if k.contains("swin.layernorm") {
        return None;
    }
    if let Some(r) = k.strip_prefix("model.pixel_level_module.encoder.") {
        if let Some(name) = detectron2_resnet_name(r) {
            return name;
        }
        if let Some(r) = r.strip_prefix("hidden_states_norms.stage") {
            let (n, p) = r.split_once('.').unwrap();
            let n: usize = n.parse().unwrap();
            return Some((format!("backbone.norm{}.{p}", n - 1), None));
        }
        for (i, qkv) in ["query", "key", "value"].iter().enumerate() {
            let pat = format!(".attention.self.{qkv}.");
            if r.contains(&pat) {
                let n = sub(r, &[(&pat, ".attn.qkv."), ("encoder.layers.", "layers.")]);
                return Some((format!("backbone.{n}"), Some(i)));
            }
        }
        let n = sub(
            r,
            &[
                (
                    "embeddings.patch_embeddings.projection.",
                    "patch_embed.proj.",
                ),
                ("embeddings.norm.", "patch_embed.norm."),
                ("encoder.layers.", "layers."),
                (".layernorm_before.", ".norm1."),
                (".layernorm_after.", ".norm2."),
                (
                    ".attention.self.relative_position_bias_table",
                    ".attn.relative_position_bias_table",
                ),
                (".attention.output.dense.", ".attn.proj."),
                (".intermediate.dense.", ".mlp.fc1."),
                (".output.dense.", ".mlp.fc2."),
            ],
        );
        return Some((format!("backbone.{n}"), None));
    }
    if let Some(r) = k.strip_prefix("model.pixel_level_module.decoder.") {
        let n = if r == "level_embed" {
            "transformer.level_embed".to_string()
        } else if let Some(e) = r.strip_prefix("encoder.") {
            format!(
                "transformer.encoder.{}",
                sub(
                    e,
                    &[
                        ("self_attn_layer_norm.", "norm1."),
                        ("final_layer_norm.", "norm2."),
                        ("fc1.", "linear1."),
                        ("fc2.", "linear2."),
                    ]
                )
            )
        } else {
            sub(
                r,
                &[
                    ("input_projections.", "input_proj."),
                    ("mask_projection.", "mask_features."),
                    ("adapter_1.0.", "adapter_1."),
                    ("adapter_1.1.", "adapter_1.norm."),
                    ("layer_1.0.", "layer_1."),
                    ("layer_1.1.", "layer_1.norm."),
                ],
            )
        };
        return Some((format!("sem_seg_head.pixel_decoder.{n}"), None));
    }
    let p = "sem_seg_head.predictor";
    if let Some(r) = k.strip_prefix("model.transformer_module.decoder.layers.") {
        let (i, t) = r.split_once('.').unwrap();
        for (j, x) in ["q", "k", "v"].iter().enumerate() {
            if let Some(param) = t.strip_prefix(&format!("self_attn.{x}_proj.")) {
                let n =
                    format!("{p}.transformer_self_attention_layers.{i}.self_attn.in_proj_{param}");
                return Some((n, Some(j)));
            }
        }
        let (group, rest) = if let Some(x) = t.strip_prefix("self_attn_layer_norm.") {
            ("self_attention", format!("norm.{x}"))
        } else if t.starts_with("self_attn.") {
            ("self_attention", t.to_string())
        } else if let Some(x) = t.strip_prefix("cross_attn_layer_norm.") {
            ("cross_attention", format!("norm.{x}"))
        } else if let Some(x) = t.strip_prefix("cross_attn.") {
            ("cross_attention", format!("multihead_attn.{x}"))
        } else {
            let x = sub(
                t,
                &[
                    ("fc1.", "linear1."),
                    ("fc2.", "linear2."),
                    ("final_layer_norm.", "norm."),
                ],
            );
            ("ffn", x)
        };
        return Some((format!("{p}.transformer_{group}_layers.{i}.{rest}"), None));
    }
    if let Some(r) = k.strip_prefix("model.transformer_module.") {
        let n = sub(
            r,
            &[
                ("decoder.layernorm.", "decoder_norm."),
                (
                    "decoder.mask_predictor.mask_embedder.",
                    "mask_embed.layers.",
                ),
                ("queries_features.", "query_feat."),
                ("queries_embedder.", "query_embed."),
            ],
        )
        .replace(".0.weight", ".weight")
        .replace(".0.bias", ".bias");
        return Some((format!("{p}.{n}"), None));
    }
    if let Some(r) = k.strip_prefix("class_predictor.") {
        return Some((format!("{p}.class_embed.{r}"), None));
    }
    Some((k.to_string(), None))
}

/// The fixture weights under detectron2 names, fused projections joined (q, k, v rows), with
/// detectron2's `pixel_mean` buffer.
fn detectron2_items(fx: &Fixture) -> Vec<(String, Obj)> {
    let weights =
        candle_core::safetensors::load(fx.dir.join("model.safetensors"), &Device::Cpu).unwrap();
    let mut names: Vec<&String> = weights.keys().collect();
    names.sort();
    let mut fused: BTreeMap<String, Vec<Option<Tensor>>> = BTreeMap::new();
    let mut items: Vec<(String, Obj)> = Vec::new();
    let array = |t: &Tensor| {
        let v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        Obj::Array(t.dims().to_vec(), v)
    };
    for k in names {
        let Some((name, part)) = detectron2_name(k) else {
            continue;
        };
        match part {
            None => items.push((name, array(&weights[k]))),
            Some(i) => {
                fused.entry(name).or_insert_with(|| vec![None; 3])[i] = Some(weights[k].clone())
            }
        }
    }
    for (name, parts) in fused {
        let parts: Vec<Tensor> = parts.into_iter().map(|p| p.expect("q, k and v")).collect();
        items.push((name, array(&Tensor::cat(&parts, 0).unwrap())));
    }
    let mean = Obj::Array(vec![3, 1, 1], vec![123.675, 116.28, 103.53]);
    items.push(("pixel_mean".into(), mean));
    items
}

/// `items` as a detectron2 `model_final_*.pkl`: `{"model": {...}, "__author__": ...}`,
/// protocol 2, numpy arrays (see tests/make_mask2former_d2_pkl.py for the same file made
/// with Python).
fn d2_pickle(items: Vec<(String, Obj)>) -> Vec<u8> {
    npy_pickle::dumps(&Obj::Dict(vec![
        ("model".into(), Obj::Dict(items)),
        ("__author__".into(), Obj::Str("deva test".into())),
    ]))
}

/// The fixture weights as a detectron2 `model_final_*.pkl`.
fn detectron2_pickle(fx: &Fixture) -> Vec<u8> {
    d2_pickle(detectron2_items(fx))
}

#[test]
fn detectron2_pkl_loads_into_the_same_model() {
    let Some(dir) = super::common::fixtures("mask2former") else {
        return;
    };
    let fx = load(&dir);
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("model_final_test.pkl");
    std::fs::write(&path, detectron2_pickle(&fx)).unwrap();
    let m = Mask2Former::load(&path, &fx.config, &Device::Cpu).expect("detectron2 pkl");
    for case in fx.case_names() {
        let key = |n: &str| format!("{case}.{n}");
        let out = m.forward(fx.get(&key("pixel_values"))).unwrap();
        check_decoder(&fx, &case, &out.decoder);
    }
    // The same file written by Python's pickle (tests/make_mask2former_d2_pkl.py), if given.
    if let Some(py) = std::env::var_os("DEVA_M2F_D2_PKL") {
        let m = Mask2Former::load(Path::new(&py), &fx.config, &Device::Cpu).expect("python pkl");
        for case in fx.case_names() {
            let out = m.forward(fx.get(&format!("{case}.pixel_values"))).unwrap();
            check_decoder(&fx, &case, &out.decoder);
        }
    }
    // A key the mapping does not know is refused, naming it.
    let mut bytes = detectron2_pickle(&fx);
    let at = bytes.windows(10).position(|w| w == b"query_feat").unwrap();
    bytes[at..at + 10].copy_from_slice(b"query_fea7");
    std::fs::write(&path, &bytes).unwrap();
    let e = Mask2Former::load(&path, &fx.config, &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(e.contains("query_fea7"), "{e}");
}

/// Writes the fixture's classes as a categories file (stuff = the stored fused label ids).
fn write_labels(fx: &Fixture, stuff: &[usize], path: &Path) {
    let cats: Vec<serde_json::Value> = fx
        .config
        .id2label
        .iter()
        .enumerate()
        .map(|(i, n)| serde_json::json!({"id": i + 100, "name": n, "isthing": u8::from(!stuff.contains(&i))}))
        .collect();
    std::fs::write(path, serde_json::to_string(&cats).unwrap()).unwrap();
}

#[test]
fn detectron2_pkl_without_config_json_gets_its_sizes_from_the_tensors() {
    let Some(dir) = super::common::fixtures("mask2former") else {
        return;
    };
    let fx = load(&dir);
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("model_final_test.pkl");
    std::fs::write(&path, detectron2_pickle(&fx)).unwrap();
    let got = infer_config(&read_detectron2(&path).unwrap(), &fx.config.id2label).unwrap();
    let want = &fx.config;
    match (&got.backbone, &want.backbone) {
        (BackboneConfig::Swin(a), BackboneConfig::Swin(b)) => assert_eq!(
            (
                a.embed_dim,
                &a.depths,
                &a.num_heads,
                a.window_size,
                a.patch_size
            ),
            (
                b.embed_dim,
                &b.depths,
                &b.num_heads,
                b.window_size,
                b.patch_size
            )
        ),
        (BackboneConfig::ResNet(a), BackboneConfig::ResNet(b)) => assert_eq!(a, b),
        (a, b) => panic!("backbone {a:?}, expected {b:?}"),
    }
    let sizes = |c: &Mask2FormerConfig| {
        [
            c.feature_size,
            c.mask_feature_size,
            c.hidden_dim,
            c.encoder_layers,
            c.encoder_feedforward_dim,
            c.decoder_layers,
            c.dim_feedforward,
            c.num_attention_heads,
            c.num_queries,
            c.num_labels(),
            usize::from(c.enforce_input_projection),
            usize::from(c.pre_norm),
        ]
    };
    assert_eq!(sizes(&got), sizes(want));

    // Through the spec, with a label file and no config.json beside the weights: the same
    // network, the file's category ids and kinds.
    let stuff: Vec<usize> =
        super::i64s(fx.get(&format!("{}.label_ids_to_fuse", fx.case_names()[0])))
            .into_iter()
            .map(|v| v as usize)
            .collect();
    let labels = tmp.path().join("cats.json");
    write_labels(&fx, &stuff, &labels);
    let store = ModelStore::new(tmp.path().join("models")).unwrap();
    let spec = Mask2FormerSpec {
        weights: Some(path.clone()),
        labels: Some(labels.to_string_lossy().into_owned()),
        ..Default::default()
    };
    let seg = spec
        .build(&store, &Device::Cpu)
        .expect("pkl without config.json");
    for case in fx.case_names() {
        let out = seg
            .model()
            .forward(fx.get(&format!("{case}.pixel_values")))
            .unwrap();
        check_decoder(&fx, &case, &out.decoder);
    }
    assert_eq!(seg.labels().stuff_ids(), stuff);
    let names = ImageSegmenter::category_names(&seg);
    assert_eq!(names[&100], fx.config.id2label[0]);
    // A label set of another size is refused, naming both counts.
    let vipseg = Mask2FormerSpec {
        labels: Some("vipseg".into()),
        ..spec.clone()
    };
    let e = vipseg.build(&store, &Device::Cpu).unwrap_err().to_string();
    let n = fx.config.num_labels().to_string();
    assert!(e.contains("124") && e.contains(&n), "{e}");

    // Inconsistent layouts are errors naming the key: a missing tensor, and a block whose
    // window differs from the others'.
    let items: Vec<(String, Obj)> = detectron2_items(&fx)
        .into_iter()
        .filter(|(k, _)| !k.contains("query_feat"))
        .collect();
    std::fs::write(&path, d2_pickle(items)).unwrap();
    let e = spec.build(&store, &Device::Cpu).unwrap_err().to_string();
    assert!(
        e.contains("queries_features.weight") && e.contains("missing"),
        "{e}"
    );
    let mut items = detectron2_items(&fx);
    let table = items
        .iter_mut()
        .filter(|(k, _)| k.ends_with("attn.relative_position_bias_table"))
        .nth(1);
    let needles = match table {
        Some(table) => {
            let Obj::Array(shape, values) = &mut table.1 else {
                panic!("{}: not an array", table.0)
            };
            let side = (shape[0] as f64).sqrt() as usize + 2;
            *shape = vec![side * side, shape[1]];
            *values = vec![0.0; side * side * shape[1]];
            ["relative_position_bias_table", "window size"]
        }
        None => {
            // A ResNet without the first block of its first stage.
            items.retain(|(k, _)| !k.starts_with("backbone.res2.0."));
            ["encoder.stages.0.layers.0.*", "missing"]
        }
    };
    std::fs::write(&path, d2_pickle(items)).unwrap();
    let e = spec.build(&store, &Device::Cpu).unwrap_err().to_string();
    assert!(needles.iter().all(|n| e.contains(n)), "{e}");
}

#[test]
fn pickles_calling_anything_else_are_refused_without_running() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("evil.pkl");
    // {"model": os.system("touch <marker>")} in protocol 2.
    let marker = tmp.path().join("executed");
    let mut p = vec![0x80, 2, b'}'];
    let s = |p: &mut Vec<u8>, t: &str| {
        p.push(b'X');
        p.extend_from_slice(&(t.len() as u32).to_le_bytes());
        p.extend_from_slice(t.as_bytes());
    };
    s(&mut p, "model");
    p.extend_from_slice(b"cos\nsystem\n");
    s(&mut p, &format!("touch {}", marker.display()));
    p.extend_from_slice(&[0x85, b'R', b's', b'.']);
    std::fs::write(&path, &p).unwrap();
    let e = deva::nn::checkpoint::load(&path, &["model"])
        .unwrap_err()
        .to_string();
    assert!(e.contains("os.system"), "{e}");
    assert!(!marker.exists(), "the pickle's call was executed");
    // numpy globals outside the allow-list too.
    let mut p = vec![0x80, 2];
    p.extend_from_slice(b"cnumpy\nload\n.");
    std::fs::write(&path, &p).unwrap();
    let e = deva::nn::checkpoint::load(&path, &[])
        .unwrap_err()
        .to_string();
    assert!(e.contains("numpy.load"), "{e}");
}
