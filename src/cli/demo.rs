//! `deva demo`: the whole pipeline on a generated clip or the user's video with the default,
//! small models: U²-Netp saliency proposals, in-clip consensus, optical-flow propagation.

use super::args::SegmenterName;
use super::track::{self, TrackArgs};
use anyhow::Context;
use clap::Parser;
use deva::imageio::write_jpeg;
use deva::models::Presence;
use deva::video::synthetic::SyntheticClip;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// Arguments of `deva demo`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  deva demo                      # generated 40-frame clip, results in demo_output/
  deva demo my-video.mp4 --out my-demo/

It runs `deva track` with --segmenter saliency:u2netp --propagator flow --temporal semionline
--format demo --overlay [--overlay-video] and prints that command.")]
pub struct DemoArgs {
    /// Input video file or folder of frames. [default: a generated 40-frame clip of a moving
    /// object, written to <out>/input/]
    pub input: Option<PathBuf>,

    /// Output folder: Annotations/ (RGB-id PNGs), pred.json, Visualizations/ (overlay JPEGs)
    /// and Visualizations.mp4 (when ffmpeg is installed).
    #[arg(long, short, value_name = "DIR", default_value = "demo_output")]
    pub out: PathBuf,

    /// Segmenter (see `deva track --help`).
    #[arg(long, value_name = "NAME", default_value = "saliency:u2netp")]
    pub segmenter: SegmenterName,

    /// Length of the generated clip in frames (ignored with an input).
    #[arg(long, value_name = "N", default_value_t = deva::video::synthetic::DEMO_FRAMES)]
    pub frames: usize,

    /// Folder of model weights; a missing model is fetched into it. [default: $DEVA_MODELS if
    /// set, else ~/.cache/deva/models]
    #[arg(long, value_name = "DIR")]
    pub models_dir: Option<PathBuf>,
}

/// `deva track` arguments parsed from a command line.
#[derive(Debug, Parser)]
struct TrackCommand {
    #[command(flatten)]
    args: TrackArgs,
}

/// Writes the generated clip's frames as JPEGs into `dir`.
fn write_clip(dir: &Path, frames: usize) -> anyhow::Result<()> {
    if frames == 0 {
        anyhow::bail!("--frames must be at least 1");
    }
    let clip = SyntheticClip {
        frames,
        ..SyntheticClip::default()
    };
    for t in 0..clip.frames {
        write_jpeg(&dir.join(format!("{t:05}.jpg")), &clip.image(t), 95)?;
    }
    eprintln!(
        "generated a {}-frame {}x{} clip in {}",
        clip.frames,
        clip.width,
        clip.height,
        dir.display()
    );
    Ok(())
}

/// The model `segmenter` needs: fetched into the store's folder when missing or corrupt.
fn ensure_model(segmenter: SegmenterName, store: &deva::ModelStore) -> anyhow::Result<()> {
    let SegmenterName::Saliency(model) = segmenter else {
        anyhow::bail!("deva demo runs the saliency segmenters only");
    };
    let entry = store.entry(model.manifest_name())?;
    if entry.presence(store.dir()) != Presence::Present {
        super::models::fetch_one(entry, store.dir())?;
    }
    Ok(())
}

/// Runs `deva demo`.
pub fn run(args: DemoArgs) -> anyhow::Result<()> {
    let store = super::track::model_store(args.models_dir.as_deref())?;
    ensure_model(args.segmenter, &store)?;
    let input = match &args.input {
        Some(p) => p.clone(),
        None => {
            let dir = args.out.join("input");
            write_clip(&dir, args.frames).context("writing the generated clip")?;
            dir
        }
    };
    let video = deva::video::ffmpeg::available();
    let SegmenterName::Saliency(model) = args.segmenter else {
        anyhow::bail!("deva demo runs the saliency segmenters only");
    };
    let mut cmd: Vec<OsString> = vec!["deva track".into(), input.clone().into()];
    for a in [
        "--out",
        &args.out.to_string_lossy(),
        "--segmenter",
        &format!("saliency:{}", model.manifest_name()),
        "--propagator",
        "flow",
        "--temporal",
        "semionline",
        "--format",
        "demo",
        "--overlay",
    ] {
        cmd.push(a.into());
    }
    if video {
        cmd.push("--overlay-video".into());
    }
    cmd.push("--models-dir".into());
    cmd.push(store.dir().into());
    let shown: Vec<String> = cmd
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    eprintln!("running: {}", shown.join(" "));
    let track = TrackCommand::try_parse_from(&cmd)?;
    track::run(track.args)?;
    let out = &args.out;
    eprintln!("masks:    {}", out.join("Annotations").display());
    eprintln!("segments: {}", out.join("pred.json").display());
    eprintln!("overlays: {}", out.join("Visualizations").display());
    if video {
        eprintln!("video:    {}", out.join("Visualizations.mp4").display());
    } else {
        eprintln!(
            "no overlay video: ffmpeg/ffprobe are not installed (see README.md); the overlay \
             frames are in {}",
            out.join("Visualizations").display()
        );
    }
    Ok(())
}
