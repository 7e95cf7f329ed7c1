//! Pickled dicts of numpy arrays (detectron2 `.pkl`): read through the safe pickle reader,
//! which accepts numpy's array reconstruction and nothing that executes code.

use super::{flatten, RawTensor, Select, StateDict, TensorDType, MAX_ENTRIES};
use crate::error::{Error, Result};
use crate::nn::pickle::{self, NumpyArray, Value};
use std::path::Path;

/// Reads a pickle of (nested) dicts of numpy arrays, as detectron2's `model_final_*.pkl`,
/// without executing code (only numpy's array reconstruction is accepted).
pub fn load_pkl(path: impl AsRef<Path>, key_path: &[&str]) -> Result<StateDict> {
    read_pkl(path.as_ref(), Select::Path(key_path))
}

/// [`load_pkl`] with the dict that holds the tensors chosen by `select`.
pub(super) fn read_pkl(path: &Path, select: Select) -> Result<StateDict> {
    let err = |m: String| Error::checkpoint(path, m);
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let root = pickle::unpickle(&bytes).map_err(err)?;
    let node = super::select(root, select).map_err(err)?;
    let mut arrays = Vec::new();
    let array = |v: &Value| match v {
        Value::Array(a) => Some(a.clone()),
        _ => None,
    };
    let mut budget = MAX_ENTRIES;
    flatten(&node, "", 0, &mut budget, &array, &mut arrays).map_err(err)?;
    let mut out = StateDict::new(path);
    for (name, a) in arrays {
        let t = numpy_to_raw(&a.borrow()).map_err(|m| err(format!("array '{name}': {m}")))?;
        out.insert(name, t);
    }
    Ok(out)
}

/// The tensor type of a numpy type code, little-endian only.
fn numpy_dtype(d: &pickle::NumpyDtype) -> std::result::Result<TensorDType, String> {
    let t = match d.code.as_str() {
        "f4" => TensorDType::F32,
        "f8" => TensorDType::F64,
        "f2" => TensorDType::F16,
        "i8" => TensorDType::I64,
        "i4" => TensorDType::I32,
        "i2" => TensorDType::I16,
        "i1" => TensorDType::I8,
        "u1" => TensorDType::U8,
        "b1" => TensorDType::Bool,
        other => return Err(format!("unsupported numpy dtype '{other}'")),
    };
    if d.order == '>' {
        return Err(format!("big-endian numpy dtype '>{}'", d.code));
    }
    Ok(t)
}

/// A contiguous row-major tensor from a pickled numpy array.
fn numpy_to_raw(a: &NumpyArray) -> std::result::Result<RawTensor, String> {
    let d = a
        .dtype
        .as_ref()
        .ok_or("array was never filled (no BUILD)")?;
    let dtype = numpy_dtype(d)?;
    let es = dtype.size();
    let numel: usize = a.shape.iter().product();
    if a.data.len() != numel * es {
        return Err(format!(
            "{} bytes for shape {:?} of '{}' (truncated file?)",
            a.data.len(),
            a.shape,
            d.code
        ));
    }
    let bytes = if a.fortran && a.shape.len() > 1 {
        // Column-major: element (i0, i1, ...) is at i0 + n0·(i1 + n1·(...)).
        let mut bytes = Vec::with_capacity(a.data.len());
        let mut idx = vec![0usize; a.shape.len()];
        for _ in 0..numel {
            let mut e = 0;
            for d in (0..idx.len()).rev() {
                e = e * a.shape[d] + idx[d];
            }
            bytes.extend_from_slice(&a.data[e * es..(e + 1) * es]);
            for d in (0..idx.len()).rev() {
                idx[d] += 1;
                if idx[d] < a.shape[d] {
                    break;
                }
                idx[d] = 0;
            }
        }
        bytes
    } else {
        a.data.to_vec()
    };
    RawTensor::new(dtype, a.shape.clone(), bytes).map_err(|e| e.to_string())
}
