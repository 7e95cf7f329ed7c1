//! `deva models` (to be written).

/// Arguments of `deva models`.
#[derive(Debug, clap::Args)]
pub struct ModelsArgs {}

/// Runs `deva models`.
pub fn run(_args: ModelsArgs) -> anyhow::Result<()> {
    anyhow::bail!("deva models is not implemented yet")
}
