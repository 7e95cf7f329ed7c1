//! [`PropagatorSpec`]: which propagator carries objects through time, with its settings, as a
//! `[propagator]` section of a config file, a library user or the command line give it; and
//! [`build`], which turns a spec into a propagator.

use super::deva::{DevaPropagator, MemoryConfig};
use super::flow::FlowConfig;
use super::{FlowPropagator, Propagator, StaticPropagator};
use crate::error::{Error, Result};
use crate::models::ModelStore;
use candle_core::Device;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// A propagator and its settings (`[propagator]`, tagged by `kind`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum PropagatorSpec {
    /// Weight-free optical flow (DIS) with occlusion filling and colour re-anchoring.
    Flow(FlowConfig),
    /// The DEVA propagation network.
    Deva(DevaSpec),
    /// Zero motion: masks stay where they were (a weight-free baseline).
    Static,
    /// No propagation: every frame gets its own image segmentation (a baseline).
    None,
}

impl Default for PropagatorSpec {
    fn default() -> Self {
        PropagatorSpec::Flow(FlowConfig::default())
    }
}

/// The DEVA network: where its weights come from and its memory settings.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DevaSpec {
    /// Checkpoint (`DEVA-propagation.pth` or a safetensors conversion); unset: the model
    /// `deva-propagation` of the models folder.
    pub weights: Option<PathBuf>,
    /// Memory settings (`[propagator.memory]`).
    pub memory: MemoryConfig,
}

impl PropagatorSpec {
    /// Short name, as `--propagator` spells it.
    pub fn name(&self) -> &'static str {
        match self {
            PropagatorSpec::Flow(_) => "flow",
            PropagatorSpec::Deva(_) => "deva",
            PropagatorSpec::Static => "static",
            PropagatorSpec::None => "none",
        }
    }

    /// Checks value ranges; messages name the key.
    pub fn validate(&self) -> Result<()> {
        match self {
            PropagatorSpec::Flow(c) => c.validate(),
            PropagatorSpec::Deva(d) => d.memory.validate(),
            PropagatorSpec::Static | PropagatorSpec::None => Ok(()),
        }
    }
}

/// Builds the propagator of `spec` (`None` for image-only mode), loading weights from the
/// spec's file or `store` onto `device`.
pub fn build(
    spec: &PropagatorSpec,
    store: &ModelStore,
    device: &Device,
) -> Result<Option<Box<dyn Propagator>>> {
    spec.validate()?;
    Ok(match spec {
        PropagatorSpec::Flow(c) => Some(Box::new(FlowPropagator::new(c.clone())?)),
        PropagatorSpec::Static => Some(Box::new(StaticPropagator::new())),
        PropagatorSpec::None => None,
        PropagatorSpec::Deva(d) => {
            let path = match &d.weights {
                Some(p) if !p.is_file() => {
                    return Err(Error::checkpoint(
                        p,
                        "DEVA weights file not found (DEVA-propagation.pth or .safetensors; \
                         `deva models fetch deva-propagation` downloads it)",
                    ))
                }
                Some(p) => p.clone(),
                None => store.path("deva-propagation")?,
            };
            Some(Box::new(DevaPropagator::from_checkpoint(
                &path, &d.memory, device,
            )?))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_weights_and_models_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let store = ModelStore::new(dir.path()).unwrap();
        let w = dir.path().join("nothing.pth");
        let deva = |weights| {
            PropagatorSpec::Deva(DevaSpec {
                weights,
                memory: MemoryConfig::default(),
            })
        };
        let e = build(&deva(Some(w)), &store, &Device::Cpu)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("nothing.pth") && e.contains("not found"), "{e}");
        let e = build(&deva(None), &store, &Device::Cpu)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("deva models fetch deva-propagation"), "{e}");
        for spec in [
            PropagatorSpec::default(),
            PropagatorSpec::Static,
            PropagatorSpec::None,
        ] {
            let p = build(&spec, &store, &Device::Cpu).unwrap();
            let expected = (spec != PropagatorSpec::None).then_some(spec.name());
            assert_eq!(p.map(|p| p.name().to_string()).as_deref(), expected);
        }
    }
}
