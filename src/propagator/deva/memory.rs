//! Working and long-term memory of the DEVA propagator (reference §2.3), host-side.
//!
//! Objects that first appear together share a bucket: one key per memory token, one value per
//! object and token. Working memory keeps at most `T_max` frames per bucket; when full, the
//! tokens between the first frame and the last `T_min − 1` frames are consolidated into
//! `P` prototypes (highest normalised usage, potentiated by a full softmax) that go to the
//! bucket's long-term memory, which holds at most `LT_max` tokens (least-used evicted first).

use super::network::{KEY_DIM, VALUE_DIM};
use super::readout::{similarity, softmax_rows, KeySet, Query, TopK};
use crate::mask::ObjectId;
use crate::nn::linalg::{gemm_acc, MatRef};

/// Life count of a token that has never been read (avoids 0/0 in the usage).
const NEW_LIFE: f32 = 1e-7;

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

/// Frame keys for memory: token-major `[tokens][KEY_DIM]` key and selection, `[tokens]`
/// shrinkage.
#[derive(Debug, Clone)]
pub struct FrameKeys {
    /// Keys.
    pub key: Vec<f32>,
    /// Shrinkage.
    pub shrinkage: Vec<f32>,
    /// Selection.
    pub selection: Vec<f32>,
}

/// Tokens of one bucket in one store.
#[derive(Debug, Clone, Default)]
struct Store {
    key: Vec<f32>,
    shrinkage: Vec<f32>,
    selection: Vec<f32>,
    /// Usage counters, when counted.
    use_count: Vec<f32>,
    life_count: Vec<f32>,
    /// Per object `[tokens][VALUE_DIM]`.
    values: Vec<(ObjectId, Vec<f32>)>,
}

impl Store {
    fn len(&self) -> usize {
        self.shrinkage.len()
    }

