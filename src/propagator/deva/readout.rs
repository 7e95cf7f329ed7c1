//! Memory reading (reference §1.10): anisotropic L2 similarity with shrinkage and selection,
//! top-k softmax, and the sparse readout of memory values, on token-major data (keys
//! `[tokens][64]`, values `[tokens][512]`). [`read`] works on tensors of any device: on the
//! CPU it runs the host kernels of this module on the tensors' memory, elsewhere candle
//! operations with the same formulas.

use candle_core::Tensor;
use rayon::prelude::*;

use super::network::KEY_DIM;
use crate::error::Result;
use crate::nn::linalg::{matmul, Dst, MatRef};

/// Query rows processed together (bounds the similarity buffer to `rows × tokens`).
const ROW_BLOCK: usize = 32;

/// Keys and shrinkage of a run of memory tokens.
#[derive(Debug, Clone, Copy)]
pub struct KeySet<'a> {
    /// `[tokens][KEY_DIM]`.
    pub key: &'a [f32],
    /// `[tokens]`.
    pub shrinkage: &'a [f32],
}

impl KeySet<'_> {
    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.shrinkage.len()
    }

    /// Whether there are no tokens.
    pub fn is_empty(&self) -> bool {
        self.shrinkage.is_empty()
    }
}

/// The query side of the similarity: for each query `x`, `[qe, qk·qe]` and `Σ qe·qk²`.
#[derive(Debug, Clone)]
pub struct Query {
    terms: Vec<f32>,
    offset: Vec<f32>,
}

impl Query {
    /// Queries from token-major keys and selections `[queries][KEY_DIM]`.
    pub fn new(key: &[f32], selection: &[f32]) -> Self {
        let n = key.len() / KEY_DIM;
        let mut terms = Vec::with_capacity(2 * key.len());
        let mut offset = Vec::with_capacity(n);
        for (k, e) in key.chunks(KEY_DIM).zip(selection.chunks(KEY_DIM)) {
            terms.extend_from_slice(e);
            terms.extend(k.iter().zip(e).map(|(k, e)| k * e));
            offset.push(k.iter().zip(e).map(|(k, e)| e * k * k).sum());
        }
        Query { terms, offset }
    }

    /// Number of queries.
    pub fn len(&self) -> usize {
        self.offset.len()
    }

    /// Whether there are no queries.
    pub fn is_empty(&self) -> bool {
        self.offset.is_empty()
    }
}

/// The memory side: per token `[−mk², 2·mk]` and `shrinkage / √64`, over several key sets
/// concatenated (e.g. long-term then working memory).
struct MemoryTerms {
    terms: Vec<f32>,
    scale: Vec<f32>,
}

impl MemoryTerms {
    fn new(sets: &[KeySet]) -> Self {
        let n: usize = sets.iter().map(KeySet::len).sum();
        let mut terms = Vec::with_capacity(2 * KEY_DIM * n);
        let mut scale = Vec::with_capacity(n);
        let norm = (KEY_DIM as f32).sqrt();
        for s in sets {
            for k in s.key.chunks(KEY_DIM) {
                terms.extend(k.iter().map(|v| -v * v));
                terms.extend(k.iter().map(|v| 2.0 * v));
            }
            scale.extend(s.shrinkage.iter().map(|s| s / norm));
        }
        MemoryTerms { terms, scale }
    }

    fn len(&self) -> usize {
        self.scale.len()
    }

    /// Similarities of query rows `rows` to every token, row-major into `out`.
    fn similarity(&self, q: &Query, rows: std::ops::Range<usize>, out: &mut [f32]) {
        let n = self.len();
        let m = rows.len();
        let lhs = &q.terms[rows.start * 2 * KEY_DIM..rows.end * 2 * KEY_DIM];
        matmul(
            Dst::Set,
            m,
            n,
            2 * KEY_DIM,
            out,
            n,
            MatRef::rows(lhs, 2 * KEY_DIM),
            MatRef::transposed(&self.terms, 2 * KEY_DIM),
            false,
        );
        for (row, off) in out.chunks_mut(n).zip(&q.offset[rows]) {
            for (v, s) in row.iter_mut().zip(&self.scale) {
                *v = (*v - off) * s;
            }
        }
    }
}

/// Similarity `[queries][tokens]` (`get_similarity`, transposed to query-major).
pub fn similarity(query: &Query, memory: &[KeySet]) -> Vec<f32> {
    let terms = MemoryTerms::new(memory);
    let mut out = vec![0.0; query.len() * terms.len()];
    terms.similarity(query, 0..query.len(), &mut out);
    out
}

