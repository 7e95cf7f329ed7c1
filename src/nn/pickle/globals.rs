//! The pickle reader's allow-list: the globals a state dict, numpy checkpoint or training
//! checkpoint may name, and what each of them builds when the program calls it.

use std::cell::RefCell;
use std::rc::Rc;

use super::{Callable, NumpyArray, NumpyDtype, StorageRef, TensorRef, Value};
use crate::nn::dtype::TensorDType;

/// Resolves a `module.name` global against the whitelist.
pub(super) fn resolve_global(module: &str, name: &str) -> Result<Callable, String> {
    let storage = |d| Ok(Callable::Storage(d));
    match (module, name) {
        ("collections", "OrderedDict") => Ok(Callable::OrderedDict),
        ("torch._utils", "_rebuild_tensor_v2") => Ok(Callable::RebuildTensor),
        ("torch._utils", "_rebuild_parameter") => Ok(Callable::RebuildParameter),
        ("torch", "FloatStorage") => storage(TensorDType::F32),
        ("torch", "DoubleStorage") => storage(TensorDType::F64),
        ("torch", "HalfStorage") => storage(TensorDType::F16),
        ("torch", "BFloat16Storage") => storage(TensorDType::BF16),
        ("torch", "LongStorage") => storage(TensorDType::I64),
        ("torch", "IntStorage") => storage(TensorDType::I32),
        ("torch", "ShortStorage") => storage(TensorDType::I16),
        ("torch", "CharStorage") => storage(TensorDType::I8),
        ("torch", "ByteStorage") => storage(TensorDType::U8),
        ("torch", "BoolStorage") => storage(TensorDType::Bool),
        ("numpy.core.multiarray" | "numpy._core.multiarray", "_reconstruct") => {
            Ok(Callable::NumpyReconstruct)
        }
        ("numpy.core.multiarray" | "numpy._core.multiarray", "scalar") => Ok(Callable::NumpyScalar),
        ("numpy", "ndarray") => Ok(Callable::NumpyNdarray),
        ("numpy", "dtype") => Ok(Callable::NumpyDtype),
        ("_codecs", "encode") => Ok(Callable::CodecsEncode),
        ("argparse", "Namespace") => Ok(Callable::Namespace),
        ("collections", "Counter") => Ok(Callable::Counter),
        ("torch.storage", "_load_from_bytes") => Err(format!(
            "refused global {module}.{name}: legacy (non-zip) PyTorch serialisation is not \
             supported; re-save the file with a current torch.save"
        )),
        _ => Err(format!(
            "refused global {module}.{name}: only state-dict globals (OrderedDict, tensor \
             rebuild, typed storages, numpy array reconstruction, argparse.Namespace, \
             Counter) are accepted, nothing is executed"
        )),
    }
}

pub(super) fn as_usize(v: &Value, what: &str) -> Result<usize, String> {
    match v {
        Value::Int(i) if *i >= 0 => Ok(*i as usize),
        other => Err(format!(
            "{what}: expected a non-negative int, found {}",
            other.kind()
        )),
    }
}

pub(super) fn as_usizes(v: &Value, what: &str) -> Result<Vec<usize>, String> {
    match v {
        Value::Tuple(items) => items.iter().map(|x| as_usize(x, what)).collect(),
        other => Err(format!("{what}: expected a tuple, found {}", other.kind())),
    }
}

/// Evaluates a whitelisted callable on its argument tuple.
pub(super) fn reduce(f: Value, args: Value) -> Result<Value, String> {
    let Value::Callable(c) = f else {
        return Err(format!(
            "refused pickle REDUCE of a {}: only whitelisted callables are evaluated",
            f.kind()
        ));
    };
    let Value::Tuple(args) = &args else {
        return Err("pickle REDUCE arguments are not a tuple".into());
    };
    match c {
        Callable::OrderedDict => {
            if !args.is_empty() {
                return Err("OrderedDict called with arguments".into());
            }
            Ok(Value::Dict(Rc::default()))
        }
        Callable::RebuildParameter => match args.first() {
            Some(t @ Value::Tensor(_)) => Ok(t.clone()),
            _ => Err("_rebuild_parameter without a tensor".into()),
        },
        Callable::RebuildTensor => {
            if args.len() < 4 {
                return Err("_rebuild_tensor_v2 with fewer than 4 arguments".into());
            }
            let Value::Storage(s) = &args[0] else {
                return Err(format!(
                    "_rebuild_tensor_v2 on a {} instead of a storage",
                    args[0].kind()
                ));
            };
            let offset = as_usize(&args[1], "tensor storage offset")?;
            let shape = as_usizes(&args[2], "tensor size")?;
            let stride = as_usizes(&args[3], "tensor stride")?;
            if shape.len() != stride.len() {
                return Err("tensor size and stride differ in length".into());
            }
            Ok(Value::Tensor(TensorRef {
                key: s.key.clone(),
                dtype: s.dtype,
                storage_len: s.len,
                offset,
                shape,
                stride,
            }))
        }
        Callable::Storage(_) => Err("a storage class cannot be called".into()),
        Callable::Namespace => {
            Err("argparse.Namespace is only built by NEWOBJ with no arguments".into())
        }
        Callable::Counter => match args.as_slice() {
            [] => Ok(Value::Dict(Rc::default())),
            [Value::Dict(d)] => Ok(Value::Dict(Rc::new(RefCell::new(d.borrow().clone())))),
            _ => Err("collections.Counter is only accepted on one dict".into()),
        },
        Callable::NumpyNdarray => Err("numpy.ndarray cannot be called directly".into()),
        Callable::NumpyReconstruct => match args.as_slice() {
            [Value::Callable(Callable::NumpyNdarray), shape, _] => {
                as_usizes(shape, "numpy _reconstruct shape")?;
                Ok(Value::Array(Rc::new(RefCell::new(NumpyArray {
                    dtype: None,
                    shape: Vec::new(),
                    fortran: false,
                    data: Rc::default(),
                }))))
            }
            _ => Err("numpy _reconstruct is only accepted for numpy.ndarray".into()),
        },
        Callable::NumpyDtype => match args.first() {
            Some(Value::Str(code)) => {
                let (order, code) = match code.chars().next() {
                    Some(c @ ('<' | '>' | '|' | '=')) => (c, code[1..].to_string()),
                    _ => ('|', code.clone()),
                };
                Ok(Value::Dtype(Rc::new(RefCell::new(NumpyDtype {
                    code,
                    order,
                }))))
            }
            _ => Err("numpy.dtype without a type code".into()),
        },
        Callable::NumpyScalar => Ok(Value::Opaque("numpy scalar")),
        Callable::CodecsEncode => match args.as_slice() {
            [Value::Str(text), Value::Str(enc)] if enc == "latin1" || enc == "latin-1" => {
                let bytes = text
                    .chars()
                    .map(|c| u8::try_from(c as u32).map_err(|_| "non-latin1 byte string"))
                    .collect::<Result<Vec<u8>, _>>()?;
                Ok(Value::Bytes(Rc::new(bytes)))
            }
            _ => Err("_codecs.encode is only accepted for latin1 byte strings".into()),
        },
    }
}

