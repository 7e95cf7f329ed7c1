//! Working and long-term memory of the DEVA propagator (reference §2.3), on the tensors' device.
//!
//! Objects that first appear together share a bucket: one key per memory token, one value per
//! object and token. Working memory keeps at most `T_max` frames per bucket; when full, the
//! tokens between the first frame and the last `T_min − 1` frames are consolidated into
//! `P` prototypes (highest normalised usage, potentiated by a full softmax) that go to the
//! bucket's long-term memory, which holds at most `LT_max` tokens (least-used evicted first).
//!
//! Keys, values and usage counters stay on the device of the tensors given to
//! [`Memory::add`]; only the choice of prototypes and of evicted tokens (one usage value per
//! token, when memory is full) reads counters on the host.

use candle_core::{DType, Tensor};

use super::readout::{self, KeyTensors};
use crate::error::Result;
use crate::mask::ObjectId;

/// Life count of a token that has never been read (avoids 0/0 in the usage).
const NEW_LIFE: f64 = 1e-7;

/// Resolved memory settings.
#[derive(Debug, Clone, PartialEq)]
pub struct MemorySettings {
    /// Tokens each query reads.
    pub top_k: usize,
    /// Working memory holds at most this many frames (T_max).
    pub max_frames: usize,
    /// Frames kept after consolidation (T_min).
    pub min_frames: usize,
    /// Long-term capacity in tokens (LT_max).
    pub max_long_term: usize,
    /// Prototypes per consolidation (P).
    pub prototypes: usize,
    /// Consolidate into long-term memory (otherwise working memory keeps its first and its
    /// latest `T_max − 1` frames).
    pub long_term: bool,
    /// Count long-term usage (eviction by usage; otherwise the oldest tokens go first).
    pub count_long_term_usage: bool,
}

/// Keys of one frame, token-major: `key` and `selection` `[tokens, KEY_DIM]`, `shrinkage`
/// `[tokens]`.
#[derive(Debug, Clone)]
pub struct FrameKeys {
    /// Keys.
    pub key: Tensor,
    /// Shrinkage.
    pub shrinkage: Tensor,
    /// Selection.
    pub selection: Tensor,
}

/// Tokens of one bucket in one store; every tensor has the tokens on dimension 0 (`None`
/// while the store is empty).
#[derive(Debug, Clone, Default)]
struct Store {
    len: usize,
    key: Option<Tensor>,
    shrinkage: Option<Tensor>,
    selection: Option<Tensor>,
    /// Usage counters, when counted.
    use_count: Option<Tensor>,
    life_count: Option<Tensor>,
    /// Per object `[tokens, VALUE_DIM]`.
    values: Vec<(ObjectId, Tensor)>,
}

/// `slot` with `t` appended along the tokens.
fn append(slot: &mut Option<Tensor>, t: &Tensor) -> Result<()> {
    *slot = Some(match slot.take() {
        Some(old) => Tensor::cat(&[&old, t], 0)?,
        None => t.contiguous()?,
    });
    Ok(())
}

/// The present tensor of a store slot.
fn get(slot: &Option<Tensor>) -> &Tensor {
    slot.as_ref()
        .expect("stores with tokens have their tensors")
}

