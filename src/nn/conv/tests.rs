//! Tests of the convolution against candle's own `conv2d`, for both kernels.

use super::*;
use candle_core::Device;

/// `n` values in [−0.5, 0.5) from `seed`.
pub(super) fn pseudo(n: usize, seed: u64) -> Vec<f32> {
    (0..n as u64)
        .map(|i| {
            let z = crate::nn::synthetic::splitmix64(seed.wrapping_add(i));
            (z >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        })
        .collect()
}

/// The error allowed against candle's tap sums, relative to the outputs' magnitude (at least
/// 1): f32 rounding of sums in another order, 1e-5; F(4×4, 3×3)'s transforms, whose
/// coefficients reach 8 and 1/24, round to up to 1.6e-5 on the 600-channel case, so 5e-5.
fn tolerance(conv: &Conv2d) -> f32 {
    match conv.geometry.path {
        Path::Winograd(Tile::F4) => 5e-5,
        _ => 1e-5,
    }
}

/// Every kernel.
const KERNELS: [ConvKernel; 5] = [
    ConvKernel::Products,
    ConvKernel::Direct,
    ConvKernel::Winograd,
    ConvKernel::Winograd4x4,
    ConvKernel::WinogradLean,
];

/// Compares with candle's own conv2d (an independent implementation) for every path and
/// kernel, with and without dilation and the fused activations.
#[test]
fn matches_candle_conv2d() {
    for kernel in KERNELS {
        matches_candle_conv2d_with(kernel);
    }
}

fn matches_candle_conv2d_with(kernel: ConvKernel) {
    let dev = Device::Cpu;
    let cases = [
        // (c_in, c_out, k, stride, pad, dilation, h, w)
        (3, 5, 7, 2, 3, 1, 21, 18),
        (2, 1, 7, 1, 3, 1, 9, 11),
        (40, 6, 3, 1, 1, 1, 10, 13),
        (40, 6, 3, 2, 1, 1, 11, 12),
        (33, 7, 1, 1, 0, 1, 5, 6),
        (33, 7, 1, 2, 0, 1, 9, 7),
        (20, 4, 3, 1, 2, 2, 12, 13),
        (40, 5, 3, 1, 8, 8, 14, 15),
        (40, 3, 3, 2, 2, 2, 13, 12),
        // Eight output channels or more: the direct kernel where the CPU has it (tiles of
        // several rows and of part of one, channels padded to whole tiles, stride 2,
        // input channels in several chunks).
        (40, 16, 3, 1, 1, 1, 10, 13),
        (20, 12, 3, 1, 2, 2, 12, 13),
        (3, 16, 3, 2, 1, 1, 21, 18),
        (70, 9, 3, 1, 1, 1, 7, 50),
        (16, 24, 1, 2, 0, 1, 9, 7),
        (33, 8, 1, 1, 0, 1, 5, 6),
        (600, 16, 3, 1, 1, 1, 6, 5),
        (600, 16, 3, 1, 2, 2, 9, 8),
        // Winograd: odd and even sides, one row or column, many blocks of tile rows.
        (40, 16, 3, 1, 1, 1, 1, 7),
        (40, 5, 3, 1, 1, 1, 9, 1),
        (30, 20, 3, 1, 1, 1, 70, 9),
        (29, 7, 3, 1, 1, 1, 2, 2),
        // Rows of whole lane groups of 4 × 4 tiles and a partial one, heights that are no
        // multiple of 2 or 4.
        (40, 10, 3, 1, 1, 1, 11, 45),
        (36, 6, 3, 1, 1, 1, 6, 64),
        // Groups of 16 tiles (AVX-512) ending in 17–31 columns, and two whole ones and a part.
        (40, 10, 3, 1, 1, 1, 5, 25),
        (30, 9, 3, 1, 1, 1, 3, 70),
        // Wide enough that the direct kernel hands it to F(2×2, 3×3).
        (200, 200, 3, 1, 1, 1, 5, 6),
        // Several blocks of output channels on the lean Winograd path, the last one partial.
        (40, 150, 3, 1, 1, 1, 7, 9),
        // One output channel from many on the shifted views: blocks of rows bounded by their
        // input, not their accumulator.
        (300, 1, 3, 1, 2, 2, 80, 30),
    ];
    for (i, &(c_in, c_out, k, stride, pad, dil, h, w)) in cases.iter().enumerate() {
        let shape = ConvShape {
            c_in,
            c_out,
            k,
            stride,
            pad,
        };
        let wv = pseudo(c_out * c_in * k * k, 10 + i as u64);
        let bv = pseudo(c_out, 20 + i as u64);
        let conv = Conv2d::dilated(
            ConvWeights {
                shape,
                weight: Tensor::from_vec(wv.clone(), (c_out, c_in, k, k), &dev).unwrap(),
                bias: Tensor::from_vec(bv.clone(), c_out, &dev).unwrap(),
            },
            dil,
            kernel,
        )
        .unwrap();
        let direct = conv.geometry.path == Path::Direct;
        let winograd_fits = (k, stride, pad, dil) == (3, 1, 1, 1) && c_in * 9 > COLUMN_BUFFER_MAX_K;
        assert_eq!(
            direct,
            kernel == ConvKernel::Direct
                && (k, stride, pad) != (1, 1, 0)
                && direct::suits(c_in, c_out, k, stride, winograd_fits),
            "case {i}: {kernel:?} chose {:?}",
            conv.geometry.path
        );
        let tile = match kernel {
            ConvKernel::Winograd4x4 => Some(Tile::F4),
            ConvKernel::Winograd | ConvKernel::WinogradLean => Some(Tile::F2),
            ConvKernel::Direct if !direct => Some(direct::winograd_tile(c_in, c_out)),
            _ => None,
        };
        let chosen = match conv.geometry.path {
            Path::Winograd(tile) if kernel != ConvKernel::WinogradLean => Some(tile),
            Path::WinogradLean if kernel == ConvKernel::WinogradLean => Some(Tile::F2),
            _ => None,
        };
        assert_eq!(
            chosen,
            tile.filter(|_| winograd_fits),
            "case {i}: {kernel:?} chose {:?}",
            conv.geometry.path
        );
        let x =
            Tensor::from_vec(pseudo(2 * c_in * h * w, i as u64), (2, c_in, h, w), &dev).unwrap();
        let ours = conv.forward(&x).unwrap();
        let wt = Tensor::from_vec(wv, (c_out, c_in, k, k), &dev).unwrap();
        let bt = Tensor::from_vec(bv, (1, c_out, 1, 1), &dev).unwrap();
        let theirs = x
            .conv2d(&wt, pad, stride, dil, 1)
            .unwrap()
            .broadcast_add(&bt)
            .unwrap();
        // The long reductions of the many-channel case reach values near 10.
        let scale = theirs.abs().unwrap().max_all().unwrap();
        let tol = tolerance(&conv) * scale.to_scalar::<f32>().unwrap().max(1.0);
        let d = crate::nn::max_abs_diff(&ours, &theirs);
        assert!(d < tol, "case {i} ({kernel:?}): max diff {d}");
        let relu = conv.forward_relu(&x).unwrap();
        let d = crate::nn::max_abs_diff(&relu, &theirs.relu().unwrap());
        assert!(d < tol, "case {i} ({kernel:?}) with ReLU: max diff {d}");
        let gelu = conv.forward_act(&x, Activation::GeluErf).unwrap();
        let d = crate::nn::max_abs_diff(&gelu, &theirs.gelu_erf().unwrap());
        assert!(d < tol, "case {i} ({kernel:?}) with GELU: max diff {d}");
    }
}

/// The convolution of channel parts plus a residual equals candle's convolution of the
/// concatenation, activated, plus the residual, on every path (within [`tolerance`]: the
/// outputs are below 2).
#[test]
fn parts_and_residual_match_the_concatenation() {
    let dev = Device::Cpu;
    let cases = [(16, 3), (3, 3), (12, 1)];
    for (i, (&(c_out, k), kernel)) in cases
        .iter()
        .flat_map(|c| KERNELS.map(|k| (c, k)))
        .enumerate()
    {
        let (c1, c2, h, w) = (5, 7, 9, 11);
        let shape = ConvShape::same(c1 + c2, c_out, k);
        let wv = pseudo(c_out * (c1 + c2) * k * k, 30 + i as u64);
        let wt = Tensor::from_vec(wv, (c_out, c1 + c2, k, k), &dev).unwrap();
        let bt = Tensor::from_vec(pseudo(c_out, 40 + i as u64), c_out, &dev).unwrap();
        let conv = Conv2d::new(
            ConvWeights {
                shape,
                weight: wt.clone(),
                bias: bt.clone(),
            },
            kernel,
        )
        .unwrap();
        let a = Tensor::from_vec(pseudo(c1 * h * w, 1), (1, c1, h, w), &dev).unwrap();
        let b = Tensor::from_vec(pseudo(c2 * h * w, 2), (1, c2, h, w), &dev).unwrap();
        let r = Tensor::from_vec(pseudo(c_out * h * w, 3), (1, c_out, h, w), &dev).unwrap();
        let ours = conv
            .forward_with(&[&a, &b], Activation::Relu, Some(&r))
            .unwrap();
        let theirs = (Tensor::cat(&[&a, &b], 1)
            .unwrap()
            .conv2d(&wt, k / 2, 1, 1, 1)
            .unwrap()
            .broadcast_add(&bt.reshape((1, c_out, 1, 1)).unwrap())
            .unwrap()
            .relu()
            .unwrap()
            + &r)
            .unwrap();
        let d = crate::nn::max_abs_diff(&ours, &theirs);
        let tol = tolerance(&conv);
        assert!(d < tol, "c_out {c_out}, k {k} ({kernel:?}): max diff {d}");
        let x = Tensor::cat(&[&a, &b], 1).unwrap();
        let ours = conv.forward_add_act(&x, &r, Activation::Relu).unwrap();
        let theirs = (x
            .conv2d(&wt, k / 2, 1, 1, 1)
            .unwrap()
            .broadcast_add(&bt.reshape((1, c_out, 1, 1)).unwrap())
            .unwrap()
            + &r)
            .unwrap()
            .relu()
            .unwrap();
        let d = crate::nn::max_abs_diff(&ours, &theirs);
        assert!(
            d < tol,
            "c_out {c_out}, k {k} ({kernel:?}), residual first: max diff {d}"
        );
        let bad = conv.forward_with(&[&a, &a], Activation::Relu, None);
        assert!(bad.unwrap_err().to_string().contains("input channels"));
    }
}

/// A ReLU fused into the input and a residual of one image added to a batch of three give
/// the unfused operations' values bit for bit (same products, same additions) on every path,
/// and candle's convolution within f32 rounding; a residual of another batch is refused.
#[test]
fn input_relu_and_one_image_residual_equal_the_unfused_operations() {
    let dev = Device::Cpu;
    for (i, (&(c_out, k), kernel)) in [(16, 3), (3, 3), (12, 1)]
        .iter()
        .flat_map(|c| KERNELS.map(|k| (c, k)))
        .enumerate()
    {
        // 40 input channels: long enough a reduction for the Winograd path.
        let (c_in, h, w) = (40, 8, 10);
        let wt = Tensor::from_vec(
            pseudo(c_out * c_in * k * k, 50 + i as u64),
            (c_out, c_in, k, k),
            &dev,
        )
        .unwrap();
        let bt = Tensor::from_vec(pseudo(c_out, 60 + i as u64), c_out, &dev).unwrap();
        let conv = Conv2d::new(
            ConvWeights {
                shape: ConvShape::same(c_in, c_out, k),
                weight: wt.clone(),
                bias: bt.clone(),
            },
            kernel,
        )
        .unwrap();
        let x = Tensor::from_vec(pseudo(3 * c_in * h * w, 4), (3, c_in, h, w), &dev).unwrap();
        let r = Tensor::from_vec(pseudo(c_out * h * w, 5), (1, c_out, h, w), &dev).unwrap();
        for before in [false, true] {
            let fused = conv
                .forward_of_relu(&[&x], Activation::Relu, Some((&r, before)))
                .unwrap();
            let y = conv.forward(&x.relu().unwrap()).unwrap();
            let unfused = if before {
                y.broadcast_add(&r).unwrap().relu().unwrap()
            } else {
                y.relu().unwrap().broadcast_add(&r).unwrap()
            };
            let d = crate::nn::max_abs_diff(&fused, &unfused);
            assert_eq!(d, 0.0, "c_out {c_out}, k {k} ({kernel:?}), before {before}");
            let theirs = x
                .relu()
                .unwrap()
                .conv2d(&wt, k / 2, 1, 1, 1)
                .unwrap()
                .broadcast_add(&bt.reshape((1, c_out, 1, 1)).unwrap())
                .unwrap();
            let theirs = if before {
                theirs.broadcast_add(&r).unwrap().relu().unwrap()
            } else {
                theirs.relu().unwrap().broadcast_add(&r).unwrap()
            };
            let d = crate::nn::max_abs_diff(&fused, &theirs);
            assert!(
                d < tolerance(&conv),
                "c_out {c_out}, k {k} ({kernel:?}): max diff {d} from candle"
            );
        }
        let r2 = Tensor::zeros((2, c_out, h, w), DType::F32, &dev).unwrap();
        let bad = conv.forward_with(&[&x], Activation::Identity, Some(&r2));
        assert!(bad.unwrap_err().to_string().contains("residual"));
    }
}
