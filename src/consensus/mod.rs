//! In-clip consensus (paper §3.2.1): denoises the image segmentations of a short clip by
//! keeping the proposals that other frames of the clip agree on.
//!
//! Proposals of every frame are aligned to the key frame (through the propagator's `align`,
//! passed in as a closure: this module never calls a model itself). A proposal supports
//! another when their IoU on the key frame exceeds `support_iou`; proposals are matched between
//! every pair of frames (at most once per pair, same `isthing` group, maximum total IoU). The
//! selection maximises Σ vᵢ(Suppᵢ − α), with Suppᵢ the summed IoU of the proposals i matched,
//! subject to vᵢ + vⱼ ≤ 1 for every matched pair. (The reference writes Σ vᵢ(2·ΣIoU − 1),
//! the same objective times two with α = 0.5.) The integer program is solved exactly, one
//! connected component of the conflict graph at a time, with good_lp's pure-Rust microlp
//! backend and one constraint per maximal clique.
//!
//! The offline variant for proposals whose association across frames is already known
//! ([`associated_consensus`]) averages soft masks aligned to a key frame instead.

use crate::config::TrackerConfig;
use crate::error::{Error, Result};
use crate::mask::{IdMap, ObjectId, ObjectProbs, SegmentInfo, Segmentation};
use crate::objects::Votes;
use crate::overlap::{dense_labels, Overlap};
use good_lp::{variable, Expression, ProblemVariables, Solution, SolutionStatus, SolverModel};
use pathfinding::undirected::cliques::maximal_cliques_collect;
use std::collections::{BTreeSet, HashSet};

/// A segment chosen by the consensus, with the votes of the proposals that support it.
#[derive(Debug, Clone, PartialEq)]
pub struct VotedSegment {
    /// Id in the consensus map.
    pub id: ObjectId,
    /// Thing, stuff or unknown (of the chosen proposal).
    pub isthing: Option<bool>,
    /// Its own votes and those of every proposal it matched.
    pub votes: Votes,
}

impl VotedSegment {
    /// The segment as segment information (voted category, mean score).
    pub fn info(&self) -> SegmentInfo {
        self.votes.info(self.id, self.isthing)
    }
}

/// A denoised segmentation of one frame: what the merge step receives.
#[derive(Debug, Clone, PartialEq)]
pub struct Consensus {
    /// Which segment covers each pixel.
    pub map: IdMap,
    /// The segments present in the map.
    pub segments: Vec<VotedSegment>,
}

impl Consensus {
    /// The same segments with ids 1, 2, ... in their order (a vote's ids index proposals;
    /// as requested ids of new objects they would start anywhere).
    pub fn numbered_from_one(self) -> Consensus {
        let new_id: std::collections::HashMap<ObjectId, ObjectId> = self
            .segments
            .iter()
            .enumerate()
            .map(|(k, s)| (s.id, k as ObjectId + 1))
            .collect();
        Consensus {
            map: self.map.remap(|id| new_id.get(&id).copied().unwrap_or(0)),
            segments: self
                .segments
                .into_iter()
                .map(|s| VotedSegment {
                    id: new_id[&s.id],
                    ..s
                })
                .collect(),
        }
    }

    /// A frame's raw segmentation taken as it is (clips of one frame, online mode).
    pub fn from_segmentation(seg: &Segmentation) -> Self {
        Consensus {
            map: seg.map.clone(),
            segments: seg
                .segments
                .iter()
                .map(|s| VotedSegment {
                    id: s.id,
                    isthing: s.isthing,
                    votes: Votes::of(s),
                })
                .collect(),
        }
    }
}

/// Consensus of the proposals of one clip on frame `key`. `proposals[f]` is the segmentation
/// of clip frame `f` (`None`: nothing proposed there); all have the same size.
/// `align(src, dst, masks)` projects soft masks of clip frame `src` onto clip frame `dst`.
/// A clip of one frame returns its segmentation unchanged.
pub fn clip_consensus(
    proposals: &[Option<Segmentation>],
    key: usize,
    config: &TrackerConfig,
    mut align: impl FnMut(usize, usize, &ObjectProbs) -> Result<ObjectProbs>,
) -> Result<Consensus> {
    let key_seg = proposals.get(key).ok_or_else(|| {
        Error::invalid(format!(
            "key frame {key} is outside a clip of {} frames",
            proposals.len()
        ))
    })?;
    if proposals.len() == 1 {
        if let Some(seg) = key_seg {
            return Ok(Consensus::from_segmentation(seg));
        }
    }
    let mut aligned = Vec::with_capacity(proposals.len());
    for (f, p) in proposals.iter().enumerate() {
        aligned.push(match p {
            Some(seg) if f != key && !seg.segments.is_empty() => {
                let ids: Vec<ObjectId> = seg.segments.iter().map(|s| s.id).collect();
                let projected = align(f, key, &ObjectProbs::one_hot(&seg.map, &ids)?)?;
                Some(Segmentation {
                    map: projected.select(&ids).argmax(),
                    segments: seg.segments.clone(),
                })
            }
            other => other.clone(),
        });
    }
    Ok(vote(&aligned, config)?.numbered_from_one())
}

