//! The reference target embedded in another program: started in-process on
//! an ephemeral loopback port, stopped on drop. `iesp-test selftest` and the
//! integration tests use it.

use std::net::SocketAddr;

use crate::config::{Backing, LunSpec, TargetConfig};
use crate::server::{Target, serve};
use anyhow::Context;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A running embedded target.
pub struct EmbeddedTarget {
    pub addr: SocketAddr,
    pub iqn: String,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl EmbeddedTarget {
    /// Starts the default target with one RAM LUN of `size` bytes.
    pub async fn start_ram(size: u64, block_size: u32) -> anyhow::Result<EmbeddedTarget> {
        let mut cfg = TargetConfig::default();
        cfg.targets[0].luns = vec![LunSpec {
            backing: Backing::Ram { size },
            block_size,
            read_only: false,
        }];
        Self::start(cfg).await
    }

    /// Starts a target from a configuration, on 127.0.0.1 with a port the
    /// kernel picks. Must be called inside a tokio runtime.
    pub async fn start(cfg: TargetConfig) -> anyhow::Result<EmbeddedTarget> {
        let iqn = cfg
            .targets
            .first()
            .map(|t| t.iqn.clone())
            .context("configuration has no target")?;
        let target = Target::from_config(&cfg)?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(serve(listener, target, async {
            let _ = stopped.await;
        }));
        Ok(EmbeddedTarget {
            addr,
            iqn,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// The libiscsi-style URL of a LUN.
    pub fn url(&self, lun: u16) -> String {
        format!("iscsi://{}/{}/{lun}", self.addr, self.iqn)
    }

    /// Stops the target and waits for it to flush and close.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.context("target task panicked")??;
        }
        Ok(())
    }
}

impl Drop for EmbeddedTarget {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
