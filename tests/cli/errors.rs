//! Bad inputs fail with errors that name the file, frame, key or flag.

use super::util::*;

#[test]
fn bad_frames_are_named() {
    let Some((frames, detections, _)) = vipseg() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let run = |input: &Path| {
        deva(&[
            &"track",
            &input,
            &"--detections",
            &detections,
            &"--out",
            &out,
        ])
    };

    let missing = dir.path().join("no_such_frames");
    assert_fails_naming(&run(&missing), &["no_such_frames"]);

    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    assert_fails_naming(&run(&empty), &["empty", "no frames"]);

    let names = stems(&frames, "jpg");
    let copy = dir.path().join("frames");
    copy_dir(&frames, &copy);
    std::fs::write(copy.join("notes.txt"), "not a frame").unwrap();
    assert_fails_naming(&run(&copy), &["notes.txt"]);
    std::fs::remove_file(copy.join("notes.txt")).unwrap();

    // An unreadable (corrupt) frame in the middle of the video.
    let bad = copy.join(format!("{}.jpg", names[2]));
    std::fs::write(&bad, b"\xff\xd8 truncated").unwrap();
    assert_fails_naming(&run(&copy), &[&format!("{}.jpg", names[2])]);
}

#[test]
fn inconsistent_detections_are_named() {
    let Some((frames, detections, _)) = vipseg() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let det = dir.path().join("det");
    copy_dir(&detections, &det);
    let name = stems(&det, "json").remove(1);
    let json_path = det.join(format!("{name}.json"));
    let mut list: Vec<Value> =
        serde_json::from_str(&std::fs::read_to_string(&json_path).unwrap()).unwrap();
    let max_id = list
        .iter()
        .map(|s| s["id"].as_u64().unwrap())
        .max()
        .unwrap();
    let absent = max_id + 100;
    list.push(serde_json::json!({"id": absent, "category_id": 0, "isthing": false}));
    std::fs::write(&json_path, serde_json::to_string(&list).unwrap()).unwrap();
    let o = deva(&[
        &"track",
        &frames,
        &"--detections",
        &det,
        &"--out",
        &dir.path().join("o"),
        &"--propagator",
        &"none",
    ]);
    assert_fails_naming(&o, &[&format!("{name}.json"), &format!("id {absent}")]);

    std::fs::write(&json_path, "[{\"id\": 1,").unwrap();
    let o = deva(&[
        &"track",
        &frames,
        &"--detections",
        &det,
        &"--out",
        &dir.path().join("o"),
    ]);
    assert_fails_naming(&o, &[&format!("{name}.json")]);
}

#[test]
fn mask_of_another_size_is_named_or_resized() {
    let Some(judo) = common::data("cutie-judo") else {
        return;
    };
    let frames = judo.join("images/judo");
    let masks = judo.join("masks/judo");
    // Find the mask whose size differs from the frames (00005.png in this data set).
    let frame_size = image::image_dimensions(frames.join("00000.jpg")).unwrap();
    let odd = stems(&masks, "png")
        .into_iter()
        .map(|n| {
            (
                image::image_dimensions(masks.join(format!("{n}.png"))).unwrap(),
                n,
            )
        })
        .find(|(size, _)| *size != frame_size)
        .expect("a mask of another size");
    let dir = tempfile::tempdir().unwrap();
    let o = deva(&[
        &"track",
        &frames,
        &"--init-masks",
        &masks,
        &"--out",
        &dir.path(),
    ]);
    let (w, h) = odd.0;
    assert_fails_naming(
        &o,
        &[
            &format!("{}.png", odd.1),
            &format!("{w}x{h}"),
            &format!("{}x{}", frame_size.0, frame_size.1),
        ],
    );

    // With --resize-masks it runs; palette PNGs at the frame size for every frame.
    let o = deva(&[
        &"track",
        &frames,
        &"--init-masks",
        &masks,
        &"--out",
        &dir.path(),
        &"--resize-masks",
    ]);
    assert_ok(&o);
    let written = dir.path().join("judo");
    assert_eq!(stems(&written, "png"), stems(&frames, "jpg"));
    let png = image::open(written.join(format!("{}.png", odd.1))).unwrap();
    assert_eq!((png.width(), png.height()), frame_size);
}

