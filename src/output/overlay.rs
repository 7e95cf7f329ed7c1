//! Overlay frames for viewing results: objects blended at alpha 0.5 in a colour per id, with
//! their box and a `"<category> <score>"` label.

use super::font::{draw_text, fill_rect, text_size};
use super::{CategoryNames, FrameResult, Layout, OutputOptions, Sink};
use crate::error::{Error, Result};
use crate::imageio::{davis_palette, id_to_rgb, write_jpeg};
use crate::mask::{ObjectId, SegmentInfo, Segmentation};
use crate::video::VideoFileWriter;
use image::RgbImage;

/// The colour of object `id`: its palette entry for ids below 256 (when the palette has one),
/// otherwise the RGB encoding of the id (as DEVA's visualisation of long ids).
pub fn colour(id: ObjectId, palette: &[u8]) -> [u8; 3] {
    let i = id as usize * 3;
    if id < 256 && i + 3 <= palette.len() {
        [palette[i], palette[i + 1], palette[i + 2]]
    } else {
        id_to_rgb(id)
    }
}

/// The label of a segment: the category name (from `names`, else its number, else the id)
/// followed by the score with two decimals when known.
pub fn label(info: &SegmentInfo, names: &CategoryNames) -> String {
    let category = match info.category_id {
        Some(c) => names.get(&c).cloned().unwrap_or_else(|| c.to_string()),
        None => format!("id {}", info.id),
    };
    match info.score {
        Some(s) => format!("{category} {s:.2}"),
        None => category,
    }
}

/// Draws `seg` over `image` (same size): object pixels become (pixel + colour) / 2, then each
/// listed segment gets a label above its box (inside when at the top edge) and, for things
/// (and stuff too with `stuff_boxes`), the box outline.
pub fn render(
    image: &RgbImage,
    seg: &Segmentation,
    palette: &[u8],
    names: &CategoryNames,
    stuff_boxes: bool,
) -> Result<RgbImage> {
    let (w, h) = (seg.map.width(), seg.map.height());
    if (image.width() as usize, image.height() as usize) != (w, h) {
        return Err(Error::invalid(format!(
            "overlay: image is {}x{} but the segmentation is {w}x{h}",
            image.width(),
            image.height()
        )));
    }
    let mut out = image.clone();
    for (p, &id) in out.pixels_mut().zip(seg.map.data()) {
        if id != 0 {
            let c = colour(id, palette);
            for (v, c) in p.0.iter_mut().zip(c) {
                *v = ((*v as u16 + c as u16) / 2) as u8;
            }
        }
    }
    let scale = w.min(h).div_ceil(360).max(1);
    let t = scale as i64;
    let boxes = seg.map.bboxes();
    for info in &seg.segments {
        let Some(b) = boxes.get(&info.id) else {
            continue;
        };
        let c = colour(info.id, palette);
        let (x, y, bw, bh) = (b.x as i64, b.y as i64, b.w as i64, b.h as i64);
        if stuff_boxes || info.isthing != Some(false) {
            fill_rect(&mut out, x, y, bw, t, c);
            fill_rect(&mut out, x, y + bh - t, bw, t, c);
            fill_rect(&mut out, x, y, t, bh, c);
            fill_rect(&mut out, x + bw - t, y, t, bh, c);
        }

        let text = label(info, names);
        let (tw, th) = text_size(&text, scale);
        let pad = scale as i64;
        let lh = th as i64 + 2 * pad;
        let ly = if y >= lh { y - lh } else { y };
        fill_rect(&mut out, x, ly, tw as i64 + 2 * pad, lh, c);
        let luminance = 299 * c[0] as u32 + 587 * c[1] as u32 + 114 * c[2] as u32;
        let ink = if luminance > 128_000 {
            [0, 0, 0]
        } else {
            [255, 255, 255]
        };
        draw_text(&mut out, x + pad, ly + pad, &text, scale, ink);
    }
    Ok(out)
}

/// Writes overlay JPEGs and/or an overlay mp4 of every frame.
pub struct OverlaySink {
    opts: OutputOptions,
    layout: Layout,
    palette: Vec<u8>,
    video: Option<VideoFileWriter>,
}

impl OverlaySink {
    /// Overlays as `opts` asks for (`overlay`: JPEGs, `overlay_video`: an mp4 at `fps`).
    pub fn new(opts: &OutputOptions) -> Result<Self> {
        if opts.overlay_video && !(opts.fps.is_finite() && opts.fps > 0.0) {
            return Err(Error::invalid(format!(
                "overlay video frame rate must be positive, not {}",
                opts.fps
            )));
        }
        if opts.overlay_video && !crate::video::ffmpeg::available() {
            return Err(Error::External {
                program: "ffmpeg".into(),
                message: format!(
                    "not found, and the overlay video needs it; {}",
                    crate::video::ffmpeg::INSTALL_HINT
                ),
            });
        }
        super::check_destination(&opts.dir)?;
        Ok(OverlaySink {
            layout: Layout::new(opts),
            palette: opts.palette.clone().unwrap_or_else(davis_palette),
            opts: opts.clone(),
            video: None,
        })
    }
}

