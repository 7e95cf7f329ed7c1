//! Checkpoint files: PyTorch `.pth` (zip + pickle, read without executing code), pickled
//! dicts of numpy arrays (detectron2 `.pkl`) and safetensors, loaded into a [`StateDict`] of
//! named tensors.
//!
//! The `.pth` reader is the project's own (the `pickle` module's allow-list): it
//! never executes pickled code, and it gathers strided (non-contiguous) views, which candle's
//! `.pth` reader refuses. Storage records are read one at a time and dropped once their views
//! are cut out.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};

pub use super::dtype::TensorDType;
use super::pickle::{self, Value};
use crate::error::{Error, Result};

/// One tensor of a checkpoint: dtype, shape and contiguous little-endian bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct RawTensor {
    dtype: TensorDType,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

impl RawTensor {
    /// A tensor from contiguous little-endian bytes; the length must match the shape.
    pub fn new(dtype: TensorDType, shape: Vec<usize>, bytes: Vec<u8>) -> Result<Self> {
        let n: usize = shape.iter().product();
        if bytes.len() != n * dtype.size() {
            return Err(Error::invalid(format!(
                "tensor of shape {shape:?} and type {} needs {} bytes, got {}",
                dtype.torch_name(),
                n * dtype.size(),
                bytes.len()
            )));
        }
        Ok(RawTensor {
            dtype,
            shape,
            bytes,
        })
    }

    /// A float32 tensor.
    pub fn from_f32(shape: Vec<usize>, values: &[f32]) -> Result<Self> {
        let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        RawTensor::new(TensorDType::F32, shape, bytes)
    }

    /// An int64 tensor.
    pub fn from_i64(shape: Vec<usize>, values: &[i64]) -> Result<Self> {
        let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        RawTensor::new(TensorDType::I64, shape, bytes)
    }

    /// Element type.
    pub fn dtype(&self) -> TensorDType {
        self.dtype
    }

    /// Shape.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// Raw little-endian bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The values as f32 (floats are converted; integer tensors are refused).
    pub fn to_f32(&self) -> Option<Vec<f32>> {
        let b = &self.bytes;
        let v = match self.dtype {
            TensorDType::F32 => b
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
                .collect(),
            TensorDType::F64 => b
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")) as f32)
                .collect(),
            TensorDType::F16 => b
                .chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            TensorDType::BF16 => b
                .chunks_exact(2)
                .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            _ => return None,
        };
        Some(v)
    }

    /// The values as i64 (integer and boolean tensors only).
    pub fn to_i64(&self) -> Option<Vec<i64>> {
        let b = &self.bytes;
        let v = match self.dtype {
            TensorDType::I64 => b
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")))
                .collect(),
            TensorDType::I32 => b
                .chunks_exact(4)
                .map(|c| i32::from_le_bytes(c.try_into().expect("4 bytes")) as i64)
                .collect(),
            TensorDType::I16 => b
                .chunks_exact(2)
                .map(|c| i16::from_le_bytes([c[0], c[1]]) as i64)
                .collect(),
            TensorDType::I8 => b.iter().map(|&x| x as i8 as i64).collect(),
            TensorDType::U8 | TensorDType::Bool => b.iter().map(|&x| x as i64).collect(),
            _ => return None,
        };
        Some(v)
    }

    /// A candle tensor on `device`: floats keep their type, integers become i64, bool u8.
    pub fn to_tensor(&self, device: &Device) -> Result<Tensor> {
        let t = match self.dtype {
            TensorDType::F32 => {
                Tensor::from_raw_buffer(&self.bytes, DType::F32, &self.shape, device)?
            }
            TensorDType::F64 => {
                Tensor::from_raw_buffer(&self.bytes, DType::F64, &self.shape, device)?
            }
            TensorDType::F16 => {
                Tensor::from_raw_buffer(&self.bytes, DType::F16, &self.shape, device)?
            }
            TensorDType::BF16 => {
                Tensor::from_raw_buffer(&self.bytes, DType::BF16, &self.shape, device)?
            }
            TensorDType::U8 | TensorDType::Bool => {
                Tensor::from_raw_buffer(&self.bytes, DType::U8, &self.shape, device)?
            }
            _ => Tensor::from_vec(
                self.to_i64().expect("integer type"),
                self.shape.as_slice(),
                device,
            )?,
        };
        Ok(t)
    }
}

