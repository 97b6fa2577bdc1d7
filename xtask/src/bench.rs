//! `cargo xtask bench` (filled in by the benchmark work).

#[derive(clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> anyhow::Result<bool> {
    anyhow::bail!("bench is not written yet")
}
