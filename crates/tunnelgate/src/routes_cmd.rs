//! Not built yet: its issue owns this file.

#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> anyhow::Result<std::process::ExitCode> {
    anyhow::bail!("this subcommand is not available in this build yet")
}
