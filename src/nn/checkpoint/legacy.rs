//! The legacy `torch.save` format (torch < 1.6, or `_use_new_zipfile_serialization=False`, as
//! ReferFormer's training scripts save): five pickles in a row (a magic number, the protocol
//! version 1001, a system-info dict, the object, the sorted storage keys), then each storage as
//! its element count (8 bytes, little-endian) followed by its raw little-endian bytes.
//!
//! The pickles are read by the safe reader from the front of the file (a growing prefix, so a
//! large file is never read whole); the storages are then found by seeking, and only those of
//! the selected tensors are read.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use super::pth::materialize;
use super::{flatten, RawTensor, Select, StateDict, MAX_ENTRIES};
use crate::error::{Error, Result};
use crate::nn::pickle::{self, Program, StorageRef, Value};

/// `pickle.dumps(0x1950a86a20f9469cfc6c, protocol=2)` without its PROTO opcode: LONG1 of 10
/// bytes, then STOP.
pub(super) const MAGIC_PICKLE: [u8; 13] = [
    0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19, b'.',
];

/// The protocol version the legacy format writes after the magic number.
const PROTOCOL_VERSION: i64 = 1001;

/// The first prefix of the file read for the pickles; it grows fourfold while a pickle runs
/// past it.
const FIRST_PREFIX: u64 = 1 << 22;

/// Reads a legacy `torch.save` file without executing code.
pub(super) fn load_legacy(path: &Path, select: Select) -> Result<StateDict> {
    let err = |m: String| Error::checkpoint(path, m);
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let file_len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    let mut file = BufReader::new(file);
    let (object, storages, data_start) = read_pickles(&mut file, file_len).map_err(err)?;
    let node = super::select(object, select).map_err(err)?;
    let mut tensors = Vec::new();
    let mut budget = MAX_ENTRIES;
    let tensor = |v: &Value| match v {
        Value::Tensor(t) => Some(t.clone()),
        _ => None,
    };
    flatten(&node, "", 0, &mut budget, &tensor, &mut tensors).map_err(err)?;
    let records = locate_storages(&mut file, file_len, data_start, &storages).map_err(err)?;
    let mut out: Vec<Option<RawTensor>> = vec![None; tensors.len()];
    // One storage in memory at a time, in file order.
    for (key, offset, bytes_len) in records {
        let views: Vec<usize> = (0..tensors.len())
            .filter(|&i| tensors[i].1.key == key)
            .collect();
        if views.is_empty() {
            continue;
        }
        let name = &tensors[views[0]].0;
        let mut bytes = vec![0u8; bytes_len];
        file.seek(SeekFrom::Start(offset))
            .and_then(|_| file.read_exact(&mut bytes))
            .map_err(|e| err(format!("tensor '{name}': storage {key} unreadable: {e}")))?;
        for i in views {
            let (name, tref) = &tensors[i];
            out[i] =
                Some(materialize(tref, &bytes).map_err(|m| err(format!("tensor '{name}': {m}")))?);
        }
    }
    let mut dict = StateDict::new(path);
    for ((name, _), t) in tensors.into_iter().zip(out) {
        let t = t.ok_or_else(|| err(format!("tensor '{name}': its storage is not in the file")))?;
        dict.insert(name, t);
    }
    Ok(dict)
}

/// Reads the five pickles: the object, every storage its persistent ids name, and where the
/// storage data start.
fn read_pickles(
    file: &mut BufReader<File>,
    file_len: u64,
) -> std::result::Result<(Value, Vec<StorageRef>, u64), String> {
    let mut prefix_len = FIRST_PREFIX.min(file_len);
    loop {
        let mut prefix = vec![0u8; prefix_len as usize];
        file.seek(SeekFrom::Start(0))
            .and_then(|_| file.read_exact(&mut prefix))
            .map_err(|e| format!("unreadable: {e}"))?;
        match parse_pickles(&prefix) {
            Err(e) if e.contains("truncated") && prefix_len < file_len => {
                prefix_len = prefix_len.saturating_mul(4).min(file_len);
            }
            other => return other,
        }
    }
}