impl Store {
    fn keys(&self) -> KeyTensors<'_> {
        KeyTensors {
            key: get(&self.key),
            shrinkage: get(&self.shrinkage),
        }
    }

    fn value(&self, id: ObjectId) -> Option<&Tensor> {
        self.values.iter().find(|(o, _)| *o == id).map(|(_, v)| v)
    }

    fn append_value(&mut self, id: ObjectId, v: &Tensor) -> Result<()> {
        match self.values.iter_mut().find(|(o, _)| *o == id) {
            Some((_, old)) => *old = Tensor::cat(&[&*old, v], 0)?,
            None => self.values.push((id, v.contiguous()?)),
        }
        Ok(())
    }

    /// Appends `n` tokens' keys (selection only if `with_selection`), and fresh usage counters
    /// if `counted`.
    fn append_keys(&mut self, keys: &FrameKeys, with_selection: bool, counted: bool) -> Result<()> {
        let n = keys.shrinkage.dim(0)?;
        append(&mut self.key, &keys.key)?;
        append(&mut self.shrinkage, &keys.shrinkage)?;
        if with_selection {
            append(&mut self.selection, &keys.selection)?;
        }
        if counted {
            let dev = keys.shrinkage.device();
            append(&mut self.use_count, &Tensor::zeros(n, DType::F32, dev)?)?;
            let life = Tensor::full(NEW_LIFE as f32, n, dev)?;
            append(&mut self.life_count, &life)?;
        }
        self.len += n;
        Ok(())
    }

    /// Normalised usage `use / life` on the host (`None` when not counted).
    fn usage(&self) -> Result<Option<Vec<f32>>> {
        match (&self.use_count, &self.life_count) {
            (Some(u), Some(l)) => Ok(Some((u / l)?.to_vec1::<f32>()?)),
            _ => Ok(None),
        }
    }

    fn add_usage(&mut self, usage: &Tensor) -> Result<()> {
        if let (Some(u), Some(l)) = (&mut self.use_count, &mut self.life_count) {
            *u = (&*u + usage)?;
            *l = (&*l + 1.0)?;
        }
        Ok(())
    }

    /// Keeps the tokens for which `keep[token]` holds.
    fn retain(&mut self, keep: &[bool]) -> Result<()> {
        let kept: Vec<u32> = (0..keep.len() as u32)
            .filter(|&i| keep[i as usize])
            .collect();
        if kept.len() == self.len {
            return Ok(());
        }
        if kept.is_empty() {
            *self = Store {
                values: Vec::new(),
                ..Store::default()
            };
            return Ok(());
        }
        let dev = get(&self.shrinkage).device().clone();
        let index = Tensor::new(kept.as_slice(), &dev)?;
        let select = |t: &mut Option<Tensor>| -> Result<()> {
            if let Some(x) = t {
                *x = x.index_select(&index, 0)?;
            }
            Ok(())
        };
        select(&mut self.key)?;
        select(&mut self.shrinkage)?;
        select(&mut self.selection)?;
        select(&mut self.use_count)?;
        select(&mut self.life_count)?;
        for (_, v) in &mut self.values {
            *v = v.index_select(&index, 0)?;
        }
        self.len = kept.len();
        Ok(())
    }

    /// Removes the tokens `range`.
    fn remove(&mut self, range: std::ops::Range<usize>) -> Result<()> {
        let keep: Vec<bool> = (0..self.len).map(|i| !range.contains(&i)).collect();
        self.retain(&keep)
    }
}

#[derive(Debug, Clone)]
struct Bucket {
    objects: Vec<ObjectId>,
    work: Store,
    long: Store,
}

/// Working and long-term memory of all buckets.
#[derive(Debug, Clone)]
pub struct Memory {
    settings: MemorySettings,
    buckets: Vec<Bucket>,
    /// Tokens per frame, fixed by the first frame added.
    frame_tokens: Option<usize>,
}

/// Sizes of one bucket, in tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BucketSize {
    /// Working-memory tokens.
    pub working: usize,
    /// Long-term tokens.
    pub long_term: usize,
}

impl Memory {
    /// An empty memory.
    pub fn new(settings: MemorySettings) -> Self {
        Memory {
            settings,
            buckets: Vec::new(),
            frame_tokens: None,
        }
    }

    /// The settings.
    pub fn settings(&self) -> &MemorySettings {
        &self.settings
    }

    /// Whether any frame is stored.
    pub fn is_engaged(&self) -> bool {
        !self.buckets.is_empty()
    }

    /// Tokens per frame (the stride-16 grid), once a frame has been added.
    pub fn frame_tokens(&self) -> Option<usize> {
        self.frame_tokens
    }

