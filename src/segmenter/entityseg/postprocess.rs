//! From head outputs to entities: FCOS proposals (candidate threshold, per-level top-k,
//! class-agnostic NMS, post-NMS top-k) and `EntityFPN.postprocess` (masks back to the image,
//! threshold 0.5, overlaps given to the better-scored entity, entities whose exclusive part
//! is a single row or column dropped, boxes from the exclusive masks).

use candle_core::{DType, Tensor};

use super::config::FcosConfig;
use super::head::LevelOutput;
use crate::error::{Error, Result};
use crate::nn::resample::{aligned_bilinear, resize_bilinear};

/// Proposals of one image, best first.
#[derive(Debug, Clone)]
pub struct Proposals {
    /// Boxes `[x1, y1, x2, y2]` at the network input's scale.
    pub boxes: Vec<[f32; 4]>,
    /// `sqrt(class probability · centerness)`.
    pub scores: Vec<f32>,
    /// The locations `(x, y)` the proposals come from.
    pub locations: Vec<[f32; 2]>,
    /// FPN level index (0 = P3).
    pub levels: Vec<usize>,
    /// Dynamic mask-head parameters `[n, P]`.
    pub params: Tensor,
}

/// One candidate location before NMS.
struct Candidate {
    score: f32,
    bbox: [f32; 4],
    location: [f32; 2],
    level: usize,
    /// Row of the concatenated parameter table.
    row: usize,
}

/// The proposals of the head outputs of P3 … P7 (batch of one).
pub fn proposals(levels: &[LevelOutput], cfg: &FcosConfig) -> Result<Proposals> {
    let mut candidates = Vec::new();
    let mut tables = Vec::with_capacity(levels.len());
    let mut rows = 0usize;
    for (lvl, (out, &stride)) in levels.iter().zip(&cfg.fpn_strides).enumerate() {
        let (_, _, h, w) = out.logits.dims4()?;
        let cls: Vec<f32> = candle_nn::ops::sigmoid(&out.logits)?
            .flatten_all()?
            .to_vec1()?;
        let ctr: Vec<f32> = candle_nn::ops::sigmoid(&out.ctrness)?
            .flatten_all()?
            .to_vec1()?;
        let reg: Vec<f32> = out.bbox_reg.flatten_all()?.to_vec1()?;
        let p = out.controller.dim(1)?;
        tables.push(
            out.controller
                .squeeze(0)?
                .reshape((p, h * w))?
                .t()?
                .contiguous()?,
        );
        let hw = h * w;
        let mut level: Vec<Candidate> = Vec::new();
        for i in 0..hw {
            let prod = cls[i] * ctr[i];
            let passes = if cfg.thresh_with_ctr { prod } else { cls[i] };
            if passes <= cfg.inference_threshold {
                continue;
            }
            let (x, y) = (i % w, i / w);
            let half = (stride / 2) as f32;
            let loc = [(x * stride) as f32 + half, (y * stride) as f32 + half];
            let s = stride as f32;
            let d = |k: usize| reg[k * hw + i] * s;
            level.push(Candidate {
                score: prod,
                bbox: [loc[0] - d(0), loc[1] - d(1), loc[0] + d(2), loc[1] + d(3)],
                location: loc,
                level: lvl,
                row: rows + i,
            });
        }
        if level.len() > cfg.pre_nms_topk {
            level.sort_by(|a, b| b.score.total_cmp(&a.score));
            level.truncate(cfg.pre_nms_topk);
        }
        candidates.extend(level);
        rows += hw;
    }
    for c in &mut candidates {
        c.score = c.score.sqrt();
    }
    let keep = nms(&candidates, cfg.nms_threshold);
    let mut kept: Vec<&Candidate> = keep.iter().map(|&i| &candidates[i]).collect();
    if cfg.post_nms_topk > 0 && kept.len() > cfg.post_nms_topk {
        let mut s: Vec<f32> = kept.iter().map(|c| c.score).collect();
        s.sort_by(|a, b| b.total_cmp(a));
        let kth = s[cfg.post_nms_topk - 1];
        kept.retain(|c| c.score >= kth);
    }
    let table = Tensor::cat(&tables, 0)?;
    let dev = table.device().clone();
    let idx: Vec<u32> = kept.iter().map(|c| c.row as u32).collect();
    let params = if idx.is_empty() {
        Tensor::zeros((0, table.dim(1)?), DType::F32, &dev)?
    } else {
        table.index_select(&Tensor::new(idx.as_slice(), &dev)?, 0)?
    };
    Ok(Proposals {
        boxes: kept.iter().map(|c| c.bbox).collect(),
        scores: kept.iter().map(|c| c.score).collect(),
        locations: kept.iter().map(|c| c.location).collect(),
        levels: kept.iter().map(|c| c.level).collect(),
        params,
    })
}

/// Intersection over union of two `xyxy` boxes (torchvision's: no +1; 0/0 is NaN).
fn box_iou(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    let area = |r: &[f32; 4]| (r[2] - r[0]) * (r[3] - r[1]);
    let iw = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let ih = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = iw * ih;
    inter / (area(a) + area(b) - inter)
}

/// Greedy NMS as torchvision's `nms`: indices kept, best score first (stable for ties); a box
/// is suppressed by a kept one when their IoU exceeds `threshold`.
fn nms(c: &[Candidate], threshold: f32) -> Vec<usize> {
    let mut order: Vec<usize> = (0..c.len()).collect();
    order.sort_by(|&a, &b| c[b].score.total_cmp(&c[a].score));
    let mut removed = vec![false; c.len()];
    let mut keep = Vec::new();
    for (k, &i) in order.iter().enumerate() {
        if removed[i] {
            continue;
        }
        keep.push(i);
        for &j in &order[k + 1..] {
            if !removed[j] && box_iou(&c[i].bbox, &c[j].bbox) > threshold {
                removed[j] = true;
            }
        }
    }
    keep
}