/// For each query, the `k` memory tokens it reads and their weights.
#[derive(Debug, Clone, PartialEq)]
pub struct TopK {
    k: usize,
    tokens: usize,
    index: Vec<u32>,
    weight: Vec<f32>,
}

/// The `k` largest entries of `row` (ties keep the lower index) with softmax weights.
///
/// The reference exponentiates the raw values (no max subtraction) and can return 0/0 when
/// all of them are below about −87; subtracting the largest selected value is the same
/// quantity wherever the reference is finite and never overflows or divides by zero.
pub fn top_k_softmax(row: &[f32], index: &mut [u32], weight: &mut [f32]) {
    let k = index.len();
    let mut min_at = 0;
    for (i, &v) in row.iter().enumerate() {
        if i < k {
            index[i] = i as u32;
            weight[i] = v;
            if i == k - 1 {
                min_at = argmin(weight);
            }
        } else if v > weight[min_at] {
            index[min_at] = i as u32;
            weight[min_at] = v;
            min_at = argmin(weight);
        }
    }
    let max = weight.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for w in weight.iter_mut() {
        *w = (*w - max).exp();
        sum += *w;
    }
    weight.iter_mut().for_each(|w| *w /= sum);
}

fn argmin(v: &[f32]) -> usize {
    let mut at = 0;
    for (i, &x) in v.iter().enumerate() {
        if x < v[at] {
            at = i;
        }
    }
    at
}

impl TopK {
    /// Top-`k` softmax of every query over the memory (`do_softmax(top_k=k)`); `k` is capped
    /// at the memory size.
    pub fn compute(query: &Query, memory: &[KeySet], k: usize) -> TopK {
        let terms = MemoryTerms::new(memory);
        let n = terms.len();
        let k = k.min(n);
        let hw = query.len();
        let mut index = vec![0u32; hw * k];
        let mut weight = vec![0.0f32; hw * k];
        index
            .par_chunks_mut(ROW_BLOCK * k)
            .zip(weight.par_chunks_mut(ROW_BLOCK * k))
            .enumerate()
            .for_each(|(b, (idx, w))| {
                let start = b * ROW_BLOCK;
                let rows = start..(start + ROW_BLOCK).min(hw);
                let mut sim = vec![0.0f32; rows.len() * n];
                terms.similarity(query, rows, &mut sim);
                for ((row, i), w) in sim.chunks(n).zip(idx.chunks_mut(k)).zip(w.chunks_mut(k)) {
                    top_k_softmax(row, i, w);
                }
            });
        TopK {
            k,
            tokens: n,
            index,
            weight,
        }
    }

    /// Summed affinity of every memory token over all queries (memory usage).
    pub fn usage(&self) -> Vec<f32> {
        let mut u = vec![0.0f32; self.tokens];
        for (&i, &w) in self.index.iter().zip(&self.weight) {
            u[i as usize] += w;
        }
        u
    }

    /// The dense affinity `[tokens][queries]` (reference layout), for inspection.
    pub fn dense(&self) -> Vec<f32> {
        let hw = self.index.len() / self.k.max(1);
        let mut a = vec![0.0f32; self.tokens * hw];
        for (x, (idx, w)) in self
            .index
            .chunks(self.k)
            .zip(self.weight.chunks(self.k))
            .enumerate()
        {
            for (&i, &w) in idx.iter().zip(w) {
                a[i as usize * hw + x] = w;
            }
        }
        a
    }

    /// Reads values `[tokens][channels]` (given as consecutive runs matching the key sets):
    /// the result is channel-major `[channels][queries]`.
    pub fn read(&self, values: &[&[f32]], channels: usize) -> Vec<f32> {
        let mut starts = Vec::with_capacity(values.len());
        let mut at = 0;
        for v in values {
            starts.push(at);
            at += v.len() / channels;
        }
        assert_eq!(at, self.tokens, "values do not match the memory keys");
        let token = |t: usize| -> &[f32] {
            let s = starts.partition_point(|&s| s <= t) - 1;
            let r = t - starts[s];
            &values[s][r * channels..(r + 1) * channels]
        };
        let hw = self.index.len() / self.k.max(1);
        let mut by_query = vec![0.0f32; hw * channels];
        by_query
            .par_chunks_mut(channels)
            .enumerate()
            .for_each(|(x, acc)| {
                let idx = &self.index[x * self.k..(x + 1) * self.k];
                let w = &self.weight[x * self.k..(x + 1) * self.k];
                for (&i, &w) in idx.iter().zip(w) {
                    for (a, v) in acc.iter_mut().zip(token(i as usize)) {
                        *a += w * v;
                    }
                }
            });
        transpose(&by_query, hw, channels)
    }
}

