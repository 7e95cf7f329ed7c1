//! From a saliency map to one segment: resize to the frame, threshold, keep the largest
//! connected components, drop small blobs.

use crate::mask::bilinear_taps;
use crate::mask::{BinaryMask, IdMap, SegmentInfo, Segmentation};

/// Bilinear resize (PyTorch `align_corners = False`) of a single-channel row-major map.
pub fn resize_map(map: &[f32], width: usize, height: usize, to_w: usize, to_h: usize) -> Vec<f32> {
    if (width, height) == (to_w, to_h) {
        return map.to_vec();
    }
    let xt: Vec<_> = (0..to_w).map(|x| bilinear_taps(x, width, to_w)).collect();
    let mut out = Vec::with_capacity(to_w * to_h);
    for y in 0..to_h {
        let (y0, y1, ly) = bilinear_taps(y, height, to_h);
        let (r0, r1) = (&map[y0 * width..][..width], &map[y1 * width..][..width]);
        for &(x0, x1, lx) in &xt {
            let top = r0[x0] * (1.0 - lx) + r0[x1] * lx;
            let bottom = r1[x0] * (1.0 - lx) + r1[x1] * lx;
            out.push(top * (1.0 - ly) + bottom * ly);
        }
    }
    out
}

/// 8-connected components of `mask`: a label per pixel (0 = outside, components from 1) and
/// the area of each component (`areas[k]` for label `k + 1`).
pub fn connected_components(mask: &BinaryMask) -> (Vec<u32>, Vec<usize>) {
    let (w, h) = (mask.width(), mask.height());
    let data = mask.data();
    let mut labels = vec![0u32; w * h];
    let mut areas = Vec::new();
    let mut stack = Vec::new();
    for start in 0..w * h {
        if !data[start] || labels[start] != 0 {
            continue;
        }
        let label = areas.len() as u32 + 1;
        let mut area = 0;
        labels[start] = label;
        stack.push(start);
        while let Some(p) = stack.pop() {
            area += 1;
            let (x, y) = (p % w, p / w);
            for ny in y.saturating_sub(1)..(y + 2).min(h) {
                for nx in x.saturating_sub(1)..(x + 2).min(w) {
                    let q = ny * w + nx;
                    if data[q] && labels[q] == 0 {
                        labels[q] = label;
                        stack.push(q);
                    }
                }
            }
        }
        areas.push(area);
    }
    (labels, areas)
}

/// How a saliency map becomes a segment.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MaskRule {
    /// Pixels with saliency above this are salient.
    pub threshold: f32,
    /// Components smaller than this fraction of the frame are dropped.
    pub min_blob_fraction: f64,
    /// Keep at most this many components, largest first; 0 keeps all.
    pub keep_largest: usize,
}

impl MaskRule {
    /// The salient mask of a map already at the frame's size.
    pub fn mask(&self, saliency: &[f32], width: usize, height: usize) -> BinaryMask {
        let raw = BinaryMask::from_fn(width, height, |x, y| {
            saliency[y * width + x] > self.threshold
        });
        let (labels, areas) = connected_components(&raw);
        let min_area = self.min_blob_fraction * (width * height) as f64;
        let mut order: Vec<usize> = (0..areas.len())
            .filter(|&k| areas[k] as f64 >= min_area)
            .collect();
        // Largest first; equal areas keep raster order of their first pixel.
        order.sort_by_key(|&k| std::cmp::Reverse(areas[k]));
        if self.keep_largest > 0 {
            order.truncate(self.keep_largest);
        }
        let mut keep = vec![false; areas.len() + 1];
        for k in order {
            keep[k + 1] = true;
        }
        BinaryMask::from_fn(width, height, |x, y| keep[labels[y * width + x] as usize])
    }

