//! The post-norm feed-forward block of the deformable-DETR family's encoders (Mask2Former's
//! pixel decoder, ReferFormer's transformer and cross-modal FPN): `norm(x + fc2(relu(fc1(x))))`,
//! with the bias and ReLU written in the first product's pass and the residual added in the
//! second's ([`Dense`]).

use candle_core::Tensor;
use candle_nn::VarBuilder;

use super::act::Activation;
use super::dense::Dense;
use super::norm::LayerNorm;
use crate::error::Result;

/// `norm(x + fc2(relu(fc1(x))))`.
#[derive(Debug, Clone)]
pub struct PostNormFfn {
    fc1: Dense,
    fc2: Dense,
    norm: LayerNorm,
}

impl PostNormFfn {
    /// The layers `fc1` (`d → hidden`) and `fc2` (`hidden → d`) and the LayerNorm `norm` of
    /// epsilon `eps`, each at its own key prefix.
    pub fn load(
        [fc1, fc2, norm]: [VarBuilder; 3],
        (d, hidden): (usize, usize),
        eps: f64,
    ) -> Result<Self> {
        Ok(PostNormFfn {
            fc1: Dense::load(fc1, (d, hidden), Activation::Relu)?,
            fc2: Dense::load(fc2, (hidden, d), Activation::Identity)?,
            norm: LayerNorm::load(norm, d, eps)?,
        })
    }

    /// Applies the block to `x [..., d]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = self.fc1.forward(x)?;
        self.norm.forward(&self.fc2.forward_add(&h, x)?)
    }
}
