//! `deva eval davis` on the command line: the JSON report and a failing run.

use super::*;

#[test]
fn cli_writes_json_report_with_global_names() {
    let dir = tempfile::tempdir().unwrap();
    let (gt, pred) = (dir.path().join("gt"), dir.path().join("pred"));
    write_synthetic_davis(&gt, &pred, true);
    let json = dir.path().join("out/report.json");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_deva"))
        .args(["eval", "davis", "--task", "unsup", "--gt"])
        .arg(&gt)
        .arg("--pred")
        .arg(&pred)
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("J&F"));
    let r = read_json(&json);
    // the official value of this synthetic case (see davis_void_and_proposals_match_official_oracle)
    assert_close(
        r["J&F"].as_f64().unwrap(),
        &serde_json::json!(0.7727276124899145),
        "J&F",
    );
    for key in [
        "J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay",
    ] {
        assert!(r[key].is_f64(), "{key} missing at the top level");
    }
    assert_eq!(r["sequences"][0]["objects"][0]["key"], "seq_1");
    // errors exit non-zero and name the file
    std::fs::remove_file(pred.join("seq/00004.png")).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_deva"))
        .args(["eval", "davis", "--task", "unsup", "--gt"])
        .arg(&gt)
        .arg("--pred")
        .arg(&pred)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("seq/00004.png"));
}