/// Consensus of proposals already aligned to the key frame: `aligned[f]` holds frame `f`'s
/// proposals drawn on the key frame with that frame's ids (segments whose id is absent from
/// the map have vanished in the alignment). Returned ids number the proposals from 1 in frame
/// order.
pub fn vote(aligned: &[Option<Segmentation>], config: &TrackerConfig) -> Result<Consensus> {
    let graph = SupportGraph::new(aligned, config)?;
    let chosen = select(&graph.weights, &graph.conflicts)?;
    graph.render(&chosen)
}

/// The proposals of a clip, who supports whom, and the objective weights.
struct SupportGraph<'s> {
    width: usize,
    height: usize,
    /// Every proposal, numbered globally in frame order.
    infos: Vec<&'s SegmentInfo>,
    /// Global number of each frame's first proposal.
    offsets: Vec<usize>,
    /// Dense labels of each frame's aligned map (0 = none, k = that frame's k-th proposal).
    labels: Vec<Vec<u32>>,
    /// Suppᵢ − α.
    weights: Vec<f64>,
    /// Matched (supporting) pairs.
    conflicts: Vec<(usize, usize)>,
}

impl<'s> SupportGraph<'s> {
    /// Matches the proposals of every pair of frames.
    fn new(aligned: &'s [Option<Segmentation>], config: &TrackerConfig) -> Result<Self> {
        let frames: Vec<&Segmentation> = aligned.iter().flatten().collect();
        let Some(first) = frames.first() else {
            return Err(Error::invalid("consensus of a clip without proposals"));
        };
        let (width, height) = (first.map.width(), first.map.height());
        if let Some(s) = frames
            .iter()
            .find(|s| s.map.width() != width || s.map.height() != height)
        {
            return Err(Error::invalid(format!(
                "consensus proposals differ in size: {}x{} and {}x{}",
                width,
                height,
                s.map.width(),
                s.map.height()
            )));
        }
        let mut offsets = Vec::with_capacity(frames.len());
        let mut infos: Vec<&SegmentInfo> = Vec::new();
        let mut labels = Vec::with_capacity(frames.len());
        for seg in &frames {
            offsets.push(infos.len());
            infos.extend(seg.segments.iter());
            let ids: Vec<ObjectId> = seg.segments.iter().map(|s| s.id).collect();
            labels.push(dense_labels(&seg.map, &ids));
        }
        let mut support = vec![0.0f64; infos.len()];
        let mut conflicts = Vec::new();
        let things = |f: usize| -> Vec<Option<bool>> {
            frames[f].segments.iter().map(|s| s.isthing).collect()
        };
        for a in 0..frames.len() {
            for b in a + 1..frames.len() {
                let (na, nb) = (frames[a].segments.len(), frames[b].segments.len());
                let ov = Overlap::from_labels(&labels[a], na, &labels[b], nb);
                for p in ov.match_groups(&things(a), &things(b), config.support_iou) {
                    let (u, v) = (offsets[a] + p.row, offsets[b] + p.col);
                    support[u] += p.iou;
                    support[v] += p.iou;
                    conflicts.push((u, v));
                }
            }
        }
        Ok(SupportGraph {
            width,
            height,
            infos,
            offsets,
            labels,
            weights: support.iter().map(|s| s - config.alpha).collect(),
            conflicts,
        })
    }

