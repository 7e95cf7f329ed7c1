//! Checkpoint files: PyTorch `.pth` (zip + pickle, read without executing code) and
//! safetensors, loaded into a [`StateDict`] of named tensors.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};

pub use super::dtype::TensorDType;
use super::pickle::{self, TensorRef, Value};
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

/// Whether `path` is a zip archive (a PyTorch `.pth` of torch ≥ 1.6).
pub fn is_zip(path: &Path) -> Result<bool> {
    let mut magic = [0u8; 2];
    let n = std::fs::File::open(path)
        .and_then(|mut f| f.read(&mut magic))
        .map_err(|e| Error::io(path, e))?;
    Ok(n == 2 && magic == *b"PK")
}

/// Reads a checkpoint: safetensors, or a PyTorch zip `.pth`, chosen by the file's content.
///
/// `key_path` selects a nested dict of a `.pth` (e.g. `["model"]` or `["state_dict"]`);
/// nested dicts below it are flattened with `.` (`{"a": {"b": t}}` gives `a.b`). Entries that
/// are not tensors (epoch counters, strings) are skipped.
pub fn load(path: impl AsRef<Path>, key_path: &[&str]) -> Result<StateDict> {
    let path = path.as_ref();
    if is_zip(path)? {
        load_pth(path, key_path)
    } else if key_path.is_empty() {
        load_safetensors(path)
    } else {
        Err(Error::checkpoint(
            path,
            "a key path is only meaningful for PyTorch .pth files",
        ))
    }
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

/// Reads a PyTorch zip checkpoint (`torch.save`, format of torch ≥ 1.6) without executing code.
pub fn load_pth(path: impl AsRef<Path>, key_path: &[&str]) -> Result<StateDict> {
    let path = path.as_ref();
    let err = |m: String| Error::checkpoint(path, m);
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut zip = zip::ZipArchive::new(std::io::BufReader::new(file)).map_err(|e| {
        err(format!(
            "not a valid PyTorch zip checkpoint (truncated or corrupt?): {e}"
        ))
    })?;
    let pkl_name = (0..zip.len())
        .filter_map(|i| {
            zip.name_for_index(i)
                .and_then(|n| n.ok())
                .map(|n| n.into_owned())
        })
        .find(|n| n.ends_with("data.pkl"))
        .ok_or_else(|| err("no data.pkl in the archive: not a torch.save file".into()))?;
    let prefix = pkl_name.trim_end_matches("data.pkl").to_string();
    if let Ok(mut f) = zip.by_name(&format!("{prefix}byteorder")) {
        let mut s = String::new();
        f.read_to_string(&mut s)
            .map_err(|e| err(format!("unreadable byteorder record: {e}")))?;
        if s.trim() != "little" {
            return Err(err(format!("unsupported byte order '{}'", s.trim())));
        }
    }
    let pkl = read_record(&mut zip, &pkl_name).map_err(err)?;
    let root = pickle::unpickle(&pkl).map_err(|e| err(format!("{pkl_name}: {e}")))?;

    // Walk down the key path.
    let mut node = root;
    for (depth, key) in key_path.iter().enumerate() {
        let Value::Dict(d) = &node else {
            return Err(err(format!(
                "key path {:?}: '{}' is not a dict",
                key_path,
                key_path[..depth].join(".")
            )));
        };
        let found = d
            .borrow()
            .iter()
            .find(|(k, _)| matches!(k, Value::Str(s) if s == key))
            .map(|(_, v)| v.clone());
        node = found.ok_or_else(|| {
            err(format!(
                "key path {key_path:?}: no entry '{key}' (available: {})",
                dict_keys(d)
            ))
        })?;
    }
    let Value::Dict(_) = &node else {
        return Err(err(format!(
            "the selected object is not a dict of tensors (key path {key_path:?})"
        )));
    };

    let mut tensors = Vec::new();
    flatten(&node, "", &mut tensors).map_err(err)?;
    // One storage record in memory at a time: read it, cut its views out, drop it. A view
    // that is its whole storage takes the record's bytes without a copy.
    let mut by_storage: Vec<(String, Vec<usize>)> = Vec::new();
    for (i, (_, tref)) in tensors.iter().enumerate() {
        match by_storage.iter_mut().find(|(k, _)| *k == tref.key) {
            Some((_, views)) => views.push(i),
            None => by_storage.push((tref.key.clone(), vec![i])),
        }
    }
    let mut out: Vec<Option<RawTensor>> = vec![None; tensors.len()];
    for (key, views) in by_storage {
        let record = format!("{prefix}data/{key}");
        let first = &tensors[views[0]].0;
        let mut bytes =
            read_record(&mut zip, &record).map_err(|m| err(format!("tensor '{first}': {m}")))?;
        for (j, &i) in views.iter().enumerate() {
            let (name, tref) = &tensors[i];
            let last = j + 1 == views.len();
            let t = if last
                && covers_storage(tref)
                && bytes.len() == tref.storage_len * tref.dtype.size()
            {
                RawTensor::new(tref.dtype, tref.shape.clone(), std::mem::take(&mut bytes))
                    .map_err(|e| e.to_string())
            } else {
                materialize(tref, &bytes)
            };
            out[i] = Some(t.map_err(|m| err(format!("tensor '{name}': {m}")))?);
        }
    }
    let mut dict = StateDict::new(path);
    for ((name, _), t) in tensors.into_iter().zip(out) {
        dict.insert(name, t.expect("every view belongs to one storage"));
    }
    Ok(dict)
}

/// Whether a view is its whole storage, contiguous from offset 0.
fn covers_storage(t: &TensorRef) -> bool {
    t.offset == 0 && t.shape.iter().product::<usize>() == t.storage_len && is_contiguous(t)
}

/// Whether a view is row-major contiguous (dimensions of size 1 have any stride).
fn is_contiguous(t: &TensorRef) -> bool {
    let mut expect = 1;
    for (&n, &s) in t.shape.iter().zip(&t.stride).rev() {
        if n > 1 && s != expect {
            return false;
        }
        expect *= n;
    }
    true
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

fn read_record<R: std::io::Read + std::io::Seek>(
    zip: &mut zip::ZipArchive<R>,
    name: &str,
) -> std::result::Result<Vec<u8>, String> {
    let mut f = zip
        .by_name(name)
        .map_err(|e| format!("record {name} missing from the archive: {e}"))?;
    let mut buf = Vec::with_capacity(f.size() as usize);
    f.read_to_end(&mut buf)
        .map_err(|e| format!("record {name} unreadable (truncated file?): {e}"))?;
    Ok(buf)
}

/// Collects the tensors of a (nested) dict with dotted names.
fn flatten(
    node: &Value,
    prefix: &str,
    out: &mut Vec<(String, TensorRef)>,
) -> std::result::Result<(), String> {
    let Value::Dict(d) = node else {
        return Ok(());
    };
    for (k, v) in d.borrow().iter() {
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
            Value::Tensor(t) => out.push((name, t.clone())),
            Value::Dict(_) => flatten(v, &name, out)?,
            _ => {}
        }
    }
    Ok(())
}

/// Copies a (possibly strided) view out of its storage into a contiguous tensor.
fn materialize(t: &TensorRef, storage: &[u8]) -> std::result::Result<RawTensor, String> {
    let es = t.dtype.size();
    if storage.len() < t.storage_len * es {
        return Err(format!(
            "storage {} holds {} bytes, expected {} (truncated file?)",
            t.key,
            storage.len(),
            t.storage_len * es
        ));
    }
    let numel: usize = t.shape.iter().product();
    if numel > 0 {
        let last = t.offset
            + t.shape
                .iter()
                .zip(&t.stride)
                .map(|(&n, &s)| (n - 1) * s)
                .sum::<usize>();
        if last >= t.storage_len {
            return Err(format!(
                "view (offset {}, size {:?}, stride {:?}) exceeds its storage of {} elements",
                t.offset, t.shape, t.stride, t.storage_len
            ));
        }
    }
    let bytes = if is_contiguous(t) {
        storage[t.offset * es..(t.offset + numel) * es].to_vec()
    } else {
        let mut bytes = Vec::with_capacity(numel * es);
        let mut idx = vec![0usize; t.shape.len()];
        for _ in 0..numel {
            let e: usize = t.offset + idx.iter().zip(&t.stride).map(|(i, s)| i * s).sum::<usize>();
            bytes.extend_from_slice(&storage[e * es..(e + 1) * es]);
            for d in (0..idx.len()).rev() {
                idx[d] += 1;
                if idx[d] < t.shape[d] {
                    break;
                }
                idx[d] = 0;
            }
        }
        bytes
    };
    RawTensor::new(t.dtype, t.shape.clone(), bytes).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strided_views_are_gathered_in_row_major_order() {
        // Storage 0..12 (f32); view of shape [2, 3] with strides [1, 4] at offset 1
        // (a transposed slice): rows are (1, 5, 9) and (2, 6, 10).
        let storage: Vec<u8> = (0..12).flat_map(|i| (i as f32).to_le_bytes()).collect();
        let t = TensorRef {
            key: "0".into(),
            dtype: TensorDType::F32,
            storage_len: 12,
            offset: 1,
            shape: vec![2, 3],
            stride: vec![1, 4],
        };
        let r = materialize(&t, &storage).unwrap();
        assert_eq!(r.to_f32().unwrap(), vec![1.0, 5.0, 9.0, 2.0, 6.0, 10.0]);
        let bad = TensorRef {
            offset: 4,
            ..t.clone()
        };
        assert!(materialize(&bad, &storage).unwrap_err().contains("exceeds"));
        assert!(materialize(&t, &storage[..20])
            .unwrap_err()
            .contains("truncated"));
    }

    #[test]
    fn half_types_convert_to_f32() {
        let b: Vec<u8> = [1.5f32, -2.0]
            .iter()
            .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
            .collect();
        let t = RawTensor::new(TensorDType::F16, vec![2], b).unwrap();
        assert_eq!(t.to_f32().unwrap(), vec![1.5, -2.0]);
        let b: Vec<u8> = [3.0f32]
            .iter()
            .flat_map(|v| half::bf16::from_f32(*v).to_le_bytes())
            .collect();
        let t = RawTensor::new(TensorDType::BF16, vec![1], b).unwrap();
        assert_eq!(t.to_f32().unwrap(), vec![3.0]);
        assert!(RawTensor::new(TensorDType::F32, vec![3], vec![0; 8]).is_err());
    }
}