    /// The segmentation of a frame of `width × height` from a saliency map of `map_w × map_h`:
    /// one segment with id 1 whose score is the mean saliency inside it, or no segment when
    /// nothing is salient.
    pub fn segment(
        &self,
        map: &[f32],
        map_w: usize,
        map_h: usize,
        width: usize,
        height: usize,
    ) -> Segmentation {
        let saliency = resize_map(map, map_w, map_h, width, height);
        let mask = self.mask(&saliency, width, height);
        let area = mask.area();
        if area == 0 {
            return Segmentation::empty(width, height);
        }
        let sum: f64 = mask
            .data()
            .iter()
            .zip(&saliency)
            .filter(|(m, _)| **m)
            .map(|(_, &s)| f64::from(s))
            .sum();
        let mut map = IdMap::new(width, height);
        map.paint(&mask, 1).expect("mask has the map's size");
        let mut info = SegmentInfo::new(1);
        info.score = Some((sum / area as f64) as f32);
        Segmentation {
            map,
            segments: vec![info],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mask_from(rows: &[&str]) -> BinaryMask {
        let w = rows[0].len();
        BinaryMask::from_fn(w, rows.len(), |x, y| rows[y].as_bytes()[x] == b'#')
    }

    #[test]
    fn components_are_eight_connected() {
        let m = mask_from(&["#..##", ".#..#", "....#", "##..."]);
        let (labels, areas) = connected_components(&m);
        // The diagonal pair joins; the right-hand L is one component; the bottom bar is another.
        assert_eq!(areas, vec![2, 4, 2]);
        assert_eq!(labels[0], labels[6]);
        assert_eq!(labels[3], labels[14]);
        assert_ne!(labels[0], labels[15]);
        assert_eq!(labels[2], 0);
    }

    #[test]
    fn rule_keeps_largest_components_and_drops_small_blobs() {
        // Components of 6, 2, 1 and 1 pixels on a 6×4 frame (24 pixels).
        let s = |rows: &[&str]| -> Vec<f32> {
            rows.iter()
                .flat_map(|r| r.bytes().map(|b| if b == b'#' { 0.9 } else { 0.1 }))
                .collect()
        };
        let map = s(&["###..#", "###...", "......", "##.#.."]);
        let rule = |keep, frac| MaskRule {
            threshold: 0.5,
            min_blob_fraction: frac,
            keep_largest: keep,
        };
        assert_eq!(rule(0, 0.0).mask(&map, 6, 4).area(), 10);
        assert_eq!(rule(1, 0.0).mask(&map, 6, 4).area(), 6);
        assert_eq!(rule(2, 0.0).mask(&map, 6, 4).area(), 8);
        // 2/24 ≈ 0.083: the two singletons go, the pair (exactly the limit) stays.
        assert_eq!(rule(0, 2.0 / 24.0).mask(&map, 6, 4).area(), 8);
        let seg = rule(1, 0.0).segment(&map, 6, 4, 6, 4);
        assert_eq!(seg.segments.len(), 1);
        assert_eq!(seg.segments[0].id, 1);
        assert!((seg.segments[0].score.unwrap() - 0.9).abs() < 1e-6);
        assert_eq!(seg.map.mask(1).area(), 6);
        seg.validate().unwrap();
        // Nothing above the threshold: an empty segmentation of the frame's size.
        let dull = vec![0.2f32; 24];
        let seg = rule(0, 0.0).segment(&dull, 6, 4, 12, 8);
        assert!(seg.segments.is_empty());
        assert_eq!((seg.map.width(), seg.map.height()), (12, 8));
    }

    #[test]
    fn map_resize_matches_pytorch_bilinear() {
        // torch.nn.functional.interpolate(torch.tensor([[[[0., 1.], [2., 3.]]]]), size=(4, 4),
        // mode="bilinear", align_corners=False) first row: [0, 0.25, 0.75, 1].
        let r = resize_map(&[0.0, 1.0, 2.0, 3.0], 2, 2, 4, 4);
        assert_eq!(&r[..4], &[0.0, 0.25, 0.75, 1.0]);
        assert_eq!(&r[4..8], &[0.5, 0.75, 1.25, 1.5]);
    }
}
