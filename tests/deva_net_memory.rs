//! The DEVA propagator's memory and robustness: bounded memory on long videos, alignment
//! without side effects, chunked objects, errors on bad input (synthetic weights).

mod common;

use candle_core::{Device, Tensor};
use common::deva::{host, max_abs_diff, moving_squares, square_masks};
use deva::config::{MemoryConfig, UsageCounting};
use deva::mask::ObjectProbs;
use deva::nn::synthetic;
use deva::propagator::deva::memory::{FrameKeys, Memory, MemorySettings};
use deva::propagator::deva::network::{KEY_DIM, VALUE_DIM};
use deva::propagator::deva::DevaPropagator;
use deva::propagator::Propagator;

#[test]
fn long_video_memory_stays_bounded() {
    let config = MemoryConfig {
        top_k: 30,
        max_mid_term_frames: 4,
        min_mid_term_frames: 2,
        max_long_term_elements: 40,
        num_prototypes: 8,
        enable_long_term: true,
        long_term_usage: UsageCounting::On,
        chunk_size: -1,
    };
    let size = 32;
    let mut prop = DevaPropagator::synthetic(0, &config, &Device::Cpu).unwrap();
    let tokens = (size / 16) * (size / 16);
    let mut most_long_term = 0;
    let frames = 210;
    for t in 0..frames {
        let frame = moving_squares(t, size);
        let mut masks = if t == 0 {
            square_masks(&frame)
        } else {
            prop.propagate(&frame).unwrap()
        };
        if t == 100 {
            // A third object appears (its own bucket): the square of object 2, re-labelled.
            let mut data = masks.data().to_vec();
            let plane = size * size;
            let obj2: Vec<f32> = data[2 * plane..3 * plane].to_vec();
            data.extend(obj2.iter().map(|&p| if p > 0.5 { 1.0 } else { 0.0 }));
            masks = ObjectProbs::new(vec![1, 2, 3], size, size, data).unwrap();
        }
        if t == 150 {
            prop.remove_objects(&[1]).unwrap();
            masks = masks.select(&[2, 3]);
        }
        prop.update(&frame, &masks, true).unwrap();
        prop.release_frame(t);
        let sizes = prop.memory().sizes();
        // Object 3 opened a second bucket; removing object 1 leaves object 2 in the first.
        assert_eq!(sizes.len(), if t < 100 { 1 } else { 2 }, "frame {t}");
        for s in &sizes {
            assert!(
                s.working <= config.max_mid_term_frames * tokens,
                "frame {t}: {s:?}"
            );
            assert!(
                s.long_term <= config.max_long_term_elements,
                "frame {t}: {s:?}"
            );
            most_long_term = most_long_term.max(s.long_term);
        }
        assert!(masks.data().iter().all(|v| v.is_finite()));
    }
    // Consolidation filled long-term memory, so eviction ran.
    assert!(most_long_term > config.max_long_term_elements - config.num_prototypes);
    assert_eq!(prop.objects(), &[2, 3]);
}

#[test]
fn memory_bounds_hold_at_default_settings() {
    let d = MemoryConfig::default();
    let mut memory = Memory::new(MemorySettings {
        top_k: d.top_k,
        max_frames: d.max_mid_term_frames,
        min_frames: d.min_mid_term_frames,
        max_long_term: d.max_long_term_elements,
        prototypes: d.num_prototypes,
        long_term: d.enable_long_term,
        count_long_term_usage: true,
    });
    // 6x6 tokens per frame: (T_max − T_min) frames hold more candidates than prototypes.
    let hw = 36;
    let pseudo = |n: usize, seed: u64| -> Vec<f32> {
        (0..n as u64)
            .map(|i| (synthetic::splitmix64(seed * 1_000_003 + i) >> 40) as f32 / 16_777_216.0)
            .collect()
    };
    let mut most = 0;
    for t in 0..450u64 {
        let tensor =
            |v: Vec<f32>, shape: &[usize]| Tensor::from_vec(v, shape, &Device::Cpu).unwrap();
        let keys = FrameKeys {
            key: tensor(pseudo(hw * KEY_DIM, 3 * t), &[hw, KEY_DIM]),
            shrinkage: tensor(
                pseudo(hw, 3 * t + 1).iter().map(|v| v + 1.0).collect(),
                &[hw],
            ),
            selection: tensor(pseudo(hw * KEY_DIM, 3 * t + 2), &[hw, KEY_DIM]),
        };
        let value = vec![(
            7,
            tensor(pseudo(hw * VALUE_DIM, t + 99_999), &[hw, VALUE_DIM]),
        )];
        memory.add(&keys, &value).unwrap();
        let out = memory.read(&keys.key, &keys.selection).unwrap();
        assert!(host(&out[0].1).iter().all(|v| v.is_finite()));
        let s = memory.sizes()[0];
        assert!(s.working <= d.max_mid_term_frames * hw, "frame {t}: {s:?}");
        assert!(s.long_term <= d.max_long_term_elements, "frame {t}: {s:?}");
        most = most.max(s.long_term);
    }
    assert!(
        most > d.max_long_term_elements - d.num_prototypes,
        "eviction never ran"
    );
}

