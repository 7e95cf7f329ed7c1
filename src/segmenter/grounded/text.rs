//! Text side of Grounding-DINO: WordPiece tokenisation (the `tokenizers` crate), the
//! phrase-block self-attention mask and position ids, and the BERT encoder.

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Embedding, LayerNorm, Linear, VarBuilder};
use std::path::Path;

use super::config::{BertConfig, BertMaskMode};
use crate::error::{Error, Result};
use crate::nn::attention::attention;

/// `[CLS]`, `[SEP]`, `.` and `?`: the tokens that close a phrase block.
pub const DELIMITERS: [i64; 4] = [101, 102, 1012, 1029];

/// A batch of tokenised prompts, padded to the longest with `[PAD]` = 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenBatch {
    /// Token ids, one row per prompt.
    pub ids: Vec<Vec<i64>>,
    /// 1 for real tokens, 0 for padding.
    pub attention_mask: Vec<Vec<i64>>,
}

impl TokenBatch {
    /// Padded length.
    pub fn len(&self) -> usize {
        self.ids.first().map_or(0, Vec::len)
    }

    /// Whether the batch holds no tokens.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `input_ids` as an i64 tensor `(B, L)`.
    pub fn ids_tensor(&self, dev: &Device) -> Result<Tensor> {
        rows_tensor(&self.ids, dev)
    }

    /// The tokenizer attention mask as an i64 tensor `(B, L)`.
    pub fn mask_tensor(&self, dev: &Device) -> Result<Tensor> {
        rows_tensor(&self.attention_mask, dev)
    }
}

fn rows_tensor(rows: &[Vec<i64>], dev: &Device) -> Result<Tensor> {
    let l = rows.first().map_or(0, Vec::len);
    let flat: Vec<i64> = rows.iter().flatten().copied().collect();
    Ok(Tensor::from_vec(flat, (rows.len(), l), dev)?)
}

/// Uncased BERT WordPiece tokenizer read from a `tokenizer.json`, with padding and truncation
/// off (batches are padded to the longest prompt).
pub struct TextTokenizer {
    inner: tokenizers::Tokenizer,
}

impl std::fmt::Debug for TextTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TextTokenizer")
    }
}

impl TextTokenizer {
    /// Reads `tokenizer.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let mut inner = tokenizers::Tokenizer::from_file(path)
            .map_err(|e| Error::parse(path, format!("not a tokenizer.json: {e}")))?;
        inner.with_padding(None);
        inner
            .with_truncation(None)
            .map_err(|e| Error::parse(path, e))?;
        Ok(TextTokenizer { inner })
    }

    /// Tokenises prompts (with `[CLS]` … `[SEP]`), padding to the longest.
    pub fn encode_batch(&self, prompts: &[&str]) -> Result<TokenBatch> {
        let mut ids = Vec::with_capacity(prompts.len());
        for p in prompts {
            let enc = self
                .inner
                .encode(*p, true)
                .map_err(|e| Error::invalid(format!("tokenizing '{p}': {e}")))?;
            ids.push(enc.get_ids().iter().map(|&i| i as i64).collect::<Vec<_>>());
        }
        let l = ids.iter().map(Vec::len).max().unwrap_or(0);
        let attention_mask = ids
            .iter()
            .map(|r: &Vec<i64>| (0..l).map(|i| i64::from(i < r.len())).collect())
            .collect();
        for r in &mut ids {
            r.resize(l, 0);
        }
        Ok(TokenBatch {
            ids,
            attention_mask,
        })
    }

    /// Decodes ids to text, special tokens kept, `##` pieces glued, spaces before
    /// punctuation removed.
    pub fn decode(&self, ids: &[i64]) -> Result<String> {
        let ids: Vec<u32> = ids.iter().map(|&i| i as u32).collect();
        self.inner
            .decode(&ids, false)
            .map_err(|e| Error::invalid(format!("decoding tokens: {e}")))
    }
}

