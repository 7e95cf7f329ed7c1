//! Checkpoint loading: safetensors, and errors that name the file and the key.

use super::*;

#[test]
fn checkpoint_errors_name_the_file_and_key() {
    use deva::config::SamVariant;
    use deva::nn::Weights;
    use deva::segmenter::sam::SamArch;
    let Some(dir) = common::fixtures("sam") else {
        return;
    };
    let pth = dir.join("weights.pth");
    let ck = Weights::open(&pth).unwrap();
    let arch = SamArch::from_checkpoint(&ck).unwrap();
    let tmp = tempfile::tempdir().unwrap();

    // The same tensors as safetensors give the same architecture and load strictly.
    let st = tmp.path().join("w.safetensors");
    candle_core::safetensors::save(&ck.tensors().unwrap(), &st).unwrap();
    let from_st = SamModel::load(&st, &Device::Cpu).unwrap();
    assert_eq!(from_st.arch(), &arch);

    let mut missing = ck.tensors().unwrap();
    missing.remove("mask_decoder.iou_token.weight");
    let p = tmp.path().join("missing.safetensors");
    candle_core::safetensors::save(&missing, &p).unwrap();
    let e = SamModel::load(&p, &Device::Cpu).unwrap_err().to_string();
    assert!(
        e.contains("mask_decoder.iou_token.weight") && e.contains("missing.safetensors"),
        "{e}"
    );

    let mut extra = ck.tensors().unwrap();
    extra.insert(
        "extra.weight".into(),
        Tensor::zeros(3, DType::F32, &Device::Cpu).unwrap(),
    );
    let p = tmp.path().join("extra.safetensors");
    candle_core::safetensors::save(&extra, &p).unwrap();
    let e = SamModel::load(&p, &Device::Cpu).unwrap_err().to_string();
    assert!(e.contains("unexpected key extra.weight"), "{e}");

    let mut reshaped = ck.tensors().unwrap();
    reshaped.insert(
        "prompt_encoder.no_mask_embed.weight".into(),
        Tensor::zeros((2, 256), DType::F32, &Device::Cpu).unwrap(),
    );
    let p = tmp.path().join("reshaped.safetensors");
    candle_core::safetensors::save(&reshaped, &p).unwrap();
    let e = SamModel::load(&p, &Device::Cpu).unwrap_err().to_string();
    assert!(e.contains("prompt_encoder.no_mask_embed.weight"), "{e}");

    let bytes = std::fs::read(&pth).unwrap();
    let p = tmp.path().join("truncated.pth");
    std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
    let e = SamModel::load(&p, &Device::Cpu).unwrap_err().to_string();
    assert!(e.contains("truncated.pth"), "{e}");

    let e = SamModel::load_variant(&pth, SamVariant::Mobile, &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("weights.pth") && e.contains("sam.variant"),
        "{e}"
    );
}