    /// Draws the chosen proposals largest first (smaller ones stay on top); each absorbs the
    /// votes of the proposals it matched. Chosen proposals left without pixels are dropped.
    fn render(&self, chosen: &[bool]) -> Result<Consensus> {
        let n = self.infos.len();
        let mut areas = vec![0u64; n];
        for (f, l) in self.labels.iter().enumerate() {
            for &x in l.iter().filter(|&&x| x > 0) {
                areas[self.offsets[f] + x as usize - 1] += 1;
            }
        }
        let mut order: Vec<usize> = (0..n).filter(|&i| chosen[i]).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(areas[i]));
        let mut rank = vec![0usize; n];
        for (r, &i) in order.iter().enumerate() {
            rank[i] = r + 1;
        }
        // Each pixel is covered by at most one proposal per frame: the latest drawn wins.
        let mut map = vec![0 as ObjectId; self.width * self.height];
        let mut drawn = vec![0u64; n + 1];
        for (p, out) in map.iter_mut().enumerate() {
            let mut best = 0;
            for (f, l) in self.labels.iter().enumerate() {
                let x = l[p] as usize;
                if x > 0 && rank[self.offsets[f] + x - 1] > best {
                    best = rank[self.offsets[f] + x - 1];
                    *out = (self.offsets[f] + x) as ObjectId;
                }
            }
            drawn[*out as usize] += 1;
        }
        let map = IdMap::from_vec(self.width, self.height, map)?;
        let segments = order
            .iter()
            .filter(|&&i| drawn[i + 1] > 0)
            .map(|&i| {
                let mut votes = Votes::of(self.infos[i]);
                for &(u, v) in &self.conflicts {
                    if u == i || v == i {
                        votes.absorb(&Votes::of(self.infos[u + v - i]));
                    }
                }
                VotedSegment {
                    id: i as ObjectId + 1,
                    isthing: self.infos[i].isthing,
                    votes,
                }
            })
            .collect();
        Ok(Consensus { map, segments })
    }
}

/// Exact maximum-weight selection: maximises Σ `weights[i]` over chosen `i` such that no
/// conflicting pair is chosen together (a maximum-weight independent set). Vertices with
/// non-positive weight are never chosen. Each connected component of the conflict graph is
/// solved alone: single vertices and cliques directly, the rest as an integer program with
/// one constraint per maximal clique (microlp). Ties go to lower indices in the direct cases.
pub fn select(weights: &[f64], conflicts: &[(usize, usize)]) -> Result<Vec<bool>> {
    let n = weights.len();
    if let Some(&(a, b)) = conflicts.iter().find(|&&(a, b)| a >= n || b >= n) {
        return Err(Error::invalid(format!(
            "conflict ({a}, {b}) names a proposal beyond the {n} weighted ones"
        )));
    }
    if let Some(w) = weights.iter().find(|w| !w.is_finite()) {
        return Err(Error::Solver(format!("proposal weight {w} is not finite")));
    }
    let live = |i: usize| weights[i] > 0.0;
    let mut edges: HashSet<(usize, usize)> = HashSet::new();
    let mut adjacent: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); n];
    for &(a, b) in conflicts {
        if a != b && live(a) && live(b) {
            edges.insert((a.min(b), a.max(b)));
            adjacent[a].insert(b);
            adjacent[b].insert(a);
        }
    }
    let mut chosen = vec![false; n];
    let mut seen = vec![false; n];
    for start in (0..n).filter(|&i| live(i)) {
        if seen[start] {
            continue;
        }
        let mut component = vec![start];
        seen[start] = true;
        let mut next = 0;
        while next < component.len() {
            for &v in &adjacent[component[next]] {
                if !seen[v] {
                    seen[v] = true;
                    component.push(v);
                }
            }
            next += 1;
        }
        component.sort_unstable();
        let is_clique = component
            .iter()
            .all(|&v| adjacent[v].len() == component.len() - 1);
        if is_clique {
            // Without a conflict-free pair the best choice is the heaviest vertex.
            let best = component
                .iter()
                .copied()
                .reduce(|a, b| if weights[b] > weights[a] { b } else { a })
                .expect("components are not empty");
            chosen[best] = true;
        } else {
            for v in solve_component(&component, weights, &edges)? {
                chosen[v] = true;
            }
        }
    }
    if let Some(&(a, b)) = edges.iter().find(|&&(a, b)| chosen[a] && chosen[b]) {
        return Err(Error::Solver(format!(
            "the solution chose conflicting proposals {a} and {b}"
        )));
    }
    Ok(chosen)
}

