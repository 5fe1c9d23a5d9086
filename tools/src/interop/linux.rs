//! `iesp-test interop linux URL`: the Linux kernel initiator in a VM.

use super::report::Report;
use super::{Context, LinuxArgs};

pub async fn check(ctx: &Context, _a: &LinuxArgs) -> anyhow::Result<Report> {
    Ok(ctx.report())
}
