//! LaSOT and GOT-10k box benchmarks against the official toolkits; input errors.

use super::*;

#[test]
fn box_cases_match_official() {
    use deva::eval::boxes::{got10k, lasot};
    use deva::eval::input::read_name_list;
    for_each_case("eval/boxes", |name, case, exp| {
        let protocol = exp["protocol"].as_str().expect("protocol");
        if protocol.starts_with("LaSOT") {
            let seqs = read_name_list(&case.join("sequences.txt")).unwrap();
            let r = lasot::evaluate(
                &case.join("gt"),
                &case.join("absent"),
                &case.join("pred"),
                &seqs,
            )
            .unwrap_or_else(|e| panic!("{name}: {e}"));
            for (key, got) in [
                ("success_AUC", r.success_auc),
                ("precision_20px", r.precision_20px),
                ("norm_precision_0.20", r.norm_precision_020),
                ("precision_curve_mean", r.precision_curve_mean),
                ("norm_precision_curve_mean", r.norm_precision_curve_mean),
            ] {
                assert_close(got, &exp[key], &format!("{name} {key}"));
            }
            let thresholds = &exp["options"]["success_thresholds_matlab_colon_0_0.05_1"];
            if !thresholds.is_null() {
                let want: Vec<f64> = serde_json::from_value(thresholds.clone()).unwrap();
                assert_eq!(
                    r.success_thresholds, want,
                    "{name}: MATLAB colon thresholds"
                );
            }
            for (prefix, curve) in [
                ("success", &r.success),
                ("precision", &r.precision),
                ("norm_precision", &r.norm_precision),
            ] {
                assert_series(
                    &curve.curve,
                    &exp[format!("mean_{prefix}_curve")],
                    &format!("{name} {prefix}"),
                );
                let list = |v: &Value| -> Vec<String> {
                    v.as_array()
                        .unwrap()
                        .iter()
                        .map(|s| s.as_str().unwrap().to_string())
                        .collect()
                };
                assert_eq!(
                    curve.kept,
                    list(&exp[format!("{prefix}_sequences_kept")]),
                    "{name} {prefix} kept"
                );
                assert_eq!(
                    curve.dropped,
                    list(&exp[format!("{prefix}_sequences_dropped")]),
                    "{name} {prefix} dropped"
                );
            }
            let names: Vec<&str> = r.sequences.iter().map(|s| s.name.as_str()).collect();
            assert_eq!(names, string_list(&exp["sequences"]), "{name}: sequences");
            for s in &r.sequences {
                let e = &exp["per_sequence"][&s.name];
                let what = format!("{name} {}", s.name);
                for (key, got) in [
                    ("n_frames", s.n_frames),
                    ("n_absent", s.n_absent),
                    ("n_evaluated_frames", s.n_evaluated_frames),
                    ("n_invalid_gt_rows_evaluated", s.n_invalid_gt_rows_evaluated),
                ] {
                    assert_eq!(Some(got as u64), e[key].as_u64(), "{what} {key}");
                }
                assert_series(
                    &s.success_curve,
                    &e["success_curve"],
                    &format!("{what} success"),
                );
                assert_series(
                    &s.precision_curve,
                    &e["precision_curve"],
                    &format!("{what} precision"),
                );
                assert_series(
                    &s.norm_precision_curve,
                    &e["norm_precision_curve"],
                    &format!("{what} norm"),
                );
                assert_close(s.success_auc, &e["success_AUC"], &what);
                assert_close(s.precision_20px, &e["precision_20px"], &what);
                assert_close(s.norm_precision_020, &e["norm_precision_0.20"], &what);
            }
        } else if protocol.starts_with("GOT-10k") {
            let seqs = read_name_list(&case.join("list.txt")).unwrap();
            let r = got10k::evaluate(&case.join("gt"), &case.join("pred"), &seqs)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_close(r.ao, &exp["AO"], &format!("{name} AO"));
            assert_close(r.sr50, &exp["SR0.5"], &format!("{name} SR0.5"));
            assert_close(r.sr75, &exp["SR0.75"], &format!("{name} SR0.75"));
            assert_series(
                &r.success_curve_101,
                &exp["success_curve_101"],
                &format!("{name} curve"),
            );
            assert_eq!(
                Some(r.n_ious as u64),
                exp["n_ious"].as_u64(),
                "{name} n_ious"
            );
            for s in &r.sequences {
                let e = &exp["per_sequence"][&s.name];
                let what = format!("{name} {}", s.name);
                assert_close(s.ao, &e["AO"], &what);
                assert_close(s.sr50, &e["SR0.5"], &what);
                assert_eq!(
                    Some(s.length_minus_first as u64),
                    e["length_minus_first"].as_u64(),
                    "{what}"
                );
                assert_eq!(
                    Some(s.repetitions as u64),
                    e["repetitions"].as_u64(),
                    "{what}"
                );
            }
        } else {
            panic!("{name}: unknown protocol {protocol:?}");
        }
    });
}

#[test]
fn box_errors_name_the_file() {
    use deva::eval::boxes::{got10k, lasot};
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("gt/s")).unwrap();
    std::fs::create_dir_all(root.join("absent")).unwrap();
    std::fs::create_dir_all(root.join("pred")).unwrap();
    std::fs::write(root.join("gt/s.txt"), "1,1,10,10\n2,2,10,10\n").unwrap();
    std::fs::write(root.join("absent/s.txt"), "0\n0\n").unwrap();
    std::fs::write(root.join("pred/s.txt"), "1,1,10,10\n").unwrap();
    let names = vec!["s".to_string()];
    let e = lasot::evaluate(
        &root.join("gt"),
        &root.join("absent"),
        &root.join("pred"),
        &names,
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("pred/s.txt") && e.contains("1 predicted boxes"),
        "{e}"
    );
    std::fs::write(root.join("gt/s/groundtruth.txt"), "1,1,10,10\n2,2,10,10\n").unwrap();
    std::fs::write(root.join("gt/s/cover.label"), "8\n8\n").unwrap();
    std::fs::write(
        root.join("gt/s/meta_info.ini"),
        "[METAINFO]\nresolution: (64, 48)\n",
    )
    .unwrap();
    let e = got10k::evaluate(&root.join("gt"), &root.join("pred"), &names)
        .unwrap_err()
        .to_string();
    assert!(e.contains("s_NNN.txt"), "{e}");
    std::fs::create_dir_all(root.join("pred/s")).unwrap();
    std::fs::write(root.join("pred/s/s_001.txt"), "1,1,10,10\n2,2,x,10\n").unwrap();
    let e = got10k::evaluate(&root.join("gt"), &root.join("pred"), &names)
        .unwrap_err()
        .to_string();
    assert!(e.contains("s_001.txt") && e.contains("line 2"), "{e}");
    std::fs::write(root.join("pred/s/s_001.txt"), "1,1,10,10\n2,2,10,10\n").unwrap();
    let r = got10k::evaluate(&root.join("gt"), &root.join("pred"), &names).unwrap();
    assert_eq!((r.n_ious, r.sr50), (1, 1.0));
}
