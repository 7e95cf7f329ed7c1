//! The automatic mask generator, equal to the official `SamAutomaticMaskGenerator`: a grid of
//! point prompts per image crop, decoded in batches with three masks per point, filtered by
//! predicted IoU, stability and crop-edge contact, deduplicated by box NMS within and across
//! crops, and optionally cleaned of small holes and islands.

use super::config::SamConfig;
use super::model::SamModel;
use super::regions::{remove_small_regions, RegionMode};
use crate::error::Result;
use crate::mask::{BinaryMask, Rle};
use candle_core::{DType, Tensor};
use image::RgbImage;
use rayon::prelude::*;
use std::cmp::Ordering;

/// One generated mask.
#[derive(Debug, Clone)]
pub struct AmgMask {
    /// The mask at the image's size.
    pub mask: BinaryMask,
    /// Pixel count.
    pub area: usize,
    /// Tight box `[x0, y0, x1, y1]` with inclusive right and bottom pixel (all 0 if empty).
    pub bbox: [u32; 4],
    /// The decoder's predicted IoU.
    pub predicted_iou: f32,
    /// IoU of the masks thresholded at ± the stability offset.
    pub stability_score: f32,
    /// The point prompt `(x, y)` in image pixels.
    pub point: [f64; 2],
    /// The crop `[x0, y0, x1, y1]` the mask was generated in.
    pub crop_box: [usize; 4],
}

/// A mask record while generating (masks kept run-length encoded).
#[derive(Debug, Clone)]
struct Record {
    rle: Rle,
    bbox: [u32; 4],
    iou: f32,
    stability: f32,
    point: [f64; 2],
    crop_box: [usize; 4],
}

/// `n × n` points evenly spaced in [0, 1]², offset by half a cell, x varying fastest.
pub fn point_grid(n: usize) -> Vec<[f64; 2]> {
    // numpy.linspace(offset, 1 - offset, n): start + i·step, the last value exactly the stop.
    let offset = 1.0 / (2 * n) as f64;
    let stop = 1.0 - offset;
    let step = (stop - offset) / (n.max(2) - 1) as f64;
    let side: Vec<f64> = (0..n)
        .map(|i| {
            if n > 1 && i == n - 1 {
                stop
            } else {
                i as f64 * step + offset
            }
        })
        .collect();
    side.iter()
        .flat_map(|&y| side.iter().map(move |&x| [x, y]))
        .collect()
}

/// Crop boxes `[x0, y0, x1, y1]` with their layer: the whole image, then (2^i)² overlapping
/// crops for each layer i ≥ 1.
pub fn crop_boxes(
    (h, w): (usize, usize),
    n_layers: usize,
    overlap_ratio: f64,
) -> Vec<([usize; 4], usize)> {
    let mut boxes = vec![([0, 0, w, h], 0)];
    let short = h.min(w) as f64;
    for layer in 0..n_layers {
        let n = 1usize << (layer + 1);
        let overlap = (overlap_ratio * short * (2.0 / n as f64)) as usize;
        let len = |full: usize| ((overlap * (n - 1) + full) as f64 / n as f64).ceil() as usize;
        let (cw, ch) = (len(w), len(h));
        let x0s: Vec<usize> = (0..n).map(|i| (cw - overlap) * i).collect();
        let y0s: Vec<usize> = (0..n).map(|i| (ch - overlap) * i).collect();
        for &x0 in &x0s {
            for &y0 in &y0s {
                boxes.push(([x0, y0, (x0 + cw).min(w), (y0 + ch).min(h)], layer + 1));
            }
        }
    }
    boxes
}

/// Tight XYXY box of a row-major mask with inclusive right/bottom; `[0; 4]` when empty.
fn mask_box(data: &[bool], width: usize) -> [u32; 4] {
    let (mut x0, mut y0, mut x1, mut y1) = (usize::MAX, usize::MAX, 0, 0);
    for (i, _) in data.iter().enumerate().filter(|(_, &v)| v) {
        let (x, y) = (i % width, i / width);
        x0 = x0.min(x);
        y0 = y0.min(y);
        x1 = x1.max(x);
        y1 = y1.max(y);
    }
    if x0 == usize::MAX {
        [0; 4]
    } else {
        [x0 as u32, y0 as u32, x1 as u32, y1 as u32]
    }
}

