//! Strict access to a model's parameters: every key a network asks for must exist with the
//! expected shape, and every key of the file must be used.

use std::collections::HashSet;

use candle_core::{Device, Tensor};

use super::checkpoint::{StateDict, TensorDType};
use super::synthetic::{self, TensorSpec};
use crate::error::Result;

/// BatchNorm epsilon of PyTorch's default `BatchNorm2d`.
const BN_EPS: f64 = 1e-5;

enum Source {
    Dict(StateDict),
    Synthetic(u64),
}

/// Parameters of a network being built, from a checkpoint or from the synthetic formula.
///
/// Networks take what they need by full key; [`finish`](Weights::finish) then refuses keys
/// nobody asked for. The requested keys are recorded (in order) as the network's state-dict
/// layout.
pub struct Weights {
    source: Source,
    device: Device,
    used: HashSet<String>,
    spec: Vec<TensorSpec>,
}

/// An eval-mode BatchNorm reduced to a per-channel affine map `y = scale · x + shift`.
#[derive(Debug, Clone)]
pub struct BatchNormAffine {
    /// γ / √(var + ε).
    pub scale: Vec<f32>,
    /// β − mean · scale.
    pub shift: Vec<f32>,
}

impl Weights {
    /// Parameters read from a checkpoint.
    pub fn from_state_dict(dict: StateDict, device: &Device) -> Self {
        Weights {
            source: Source::Dict(dict),
            device: device.clone(),
            used: HashSet::new(),
            spec: Vec::new(),
        }
    }

    /// Parameters from the synthetic formula with `seed` (see [`synthetic`]).
    pub fn synthetic(seed: u64, device: &Device) -> Self {
        Weights {
            source: Source::Synthetic(seed),
            device: device.clone(),
            used: HashSet::new(),
            spec: Vec::new(),
        }
    }