/// Named tensors in file order, plus the file they came from (for error messages).
#[derive(Debug, Clone, Default)]
pub struct StateDict {
    source: PathBuf,
    entries: Vec<(String, RawTensor)>,
    index: HashMap<String, usize>,
}

impl StateDict {
    /// An empty state dict attributed to `source`.
    pub fn new(source: impl Into<PathBuf>) -> Self {
        StateDict {
            source: source.into(),
            ..Default::default()
        }
    }

    /// Adds (or replaces) a tensor.
    pub fn insert(&mut self, name: impl Into<String>, tensor: RawTensor) {
        let name = name.into();
        match self.index.get(&name) {
            Some(&i) => self.entries[i].1 = tensor,
            None => {
                self.index.insert(name.clone(), self.entries.len());
                self.entries.push((name, tensor));
            }
        }
    }

    /// The file the tensors came from.
    pub fn source(&self) -> &Path {
        &self.source
    }

    /// Number of tensors.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no tensors.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The tensor called `name`.
    pub fn get(&self, name: &str) -> Option<&RawTensor> {
        self.index.get(name).map(|&i| &self.entries[i].1)
    }

    /// Names and tensors in file order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &RawTensor)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Tensor names in file order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|(k, _)| k.as_str())
    }

    /// Removes `prefix` from every name that starts with it (e.g. `module.` of DataParallel).
    pub fn strip_prefix(self, prefix: &str) -> StateDict {
        let mut out = StateDict::new(self.source);
        for (k, v) in self.entries {
            let k = k.strip_prefix(prefix).map(str::to_string).unwrap_or(k);
            out.insert(k, v);
        }
        out
    }

    /// An error about this checkpoint's file.
    pub fn error(&self, message: impl std::fmt::Display) -> Error {
        Error::checkpoint(&self.source, message)
    }
}

impl IntoIterator for StateDict {
    type Item = (String, RawTensor);
    type IntoIter = std::vec::IntoIter<(String, RawTensor)>;

    /// Names and tensors in file order, by value.
    fn into_iter(self) -> Self::IntoIter {
        self.entries.into_iter()
    }
}

/// Reads a checkpoint: safetensors, a PyTorch zip `.pth` or a pickle of numpy arrays
/// (detectron2 `.pkl`), chosen by the file's content.
///
/// `key_path` selects a nested dict of a `.pth` or `.pkl` (e.g. `["model"]` or `["state_dict"]`);
/// nested dicts below it are flattened with `.` (`{"a": {"b": t}}` gives `a.b`). Entries that
/// are not tensors (epoch counters, strings) are skipped.
pub fn load(path: impl AsRef<Path>, key_path: &[&str]) -> Result<StateDict> {
    load_selected(path.as_ref(), Select::Path(key_path))
}

/// Reads the weights of a checkpoint that may be a training checkpoint: the root's `model`
/// entry when the root has one (ReferFormer's and detectron2's `{"model": ..., "optimizer":
/// ..., "args": ...}`), else the whole file (a bare state dict, safetensors).
pub fn load_model(path: impl AsRef<Path>) -> Result<StateDict> {
    load_selected(path.as_ref(), Select::EntryOrRoot("model"))
}

/// Which dict of a pickled checkpoint holds the tensors.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Select<'a> {
    /// The dict at this key path from the root (empty: the root).
    Path(&'a [&'a str]),
    /// The root's entry of this name when there is one, else the root.
    EntryOrRoot(&'a str),
}

