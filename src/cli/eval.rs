//! `deva eval <benchmark>`: score predictions with the official benchmark metrics, print tables
//! and optionally write a JSON report.

use anyhow::Context;
use clap::{Args, Subcommand};
use deva::eval::davis::{self, DavisOptions, DavisTask, GtFormat};
use deva::eval::input::read_name_list;
use deva::eval::report::{write_json, Report};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;

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
    #[command(flatten)]
    output: OutputArgs,
}

/// Runs `deva eval`.
pub fn run(args: EvalArgs) -> anyhow::Result<()> {
    match args.benchmark {
        Benchmark::Davis(a) => run_davis(a),
    }
}

/// A progress bar over `total` sequences.
fn progress_bar(total: usize) -> ProgressBar {
    let bar = ProgressBar::new(total as u64);
    bar.set_style(
        ProgressStyle::with_template("{spinner} {pos}/{len} sequences [{elapsed}] {msg}")
            .expect("valid progress template"),
    );
    bar
}

/// Prints the report's tables and writes its JSON file if asked.
fn finish(report: &impl Report, output: &OutputArgs) -> anyhow::Result<()> {
    for table in report.tables() {
        println!("{table}");
    }
    if let Some(path) = &output.json {
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
    let bar = progress_bar(sequences.len());
    let options = DavisOptions {
        task: a.task,
        gt_format: a.gt_format,
        sequences: Some(sequences),
    };
    let report = davis::evaluate(&a.gt, &a.pred, &options, &|name| {
        bar.set_message(name.to_string());
        bar.inc(1);
    });
    bar.finish_and_clear();
    finish(&report?, &a.output)
}
