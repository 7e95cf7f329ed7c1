//! Track the objects of a folder of frames from masks given on its first frame (DAVIS
//! layout), carried by the weight-free optical-flow propagator; palette PNGs per frame.
//!
//! ```sh
//! cargo run --release --example track_folder -- FRAMES MASKS OUT
//! ```
//!
//! `cargo test` runs it on a small generated clip.

use deva::output::{self, OutputFormat, OutputOptions};
use deva::segmenter::FolderSpec;
use deva::{propagator, segmenter, Config, ModelStore, SegmenterSpec, Tracker};
use std::path::Path;
use std::sync::atomic::AtomicBool;

/// Tracks `frames` (a folder of images or a video file) from the masks in `masks` into
/// `out/<video>/<frame>.png`; returns the number of frames written.
fn track_folder(frames: &Path, masks: &Path, out: &Path) -> deva::Result<usize> {
    let mut config = Config::default();
    config.tracker.temporal = deva::config::Temporal::Vos;
    config.segmenter = Some(SegmenterSpec::Masks(FolderSpec {
        dir: masks.to_path_buf(),
        resize_masks: false,
    }));
    // Nothing is downloaded: given masks and optical flow need no weights.
    let store = ModelStore::new(std::env::temp_dir())?;
    let device = candle_core::Device::Cpu;
    let seg = segmenter::build(config.segmenter.as_ref().unwrap(), &store, &device)?;
    let prop = propagator::build(&config.propagator, &store, &device)?;
    let mut tracker = Tracker::new(&config, seg, prop)?;
    let mut source = deva::video::open(frames)?;
    let video = deva::video::video_name(frames);
    let mut sink = output::writers(&OutputOptions::new(out, OutputFormat::Davis, &video))?;
    let stats = output::run(
        source.as_mut(),
        &mut tracker,
        &mut sink,
        &AtomicBool::new(false),
        &mut |_| {},
    )?;
    Ok(stats.frames_written)
}

fn main() -> deva::Result<()> {
    // The allocator settings of the `deva` command (see `deva::heap`).
    deva::heap::keep_freed_memory();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [frames, masks, out] = args.as_slice() else {
        eprintln!("usage: track_folder FRAMES MASKS OUT");
        std::process::exit(2);
    };
    let n = track_folder(Path::new(frames), Path::new(masks), Path::new(out))?;
    println!("wrote {n} frames under {out}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use deva::video::synthetic::SyntheticClip;

    #[test]
    fn tracks_a_generated_clip() {
        let dir = tempfile::tempdir().unwrap();
        let (frames, masks, out) = (
            dir.path().join("clip"),
            dir.path().join("masks"),
            dir.path().join("out"),
        );
        std::fs::create_dir_all(&frames).unwrap();
        std::fs::create_dir_all(&masks).unwrap();
        let clip = SyntheticClip {
            frames: 8,
            width: 160,
            height: 96,
        };
        for t in 0..clip.frames {
            deva::imageio::write_jpeg(&frames.join(format!("{t:05}.jpg")), &clip.image(t), 95)
                .unwrap();
        }
        let mut first = deva::mask::IdMap::new(clip.width, clip.height);
        first.paint(&clip.mask(0), 1).unwrap();
        let palette = deva::imageio::davis_palette();
        deva::imageio::write_palette_png(&masks.join("00000.png"), &first, &palette).unwrap();

        assert_eq!(track_folder(&frames, &masks, &out).unwrap(), clip.frames);
        let last = clip.frames - 1;
        let png = deva::imageio::read_index_png(&out.join(format!("clip/{last:05}.png"))).unwrap();
        assert_eq!(png.map.ids(), vec![1]);
        let iou = png.map.mask(1).iou(&clip.mask(last)).unwrap();
        assert!(iou > 0.7, "IoU with the true mask on the last frame: {iou}");
    }
}
