//! Our reference target as a peer for synchronous tests and benches: the
//! embedded target on its own tokio runtime, so code that drives external
//! tools (libiscsi's, tgt's) with blocking calls can run against it.

use std::path::Path;

use iesp_target::config::{Backing, LunSpec, TargetConfig};
use iesp_target::embedded::EmbeddedTarget;

/// A reference target serving on 127.0.0.1 from a background runtime.
pub struct OwnTarget {
    rt: tokio::runtime::Runtime,
    target: Option<EmbeddedTarget>,
}

impl OwnTarget {
    /// Starts a target with the given configuration.
    pub fn start(cfg: TargetConfig) -> anyhow::Result<OwnTarget> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let target = rt.block_on(EmbeddedTarget::start(cfg))?;
        Ok(OwnTarget {
            rt,
            target: Some(target),
        })
    }

    /// The default target with one file LUN of `size` bytes at `path`
    /// (created sparse when missing), 512-byte blocks.
    pub fn with_file_lun(path: &Path, size: u64) -> anyhow::Result<OwnTarget> {
        let mut cfg = TargetConfig::default();
        cfg.targets[0].luns = vec![LunSpec {
            backing: Backing::File {
                path: path.to_owned(),
                size: Some(size),
            },
            block_size: 512,
            read_only: false,
        }];
        Self::start(cfg)
    }

    fn target(&self) -> &EmbeddedTarget {
        // Only `Drop` takes it out.
        self.target
            .as_ref()
            .unwrap_or_else(|| unreachable!("target taken before drop"))
    }

    /// `iscsi://127.0.0.1:PORT/IQN/LUN`.
    pub fn url(&self, lun: u16) -> String {
        self.target().url(lun)
    }

    /// `iscsi://127.0.0.1:PORT`, for discovery.
    pub fn portal_url(&self) -> String {
        format!("iscsi://{}", self.target().addr)
    }

    pub fn addr(&self) -> std::net::SocketAddr {
        self.target().addr
    }

    pub fn iqn(&self) -> &str {
        &self.target().iqn
    }

    /// The runtime the target runs on, to drive our initiator against it.
    pub fn runtime(&self) -> &tokio::runtime::Runtime {
        &self.rt
    }
}

impl Drop for OwnTarget {
    fn drop(&mut self) {
        if let Some(t) = self.target.take() {
            let _ = self.rt.block_on(t.shutdown());
        }
    }
}