/// The phrase-block self-attention mask (`keep × keep`, true = may attend) and position ids
/// of the first `keep` tokens of one row of token ids (all `L` of them decide the blocks).
/// Each phrase with its closing delimiter forms a block whose tokens attend to each other and
/// count positions from 0; `[CLS]`, a final `[SEP]` and padding attend only to themselves with
/// position 0. Time and memory are `O(L + keep²)`, however long the prompt.
pub fn phrase_masks(ids: &[i64], keep: usize) -> (Vec<bool>, Vec<i64>) {
    let l = ids.len();
    let keep = keep.min(l);
    let is_delim = |t: i64| DELIMITERS.contains(&t);
    // next[i]: first delimiter at or after i (l if none).
    let mut next = vec![l; l];
    let mut n = l;
    for i in (0..l).rev() {
        if is_delim(ids[i]) {
            n = i;
        }
        next[i] = n;
    }
    let valid = |i: usize| next[i] != 0 && next[i] + 1 != l && next[i] != l;
    let mut mask = vec![false; keep * keep];
    let mut pos = vec![0i64; keep];
    let mut prev: i64 = -1;
    for i in 0..keep {
        mask[i * keep + i] = true;
        if valid(i) {
            pos[i] = i as i64 - prev - 1;
            for j in 0..keep {
                if next[j] == next[i] {
                    mask[i * keep + j] = true;
                }
            }
        }
        if is_delim(ids[i]) {
            prev = i as i64;
        }
    }
    (mask, pos)
}

/// Phrase masks of a batch's first `keep` tokens: `(B, keep, keep)` u8 and position ids
/// `(B, keep)` i64.
pub fn batch_phrase_masks(
    tokens: &TokenBatch,
    keep: usize,
    dev: &Device,
) -> Result<(Tensor, Tensor)> {
    let (b, keep) = (tokens.ids.len(), keep.min(tokens.len()));
    let mut masks = Vec::with_capacity(b * keep * keep);
    let mut positions = Vec::with_capacity(b * keep);
    for row in &tokens.ids {
        let (m, p) = phrase_masks(row, keep);
        masks.extend(m.into_iter().map(u8::from));
        positions.extend(p);
    }
    Ok((
        Tensor::from_vec(masks, (b, keep, keep), dev)?,
        Tensor::from_vec(positions, (b, keep), dev)?,
    ))
}

/// Additive attention bias from a 0/1 mask: 0 where allowed, the most negative f32 elsewhere.
pub(crate) fn additive_mask(allowed: &Tensor) -> Result<Tensor> {
    let allowed = allowed.to_dtype(DType::F32)?;
    Ok(((1.0 - allowed)? * f32::MIN as f64)?)
}

/// One BERT layer: self-attention and FFN, both post-norm.
#[derive(Debug)]
struct BertLayer {
    query: Linear,
    key: Linear,
    value: Linear,
    attn_out: Linear,
    attn_norm: LayerNorm,
    ffn_in: Linear,
    ffn_out: Linear,
    out_norm: LayerNorm,
    heads: usize,
}

impl BertLayer {
    fn new(c: &BertConfig, vb: VarBuilder) -> Result<Self> {
        let (h, i) = (c.hidden_size, c.intermediate_size);
        let att = vb.pp("attention");
        Ok(BertLayer {
            query: candle_nn::linear(h, h, att.pp("self").pp("query"))?,
            key: candle_nn::linear(h, h, att.pp("self").pp("key"))?,
            value: candle_nn::linear(h, h, att.pp("self").pp("value"))?,
            attn_out: candle_nn::linear(h, h, att.pp("output").pp("dense"))?,
            attn_norm: candle_nn::layer_norm(
                h,
                c.layer_norm_eps,
                att.pp("output").pp("LayerNorm"),
            )?,
            ffn_in: candle_nn::linear(h, i, vb.pp("intermediate").pp("dense"))?,
            ffn_out: candle_nn::linear(i, h, vb.pp("output").pp("dense"))?,
            out_norm: candle_nn::layer_norm(h, c.layer_norm_eps, vb.pp("output").pp("LayerNorm"))?,
            heads: c.num_attention_heads,
        })
    }

