//! `deva run`: every video of a dataset, sharded across processes, resumable; `--status`.

use super::args::FormatFlag;
use super::args::PipelineArgs;
use super::spec::resolve_config;
use super::track::{track_video, VideoJob};
use anyhow::{anyhow, bail};
use deva::dataset::shard::assign;
use deva::dataset::store::{
    config_hash, FailureRecord, ListedVideo, RunManifest, VideoRecord, TOOL_VERSION,
};
use deva::dataset::{Dataset, DatasetLayout, RunStore, Shard, VideoEntry};
use deva::output::{OutputFormat, OutputOptions, RunStats};
use deva::{video, Config, SegmenterSpec};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Instant;

const EXAMPLES: &str = "\
--detections and --init-masks name a folder with one sub-folder per video.

Examples:
  # VIPSeg val with precomputed detections (one sub-folder per video), 3 processes:
  for i in 0 1 2; do
    deva run VIPSeg_720P --layout vipseg --detections dets/ --config configs/vipseg_semionline.toml \\
        --out runs/vipseg --shard $i/3 &
  done; wait
  deva run --status runs/vipseg
  deva merge runs/vipseg --eval VIPSeg_720P
  # DAVIS-2017 val, semi-supervised from the first-frame masks, in a Kubernetes Indexed Job or
  # a Slurm job array (see deploy/):
  deva run DAVIS --layout davis --videos DAVIS/ImageSets/2017/val.txt \\
      --init-masks DAVIS/Annotations/480p --out /shared/davis17 --shard auto

Rerunning a command resumes it: finished videos are skipped, interrupted and failed ones redone.";

/// Arguments of `deva run`.
#[derive(Debug, clap::Args)]
#[command(
    group(clap::ArgGroup::new("segmenters").multiple(false)),
    after_help = EXAMPLES
)]
pub struct RunArgs {
    /// Dataset folder, arranged as --layout says. [required unless --status]
    #[arg(required_unless_present = "status")]
    pub dataset: Option<PathBuf>,

    /// Dataset layout: davis (JPEGImages/480p/<sequence>/), vipseg (images/<video>/), burst
    /// (<dataset>/<sequence>/ of a TAO frames split such as frames/val), youtube-vos
    /// (JPEGImages/<video>/) or folders (<video>/). [required unless --status]
    #[arg(long, value_name = "LAYOUT", value_parser = parse_layout, required_unless_present = "status")]
    pub layout: Option<DatasetLayout>,

    /// Only the videos named in FILE (one a line, e.g. DAVIS ImageSets/2016/val.txt), in its
    /// order. [default: every video folder, sorted by name]
    #[arg(long, value_name = "FILE")]
    pub videos: Option<PathBuf>,

    /// Output folder shared by every shard: run.json, videos/<video>/ (results and completion
    /// record); `deva merge OUT` builds the submission. [required unless --status]
    #[arg(long, short, value_name = "DIR", required_unless_present = "status")]
    pub out: Option<PathBuf>,

    /// This process's part of the videos, balanced by frame count: i/n (0-based), or auto
    /// (Kubernetes Indexed Job: JOB_COMPLETION_INDEX with JOB_COMPLETIONS set to the job's
    /// completions; Slurm job array: SLURM_ARRAY_TASK_ID, SLURM_ARRAY_TASK_MIN,
    /// SLURM_ARRAY_TASK_COUNT). [default: 0/1, every video]
    #[arg(long, value_name = "i/n|auto")]
    pub shard: Option<String>,

    /// Result format. [default: from --layout: davis and youtube-vos → davis, vipseg →
    /// vipseg, burst → burst, folders → demo]
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub format: Option<FormatFlag>,

    /// Print where the run in DIR stands (done / running / failed / pending videos per shard
    /// and overall, and the errors of failed videos), then exit. [default: off: track]
    #[arg(long, value_name = "DIR", conflicts_with_all = ["dataset", "out", "shard"])]
    pub status: Option<PathBuf>,

    #[command(flatten)]
    pub pipeline: PipelineArgs,
}

fn parse_layout(s: &str) -> Result<DatasetLayout, String> {
    s.parse().map_err(|e: deva::Error| e.to_string())
}

/// The result format of a layout.
fn default_format(layout: DatasetLayout) -> OutputFormat {
    match layout {
        DatasetLayout::Davis | DatasetLayout::YoutubeVos => OutputFormat::Davis,
        DatasetLayout::Vipseg => OutputFormat::Vipseg,
        DatasetLayout::Burst => OutputFormat::Burst,
        DatasetLayout::Folders => OutputFormat::Demo,
    }
}

/// The folder of a folder segmenter (detections, masks), if that is the segmenter.
fn segmenter_folder(config: &mut Config) -> Option<&mut PathBuf> {
    match config.segmenter.as_mut()? {
        SegmenterSpec::Detections(f) | SegmenterSpec::Masks(f) => Some(&mut f.dir),
        _ => None,
    }
}

/// Everything that decides the results: hashed into the run's config hash. Folder paths are
/// made absolute (processes of one run may start in other folders).
fn settings(config: &Config, p: &PipelineArgs, format: OutputFormat) -> anyhow::Result<Value> {
    let mut config = config.clone();
    if let Some(dir) = segmenter_folder(&mut config) {
        *dir = std::path::absolute(&*dir)?;
    }
    Ok(json!({
        "config": serde_json::to_value(&config)?,
        "foreground": p.foreground,
        "format": format,
    }))
}

/// The settings of one video: a folder segmenter reads the video's sub-folder.
fn for_video(config: &Config, video: &str) -> Config {
    let mut config = config.clone();
    if let Some(dir) = segmenter_folder(&mut config) {
        *dir = dir.join(video);
    }
    config
}