impl Sink for OverlaySink {
    fn write(&mut self, result: &FrameResult) -> Result<()> {
        let seg = &result.segmentation;
        let blended = render(
            &result.image,
            seg,
            &self.palette,
            &self.opts.category_names,
            self.opts.stuff_boxes,
        )
        .map_err(|e| Error::invalid(format!("frame {}: {e}", result.name)))?;
        if self.opts.overlay {
            let path = self.layout.overlays.join(format!("{}.jpg", result.name));
            write_jpeg(&path, &blended, 90)?;
        }
        if self.opts.overlay_video {
            if self.video.is_none() {
                self.video = Some(VideoFileWriter::create(
                    &self.layout.video,
                    seg.map.width(),
                    seg.map.height(),
                    self.opts.fps,
                )?);
            }
            self.video.as_mut().expect("created").write(&blended)?;
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<()> {
        match self.video.take() {
            Some(v) => v.finish(),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::imageio::davis_palette;
    use crate::mask::IdMap;
    use image::Rgb;

    #[test]
    fn colours_and_labels() {
        let pal = davis_palette();
        assert_eq!(colour(1, &pal), [128, 0, 0]);
        assert_eq!(colour(300, &pal), [44, 1, 0]);
        assert_eq!(colour(5, &[]), [5, 0, 0]);
        let mut s = SegmentInfo::new(4);
        let none = CategoryNames::new();
        assert_eq!(label(&s, &none), "id 4");
        s.category_id = Some(7);
        s.score = Some(0.876);
        assert_eq!(label(&s, &none), "7 0.88");
        let names = CategoryNames::from([(1, "person".into()), (7, "horse".into())]);
        assert_eq!(label(&s, &names), "horse 0.88");
    }

    #[test]
    fn stuff_segments_get_no_box_unless_asked() {
        let n = 40;
        let mut map = IdMap::new(n, n);
        for y in 10..30 {
            for x in 10..30 {
                map.set(x, y, 2);
            }
        }
        let mut seg = Segmentation::from_map(map);
        seg.segments[0].isthing = Some(false);
        let image = RgbImage::from_pixel(n as u32, n as u32, Rgb([0, 0, 0]));
        let pal = davis_palette();
        // The right edge of the box (column 29, below the label) keeps the blended colour
        // without a box, and takes the object's colour with one.
        let blended = [pal[6] / 2, pal[7] / 2, pal[8] / 2];
        let edge = |stuff_boxes| {
            render(&image, &seg, &pal, &CategoryNames::new(), stuff_boxes)
                .unwrap()
                .get_pixel(29, 25)
                .0
        };
        assert_eq!(edge(false), blended);
        assert_eq!(edge(true), [pal[6], pal[7], pal[8]]);
    }

    #[test]
    fn blends_objects_and_draws_boxes() {
        // 400×400 so that the label goes above the box; object 1 is a square at 100..200.
        let n = 400;
        let mut map = IdMap::new(n, n);
        for y in 100..200 {
            for x in 100..200 {
                map.set(x, y, 1);
            }
        }
        let seg = Segmentation::from_map(map);
        let image = RgbImage::from_pixel(n as u32, n as u32, Rgb([100, 50, 201]));
        let pal = davis_palette();
        let out = render(&image, &seg, &pal, &CategoryNames::new(), false).unwrap();
        // Background untouched, object interior blended (floor of the mean), box edge in
        // the object's colour.
        assert_eq!(out.get_pixel(50, 300).0, [100, 50, 201]);
        assert_eq!(out.get_pixel(150, 150).0, [114, 25, 100]);
        assert_eq!(out.get_pixel(100, 150).0, [128, 0, 0]);
        assert_eq!(out.get_pixel(199, 199).0, [128, 0, 0]);
        // The label sits above the box on a background of the object's colour.
        assert_eq!(out.get_pixel(100, 99).0, [128, 0, 0]);
        let label_area =
            (100..140).any(|x| (80..100).any(|y| out.get_pixel(x, y).0 == [255, 255, 255]));
        assert!(label_area, "white label text above the box");

        let e = render(
            &RgbImage::new(3, 3),
            &seg,
            &pal,
            &CategoryNames::new(),
            false,
        )
        .unwrap_err();
        assert!(e.to_string().contains("3x3"), "{e}");
    }
}