#[test]
fn align_leaves_the_tracker_state_untouched() {
    let config = MemoryConfig::default();
    let size = 48;
    let mut a = DevaPropagator::synthetic(1, &config, &Device::Cpu).unwrap();
    let mut b = DevaPropagator::synthetic(1, &config, &Device::Cpu).unwrap();
    let f0 = moving_squares(0, size);
    let masks = square_masks(&f0);
    for p in [&mut a, &mut b] {
        p.update(&f0, &masks, true).unwrap();
    }
    for t in 1..4 {
        let f = moving_squares(t, size);
        let pa = a.propagate(&f).unwrap();
        // b additionally aligns another frame's masks onto this one, in between.
        let other = moving_squares(10 + t, size);
        let aligned = b.align(&other, &square_masks(&other), &f).unwrap();
        assert_eq!(aligned.ids(), &[1, 2]);
        assert!(aligned.data().iter().all(|v| v.is_finite()));
        let pb = b.propagate(&f).unwrap();
        assert_eq!(pa, pb, "frame {t}");
        a.update(&f, &pa, t % 2 == 0).unwrap();
        b.update(&f, &pb, t % 2 == 0).unwrap();
        assert_eq!(a.memory().sizes(), b.memory().sizes());
    }
}

/// Objects encoded and decoded all at once, one at a time or two at a time give the same
/// masks bit for bit: every convolution computes each object apart.
#[test]
fn chunked_objects_give_the_same_masks() {
    let size = 48;
    let mut probs = Vec::new();
    for chunk in [-1, 1, 2] {
        let config = MemoryConfig {
            chunk_size: chunk,
            ..MemoryConfig::default()
        };
        let mut p = DevaPropagator::synthetic(2, &config, &Device::Cpu).unwrap();
        let f0 = moving_squares(0, size);
        p.update(&f0, &square_masks(&f0), true).unwrap();
        let f1 = moving_squares(1, size);
        let r = p.propagate(&f1).unwrap();
        p.update(&f1, &r, true).unwrap();
        probs.push(p.propagate(&moving_squares(2, size)).unwrap());
    }
    for other in &probs[1..] {
        assert_eq!(max_abs_diff(probs[0].data(), other.data()), 0.0);
    }
}

#[test]
fn bad_inputs_are_errors_naming_the_frame() {
    let mut p = DevaPropagator::synthetic(3, &MemoryConfig::default(), &Device::Cpu).unwrap();
    let f0 = moving_squares(0, 48);
    let masks = square_masks(&f0);
    p.update(&f0, &masks, true).unwrap();
    let small = moving_squares(1, 32);
    let e = p.propagate(&small).unwrap_err().to_string();
    assert!(e.contains("frame 1") && e.contains("32x32"), "{e}");
    let f1 = moving_squares(1, 48);
    let e = p
        .update(&f1, &masks.select(&[2]), false)
        .unwrap_err()
        .to_string();
    assert!(e.contains("frame 1") && e.contains("object 1"), "{e}");
    let bad = MemoryConfig {
        min_mid_term_frames: 20,
        ..MemoryConfig::default()
    };
    assert!(DevaPropagator::synthetic(3, &bad, &Device::Cpu).is_err());
}
