//! `deva demo` (to be written).

/// Arguments of `deva demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {}

/// Runs `deva demo`.
pub fn run(_args: DemoArgs) -> anyhow::Result<()> {
    anyhow::bail!("deva demo is not implemented yet")
}
