//! The automatic mask generator against the official one.

use super::*;
use deva::segmenter::sam::{PointPrompt, Prompt};

/// The generator settings of amg.json (official names) as a [`SamConfig`].
fn amg_config(v: &serde_json::Value) -> deva::config::SamConfig {
    let f = |k: &str| {
        v[k].as_f64()
            .unwrap_or_else(|| panic!("amg.json config.{k}"))
    };
    let u = |k: &str| {
        v[k].as_u64()
            .unwrap_or_else(|| panic!("amg.json config.{k}")) as usize
    };
    assert!(
        v["point_grids"].is_null(),
        "explicit point_grids are not supported by this test"
    );
    deva::config::SamConfig {
        points_per_side: u("points_per_side"),
        points_per_batch: u("points_per_batch"),
        pred_iou_thresh: f("pred_iou_thresh"),
        stability_score_thresh: f("stability_score_thresh"),
        stability_score_offset: f("stability_score_offset"),
        box_nms_thresh: f("box_nms_thresh"),
        crop_n_layers: u("crop_n_layers"),
        crop_nms_thresh: f("crop_nms_thresh"),
        crop_overlap_ratio: f("crop_overlap_ratio"),
        crop_n_points_downscale_factor: u("crop_n_points_downscale_factor"),
        min_mask_region_area: u("min_mask_region_area"),
        ..Default::default()
    }
}

#[test]
fn automatic_mask_generator_matches_reference() {
    let Some(dir) = common::fixtures("sam") else {
        return;
    };
    let fx = load_fixture(&dir);
    let sam = model(&dir);
    let amg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("amg.json")).unwrap()).unwrap();
    let config = amg_config(&amg["config"]);
    let image = fx.image("image_u8");
    let masks = deva::segmenter::sam::amg::generate(&sam, &image, &config, None).unwrap();
    let anns = amg["annotations"].as_array().expect("annotations");
    assert_eq!(masks.len(), anns.len(), "number of masks");
    let emb = sam.embed_image(&image).unwrap();
    for (i, (m, ann)) in masks.iter().zip(anns).enumerate() {
        // Same order: the same point prompt and crop produced the i-th mask.
        let point = f64s(&ann["point_coords"][0]);
        assert_eq!(m.point.to_vec(), point, "mask {i}: point prompt");
        let crop = f64s(&ann["crop_box"]);
        let c = m.crop_box;
        let ours_crop = [c[0], c[1], c[2] - c[0], c[3] - c[1]].map(|v| v as f64);
        assert_eq!(ours_crop.to_vec(), crop, "mask {i}: crop box");
        let iou = ann["predicted_iou"].as_f64().unwrap();
        assert!(
            (m.predicted_iou as f64 - iou).abs() <= 1e-4,
            "mask {i}: predicted IoU {} vs {iou}",
            m.predicted_iou
        );
        let stab = ann["stability_score"].as_f64().unwrap();
        assert!(
            (m.stability_score as f64 - stab).abs() <= 1e-3,
            "mask {i}: stability {} vs {stab}",
            m.stability_score
        );
        // Pixels: equal except where the logit is within 1e-3 of the threshold (our logits
        // are within 4e-4 of the reference's, so a flipped pixel has |logit| < 1e-3 in both).
        let seg = &ann["segmentation"];
        let size = f64s(&seg["size"]);
        let rle = deva::mask::Rle {
            height: size[0] as usize,
            width: size[1] as usize,
            counts: f64s(&seg["counts"]).into_iter().map(|c| c as u64).collect(),
        };
        let want = rle.decode().unwrap();
        let flipped: Vec<usize> = (0..want.data().len())
            .filter(|&p| want.data()[p] != m.mask.data()[p])
            .collect();
        if !flipped.is_empty() {
            let prompt = Prompt {
                points: vec![PointPrompt {
                    x: m.point[0],
                    y: m.point[1],
                    positive: true,
                }],
                ..Default::default()
            };
            let pred = sam.predict(&emb, &prompt, true).unwrap();
            let k = (0..pred.iou.len())
                .min_by(|&a, &b| {
                    let da = (pred.iou[a] - m.predicted_iou).abs();
                    let db = (pred.iou[b] - m.predicted_iou).abs();
                    da.total_cmp(&db)
                })
                .unwrap();
            let far = flipped
                .iter()
                .filter(|&&p| pred.logits[k][p].abs() >= 1e-3)
                .count();
            assert_eq!(
                far,
                0,
                "mask {i}: {far} of {} differing pixels away from 0",
                flipped.len()
            );
        }
        let area = ann["area"].as_u64().unwrap() as usize;
        assert!(
            m.area.abs_diff(area) <= flipped.len(),
            "mask {i}: area {} vs {area}",
            m.area
        );
        let bbox = f64s(&ann["bbox"]);
        let b = m.bbox;
        let ours_box = [b[0], b[1], b[2] - b[0], b[3] - b[1]].map(|v| v as f64);
        let slack = if flipped.is_empty() { 0.0 } else { 2.0 };
        for (o, r) in ours_box.iter().zip(&bbox) {
            assert!(
                (o - r).abs() <= slack,
                "mask {i}: bbox {ours_box:?} vs {bbox:?}"
            );
        }
        eprintln!(
            "mask {i}: {} flipped pixels, iou diff {:.2e}, stability diff {:.2e}",
            flipped.len(),
            (m.predicted_iou as f64 - iou).abs(),
            (m.stability_score as f64 - stab).abs()
        );
    }
}
