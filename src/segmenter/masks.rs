//! Given object masks (semi-supervised video object segmentation): DAVIS layout
//! `<dir>/<frame>.png`, on the first frame or on any frames, where objects may appear.
//!
//! A grayscale PNG holding only 0 and 255 follows the DAVIS-2016 binary convention: 255 is
//! object 1 (as `deva eval davis` reads such ground truth).

use super::detections::MaskDir;
use super::{ImageSegmenter, SegmenterKind};
use crate::error::Result;
use crate::mask::{BinaryMask, Segmentation};
use crate::video::Frame;
use std::path::Path;

/// Reference masks read from a folder of palette (or grayscale, or RGB-id) PNGs; the tracker
/// follows them exactly on the frames that have one.
#[derive(Debug, Clone)]
pub struct MaskSegmenter {
    masks: MaskDir,
}

impl MaskSegmenter {
    /// Indexes the masks in `dir` (only `.png` files). With `resize`, masks of another size
    /// are resized (nearest) to their frame instead of failing.
    pub fn open(dir: &Path, resize: bool) -> Result<Self> {
        Ok(MaskSegmenter {
            masks: MaskDir::open(dir, false, resize)?,
        })
    }

    /// The frame names that have a mask, sorted.
    pub fn frame_names(&self) -> impl Iterator<Item = &str> {
        self.masks.names()
    }
}

impl ImageSegmenter for MaskSegmenter {
    fn name(&self) -> &str {
        "masks"
    }

    fn check_frames(&self, frames: &[String]) -> Result<()> {
        self.masks.check_frames(frames)
    }

    fn palette(&self) -> Result<Option<Vec<u8>>> {
        self.masks.first_palette()
    }

    fn kind(&self) -> SegmenterKind {
        SegmenterKind::Reference
    }

    fn segment(
        &mut self,
        frame: &Frame,
        _tracked: Option<&BinaryMask>,
    ) -> Result<Option<Segmentation>> {
        let Some((png, path)) = self.masks.read(frame)? else {
            return Ok(None);
        };
        let binary = png.palette.is_none()
            && !png.rgb_ids
            && png.map.data().iter().all(|&v| v == 0 || v == 255);
        let map = if binary {
            png.map.remap(|v| u32::from(v == 255))
        } else {
            png.map
        };
        self.masks
            .fit(Segmentation::from_map(map), path, frame)
            .map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::imageio::{davis_palette, write_palette_png};
    use crate::mask::{IdMap, SegmentInfo};
    use image::RgbImage;

    #[test]
    fn masks_are_references_with_their_palette() {
        let dir = tempfile::tempdir().unwrap();
        let mut palette = davis_palette();
        palette[3..6].copy_from_slice(&[1, 2, 3]);
        let m0 = IdMap::from_vec(2, 2, vec![0, 1, 1, 0]).unwrap();
        let m5 = IdMap::from_vec(2, 2, vec![0, 0, 4, 0]).unwrap();
        write_palette_png(&dir.path().join("00000.png"), &m0, &palette).unwrap();
        write_palette_png(&dir.path().join("00005.png"), &m5, &davis_palette()).unwrap();

        let mut seg = MaskSegmenter::open(dir.path(), false).unwrap();
        assert_eq!(seg.kind(), SegmenterKind::Reference);
        assert_eq!(seg.palette().unwrap().unwrap()[3..6], [1, 2, 3]);
        assert_eq!(seg.frame_names().collect::<Vec<_>>(), ["00000", "00005"]);
        let frame = |name: &str, w: u32| Frame {
            index: 0,
            name: name.into(),
            image: RgbImage::new(w, 2).into(),
        };
        let s = seg.segment(&frame("00005", 2), None).unwrap().unwrap();
        assert_eq!(s.map, m5);
        assert_eq!(s.segments, vec![SegmentInfo::new(4)]);
        assert!(seg.segment(&frame("00001", 2), None).unwrap().is_none());
        let e = seg
            .segment(&frame("00000", 3), None)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("00000.png") && e.contains("2x2") && e.contains("3x2"),
            "{e}"
        );

        // A DAVIS-2016 binary mask (grayscale 0 / 255): 255 is object 1; other grayscale
        // values are ids.
        let gray = tempfile::tempdir().unwrap();
        let pixels = |v: u8| image::GrayImage::from_vec(2, 1, vec![0, v]).unwrap();
        pixels(255).save(gray.path().join("00000.png")).unwrap();
        pixels(7).save(gray.path().join("00001.png")).unwrap();
        let mut g = MaskSegmenter::open(gray.path(), false).unwrap();
        let ids = |g: &mut MaskSegmenter, name: &str| {
            let f = Frame {
                index: 0,
                name: name.into(),
                image: RgbImage::new(2, 1).into(),
            };
            g.segment(&f, None).unwrap().unwrap().map.data().to_vec()
        };
        assert_eq!(ids(&mut g, "00000"), [0, 1]);
        assert_eq!(ids(&mut g, "00001"), [0, 7]);

        std::fs::write(dir.path().join("00001.json"), "[]").unwrap();
        let e = MaskSegmenter::open(dir.path(), false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("00001.json"), "{e}");
    }
}
