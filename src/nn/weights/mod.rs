//! The one way networks get their parameters: a strict candle `VarBuilder` backend over a
//! checkpoint file or the synthetic formula.
//!
//! Networks spell the checkpoint's keys with `vb.pp(..)` and ask for tensors with their
//! expected shapes. [`Weights`] answers from
//! - PyTorch `.pth` zip files, read by the project's own pickle reader
//!   ([`checkpoint`](super::checkpoint)), which never executes pickled code and accepts
//!   non-contiguous (strided) tensors, which candle's own `.pth` reader refuses;
//! - safetensors files, memory-mapped and converted one tensor at a time;
//! - the initializers of an ONNX model;
//! - the synthetic formula of [`synthetic`], applied to the network's own state-dict layout.
//!
//! Every problem is reported in one place, as a typed [`CheckpointProblem`] naming the file
//! and the key: a missing key or a mis-shaped tensor when the network asks for it, keys
//! nobody asked for in [`Weights::finish`]. A `.pth` file is held in memory once (each
//! storage record is read, turned into tensors and dropped before the next one), and each
//! tensor only until a network reads it; a safetensors file not at all.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::VarBuilder;

use super::checkpoint::{self, StateDict};
use super::dtype::TensorDType;
use super::synthetic::{self, TensorSpec};
use crate::error::{CheckpointProblem, Error, Result};

/// Where the tensors come from.
enum Source {
    /// Tensors in host memory (from a `.pth` file, ONNX initializers or a state dict), in
    /// file order. A tensor leaves `tensors` when a network reads it, so that its memory is
    /// freed as soon as the layer has laid it out: the checkpoint and the built network never
    /// coexist in full (loading DEVA's peaked at both, 0.28 + 0.33 GB). `dims` keeps every
    /// shape and type.
    Memory {
        order: Vec<String>,
        dims: HashMap<String, (Vec<usize>, DType)>,
        tensors: Mutex<HashMap<String, Tensor>>,
    },
    /// A memory-mapped safetensors file.
    Mapped(MmapedSafetensors),
    /// No tensors: every request is answered with zeros and recorded (the layout pass).
    Layout,
}

impl Source {
    /// [`Source::Memory`] over `tensors`, listed in `order`.
    fn memory(order: Vec<String>, tensors: HashMap<String, Tensor>) -> Self {
        let dims = tensors
            .iter()
            .map(|(k, t)| (k.clone(), (t.dims().to_vec(), t.dtype())))
            .collect();
        Source::Memory {
            order,
            dims,
            tensors: Mutex::new(tensors),
        }
    }
}

/// What loading has used and found so far.
#[derive(Default)]
struct Log {
    used: HashSet<String>,
    layout: Vec<TensorSpec>,
    problem: Option<CheckpointProblem>,
}

struct Inner {
    path: PathBuf,
    /// Prefix the file's keys carry and the network's do not (e.g. `module.`).
    strip: String,
    source: Source,
    log: Mutex<Log>,
}

/// A checkpoint opened for strict loading (see the module documentation).
#[derive(Clone)]
pub struct Weights {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Weights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Weights({})", self.inner.path.display())
    }
}

impl Weights {
    fn with_source(path: impl Into<PathBuf>, source: Source) -> Self {
        Weights {
            inner: Arc::new(Inner {
                path: path.into(),
                strip: String::new(),
                source,
                log: Mutex::new(Log::default()),
            }),
        }
    }