    fn forward(&self, x: &Tensor, bias: &Tensor) -> Result<Tensor> {
        let a = attention(
            &self.query.forward(x)?,
            &self.key.forward(x)?,
            &self.value.forward(x)?,
            self.heads,
            Some(bias),
        )?;
        let x = self.attn_norm.forward(&(x + self.attn_out.forward(&a)?)?)?;
        let f = self
            .ffn_out
            .forward(&self.ffn_in.forward(&x)?.gelu_erf()?)?;
        Ok(self.out_norm.forward(&(x + f)?)?)
    }
}

/// The BERT text encoder (no pooler).
#[derive(Debug)]
pub struct Bert {
    words: Embedding,
    positions: Embedding,
    token_types: Embedding,
    norm: LayerNorm,
    layers: Vec<BertLayer>,
}

impl Bert {
    /// Builds BERT from variables with the Hugging Face names (`embeddings.*`,
    /// `encoder.layer.N.*`).
    pub fn new(c: &BertConfig, vb: VarBuilder) -> Result<Self> {
        let e = vb.pp("embeddings");
        let h = c.hidden_size;
        Ok(Bert {
            words: candle_nn::embedding(c.vocab_size, h, e.pp("word_embeddings"))?,
            positions: candle_nn::embedding(
                c.max_position_embeddings,
                h,
                e.pp("position_embeddings"),
            )?,
            token_types: candle_nn::embedding(c.type_vocab_size, h, e.pp("token_type_embeddings"))?,
            norm: candle_nn::layer_norm(h, c.layer_norm_eps, e.pp("LayerNorm"))?,
            layers: (0..c.num_hidden_layers)
                .map(|i| BertLayer::new(c, vb.pp("encoder").pp("layer").pp(i)))
                .collect::<Result<Vec<_>>>()?,
        })
    }

