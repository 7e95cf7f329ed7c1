//! Parity of the deformable convolution with `torchvision.ops.deform_conv2d` on the cases of
//! `tests/data/deform_conv/cases.safetensors` (written by `tests/oracle/deform_conv/`), on both
//! the CPU op and the tensor-operation path.

use candle_core::{Device, Tensor};

use super::*;
use crate::nn::conv::{ConvShape, ConvWeights};
use crate::nn::max_abs_diff;

/// Largest absolute difference measured on the three cases: 0 for the CPU op, 2.4e-7 for the
/// tensor-operation path; the bound leaves room for other summation orders (other devices).
const TOLERANCE: f32 = 1e-5;

#[test]
fn matches_torchvision_deform_conv2d() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/deform_conv/cases.safetensors"
    );
    let t = candle_core::safetensors::load(path, &Device::Cpu).unwrap();
    let mut cases = 0;
    while let Some(x) = t.get(&format!("{cases}.x")) {
        let get = |name: &str| t.get(&format!("{cases}.{name}"));
        let weight = get("weight").unwrap().clone();
        let (c_out, c_in, k, _) = weight.dims4().unwrap();
        let geometry = get("geometry").unwrap().to_vec1::<i64>().unwrap();
        let [stride, pad, dilation, groups] = geometry[..] else {
            panic!("geometry of case {cases}")
        };
        let shape = ConvShape {
            c_in,
            c_out,
            k,
            stride: stride as usize,
            pad: pad as usize,
        };
        let w = ConvWeights {
            shape,
            weight,
            bias: get("bias").unwrap().clone(),
        };
        let conv = DeformConv2d::new(w, dilation as usize, groups as usize).unwrap();
        let offset = get("offset").unwrap();
        let mask = get("mask");
        let want = get("out").unwrap();
        for (path, y) in [
            ("cpu op", conv.forward(x, offset, mask).unwrap()),
            (
                "tensor ops",
                conv.forward_tensor_ops(x, offset, mask).unwrap(),
            ),
        ] {
            assert_eq!(y.dims(), want.dims(), "case {cases} {path}");
            let diff = max_abs_diff(&y, want);
            assert!(diff < TOLERANCE, "case {cases} {path}: {diff}");
        }
        cases += 1;
    }
    assert!(cases >= 3, "{cases} cases");
}

#[test]
fn shapes_that_do_not_fit_are_errors() {
    let dev = Device::Cpu;
    let shape = ConvShape::same(4, 2, 3);
    let w = ConvWeights {
        shape,
        weight: Tensor::zeros((2, 4, 3, 3), candle_core::DType::F32, &dev).unwrap(),
        bias: Tensor::zeros(2, candle_core::DType::F32, &dev).unwrap(),
    };
    assert!(DeformConv2d::new(w.clone(), 1, 3).is_err());
    let conv = DeformConv2d::new(w, 1, 2).unwrap();
    assert_eq!(conv.offset_channels(), 36);
    let x = Tensor::zeros((1, 4, 5, 5), candle_core::DType::F32, &dev).unwrap();
    let off = Tensor::zeros((1, 18, 5, 5), candle_core::DType::F32, &dev).unwrap();
    let e = conv.forward(&x, &off, None).unwrap_err().to_string();
    assert!(e.contains("offset"), "{e}");
}
