//! Segmentation types: binary masks, id maps, per-segment information, boxes and COCO RLE.

mod probs;
mod rle;
mod sliver;

pub(crate) use probs::bilinear_taps;
pub use probs::ObjectProbs;
pub use rle::Rle;
#[cfg(test)]
pub(crate) use sliver::antialiased_disc;
pub use sliver::sliver_ids;

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Identifier of a segment or tracked object; 0 is background.
pub type ObjectId = u32;

/// Largest id that the RGB id encoding (R + 256·G + 65536·B) can hold.
pub const MAX_RGB_ID: ObjectId = (1 << 24) - 1;

/// An axis-aligned pixel box: `x, y` is the top-left pixel, `w, h` the extent (COCO XYWH).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BBox {
    /// Left column.
    pub x: u32,
    /// Top row.
    pub y: u32,
    /// Width in pixels.
    pub w: u32,
    /// Height in pixels.
    pub h: u32,
}

impl BBox {
    /// The box as `[x, y, w, h]`.
    pub fn xywh(&self) -> [u32; 4] {
        [self.x, self.y, self.w, self.h]
    }

    /// The box as `[x0, y0, x1, y1]` with exclusive right and bottom edges.
    pub fn xyxy(&self) -> [u32; 4] {
        [self.x, self.y, self.x + self.w, self.y + self.h]
    }
}

/// Incremental tight-box accumulator.
#[derive(Debug, Clone, Copy)]
struct BoxAcc {
    x0: usize,
    y0: usize,
    x1: usize,
    y1: usize,
}

impl BoxAcc {
    fn new(x: usize, y: usize) -> Self {
        BoxAcc {
            x0: x,
            y0: y,
            x1: x,
            y1: y,
        }
    }

    fn add(&mut self, x: usize, y: usize) {
        self.x0 = self.x0.min(x);
        self.y0 = self.y0.min(y);
        self.x1 = self.x1.max(x);
        self.y1 = self.y1.max(y);
    }

    fn bbox(&self) -> BBox {
        BBox {
            x: self.x0 as u32,
            y: self.y0 as u32,
            w: (self.x1 - self.x0 + 1) as u32,
            h: (self.y1 - self.y0 + 1) as u32,
        }
    }
}

/// Source index of nearest-neighbour resampling with pixel-centre alignment (PIL `NEAREST`).
pub(crate) fn nearest_index(dst: usize, src_len: usize, dst_len: usize) -> usize {
    let s = ((dst as f64 + 0.5) * src_len as f64 / dst_len as f64).floor() as usize;
    s.min(src_len - 1)
}

/// A binary mask stored row-major.
#[derive(Clone, PartialEq, Eq)]
pub struct BinaryMask {
    width: usize,
    height: usize,
    data: Vec<bool>,
}

impl std::fmt::Debug for BinaryMask {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "BinaryMask({}x{}, area {})",
            self.width,
            self.height,
            self.area()
        )
    }
}

impl BinaryMask {
    /// An empty (all false) mask.
    pub fn new(width: usize, height: usize) -> Self {
        BinaryMask {
            width,
            height,
            data: vec![false; width * height],
        }
    }

    /// A mask from row-major data; fails if the length is not `width * height`.
    pub fn from_vec(width: usize, height: usize, data: Vec<bool>) -> Result<Self> {
        if data.len() != width * height {
            return Err(Error::invalid(format!(
                "mask data has {} values, expected {}x{} = {}",
                data.len(),
                width,
                height,
                width * height
            )));
        }
        Ok(BinaryMask {
            width,
            height,
            data,
        })
    }

    /// A mask from a predicate evaluated at every pixel `(x, y)`.
    pub fn from_fn(width: usize, height: usize, f: impl Fn(usize, usize) -> bool) -> Self {
        let mut data = Vec::with_capacity(width * height);
        for y in 0..height {
            for x in 0..width {
                data.push(f(x, y));
            }
        }
        BinaryMask {
            width,
            height,
            data,
        }
    }

    /// Width in pixels.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Height in pixels.
    pub fn height(&self) -> usize {
        self.height
    }

    /// Row-major pixel values.
    pub fn data(&self) -> &[bool] {
        &self.data
    }

    /// Mutable row-major pixel values.
    pub fn data_mut(&mut self) -> &mut [bool] {
        &mut self.data
    }

    /// The value at `(x, y)`.
    pub fn get(&self, x: usize, y: usize) -> bool {
        self.data[y * self.width + x]
    }

