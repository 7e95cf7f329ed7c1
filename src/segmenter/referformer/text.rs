//! RoBERTa, ReferFormer's text encoder: the BERT layers of [`Bert`] with RoBERTa's position
//! ids (counted from the padding index + 1) and its pooler (`tanh` of a dense layer on the
//! first token).

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Linear, VarBuilder};

use crate::error::Result;
use crate::segmenter::grounded::{Bert, BertConfig, BertMaskMode};

/// RoBERTa's padding token id; positions start right after it.
pub const PADDING_IDX: i64 = 1;

/// The RoBERTa encoder with its pooler.
#[derive(Debug)]
pub struct Roberta {
    bert: Bert,
    pooler: Linear,
}

impl Roberta {
    /// Loads `embeddings.*`, `encoder.layer.N.*` and `pooler.dense` under `vb`.
    pub fn new(c: &BertConfig, vb: VarBuilder) -> Result<Self> {
        let h = c.hidden_size;
        Ok(Roberta {
            bert: Bert::new(c, vb.clone())?,
            pooler: candle_nn::linear(h, h, vb.pp("pooler").pp("dense"))?,
        })
    }

    /// Last hidden state `[1, L, hidden]` and pooled sentence feature `[1, hidden]` of one
    /// unpadded sequence of token ids.
    pub fn forward(&self, ids: &[i64], dev: &Device) -> Result<(Tensor, Tensor)> {
        let l = ids.len();
        let ids_t = Tensor::from_vec(ids.to_vec(), (1, l), dev)?;
        let positions: Vec<i64> = (0..l as i64).map(|i| PADDING_IDX + 1 + i).collect();
        let positions = Tensor::from_vec(positions, (1, l), dev)?;
        let attend = Tensor::ones((1, l, l), DType::U8, dev)?;
        let hidden = self
            .bert
            .forward(&ids_t, &attend, &positions, BertMaskMode::Block)?;
        let pooled = self
            .pooler
            .forward(&hidden.narrow(1, 0, 1)?.squeeze(1)?)?
            .tanh()?;
        Ok((hidden, pooled))
    }
}
