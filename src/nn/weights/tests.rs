//! Tests of [`super::Weights`].

use super::*;
use crate::nn::checkpoint::RawTensor;

fn dict() -> StateDict {
    let mut d = StateDict::new("/tmp/x.pth");
    let f = |v: &[f32]| RawTensor::from_f32(vec![v.len()], v).unwrap();
    d.insert("bn.weight", f(&[1.0, 2.0]));
    d.insert("bn.bias", f(&[0.5, 0.0]));
    d.insert("module.count", RawTensor::from_i64(vec![], &[3]).unwrap());
    d
}

#[test]
fn problems_are_typed_and_name_the_key() {
    let w = Weights::from_state_dict(dict()).unwrap();
    let e = w
        .build(&Device::Cpu, &[], |vb| Ok(vb.pp("bn").get(3, "weight")?))
        .unwrap_err();
    match &e {
        Error::Checkpoint {
            path,
            problem:
                CheckpointProblem::Shape {
                    key,
                    expected,
                    found,
                },
        } => {
            assert_eq!(path, Path::new("/tmp/x.pth"));
            assert_eq!(
                (key.as_str(), expected, found),
                ("bn.weight", &vec![3], &vec![2])
            );
        }
        other => panic!("{other}"),
    }
    let e = w
        .build(&Device::Cpu, &[], |vb| Ok(vb.get(1, "conv.weight")?))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("missing key conv.weight (expected shape [1])"),
        "{e}"
    );
    let e = w
        .build(&Device::Cpu, &[], |vb| Ok(vb.get((), "module.count")?))
        .unwrap_err()
        .to_string();
    assert!(e.contains("module.count has type i64, expected f32"), "{e}");
}

#[test]
fn unused_keys_are_listed_once_loading_ends() {
    let w = Weights::from_state_dict(dict()).unwrap();
    let e = w
        .build(&Device::Cpu, &[], |vb| Ok(vb.get(2, "bn.weight")?))
        .unwrap_err();
    let Error::Checkpoint {
        problem: CheckpointProblem::Unexpected { keys },
        ..
    } = &e
    else {
        panic!("{e}")
    };
    assert_eq!(keys, &["bn.bias", "module.count"]);
    assert!(e
        .to_string()
        .contains("unexpected key bn.bias (2 unused keys in all)"));
    let w = Weights::from_state_dict(dict()).unwrap();
    let t = w
        .build(&Device::Cpu, &["module.count"], |vb| {
            let b = vb.pp("bn");
            Ok((b.get(2, "weight")?, b.get(2, "bias")?))
        })
        .unwrap();
    assert_eq!(t.1.to_vec1::<f32>().unwrap(), vec![0.5, 0.0]);
}

#[test]
fn a_common_prefix_is_stripped() {
    let mut d = StateDict::new("m.pth");
    d.insert(
        "module.a.bias",
        RawTensor::from_f32(vec![1], &[4.0]).unwrap(),
    );
    let w = Weights::from_state_dict(d)
        .unwrap()
        .strip_common_prefix("module.");
    assert_eq!(w.keys(), vec!["a.bias"]);
    assert_eq!(w.dims("a.bias").unwrap(), vec![1]);
    let v = w
        .build(&Device::Cpu, &[], |vb| Ok(vb.get(1, "a.bias")?))
        .unwrap();
    assert_eq!(v.to_vec1::<f32>().unwrap(), vec![4.0]);
}

#[test]
fn synthetic_weights_follow_the_layout() {
    let build = |vb: VarBuilder| -> Result<(Tensor, Tensor, Tensor)> {
        let bn = vb.pp("bn");
        let w = bn.get(4, "weight")?;
        let v = bn.get(4, "running_var")?;
        if bn.contains_tensor("num_batches_tracked") {
            bn.get_unchecked_dtype("num_batches_tracked", DType::I64)?;
        }
        Ok((w, v, vb.get(3, "ln.weight")?))
    };
    let layout = Weights::layout_of(build).unwrap();
    let names: Vec<&str> = layout.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "bn.weight",
            "bn.running_var",
            "bn.num_batches_tracked",
            "ln.weight"
        ]
    );
    assert_eq!(layout[2].dtype, TensorDType::I64);
    let (w, v, ln) = Weights::synthetic(5, &Device::Cpu, build).unwrap();
    let want = |n: &str, k, bn| synthetic::float_values(n, &[k], bn, 5);
    assert_eq!(w.to_vec1::<f32>().unwrap(), want("bn.weight", 4, true));
    assert_eq!(v.to_vec1::<f32>().unwrap(), want("bn.running_var", 4, true));
    assert_eq!(ln.to_vec1::<f32>().unwrap(), want("ln.weight", 3, false));
}

/// A network's read takes the tensor out of memory, so that the checkpoint and the built
/// network never coexist in full; the key keeps its shape, and a second read is refused by
/// name. Listing every tensor (to convert a checkpoint) takes nothing.
#[test]
fn a_read_tensor_leaves_memory() {
    let w = Weights::from_state_dict(dict()).unwrap();
    assert_eq!(w.tensors().unwrap().len(), 3);
    let held = |key: &str| match &w.inner.source {
        Source::Memory { tensors, .. } => tensors.lock().unwrap().contains_key(key),
        _ => panic!("a state dict is held in memory"),
    };
    let vb = w.var_builder(&Device::Cpu);
    let t = vb.get(2, "bn.weight").unwrap();
    assert_eq!(t.to_vec1::<f32>().unwrap(), [1.0, 2.0]);
    assert!(!held("bn.weight") && held("bn.bias"));
    assert!(w.contains("bn.weight"));
    assert_eq!(w.dims("bn.weight").unwrap(), [2]);
    let e = vb.get(2, "bn.weight").unwrap_err().to_string();
    assert!(e.contains("key bn.weight was read twice"), "{e}");
}
