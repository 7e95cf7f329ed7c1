//! The VOS schedule: objects given mid-video, given-step probabilities, the cutie-judo clip.

use super::*;

/// Masks like the cutie-judo example: objects 1, 2, 3, 4 introduced at frames 0, 5, 8, 13;
/// frame 8 also re-lists object 1 at a new place.
fn vos_script(t: usize, w: usize, h: usize) -> Option<Segmentation> {
    let parts = match t {
        0 => vec![(info(1, None), rect(w, h, 2, 2, 10, 10))],
        5 => vec![(info(2, Some(7)), rect(w, h, 8, 8, 10, 10))],
        8 => vec![
            (info(1, None), rect(w, h, 30, 2, 10, 10)),
            (info(3, None), rect(w, h, 50, 20, 8, 8)),
        ],
        13 => vec![(info(4, None), rect(w, h, 20, 24, 6, 6))],
        _ => return None,
    };
    Some(segmentation(w, h, &parts))
}

#[test]
fn vos_adds_objects_mid_video_and_keeps_them() {
    let mut c = config(Temporal::Vos);
    c.tracker.max_missed_detection_count = 0;
    c.tracker.mem_every = 4;
    let (mut tr, h) = tracker(&c, SegmenterKind::Reference, true, vos_script);
    let out = run_without_lag(&mut tr, 16);
    let ids = |t: usize| out[t].segmentation().map.ids();
    assert_eq!(ids(4), vec![1]);
    assert_eq!(ids(5), vec![1, 2]);
    assert_eq!(ids(8), vec![1, 2, 3]);
    assert_eq!(ids(15), vec![1, 2, 3, 4]);
    // Object 2 is given over part of object 1: 1 keeps only what 2 does not claim.
    let mut one = rect(W, H, 2, 2, 10, 10);
    for (d, &v) in one
        .data_mut()
        .iter_mut()
        .zip(rect(W, H, 8, 8, 10, 10).data())
    {
        *d &= !v;
    }
    assert_eq!(out[5].segmentation().map.mask(1), one);
    // Re-listed object 1 is overwritten with its new mask (no new id, no crash).
    assert_eq!(out[8].segmentation().map.mask(1), rect(W, H, 30, 2, 10, 10));
    assert_eq!(
        out[15].segmentation().map.mask(1),
        rect(W, H, 30, 2, 10, 10)
    );
    assert_eq!(out[15].objects.len(), 4);
    assert_eq!(out[15].objects[1].category_id, Some(7));
    // Channel order = insertion order; memory at given frames and every 4 frames after.
    let ups = h.updates();
    assert_eq!(ups[15].1, vec![1, 2, 3, 4]);
    assert_eq!(h.memorised(), vec![0, 4, 5, 8, 12, 13]);
    // Propagation is skipped only where a mask is given and nothing is tracked yet (frame 0).
    let calls = h.calls.borrow().clone();
    let propagated: Vec<usize> = calls
        .iter()
        .filter_map(|c| match c {
            Call::Propagate(t) => Some(*t),
            _ => None,
        })
        .collect();
    assert_eq!(propagated, (1..16).collect::<Vec<_>>());
}

#[test]
fn vos_given_step_zeroes_predictions_under_the_new_mask_then_aggregates() {
    let c = config(Temporal::Vos);
    let (mut tr, _h) = tracker(&c, SegmenterKind::Reference, true, vos_script);
    let mut out = Vec::new();
    for t in 0..6 {
        out.extend(tr.step(frame(t)).unwrap());
    }
    // The static propagator predicts frame 4's output for frame 5.
    let prev = &out[4].probs;
    let given = rect(W, H, 8, 8, 10, 10);
    let mut data = vec![0.0f32; W * H];
    data.extend(
        prev.object(1)
            .unwrap()
            .iter()
            .zip(given.data())
            .map(|(&v, &g)| if g { 0.0 } else { v }),
    );
    data.extend(given.data().iter().map(|&g| if g { 1.0 } else { 0.0 }));
    let expected = ObjectProbs::new(vec![1, 2], W, H, data)
        .unwrap()
        .aggregate();
    assert_eq!(out[5].probs, expected);
    // Frame 0: the aggregation of the one-hot given mask.
    let first = IdMap::from_vec(W, H, {
        let m = rect(W, H, 2, 2, 10, 10);
        m.data().iter().map(|&v| v as ObjectId).collect()
    })
    .unwrap();
    assert_eq!(
        out[0].probs,
        ObjectProbs::one_hot(&first, &[1]).unwrap().aggregate()
    );
}