    /// Working and long-term sizes of every bucket.
    pub fn sizes(&self) -> Vec<BucketSize> {
        self.buckets
            .iter()
            .map(|b| BucketSize {
                working: b.work.len,
                long_term: b.long.len,
            })
            .collect()
    }

    /// The working-memory keys of bucket `i` (in bucket creation order).
    pub fn working_keys(&self, i: usize) -> Option<KeyTensors<'_>> {
        self.buckets.get(i).map(|b| b.work.keys())
    }

    /// The working-memory values `[tokens, VALUE_DIM]` of `id`.
    pub fn working_values(&self, id: ObjectId) -> Option<&Tensor> {
        self.buckets.iter().find_map(|b| b.work.value(id))
    }

    /// Adds one frame: its keys and the token-major values `[tokens, VALUE_DIM]` of every
    /// tracked object. Objects not in any bucket form a new bucket together. Consolidates or
    /// trims working memory afterwards.
    pub fn add(&mut self, keys: &FrameKeys, values: &[(ObjectId, Tensor)]) -> Result<()> {
        let hw = keys.shrinkage.dim(0)?;
        self.frame_tokens.get_or_insert(hw);
        let counted_work = self.settings.long_term;
        let new: Vec<ObjectId> = values
            .iter()
            .map(|(o, _)| *o)
            .filter(|o| !self.buckets.iter().any(|b| b.objects.contains(o)))
            .collect();
        if !new.is_empty() {
            self.buckets.push(Bucket {
                objects: new,
                work: Store::default(),
                long: Store::default(),
            });
        }
        for b in &mut self.buckets {
            let mut touched = false;
            for (o, v) in values.iter().filter(|(o, _)| b.objects.contains(o)) {
                b.work.append_value(*o, v)?;
                touched = true;
            }
            if touched {
                b.work.append_keys(keys, counted_work, counted_work)?;
            }
        }
        for i in 0..self.buckets.len() {
            self.bound_working_memory(i, hw)?;
        }
        Ok(())
    }

    fn bound_working_memory(&mut self, i: usize, hw: usize) -> Result<()> {
        let s = self.settings.clone();
        let size = self.buckets[i].work.len;
        if !s.long_term {
            if size > s.max_frames * hw {
                let keep_last = (s.max_frames - 1) * hw;
                self.buckets[i].work.remove(hw..size - keep_last)?;
            }
            return Ok(());
        }
        if size < s.max_frames * hw {
            return Ok(());
        }
        let max_kept = s.max_long_term - s.prototypes;
        if self.buckets[i].long.len >= max_kept {
            evict(&mut self.buckets[i].long, max_kept, s.count_long_term_usage)?;
        }
        self.consolidate(i, hw)
    }

    /// Turns the working tokens between the first frame and the last `T_min − 1` frames into
    /// prototypes in long-term memory.
    fn consolidate(&mut self, i: usize, hw: usize) -> Result<()> {
        let s = &self.settings;
        let counted = s.count_long_term_usage;
        let b = &mut self.buckets[i];
        let size = b.work.len;
        let (start, end) = (hw, size + hw - s.min_frames * hw);
        let usage = b
            .work
            .usage()?
            .expect("working memory counts usage with long-term memory");
        let mut order: Vec<u32> = (start as u32..end as u32).collect();
        order.sort_by(|&x, &y| {
            usage[y as usize]
                .total_cmp(&usage[x as usize])
                .then(x.cmp(&y))
        });
        order.truncate(s.prototypes.min(end - start));
        let n = end - start;
        let work_key = get(&b.work.key);
        let index = Tensor::new(order.as_slice(), work_key.device())?;
        let proto_key = work_key.index_select(&index, 0)?;
        let proto_selection = get(&b.work.selection).index_select(&index, 0)?;
        let candidates = KeyTensors {
            key: &work_key.narrow(0, start, n)?,
            shrinkage: &get(&b.work.shrinkage).narrow(0, start, n)?,
        };
        // Full softmax of the prototypes' similarity to every candidate.
        let sim = readout::similarity_tensor(&proto_key, &proto_selection, &candidates)?;
        let affinity = candle_nn::ops::softmax_last_dim(&sim)?;
        let shrinkage = affinity
            .matmul(&candidates.shrinkage.unsqueeze(1)?)?
            .squeeze(1)?;
        let mut prototypes = Vec::with_capacity(b.objects.len());
        for &o in &b.objects {
            let v = b.work.value(o).expect("bucket objects have values");
            prototypes.push((o, affinity.matmul(&v.narrow(0, start, n)?)?));
        }
        if size > s.min_frames * hw + hw {
            b.work.remove(start..end)?;
        }
        let keys = FrameKeys {
            key: proto_key,
            shrinkage,
            selection: proto_selection,
        };
        b.long.append_keys(&keys, false, counted)?;
        for (o, pv) in prototypes {
            b.long.append_value(o, &pv)?;
        }
        Ok(())
    }

    /// Reads memory for the queries of one frame (key and selection token-major
    /// `[tokens, KEY_DIM]`): the readout `[VALUE_DIM, tokens]` of every object in a bucket,
    /// and usage bookkeeping.
    pub fn read(&mut self, key: &Tensor, selection: &Tensor) -> Result<Vec<(ObjectId, Tensor)>> {
        let s = &self.settings;
        let mut out = Vec::new();
        for b in &mut self.buckets {
            let with_long = s.long_term && b.long.len > 0;
            let sets: Vec<KeyTensors> = if with_long {
                vec![b.long.keys(), b.work.keys()]
            } else {
                vec![b.work.keys()]
            };
            let values: Vec<Vec<&Tensor>> = b
                .objects
                .iter()
                .map(|&o| {
                    let work = b.work.value(o).expect("bucket objects have values");
                    match with_long {
                        true => vec![b.long.value(o).expect("bucket objects have values"), work],
                        false => vec![work],
                    }
                })
                .collect();
            let r = readout::read(key, selection, &sets, &values, s.top_k)?;
            out.extend(b.objects.iter().copied().zip(r.values));
            if s.long_term {
                let n_long = if with_long { b.long.len } else { 0 };
                b.work.add_usage(&r.usage.narrow(0, n_long, b.work.len)?)?;
                if with_long {
                    b.long.add_usage(&r.usage.narrow(0, 0, n_long)?)?;
                }
            }
        }
        Ok(out)
    }

    /// Forgets every object not in `keep`; buckets left empty disappear.
    pub fn retain_objects(&mut self, keep: &[ObjectId]) {
        for b in &mut self.buckets {
            b.objects.retain(|o| keep.contains(o));
            b.work.values.retain(|(o, _)| keep.contains(o));
            b.long.values.retain(|(o, _)| keep.contains(o));
        }
        self.buckets.retain(|b| !b.objects.is_empty());
    }
}

