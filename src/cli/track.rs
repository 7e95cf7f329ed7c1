//! `deva track` (to be written).

/// Arguments of `deva track`.
#[derive(Debug, clap::Args)]
pub struct TrackArgs {}

/// Runs `deva track`.
pub fn run(_args: TrackArgs) -> anyhow::Result<()> {
    anyhow::bail!("deva track is not implemented yet")
}
