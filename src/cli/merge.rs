//! `deva merge`: build the submission files of a finished `deva run`, optionally scored.

use super::eval::{print_report, progress_bar};
use anyhow::bail;
use deva::dataset::merge::merge;
use deva::dataset::{DatasetLayout, RunStore};
use deva::eval::davis::{self, DavisOptions, DavisTask, GtFormat};
use deva::eval::{burst, vipseg};
use deva::output::OutputFormat;
use std::path::PathBuf;

/// Arguments of `deva merge`.
#[derive(Debug, clap::Args)]
pub struct MergeArgs {
    /// Output folder of `deva run` (with run.json and videos/).
    pub out: PathBuf,

    /// Submission folder, replaced if it exists: DAVIS `<video>/*.png`; YouTube-VOS
    /// `Annotations/<video>/*.png` and submission.zip; VIPSeg `pred.json` + `pan_pred/`;
    /// BURST `results.json`. [default: OUT/merged]
    #[arg(long, value_name = "DIR")]
    pub into: Option<PathBuf>,

    /// Score the submission and print the benchmark table. GT is, for DAVIS, the annotation
    /// folder (`<sequence>/<frame>.png`); for VIPSeg, the folder with
    /// panoptic_gt_VIPSeg_val.json and panomasksRGB/; for BURST, the folder with
    /// all_classes.json. [default: no scoring]
    #[arg(long, value_name = "GT")]
    pub eval: Option<PathBuf>,

    /// DAVIS protocol of --eval: semi (first and last frames not scored) or unsup. [default:
    /// semi]
    #[arg(long, default_value = "semi", value_name = "TASK")]
    pub davis_task: DavisTask,
}

/// Runs `deva merge`.
pub fn run(args: MergeArgs) -> anyhow::Result<()> {
    let store = RunStore::new(&args.out);
    let into = args.into.unwrap_or_else(|| args.out.join("merged"));
    let merged = merge(&store, &into)?;
    eprintln!(
        "merged {} videos ({} frames) into {}",
        merged.videos,
        merged.frames,
        merged.dir.display()
    );
    let Some(gt) = &args.eval else {
        return Ok(());
    };
    let m = store.manifest()?;
    let bar = progress_bar(m.videos.len());
    let tick = |name: &str| {
        bar.set_message(name.to_string());
        bar.inc(1);
    };
    match (m.format, m.layout) {
        (OutputFormat::Davis, DatasetLayout::YoutubeVos) => {
            bail!(
                "YouTube-VOS is scored by its evaluation server: upload {}",
                into.join("submission.zip").display()
            )
        }
        (OutputFormat::Davis, _) => {
            let options = DavisOptions {
                task: args.davis_task,
                gt_format: GtFormat::Auto,
                sequences: Some(m.videos.iter().map(|v| v.name.clone()).collect()),
            };
            let report = davis::evaluate(gt, &into, &options, &tick);
            bar.finish_and_clear();
            print_report(&report?, None)
        }
        (OutputFormat::Vipseg, _) => {
            let gt_json = gt.join("panoptic_gt_VIPSeg_val.json");
            let report = vipseg::evaluate(&gt_json, &gt.join("panomasksRGB"), &into, &tick);
            bar.finish_and_clear();
            print_report(&report?, None)
        }
        (OutputFormat::Burst, _) => {
            let report = burst::evaluate(gt, &into.join("results.json"), &tick);
            bar.finish_and_clear();
            print_report(&report?, None)
        }
        (OutputFormat::Demo, _) => bail!("--eval: the demo format belongs to no benchmark"),
    }
}