/// One entity of the final output.
#[derive(Debug, Clone, PartialEq)]
pub struct Entity {
    /// Index of the proposal it comes from.
    pub proposal: usize,
    /// The proposal's score.
    pub score: f32,
    /// Box of its exclusive mask `[x1, y1, x2, y2]` (inclusive pixel indices).
    pub bbox: [usize; 4],
}

/// Non-overlapping entities at the original image size.
#[derive(Debug, Clone, PartialEq)]
pub struct EntityMap {
    /// Width of the image.
    pub width: usize,
    /// Height of the image.
    pub height: usize,
    /// Per pixel (row-major): 0 for none, `k + 1` for `entities[k]`.
    pub map: Vec<u32>,
    /// The entities, best score first.
    pub entities: Vec<Entity>,
}

/// Sizes the masks pass through: the padded network input, the resized image inside it and
/// the original image, each `(height, width)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sizes {
    /// Padded network input.
    pub padded: (usize, usize),
    /// The resized image (top-left part of the padded input).
    pub resized: (usize, usize),
    /// The original image.
    pub original: (usize, usize),
}

/// Entities processed per mask upsampling step (bounds memory at large sizes).
const MASK_CHUNK: usize = 8;

/// `EntityFPN.postprocess`: `mask_probs` `[n, 1, h, w]` (at the mask output stride of the
/// padded input) of `proposals` to entities at the original size.
pub fn entities(proposals: &Proposals, mask_probs: &Tensor, sizes: Sizes) -> Result<EntityMap> {
    let (n, _, mh, mw) = mask_probs.dims4()?;
    if n != proposals.boxes.len() {
        return Err(Error::invalid(format!(
            "entityseg: {n} masks for {} proposals",
            proposals.boxes.len()
        )));
    }
    let (ph, pw) = sizes.padded;
    let (rh, rw) = sizes.resized;
    let (oh, ow) = sizes.original;
    if mh == 0
        || mw == 0
        || !ph.is_multiple_of(mh)
        || !pw.is_multiple_of(mw)
        || ph / mh != pw / mw
        || rh > ph
        || rw > pw
    {
        return Err(Error::invalid(format!(
            "entityseg: masks of {mh}x{mw} do not divide the padded input {ph}x{pw} evenly"
        )));
    }
    let factor = ph / mh;
    // Boxes scaled to the original image, clipped; empty ones are dropped.
    let (sx, sy) = (
        (ow as f64 / rw as f64) as f32,
        (oh as f64 / rh as f64) as f32,
    );
    let alive: Vec<usize> = (0..n)
        .filter(|&i| {
            let b = proposals.boxes[i];
            let x1 = (b[0] * sx).clamp(0.0, ow as f32);
            let x2 = (b[2] * sx).clamp(0.0, ow as f32);
            let y1 = (b[1] * sy).clamp(0.0, oh as f32);
            let y2 = (b[3] * sy).clamp(0.0, oh as f32);
            x2 - x1 > 0.0 && y2 - y1 > 0.0
        })
        .collect();
    // Each pixel goes to the first (best) surviving entity whose mask covers it.
    const NONE: u32 = u32::MAX;
    let mut owner = vec![NONE; oh * ow];
    for chunk in alive.chunks(MASK_CHUNK) {
        let idx: Vec<u32> = chunk.iter().map(|&i| i as u32).collect();
        let idx = Tensor::new(idx.as_slice(), mask_probs.device())?;
        let m = aligned_bilinear(&mask_probs.index_select(&idx, 0)?, factor)?
            .narrow(2, 0, rh)?
            .narrow(3, 0, rw)?;
        let m = resize_bilinear(&m, oh, ow)?;
        let v: Vec<f32> = m.flatten_all()?.to_vec1()?;
        for (k, &i) in chunk.iter().enumerate() {
            let plane = &v[k * oh * ow..(k + 1) * oh * ow];
            for (o, &p) in owner.iter_mut().zip(plane) {
                if *o == NONE && p > 0.5 {
                    *o = i as u32;
                }
            }
        }
    }
    // Exclusive boxes; entities whose exclusive part is one row or column are dropped.
    let mut bounds: Vec<Option<[usize; 4]>> = vec![None; n];
    for (p, &o) in owner.iter().enumerate() {
        if o == NONE {
            continue;
        }
        let (x, y) = (p % ow, p / ow);
        let b = bounds[o as usize].get_or_insert([x, y, x, y]);
        b[0] = b[0].min(x);
        b[1] = b[1].min(y);
        b[2] = b[2].max(x);
        b[3] = b[3].max(y);
    }
    let mut id = vec![0u32; n];
    let mut entities = Vec::new();
    for (i, b) in bounds.iter().enumerate() {
        if let Some(b) = b {
            if b[2] > b[0] && b[3] > b[1] {
                entities.push(Entity {
                    proposal: i,
                    score: proposals.scores[i],
                    bbox: *b,
                });
                id[i] = entities.len() as u32;
            }
        }
    }
    let map = owner
        .iter()
        .map(|&o| if o == NONE { 0 } else { id[o as usize] })
        .collect();
    Ok(EntityMap {
        width: ow,
        height: oh,
        map,
        entities,
    })
}
