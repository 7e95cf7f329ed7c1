//! `deva eval <benchmark>`: score predictions with the official benchmark metrics, print tables
//! and optionally write a JSON report.

use anyhow::Context;
use clap::{Args, Subcommand};
use deva::eval::boxes::{got10k, lasot};
use deva::eval::davis::{self, DavisOptions, DavisTask, GtFormat};
use deva::eval::input::{list_files, list_subdirs, read_name_list};
use deva::eval::report::{write_json, Report};
use deva::eval::{burst, vipseg};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::{Path, PathBuf};

/// Arguments of `deva eval`.
#[derive(Debug, Args)]
pub struct EvalArgs {
    #[command(subcommand)]
    benchmark: Benchmark,
}

#[derive(Debug, Subcommand)]
enum Benchmark {
    /// DAVIS J&F (semi-supervised or unsupervised), as davis2017-evaluation computes it.
    Davis(DavisArgs),
    /// VIPSeg VPQ^k (k = 1, 2, 4, 6, 8, 10, inf) and STQ, as DEVA's VIPSeg scripts compute them.
    Vipseg(VipsegArgs),
    /// BURST open-world tracking: OWTA, DetRe, AssA, HOTA, DetA for all / common / uncommon
    /// classes, as the official BURST evaluation computes them.
    Burst(BurstArgs),
    /// Single-object box tracking: LaSOT (success AUC, precision, normalised precision) or
    /// GOT-10k (AO, SR0.5, SR0.75).
    Boxes(BoxesArgs),
}

/// Options shared by every benchmark.
#[derive(Debug, Args)]
struct OutputArgs {
    /// Also write the full report (global numbers and per-sequence rows) as JSON to this file.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct DavisArgs {
    /// Ground-truth folder with `<sequence>/<frame>.png`.
    #[arg(long, value_name = "DIR")]
    gt: PathBuf,
    /// Prediction folder with `<sequence>/<frame>.png` (same frame names as the ground truth).
    #[arg(long, value_name = "DIR")]
    pred: PathBuf,
    /// Protocol: `semi` (first and last frames not scored) or `unsup` (proposals matched to
    /// objects, void excluded).
    #[arg(long, default_value = "semi", value_name = "TASK")]
    task: DavisTask,
    /// Ground-truth encoding: `davis2016` (0/255 binary), `davis2017` (palette ids, 255 = void)
    /// or `auto` (decided per sequence from its first frame).
    #[arg(long, default_value = "auto", value_name = "FORMAT")]
    gt_format: GtFormat,
    /// File listing the sequences to score, one per line [default: every sub-folder of --gt].
    #[arg(long, value_name = "FILE")]
    sequences: Option<PathBuf>,
    /// Ref-DAVIS-17: --pred holds one folder per annotator's expressions (`anno_0` …
    /// `anno_3`, each `<sequence>/<frame>.png`); each is scored against the DAVIS-17 --gt and
    /// the means over annotators are reported (the official evaluation uses --task unsup).
    #[arg(long)]
    ref_davis: bool,
    #[command(flatten)]
    output: OutputArgs,
}

#[derive(Debug, Args)]
struct VipsegArgs {
    /// Ground-truth JSON (panoptic_gt_VIPSeg_val.json).
    #[arg(long, value_name = "FILE")]
    gt_json: PathBuf,
    /// Ground-truth panoptic PNG folder (panomasksRGB) with `<video>/<frame>.png`.
    #[arg(long, value_name = "DIR")]
    gt: PathBuf,
    /// Prediction folder holding `pred.json` and `pan_pred/<video>/<frame>.png`.
    #[arg(long, value_name = "DIR")]
    pred: PathBuf,
    #[command(flatten)]
    output: OutputArgs,
}

#[derive(Debug, Args)]
struct BurstArgs {
    /// Ground-truth folder with all_classes.json (required), common_classes.json and
    /// uncommon_classes.json (each scored when present).
    #[arg(long, value_name = "DIR")]
    gt: PathBuf,
    /// Prediction JSON in the BURST annotation format (COCO RLE masks).
    #[arg(long, value_name = "FILE")]
    pred: PathBuf,
    #[command(flatten)]
    output: OutputArgs,
}

/// Box benchmark conventions.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Protocol {
    /// LaSOT MATLAB toolkit: `<gt>/<seq>.txt`, `<absent>/<seq>.txt`, `<pred>/<seq>.txt`.
    Lasot,
    /// got10k toolkit: `<gt>/<seq>/{groundtruth.txt,cover.label,meta_info.ini}` and
    /// `<pred>/<seq>/<seq>_NNN.txt` (one file per repetition).
    Got10k,
}

