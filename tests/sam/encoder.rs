//! Preprocessing (Pillow's resize), the ViT encoder and MobileSAM's TinyViT vs. the official code.

use super::*;
use deva::segmenter::sam::transform::resize_longest_side;

#[test]
fn preprocessing_resizes_like_pillow() {
    let Some(dir) = common::fixtures("sam") else {
        return;
    };
    let fx = load_fixture(&dir);
    let image = fx.image("image_u8");
    let expected = fx.image("image_resized_u8");
    let (oh, ow) = fx.pair("original_size");
    let (ih, iw) = fx.pair("input_size");
    assert_eq!((image.height() as usize, image.width() as usize), (oh, ow));
    let resized = resize_longest_side(&image, 1024);
    assert_eq!(
        (resized.height() as usize, resized.width() as usize),
        (ih, iw)
    );
    let differing = resized
        .as_raw()
        .iter()
        .zip(expected.as_raw())
        .filter(|(a, b)| a != b)
        .count();
    assert_eq!(
        differing, 0,
        "resized image differs from Pillow's in {differing} bytes"
    );
}

#[test]
fn image_encoder_matches_reference() {
    let Some(dir) = common::fixtures("sam") else {
        return;
    };
    let fx = load_fixture(&dir);
    let sam = model(&dir);
    let input = sam.input_tensor(&fx.image("image_resized_u8")).unwrap();
    let mut trace = Vec::new();
    let emb = sam.encode(&input, Some(&mut trace)).unwrap();
    let first = "enc.patch_embed_plus_pos";
    assert_close(first, &trace[0], fx.get(first), fx.atol(&[first]));
    let blocks: BTreeSet<usize> = fx
        .cases
        .keys()
        .filter_map(|k| k.strip_prefix("enc.block")?.parse().ok())
        .collect();
    assert!(!blocks.is_empty(), "no enc.block<i> in the fixture");
    for i in blocks {
        let key = format!("enc.block{i}");
        assert_close(&key, &trace[i + 1], fx.get(&key), fx.atol(&[&key]));
    }
    assert_close(
        "image_embeddings",
        &emb,
        fx.get("image_embeddings"),
        fx.atol(&["image_embeddings"]),
    );
}

/// MobileSAM's TinyViT against the official code. Oracle: tests/sam_data/mobile_sam_oracle.py
/// ran ChaoningZhang/MobileSAM's `tiny_vit_sam.TinyViT` (build_sam_vit_t configuration, torch
/// 2.15 float32 CPU) with the synthetic weight formula of `deva::nn::synthetic` and a formula
/// input, and stored every 61st output value (no fixture set has MobileSAM).
#[test]
fn tiny_vit_matches_mobile_sam() {
    use deva::segmenter::sam::{SamArch, TinyVitConfig};
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sam_data/mobile_sam_tiny_vit.json");
    let oracle: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let seed = oracle["seed"].as_u64().unwrap();
    let arch = SamArch::with_tiny_vit(TinyVitConfig::mobile_sam());
    let sam = SamModel::synthetic(&arch, seed, &Device::Cpu).unwrap();
    let s = arch.img_size;
    let input: Vec<f32> = (0..3 * s * s)
        .map(|i| {
            let (c, y, x) = ((i / (s * s)) as f64, ((i / s) % s) as f64, (i % s) as f64);
            (1.5 * (0.01 * x * (c + 1.0) + 0.013 * y).sin()) as f32
        })
        .collect();
    let input = Tensor::from_vec(input, (1, 3, s, s), &Device::Cpu).unwrap();
    let out = sam.encode(&input, None).unwrap();
    let shape: Vec<usize> = f64s(&oracle["shape"]).iter().map(|&v| v as usize).collect();
    assert_eq!(out.dims(), shape.as_slice());
    let stride = oracle["stride"].as_u64().unwrap() as usize;
    let ours: Vec<f32> = out
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .into_iter()
        .step_by(stride)
        .collect();
    let want: Vec<f32> = f64s(&oracle["samples"]).iter().map(|&v| v as f32).collect();
    assert_eq!(ours.len(), want.len());
    let scale = oracle["max_abs"].as_f64().unwrap() as f32;
    let d = ours
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(
        d <= 1e-4 * scale.max(1.0),
        "TinyViT: max diff {d:e} (scale {scale})"
    );
    eprintln!("TinyViT: max diff {d:.3e} over {} samples", want.len());
}