    /// Last hidden state `(B, L, hidden)` for token ids `(B, L)`, the phrase self-attention
    /// mask `(B, L, L)` (1 = attend, applied as `mode` says) and position ids `(B, L)`;
    /// token types are 0.
    pub fn forward(
        &self,
        ids: &Tensor,
        self_mask: &Tensor,
        positions: &Tensor,
        mode: BertMaskMode,
    ) -> Result<Tensor> {
        let types = ids.zeros_like()?;
        let x = (self.words.forward(ids)? + self.positions.forward(positions)?)?;
        let x = (x + self.token_types.forward(&types)?)?;
        let mut x = self.norm.forward(&x)?;
        let bias = match mode {
            BertMaskMode::Block => additive_mask(self_mask)?,
            BertMaskMode::AddAsScores => self_mask.to_dtype(DType::F32)?,
        }
        .unsqueeze(1)?;
        for layer in &self.layers {
            x = layer.forward(&x, &bias)?;
        }
        Ok(x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::Weights;

    /// `[CLS]`, `[SEP]` and `.` of the bert-base-uncased vocabulary.
    const CLS: i64 = 101;
    const SEP: i64 = 102;
    const DOT: i64 = 1012;

    fn bert() -> Bert {
        let c = BertConfig {
            hidden_size: 16,
            num_hidden_layers: 2,
            num_attention_heads: 2,
            intermediate_size: 32,
            vocab_size: 1100,
            max_position_embeddings: 16,
            type_vocab_size: 2,
            layer_norm_eps: 1e-12,
        };
        Weights::synthetic(3, &Device::Cpu, |vb| Bert::new(&c, vb)).unwrap()
    }

    /// BERT's hidden state of each token of one prompt, with its phrase masks and its phrase
    /// position ids (or, with `absolute`, positions 0, 1, 2, ...).
    fn hidden(bert: &Bert, ids: &[i64], mode: BertMaskMode, absolute: bool) -> Vec<Vec<f32>> {
        let tokens = TokenBatch {
            ids: vec![ids.to_vec()],
            attention_mask: vec![vec![1; ids.len()]],
        };
        let dev = Device::Cpu;
        let (mask, mut pos) = batch_phrase_masks(&tokens, ids.len(), &dev).unwrap();
        if absolute {
            pos = Tensor::arange(0i64, ids.len() as i64, &dev)
                .unwrap()
                .unsqueeze(0)
                .unwrap();
        }
        let ids = tokens.ids_tensor(&dev).unwrap();
        let out = bert.forward(&ids, &mask, &pos, mode).unwrap();
        out.squeeze(0).unwrap().to_vec2().unwrap()
    }

    /// Largest absolute difference between two runs of token states.
    fn max_diff(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
        assert_eq!(a.len(), b.len());
        a.iter()
            .flatten()
            .zip(b.iter().flatten())
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max)
    }

    #[test]
    fn block_mode_keeps_each_phrase_to_itself_and_restarts_positions() {
        let bert = bert();
        let (a, b, c, d, e, f) = (500, 501, 600, 601, 700, 701);
        // "a b . c d ." and the same first phrase before another second phrase.
        let x = [CLS, a, b, DOT, c, d, DOT, SEP];
        let y = [CLS, a, b, DOT, e, f, DOT, SEP];
        // The first phrase moved behind the second.
        let z = [CLS, c, d, DOT, a, b, DOT, SEP];
        assert_eq!(phrase_masks(&x, x.len()).1, [0, 0, 1, 2, 0, 1, 2, 0]);

        let run = |ids: &[i64], mode| hidden(&bert, ids, mode, false);
        let pick = |h: &[Vec<f32>], rows: &[usize]| -> Vec<Vec<f32>> {
            rows.iter().map(|&r| h[r].clone()).collect()
        };
        let block = BertMaskMode::Block;
        let (hx, hy, hz) = (run(&x, block), run(&y, block), run(&z, block));
        // [CLS], the first phrase with its "." and the final [SEP] do not see the second
        // phrase's tokens; the second phrase's tokens do change.
        let same = [0, 1, 2, 3, 7];
        assert!(max_diff(&pick(&hx, &same), &pick(&hy, &same)) < 1e-6);
        assert!(max_diff(&pick(&hx, &[4, 5]), &pick(&hy, &[4, 5])) > 1e-3);
        // With the mask added as scores nothing is blocked: the first phrase sees the second.
        let add = BertMaskMode::AddAsScores;
        let (ax, ay) = (run(&x, add), run(&y, add));
        assert!(max_diff(&pick(&ax, &[1, 2, 3]), &pick(&ay, &[1, 2, 3])) > 1e-3);

        // A phrase's states do not depend on where it stands, as positions restart per
        // phrase; with positions counted from the start of the prompt they would.
        assert!(max_diff(&pick(&hx, &[1, 2, 3]), &pick(&hz, &[4, 5, 6])) < 1e-6);
        let (px, pz) = (
            hidden(&bert, &x, block, true),
            hidden(&bert, &z, block, true),
        );
        assert!(max_diff(&pick(&px, &[1, 2, 3]), &pick(&pz, &[4, 5, 6])) > 1e-3);
    }

    #[test]
    fn phrase_blocks_of_a_cut_prompt() {
        // [CLS] a b . c . [SEP]: blocks {0}, {1, 2, 3}, {4, 5}, {6}.
        let ids = [CLS, 5, 6, DOT, 7, DOT, SEP];
        let block = [0, 1, 1, 1, 2, 2, 3];
        let positions = [0, 0, 1, 2, 0, 1, 0];
        for keep in [7, 5, 1] {
            let (m, p) = phrase_masks(&ids, keep);
            let want: Vec<bool> = (0..keep * keep)
                .map(|k| block[k / keep] == block[k % keep])
                .collect();
            assert_eq!(m, want, "keep {keep}");
            assert_eq!(p, positions[..keep], "keep {keep}");
        }
        // A prompt far longer than the model reads (the whole of a 128 KiB argument of
        // "a.a.a…") gives only keep² mask entries, quickly, instead of L².
        let long: Vec<i64> = std::iter::once(CLS)
            .chain((0..131_072).map(|i| if i % 2 == 1 { DOT } else { 5 }))
            .chain([SEP])
            .collect();
        let (m, p) = phrase_masks(&long, 256);
        assert_eq!((m.len(), p.len()), (256 * 256, 256));
        assert_eq!(p[..5], [0, 0, 1, 0, 1]);
        assert!(
            m[256 + 2] && !m[256 + 3],
            "tokens 1 and 2 form a block, 3 starts the next"
        );
    }
}