#[test]
fn weights_and_propagator_errors_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let (frames, masks) = tiny_vos(dir.path());
    let out = dir.path().join("out");
    let track = |extra: &[&dyn AsRef<std::ffi::OsStr>]| {
        let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> =
            vec![&"track", &frames, &"--init-masks", &masks, &"--out", &out];
        args.extend_from_slice(extra);
        deva(&args)
    };
    let missing = dir.path().join("DEVA-missing.pth");
    assert_fails_naming(
        &track(&[&"--weights", &missing]),
        &["DEVA-missing.pth", "not found"],
    );
    let corrupt = dir.path().join("DEVA-corrupt.pth");
    std::fs::write(&corrupt, b"not a checkpoint").unwrap();
    // Defect 8: any file that is not a zip was reported as "not a valid safetensors file".
    let o = track(&[&"--weights", &corrupt, &"--propagator", &"deva"]);
    assert_fails_naming(&o, &["DEVA-corrupt.pth", "not a checkpoint", "first bytes"]);
    assert!(!stderr(&o).contains("safetensors file"), "{}", stderr(&o));
    let empty = dir.path().join("models");
    std::fs::create_dir(&empty).unwrap();
    assert_fails_naming(
        &track(&[&"--propagator", &"deva", &"--models-dir", &empty]),
        &["deva models fetch deva-propagation"],
    );
    assert_fails_naming(
        &track(&[&"--weights", &corrupt, &"--propagator", &"flow"]),
        &["--weights", "flow"],
    );
    assert!(!out.exists(), "nothing is written when set-up fails");

    // Each weight-free propagator runs and says which one it is; flow is the default.
    for (flag, name) in [
        (None, "flow"),
        (Some("static"), "static"),
        (Some("none"), "none"),
    ] {
        let o = match flag {
            Some(p) => track(&[&"--propagator", &p]),
            None => track(&[]),
        };
        assert_ok(&o);
        assert!(
            stderr(&o).contains(&format!("propagator {name}")),
            "{}",
            stderr(&o)
        );
        assert_eq!(stems(&out.join("frames"), "png"), ["00000", "00001"]);
    }
}

#[test]
fn segmenter_errors_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let (frames, masks) = tiny_vos(dir.path());
    let out = dir.path().join("out");
    // An unknown name is a usage error (exit 2) that lists the known ones.
    let o = deva(&[
        &"track",
        &frames,
        &"--segmenter",
        &"saliency:u3net",
        &"--out",
        &out,
    ]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    for n in [
        "saliency:u3net",
        "saliency:u2netp",
        "saliency:u2net",
        "saliency:isnet",
    ] {
        assert!(err.contains(n), "{n}: {err}");
    }
    // Two segmenters at once.
    let o = deva(&[
        &"track",
        &frames,
        &"--segmenter",
        &"saliency:u2netp",
        &"--init-masks",
        &masks,
        &"--out",
        &out,
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    // A model that is not in the models folder: the error says how to fetch it.
    let empty = dir.path().join("models");
    std::fs::create_dir(&empty).unwrap();
    for model in ["u2netp", "u2net", "isnet"] {
        let o = deva(&[
            &"track",
            &frames,
            &"--segmenter",
            &format!("saliency:{model}"),
            &"--models-dir",
            &empty,
            &"--out",
            &out,
        ]);
        assert_fails_naming(&o, &[&format!("deva models fetch {model}")]);
    }
    // A corrupt model file is named.
    std::fs::write(empty.join("u2netp.onnx"), b"truncated").unwrap();
    let o = deva(&[
        &"track",
        &frames,
        &"--segmenter",
        &"saliency:u2netp",
        &"--models-dir",
        &empty,
        &"--out",
        &out,
    ]);
    assert_fails_naming(&o, &["u2netp.onnx", "deva models fetch u2netp"]);
}