/// Solves one connected component (sorted vertex list) exactly with microlp.
fn solve_component(
    component: &[usize],
    weights: &[f64],
    edges: &HashSet<(usize, usize)>,
) -> Result<Vec<usize>> {
    let mut connected = |a: &usize, b: &usize| edges.contains(&((*a).min(*b), (*a).max(*b)));
    let mut cliques: Vec<Vec<usize>> =
        maximal_cliques_collect(component.iter().copied(), &mut connected)
            .into_iter()
            .filter(|c| c.len() > 1)
            .map(|c| {
                let mut c: Vec<usize> = c.into_iter().collect();
                c.sort_unstable();
                c
            })
            .collect();
    // The clique search iterates hash sets: sort for a reproducible model.
    cliques.sort();
    let position = |v: usize| component.binary_search(&v).expect("vertex in component");
    let mut vars = ProblemVariables::new();
    let x: Vec<_> = component
        .iter()
        .map(|_| vars.add(variable().binary()))
        .collect();
    let objective: Expression = component
        .iter()
        .zip(&x)
        .map(|(&v, &xv)| weights[v] * xv)
        .sum();
    let mut model = vars.maximise(objective).using(good_lp::microlp);
    for c in &cliques {
        let sum: Expression = c.iter().map(|&v| x[position(v)]).sum();
        model.add_constraint(sum.leq(1.0));
    }
    let solution = model
        .solve()
        .map_err(|e| Error::Solver(format!("{} proposals: {e}", component.len())))?;
    if !matches!(solution.status(), SolutionStatus::Optimal) {
        return Err(Error::Solver(format!(
            "{} proposals: optimality not proven",
            component.len()
        )));
    }
    Ok(component
        .iter()
        .zip(&x)
        .filter(|(_, &xv)| solution.value(xv) > 0.5)
        .map(|(&v, _)| v)
        .collect())
}

/// Offline key-frame consensus of soft proposals whose association across frames is known
/// (the same id is the same object in every frame; all masks have the same ids and size).
///
/// Frame weights are softmax(2·score) over frames (uniform without scores). The key frame is
/// the one with the highest score, or without scores the one with the largest fraction of
/// object-mask values above 0.8 (first one on ties). Every other frame is projected onto the
/// key frame with `align(src, dst, masks)`; the result is the weighted average of all
/// frames' masks (the key frame's own included). Returns the key frame's index and the mask.
pub fn associated_consensus(
    masks: &[ObjectProbs],
    scores: Option<&[f32]>,
    mut align: impl FnMut(usize, usize, &ObjectProbs) -> Result<ObjectProbs>,
) -> Result<(usize, ObjectProbs)> {
    let Some(first) = masks.first() else {
        return Err(Error::invalid("key-frame consensus without any proposal"));
    };
    let ids = first.ids().to_vec();
    let (w, h) = (first.width(), first.height());
    if let Some(m) = masks
        .iter()
        .find(|m| m.ids() != ids.as_slice() || m.width() != w || m.height() != h)
    {
        return Err(Error::invalid(format!(
            "key-frame consensus needs equal objects and sizes: {:?} {}x{} vs {:?} {}x{}",
            ids,
            w,
            h,
            m.ids(),
            m.width(),
            m.height()
        )));
    }
    let weights = match scores {
        Some(s) if s.len() != masks.len() => {
            return Err(Error::invalid(format!(
                "{} scores for {} proposal frames",
                s.len(),
                masks.len()
            )))
        }
        Some(s) => softmax_doubled(s),
        None => vec![1.0 / masks.len() as f32; masks.len()],
    };
    let objective: Vec<f64> = match scores {
        Some(_) => weights.iter().map(|&x| x as f64).collect(),
        None => masks.iter().map(confident_fraction).collect(),
    };
    let key = (0..masks.len())
        .reduce(|a, b| if objective[b] > objective[a] { b } else { a })
        .expect("masks are not empty");
    let mut total: Vec<f32> = masks[key].data().iter().map(|v| v * weights[key]).collect();
    for f in (0..masks.len()).filter(|&f| f != key) {
        let projected = align(f, key, &masks[f])?;
        let projected = projected.select(&ids);
        if projected.width() != w || projected.height() != h {
            return Err(Error::invalid(format!(
                "aligned mask is {}x{}, expected {}x{}",
                projected.width(),
                projected.height(),
                w,
                h
            )));
        }
        // `select` keeps the background channel as the aligner gave it.
        for (t, v) in total.iter_mut().zip(projected.data()) {
            *t += v * weights[f];
        }
    }
    Ok((key, ObjectProbs::new(ids, w, h, total)?))
}

/// softmax(2·s) over frames.
fn softmax_doubled(scores: &[f32]) -> Vec<f32> {
    let max = scores
        .iter()
        .fold(f32::NEG_INFINITY, |m, &s| m.max(2.0 * s));
    let e: Vec<f32> = scores.iter().map(|&s| (2.0 * s - max).exp()).collect();
    let sum: f32 = e.iter().sum();
    e.iter().map(|v| v / sum).collect()
}

/// Fraction of object-mask values above 0.8 (background excluded).
fn confident_fraction(m: &ObjectProbs) -> f64 {
    let objects = &m.data()[m.width() * m.height()..];
    if objects.is_empty() {
        return 0.0;
    }
    objects.iter().filter(|&&v| v > 0.8).count() as f64 / objects.len() as f64
}

#[cfg(test)]
pub(crate) mod tests;
