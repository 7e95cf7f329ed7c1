//! `deva eval` (to be written).

/// Arguments of `deva eval`.
#[derive(Debug, clap::Args)]
pub struct EvalArgs {}

/// Runs `deva eval`.
pub fn run(_args: EvalArgs) -> anyhow::Result<()> {
    anyhow::bail!("deva eval is not implemented yet")
}