/// Drops long-term tokens down to `max_size`: by lowest normalised usage (every token whose
/// usage is at most the cut-off value goes, as in the reference), or oldest first when usage
/// is not counted.
fn evict(store: &mut Store, max_size: usize, counted: bool) -> Result<()> {
    let size = store.len;
    if size <= max_size {
        return Ok(());
    }
    let excess = size - max_size;
    let usage = match store.usage()? {
        Some(u) if counted => u,
        _ => return store.remove(0..excess),
    };
    let mut sorted = usage.clone();
    let (_, cut, _) = sorted.select_nth_unstable_by(excess - 1, f32::total_cmp);
    let cut = *cut;
    let keep: Vec<bool> = usage.iter().map(|&u| u > cut).collect();
    store.retain(&keep)
}

#[cfg(test)]
mod tests {
    use super::super::network::{KEY_DIM, VALUE_DIM};
    use super::*;
    use candle_core::Device;

    fn settings(long_term: bool, counted: bool) -> MemorySettings {
        MemorySettings {
            top_k: 4,
            max_frames: 4,
            min_frames: 2,
            max_long_term: 10,
            prototypes: 3,
            long_term,
            count_long_term_usage: counted,
        }
    }

    fn pseudo(n: usize, s: u64) -> Vec<f32> {
        (0..n as u64)
            .map(|i| (crate::nn::synthetic::splitmix64(s * 7919 + i) >> 40) as f32 / 16777216.0)
            .collect()
    }

