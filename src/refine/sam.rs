//! SAM as the refiner's mask proposer: box prompts (and optional mask inputs) decoded on the
//! frame's image embedding, computed once per frame.

use super::{BoxPrompt, Candidate, MaskProposer, MaskRefiner, RefineConfig};
use crate::error::Result;
use crate::segmenter::sam::{ImageEmbedding, Prompt, SamModel};
use crate::video::Frame;
use std::sync::Arc;

/// The SAM image embedding of the last frame asked for, so that every prompt on a frame (the
/// refiner's, or a SAM segmenter's holding the same cache) shares one encoder run.
pub struct FrameEmbeddings {
    model: Arc<SamModel>,
    /// (frame index, width, height) and its embedding.
    last: Option<((usize, usize, usize), ImageEmbedding)>,
}

impl FrameEmbeddings {
    /// An empty cache for `model`.
    pub fn new(model: Arc<SamModel>) -> Self {
        FrameEmbeddings { model, last: None }
    }

    /// The model.
    pub fn model(&self) -> &SamModel {
        &self.model
    }

    /// The embedding of `frame`, computed unless it is the frame of the last call.
    pub fn get(&mut self, frame: &Frame) -> Result<&ImageEmbedding> {
        let key = (frame.index, frame.width(), frame.height());
        if self.last.as_ref().is_none_or(|(k, _)| *k != key) {
            let emb = self.model.embed_image(&frame.image)?;
            self.last = Some((key, emb));
        }
        Ok(&self.last.as_ref().expect("just set").1)
    }
}

/// Proposes SAM masks for box prompts.
pub struct SamProposer {
    embeddings: FrameEmbeddings,
}

impl SamProposer {
    /// A proposer around `model`.
    pub fn new(model: Arc<SamModel>) -> Self {
        SamProposer {
            embeddings: FrameEmbeddings::new(model),
        }
    }

    /// The embedding cache (to share the frame's embedding).
    pub fn embeddings(&mut self) -> &mut FrameEmbeddings {
        &mut self.embeddings
    }
}

impl MaskProposer for SamProposer {
    fn propose(
        &mut self,
        frame: &Frame,
        prompts: &[BoxPrompt],
        multimask: bool,
    ) -> Result<Vec<Vec<Candidate>>> {
        let model = self.embeddings.model.clone();
        let emb = self.embeddings.get(frame)?;
        prompts
            .iter()
            .map(|p| -> Result<Vec<Candidate>> {
                let prompt = Prompt {
                    points: Vec::new(),
                    bbox: Some(p.bbox),
                    mask_input: p.mask_input.clone(),
                };
                let pred = model.predict(emb, &prompt, multimask)?;
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
