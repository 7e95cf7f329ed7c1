//! The detection heads' perceptron (DETR's `MLP`, Grounding-DINO's
//! `GroundingDinoMLPPredictionHead`, ReferFormer's box head): linear layers `layers.i` with ReLU
//! between them.

use candle_core::Tensor;
use candle_nn::{Linear, Module, VarBuilder};

use crate::error::Result;

/// A stack of linear layers with ReLU after all but the last.
#[derive(Debug, Clone)]
pub struct Mlp {
    layers: Vec<Linear>,
}

impl Mlp {
    /// Layers `dims[i] → dims[i+1]` under `vb.layers.i` (widths: input, hidden…, output).
    pub fn new(dims: &[usize], vb: VarBuilder) -> Result<Self> {
        let layers = dims
            .windows(2)
            .enumerate()
            .map(|(i, d)| candle_nn::linear(d[0], d[1], vb.pp("layers").pp(i)))
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Mlp { layers })
    }

    /// Applies the layers.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut x = x.clone();
        for (i, l) in self.layers.iter().enumerate() {
            x = l.forward(&x)?;
            if i + 1 < self.layers.len() {
                x = x.relu()?;
            }
        }
        Ok(x)
    }
}
