//! From query classes and masks to segments: panoptic (object-mask threshold, overlap
//! threshold, stuff classes fused), instance (top-k class/query pairs with mask scores) and
//! semantic, as Hugging Face's `Mask2FormerImageProcessor` post-processing does.
//!
//! Every variant first brings the mask logits to one working size with
//! [`resize_mask_logits`]; Hugging Face uses a fixed 384x384 square whatever the input
//! ([`HF_MASK_SIZE`]), detectron2 the padded input size cropped to the image.

use candle_core::{DType, Tensor};

use crate::error::{Error, Result};
use crate::nn::resample;

/// The square Hugging Face resizes mask logits to before the target size.
pub const HF_MASK_SIZE: usize = 384;

/// Per-query predictions of one image, on the CPU: class logits and mask logits at the
/// working size.
#[derive(Debug, Clone)]
pub struct QueryPredictions {
    /// Class logits `[q][num_labels + 1]` (the last class is "no object").
    pub class_logits: Vec<Vec<f32>>,
    /// Mask logits, one row-major `h × w` map per query.
    pub mask_logits: Vec<Vec<f32>>,
    /// Height of the mask maps.
    pub height: usize,
    /// Width of the mask maps.
    pub width: usize,
}

/// Brings `masks` `[q, h, w]` (one image) to `(h, w)` with bilinear interpolation
/// (`align_corners = False`) after cropping the top-left `crop` `(h, w)` region (the
/// unpadded image) when given.
pub fn resize_mask_logits(
    masks: &Tensor,
    crop: Option<(usize, usize)>,
    size: (usize, usize),
) -> Result<Tensor> {
    let m = match crop {
        Some((h, w)) => masks.narrow(1, 0, h)?.narrow(2, 0, w)?,
        None => masks.clone(),
    };
    Ok(resample::resize_bilinear(&m.unsqueeze(0)?, size.0, size.1)?.squeeze(0)?)
}

impl QueryPredictions {
    /// Reads one image's predictions: `class_logits` `[q, c + 1]` and `mask_logits`
    /// `[q, h, w]` (already at the working size).
    pub fn from_tensors(class_logits: &Tensor, mask_logits: &Tensor) -> Result<Self> {
        let (q, h, w) = mask_logits.dims3()?;
        if class_logits.dim(0)? != q {
            return Err(Error::invalid(format!(
                "mask2former: {} class rows for {q} masks",
                class_logits.dim(0)?
            )));
        }
        let class_logits = class_logits.to_dtype(DType::F32)?.to_vec2::<f32>()?;
        let mask_logits = mask_logits
            .to_dtype(DType::F32)?
            .reshape((q, h * w))?
            .to_vec2::<f32>()?;
        Ok(QueryPredictions {
            class_logits,
            mask_logits,
            height: h,
            width: w,
        })
    }

    /// Number of classes (the no-object class excluded).
    pub fn num_labels(&self) -> usize {
        self.class_logits
            .first()
            .map_or(0, |r| r.len().saturating_sub(1))
    }

    fn probs(&self) -> Vec<Vec<f32>> {
        self.class_logits.iter().map(|r| softmax(r)).collect()
    }
}

