//! Recognising masks that are not id masks: an anti-aliased or smoothly resized grayscale
//! image has, along each object's edge, a ring of intermediate values that an id-mask reader
//! takes for many thin objects.

use super::{IdMap, ObjectId};
use std::collections::BTreeMap;

/// Fewer sliver ids than this are never reported (a few thin objects are plausible).
const MIN_SLIVERS: usize = 8;

/// An id is a sliver when at least this fraction of its pixels touch another id.
const EDGE_FRACTION: f64 = 0.9;

/// The non-zero ids that are thin slivers lying along other ids' edges (nearly every pixel
/// has a 4-neighbour of another id), when they are many (at least 8) and make up at least
/// half of the map's ids: the signature of anti-aliasing. Empty for a plausible id mask.
pub fn sliver_ids(map: &IdMap) -> Vec<ObjectId> {
    if map.areas().len() < MIN_SLIVERS {
        return Vec::new();
    }
    let (w, h) = (map.width(), map.height());
    let data = map.data();
    // (pixels, pixels touching another id) per id.
    let mut stats: BTreeMap<ObjectId, (usize, usize)> = BTreeMap::new();
    for y in 0..h {
        for x in 0..w {
            let v = data[y * w + x];
            if v == 0 {
                continue;
            }
            let differs = |nx: usize, ny: usize| data[ny * w + nx] != v;
            let edge = (x > 0 && differs(x - 1, y))
                || (x + 1 < w && differs(x + 1, y))
                || (y > 0 && differs(x, y - 1))
                || (y + 1 < h && differs(x, y + 1));
            let s = stats.entry(v).or_default();
            s.0 += 1;
            s.1 += usize::from(edge);
        }
    }
    let slivers: Vec<ObjectId> = stats
        .iter()
        .filter(|(_, &(n, edge))| edge as f64 >= EDGE_FRACTION * n as f64)
        .map(|(&id, _)| id)
        .collect();
    if slivers.len() >= MIN_SLIVERS && 2 * slivers.len() >= stats.len() {
        slivers
    } else {
        Vec::new()
    }
}

/// A disc of value 255 on 0 whose edge ramps through intermediate values, as a smoothly
/// resized or anti-aliased binary mask has.
#[cfg(test)]
pub(crate) fn antialiased_disc(size: usize) -> IdMap {
    let c = size as f64 / 2.0;
    let data = (0..size * size)
        .map(|i| {
            let (x, y) = ((i % size) as f64 + 0.5, (i / size) as f64 + 0.5);
            let d = ((x - c).powi(2) + (y - c).powi(2)).sqrt();
            let cover = (size as f64 / 3.0 - d + 0.5).clamp(0.0, 1.0);
            (cover * 255.0).round() as ObjectId
        })
        .collect();
    IdMap::from_vec(size, size, data).expect("size * size values")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn antialiased_edges_are_slivers_and_real_objects_are_not() {
        let disc = antialiased_disc(64);
        let ids = disc.ids();
        let slivers = sliver_ids(&disc);
        assert!(slivers.len() >= MIN_SLIVERS, "{} ids", ids.len());
        assert!(!slivers.contains(&255));
        assert!(slivers.iter().all(|&v| v > 0 && v < 255));

        // The same disc thresholded, plus several small but solid objects: no slivers.
        let mut clean = disc.remap(|v| if v >= 128 { 1 } else { 0 });
        for k in 0..12u32 {
            let (x0, y0) = ((k as usize % 6) * 10, 56 + (k as usize / 6) * 4);
            for y in y0..y0 + 4 {
                for x in x0..x0 + 4 {
                    clean.data_mut()[y * 64 + x] = 2 + k;
                }
            }
        }
        assert_eq!(clean.ids().len(), 13);
        assert!(sliver_ids(&clean).is_empty());
    }
}