/// Greedy non-maximum suppression with torchvision's semantics: boxes visited by decreasing
/// score (ties in input order), IoU `inter / (a + b − inter)` of XYXY boxes without +1, in
/// float32; a box is dropped when its IoU with a kept box exceeds `thresh`. Returns the kept
/// indices in visiting order.
pub fn nms(boxes: &[[f32; 4]], scores: &[f32], thresh: f64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..boxes.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let area = |b: &[f32; 4]| (b[2] - b[0]) * (b[3] - b[1]);
    let mut suppressed = vec![false; boxes.len()];
    let mut keep = Vec::new();
    for (k, &i) in order.iter().enumerate() {
        if suppressed[i] {
            continue;
        }
        keep.push(i);
        let a = &boxes[i];
        for &j in &order[k + 1..] {
            if suppressed[j] {
                continue;
            }
            let b = &boxes[j];
            let w = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
            let h = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
            let inter = w * h;
            let iou = inter / (area(a) + area(b) - inter);
            if iou as f64 > thresh {
                suppressed[j] = true;
            }
        }
    }
    keep
}

/// Whether an (uncropped) box lies within 20 px of a crop edge that is not an image edge.
fn near_crop_edge(bbox: [f32; 4], crop: [usize; 4], (h, w): (usize, usize)) -> bool {
    let image = [0.0, 0.0, w as f32, h as f32];
    (0..4).any(|i| {
        let near_crop = (bbox[i] - crop[i] as f32).abs() <= 20.0;
        let near_image = (bbox[i] - image[i]).abs() <= 20.0;
        near_crop && !near_image
    })
}

fn as_f32(b: [u32; 4]) -> [f32; 4] {
    b.map(|v| v as f32)
}

/// Generates masks for `image`. `points`, when given, replaces the point grid of every crop
/// layer (normalised `(x, y)` in [0, 1], as DEVA's variant does). Masks come in the official
/// output order.
pub fn generate(
    model: &SamModel,
    image: &RgbImage,
    config: &SamConfig,
    points: Option<&[[f64; 2]]>,
) -> Result<Vec<AmgMask>> {
    config.validate()?;
    let size = (image.height() as usize, image.width() as usize);
    let crops = crop_boxes(size, config.crop_n_layers, config.crop_overlap_ratio);
    let mut records = Vec::new();
    for &(crop, layer) in &crops {
        let grid = match points {
            Some(p) => p.to_vec(),
            None => {
                let div = config.crop_n_points_downscale_factor.pow(layer as u32);
                point_grid(config.points_per_side / div)
            }
        };
        records.extend(process_crop(model, image, crop, &grid, config)?);
    }
    if crops.len() > 1 {
        let boxes: Vec<[f32; 4]> = records.iter().map(|r| as_f32(r.bbox)).collect();
        let scores: Vec<f32> = records
            .iter()
            .map(|r| {
                let c = r.crop_box;
                1.0 / ((c[2] - c[0]) * (c[3] - c[1])) as f32
            })
            .collect();
        let keep = nms(&boxes, &scores, config.crop_nms_thresh);
        records = keep.into_iter().map(|i| records[i].clone()).collect();
    }
    if config.min_mask_region_area > 0 {
        records = postprocess_small_regions(
            records,
            config.min_mask_region_area,
            config.box_nms_thresh.max(config.crop_nms_thresh),
        )?;
    }
    records
        .into_iter()
        .map(|r| {
            let mask = r.rle.decode()?;
            Ok(AmgMask {
                area: r.rle.area() as usize,
                mask,
                bbox: r.bbox,
                predicted_iou: r.iou,
                stability_score: r.stability,
                point: r.point,
                crop_box: r.crop_box,
            })
        })
        .collect()
}