    fn keys(&self) -> KeySet<'_> {
        KeySet {
            key: &self.key,
            shrinkage: &self.shrinkage,
        }
    }

    fn value(&self, id: ObjectId) -> Option<&[f32]> {
        self.values
            .iter()
            .find(|(o, _)| *o == id)
            .map(|(_, v)| v.as_slice())
    }

    fn value_mut(&mut self, id: ObjectId) -> &mut Vec<f32> {
        if let Some(i) = self.values.iter().position(|(o, _)| *o == id) {
            return &mut self.values[i].1;
        }
        self.values.push((id, Vec::new()));
        &mut self.values.last_mut().expect("just pushed").1
    }

    fn append_counters(&mut self, n: usize, counted: bool) {
        if counted {
            self.use_count.extend(std::iter::repeat_n(0.0, n));
            self.life_count.extend(std::iter::repeat_n(NEW_LIFE, n));
        }
    }

    /// Normalised usage `use / life` (empty when not counted).
    fn usage(&self) -> Vec<f32> {
        self.use_count
            .iter()
            .zip(&self.life_count)
            .map(|(u, l)| u / l)
            .collect()
    }

    fn add_usage(&mut self, usage: &[f32]) {
        if self.use_count.is_empty() {
            return;
        }
        for ((u, l), x) in self
            .use_count
            .iter_mut()
            .zip(self.life_count.iter_mut())
            .zip(usage)
        {
            *u += x;
            *l += 1.0;
        }
    }

    /// Keeps the tokens for which `keep(token)` holds.
    fn retain(&mut self, keep: &[bool]) {
        fn filter(v: &mut Vec<f32>, width: usize, keep: &[bool]) {
            if v.is_empty() {
                return;
            }
            let mut out = Vec::with_capacity(v.len());
            for (chunk, &k) in v.chunks(width).zip(keep) {
                if k {
                    out.extend_from_slice(chunk);
                }
            }
            *v = out;
        }
        filter(&mut self.key, KEY_DIM, keep);
        filter(&mut self.selection, KEY_DIM, keep);
        filter(&mut self.shrinkage, 1, keep);
        filter(&mut self.use_count, 1, keep);
        filter(&mut self.life_count, 1, keep);
        for (_, v) in &mut self.values {
            filter(v, VALUE_DIM, keep);
        }
    }

    /// Removes the tokens `range`.
    fn remove(&mut self, range: std::ops::Range<usize>) {
        let keep: Vec<bool> = (0..self.len()).map(|i| !range.contains(&i)).collect();
        self.retain(&keep);
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
                working: b.work.len(),
                long_term: b.long.len(),
            })
            .collect()
    }

    /// The working-memory keys of bucket `i` (in bucket creation order).
    pub fn working_keys(&self, i: usize) -> Option<KeySet<'_>> {
        self.buckets.get(i).map(|b| b.work.keys())
    }

    /// The working-memory values `[tokens][512]` of `id`.
    pub fn working_values(&self, id: ObjectId) -> Option<&[f32]> {
        self.buckets.iter().find_map(|b| b.work.value(id))
    }

    /// Adds one frame: its keys and the values `[512][tokens]` (channel-major) of every
    /// tracked object. Objects not in any bucket form a new bucket together. Consolidates or
    /// trims working memory afterwards.
    pub fn add(&mut self, keys: &FrameKeys, values: &[(ObjectId, Vec<f32>)]) {
        let hw = keys.shrinkage.len();
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
                b.work.value_mut(*o).extend(transpose_to_tokens(v, hw));
                touched = true;
            }
            if !touched {
                continue;
            }
            b.work.key.extend_from_slice(&keys.key);
            b.work.shrinkage.extend_from_slice(&keys.shrinkage);
            if counted_work {
                b.work.selection.extend_from_slice(&keys.selection);
            }
            b.work.append_counters(hw, counted_work);
        }
        for i in 0..self.buckets.len() {
            self.bound_working_memory(i, hw);
        }
    }

    fn bound_working_memory(&mut self, i: usize, hw: usize) {
        let s = self.settings.clone();
        let size = self.buckets[i].work.len();
        if !s.long_term {
            if size > s.max_frames * hw {
                let keep_last = (s.max_frames - 1) * hw;
                self.buckets[i].work.remove(hw..size - keep_last);
            }
            return;
        }
        if size < s.max_frames * hw {
            return;
        }
        let max_kept = s.max_long_term - s.prototypes;
        if self.buckets[i].long.len() >= max_kept {
            evict(&mut self.buckets[i].long, max_kept, s.count_long_term_usage);
        }
        self.consolidate(i, hw);
    }

    /// Turns the working tokens between the first frame and the last `T_min − 1` frames into
    /// prototypes in long-term memory.
    fn consolidate(&mut self, i: usize, hw: usize) {
        let s = &self.settings;
        let counted = s.count_long_term_usage;
        let b = &mut self.buckets[i];
        let size = b.work.len();
        let (start, end) = (hw, size + hw - s.min_frames * hw);
        let usage = b.work.usage();
        let mut order: Vec<usize> = (start..end).collect();
        order.sort_by(|&x, &y| usage[y].total_cmp(&usage[x]).then(x.cmp(&y)));
        order.truncate(s.prototypes.min(end - start));
        let pick = |v: &[f32]| -> Vec<f32> {
            order
                .iter()
                .flat_map(|&t| &v[t * KEY_DIM..(t + 1) * KEY_DIM])
                .copied()
                .collect()
        };
        let query = Query::new(&pick(&b.work.key), &pick(&b.work.selection));
        let candidates = KeySet {
            key: &b.work.key[start * KEY_DIM..end * KEY_DIM],
            shrinkage: &b.work.shrinkage[start..end],
        };
        let n = end - start;
        let p = order.len();
        let mut affinity = similarity(&query, &[candidates]);
        softmax_rows(&mut affinity, n);
        let mut shrinkage = vec![0.0f32; p];
        gemm_acc(
            p,
            1,
            n,
            &mut shrinkage,
            1,
            MatRef::rows(&affinity, n),
            MatRef::rows(candidates.shrinkage, 1),
            false,
        );
        let mut prototypes = Vec::with_capacity(b.objects.len());
        for &o in &b.objects {
            let v = b.work.value(o).expect("bucket objects have values");
            let mut pv = vec![0.0f32; p * VALUE_DIM];
            gemm_acc(
                p,
                VALUE_DIM,
                n,
                &mut pv,
                VALUE_DIM,
                MatRef::rows(&affinity, n),
                MatRef::rows(&v[start * VALUE_DIM..end * VALUE_DIM], VALUE_DIM),
                true,
            );
            prototypes.push((o, pv));
        }
        let keys = pick(&b.work.key);
        if size > s.min_frames * hw + hw {
            b.work.remove(start..end);
        }
        b.long.key.extend(keys);
        b.long.shrinkage.extend(shrinkage);
        for (o, pv) in prototypes {
            b.long.value_mut(o).extend(pv);
        }
        b.long.append_counters(p, counted);
    }

    /// Reads memory for the queries of one frame (key and selection token-major): the readout
    /// `[512][tokens]` of every object in a bucket, and usage bookkeeping.
    pub fn read(&mut self, key: &[f32], selection: &[f32]) -> Vec<(ObjectId, Vec<f32>)> {
        let query = Query::new(key, selection);
        let s = &self.settings;
        let mut out = Vec::new();
        for b in &mut self.buckets {
            let with_long = s.long_term && b.long.len() > 0;
            let sets: Vec<KeySet> = if with_long {
                vec![b.long.keys(), b.work.keys()]
            } else {
                vec![b.work.keys()]
            };
            let top = TopK::compute(&query, &sets, s.top_k);
            for &o in &b.objects {
                let mut runs = Vec::with_capacity(2);
                if with_long {
                    runs.push(b.long.value(o).expect("bucket objects have values"));
                }
                runs.push(b.work.value(o).expect("bucket objects have values"));
                out.push((o, top.read(&runs, VALUE_DIM)));
            }
            if s.long_term {
                let usage = top.usage();
                let n_long = if with_long { b.long.len() } else { 0 };
                b.work.add_usage(&usage[n_long..]);
                if with_long {
                    b.long.add_usage(&usage[..n_long]);
                }
            }
        }
        out
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
fn evict(store: &mut Store, max_size: usize, counted: bool) {
    let size = store.len();
    if size <= max_size {
        return;
    }
    let excess = size - max_size;
    if !counted {
        store.remove(0..excess);
        return;
    }
    let usage = store.usage();
    let mut sorted = usage.clone();
    let (_, cut, _) = sorted.select_nth_unstable_by(excess - 1, f32::total_cmp);
    let cut = *cut;
    let keep: Vec<bool> = usage.iter().map(|&u| u > cut).collect();
    store.retain(&keep);
}

/// `[channels][tokens]` → `[tokens][channels]` for `VALUE_DIM` channels.
fn transpose_to_tokens(v: &[f32], tokens: usize) -> Vec<f32> {
    super::readout::transpose(v, v.len() / tokens, tokens)
}

#[cfg(test)]
mod tests {
    use super::*;

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

    fn frame(hw: usize, seed: u64) -> FrameKeys {
        let v = |n: usize, s: u64| -> Vec<f32> {
            (0..n as u64)
                .map(|i| (crate::nn::synthetic::splitmix64(s * 7919 + i) >> 40) as f32 / 16777216.0)
                .collect()
        };
        FrameKeys {
            key: v(hw * KEY_DIM, seed),
            shrinkage: v(hw, seed + 1).iter().map(|x| x + 1.0).collect(),
            selection: v(hw * KEY_DIM, seed + 2),
        }
    }

    fn values(ids: &[ObjectId], hw: usize, seed: u64) -> Vec<(ObjectId, Vec<f32>)> {
        ids.iter()
            .map(|&o| (o, vec![(seed + o as u64) as f32; VALUE_DIM * hw]))
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
                m.add(&f, &values(ids, hw, t));
                m.read(&f.key, &f.selection);
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
            m.add(&frame(hw, t), &values(&[5], hw, t));
        }
        let v = m.working_values(5).unwrap();
        let firsts: Vec<f32> = v.chunks(VALUE_DIM * hw).map(|c| c[0]).collect();
        assert_eq!(firsts, vec![5.0, 11.0, 12.0, 13.0]);
        m.retain_objects(&[]);
        assert!(!m.is_engaged());
    }

    #[test]
    fn eviction_removes_the_least_used_tokens() {
        let mut s = Store::default();
        for u in [0.5f32, 0.1, 0.9, 0.1, 0.7] {
            s.key.extend(vec![u; KEY_DIM]);
            s.shrinkage.push(u);
            s.use_count.push(u);
            s.life_count.push(1.0);
        }
        evict(&mut s, 3, true);
        // The two lowest (tied at 0.1) go.
        assert_eq!(s.shrinkage, vec![0.5, 0.9, 0.7]);
        evict(&mut s, 2, false);
        assert_eq!(s.shrinkage, vec![0.9, 0.7]);
    }
}