    /// Opens a checkpoint by its content: a PyTorch zip `.pth`, an ONNX model (by its
    /// `.onnx` extension), a safetensors file, or a pickle of numpy arrays; anything else is
    /// refused as not a checkpoint (see [`checkpoint::load`]).
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        use checkpoint::CheckpointFormat;
        let path = path.as_ref();
        match CheckpointFormat::of_file(path)?.0 {
            CheckpointFormat::TorchZip => {
                Weights::from_state_dict(checkpoint::load_pth(path, &[])?)
            }
            _ if path.extension().is_some_and(|e| e == "onnx") => Weights::from_onnx(path),
            CheckpointFormat::Safetensors => Weights::from_safetensors(path),
            CheckpointFormat::TorchLegacy
            | CheckpointFormat::Pickle
            | CheckpointFormat::Unknown => Weights::from_state_dict(checkpoint::load(path, &[])?),
        }
    }

    /// Opens the weights of what may be a training checkpoint: the `model` entry of a `.pth`
    /// (zip or legacy) or pickle that has one, else the whole file as [`open`](Self::open)
    /// reads it (see [`checkpoint::load_model`]).
    pub fn open_model(path: impl AsRef<Path>) -> Result<Self> {
        use checkpoint::CheckpointFormat as F;
        let path = path.as_ref();
        match F::of_file(path)?.0 {
            F::TorchZip | F::TorchLegacy | F::Pickle => {
                Weights::from_state_dict(checkpoint::load_model(path)?)
            }
            F::Safetensors | F::Unknown => Weights::open(path),
        }
    }

    /// Memory-maps a safetensors file; tensors are converted when a network asks for them.
    pub fn from_safetensors(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        // SAFETY: the mapping is only read; like every memory-mapped reader it assumes that
        // nobody truncates the file while the network is being built.
        let mapped = unsafe { MmapedSafetensors::new(path) }.map_err(|e| {
            Error::checkpoint(
                path,
                format!("not a valid safetensors file (truncated or corrupt?): {e}"),
            )
        })?;
        Ok(Weights::with_source(path, Source::Mapped(mapped)))
    }

    /// The tensors of a state dict, converted one by one (each raw copy is dropped as soon
    /// as its tensor exists).
    pub fn from_state_dict(dict: StateDict) -> Result<Self> {
        let path = dict.source().to_path_buf();
        let mut order = Vec::with_capacity(dict.len());
        let mut tensors = HashMap::with_capacity(dict.len());
        for (name, raw) in dict {
            let t = raw.to_tensor(&Device::Cpu)?;
            order.push(name.clone());
            tensors.insert(name, t);
        }
        Ok(Weights::with_source(path, Source::memory(order, tensors)))
    }

    /// Named tensors already in memory, in load order (e.g. a checkpoint assembled from
    /// another format); `path` names their origin in errors. A key given twice is an error.
    pub fn from_tensors(path: impl Into<PathBuf>, named: Vec<(String, Tensor)>) -> Result<Self> {
        let path = path.into();
        let mut order = Vec::with_capacity(named.len());
        let mut tensors = HashMap::with_capacity(named.len());
        for (name, t) in named {
            if tensors.insert(name.clone(), t).is_some() {
                return Err(Error::checkpoint(
                    &path,
                    format!("two tensors for key {name}"),
                ));
            }
            order.push(name);
        }
        Ok(Weights::with_source(path, Source::memory(order, tensors)))
    }

    /// The floating-point initializers of an ONNX model, by name (integer initializers are
    /// shape and index constants of the graph, not parameters).
    pub fn from_onnx(path: impl AsRef<Path>) -> Result<Self> {
        use crate::nn::onnx::DataType;
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let model = crate::nn::onnx::Model::parse(&bytes, path)?;
        let mut order = Vec::new();
        let mut tensors = HashMap::new();
        let float =
            |t: DataType| matches!(t, DataType::Float | DataType::Float16 | DataType::Double);
        for init in model
            .graph
            .initializers
            .iter()
            .filter(|i| float(i.data_type))
        {
            let values = init
                .to_f32()
                .map_err(|m| Error::checkpoint(path, format!("initializer {}: {m}", init.name)))?;
            let t = Tensor::from_vec(values, init.shape(), &Device::Cpu)?;
            order.push(init.name.to_string());
            tensors.insert(init.name.to_string(), t);
        }
        Ok(Weights::with_source(path, Source::memory(order, tensors)))
    }

    /// This checkpoint with `prefix` removed from its keys when every key has it (e.g. the
    /// `module.` of a DataParallel checkpoint). Call before loading anything.
    pub fn strip_common_prefix(self, prefix: &str) -> Self {
        let names = self.stored_names();
        if names.is_empty() || !names.iter().all(|n| n.starts_with(prefix)) {
            return self;
        }
        match Arc::try_unwrap(self.inner) {
            Ok(mut inner) => {
                inner.strip = format!("{}{prefix}", inner.strip);
                Weights {
                    inner: Arc::new(inner),
                }
            }
            Err(inner) => Weights { inner },
        }
    }

    /// The file the tensors come from.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The file's keys as stored, in file order (safetensors: by name).
    fn stored_names(&self) -> Vec<String> {
        match &self.inner.source {
            Source::Memory { order, .. } => order.clone(),
            Source::Mapped(m) => {
                let mut n: Vec<String> = m.tensors().into_iter().map(|(k, _)| k).collect();
                n.sort();
                n
            }
            Source::Layout => Vec::new(),
        }
    }

    /// The keys (without a stripped prefix), in file order.
    pub fn keys(&self) -> Vec<String> {
        let strip = &self.inner.strip;
        self.stored_names()
            .into_iter()
            .filter_map(|k| k.strip_prefix(strip.as_str()).map(str::to_string))
            .collect()
    }

    /// Whether the checkpoint has `key`.
    pub fn contains(&self, key: &str) -> bool {
        self.inner.stored_dims(key).is_some()
    }

    /// The shape of `key`, or an error naming it.
    pub fn dims(&self, key: &str) -> Result<Vec<usize>> {
        self.inner.stored_dims(key).map(|(d, _)| d).ok_or_else(|| {
            self.problem(CheckpointProblem::Missing {
                key: key.to_string(),
                expected: None,
            })
        })
    }

    /// Number of consecutive `prefix.{i}.suffix` keys, starting at 0.
    pub fn count(&self, prefix: &str, suffix: &str) -> usize {
        (0..)
            .take_while(|i| self.contains(&format!("{prefix}.{i}.{suffix}")))
            .count()
    }

    /// Every tensor (on the CPU) by key, e.g. to write a converted copy; ask before a network
    /// is built from these weights, since its reads take the tensors it reads.
    pub fn tensors(&self) -> Result<HashMap<String, Tensor>> {
        self.keys()
            .into_iter()
            .map(|k| {
                let t = self.inner.stored(&k, &Device::Cpu, Read::Keep)?;
                Ok((k, t))
            })
            .collect()
    }

    /// An error about this checkpoint.
    pub fn error(&self, message: impl std::fmt::Display) -> Error {
        Error::checkpoint(&self.inner.path, message)
    }

    fn problem(&self, problem: CheckpointProblem) -> Error {
        Error::Checkpoint {
            path: self.inner.path.clone(),
            problem,
        }
    }

    /// A `VarBuilder` (f32 tensors on `device`) over this checkpoint.
    pub fn var_builder(&self, device: &Device) -> VarBuilder<'static> {
        let backend = Backend(self.inner.clone());
        VarBuilder::from_backend(Box::new(backend), DType::F32, device.clone())
    }

    /// Builds a network with `build`, then [`finish`](Self::finish)es: a failure of the
    /// checkpoint is returned as the typed error naming the file and the key.
    pub fn build<T>(
        &self,
        device: &Device,
        ignored: &[&str],
        build: impl FnOnce(VarBuilder<'static>) -> Result<T>,
    ) -> Result<T> {
        let built = build(self.var_builder(device));
        let recorded = self.lock().problem.take();
        match (built, recorded) {
            (Ok(net), _) => {
                self.finish(ignored)?;
                Ok(net)
            }
            (Err(_), Some(problem)) => Err(self.problem(problem)),
            (Err(Error::Tensor(e)), None) => Err(self.error(e)),
            (Err(e), None) => Err(e),
        }
    }

    /// Ends loading: fails on keys of the file that nothing asked for (except `ignored`),
    /// and returns the layout: every requested key with its shape and type, in request order.
    pub fn finish(&self, ignored: &[&str]) -> Result<Vec<TensorSpec>> {
        let log = self.lock();
        let mut unused: Vec<String> = self
            .keys()
            .into_iter()
            .filter(|k| !log.used.contains(k) && !ignored.contains(&k.as_str()))
            .collect();
        if !unused.is_empty() {
            unused.sort();
            return Err(self.problem(CheckpointProblem::Unexpected { keys: unused }));
        }
        Ok(log.layout.clone())
    }

    /// The state-dict layout of the network `build` makes: every key it asks for with its
    /// shape and type, in request order (no checkpoint needed; tensors are zeros).
    pub fn layout_of<T>(
        build: impl FnOnce(VarBuilder<'static>) -> Result<T>,
    ) -> Result<Vec<TensorSpec>> {
        let w = Weights::with_source("<layout>", Source::Layout);
        build(w.var_builder(&Device::Cpu))?;
        w.finish(&[])
    }

    /// Builds a network from the synthetic formula with `seed` ([`synthetic`]): its layout
    /// is recorded first, so that BatchNorm parameters are recognised as the formula says
    /// (prefixes that have a `running_var`), then the formula's state dict is loaded strictly.
    pub fn synthetic<T>(
        seed: u64,
        device: &Device,
        build: impl Fn(VarBuilder<'static>) -> Result<T>,
    ) -> Result<T> {
        let layout = Weights::layout_of(&build)?;
        let dict = synthetic::state_dict(&layout, seed)?;
        Weights::from_state_dict(dict)?.build(device, &[], build)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Log> {
        self.inner.lock()
    }
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, Log> {
        // A panic while the lock was held leaves only bookkeeping behind; keep using it.
        self.log.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Shape and type of the stored `key` (a network key, without the stripped prefix).
    fn stored_dims(&self, key: &str) -> Option<(Vec<usize>, DType)> {
        let name = format!("{}{key}", self.strip);
        match &self.source {
            Source::Memory { dims, .. } => dims.get(&name).cloned(),
            Source::Mapped(m) => {
                let v = m.get(&name).ok()?;
                let dtype = DType::try_from(v.dtype()).ok()?;
                Some((v.shape().to_vec(), dtype))
            }
            Source::Layout => None,
        }
    }

    /// The stored tensor `key` on `device`, in its stored type; `read` says whether a tensor
    /// held in memory leaves it.
    fn stored(&self, key: &str, device: &Device, read: Read) -> candle_core::Result<Tensor> {
        let name = format!("{}{key}", self.strip);
        match &self.source {
            Source::Memory { tensors, dims, .. } => {
                let mut tensors = tensors.lock().unwrap_or_else(|e| e.into_inner());
                let found = match read {
                    Read::Take => tensors.remove(&name),
                    Read::Keep => tensors.get(&name).cloned(),
                };
                match found {
                    Some(t) => t.to_device(device),
                    None if dims.contains_key(&name) => candle_core::bail!(
                        "key {key} was read twice (a network reads each tensor once)"
                    ),
                    None => candle_core::bail!("missing key {key}"),
                }
            }
            Source::Mapped(m) => m.load(&name, device),
            Source::Layout => candle_core::bail!("missing key {key}"),
        }
    }

    /// Records `problem` (the first one is kept) and returns it as a candle error.
    fn fail(&self, problem: CheckpointProblem) -> candle_core::Error {
        let message = format!("checkpoint {}: {problem}", self.path.display());
        self.lock().problem.get_or_insert(problem);
        candle_core::Error::Msg(message)
    }

    fn record(&self, key: &str, shape: &[usize], dtype: DType) {
        let mut log = self.lock();
        log.used.insert(key.to_string());
        log.layout.push(TensorSpec {
            name: key.to_string(),
            shape: shape.to_vec(),
            dtype: TensorDType::of(dtype).unwrap_or(TensorDType::F32),
        });
    }

    /// The tensor `key`, which must exist with a type convertible to `dtype`.
    fn fetch(&self, key: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        let Some((shape, stored)) = self.stored_dims(key) else {
            return Err(self.fail(CheckpointProblem::Missing {
                key: key.to_string(),
                expected: None,
            }));
        };
        if dtype.is_float() && !stored.is_float() {
            return Err(self.fail(CheckpointProblem::Type {
                key: key.to_string(),
                expected: format!("{dtype:?}").to_lowercase(),
                found: format!("{stored:?}").to_lowercase(),
            }));
        }
        self.record(key, &shape, stored);
        self.stored(key, dev, Read::Take)?.to_dtype(dtype)
    }
}

/// Whether reading a tensor held in memory removes it (a network's read) or leaves it.
#[derive(Debug, Clone, Copy)]
enum Read {
    Take,
    Keep,
}

/// The `VarBuilder` side of [`Weights`].
struct Backend(Arc<Inner>);

impl SimpleBackend for Backend {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let w = &self.0;
        if let Source::Layout = w.source {
            w.record(name, s.dims(), dtype);
            return Tensor::zeros(s, dtype, dev);
        }
        match w.stored_dims(name) {
            None => Err(w.fail(CheckpointProblem::Missing {
                key: name.to_string(),
                expected: Some(s.dims().to_vec()),
            })),
            Some((found, _)) if found != s.dims() => Err(w.fail(CheckpointProblem::Shape {
                key: name.to_string(),
                expected: s.dims().to_vec(),
                found,
            })),
            Some(_) => w.fetch(name, dtype, dev),
        }
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        let w = &self.0;
        if let Source::Layout = w.source {
            // Only BatchNorm step counters are read without a shape: int64 scalars.
            if !name.ends_with(".num_batches_tracked") {
                candle_core::bail!("the layout pass needs a shape for {name}")
            }
            w.record(name, &[], DType::I64);
            return Tensor::zeros((), dtype, dev);
        }
        w.fetch(name, dtype, dev)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        matches!(self.0.source, Source::Layout) || self.0.stored_dims(name).is_some()
    }
}

#[cfg(test)]
mod tests;
