//! The prompted predictor on every fixture case, from the reference embedding and end to end.

use super::*;
use deva::segmenter::sam::{ImageEmbedding, PointPrompt, Prompt};

/// The prompt of a case, in original-image pixels, read from the fixture.
fn case_prompt(fx: &Fixture, case: &str) -> Prompt {
    let key = |s: &str| format!("{case}.{s}");
    let points = match fx.cases.get(&key("point_coords")) {
        Some(c) => {
            let c = c.to_vec2::<f32>().unwrap();
            let l = fx
                .get(&key("point_labels"))
                .to_dtype(DType::I64)
                .unwrap()
                .to_vec1::<i64>()
                .unwrap();
            c.iter()
                .zip(&l)
                .map(|(p, &l)| PointPrompt {
                    x: p[0] as f64,
                    y: p[1] as f64,
                    positive: l == 1,
                })
                .collect()
        }
        None => Vec::new(),
    };
    let bbox = fx.cases.get(&key("box")).map(|b| {
        let v = b.to_vec1::<f32>().unwrap();
        [v[0] as f64, v[1] as f64, v[2] as f64, v[3] as f64]
    });
    Prompt {
        points,
        bbox,
        mask_input: fx.cases.get(&key("mask_input")).cloned(),
    }
}

/// Checks one predictor case against the fixture, from the given image embedding.
fn check_case(fx: &Fixture, sam: &SamModel, emb: &ImageEmbedding, case: &str) {
    let key = |s: &str| format!("{case}.{s}");
    let prompt = case_prompt(fx, case);
    // Prompt coordinates mapped into the resized frame.
    if let Some(want) = fx.cases.get(&key("point_coords_transformed")) {
        let got: Vec<f32> = prompt
            .points
            .iter()
            .flat_map(|p| {
                let (x, y) = sam.to_input_coords(emb, p.x, p.y);
                [x, y]
            })
            .collect();
        let got = Tensor::from_vec(got, want.dims(), &Device::Cpu).unwrap();
        assert_close(&key("point_coords_transformed"), &got, want, 1e-4);
    }
    if let (Some(want), Some([x0, y0, x1, y1])) =
        (fx.cases.get(&key("box_transformed")), prompt.bbox)
    {
        let (a, b) = sam.to_input_coords(emb, x0, y0);
        let (c, d) = sam.to_input_coords(emb, x1, y1);
        let got = Tensor::new(&[a, b, c, d], &Device::Cpu).unwrap();
        assert_close(&key("box_transformed"), &got, want, 1e-4);
    }
    let pe = sam.prompt_embeddings(emb, &prompt).unwrap();
    assert_close(
        &key("sparse_embeddings"),
        &pe.sparse,
        fx.get(&key("sparse_embeddings")),
        fx.atol(&[case, "sparse_embeddings"]),
    );
    let n_out = fx.get(&key("iou_predictions")).dim(0).unwrap();
    let pred = sam.predict(emb, &prompt, n_out > 1).unwrap();
    let iou = Tensor::new(pred.iou.as_slice(), &Device::Cpu).unwrap();
    assert_close(
        &key("iou_predictions"),
        &iou,
        fx.get(&key("iou_predictions")),
        fx.atol(&[case, "iou_predictions"]),
    );
    assert_close(
        &key("low_res_logits"),
        &pred.low_res,
        fx.get(&key("low_res_logits")),
        fx.atol(&[case, "low_res_logits"]),
    );
    let want_logits = fx.get(&key("masks_logits"));
    let logits = Tensor::from_vec(pred.logits.concat(), want_logits.dims(), &Device::Cpu).unwrap();
    assert_close(
        &key("masks_logits"),
        &logits,
        want_logits,
        fx.atol(&[case, "masks_logits"]),
    );
    // Binary masks: equal except where the reference logit is within 1e-3 of the threshold.
    let want_masks = fx
        .get(&key("masks"))
        .flatten_all()
        .unwrap()
        .to_vec1::<u8>()
        .unwrap();
    let ref_logits = want_logits.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let got: Vec<bool> = (0..n_out)
        .flat_map(|i| pred.mask(i).data().to_vec())
        .collect();
    let bad = got
        .iter()
        .zip(&want_masks)
        .zip(&ref_logits)
        .filter(|((g, w), l)| (**g != (**w != 0)) && l.abs() >= 1e-3)
        .count();
    assert_eq!(
        bad, 0,
        "{case}: {bad} mask pixels differ away from the threshold"
    );
}

#[test]
fn predictor_matches_reference_on_every_case() {
    let Some(dir) = common::fixtures("sam") else {
        return;
    };
    let fx = load_fixture(&dir);
    let sam = model(&dir);
    let cases = fx.predictor_cases();
    assert!(!cases.is_empty(), "no predictor cases in cases.safetensors");
    // Decoder parity from the reference image embedding (isolates the prompt path) ...
    let reference = ImageEmbedding {
        features: fx.get("image_embeddings").clone(),
        original_size: fx.pair("original_size"),
        input_size: fx.pair("input_size"),
    };
    for case in &cases {
        check_case(&fx, &sam, &reference, case);
    }
    // ... and end to end from the original image.
    let ours = sam.embed_image(&fx.image("image_u8")).unwrap();
    assert_eq!(ours.input_size, reference.input_size);
    for case in &cases {
        check_case(&fx, &sam, &ours, case);
    }
}
