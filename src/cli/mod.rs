//! Command-line interface: argument parsing and wiring; the algorithms live in the library.

mod args;
mod demo;
mod eval;
mod merge;
mod models;
mod run;
mod signals;
mod spec;
mod track;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Decoupled open-world video segmentation: track anything in video.
#[derive(Debug, Parser)]
#[command(name = "deva", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Segment and track objects in a video or a folder of frames.
    Track(Box<track::TrackArgs>),
    /// Track every video of a dataset (DAVIS, VIPSeg, BURST, YouTube-VOS, folders), sharded
    /// across processes, resumable.
    Run(Box<run::RunArgs>),
    /// Merge the per-video results of `deva run` into submission files, optionally scored.
    Merge(merge::MergeArgs),
    /// Score predictions against ground truth with the official benchmark metrics.
    Eval(eval::EvalArgs),
    /// List, fetch and verify model weights.
    Models(models::ModelsArgs),
    /// Run the whole pipeline on a short generated clip or your video with default models.
    Demo(demo::DemoArgs),
}

/// Parses the command line, runs the command and maps errors to a non-zero exit.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Track(a) => track::run(*a),
        Command::Run(a) => run::run(*a),
        Command::Merge(a) => merge::run(a),
        Command::Eval(a) => eval::run(a),
        Command::Models(a) => models::run(a),
        Command::Demo(a) => demo::run(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => match e.downcast_ref::<signals::Interrupted>() {
            Some(stop) => {
                eprintln!("{stop}");
                ExitCode::from(stop.exit_code())
            }
            None => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}