    /// Sets the value at `(x, y)`.
    pub fn set(&mut self, x: usize, y: usize, v: bool) {
        self.data[y * self.width + x] = v;
    }

    /// Number of foreground pixels.
    pub fn area(&self) -> usize {
        self.data.iter().filter(|&&v| v).count()
    }

    /// Whether no pixel is set.
    pub fn is_empty(&self) -> bool {
        !self.data.iter().any(|&v| v)
    }

    /// Tight bounding box of the foreground, `None` if empty.
    pub fn bbox(&self) -> Option<BBox> {
        let mut acc: Option<BoxAcc> = None;
        for (i, _) in self.data.iter().enumerate().filter(|(_, &v)| v) {
            let (x, y) = (i % self.width, i / self.width);
            match acc.as_mut() {
                Some(a) => a.add(x, y),
                None => acc = Some(BoxAcc::new(x, y)),
            }
        }
        acc.map(|a| a.bbox())
    }

    fn check_same_size(&self, other: &BinaryMask) -> Result<()> {
        if self.width != other.width || self.height != other.height {
            return Err(Error::invalid(format!(
                "mask sizes differ: {}x{} vs {}x{}",
                self.width, self.height, other.width, other.height
            )));
        }
        Ok(())
    }

    /// Number of pixels set in both masks.
    pub fn intersection(&self, other: &BinaryMask) -> Result<usize> {
        self.check_same_size(other)?;
        Ok(self
            .data
            .iter()
            .zip(&other.data)
            .filter(|(a, b)| **a && **b)
            .count())
    }

    /// Intersection over union; 0 when both masks are empty.
    pub fn iou(&self, other: &BinaryMask) -> Result<f64> {
        let inter = self.intersection(other)?;
        let union = self.area() + other.area() - inter;
        Ok(if union == 0 {
            0.0
        } else {
            inter as f64 / union as f64
        })
    }

    /// Sets every pixel that is set in `other`.
    pub fn union_with(&mut self, other: &BinaryMask) -> Result<()> {
        self.check_same_size(other)?;
        for (a, b) in self.data.iter_mut().zip(&other.data) {
            *a |= *b;
        }
        Ok(())
    }

    /// Nearest-neighbour resize (pixel-centre aligned, as PIL `NEAREST`).
    pub fn resize_nearest(&self, width: usize, height: usize) -> BinaryMask {
        let xs: Vec<usize> = (0..width)
            .map(|x| nearest_index(x, self.width, width))
            .collect();
        BinaryMask::from_fn(width, height, |x, y| {
            self.get(xs[x], nearest_index(y, self.height, height))
        })
    }
}

/// A map of segment ids, row-major; 0 is background. Segments never overlap.
#[derive(Clone, PartialEq, Eq)]
pub struct IdMap {
    width: usize,
    height: usize,
    data: Vec<ObjectId>,
}

impl std::fmt::Debug for IdMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "IdMap({}x{}, ids {:?})",
            self.width,
            self.height,
            self.ids()
        )
    }
}

impl IdMap {
    /// An all-background map.
    pub fn new(width: usize, height: usize) -> Self {
        IdMap {
            width,
            height,
            data: vec![0; width * height],
        }
    }

    /// A map from row-major ids; fails if the length is not `width * height`.
    pub fn from_vec(width: usize, height: usize, data: Vec<ObjectId>) -> Result<Self> {
        if data.len() != width * height {
            return Err(Error::invalid(format!(
                "id map has {} values, expected {}x{} = {}",
                data.len(),
                width,
                height,
                width * height
            )));
        }
        Ok(IdMap {
            width,
            height,
            data,
        })
    }

    /// Width in pixels.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Height in pixels.
    pub fn height(&self) -> usize {
        self.height
    }

    /// Row-major ids.
    pub fn data(&self) -> &[ObjectId] {
        &self.data
    }

    /// Mutable row-major ids.
    pub fn data_mut(&mut self) -> &mut [ObjectId] {
        &mut self.data
    }

    /// The id at `(x, y)`.
    pub fn get(&self, x: usize, y: usize) -> ObjectId {
        self.data[y * self.width + x]
    }

    /// Sets the id at `(x, y)`.
    pub fn set(&mut self, x: usize, y: usize, id: ObjectId) {
        self.data[y * self.width + x] = id;
    }

    /// The sorted distinct non-zero ids present.
    pub fn ids(&self) -> Vec<ObjectId> {
        self.areas().into_keys().collect()
    }