fn softmax(x: &[f32]) -> Vec<f32> {
    let m = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let e: Vec<f32> = x.iter().map(|v| (v - m).exp()).collect();
    let s: f32 = e.iter().sum();
    e.into_iter().map(|v| v / s).collect()
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// Bilinear resize (`align_corners = False`, no antialiasing) of a row-major map.
fn resize_bilinear(src: &[f32], h: usize, w: usize, oh: usize, ow: usize) -> Vec<f32> {
    let taps = |n_in: usize, n_out: usize| -> Vec<(usize, usize, f32)> {
        let scale = n_in as f32 / n_out as f32;
        (0..n_out)
            .map(|o| {
                let s = ((o as f32 + 0.5) * scale - 0.5).max(0.0);
                let i0 = (s.floor() as usize).min(n_in - 1);
                let i1 = (i0 + 1).min(n_in - 1);
                (i0, i1, s - i0 as f32)
            })
            .collect()
    };
    let ys = taps(h, oh);
    let xs = taps(w, ow);
    let mut out = Vec::with_capacity(oh * ow);
    for &(y0, y1, fy) in &ys {
        for &(x0, x1, fx) in &xs {
            let top = src[y0 * w + x0] * (1.0 - fx) + src[y0 * w + x1] * fx;
            let bot = src[y1 * w + x0] * (1.0 - fx) + src[y1 * w + x1] * fx;
            out.push(top * (1.0 - fy) + bot * fy);
        }
    }
    out
}

/// Source index of PyTorch's legacy `nearest` interpolation.
fn nearest_index(o: usize, n_in: usize, n_out: usize) -> usize {
    if n_in == n_out {
        return o;
    }
    let scale = n_in as f32 / n_out as f32;
    ((o as f32 * scale).floor() as usize).min(n_in - 1)
}

/// One segment of a post-processed image.
#[derive(Debug, Clone, PartialEq)]
pub struct SegmentRecord {
    /// Segment id as painted in the map.
    pub id: i32,
    /// Class id.
    pub label_id: usize,
    /// Score (class probability, times the mask score for instances).
    pub score: f32,
    /// Whether the class was in the fused (stuff) set.
    pub was_fused: bool,
    /// Query the segment came from.
    pub query: usize,
}

/// A post-processed image: a segment id per pixel and the segments in creation order.
#[derive(Debug, Clone, PartialEq)]
pub struct SegmentMap {
    /// Width of the map.
    pub width: usize,
    /// Height of the map.
    pub height: usize,
    /// Row-major segment ids (panoptic: 0 = none; instance: −1 = none).
    pub map: Vec<i32>,
    /// Segments in the order they were created (panoptic fusion may repeat ids).
    pub segments: Vec<SegmentRecord>,
}

/// Whose panoptic fusion to follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Convention {
    /// Hugging Face `post_process_panoptic_segmentation`: a query's own area counts pixels
    /// of its score-weighted probability; it is kept when won/own > the overlap threshold
    /// and paints every pixel it wins; reusing a fused stuff id also resets the running
    /// counter to it (ids may then repeat across classes) and is listed again; no query kept
    /// gives a map of −1.
    HuggingFace,
    /// detectron2 (the original Mask2Former): own area from the plain probability; kept when
    /// won/own >= the threshold; paints the pixels it wins where its own probability passes
    /// the mask threshold; ids are unique, a fused stuff class keeps its first id and is
    /// listed once; no query kept gives a map of 0.
    Detectron2,
}

/// Panoptic thresholds.
#[derive(Debug, Clone, PartialEq)]
pub struct PanopticOptions {
    /// Minimum class probability of a query (`threshold`).
    pub threshold: f32,
    /// Probability that makes a pixel part of a query's own mask (`mask_threshold`).
    pub mask_threshold: f32,
    /// Minimum fraction of a query's mask it must win (`overlap_mask_area_threshold`).
    pub overlap_mask_area_threshold: f32,
    /// Classes whose queries merge into one segment (stuff).
    pub label_ids_to_fuse: Vec<usize>,
    /// Fusion rules.
    pub convention: Convention,
}

/// Panoptic segmentation at `target` `(h, w)` (ids from 1, 0 = no segment), following
/// `opts.convention`.
pub fn panoptic(
    pred: &QueryPredictions,
    target: (usize, usize),
    opts: &PanopticOptions,
) -> SegmentMap {
    let (th, tw) = target;
    let c = pred.num_labels();
    let mut kept = Vec::new();
    for (q, p) in pred.probs().iter().enumerate() {
        let (label, score) = p
            .iter()
            .enumerate()
            .fold((0, f32::NEG_INFINITY), |best, (i, &v)| {
                if v > best.1 {
                    (i, v)
                } else {
                    best
                }
            });
        if label != c && score > opts.threshold {
            kept.push((q, label, score));
        }
    }
    let hf = opts.convention == Convention::HuggingFace;
    if kept.is_empty() {
        return SegmentMap {
            width: tw,
            height: th,
            map: vec![if hf { -1 } else { 0 }; th * tw],
            segments: Vec::new(),
        };
    }
    let probs: Vec<Vec<f32>> = kept
        .iter()
        .map(|&(q, _, _)| {
            let p: Vec<f32> = pred.mask_logits[q].iter().map(|&v| sigmoid(v)).collect();
            resize_bilinear(&p, pred.height, pred.width, th, tw)
        })
        .collect();
    let weighted: Vec<Vec<f32>> = kept
        .iter()
        .zip(&probs)
        .map(|(&(_, _, score), p)| p.iter().map(|v| v * score).collect())
        .collect();
    let n = th * tw;
    let winner: Vec<usize> = (0..n)
        .map(|i| {
            let mut best = 0;
            for k in 1..weighted.len() {
                if weighted[k][i] > weighted[best][i] {
                    best = k;
                }
            }
            best
        })
        .collect();
    let mut map = vec![0i32; n];
    let mut segments = Vec::new();
    let mut current = 0i32;
    let mut stuff: Vec<(usize, i32)> = Vec::new();
    for (k, &(q, label, score)) in kept.iter().enumerate() {
        let own = if hf { &weighted[k] } else { &probs[k] };
        let paint: Vec<bool> = winner
            .iter()
            .zip(own)
            .map(|(&w, &p)| w == k && (hf || p >= opts.mask_threshold))
            .collect();
        let area = winner.iter().filter(|&&w| w == k).count();
        let original = own.iter().filter(|&&v| v >= opts.mask_threshold).count();
        if area == 0 || original == 0 || !paint.contains(&true) {
            continue;
        }
        let ratio = area as f32 / original as f32;
        let keep = if hf {
            ratio > opts.overlap_mask_area_threshold
        } else {
            ratio >= opts.overlap_mask_area_threshold
        };
        if !keep {
            continue;
        }
        let fuse = opts.label_ids_to_fuse.contains(&label);
        let reused = stuff.iter().find(|(l, _)| *l == label).map(|&(_, id)| id);
        let id = match reused {
            Some(id) => {
                if hf {
                    current = id;
                }
                id
            }
            None => {
                current += 1;
                current
            }
        };
        for (m, &p) in map.iter_mut().zip(&paint) {
            if p {
                *m = id;
            }
        }
        if reused.is_some() && !hf {
            continue;
        }
        segments.push(SegmentRecord {
            id,
            label_id: label,
            score,
            was_fused: fuse,
            query: q,
        });
        if fuse && !stuff.iter().any(|(l, _)| *l == label) {
            stuff.push((label, id));
        }
    }
    SegmentMap {
        width: tw,
        height: th,
        map,
        segments,
    }
}

