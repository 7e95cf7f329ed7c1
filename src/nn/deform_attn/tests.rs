//! Tests of multi-scale deformable attention and its helpers.

use super::*;
use std::collections::HashMap;

fn close(a: &[f32], b: &[f32]) {
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(b) {
        assert!((x - y).abs() < 1e-5, "{a:?} vs {b:?}");
    }
}

/// One level 2x3 with values 1..6 (row-major), one head of one channel.
fn sample(levels: &Levels, values: &[f32], locs: &[(f32, f32)], w: &[f32]) -> Vec<f32> {
    let dev = Device::Cpu;
    let n_levels = levels.shapes.len();
    let n_points = locs.len() / n_levels;
    let value = Tensor::from_vec(values.to_vec(), (1, values.len(), 1, 1), &dev).unwrap();
    let l: Vec<f32> = locs.iter().flat_map(|&(x, y)| [x, y]).collect();
    let l = Tensor::from_vec(l, (1, 1, 1, n_levels, n_points, 2), &dev).unwrap();
    let w = Tensor::from_vec(w.to_vec(), (1, 1, 1, n_levels, n_points), &dev).unwrap();
    ms_deform_sample(&value, levels, &l, &w)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

#[test]
fn sampler_matches_hand_computed_bilinear_values() {
    // Map (h=2, w=3):  1 2 3 / 4 5 6. Pixel centres are at normalised (j+0.5)/3, (i+0.5)/2.
    let one = Levels::new(vec![(2, 3)]);
    let v = [1., 2., 3., 4., 5., 6.];
    // Exactly on pixel (1, 2) = 6.
    close(&sample(&one, &v, &[(2.5 / 3.0, 0.75)], &[1.0]), &[6.0]);
    // Midway between the four top-left pixels: (1+2+4+5)/4 = 3.
    close(&sample(&one, &v, &[(1.0 / 3.0, 0.5)], &[1.0]), &[3.0]);
    // x = -0.25 px, row 0: 0.25 of an outside pixel (zero) + 0.75 of pixel (0, 0) = 0.75.
    close(&sample(&one, &v, &[(0.25 / 3.0, 0.25)], &[1.0]), &[0.75]);
    // Column 1, y = 1.5 px: half of pixel (1, 1) = 5 and half of an outside row.
    close(&sample(&one, &v, &[(1.5 / 3.0, 1.0)], &[1.0]), &[2.5]);
    // Far outside: zero.
    close(&sample(&one, &v, &[(-1.0, 2.0)], &[1.0]), &[0.0]);
    // Two points weighted 0.25 / 0.75: 0.25·6 + 0.75·3.
    close(
        &sample(
            &one,
            &v,
            &[(2.5 / 3.0, 0.75), (1.0 / 3.0, 0.5)],
            &[0.25, 0.75],
        ),
        &[3.75],
    );
    // Two levels: (2x3) then (1x2) with values 10, 20 starting at 6.
    let two = Levels::new(vec![(2, 3), (1, 2)]);
    let v2 = [1., 2., 3., 4., 5., 6., 10., 20.];
    // Level 1 at x = 0.5 (between its two pixels) → 15; level 0 on pixel (0, 0) → 1.
    close(
        &sample(&two, &v2, &[(0.5 / 3.0, 0.25), (0.5, 0.5)], &[0.5, 0.5]),
        &[8.0],
    );
}

/// The CPU kernel against the tensor-op path (run on the CPU too) on random values,
/// with locations reaching past every border.
#[test]
fn cpu_kernel_matches_tensor_ops() {
    let dev = Device::Cpu;
    let levels = Levels::new(vec![(5, 7), (3, 4), (1, 2)]);
    let (b, nq, heads, hd, np) = (2, 9, 2, 3, 4);
    let nl = levels.shapes.len();
    let uniform = |n: usize, seed: u64, lo: f32, hi: f32| -> Vec<f32> {
        (0..n as u64)
            .map(|i| {
                let z = crate::nn::synthetic::splitmix64(seed.wrapping_add(i));
                lo + (hi - lo) * ((z >> 40) as f32 / (1u64 << 24) as f32)
            })
            .collect()
    };
    let value = Tensor::from_vec(
        uniform(b * levels.len() * heads * hd, 1, -1.0, 1.0),
        (b, levels.len(), heads, hd),
        &dev,
    )
    .unwrap();
    let n = b * nq * heads * nl * np;
    let loc = Tensor::from_vec(
        uniform(2 * n, 2, -0.3, 1.3),
        (b, nq, heads, nl, np, 2),
        &dev,
    )
    .unwrap();
    let w = Tensor::from_vec(uniform(n, 3, 0.0, 1.0), (b, nq, heads, nl, np), &dev).unwrap();
    let kernel = ms_deform_sample(&value, &levels, &loc, &w).unwrap();
    let ops = sample_with_tensor_ops(&value, &levels, &loc, &w).unwrap();
    assert_eq!(kernel.dims(), &[b, nq, heads * hd]);
    let d = crate::nn::max_abs_diff(&kernel, &ops);
    assert!(d < 1e-5, "max diff {d}");
}

fn linear(map: &mut HashMap<String, Tensor>, name: &str, w: Tensor, b: Tensor) {
    map.insert(format!("{name}.weight"), w);
    map.insert(format!("{name}.bias"), b);
}

#[test]
fn block_offsets_points_by_level_size_and_by_box() {
    // d = 1, one head, one level of 1x4 with values 1..4, two points.
    let dev = Device::Cpu;
    let cfg = DeformAttnConfig {
        d_model: 1,
        n_levels: 1,
        n_heads: 1,
        n_points: 2,
    };
    let t = |v: Vec<f32>, s: &[usize]| Tensor::from_vec(v, s, &dev).unwrap();
    let mut map = HashMap::new();
    // Offsets (+1, 0) and (-1, 0) in pixels of the level, whatever the query.
    linear(
        &mut map,
        "sampling_offsets",
        t(vec![0.0; 4], &[4, 1]),
        t(vec![1.0, 0.0, -1.0, 0.0], &[4]),
    );
    linear(
        &mut map,
        "attention_weights",
        t(vec![0.0; 2], &[2, 1]),
        t(vec![0.0; 2], &[2]),
    );
    linear(
        &mut map,
        "value_proj",
        t(vec![1.0], &[1, 1]),
        t(vec![0.0], &[1]),
    );
    linear(
        &mut map,
        "output_proj",
        t(vec![2.0], &[1, 1]),
        t(vec![0.0], &[1]),
    );
    let vb = VarBuilder::from_tensors(map, DType::F32, &dev);
    let block = MultiScaleDeformableAttention::new(cfg, vb).unwrap();
    let levels = Levels::new(vec![(1, 4)]);
    let value = t(vec![1., 2., 3., 4.], &[1, 4, 1]);
    let query = t(vec![0.0], &[1, 1, 1]);
    // Reference at pixel 1's centre: samples pixels 2 and 0 → mean 2, times 2.
    let rp = t(vec![1.5 / 4.0, 0.5], &[1, 1, 1, 2]);
    let out = block.forward(&query, &rp, &value, &levels, None).unwrap();
    close(&out.flatten_all().unwrap().to_vec1().unwrap(), &[4.0]);
    // Padding pixel 2 out: only pixel 0 (value 1) and a zero → 0.5 · 2.
    let pad = Tensor::from_vec(vec![0u8, 0, 1, 0], (1, 4), &dev).unwrap();
    let out = block
        .forward(&query, &rp, &value, &levels, Some(&pad))
        .unwrap();
    close(&out.flatten_all().unwrap().to_vec1().unwrap(), &[1.0]);
    // Box form: centre x = 2.5/4, width 0.5: offsets ±1 / 2 points · 0.5 · 0.5 = ±0.125
    // normalised = ±0.5 px around pixel coordinate 2.0.
    let rp = t(vec![2.5 / 4.0, 0.5, 0.5, 1.0], &[1, 1, 1, 4]);
    let out = block.forward(&query, &rp, &value, &levels, None).unwrap();
    // Pixel coordinates 2.5 and 1.5: values 3.5 and 2.5, mean 3, times 2.
    close(&out.flatten_all().unwrap().to_vec1().unwrap(), &[6.0]);
    // Wrong reference-point width is refused.
    let rp = t(vec![0.5; 3], &[1, 1, 1, 3]);
    assert!(block.forward(&query, &rp, &value, &levels, None).is_err());
}

#[test]
fn reference_points_and_level_split() {
    let levels = Levels::new(vec![(2, 2), (1, 1)]);
    assert_eq!(levels.starts, vec![0, 4]);
    let rp = encoder_reference_points(&levels, std::slice::from_ref(&levels.shapes), &Device::Cpu)
        .unwrap();
    assert_eq!(rp.dims(), &[1, 5, 2, 2]);
    let v: Vec<f32> = rp.flatten_all().unwrap().to_vec1().unwrap();
    // Element 1 = level 0, (i=0, j=1): x = 0.75, y = 0.25 for both levels.
    close(&v[4..8], &[0.75, 0.25, 0.75, 0.25]);
    close(&v[16..20], &[0.5, 0.5, 0.5, 0.5]);
    // Second image: level 0 has one valid row and column (level 1 stays whole). Level 0's
    // element (0, 1) lies at x = 1.5 of 1 valid column, y = 0.5 of 1 valid row; scaled
    // by the ratios (0.5, 0.5) of level 0 and (1, 1) of level 1.
    let valid = [levels.shapes.clone(), vec![(1, 1), (1, 1)]];
    let rp = encoder_reference_points(&levels, &valid, &Device::Cpu).unwrap();
    assert_eq!(rp.dims(), &[2, 5, 2, 2]);
    let v: Vec<f32> = rp.flatten_all().unwrap().to_vec1().unwrap();
    close(&v[20 + 4..20 + 8], &[0.75, 0.25, 1.5, 0.5]);
    assert!(encoder_reference_points(&levels, &[vec![(1, 1)]], &Device::Cpu).is_err());
    let x = Tensor::arange(0f32, 10.0, &Device::Cpu)
        .unwrap()
        .reshape((1, 5, 2))
        .unwrap();
    let maps = split_levels(&x, &levels).unwrap();
    assert_eq!(maps[0].dims(), &[1, 2, 2, 2]);
    let m0: Vec<f32> = maps[0].flatten_all().unwrap().to_vec1().unwrap();
    close(&m0, &[0., 2., 4., 6., 1., 3., 5., 7.]);
}