    /// Pixel count of every non-zero id present.
    pub fn areas(&self) -> BTreeMap<ObjectId, usize> {
        let mut areas = BTreeMap::new();
        // Count runs of equal ids so the map is touched once per run, not once per pixel.
        for run in self.data.chunk_by(|a, b| a == b) {
            if run[0] != 0 {
                *areas.entry(run[0]).or_insert(0) += run.len();
            }
        }
        areas
    }

    /// Tight boxes of every non-zero id present.
    pub fn bboxes(&self) -> BTreeMap<ObjectId, BBox> {
        let mut acc: BTreeMap<ObjectId, BoxAcc> = BTreeMap::new();
        for (i, &id) in self.data.iter().enumerate().filter(|(_, &id)| id != 0) {
            let (x, y) = (i % self.width, i / self.width);
            acc.entry(id)
                .and_modify(|a| a.add(x, y))
                .or_insert_with(|| BoxAcc::new(x, y));
        }
        acc.into_iter().map(|(id, a)| (id, a.bbox())).collect()
    }

    /// The binary mask of one id.
    pub fn mask(&self, id: ObjectId) -> BinaryMask {
        BinaryMask {
            width: self.width,
            height: self.height,
            data: self.data.iter().map(|&v| v == id).collect(),
        }
    }

    /// Writes `id` wherever `mask` is set.
    pub fn paint(&mut self, mask: &BinaryMask, id: ObjectId) -> Result<()> {
        if mask.width != self.width || mask.height != self.height {
            return Err(Error::invalid(format!(
                "cannot paint a {}x{} mask into a {}x{} id map",
                mask.width, mask.height, self.width, self.height
            )));
        }
        for (d, &m) in self.data.iter_mut().zip(&mask.data) {
            if m {
                *d = id;
            }
        }
        Ok(())
    }

    /// Replaces every id through `f` (0 stays 0 unless `f` says otherwise).
    pub fn remap(&self, f: impl Fn(ObjectId) -> ObjectId) -> IdMap {
        IdMap {
            width: self.width,
            height: self.height,
            data: self.data.iter().map(|&v| f(v)).collect(),
        }
    }

    /// Nearest-neighbour resize (pixel-centre aligned, as PIL `NEAREST`).
    pub fn resize_nearest(&self, width: usize, height: usize) -> IdMap {
        if width == self.width && height == self.height {
            return self.clone();
        }
        let xs: Vec<usize> = (0..width)
            .map(|x| nearest_index(x, self.width, width))
            .collect();
        let mut data = Vec::with_capacity(width * height);
        for y in 0..height {
            let row = nearest_index(y, self.height, height) * self.width;
            data.extend(xs.iter().map(|&x| self.data[row + x]));
        }
        IdMap {
            width,
            height,
            data,
        }
    }
}

/// Category names by category id ([`SegmentInfo::category_id`]).
pub type CategoryNames = BTreeMap<u32, String>;

/// What is known about one segment besides its pixels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SegmentInfo {
    /// The segment id (non-zero), as written in the id map.
    pub id: ObjectId,
    /// Category, if the segmenter assigns one.
    #[serde(default)]
    pub category_id: Option<u32>,
    /// Confidence, if the segmenter gives one.
    #[serde(default)]
    pub score: Option<f32>,
    /// Whether the segment is a "thing" (countable) rather than "stuff"; `None` if unknown.
    #[serde(default)]
    pub isthing: Option<bool>,
}

impl SegmentInfo {
    /// A segment with an id and nothing else known.
    pub fn new(id: ObjectId) -> Self {
        SegmentInfo {
            id,
            category_id: None,
            score: None,
            isthing: None,
        }
    }
}

/// A non-overlapping segmentation of one frame: an id map plus information per segment.
#[derive(Debug, Clone, PartialEq)]
pub struct Segmentation {
    /// Which segment covers each pixel.
    pub map: IdMap,
    /// One entry per segment id, in the segmenter's order.
    pub segments: Vec<SegmentInfo>,
}

impl Segmentation {
    /// An empty segmentation of the given size.
    pub fn empty(width: usize, height: usize) -> Self {
        Segmentation {
            map: IdMap::new(width, height),
            segments: Vec::new(),
        }
    }

    /// A segmentation whose segments are the ids present in `map`, with nothing else known.
    pub fn from_map(map: IdMap) -> Self {
        let segments = map.ids().into_iter().map(SegmentInfo::new).collect();
        Segmentation { map, segments }
    }

