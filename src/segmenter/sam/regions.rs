//! Removal of small holes and islands from binary masks (the official generator's
//! `remove_small_regions`, which uses OpenCV's 8-connected component labelling).

use crate::mask::BinaryMask;

/// 8-connected components of the `true` pixels: a label per pixel (0 = not in `fg`,
/// components from 1) and the size of each component (index 0 unused). Components are
/// numbered in the order OpenCV's block-based labelling numbers them: by the first 2×2 block
/// (in raster order of blocks) that contains one of their pixels.
fn components(fg: &[bool], width: usize, height: usize) -> (Vec<u32>, Vec<usize>) {
    let mut label = vec![0u32; fg.len()];
    // (first block key, size) per component in discovery order.
    let mut found: Vec<((usize, usize), usize)> = Vec::new();
    let mut stack = Vec::new();
    for start in 0..fg.len() {
        if !fg[start] || label[start] != 0 {
            continue;
        }
        let id = found.len() as u32 + 1;
        label[start] = id;
        stack.push(start);
        let mut size = 0;
        let mut key = (usize::MAX, usize::MAX);
        while let Some(p) = stack.pop() {
            size += 1;
            let (x, y) = (p % width, p / width);
            key = key.min((y / 2, x / 2));
            for ny in y.saturating_sub(1)..(y + 2).min(height) {
                for nx in x.saturating_sub(1)..(x + 2).min(width) {
                    let q = ny * width + nx;
                    if fg[q] && label[q] == 0 {
                        label[q] = id;
                        stack.push(q);
                    }
                }
            }
        }
        found.push((key, size));
    }
    let mut order: Vec<usize> = (0..found.len()).collect();
    order.sort_by_key(|&i| found[i].0);
    let mut renumber = vec![0u32; found.len() + 1];
    let mut sizes = vec![0usize; found.len() + 1];
    for (rank, &i) in order.iter().enumerate() {
        renumber[i + 1] = rank as u32 + 1;
        sizes[rank + 1] = found[i].1;
    }
    label.iter_mut().for_each(|l| *l = renumber[*l as usize]);
    (label, sizes)
}

/// Which kind of small region to remove.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegionMode {
    /// Fill background components smaller than the threshold.
    Holes,
    /// Drop foreground components smaller than the threshold (keeping the largest if all are).
    Islands,
}

/// Removes regions smaller than `min_area` pixels; returns the mask and whether it changed.
pub fn remove_small_regions(
    mask: &BinaryMask,
    min_area: usize,
    mode: RegionMode,
) -> (BinaryMask, bool) {
    let (w, h) = (mask.width(), mask.height());
    let holes = mode == RegionMode::Holes;
    let working: Vec<bool> = mask.data().iter().map(|&v| v != holes).collect();
    let (labels, sizes) = components(&working, w, h);
    let small: Vec<bool> = sizes.iter().map(|&s| s < min_area).collect();
    if !small.iter().skip(1).any(|&s| s) {
        return (mask.clone(), false);
    }
    let keep: Vec<bool> = if holes {
        // The mask itself (label 0 of the inverted mask) plus the small holes.
        (0..sizes.len()).map(|l| l == 0 || small[l]).collect()
    } else {
        let mut keep: Vec<bool> = (0..sizes.len()).map(|l| l != 0 && !small[l]).collect();
        if !keep.iter().any(|&k| k) {
            let mut largest = 1;
            for l in 1..sizes.len() {
                if sizes[l] > sizes[largest] {
                    largest = l;
                }
            }
            keep[largest] = true;
        }
        keep
    };
    let data = labels.iter().map(|&l| keep[l as usize]).collect();
    (
        BinaryMask::from_vec(w, h, data).expect("same size as the input"),
        true,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(rows: &[&str]) -> BinaryMask {
        let h = rows.len();
        let w = rows[0].len();
        BinaryMask::from_fn(w, h, |x, y| rows[y].as_bytes()[x] == b'#')
    }

    fn show(m: &BinaryMask) -> Vec<String> {
        (0..m.height())
            .map(|y| {
                (0..m.width())
                    .map(|x| if m.get(x, y) { '#' } else { '.' })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn islands_below_the_area_are_dropped_and_diagonal_pixels_connect() {
        let m = parse(&["##....", "##...#", "..#...", "......"]);
        // The 2x2 block and the diagonal pixel form one 5-pixel island; the lone pixel at
        // the right is a second island of 1 pixel.
        let (out, changed) = remove_small_regions(&m, 2, RegionMode::Islands);
        assert!(changed);
        assert_eq!(show(&out), ["##....", "##....", "..#...", "......"]);
        let (same, changed) = remove_small_regions(&m, 1, RegionMode::Islands);
        assert!(!changed);
        assert_eq!(same, m);
    }

    #[test]
    fn all_small_islands_keep_the_largest() {
        let m = parse(&["#...##", "....##", "......"]);
        let (out, changed) = remove_small_regions(&m, 100, RegionMode::Islands);
        assert!(changed);
        assert_eq!(show(&out), ["....##", "....##", "......"]);
    }

    #[test]
    fn small_holes_are_filled_but_the_outside_is_not() {
        let m = parse(&["#####.", "#.#.#.", "#####.", "......"]);
        // Two 1-pixel holes; the background outside has 9 pixels.
        let (out, changed) = remove_small_regions(&m, 2, RegionMode::Holes);
        assert!(changed);
        assert_eq!(show(&out), ["#####.", "#####.", "#####.", "......"]);
    }

    #[test]
    fn components_are_numbered_by_first_two_by_two_block() {
        // Pixel raster order would number the component at (3, 0) first; OpenCV's blocks
        // visit block (0, 0) (rows 0-1, columns 0-1) first, which holds (0, 1).
        let m = parse(&["...#", "#...", "....", "...."]);
        let (labels, sizes) = components(m.data(), 4, 4);
        assert_eq!(labels[4], 1);
        assert_eq!(labels[3], 2);
        assert_eq!(sizes, vec![0, 1, 1]);
    }
}
