//! The DEVA propagator end to end against the official engine (`eval_vos` loop) on every run of
//! `$DEVA_FIXTURES/deva_net/engine.safetensors`, alone and driven by the tracker in reference
//! mode, within the per-run, per-frame tolerance of the fixture README.

mod common;

use candle_core::Device;
use common::deva::{check_engine_frame, each_engine_run, variant_config};
use deva::mask::{IdMap, ObjectProbs};
use deva::propagator::deva::DevaPropagator;
use deva::propagator::Propagator;
use deva::segmenter::{ImageSegmenter, SegmenterKind};
use deva::tracker::Tracker;
use deva::video::Frame;

#[test]
fn engine_variants_match_the_reference() {
    each_engine_run(|sd, tol, key, video, v, net| {
        let config = variant_config(v);
        let mem_every = v["mem_every"].as_u64().unwrap() as usize;
        let mut prop = DevaPropagator::new(net.clone(), &config, &Device::Cpu).unwrap();
        let last = video.frames.len() - 1;
        let mut last_mem = 0;
        for (t, frame) in video.frames.iter().enumerate() {
            // The eval_vos loop: the given mask at t = 0, propagation afterwards; memory
            // every mem_every frames, never at the last frame.
            let (probs, memorize) = if t == 0 {
                let p = ObjectProbs::one_hot(&video.first, &video.objects).unwrap();
                (p.aggregate(), true)
            } else {
                let p = prop.propagate(frame).unwrap();
                (p, t - last_mem >= mem_every && t != last)
            };
            check_engine_frame(sd, tol, key, t, &probs);
            prop.update(frame, &probs, memorize).unwrap();
            if memorize {
                last_mem = t;
            }
            prop.release_frame(frame.index);
        }
    });
}

/// A reference segmenter that gives the first-frame mask of a VOS video and nothing later.
struct FirstMask(Option<IdMap>);

impl ImageSegmenter for FirstMask {
    fn name(&self) -> &str {
        "first-mask"
    }
    fn kind(&self) -> SegmenterKind {
        SegmenterKind::Reference
    }
    fn segment(
        &mut self,
        frame: &Frame,
        _tracked: Option<&deva::mask::BinaryMask>,
    ) -> deva::Result<Option<deva::mask::Segmentation>> {
        Ok(match (frame.index, &self.0) {
            (0, Some(map)) => Some(deva::mask::Segmentation::from_map(map.clone())),
            _ => None,
        })
    }
}

#[test]
fn tracker_in_reference_mode_matches_the_engine() {
    each_engine_run(|sd, tol, key, video, v, net| {
        let mut config = deva::Config::default();
        config.input.size = v["size"].as_i64().unwrap() as i32;
        config.tracker.mem_every = v["mem_every"].as_u64().unwrap() as usize;
        config.tracker.temporal = deva::config::Temporal::Vos;
        let prop = DevaPropagator::new(net.clone(), &variant_config(v), &Device::Cpu).unwrap();
        let seg = FirstMask(Some(video.first.clone()));
        let mut tracker = Tracker::new(&config, Box::new(seg), Some(Box::new(prop))).unwrap();
        let mut out = Vec::new();
        for frame in &video.frames {
            out.extend(tracker.step(frame.clone()).unwrap());
        }
        out.extend(tracker.finish().unwrap());
        assert_eq!(out.len(), video.frames.len(), "{key}");
        for (t, tf) in out.iter().enumerate() {
            assert_eq!(tf.index, t);
            check_engine_frame(sd, tol, key, t, &tf.probs.select(&video.objects));
        }
    });
}
