//! PyTorch zip checkpoints (`torch.save`, torch >= 1.6): the pickle of the state dict read by the
//! safe reader, then each storage record read once and its (possibly strided) views cut out.

use std::io::Read;
use std::path::Path;

use super::{flatten, RawTensor, Select, StateDict, MAX_ENTRIES};
use crate::error::{Error, Result};
use crate::nn::pickle::{self, TensorRef, Value};

/// Reads a PyTorch zip checkpoint (`torch.save`, format of torch ≥ 1.6) without executing code.
pub fn load_pth(path: impl AsRef<Path>, key_path: &[&str]) -> Result<StateDict> {
    read_pth(path.as_ref(), Select::Path(key_path))
}

/// [`load_pth`] with the dict that holds the tensors chosen by `select`.
pub(super) fn read_pth(path: &Path, select: Select) -> Result<StateDict> {
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
    let node = super::select(root, select).map_err(err)?;

    let mut tensors = Vec::new();
    let mut budget = MAX_ENTRIES;
    let tensor = |v: &Value| match v {
        Value::Tensor(t) => Some(t.clone()),
        _ => None,
    };
    flatten(&node, "", 0, &mut budget, &tensor, &mut tensors).map_err(err)?;
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

fn read_record<R: std::io::Read + std::io::Seek>(
    zip: &mut zip::ZipArchive<R>,
    name: &str,
) -> std::result::Result<Vec<u8>, String> {
    let mut f = zip
        .by_name(name)
        .map_err(|e| format!("record {name} missing from the archive: {e}"))?;
    // The declared size only sizes the first allocation (bounded: a forged header must not
    // reserve what the data do not hold); reading stops at the declared size.
    let declared = f.size();
    let mut buf = Vec::with_capacity(declared.min(1 << 26) as usize);
    f.by_ref()
        .take(declared)
        .read_to_end(&mut buf)
        .map_err(|e| format!("record {name} unreadable (truncated file?): {e}"))?;
    Ok(buf)
}

/// Copies a (possibly strided) view out of its storage into a contiguous tensor. Sizes come
/// from the file, so every product is checked: a view may not address more elements than its
/// storage holds.
pub(super) fn materialize(t: &TensorRef, storage: &[u8]) -> std::result::Result<RawTensor, String> {
    let es = t.dtype.size();
    let too_large = || {
        format!(
            "view (offset {}, size {:?}, stride {:?}) of storage {} ({} elements) overflows",
            t.offset, t.shape, t.stride, t.key, t.storage_len
        )
    };
    let storage_bytes = t.storage_len.checked_mul(es).ok_or_else(too_large)?;
    if storage.len() < storage_bytes {
        return Err(format!(
            "storage {} holds {} bytes, expected {} (truncated file?)",
            t.key,
            storage.len(),
            storage_bytes
        ));
    }
    let numel = t
        .shape
        .iter()
        .try_fold(1usize, |a, &n| a.checked_mul(n))
        .ok_or_else(too_large)?;
    if numel > t.storage_len {
        return Err(format!(
            "view of {numel} elements (size {:?}) is larger than its storage {} of {} elements",
            t.shape, t.key, t.storage_len
        ));
    }
    if numel > 0 {
        let last = t
            .shape
            .iter()
            .zip(&t.stride)
            .try_fold(t.offset, |a, (&n, &s)| {
                a.checked_add((n - 1).checked_mul(s)?)
            })
            .ok_or_else(too_large)?;
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