#[derive(Debug, Args)]
struct BoxesArgs {
    /// Which benchmark's conventions to apply.
    #[arg(long, value_enum)]
    protocol: Protocol,
    /// Ground-truth folder.
    #[arg(long, value_name = "DIR")]
    gt: PathBuf,
    /// Prediction folder.
    #[arg(long, value_name = "DIR")]
    pred: PathBuf,
    /// LaSOT absent-flag folder with `<seq>.txt` [default: `absent` inside --gt, as in the
    /// official toolkit].
    #[arg(long, value_name = "DIR")]
    absent: Option<PathBuf>,
    /// File listing the sequences, one per line [default: every `<seq>.txt` (LaSOT) or
    /// sub-folder (GOT-10k) of --gt, sorted].
    #[arg(long, value_name = "FILE")]
    sequences: Option<PathBuf>,
    #[command(flatten)]
    output: OutputArgs,
}

/// Runs `deva eval`.
pub fn run(args: EvalArgs) -> anyhow::Result<()> {
    match args.benchmark {
        Benchmark::Davis(a) => run_davis(a),
        Benchmark::Vipseg(a) => run_vipseg(a),
        Benchmark::Burst(a) => run_burst(a),
        Benchmark::Boxes(a) => run_boxes(a),
    }
}

/// A progress bar over `total` sequences.
pub(super) fn progress_bar(total: usize) -> ProgressBar {
    let bar = ProgressBar::new(total as u64);
    bar.set_style(
        ProgressStyle::with_template("{spinner} {pos}/{len} sequences [{elapsed}] {msg}")
            .expect("valid progress template"),
    );
    bar
}

/// Prints the report's tables and writes its JSON file if asked.
fn finish(report: &impl Report, output: &OutputArgs) -> anyhow::Result<()> {
    print_report(report, output.json.as_deref())
}

/// Prints the report's tables and writes it as JSON to `json` if given.
pub(super) fn print_report(report: &impl Report, json: Option<&Path>) -> anyhow::Result<()> {
    for table in report.tables() {
        println!("{table}");
    }
    if let Some(path) = json {
        write_json(path, report).with_context(|| "writing the JSON report")?;
        eprintln!("report written to {}", path.display());
    }
    Ok(())
}

fn run_davis(a: DavisArgs) -> anyhow::Result<()> {
    let sequences = match &a.sequences {
        Some(list) => read_name_list(list)?,
        None => davis::list_sequences(&a.gt)?,
    };
    let annotators = match a.ref_davis {
        true => davis::annotator_folders(&a.pred)?.len(),
        false => 1,
    };
    let bar = progress_bar(sequences.len() * annotators);
    let options = DavisOptions {
        task: a.task,
        gt_format: a.gt_format,
        sequences: Some(sequences),
    };
    if a.ref_davis {
        let report = davis::evaluate_referring(&a.gt, &a.pred, &options, &|name| {
            bar.set_message(name.to_string());
            bar.inc(1);
        });
        bar.finish_and_clear();
        return finish(&report?, &a.output);
    }
    let report = davis::evaluate(&a.gt, &a.pred, &options, &|name| {
        bar.set_message(name.to_string());
        bar.inc(1);
    });
    bar.finish_and_clear();
    finish(&report?, &a.output)
}

fn run_vipseg(a: VipsegArgs) -> anyhow::Result<()> {
    let bar = progress_bar(list_subdirs(&a.gt).map(|v| v.len()).unwrap_or(0));
    let report = vipseg::evaluate(&a.gt_json, &a.gt, &a.pred, &|video| {
        bar.set_message(video.to_string());
        bar.inc(1);
    });
    bar.finish_and_clear();
    finish(&report?, &a.output)
}

fn run_burst(a: BurstArgs) -> anyhow::Result<()> {
    let bar = ProgressBar::new_spinner();
    let report = burst::evaluate(&a.gt, &a.pred, &|seq| {
        bar.set_message(seq.to_string());
        bar.tick();
    });
    bar.finish_and_clear();
    finish(&report?, &a.output)
}

fn run_boxes(a: BoxesArgs) -> anyhow::Result<()> {
    let sequences = match (&a.sequences, a.protocol) {
        (Some(list), _) => read_name_list(list)?,
        (None, Protocol::Lasot) => list_files(&a.gt, ".txt")?
            .iter()
            .filter_map(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
            .collect(),
        (None, Protocol::Got10k) => list_subdirs(&a.gt)?,
    };
    anyhow::ensure!(
        !sequences.is_empty(),
        "no sequences found in {}",
        a.gt.display()
    );
    match a.protocol {
        Protocol::Lasot => {
            let absent = a.absent.clone().unwrap_or_else(|| a.gt.join("absent"));
            finish(
                &lasot::evaluate(&a.gt, &absent, &a.pred, &sequences)?,
                &a.output,
            )
        }
        Protocol::Got10k => finish(&got10k::evaluate(&a.gt, &a.pred, &sequences)?, &a.output),
    }
}