/// All masks of one crop after the in-crop NMS, in image coordinates.
fn process_crop(
    model: &SamModel,
    image: &RgbImage,
    crop: [usize; 4],
    grid: &[[f64; 2]],
    config: &SamConfig,
) -> Result<Vec<Record>> {
    let [x0, y0, x1, y1] = crop;
    let cropped = image::imageops::crop_imm(
        image,
        x0 as u32,
        y0 as u32,
        (x1 - x0) as u32,
        (y1 - y0) as u32,
    )
    .to_image();
    let emb = model.embed_image(&cropped)?;
    let (ch, cw) = emb.original_size;
    let points: Vec<[f64; 2]> = grid
        .iter()
        .map(|p| [p[0] * cw as f64, p[1] * ch as f64])
        .collect();
    let mut records = Vec::new();
    for batch in points.chunks(config.points_per_batch) {
        records.extend(process_batch(model, &emb, batch, crop, image, config)?);
    }
    let boxes: Vec<[f32; 4]> = records.iter().map(|r| as_f32(r.bbox)).collect();
    let scores: Vec<f32> = records.iter().map(|r| r.iou).collect();
    let keep = nms(&boxes, &scores, config.box_nms_thresh);
    Ok(keep
        .into_iter()
        .map(|i| {
            let mut r = records[i].clone();
            let (ox, oy) = (x0 as u32, y0 as u32);
            r.bbox = [
                r.bbox[0] + ox,
                r.bbox[1] + oy,
                r.bbox[2] + ox,
                r.bbox[3] + oy,
            ];
            r.point = [r.point[0] + x0 as f64, r.point[1] + y0 as f64];
            r
        })
        .collect())
}

/// Decodes one batch of points (crop pixels) and filters the masks; boxes stay in crop
/// coordinates, masks are placed in the whole image.
fn process_batch(
    model: &SamModel,
    emb: &super::ImageEmbedding,
    points: &[[f64; 2]],
    crop: [usize; 4],
    image: &RgbImage,
    config: &SamConfig,
) -> Result<Vec<Record>> {
    let dev = model.device();
    let n = points.len();
    let coords: Vec<f32> = points
        .iter()
        .flat_map(|p| {
            let (x, y) = model.to_input_coords(emb, p[0], p[1]);
            [x, y]
        })
        .collect();
    let coords = Tensor::from_vec(coords, (n, 1, 2), dev)?;
    let labels = Tensor::ones((n, 1), DType::F32, dev)?;
    let prompts = model.embed_prompts(Some((&coords, &labels)), None, None)?;
    let (low, iou) = model.decode(&emb.features, &prompts, true)?;
    let (_, m, lh, lw) = low.dims4()?;
    let low = low.flatten_all()?.to_vec1::<f32>()?;
    let iou = iou.flatten_all()?.to_vec1::<f32>()?;
    let upscaler = model.upscaler(emb, (lh, lw));
    let (ch, cw) = emb.original_size;
    let full = (image.height() as usize, image.width() as usize);
    let iou_thresh = config.pred_iou_thresh as f32;
    let stab_thresh = config.stability_score_thresh as f32;
    let hi = (config.stability_score_offset) as f32;
    let lo = -(config.stability_score_offset as f32);
    let out: Vec<Option<Record>> = (0..n * m)
        .into_par_iter()
        .map(|e| {
            // Comparisons with NaN fail, as in the reference: such masks are dropped.
            if iou_thresh > 0.0 && iou[e].partial_cmp(&iou_thresh) != Some(Ordering::Greater) {
                return None;
            }
            let logits = upscaler.apply(&low[e * lh * lw..(e + 1) * lh * lw]);
            let inter = logits.iter().filter(|&&v| v > hi).count();
            let union = logits.iter().filter(|&&v| v > lo).count();
            let stability = inter as f32 / union as f32;
            if stab_thresh > 0.0
                && stability
                    .partial_cmp(&stab_thresh)
                    .is_none_or(Ordering::is_lt)
            {
                return None;
            }
            let binary: Vec<bool> = logits.iter().map(|&v| v > 0.0).collect();
            let bbox = mask_box(&binary, cw);
            let uncropped = [
                (bbox[0] as usize + crop[0]) as f32,
                (bbox[1] as usize + crop[1]) as f32,
                (bbox[2] as usize + crop[0]) as f32,
                (bbox[3] as usize + crop[1]) as f32,
            ];
            if near_crop_edge(uncropped, crop, full) {
                return None;
            }
            let mask = BinaryMask::from_fn(full.1, full.0, |x, y| {
                x >= crop[0]
                    && x < crop[2]
                    && y >= crop[1]
                    && y < crop[3]
                    && binary[(y - crop[1]) * cw + (x - crop[0])]
            });
            debug_assert_eq!(binary.len(), ch * cw);
            Some(Record {
                rle: Rle::encode(&mask),
                bbox,
                iou: iou[e],
                stability,
                point: points[e / m],
                crop_box: crop,
            })
        })
        .collect();
    Ok(out.into_iter().flatten().collect())
}

