//! SAM as the refiner's mask proposer: box prompts (and optional mask inputs) decoded on the
//! frame's image embedding. The model keeps the embedding of the last frame it embedded, so a
//! SAM segmenter holding the same model on the same frame shares one encoder run.

use super::{BoxPrompt, Candidate, MaskProposer, MaskRefiner, RefineConfig};
use crate::error::Result;
use crate::segmenter::sam::{Prompt, SamModel};
use crate::video::Frame;
use std::sync::Arc;

/// Proposes SAM masks for box prompts.
pub struct SamProposer {
    model: Arc<SamModel>,
}

impl SamProposer {
    /// A proposer around `model`.
    pub fn new(model: Arc<SamModel>) -> Self {
        SamProposer { model }
    }

    /// The model (shared, with its cached frame embedding).
    pub fn model(&self) -> &Arc<SamModel> {
        &self.model
    }
}

impl MaskProposer for SamProposer {
    fn propose(
        &mut self,
        frame: &Frame,
        prompts: &[BoxPrompt],
        multimask: bool,
    ) -> Result<Vec<Vec<Candidate>>> {
        let emb = self.model.embed_image(&frame.image)?;
        prompts
            .iter()
            .map(|p| -> Result<Vec<Candidate>> {
                let prompt = Prompt {
                    points: Vec::new(),
                    bbox: Some(p.bbox),
                    mask_input: p.mask_input.clone(),
                };
                let pred = self.model.predict(&emb, &prompt, multimask)?;
                (0..pred.iou.len())
                    .map(|i| -> Result<Candidate> {
                        Ok(Candidate {
                            mask: pred.mask(i),
                            iou: pred.iou[i],
                            low_res: Some(pred.low_res.narrow(0, i, 1)?),
                        })
                    })
                    .collect()
            })
            .collect()
    }
}

/// The SAM refiner.
pub type SamRefiner = MaskRefiner<SamProposer>;

impl SamRefiner {
    /// A SAM refiner with `config` around `model`.
    pub fn with_model(model: Arc<SamModel>, config: RefineConfig) -> Result<Self> {
        MaskRefiner::new(SamProposer::new(model), config)
    }
}