fn load_selected(path: &Path, select: Select) -> Result<StateDict> {
    let (format, head) = CheckpointFormat::of_file(path)?;
    match (format, select) {
        (CheckpointFormat::TorchZip, _) => pth::read_pth(path, select),
        (CheckpointFormat::TorchLegacy, _) => legacy::load_legacy(path, select),
        (CheckpointFormat::Safetensors, Select::Path([]) | Select::EntryOrRoot(_)) => {
            load_safetensors(path)
        }
        (CheckpointFormat::Safetensors, Select::Path(_)) => Err(Error::checkpoint(
            path,
            "a key path is only meaningful for PyTorch .pth files",
        )),
        // A pickled dict of numpy arrays (detectron2 `.pkl`).
        (CheckpointFormat::Pickle, _) => pkl::read_pkl(path, select),
        (CheckpointFormat::Unknown, _) => Err(Error::checkpoint(
            path,
            format!(
                "not a checkpoint: neither a PyTorch zip .pth, a pickle nor safetensors \
                 (first bytes {:02x?})",
                &head[..head.len().min(8)]
            ),
        )),
    }
}

/// What a file's first bytes say it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckpointFormat {
    /// A zip archive (`torch.save` since torch 1.6).
    TorchZip,
    /// The legacy `torch.save` format (torch < 1.6, or `_use_new_zipfile_serialization=False`
    /// as ReferFormer's training scripts write): five pickles, then the raw storages.
    TorchLegacy,
    /// A pickle stream (protocol 2 to 5) of something else (`pickle.dump`).
    Pickle,
    /// A safetensors file: an 8-byte little-endian header length, then a JSON object.
    Safetensors,
    /// None of these.
    Unknown,
}

impl CheckpointFormat {
    /// The format of the file at `path`, with its first (up to 16) bytes.
    pub fn of_file(path: &Path) -> Result<(CheckpointFormat, Vec<u8>)> {
        let mut head = [0u8; 16];
        let n = std::fs::File::open(path)
            .and_then(|mut f| read_head(&mut f, &mut head))
            .map_err(|e| Error::io(path, e))?;
        Ok((CheckpointFormat::sniff(&head[..n]), head[..n].to_vec()))
    }

    /// Recognises a checkpoint by its first (up to 16) bytes.
    pub fn sniff(head: &[u8]) -> CheckpointFormat {
        match head {
            [b'P', b'K', 3, 4, ..] | [b'P', b'K', 5, 6, ..] => CheckpointFormat::TorchZip,
            [0x80, 2..=5, rest @ ..] if rest.starts_with(&legacy::MAGIC_PICKLE) => {
                CheckpointFormat::TorchLegacy
            }
            [0x80, 2..=5, ..] => CheckpointFormat::Pickle,
            [n0, n1, n2, n3, n4, n5, n6, n7, b'{', ..]
                if u64::from_le_bytes([*n0, *n1, *n2, *n3, *n4, *n5, *n6, *n7]) >= 2 =>
            {
                CheckpointFormat::Safetensors
            }
            _ => CheckpointFormat::Unknown,
        }
    }
}

/// Fills as much of `buf` as the file has.
fn read_head(f: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Reads a safetensors file.
pub fn load_safetensors(path: impl AsRef<Path>) -> Result<StateDict> {
    use safetensors::Dtype as S;
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| {
        Error::checkpoint(
            path,
            format!("not a valid safetensors file (truncated or corrupt?): {e}"),
        )
    })?;
    let mut names: Vec<(String, safetensors::tensor::TensorView)> = st.tensors();
    names.sort_by_key(|(_, v)| v.data().as_ptr() as usize);
    let mut out = StateDict::new(path);
    for (name, view) in names {
        let dtype = match view.dtype() {
            S::F32 => TensorDType::F32,
            S::F64 => TensorDType::F64,
            S::F16 => TensorDType::F16,
            S::BF16 => TensorDType::BF16,
            S::I64 => TensorDType::I64,
            S::I32 => TensorDType::I32,
            S::I16 => TensorDType::I16,
            S::I8 => TensorDType::I8,
            S::U8 => TensorDType::U8,
            S::BOOL => TensorDType::Bool,
            other => {
                return Err(Error::checkpoint(
                    path,
                    format!("tensor '{name}': unsupported dtype {other:?}"),
                ))
            }
        };
        let t = RawTensor::new(dtype, view.shape().to_vec(), view.data().to_vec())
            .map_err(|e| Error::checkpoint(path, format!("tensor '{name}': {e}")))?;
        out.insert(name, t);
    }
    Ok(out)
}