/// Instance candidates as flat `query · num_labels + class` indices, highest class
/// probability first (ties by index): the first `num_queries` of them.
pub fn instance_candidates(pred: &QueryPredictions) -> Vec<usize> {
    let c = pred.num_labels();
    let mut flat: Vec<(usize, f32)> = pred
        .probs()
        .iter()
        .enumerate()
        .flat_map(|(q, p)| (0..c).map(move |l| (q * c + l, p[l])))
        .collect();
    flat.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    flat.truncate(pred.class_logits.len());
    flat.into_iter().map(|(i, _)| i).collect()
}

/// Instance segmentation at `target` `(h, w)` over `candidates` (flat indices, in the order
/// they are painted; see [`instance_candidates`]): a candidate with a non-empty mask and
/// `class probability × mask score >= threshold` gets the next id (from 0), painted over
/// earlier ones; −1 = no instance.
pub fn instance(
    pred: &QueryPredictions,
    candidates: &[usize],
    target: (usize, usize),
    threshold: f32,
) -> Result<SegmentMap> {
    let (th, tw) = target;
    let c = pred.num_labels();
    let probs = pred.probs();
    let mut map = vec![-1i32; th * tw];
    let mut segments = Vec::new();
    let xs: Vec<usize> = (0..tw).map(|x| nearest_index(x, pred.width, tw)).collect();
    let ys: Vec<usize> = (0..th).map(|y| nearest_index(y, pred.height, th)).collect();
    for &flat in candidates {
        let (q, label) = (flat / c.max(1), flat % c.max(1));
        if q >= probs.len() {
            return Err(Error::invalid(format!(
                "mask2former: instance candidate {flat} is outside {} queries x {c} classes",
                probs.len()
            )));
        }
        let logits = &pred.mask_logits[q];
        let (mut on, mut sum) = (0f32, 0f32);
        for &v in logits {
            if v > 0.0 {
                on += 1.0;
                sum += sigmoid(v);
            }
        }
        let score = probs[q][label] * (sum / (on + 1e-6));
        if score < threshold {
            continue;
        }
        let mut painted = Vec::new();
        for (y, &sy) in ys.iter().enumerate() {
            for (x, &sx) in xs.iter().enumerate() {
                if logits[sy * pred.width + sx] > 0.0 {
                    painted.push(y * tw + x);
                }
            }
        }
        if painted.is_empty() {
            continue;
        }
        let id = segments.len() as i32;
        for i in painted {
            map[i] = id;
        }
        segments.push(SegmentRecord {
            id,
            label_id: label,
            score,
            was_fused: false,
            query: q,
        });
    }
    Ok(SegmentMap {
        width: tw,
        height: th,
        map,
        segments,
    })
}