/// Transposes a row-major `rows × cols` matrix.
pub fn transpose(m: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut t = vec![0.0f32; m.len()];
    for (r, row) in m.chunks(cols).enumerate() {
        for (c, &v) in row.iter().enumerate() {
            t[c * rows + r] = v;
        }
    }
    t
}

/// Memory keys on the tensors' device: token-major `key` `[tokens, KEY_DIM]` and `shrinkage`
/// `[tokens]`.
#[derive(Debug, Clone, Copy)]
pub struct KeyTensors<'a> {
    /// Keys.
    pub key: &'a Tensor,
    /// Shrinkage.
    pub shrinkage: &'a Tensor,
}

/// What one memory read gives.
#[derive(Debug, Clone)]
pub struct Readout {
    /// One `[channels, queries]` readout per value set.
    pub values: Vec<Tensor>,
    /// Summed affinity of every memory token over all queries `[tokens]` (memory usage).
    pub usage: Tensor,
}

/// Top-k memory read on the tensors' device: the queries `key` and `selection`
/// `[queries, KEY_DIM]` against the concatenated key `sets`; each entry of `values` is one
/// object's token-major values given as runs `[tokens_i, channels]` matching the key sets.
/// On the CPU the host kernels above run on the tensors' memory (no copy); other devices use
/// candle operations with the same formulas.
pub fn read(
    key: &Tensor,
    selection: &Tensor,
    sets: &[KeyTensors],
    values: &[Vec<&Tensor>],
    k: usize,
) -> Result<Readout> {
    if key.device().is_cpu() {
        read_host(key, selection, sets, values, k)
    } else {
        read_ops(key, selection, sets, values, k)
    }
}

fn read_host(
    key: &Tensor,
    selection: &Tensor,
    sets: &[KeyTensors],
    values: &[Vec<&Tensor>],
    k: usize,
) -> Result<Readout> {
    let mut all = vec![key, selection];
    for s in sets {
        all.extend([s.key, s.shrinkage]);
    }
    all.extend(values.iter().flatten().copied());
    crate::nn::with_host_slices(&all, |sl| {
        let query = Query::new(sl[0], sl[1]);
        let key_sets: Vec<KeySet> = sl[2..2 + 2 * sets.len()]
            .chunks(2)
            .map(|p| KeySet {
                key: p[0],
                shrinkage: p[1],
            })
            .collect();
        let top = TopK::compute(&query, &key_sets, k);
        let mut runs = &sl[2 + 2 * sets.len()..];
        let mut out = Vec::with_capacity(values.len());
        for v in values {
            let channels = v[0].dim(1)?;
            let r = top.read(&runs[..v.len()], channels);
            out.push(Tensor::from_vec(r, (channels, query.len()), key.device())?);
            runs = &runs[v.len()..];
        }
        let usage = top.usage();
        let n = usage.len();
        Ok(Readout {
            values: out,
            usage: Tensor::from_vec(usage, n, key.device())?,
        })
    })
}

/// Similarity `[queries, tokens]` of token-major queries to memory keys, with candle
/// operations (any device): `(2·qk·qe·mk − qe·mk² − Σ qe·qk²) · shrinkage / √KEY_DIM`.
pub fn similarity_tensor(key: &Tensor, selection: &Tensor, memory: &KeyTensors) -> Result<Tensor> {
    let mk = memory.key;
    let cross = (key * selection)?.matmul(&mk.t()?)?;
    let square = selection.matmul(&mk.sqr()?.t()?)?;
    let offset = (selection * key.sqr()?)?.sum_keepdim(1)?;
    let d = ((cross * 2.0)? - square)?.broadcast_sub(&offset)?;
    let scale = (memory.shrinkage / (KEY_DIM as f64).sqrt())?.unsqueeze(0)?;
    Ok(d.broadcast_mul(&scale)?)
}