/// Picks the dict that holds the tensors from the root of a pickle.
pub(super) fn select(root: Value, select: Select) -> std::result::Result<Value, String> {
    let key_path = match select {
        Select::Path(key_path) => key_path,
        Select::EntryOrRoot(key) => {
            let Value::Dict(d) = &root else {
                return Err(format!("the root is a {}, not a dict", root.kind()));
            };
            let has = d
                .borrow()
                .iter()
                .any(|(k, _)| matches!(k, Value::Str(s) if s == key));
            return if has { descend(root, &[key]) } else { Ok(root) };
        }
    };
    descend(root, key_path)
}

/// Walks down `key_path` from the root dict of a pickle.
fn descend(root: Value, key_path: &[&str]) -> std::result::Result<Value, String> {
    let mut node = root;
    for (depth, key) in key_path.iter().enumerate() {
        let Value::Dict(d) = &node else {
            return Err(format!(
                "key path {:?}: '{}' is not a dict",
                key_path,
                key_path[..depth].join(".")
            ));
        };
        let found = d
            .borrow()
            .iter()
            .find(|(k, _)| matches!(k, Value::Str(s) if s == key))
            .map(|(_, v)| v.clone());
        node = found.ok_or_else(|| {
            format!(
                "key path {key_path:?}: no entry '{key}' (available: {})",
                dict_keys(d)
            )
        })?;
    }
    match node {
        Value::Dict(_) => Ok(node),
        _ => Err(format!(
            "the selected object is not a dict of tensors (key path {key_path:?})"
        )),
    }
}

fn dict_keys(d: &pickle::DictRef) -> String {
    d.borrow()
        .iter()
        .filter_map(|(k, _)| match k {
            Value::Str(s) => Some(format!("'{s}'")),
            _ => None,
        })
        .take(10)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Dicts nested deeper than this are refused (a dict that contains itself would never end).
const MAX_DEPTH: usize = 64;

/// At most this many dict entries are visited (shared sub-dicts are visited once per path).
pub(super) const MAX_ENTRIES: usize = 1_000_000;

/// Collects, with dotted names, the leaves of a (nested) dict that `leaf` picks (tensors of a
/// `.pth`, arrays of a `.pkl`); nesting depth and the entries visited are bounded.
pub(super) fn flatten<T>(
    node: &Value,
    prefix: &str,
    depth: usize,
    budget: &mut usize,
    leaf: &dyn Fn(&Value) -> Option<T>,
    out: &mut Vec<(String, T)>,
) -> std::result::Result<(), String> {
    let Value::Dict(d) = node else {
        return Ok(());
    };
    if depth > MAX_DEPTH {
        return Err(format!(
            "dicts nested deeper than {MAX_DEPTH} levels at '{prefix}' (a dict that contains \
             itself?)"
        ));
    }
    let d = d.borrow();
    *budget = budget.checked_sub(d.len()).ok_or_else(|| {
        format!("more than {MAX_ENTRIES} dict entries (shared sub-dicts repeated?)")
    })?;
    for (k, v) in d.iter() {
        let key = match k {
            Value::Str(s) => s.clone(),
            Value::Int(i) => i.to_string(),
            _ => continue,
        };
        let name = if prefix.is_empty() {
            key
        } else {
            format!("{prefix}.{key}")
        };
        match v {
            Value::Dict(_) => flatten(v, &name, depth + 1, budget, leaf, out)?,
            v => out.extend(leaf(v).map(|t| (name, t))),
        }
    }
    Ok(())
}

mod legacy;
mod pkl;
mod pth;
#[cfg(test)]
mod tests;

pub use pkl::load_pkl;
pub use pth::load_pth;