/// Removes small holes and islands from every mask, then suppresses new duplicates by box NMS
/// preferring unchanged masks.
fn postprocess_small_regions(
    records: Vec<Record>,
    min_area: usize,
    thresh: f64,
) -> Result<Vec<Record>> {
    let cleaned: Vec<(BinaryMask, bool)> = records
        .par_iter()
        .map(|r| {
            let mask = r.rle.decode()?;
            let (mask, holes) = remove_small_regions(&mask, min_area, RegionMode::Holes);
            let (mask, islands) = remove_small_regions(&mask, min_area, RegionMode::Islands);
            Ok((mask, !holes && !islands))
        })
        .collect::<Result<_>>()?;
    let boxes: Vec<[u32; 4]> = cleaned
        .iter()
        .map(|(m, _)| mask_box(m.data(), m.width()))
        .collect();
    let scores: Vec<f32> = cleaned.iter().map(|(_, u)| *u as u8 as f32).collect();
    let boxes_f: Vec<[f32; 4]> = boxes.iter().map(|&b| as_f32(b)).collect();
    let keep = nms(&boxes_f, &scores, thresh);
    Ok(keep
        .into_iter()
        .map(|i| {
            let mut r = records[i].clone();
            if !cleaned[i].1 {
                r.rle = Rle::encode(&cleaned[i].0);
                r.bbox = boxes[i];
            }
            r
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_matches_numpy_linspace_layout() {
        let g = point_grid(2);
        assert_eq!(
            g,
            vec![[0.25, 0.25], [0.75, 0.25], [0.25, 0.75], [0.75, 0.75]]
        );
        assert_eq!(point_grid(1), vec![[0.5, 0.5]]);
    }

    #[test]
    fn crop_boxes_follow_the_official_layout() {
        // Official generate_crop_boxes((360, 480), 1, 512 / 1500): overlap int(0.3413·360) =
        // 122, crop 301 x 241, x0 in {0, 179}, y0 in {0, 119}, x-major order.
        let b = crop_boxes((360, 480), 1, 512.0 / 1500.0);
        assert_eq!(b[0], ([0, 0, 480, 360], 0));
        assert_eq!(
            b[1..].iter().map(|(c, _)| *c).collect::<Vec<_>>(),
            vec![
                [0, 0, 301, 241],
                [0, 119, 301, 360],
                [179, 0, 480, 241],
                [179, 119, 480, 360]
            ]
        );
    }

    #[test]
    fn nms_keeps_ties_in_input_order_and_uses_strict_threshold() {
        let boxes = [
            [0.0, 0.0, 10.0, 10.0],
            [0.0, 0.0, 10.0, 10.0],
            [0.0, 0.0, 10.0, 5.0],
        ];
        // Equal scores: the first box wins; box 2 has IoU exactly 0.5 with it.
        assert_eq!(nms(&boxes, &[0.5, 0.5, 0.4], 0.5), vec![0, 2]);
        assert_eq!(nms(&boxes, &[0.5, 0.5, 0.4], 0.49), vec![0]);
        assert_eq!(nms(&boxes, &[0.1, 0.9, 0.4], 0.7), vec![1, 2]);
    }

    #[test]
    fn boxes_near_an_inner_crop_edge_are_flagged() {
        let crop = [100, 0, 300, 200];
        assert!(near_crop_edge([110.0, 50.0, 150.0, 80.0], crop, (200, 400)));
        assert!(!near_crop_edge(
            [150.0, 50.0, 200.0, 199.0],
            crop,
            (200, 400)
        ));
        assert!(!near_crop_edge(
            [5.0, 5.0, 30.0, 30.0],
            [0, 0, 400, 200],
            (200, 400)
        ));
    }
}