    /// Checks that ids are non-zero and unique, and that listed ids and map ids agree.
    pub fn validate(&self) -> Result<()> {
        let mut listed = std::collections::BTreeSet::new();
        for s in &self.segments {
            if s.id == 0 {
                return Err(Error::invalid("segment id 0 is reserved for background"));
            }
            if !listed.insert(s.id) {
                return Err(Error::invalid(format!(
                    "segment id {} is listed twice",
                    s.id
                )));
            }
        }
        let present = self.map.areas();
        if let Some(id) = listed.iter().find(|id| !present.contains_key(id)) {
            return Err(Error::invalid(format!(
                "segment id {id} is listed but absent from the mask"
            )));
        }
        if let Some(id) = present.keys().find(|id| !listed.contains(id)) {
            return Err(Error::invalid(format!(
                "mask contains id {id}, which is not listed in the segment information"
            )));
        }
        Ok(())
    }

    /// The information of segment `id`, if listed.
    pub fn info(&self, id: ObjectId) -> Option<&SegmentInfo> {
        self.segments.iter().find(|s| s.id == id)
    }

    /// Nearest-neighbour resize of the map; segments that vanish are dropped.
    pub fn resize_nearest(&self, width: usize, height: usize) -> Segmentation {
        Segmentation::of_present(self.map.resize_nearest(width, height), &self.segments)
    }

    /// `map` with those of `segments` (in order) whose ids have pixels in it.
    pub fn of_present<'a>(
        map: IdMap,
        segments: impl IntoIterator<Item = &'a SegmentInfo>,
    ) -> Segmentation {
        let present = map.areas();
        let segments = segments
            .into_iter()
            .filter(|s| present.contains_key(&s.id))
            .cloned()
            .collect();
        Segmentation { map, segments }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn square(w: usize, h: usize, x0: usize, y0: usize, s: usize) -> BinaryMask {
        BinaryMask::from_fn(w, h, |x, y| x >= x0 && x < x0 + s && y >= y0 && y < y0 + s)
    }

    #[test]
    fn iou_area_and_box() {
        let a = square(10, 8, 1, 1, 4); // 16 px
        let b = square(10, 8, 3, 3, 4); // 16 px, overlap 2x2
        assert_eq!(a.area(), 16);
        assert_eq!(a.intersection(&b).unwrap(), 4);
        assert!((a.iou(&b).unwrap() - 4.0 / 28.0).abs() < 1e-12);
        assert_eq!(
            b.bbox(),
            Some(BBox {
                x: 3,
                y: 3,
                w: 4,
                h: 4
            })
        );
        assert_eq!(BinaryMask::new(3, 3).bbox(), None);
        assert_eq!(
            BinaryMask::new(3, 3).iou(&BinaryMask::new(3, 3)).unwrap(),
            0.0
        );
        assert!(a.iou(&BinaryMask::new(3, 3)).is_err());
    }

    #[test]
    fn id_map_areas_boxes_and_paint_order() {
        let mut m = IdMap::new(6, 4);
        m.paint(&square(6, 4, 0, 0, 3), 5).unwrap();
        m.paint(&square(6, 4, 2, 1, 2), 9).unwrap();
        let areas = m.areas();
        assert_eq!(areas[&5], 9 - 2);
        assert_eq!(areas[&9], 4);
        assert_eq!(m.ids(), vec![5, 9]);
        assert_eq!(m.bboxes()[&9].xyxy(), [2, 1, 4, 3]);
    }

    #[test]
    fn nearest_resize_matches_pixel_centres() {
        // 4 columns -> 2: centres 1.0 and 3.0 pick source columns 1 and 3.
        let m = IdMap::from_vec(4, 1, vec![1, 2, 3, 4]).unwrap();
        assert_eq!(m.resize_nearest(2, 1).data(), &[2, 4]);
        // 2 -> 4 repeats each source pixel twice.
        let m = IdMap::from_vec(2, 1, vec![7, 8]).unwrap();
        assert_eq!(m.resize_nearest(4, 1).data(), &[7, 7, 8, 8]);
    }

    #[test]
    fn validation_names_the_bad_id() {
        let map = IdMap::from_vec(3, 1, vec![0, 4, 4]).unwrap();
        let mut seg = Segmentation::from_map(map);
        assert!(seg.validate().is_ok());
        seg.segments.push(SegmentInfo::new(7));
        let err = seg.validate().unwrap_err().to_string();
        assert!(err.contains("7") && err.contains("absent"), "{err}");
        seg.segments.truncate(0);
        let err = seg.validate().unwrap_err().to_string();
        assert!(err.contains("4") && err.contains("not listed"), "{err}");
    }
}
