//! VIPSeg (VPQ, STQ) and the STQ unit cases against the official code; input errors.

use super::*;

#[test]
fn stq_unit_cases_match_official() {
    use deva::eval::stq::{StQuality, StqConfig};
    let Some(root) = common::fixtures("eval/stq_unit") else {
        return;
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no STQ cases in {}", root.display());
    for file in files {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let case = read_json(&file);
        let config: StqConfig = serde_json::from_value(case.clone()).expect("STQ settings");
        let mut stq = StQuality::new(config).unwrap();
        let flat = |v: &Value| -> Vec<i64> {
            v.as_array()
                .expect("2-D label array")
                .iter()
                .flat_map(|row| row.as_array().unwrap().iter().map(|x| x.as_i64().unwrap()))
                .collect()
        };
        for u in case["updates"].as_array().unwrap() {
            let seq = u["sequence_id"].to_string();
            stq.update(&flat(&u["ground_truth"]), &flat(&u["prediction"]), &seq)
                .unwrap();
        }
        let r = stq.result();
        let e = &case["expected"];
        assert_close(r.scores.stq, &e["STQ"], &format!("{name} STQ"));
        assert_close(r.scores.aq, &e["AQ"], &format!("{name} AQ"));
        assert_close(r.scores.iou, &e["IoU"], &format!("{name} IoU"));
        let ids: Vec<String> = e["ID_per_seq"]
            .as_array()
            .unwrap()
            .iter()
            .map(Value::to_string)
            .collect();
        let got_ids: Vec<String> = r.sequences.iter().map(|s| s.id.clone()).collect();
        assert_eq!(got_ids, ids, "{name} sequence ids");
        for (i, s) in r.sequences.iter().enumerate() {
            let q = &s.scores;
            assert_close(q.stq, &e["STQ_per_seq"][i], &format!("{name} STQ[{i}]"));
            assert_close(q.aq, &e["AQ_per_seq"][i], &format!("{name} AQ[{i}]"));
            assert_close(q.iou, &e["IoU_per_seq"][i], &format!("{name} IoU[{i}]"));
            assert_eq!(
                Some(s.length as u64),
                e["Length_per_seq"][i].as_u64(),
                "{name}"
            );
        }
    }
}

#[test]
fn vipseg_cases_match_official() {
    use deva::eval::vipseg;
    for_each_case("eval/vipseg", |name, case, exp| {
        let report = vipseg::evaluate(
            &case.join("panoptic_gt_VIPSeg_val.json"),
            &case.join("panomasksRGB"),
            &case.join("pred"),
            &no_progress,
        )
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        let vpq = exp["VPQ"].as_object().expect("VPQ");
        assert_eq!(vpq.len(), report.windows.len(), "{name}: window sizes");
        for (k, e) in vpq {
            let w = report
                .windows
                .iter()
                .find(|w| &w.k == k)
                .unwrap_or_else(|| panic!("{name}: no window {k}"));
            let what = format!("{name} VPQ^{k}");
            if let Some(n) = e["window_nframes"].as_u64() {
                assert_eq!(w.window_nframes as u64, n, "{what}");
            }
            for (split, got) in [
                ("all", w.vpq.all),
                ("things", w.vpq.things),
                ("stuff", w.vpq.stuff),
            ] {
                assert_close(got, &e[split], &format!("{what} {split}"));
            }
            for (split, sq, rq, n) in [
                ("all", w.sq.all, w.rq.all, w.n_categories.all),
                ("things", w.sq.things, w.rq.things, w.n_categories.things),
                ("stuff", w.sq.stuff, w.rq.stuff, w.n_categories.stuff),
            ] {
                assert_close(sq, &e["SQ"][split], &format!("{what} SQ {split}"));
                assert_close(rq, &e["RQ"][split], &format!("{what} RQ {split}"));
                assert_eq!(
                    Some(n as u64),
                    e["n_categories"][split].as_u64(),
                    "{what} n {split}"
                );
            }
            let per = e["per_category"].as_object().expect("per_category");
            let got_keys: Vec<String> = w.per_category.keys().map(u32::to_string).collect();
            let mut want_keys: Vec<String> = per.keys().cloned().collect();
            want_keys.sort_by_key(|k| k.parse::<u32>().unwrap());
            assert_eq!(got_keys, want_keys, "{what}: active categories");
            for (cat, s) in &w.per_category {
                let c = &per[&cat.to_string()];
                let cw = format!("{what} category {cat}");
                assert_close(s.pq, &c["pq"], &cw);
                assert_close(s.sq, &c["sq"], &cw);
                assert_close(s.rq, &c["rq"], &cw);
                assert_close(s.iou_sum, &c["iou_sum"], &cw);
                assert_eq!(Some(s.tp), c["tp"].as_u64(), "{cw} tp");
                assert_eq!(Some(s.fp), c["fp"].as_u64(), "{cw} fp");
                assert_eq!(Some(s.fn_), c["fn"].as_u64(), "{cw} fn");
                if let Some(t) = c["isthing"].as_u64() {
                    assert_eq!(s.isthing, t == 1, "{cw} isthing");
                }
            }
        }
        let stq = &exp["STQ"];
        assert_close(report.stq.stq, &stq["STQ"], &format!("{name} STQ"));
        assert_close(report.stq.aq, &stq["AQ"], &format!("{name} AQ"));
        assert_close(report.stq.iou, &stq["IoU"], &format!("{name} IoU"));
        let n = stq["STQ_per_seq"].as_array().unwrap().len();
        assert_eq!(report.sequences.len(), n, "{name}: videos");
        for (i, s) in report.sequences.iter().enumerate() {
            let what = format!("{name} {}", s.video_id);
            assert_close(s.stq.stq, &stq["STQ_per_seq"][i], &what);
            assert_close(s.stq.aq, &stq["AQ_per_seq"][i], &what);
            assert_close(s.stq.iou, &stq["IoU_per_seq"][i], &what);
            assert_eq!(
                Some(s.frames as u64),
                stq["Length_per_seq"][i].as_u64(),
                "{what}"
            );
            let v = &exp["options"]["videos"][&s.video_id];
            if !v.is_null() {
                assert_eq!(Some(s.frames as u64), v["frames"].as_u64(), "{what} frames");
                assert_eq!(Some(s.width as u64), v["width"].as_u64(), "{what} width");
                assert_eq!(Some(s.height as u64), v["height"].as_u64(), "{what} height");
            }
        }
    });
}

#[test]
fn vipseg_errors_name_the_file() {
    use deva::eval::vipseg;
    use deva::imageio::write_rgb_id_png;
    use deva::mask::IdMap;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let gt = serde_json::json!({
        "videos": [{"video_id": "v", "images": [{"id": "0", "width": 4, "height": 2, "file_name": "0.png"}]}],
        "annotations": [{"video_id": "v", "annotations": [{"image_id": "0", "file_name": "0.png",
            "segments_info": [{"id": 1, "category_id": 0, "iscrowd": 0, "area": 8}]}]}],
        "categories": [{"id": 0, "name": "wall", "isthing": 0}]});
    std::fs::write(root.join("gt.json"), gt.to_string()).unwrap();
    let map = IdMap::from_vec(4, 2, vec![1; 8]).unwrap();
    write_rgb_id_png(&root.join("gt/v/0.png"), &map).unwrap();
    let pred_map = IdMap::from_vec(4, 2, vec![1, 1, 1, 1, 7, 7, 7, 7]).unwrap();
    write_rgb_id_png(&root.join("pred/pan_pred/v/0.png"), &pred_map).unwrap();
    let pred = |segments: Value| {
        let j = serde_json::json!({"annotations": [{"video_id": "v", "annotations": [
            {"file_name": "0.png", "segments_info": segments}]}]});
        std::fs::write(root.join("pred/pred.json"), j.to_string()).unwrap();
    };
    let run = || {
        vipseg::evaluate(
            &root.join("gt.json"),
            &root.join("gt"),
            &root.join("pred"),
            &no_progress,
        )
    };
    // id 7 occurs in the PNG but is not listed
    pred(serde_json::json!([{"id": 1, "category_id": 0}]));
    let e = run().unwrap_err().to_string();
    assert!(e.contains("pan_pred/v/0.png") && e.contains("[7]"), "{e}");
    // a listed id absent from the PNG
    pred(
        serde_json::json!([{"id": 1, "category_id": 0}, {"id": 7, "category_id": 0}, {"id": 9, "category_id": 0}]),
    );
    let e = run().unwrap_err().to_string();
    assert!(
        e.contains("pan_pred/v/0.png") && e.contains("segment id 9"),
        "{e}"
    );
    // consistent input evaluates: one GT tube, two predicted tubes of the same category
    pred(serde_json::json!([{"id": 1, "category_id": 0}, {"id": 7, "category_id": 0}]));
    let r = run().unwrap();
    assert_eq!(r.windows[0].per_category[&0].tp, 0);
    // the category lists our writer adds (top level and per video) change nothing
    let names = serde_json::json!([{"id": 0, "name": "wall"}]);
    let j = serde_json::json!({"categories": names, "annotations": [{"video_id": "v",
        "categories": names, "annotations": [{"file_name": "0.png",
        "segments_info": [{"id": 1, "category_id": 0}, {"id": 7, "category_id": 0}]}]}]});
    std::fs::write(root.join("pred/pred.json"), j.to_string()).unwrap();
    let json = |r: &vipseg::VipsegReport| serde_json::to_string(r).unwrap();
    assert_eq!(json(&run().unwrap()), json(&r));
    // malformed pred.json
    std::fs::write(root.join("pred/pred.json"), "[1,").unwrap();
    let e = run().unwrap_err().to_string();
    assert!(e.contains("pred.json") && e.contains("invalid JSON"), "{e}");
}
