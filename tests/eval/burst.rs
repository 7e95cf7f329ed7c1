//! BURST against the official code; results with category names; input errors.

use super::*;

#[test]
fn burst_cases_match_official() {
    use deva::eval::burst;
    for_each_case("eval/burst", |name, case, exp| {
        let report = burst::evaluate(&case.join("gt"), &case.join("pred.json"), &no_progress)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        for (split, e) in ["all", "common", "uncommon"].map(|s| (s, &exp[s])) {
            if e.is_null() {
                continue;
            }
            let r = report
                .splits
                .get(split)
                .unwrap_or_else(|| panic!("{name}: split {split} not evaluated"));
            let what = format!("{name} {split}");
            for (key, got) in r.summary.named() {
                assert_close(got, &e[key], &format!("{what} {key}"));
            }
            let pa = &r.per_alpha;
            for (key, got) in [
                ("OWTA", &pa.owta),
                ("DetRe", &pa.det_re),
                ("AssA", &pa.ass_a),
                ("HOTA", &pa.hota),
                ("DetA", &pa.det_a),
            ] {
                if !e["per_alpha"][key].is_null() {
                    assert_series(
                        got,
                        &e["per_alpha"][key],
                        &format!("{what} {key} per alpha"),
                    );
                }
            }
            for (key, got) in [
                ("HOTA_TP", &pa.tp),
                ("HOTA_FN", &pa.fn_),
                ("HOTA_FP", &pa.fp),
            ] {
                let want: Vec<u64> = e[key]
                    .as_array()
                    .unwrap_or_else(|| panic!("{what}: {key}"))
                    .iter()
                    .map(|v| v.as_u64().unwrap())
                    .collect();
                assert_eq!(got.to_vec(), want, "{what} {key}");
            }
            let seqs = e["per_sequence"].as_object().expect("per_sequence");
            assert_eq!(r.sequences.len(), seqs.len(), "{what}: sequences");
            for s in &r.sequences {
                let es = &seqs
                    .get(&s.name)
                    .unwrap_or_else(|| panic!("{what}: unexpected sequence {}", s.name));
                let sw = format!("{what} {}", s.name);
                for (key, got) in [
                    ("num_gt_dets", s.num_gt_dets),
                    ("num_tracker_dets", s.num_tracker_dets),
                    ("num_gt_ids", s.num_gt_ids),
                    ("num_tracker_ids", s.num_tracker_ids),
                    ("num_timesteps", s.num_timesteps),
                ] {
                    assert_eq!(Some(got as u64), es[key].as_u64(), "{sw} {key}");
                }
                // per-sequence summaries hold OWTA, DetRe, AssA, HOTA and DetA
                for (key, got) in s.summary.named().into_iter().take(5) {
                    assert_close(got, &es[key], &format!("{sw} {key}"));
                }
            }
        }
    });
}

/// Our result files may carry a top-level `"categories"` list of `{"id", "name"}`: the BURST
/// evaluation reads such a file exactly as the file without it.
#[test]
fn burst_results_with_category_names_evaluate_the_same() {
    use deva::eval::burst;
    let Some(root) = common::fixtures("eval/burst") else {
        return;
    };
    let case = case_dirs(&root).into_iter().next().expect("a BURST case");
    let mut pred = read_json(&case.join("pred.json"));
    pred["categories"] = serde_json::json!([{"id": 1, "name": "person"}]);
    let dir = tempfile::tempdir().unwrap();
    let named = dir.path().join("pred.json");
    std::fs::write(&named, pred.to_string()).unwrap();
    let report = |p: &Path| {
        let r = burst::evaluate(&case.join("gt"), p, &no_progress).unwrap();
        serde_json::to_string(&r).unwrap()
    };
    assert_eq!(report(&named), report(&case.join("pred.json")));
}

#[test]
fn burst_errors_name_the_file() {
    use deva::eval::burst;
    let dir = tempfile::tempdir().unwrap();
    let gt_dir = dir.path().join("gt");
    std::fs::create_dir_all(&gt_dir).unwrap();
    let pred = dir.path().join("pred.json");
    let gt = serde_json::json!({"split": "val", "sequences": [{
        "id": 1, "width": 4, "height": 3, "dataset": "D", "seq_name": "s",
        "all_image_paths": ["frame0000.jpg"], "annotated_image_paths": ["frame0000.jpg"],
        "neg_category_ids": [], "not_exhaustive_category_ids": [],
        "track_category_ids": {"1": 805},
        "segmentations": [{"1": {"rle": "0;", "is_gt": true}}]}]});
    std::fs::write(gt_dir.join("all_classes.json"), gt.to_string()).unwrap();
    // malformed prediction JSON
    std::fs::write(&pred, "{\"sequences\": [").unwrap();
    let e = burst::evaluate(&gt_dir, &pred, &no_progress)
        .unwrap_err()
        .to_string();
    assert!(e.contains("pred.json") && e.contains("invalid JSON"), "{e}");
    // the GT RLE "0;" (11 foreground pixels) does not cover the 4x3 image
    std::fs::write(&pred, serde_json::json!({"sequences": []}).to_string()).unwrap();
    let e = burst::evaluate(&gt_dir, &pred, &no_progress)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("all_classes.json") && e.contains("track 1"),
        "{e}"
    );
    // missing field
    std::fs::write(gt_dir.join("all_classes.json"), "{\"split\": \"val\"}").unwrap();
    let e = burst::evaluate(&gt_dir, &pred, &no_progress)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("all_classes.json") && e.contains("sequences"),
        "{e}"
    );
}
