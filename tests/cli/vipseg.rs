//! Tracking DEVA's VIPSeg example from its precomputed detections.

use super::util::*;

fn track_vipseg(temporal: &str) {
    let Some((frames, detections, video)) = vipseg() else {
        return;
    };
    let out = tempfile::tempdir().unwrap();
    let o = deva(&[
        &"track",
        &frames,
        &"--detections",
        &detections,
        &"--out",
        &out.path(),
        &"--format",
        &"vipseg",
        &"--temporal",
        &temporal,
        &"--detection-every",
        &"1",
        &"--config",
        &concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/configs/vipseg_semionline.toml"
        ),
    ]);
    assert_ok(&o);
    let maps = check_vipseg_output(out.path(), &frames, &video);
    check_ids_persist(&maps);

    // BURST: RLEs decode to exactly the pixels of each id in the PNGs.
    let out = tempfile::tempdir().unwrap();
    let o = deva(&[
        &"track",
        &frames,
        &"--detections",
        &detections,
        &"--out",
        &out.path(),
        &"--format",
        &"burst",
        &"--temporal",
        &temporal,
        &"--video-name",
        &"ds/seq",
    ]);
    assert_ok(&o);
    let doc = read_json(&out.path().join("ds/seq/pred.json"));
    assert_eq!(
        (doc["dataset"].as_str(), doc["seq_name"].as_str()),
        (Some("ds"), Some("seq"))
    );
    let names = stems(&frames, "jpg");
    let records = doc["segmentations"].as_array().unwrap();
    assert_eq!(records.len(), names.len());
    for (name, record) in names.iter().zip(records) {
        assert_eq!(record["file_name"], format!("{name}.jpg"));
        let (w, h, ids) = read_rgb_ids(&out.path().join("ds/seq").join(format!("{name}.png")));
        let px_areas = areas(&ids);
        let objects = record["segmentations"].as_array().unwrap();
        assert_eq!(objects.len(), px_areas.len(), "{name}");
        for s in objects {
            let id = s["id"].as_u64().unwrap() as u32;
            assert_eq!(s["rle"]["size"], serde_json::json!([h, w]));
            let rle =
                Rle::from_compressed(h as usize, w as usize, s["rle"]["counts"].as_str().unwrap())
                    .unwrap();
            assert_eq!(rle.area() as usize, px_areas[&id], "{name} id {id}");
            let mask = rle.decode().unwrap();
            let same = ids.iter().zip(mask.data()).all(|(&p, &m)| (p == id) == m);
            assert!(same, "{name} id {id}: RLE differs from the PNG");
        }
    }
}

#[test]
fn tracks_vipseg_detections_online() {
    track_vipseg("online");
}

#[test]
fn tracks_vipseg_detections_semionline() {
    track_vipseg("semionline");
}
