//! The library API in one page: start tracking from a mask held in memory, add a second
//! object at frame 10, and read each finished frame back, without any file.
//!
//! ```sh
//! cargo run --release --example add_object
//! ```

use deva::config::Temporal;
use deva::mask::{IdMap, SegmentInfo};
use deva::propagator::FlowPropagator;
use deva::segmenter::PromptsOnly;
use deva::video::synthetic::SyntheticClip;
use deva::{Config, Frame, Prompt, Segmentation, TrackedFrame, Tracker};

/// The second object: a fixed rectangle of the background, given at frame 10.
const SECOND: (usize, usize, usize, usize) = (4, 4, 24, 16);

/// Tracks a generated clip: object 1 from frame 0's true mask, object 2 from frame 10.
fn track(clip: &SyntheticClip) -> deva::Result<Vec<TrackedFrame>> {
    let mut config = Config::default();
    config.tracker.temporal = Temporal::Vos;
    config.input.size = -1;
    let flow = FlowPropagator::new(Default::default())?;
    let mut tracker = Tracker::new(&config, Box::new(PromptsOnly), Some(Box::new(flow)))?;

    let mut first = IdMap::new(clip.width, clip.height);
    first.paint(&clip.mask(0), 1)?;
    tracker.add_prompt(0, Prompt::Masks(Segmentation::from_map(first)))?;

    let (x0, y0, w, h) = SECOND;
    let second = IdMap::from_vec(
        clip.width,
        clip.height,
        (0..clip.width * clip.height)
            .map(|p| {
                let (x, y) = (p % clip.width, p / clip.width);
                u32::from((x0..x0 + w).contains(&x) && (y0..y0 + h).contains(&y)) * 2
            })
            .collect(),
    )?;
    let second = Segmentation {
        map: second,
        segments: vec![SegmentInfo::new(2)],
    };
    tracker.add_prompt(10, Prompt::Masks(second))?;

    let mut done = Vec::new();
    for t in 0..clip.frames {
        done.extend(tracker.step(Frame::new(t, format!("{t:05}"), clip.image(t)))?);
    }
    done.extend(tracker.finish()?);
    Ok(done)
}

fn main() -> deva::Result<()> {
    let clip = SyntheticClip {
        frames: 20,
        width: 160,
        height: 96,
    };
    for f in track(&clip)? {
        let seg = f.segmentation();
        println!("frame {}: objects {:?}", f.name, seg.map.ids());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_second_object_joins_at_frame_ten() {
        let clip = SyntheticClip {
            frames: 14,
            width: 160,
            height: 96,
        };
        let done = track(&clip).unwrap();
        assert_eq!(done.len(), clip.frames);
        for f in &done {
            let ids = f.segmentation().map.ids();
            let expected = if f.index < 10 { vec![1] } else { vec![1, 2] };
            assert_eq!(ids, expected, "frame {}", f.index);
            // Every finished frame carries its own image.
            assert_eq!(*f.image, clip.image(f.index));
        }
        let last = done.last().unwrap().segmentation();
        let iou = last.map.mask(1).iou(&clip.mask(clip.frames - 1)).unwrap();
        assert!(iou > 0.7, "object 1 IoU on the last frame: {iou}");
        // A prompt for a frame already tracked is refused.
        let mut config = Config::default();
        config.tracker.temporal = Temporal::Vos;
        let flow = FlowPropagator::new(Default::default()).unwrap();
        let mut tr = Tracker::new(&config, Box::new(PromptsOnly), Some(Box::new(flow))).unwrap();
        tr.step(Frame::new(0, "a", clip.image(0))).unwrap();
        let e = tr
            .add_prompt(
                0,
                Prompt::Masks(Segmentation::empty(clip.width, clip.height)),
            )
            .unwrap_err()
            .to_string();
        assert!(e.contains("frame 0") && e.contains("after"), "{e}");
    }
}
