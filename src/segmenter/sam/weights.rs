//! SAM checkpoints: the named tensors of a `.pth` or safetensors file, and strict loading
//! through a candle `VarBuilder` that reports keys the model did not use.

use crate::error::{Error, Result};
use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::VarBuilder;
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The named tensors of a checkpoint and the file they came from.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    /// The file, for error messages.
    pub path: PathBuf,
    /// Tensors by state-dict key.
    pub tensors: HashMap<String, Tensor>,
}

impl Checkpoint {
    /// Reads a checkpoint (`.pth` zip state dict or safetensors) with [`nn::checkpoint`]:
    /// no pickle code is executed.
    ///
    /// [`nn::checkpoint`]: crate::nn::checkpoint
    pub fn read(path: &Path) -> Result<Checkpoint> {
        let dict = crate::nn::checkpoint::load(path, &[])?;
        if dict.is_empty() {
            return Err(Error::checkpoint(path, "no tensors found"));
        }
        let tensors = dict
            .iter()
            .map(|(k, v)| Ok((k.to_string(), v.to_tensor(&Device::Cpu)?)))
            .collect::<Result<HashMap<_, _>>>()?;
        Ok(Checkpoint {
            path: path.to_path_buf(),
            tensors,
        })
    }

    /// The shape of tensor `key`, or an error naming the key.
    pub fn dims(&self, key: &str) -> Result<&[usize]> {
        self.tensors
            .get(key)
            .map(|t| t.dims())
            .ok_or_else(|| Error::checkpoint(&self.path, format!("missing key {key}")))
    }

    /// Number of consecutive `prefix.{i}.suffix` keys, starting at 0.
    pub fn count(&self, prefix: &str, suffix: &str) -> usize {
        (0..)
            .take_while(|i| self.tensors.contains_key(&format!("{prefix}.{i}.{suffix}")))
            .count()
    }

    /// An error about this checkpoint.
    pub fn error(&self, message: impl std::fmt::Display) -> Error {
        Error::checkpoint(&self.path, message)
    }
}

/// A variable store over a checkpoint that records which keys were read, so that keys the
/// model does not use can be reported (strict loading).
pub struct StrictStore {
    tensors: HashMap<String, Tensor>,
    used: Arc<Mutex<BTreeSet<String>>>,
}

impl SimpleBackend for StrictStore {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let t = self.get_unchecked(name, dtype, dev)?;
        if t.shape() != &s {
            candle_core::bail!(
                "key {name} has shape {:?}, expected {:?}",
                t.dims(),
                s.dims()
            )
        }
        Ok(t)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        let t = match self.tensors.get(name) {
            Some(t) => t,
            None => candle_core::bail!("missing key {name}"),
        };
        if let Ok(mut used) = self.used.lock() {
            used.insert(name.to_string());
        }
        t.to_device(dev)?.to_dtype(dtype)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }
}

/// Builds a model from a checkpoint with `build`, then fails if any checkpoint key was not
/// used (keys listed in `ignored` excepted). Errors name the file and the key.
pub fn build_strict<T>(
    checkpoint: &Checkpoint,
    device: &Device,
    ignored: &[&str],
    build: impl FnOnce(VarBuilder) -> Result<T>,
) -> Result<T> {
    let used = Arc::new(Mutex::new(BTreeSet::new()));
    let store = StrictStore {
        tensors: checkpoint.tensors.clone(),
        used: used.clone(),
    };
    let vb = VarBuilder::from_backend(Box::new(store), DType::F32, device.clone());
    let model = build(vb).map_err(|e| match e {
        Error::Tensor(e) => checkpoint.error(e),
        other => other,
    })?;
    let used = used
        .lock()
        .map_err(|_| checkpoint.error("key tracking failed"))?;
    let mut unused: Vec<&String> = checkpoint
        .tensors
        .keys()
        .filter(|k| !used.contains(*k) && !ignored.contains(&k.as_str()))
        .collect();
    unused.sort();
    if let Some(first) = unused.first() {
        return Err(checkpoint.error(format!(
            "unexpected key {first} ({} unused keys in all)",
            unused.len()
        )));
    }
    Ok(model)
}

/// A variable store that makes up every requested tensor with the project's synthetic weight
/// formula ([`crate::nn::synthetic`]), for tests and benchmarks without real checkpoints.
/// Tensors under a `.bn.` path segment are BatchNorm parameters; BatchNorm step counters are
/// reported absent.
pub struct SyntheticStore {
    /// Seed of the formula.
    pub seed: u64,
}

impl SimpleBackend for SyntheticStore {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let bn = name.contains(".bn.");
        let values = crate::nn::synthetic::float_values(name, s.dims(), bn, self.seed);
        Tensor::from_vec(values, s, dev)?.to_dtype(dtype)
    }

    fn get_unchecked(&self, name: &str, _: DType, _: &Device) -> candle_core::Result<Tensor> {
        candle_core::bail!("synthetic weights need a shape for {name}")
    }

    fn contains_tensor(&self, name: &str) -> bool {
        !name.ends_with("num_batches_tracked")
    }
}