    /// Device the tensors are created on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    fn record(&mut self, name: &str, shape: &[usize], dtype: TensorDType) {
        self.spec.push(TensorSpec {
            name: name.to_string(),
            shape: shape.to_vec(),
            dtype,
        });
    }

    fn float(&mut self, name: &str, shape: &[usize], batch_norm: bool) -> Result<Vec<f32>> {
        self.record(name, shape, TensorDType::F32);
        match &self.source {
            Source::Synthetic(seed) => Ok(synthetic::float_values(name, shape, batch_norm, *seed)),
            Source::Dict(d) => {
                let t = d.get(name).ok_or_else(|| {
                    d.error(format!("missing key '{name}' (expected shape {shape:?})"))
                })?;
                if t.shape() != shape {
                    return Err(d.error(format!(
                        "key '{name}' has shape {:?}, expected {shape:?}",
                        t.shape()
                    )));
                }
                let v = t.to_f32().ok_or_else(|| {
                    d.error(format!(
                        "key '{name}' has type {}, expected a floating-point tensor",
                        t.dtype().torch_name()
                    ))
                })?;
                self.used.insert(name.to_string());
                Ok(v)
            }
        }
    }

    /// The f32 values of `name`, which must have exactly `shape`.
    pub fn values(&mut self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        self.float(name, shape, false)
    }

    /// The tensor `name` (f32, on this device), which must have exactly `shape`.
    pub fn tensor(&mut self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let v = self.values(name, shape)?;
        Ok(Tensor::from_vec(v, shape, &self.device)?)
    }

    /// Declares `name` as part of the layout although the network does not use it at
    /// inference (e.g. training-only heads); it must still be present with this shape.
    pub fn skip(&mut self, name: &str, shape: &[usize]) -> Result<()> {
        self.values(name, shape).map(drop)
    }

    /// The eval-mode BatchNorm with `channels` channels under `prefix`
    /// (`weight`, `bias`, `running_mean`, `running_var`; `num_batches_tracked` may be absent).
    pub fn batch_norm(&mut self, prefix: &str, channels: usize) -> Result<BatchNormAffine> {
        let shape = [channels];
        let gamma = self.float(&format!("{prefix}.weight"), &shape, true)?;
        let beta = self.float(&format!("{prefix}.bias"), &shape, true)?;
        let mean = self.float(&format!("{prefix}.running_mean"), &shape, true)?;
        let var = self.float(&format!("{prefix}.running_var"), &shape, true)?;
        let counter = format!("{prefix}.num_batches_tracked");
        self.record(&counter, &[], TensorDType::I64);
        if let Source::Dict(d) = &self.source {
            if let Some(t) = d.get(&counter) {
                if t.numel() != 1 || t.dtype().is_float() {
                    return Err(d.error(format!(
                        "key '{counter}' has shape {:?} and type {}, expected an integer scalar",
                        t.shape(),
                        t.dtype().torch_name()
                    )));
                }
                self.used.insert(counter);
            }
        }
        let mut scale = Vec::with_capacity(channels);
        let mut shift = Vec::with_capacity(channels);
        for c in 0..channels {
            let s = gamma[c] as f64 / (var[c] as f64 + BN_EPS).sqrt();
            scale.push(s as f32);
            shift.push((beta[c] as f64 - mean[c] as f64 * s) as f32);
        }
        Ok(BatchNormAffine { scale, shift })
    }

    /// Ends loading: fails on keys of the checkpoint that nothing asked for, and returns the
    /// layout (every requested key with its shape and type, in request order).
    pub fn finish(self) -> Result<Vec<TensorSpec>> {
        if let Source::Dict(d) = &self.source {
            let unexpected: Vec<&str> = d.names().filter(|n| !self.used.contains(*n)).collect();
            if let Some(first) = unexpected.first() {
                let more = match unexpected.len() {
                    1 => String::new(),
                    n => format!(" (and {} more)", n - 1),
                };
                return Err(d.error(format!("unexpected key '{first}'{more}")));
            }
        }
        Ok(self.spec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::checkpoint::RawTensor;

    fn dict() -> StateDict {
        let mut d = StateDict::new("/tmp/x.pth");
        d.insert(
            "bn.weight",
            RawTensor::from_f32(vec![2], &[1.0, 2.0]).unwrap(),
        );
        d.insert(
            "bn.bias",
            RawTensor::from_f32(vec![2], &[0.5, 0.0]).unwrap(),
        );
        d.insert(
            "bn.running_mean",
            RawTensor::from_f32(vec![2], &[1.0, -1.0]).unwrap(),
        );
        d.insert(
            "bn.running_var",
            RawTensor::from_f32(vec![2], &[3.0, 0.0]).unwrap(),
        );
        d
    }

    #[test]
    fn batch_norm_folds_and_counter_is_optional() {
        let mut w = Weights::from_state_dict(dict(), &Device::Cpu);
        let bn = w.batch_norm("bn", 2).unwrap();
        let s0 = 1.0 / (3.0f64 + 1e-5).sqrt();
        assert!((bn.scale[0] as f64 - s0).abs() < 1e-7);
        assert!((bn.shift[0] as f64 - (0.5 - s0)).abs() < 1e-7);
        let spec = w.finish().unwrap();
        assert_eq!(spec.len(), 5);
        assert_eq!(spec[4].name, "bn.num_batches_tracked");

        let mut d = dict();
        d.insert(
            "bn.num_batches_tracked",
            RawTensor::from_i64(vec![], &[7]).unwrap(),
        );
        let mut w = Weights::from_state_dict(d, &Device::Cpu);
        w.batch_norm("bn", 2).unwrap();
        assert!(w.finish().is_ok());
    }

    #[test]
    fn strictness_names_the_key_and_file() {
        let mut w = Weights::from_state_dict(dict(), &Device::Cpu);
        let e = w.values("bn.weight", &[3]).unwrap_err().to_string();
        assert!(
            e.contains("bn.weight") && e.contains("[2]") && e.contains("/tmp/x.pth"),
            "{e}"
        );
        let e = w.values("conv.weight", &[1]).unwrap_err().to_string();
        assert!(e.contains("missing key 'conv.weight'"), "{e}");
        let mut w = Weights::from_state_dict(dict(), &Device::Cpu);
        w.values("bn.weight", &[2]).unwrap();
        let e = w.finish().unwrap_err().to_string();
        assert!(e.contains("unexpected key 'bn.bias' (and 2 more)"), "{e}");
    }
}