/// Reads the cutie-judo masks (a reference segmenter); the one mask that is a pixel narrower
/// than the frames is resized to the frame, as a robust reader would.
struct JudoMasks {
    dir: std::path::PathBuf,
}

impl ImageSegmenter for JudoMasks {
    fn name(&self) -> &str {
        "judo-masks"
    }
    fn kind(&self) -> SegmenterKind {
        SegmenterKind::Reference
    }
    fn segment(&mut self, frame: &Frame, _: Option<&BinaryMask>) -> Result<Option<Segmentation>> {
        let path = self.dir.join(format!("{}.png", frame.name));
        if !path.exists() {
            return Ok(None);
        }
        let map = deva::imageio::read_index_png(&path)?.map;
        Ok(Some(Segmentation::from_map(
            map.resize_nearest(frame.width(), frame.height()),
        )))
    }
}

#[test]
fn vos_on_cutie_judo_keeps_every_object_introduced_mid_video() {
    let Some(root) = common::data("cutie-judo") else {
        return;
    };
    let images = root.join("images/judo");
    let masks = JudoMasks {
        dir: root.join("masks/judo"),
    };
    let mut names: Vec<String> = std::fs::read_dir(&images)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let mut vos = Config::default();
    vos.tracker.temporal = Temporal::Vos;
    let mut tracker = Tracker::new(
        &vos,
        Box::new(masks),
        Some(Box::new(StaticPropagator::new())),
    )
    .unwrap();
    let mut out = Vec::new();
    for (t, file) in names.iter().enumerate() {
        let image = deva::imageio::read_rgb(&images.join(file)).unwrap();
        let name = file.trim_end_matches(".jpg").to_string();
        let done = tracker
            .step(Frame {
                index: t,
                name,
                image: image.into(),
            })
            .unwrap();
        assert_eq!(indices(&done), vec![t]);
        out.extend(done);
    }
    // Objects appear with their masks (frames 0, 5, 8, 13) and none is ever dropped: with
    // zero motion each keeps its given mask minus what later given masks claimed.
    let (w, h) = (out[0].width, out[0].height);
    let given: Vec<(usize, BinaryMask)> = [(0, 1), (5, 2), (8, 3), (13, 4)]
        .iter()
        .map(|&(t, id)| {
            let p = root.join(format!("masks/judo/{t:05}.png"));
            let map = deva::imageio::read_index_png(&p).unwrap().map;
            (t, map.resize_nearest(w, h).mask(id))
        })
        .collect();
    for f in &out {
        let seg = f.segmentation();
        let live: Vec<usize> = given
            .iter()
            .filter(|g| g.0 <= f.index)
            .map(|g| g.0)
            .collect();
        assert_eq!(f.objects.len(), live.len(), "frame {}", f.index);
        for (k, (t, mask)) in given.iter().enumerate().filter(|(_, g)| g.0 <= f.index) {
            let mut expected = mask.clone();
            for (_, later) in given.iter().filter(|g| g.0 > *t && g.0 <= f.index) {
                for (e, &l) in expected.data_mut().iter_mut().zip(later.data()) {
                    *e &= !l;
                }
            }
            let id = k as ObjectId + 1;
            assert_eq!(seg.map.mask(id), expected, "object {id}, frame {}", f.index);
        }
    }
    assert_eq!(out.len(), names.len());
}