/// [`read`] with candle operations: top-k by repeated arg-max (each pick masked with −∞),
/// softmax of the picks, readout through the dense affinity.
fn read_ops(
    key: &Tensor,
    selection: &Tensor,
    sets: &[KeyTensors],
    values: &[Vec<&Tensor>],
    k: usize,
) -> Result<Readout> {
    let keys: Vec<&Tensor> = sets.iter().map(|s| s.key).collect();
    let shrinkage: Vec<&Tensor> = sets.iter().map(|s| s.shrinkage).collect();
    let (mk, ms) = (Tensor::cat(&keys, 0)?, Tensor::cat(&shrinkage, 0)?);
    let memory = KeyTensors {
        key: &mk,
        shrinkage: &ms,
    };
    let sim = similarity_tensor(key, selection, &memory)?;
    let (queries, tokens) = sim.dims2()?;
    let masked = Tensor::full(f32::NEG_INFINITY, (queries, 1), sim.device())?;
    let (mut rest, mut index, mut picked) = (sim.clone(), Vec::new(), Vec::new());
    for _ in 0..k.min(tokens) {
        let i = rest.argmax_keepdim(1)?;
        picked.push(rest.gather(&i, 1)?);
        rest = rest.scatter_add(&i, &masked, 1)?;
        index.push(i);
    }
    let weight = candle_nn::ops::softmax_last_dim(&Tensor::cat(&picked, 1)?)?;
    let affinity = sim
        .zeros_like()?
        .scatter_add(&Tensor::cat(&index, 1)?, &weight, 1)?;
    let out = values
        .iter()
        .map(|runs| Ok(affinity.matmul(&Tensor::cat(runs, 0)?)?.t()?.contiguous()?))
        .collect::<Result<_>>()?;
    Ok(Readout {
        values: out,
        usage: affinity.sum(0)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pseudo(n: usize, seed: u64, scale: f32) -> Vec<f32> {
        (0..n as u64)
            .map(|i| {
                let z = crate::nn::synthetic::splitmix64(seed.wrapping_add(i));
                ((z >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * scale
            })
            .collect()
    }

    #[test]
    fn similarity_is_the_anisotropic_l2_formula() {
        let (nq, nm) = (5, 7);
        let qk = pseudo(nq * KEY_DIM, 1, 2.0);
        let qe: Vec<f32> = pseudo(nq * KEY_DIM, 2, 1.0)
            .iter()
            .map(|v| v + 0.5)
            .collect();
        let mk = pseudo(nm * KEY_DIM, 3, 2.0);
        let ms: Vec<f32> = pseudo(nm, 4, 1.0).iter().map(|v| v + 1.5).collect();
        let sim = similarity(
            &Query::new(&qk, &qe),
            &[
                KeySet {
                    key: &mk[..3 * KEY_DIM],
                    shrinkage: &ms[..3],
                },
                KeySet {
                    key: &mk[3 * KEY_DIM..],
                    shrinkage: &ms[3..],
                },
            ],
        );
        for x in 0..nq {
            for n in 0..nm {
                let mut d = 0.0f64;
                for c in 0..KEY_DIM {
                    let diff = (mk[n * KEY_DIM + c] - qk[x * KEY_DIM + c]) as f64;
                    d -= qe[x * KEY_DIM + c] as f64 * diff * diff;
                }
                let want = d * ms[n] as f64 / 8.0;
                assert!((sim[x * nm + n] as f64 - want).abs() < 1e-4, "{x} {n}");
            }
        }
    }

    /// Our top-k softmax against the reference formula exp(v) / Σ exp(v) (in f64) wherever
    /// that is finite, and finite everywhere.
    #[test]
    fn top_k_softmax_equals_the_reference_and_never_nans() {
        let k = 30;
        for (seed, scale, offset) in [(1u64, 40.0f32, 0.0f32), (2, 5.0, -20.0), (3, 1.0, -200.0)] {
            let row: Vec<f32> = pseudo(500, seed, scale)
                .iter()
                .map(|v| v + offset)
                .collect();
            let (mut idx, mut w) = (vec![0u32; k], vec![0.0f32; k]);
            top_k_softmax(&row, &mut idx, &mut w);
            let mut sorted: Vec<(f32, usize)> = row.iter().copied().zip(0..).collect();
            sorted.sort_by(|a, b| b.0.total_cmp(&a.0));
            let mut chosen: Vec<u32> = sorted[..k].iter().map(|p| p.1 as u32).collect();
            let mut got = idx.clone();
            chosen.sort();
            got.sort();
            assert_eq!(got, chosen);
            assert!(w.iter().all(|v| v.is_finite()));
            assert!((w.iter().sum::<f32>() - 1.0).abs() < 1e-5);
            let denom: f64 = idx.iter().map(|&i| (row[i as usize] as f64).exp()).sum();
            if denom > 0.0 && denom.is_finite() {
                for (&i, &wi) in idx.iter().zip(&w) {
                    let want = (row[i as usize] as f64).exp() / denom;
                    assert!((wi as f64 - want).abs() < 1e-6);
                }
            } else {
                // The reference divides 0 by 0 here (offset −200); ours stays a distribution.
                assert_eq!(offset, -200.0);
            }
        }
    }

    #[test]
    fn sparse_readout_equals_dense_product() {
        let (nq, nm, c) = (40, 50, 3);
        let q = Query::new(&pseudo(nq * KEY_DIM, 5, 1.0), &vec![1.0; nq * KEY_DIM]);
        let key = pseudo(nm * KEY_DIM, 6, 1.0);
        let shrink = vec![1.0; nm];
        let set = KeySet {
            key: &key,
            shrinkage: &shrink,
        };
        let top = TopK::compute(&q, &[set], 30);
        let values = pseudo(nm * c, 7, 1.0);
        let out = top.read(&[&values[..20 * c], &values[20 * c..]], c);
        let dense = top.dense();
        for ch in 0..c {
            for x in 0..nq {
                let want: f32 = (0..nm)
                    .map(|n| values[n * c + ch] * dense[n * nq + x])
                    .sum();
                assert!((out[ch * nq + x] - want).abs() < 1e-5);
            }
        }
        let usage = top.usage();
        assert!((usage.iter().sum::<f32>() - nq as f32).abs() < 1e-3);
    }

    /// The candle-operations path (used on GPUs) against the host kernels, on the CPU.
    #[test]
    fn candle_ops_read_equals_the_host_read() {
        let dev = candle_core::Device::Cpu;
        let t = |v: Vec<f32>, shape: &[usize]| Tensor::from_vec(v, shape, &dev).unwrap();
        let (nq, n1, n2, c) = (37, 20, 45, 5);
        let key = t(pseudo(nq * KEY_DIM, 11, 2.0), &[nq, KEY_DIM]);
        let sel = t(
            pseudo(nq * KEY_DIM, 12, 1.0)
                .iter()
                .map(|v| v + 0.5)
                .collect(),
            &[nq, KEY_DIM],
        );
        let mk1 = t(pseudo(n1 * KEY_DIM, 13, 2.0), &[n1, KEY_DIM]);
        let mk2 = t(pseudo(n2 * KEY_DIM, 14, 2.0), &[n2, KEY_DIM]);
        let ms1 = t(pseudo(n1, 15, 1.0).iter().map(|v| v + 1.5).collect(), &[n1]);
        let ms2 = t(pseudo(n2, 16, 1.0).iter().map(|v| v + 1.5).collect(), &[n2]);
        let v1 = t(pseudo(n1 * c, 17, 1.0), &[n1, c]);
        let v2 = t(pseudo(n2 * c, 18, 1.0), &[n2, c]);
        let sets = [
            KeyTensors {
                key: &mk1,
                shrinkage: &ms1,
            },
            KeyTensors {
                key: &mk2,
                shrinkage: &ms2,
            },
        ];
        let values = vec![vec![&v1, &v2], vec![&v1, &v2]];
        let host = read_host(&key, &sel, &sets, &values, 30).unwrap();
        let ops = read_ops(&key, &sel, &sets, &values, 30).unwrap();
        for (a, b) in host.values.iter().zip(&ops.values) {
            assert!(crate::nn::max_abs_diff(a, b) < 1e-5);
        }
        assert!(crate::nn::max_abs_diff(&host.usage, &ops.usage) < 1e-4);
        let all = KeyTensors {
            key: &Tensor::cat(&[&mk1, &mk2], 0).unwrap(),
            shrinkage: &Tensor::cat(&[&ms1, &ms2], 0).unwrap(),
        };
        let ours = similarity_tensor(&key, &sel, &all).unwrap();
        let kv = key.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let sv = sel.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let mkv = all.key.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let msv = all.shrinkage.to_vec1::<f32>().unwrap();
        let want = similarity(
            &Query::new(&kv, &sv),
            &[KeySet {
                key: &mkv,
                shrinkage: &msv,
            }],
        );
        let want = t(want, &[nq, n1 + n2]);
        assert!(crate::nn::max_abs_diff(&ours, &want) < 1e-4);
    }
}