    fn frame(hw: usize, seed: u64) -> FrameKeys {
        let t = |v: Vec<f32>, c: usize| {
            let shape = if c == 1 { vec![hw] } else { vec![hw, c] };
            Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
        };
        FrameKeys {
            key: t(pseudo(hw * KEY_DIM, seed), KEY_DIM),
            shrinkage: t(pseudo(hw, seed + 1).iter().map(|x| x + 1.0).collect(), 1),
            selection: t(pseudo(hw * KEY_DIM, seed + 2), KEY_DIM),
        }
    }

    fn values(ids: &[ObjectId], hw: usize, seed: u64) -> Vec<(ObjectId, Tensor)> {
        ids.iter()
            .map(|&o| {
                let v = Tensor::full((seed + o as u64) as f32, (hw, VALUE_DIM), &Device::Cpu);
                (o, v.unwrap())
            })
            .collect()
    }

    #[test]
    fn consolidation_keeps_both_memories_bounded() {
        for counted in [true, false] {
            let hw = 6;
            let mut m = Memory::new(settings(true, counted));
            for t in 0..40u64 {
                let f = frame(hw, t);
                let ids: &[ObjectId] = if t < 3 { &[1] } else { &[1, 2] };
                m.add(&f, &values(ids, hw, t)).unwrap();
                m.read(&f.key, &f.selection).unwrap();
                for s in m.sizes() {
                    assert!(s.working <= 4 * hw, "{s:?}");
                    assert!(s.long_term <= 10, "{s:?}");
                }
            }
            let sizes = m.sizes();
            assert_eq!(sizes.len(), 2, "object 2 started its own bucket");
            assert!(sizes.iter().all(|s| s.long_term >= 7), "{sizes:?}");
        }
    }

    #[test]
    fn without_long_term_the_first_and_latest_frames_stay() {
        let hw = 2;
        let mut m = Memory::new(settings(false, false));
        for t in 0..9u64 {
            m.add(&frame(hw, t), &values(&[5], hw, t)).unwrap();
        }
        let v = m.working_values(5).unwrap().to_vec2::<f32>().unwrap();
        let firsts: Vec<f32> = v.chunks(hw).map(|c| c[0][0]).collect();
        assert_eq!(firsts, vec![5.0, 11.0, 12.0, 13.0]);
        m.retain_objects(&[]);
        assert!(!m.is_engaged());
    }

    #[test]
    fn eviction_removes_the_least_used_tokens() {
        let mut s = Store::default();
        let u = [0.5f32, 0.1, 0.9, 0.1, 0.7];
        let keys = FrameKeys {
            key: Tensor::zeros((5, KEY_DIM), DType::F32, &Device::Cpu).unwrap(),
            shrinkage: Tensor::new(&u, &Device::Cpu).unwrap(),
            selection: Tensor::zeros((5, KEY_DIM), DType::F32, &Device::Cpu).unwrap(),
        };
        s.append_keys(&keys, false, true).unwrap();
        s.use_count = Some(Tensor::new(&u, &Device::Cpu).unwrap());
        s.life_count = Some(Tensor::ones(5, DType::F32, &Device::Cpu).unwrap());
        evict(&mut s, 3, true).unwrap();
        let shrinkage = |s: &Store| get(&s.shrinkage).to_vec1::<f32>().unwrap();
        // The two lowest (tied at 0.1) go.
        assert_eq!(shrinkage(&s), vec![0.5, 0.9, 0.7]);
        evict(&mut s, 2, false).unwrap();
        assert_eq!(shrinkage(&s), vec![0.9, 0.7]);
    }
}
