//! Placeholder.
#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {}
pub async fn run(_a: BenchArgs) -> anyhow::Result<()> {
    Ok(())
}