fn progress_bar(frames: usize) -> ProgressBar {
    let bar = ProgressBar::new(frames as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{bar:30} {pos}/{len} frames, {msg} [{elapsed_precise} < {eta_precise}]",
        )
        .expect("valid template"),
    );
    bar
}

/// Prints a line above the progress bar (also when the bar is hidden, as in cluster logs).
fn say(bar: &ProgressBar, line: String) {
    bar.suspend(|| eprintln!("{line}"));
}

/// Runs `deva run`.
pub fn run(args: RunArgs) -> anyhow::Result<()> {
    if let Some(out) = &args.status {
        print!("{}", RunStore::new(out).status()?);
        return Ok(());
    }
    let missing = |what: &str| anyhow!("{what} is required (unless --status)");
    let dataset = args.dataset.as_deref().ok_or_else(|| missing("DATASET"))?;
    let layout = args.layout.ok_or_else(|| missing("--layout"))?;
    let out = args.out.as_deref().ok_or_else(|| missing("--out"))?;
    let shard = match args.shard.as_deref() {
        None => Shard::ALL,
        Some("auto") => Shard::auto()?,
        Some(s) => Shard::parse(s)?,
    };
    let ds = Dataset::open(dataset, layout, args.videos.as_deref())?;
    let format = args
        .format
        .map_or(default_format(layout), OutputFormat::from);
    let config = resolve_config(&args.pipeline)?;
    let settings = settings(&config, &args.pipeline, format)?;
    let hash = config_hash(&settings);
    let store = RunStore::new(out);
    store.prepare(&RunManifest {
        tool_version: TOOL_VERSION.into(),
        dataset: std::path::absolute(dataset)?,
        layout,
        format,
        config_hash: hash.clone(),
        settings,
        shards: shard.count,
        videos: ds
            .videos
            .iter()
            .map(|v| ListedVideo {
                name: v.name.clone(),
                frames: v.frames,
            })
            .collect(),
    })?;
    let assignment = assign(&ds.frame_counts(), shard.count);
    let mine: Vec<&VideoEntry> = ds
        .videos
        .iter()
        .zip(&assignment)
        .filter(|&(_, &s)| s == shard.index)
        .map(|(v, _)| v)
        .collect();
    let frames: usize = mine.iter().map(|v| v.frames).sum();
    eprintln!(
        "shard {shard}: {} of {} videos, {frames} frames, config {hash}; results in {}",
        mine.len(),
        ds.videos.len(),
        out.display()
    );
    let stop = super::signals::install();
    let bar = progress_bar(frames);
    let mut tally = Tally::default();
    for (k, v) in mine.iter().enumerate() {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let base = bar.position();
        bar.set_message(format!("video {}/{} {}", k + 1, mine.len(), v.name));
        let Some(claim) = store.begin(&v.name, &hash)? else {
            tally.skipped += 1;
            bar.set_position(base + v.frames as u64);
            continue;
        };
        let start = Instant::now();
        let opts = OutputOptions::new(claim.staging(), format, &v.name);
        let mut progress = |s: &RunStats| bar.set_position(base + s.frames_read as u64);
        let job = VideoJob {
            input: &v.frames_dir,
            opts,
            boxes: None,
            announce: k == 0,
        };
        let result = video::open(&v.frames_dir)
            .map_err(anyhow::Error::from)
            .and_then(|source| {
                let config = for_video(&config, &v.name);
                track_video(&args.pipeline, &config, source, job, stop, &mut progress)
            });
        match result {
            Ok(stats) if stats.stopped => break, // the claim's temporaries go; redone next time
            Ok(stats) => {
                let seconds = start.elapsed().as_secs_f64();
                claim.publish(&VideoRecord {
                    video: v.name.clone(),
                    frames: stats.frames_written,
                    config_hash: hash.clone(),
                    tool_version: TOOL_VERSION.into(),
                    shard: shard.to_string(),
                    seconds,
                })?;
                tally.done += 1;
                say(
                    &bar,
                    format!(
                        "done {}: {} frames in {seconds:.1} s",
                        v.name, stats.frames_written
                    ),
                );
            }
            Err(e) => {
                let error = format!("{e:#}");
                say(&bar, format!("failed {}: {error}", v.name));
                claim.fail(&FailureRecord {
                    video: v.name.clone(),
                    error,
                    config_hash: hash.clone(),
                    tool_version: TOOL_VERSION.into(),
                    shard: shard.to_string(),
                })?;
                tally.failed.push(v.name.clone());
            }
        }
        bar.set_position(base + v.frames as u64);
    }
    bar.finish_and_clear();
    tally.report(&shard, mine.len(), out, stop.load(Ordering::Relaxed))
}

/// What one process did.
#[derive(Default)]
struct Tally {
    done: usize,
    skipped: usize,
    failed: Vec<String>,
}

impl Tally {
    fn report(&self, shard: &Shard, total: usize, out: &Path, stopped: bool) -> anyhow::Result<()> {
        eprintln!(
            "shard {shard}: {} videos done now, {} done before, {} failed{}",
            self.done,
            self.skipped,
            self.failed.len(),
            if stopped { ", stopped" } else { "" }
        );
        if !self.failed.is_empty() {
            bail!(
                "{} of {total} videos failed ({}); `deva run --status {}` shows their errors, a rerun retries them",
                self.failed.len(),
                self.failed.join(", "),
                out.display()
            );
        }
        if stopped {
            bail!("stopped; rerun the same command to go on");
        }
        Ok(())
    }
}