/// Semantic segmentation at `target` `(h, w)`: per pixel, the class maximising
/// `Σ_q p(class | q) · sigmoid(mask_q)` (scores resized bilinearly first).
pub fn semantic(pred: &QueryPredictions, target: (usize, usize)) -> Vec<usize> {
    let (th, tw) = target;
    let c = pred.num_labels();
    let probs = pred.probs();
    let hw = pred.height * pred.width;
    let sig: Vec<Vec<f32>> = pred
        .mask_logits
        .iter()
        .map(|m| m.iter().map(|&v| sigmoid(v)).collect())
        .collect();
    let scores: Vec<Vec<f32>> = (0..c)
        .map(|l| {
            let mut s = vec![0f32; hw];
            for (q, m) in sig.iter().enumerate() {
                let p = probs[q][l];
                for (a, &v) in s.iter_mut().zip(m) {
                    *a += p * v;
                }
            }
            resize_bilinear(&s, pred.height, pred.width, th, tw)
        })
        .collect();
    (0..th * tw)
        .map(|i| {
            (0..c).fold(0, |best, l| {
                if scores[l][i] > scores[best][i] {
                    l
                } else {
                    best
                }
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two queries over a 1x4 map: query 0 covers the left half, query 1 the right half.
    fn two_queries(classes: [[f32; 3]; 2]) -> QueryPredictions {
        QueryPredictions {
            class_logits: classes.iter().map(|r| r.to_vec()).collect(),
            mask_logits: vec![vec![5.0, 5.0, -5.0, -5.0], vec![-5.0, -5.0, 5.0, 5.0]],
            height: 1,
            width: 4,
        }
    }

    #[test]
    fn panoptic_fuses_stuff_and_numbers_segments_by_rule() {
        // Both queries predict class 1 (stuff) confidently.
        let pred = two_queries([[0.0, 8.0, 0.0], [0.0, 8.0, 0.0]]);
        let mut opts = PanopticOptions {
            threshold: 0.5,
            mask_threshold: 0.5,
            overlap_mask_area_threshold: 0.8,
            label_ids_to_fuse: vec![1],
            convention: Convention::HuggingFace,
        };
        let r = panoptic(&pred, (1, 4), &opts);
        assert_eq!(r.map, vec![1, 1, 1, 1]);
        assert_eq!(r.segments.len(), 2);
        assert!(r.segments.iter().all(|s| s.id == 1 && s.was_fused));
        // detectron2 lists a fused class once.
        opts.convention = Convention::Detectron2;
        let r = panoptic(&pred, (1, 4), &opts);
        assert_eq!(r.map, vec![1, 1, 1, 1]);
        assert_eq!(r.segments.len(), 1);
        // Not fused: two segments.
        opts.label_ids_to_fuse.clear();
        let r = panoptic(&pred, (1, 4), &opts);
        assert_eq!(r.map, vec![1, 1, 2, 2]);
        // No-object wins: nothing kept, map is 0 (detectron2) or -1 (Hugging Face).
        let pred = two_queries([[0.0, 0.0, 9.0], [0.0, 0.0, 9.0]]);
        let r = panoptic(&pred, (1, 4), &opts);
        assert_eq!(r.map, vec![0; 4]);
        assert!(r.segments.is_empty());
        opts.convention = Convention::HuggingFace;
        assert_eq!(panoptic(&pred, (1, 4), &opts).map, vec![-1; 4]);
    }

    #[test]
    fn instance_scores_include_the_mask_score_and_later_candidates_paint_over() {
        let pred = two_queries([[4.0, 0.0, 0.0], [0.0, 4.0, 0.0]]);
        let cands = instance_candidates(&pred);
        // Query 0 class 0 and query 1 class 1 are the two best.
        assert_eq!(cands, vec![0, 3]);
        let r = instance(&pred, &cands, (1, 8), 0.5).unwrap();
        assert_eq!(r.map, vec![0, 0, 0, 0, 1, 1, 1, 1]);
        let p = softmax(&[4.0, 0.0, 0.0])[0];
        let ms = sigmoid(5.0) * 2.0 / (2.0 + 1e-6);
        assert!((r.segments[0].score - p * ms).abs() < 1e-6);
        // Resize to 1x2 (nearest picks source columns 0 and 2).
        let r = instance(&pred, &cands, (1, 2), 0.5).unwrap();
        assert_eq!(r.map, vec![0, 1]);
        assert!(instance(&pred, &[99], (1, 2), 0.5).is_err());
    }

    #[test]
    fn semantic_takes_the_best_class_per_pixel() {
        let pred = two_queries([[4.0, 0.0, 0.0], [0.0, 4.0, 0.0]]);
        assert_eq!(semantic(&pred, (1, 4)), vec![0, 0, 1, 1]);
    }

    #[test]
    fn bilinear_and_nearest_follow_pytorch() {
        // 1x2 → 1x4: source x = (o + 0.5)/2 − 0.5 clamped: 0, 0.25, 0.75, 1.
        let r = resize_bilinear(&[0.0, 4.0], 1, 2, 1, 4);
        assert_eq!(r, vec![0.0, 1.0, 3.0, 4.0]);
        assert_eq!(
            (0..3).map(|o| nearest_index(o, 4, 3)).collect::<Vec<_>>(),
            vec![0, 1, 2]
        );
        assert_eq!(nearest_index(5, 4, 6), 3);
    }
}