/// Parses the five pickles at the front of `data`.
fn parse_pickles(data: &[u8]) -> std::result::Result<(Value, Vec<StorageRef>, u64), String> {
    // The magic number is a 10-byte integer, wider than the reader's: its exact bytes are
    // checked instead.
    let mut at = match data {
        [0x80, _, rest @ ..] if rest.starts_with(&MAGIC_PICKLE) => 2 + MAGIC_PICKLE.len(),
        _ => return Err("not a legacy torch.save file (no magic number)".into()),
    };
    let mut next = |what: &str| -> std::result::Result<Program, String> {
        let p = pickle::unpickle_front(&data[at..])
            .map_err(|e| format!("legacy torch.save {what}: {e}"))?;
        at += p.len;
        Ok(p)
    };
    match next("protocol version")?.value {
        Value::Int(PROTOCOL_VERSION) => {}
        Value::Int(v) => return Err(format!("unsupported legacy torch.save protocol {v}")),
        v => {
            return Err(format!(
                "legacy torch.save protocol version is a {}",
                v.kind()
            ))
        }
    }
    let info = next("system info")?.value;
    check_little_endian(&info)?;
    let object = next("object")?;
    let keys = next("storage keys")?.value;
    let Value::List(keys) = &keys else {
        return Err(format!(
            "legacy torch.save storage keys are a {}",
            keys.kind()
        ));
    };
    let mut storages = Vec::new();
    for k in keys.borrow().iter() {
        let Value::Str(k) = k else {
            return Err(format!("legacy torch.save storage key is a {}", k.kind()));
        };
        let s = object
            .storages
            .iter()
            .find(|s| &s.key == k)
            .ok_or_else(|| format!("storage {k} is listed but no tensor names it"))?;
        storages.push(s.clone());
    }
    Ok((object.value, storages, at as u64))
}

/// Refuses a file written on a big-endian machine (its `little_endian` entry is False).
fn check_little_endian(info: &Value) -> std::result::Result<(), String> {
    let Value::Dict(d) = info else {
        return Err(format!(
            "legacy torch.save system info is a {}",
            info.kind()
        ));
    };
    let little = d
        .borrow()
        .iter()
        .find(|(k, _)| matches!(k, Value::Str(s) if s == "little_endian"))
        .map(|(_, v)| matches!(v, Value::Bool(true)));
    match little {
        Some(true) => Ok(()),
        Some(false) => Err("written on a big-endian machine, which is not supported".into()),
        None => Err("legacy torch.save system info has no little_endian entry".into()),
    }
}

/// Walks the storage records after the pickles: `(key, offset of the data, byte length)` for
/// each, checking each element count against the one its persistent id gave.
fn locate_storages(
    file: &mut BufReader<File>,
    file_len: u64,
    mut at: u64,
    storages: &[StorageRef],
) -> std::result::Result<Vec<(String, u64, usize)>, String> {
    let mut out = Vec::with_capacity(storages.len());
    for s in storages {
        let mut n = [0u8; 8];
        file.seek(SeekFrom::Start(at))
            .and_then(|_| file.read_exact(&mut n))
            .map_err(|e| format!("storage {} header unreadable (truncated file?): {e}", s.key))?;
        let numel = u64::from_le_bytes(n);
        if numel != s.len as u64 {
            return Err(format!(
                "storage {} holds {numel} elements, its tensors expect {}",
                s.key, s.len
            ));
        }
        let bytes = numel
            .checked_mul(s.dtype.size() as u64)
            .filter(|&b| b <= file_len.saturating_sub(at + 8))
            .ok_or_else(|| {
                format!(
                    "storage {} runs past the end of the file (truncated?)",
                    s.key
                )
            })?;
        out.push((s.key.clone(), at + 8, bytes as usize));
        at += 8 + bytes;
    }
    Ok(out)
}