/// NEWOBJ `class.__new__(class, *args)`: only an argument-less `argparse.Namespace`, built as
/// an empty attribute dict that a following BUILD fills.
pub(super) fn new_object(class: Value, args: Value) -> Result<Value, String> {
    match (&class, &args) {
        (Value::Callable(Callable::Namespace), Value::Tuple(a)) if a.is_empty() => {
            Ok(Value::Namespace(Rc::default()))
        }
        (Value::Callable(Callable::Namespace), _) => {
            Err("refused pickle NEWOBJ of argparse.Namespace with arguments".into())
        }
        (Value::Callable(c), _) => Err(format!(
            "refused pickle NEWOBJ of {c:?}: only argparse.Namespace objects are constructed"
        )),
        (other, _) => Err(format!(
            "refused pickle NEWOBJ of a {}: only argparse.Namespace objects are constructed",
            other.kind()
        )),
    }
}

/// Fills an array from numpy's `__setstate__` tuple `(version, shape, dtype, fortran, data)`.
pub(super) fn build_array(a: &mut NumpyArray, state: Value) -> Result<(), String> {
    let Value::Tuple(items) = &state else {
        return Err("numpy array state is not a tuple".into());
    };
    let [_, shape, Value::Dtype(dtype), Value::Bool(fortran), Value::Bytes(data)] =
        items.as_slice()
    else {
        return Err(
            "numpy array state is not (version, shape, dtype, fortran, bytes) (object arrays \
             are refused)"
                .into(),
        );
    };
    a.shape = as_usizes(shape, "numpy array shape")?;
    a.dtype = Some(dtype.borrow().clone());
    a.fortran = *fortran;
    a.data = data.clone();
    Ok(())
}

/// Applies numpy's dtype `__setstate__` `(version, byte order, ...)`.
pub(super) fn build_dtype(d: &mut NumpyDtype, state: Value) -> Result<(), String> {
    match &state {
        Value::Tuple(items) => match items.get(1) {
            Some(Value::Str(o)) if o.len() == 1 => {
                d.order = o.chars().next().unwrap_or('|');
                Ok(())
            }
            _ => Err("numpy dtype state without a byte order".into()),
        },
        _ => Err("numpy dtype state is not a tuple".into()),
    }
}

/// Turns a persistent id `('storage', StorageType, key, location, numel)` (zip `.pth`), or the
/// legacy format's `(..., numel, None)` with no view, into a storage.
pub(super) fn persistent_storage(pid: Value) -> Result<StorageRef, String> {
    let Value::Tuple(items) = &pid else {
        return Err("persistent id is not a tuple".into());
    };
    let (head, view) = match items.as_slice() {
        [head @ .., view] if items.len() == 6 => (head, Some(view)),
        head => (head, None),
    };
    if let Some(view) = view {
        if !matches!(view, Value::Opaque("None")) {
            return Err(
                "persistent id names a storage view (torch < 0.4 format), which is not supported"
                    .into(),
            );
        }
    }
    match head {
        [Value::Str(tag), Value::Callable(Callable::Storage(dtype)), Value::Str(key), _, len]
            if tag == "storage" =>
        {
            Ok(StorageRef {
                key: key.clone(),
                dtype: *dtype,
                len: as_usize(len, "storage size")?,
            })
        }
        _ => Err("persistent id is not a typed storage reference".into()),
    }
}
