//! `iesp-test interop ipxe URL`: iPXE sanboot in a VM.

use super::report::Report;
use super::{Context, IpxeArgs};

pub async fn check(ctx: &Context, _a: &IpxeArgs) -> anyhow::Result<Report> {
    Ok(ctx.report())
}
