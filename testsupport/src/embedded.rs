//! Our reference target on an ephemeral loopback port, for tests and
//! benches, in two flavours:
//!
//! - [`TestTarget`]: async, for `#[tokio::test]` code; it runs on the
//!   caller's runtime.
//! - [`BlockingTarget`]: the same target on a private two-thread runtime,
//!   for synchronous tests that drive external programs (libiscsi's tools,
//!   the `iesp-test` binary) with blocking calls.
//!
//! Both wrap [`iesp_target::embedded::EmbeddedTarget`], which stays in the
//! target library because `iesp-test selftest` and `conformance` start it at
//! run time; this module adds what only tests want: panics with a message
//! instead of `Result`s, ready-made one-LUN configurations, login options
//! and URLs. The kernel picks the port (`127.0.0.1:0`), so parallel tests
//! never race for one.
//!
//! Dropping either flavour asks the target to stop; [`TestTarget::stop`]
//! and [`BlockingTarget::stop`] also wait until it has flushed and closed,
//! and fail the test if it did not stop cleanly.

use std::net::SocketAddr;
use std::path::Path;

use iesp_initiator::LoginOptions;
use iesp_target::config::{Backing, LunSpec, TargetConfig};
use iesp_target::embedded::EmbeddedTarget;

/// The default target configuration with one LUN: `backing` with
/// `block_size`-byte blocks, writable.
pub fn one_lun(backing: Backing, block_size: u32) -> TargetConfig {
    let mut cfg = TargetConfig::default();
    // `TargetConfig::default()` has exactly one target; keep that true
    // even if the default grows more.
    cfg.targets.truncate(1);
    if let Some(t) = cfg.targets.first_mut() {
        t.luns = vec![LunSpec {
            backing,
            block_size,
            read_only: false,
        }];
    }
    cfg
}

/// [`one_lun`] with a RAM LUN of `size` bytes.
pub fn ram_lun(size: u64, block_size: u32) -> TargetConfig {
    one_lun(Backing::Ram { size }, block_size)
}

/// [`one_lun`] with a file LUN of `size` bytes at `path` (created sparse
/// when missing).
pub fn file_lun(path: &Path, size: u64, block_size: u32) -> TargetConfig {
    one_lun(
        Backing::File {
            path: path.to_owned(),
            size: Some(size),
        },
        block_size,
    )
}

/// The reference target serving on `127.0.0.1:<ephemeral>` from the
/// caller's tokio runtime.
pub struct TestTarget {
    /// `None` only after [`TestTarget::stop`] took it.
    inner: Option<EmbeddedTarget>,
}

impl TestTarget {
    /// Starts a target with `cfg`. Must be called inside a tokio runtime.
    ///
    /// # Panics
    ///
    /// When the configuration is invalid or the port cannot be bound.
    pub async fn start(cfg: TargetConfig) -> TestTarget {
        match EmbeddedTarget::start(cfg).await {
            Ok(t) => TestTarget { inner: Some(t) },
            Err(e) => panic!("cannot start the embedded target: {e:#}"),
        }
    }

    /// The default target with one RAM LUN of `size` bytes.
    pub async fn ram(size: u64, block_size: u32) -> TestTarget {
        TestTarget::start(ram_lun(size, block_size)).await
    }

    /// The default target with one file LUN of `size` bytes at `path`,
    /// 512-byte blocks.
    pub async fn with_file_lun(path: &Path, size: u64) -> TestTarget {
        TestTarget::start(file_lun(path, size, 512)).await
    }

    /// The wrapped target.
    pub fn embedded(&self) -> &EmbeddedTarget {
        // Only `stop` (which consumes `self`) takes it out.
        self.inner
            .as_ref()
            .unwrap_or_else(|| unreachable!("target taken before drop"))
    }

    /// The portal address.
    pub fn addr(&self) -> SocketAddr {
        self.embedded().addr
    }

    /// The IQN of the (first) target.
    pub fn iqn(&self) -> &str {
        &self.embedded().iqn
    }

    /// `iscsi://127.0.0.1:PORT/IQN/LUN`, libiscsi's URL form.
    pub fn url(&self, lun: u16) -> String {
        self.embedded().url(lun)
    }

    /// `iscsi://127.0.0.1:PORT`, for discovery.
    pub fn portal_url(&self) -> String {
        format!("iscsi://{}", self.addr())
    }

    /// Login options for a normal session with this target as
    /// `initiator`.
    pub fn login_options(&self, initiator: &str) -> LoginOptions {
        LoginOptions::new(initiator, Some(self.iqn()))
    }

    /// Stops the target and waits until it has flushed and closed.
    ///
    /// # Panics
    ///
    /// When the target's server task failed or panicked.
    pub async fn stop(mut self) {
        if let Some(t) = self.inner.take() {
            if let Err(e) = t.shutdown().await {
                panic!("the embedded target did not stop cleanly: {e:#}");
            }
        }
    }
}

impl std::fmt::Debug for TestTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.inner {
            Some(t) => write!(f, "TestTarget({} at {})", t.iqn, t.addr),
            None => f.write_str("TestTarget(stopped)"),
        }
    }
}

/// [`TestTarget`] on a private runtime, for synchronous code.
pub struct BlockingTarget {
    /// Declared first: dropped (and so asked to stop) before the runtime.
    target: Option<TestTarget>,
    rt: tokio::runtime::Runtime,
}

impl BlockingTarget {
    /// Starts a target with `cfg` on a new two-thread runtime.
    ///
    /// # Panics
    ///
    /// As [`TestTarget::start`], or when no runtime can be built.
    pub fn start(cfg: TargetConfig) -> BlockingTarget {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("cannot build a runtime for the target: {e}"));
        BlockingTarget::start_on(rt, cfg)
    }

    /// Starts a target with `cfg` on `rt` (a bench that wants the target
    /// on every core passes a default multi-thread runtime), which it then
    /// owns. The runtime must have I/O and time enabled.
    ///
    /// # Panics
    ///
    /// As [`TestTarget::start`].
    pub fn start_on(rt: tokio::runtime::Runtime, cfg: TargetConfig) -> BlockingTarget {
        let target = rt.block_on(TestTarget::start(cfg));
        BlockingTarget {
            target: Some(target),
            rt,
        }
    }

    /// The default target with one RAM LUN of `size` bytes.
    pub fn ram(size: u64, block_size: u32) -> BlockingTarget {
        BlockingTarget::start(ram_lun(size, block_size))
    }

    /// The default target with one file LUN of `size` bytes at `path`
    /// (created sparse when missing), 512-byte blocks.
    pub fn with_file_lun(path: &Path, size: u64) -> BlockingTarget {
        BlockingTarget::start(file_lun(path, size, 512))
    }

    fn target(&self) -> &TestTarget {
        // Only `stop` and `Drop` take it out.
        self.target
            .as_ref()
            .unwrap_or_else(|| unreachable!("target taken before drop"))
    }

    pub fn addr(&self) -> SocketAddr {
        self.target().addr()
    }

    pub fn iqn(&self) -> &str {
        self.target().iqn()
    }

    /// `iscsi://127.0.0.1:PORT/IQN/LUN`.
    pub fn url(&self, lun: u16) -> String {
        self.target().url(lun)
    }

    /// `iscsi://127.0.0.1:PORT`, for discovery.
    pub fn portal_url(&self) -> String {
        self.target().portal_url()
    }

    /// See [`TestTarget::login_options`].
    pub fn login_options(&self, initiator: &str) -> LoginOptions {
        self.target().login_options(initiator)
    }

    /// The runtime the target runs on, to drive our initiator against it.
    pub fn runtime(&self) -> &tokio::runtime::Runtime {
        &self.rt
    }

    /// Stops the target and waits until it has flushed and closed (for a
    /// test that restarts a target on the same backing file).
    ///
    /// # Panics
    ///
    /// As [`TestTarget::stop`].
    pub fn stop(mut self) {
        if let Some(t) = self.target.take() {
            self.rt.block_on(t.stop());
        }
    }
}

impl Drop for BlockingTarget {
    fn drop(&mut self) {
        // Not `TestTarget::stop`: no second panic while unwinding.
        if let Some(inner) = self.target.take().and_then(|mut t| t.inner.take()) {
            let _ = self.rt.block_on(inner.shutdown());
        }
    }
}

impl std::fmt::Debug for BlockingTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.target {
            Some(t) => write!(f, "Blocking{t:?}"),
            None => f.write_str("BlockingTarget(stopped)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use iesp_initiator::Session;

    const INITIATOR: &str = "iqn.2026-11.org.iesp-test:testsupport";

    #[tokio::test]
    async fn test_target_serves_a_session_and_stops() {
        let t = TestTarget::ram(1 << 20, 512).await;
        assert!(t.addr().ip().is_loopback());
        assert_ne!(t.addr().port(), 0);
        assert_eq!(t.url(0), format!("iscsi://{}/{}/0", t.addr(), t.iqn()));
        let s = Session::login(t.addr(), t.login_options(INITIATOR))
            .await
            .unwrap();
        // Opening the LUN clears its power-on unit attention.
        let lu = s.logical_unit(0).await.unwrap();
        assert_eq!(lu.capacity(), 1 << 20);
        lu.test_unit_ready().await.unwrap();
        drop(s);
        let addr = t.addr();
        t.stop().await;
        assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    }

    #[test]
    fn blocking_target_keeps_data_across_a_restart_on_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lun.img");
        let t = BlockingTarget::with_file_lun(&path, 1 << 20);
        let (addr, iqn) = (t.addr(), t.iqn().to_owned());
        let opts = t.login_options(INITIATOR);
        assert_eq!(opts.target_name.as_deref(), Some(iqn.as_str()));
        t.runtime().block_on(async {
            let s = Session::login(addr, opts).await.unwrap();
            let lu = s.logical_unit(0).await.unwrap();
            lu.write(3, bytes::Bytes::from(vec![0x5a; 512]))
                .await
                .unwrap();
        });
        t.stop();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 1 << 20);

        let t = BlockingTarget::with_file_lun(&path, 1 << 20);
        assert_ne!(t.addr(), addr, "a fresh ephemeral port");
        let opts = t.login_options(INITIATOR);
        let back = t.runtime().block_on(async {
            let s = Session::login(t.addr(), opts).await.unwrap();
            let lu = s.logical_unit(0).await.unwrap();
            lu.read(3, 1).await.unwrap()
        });
        assert!(back.iter().all(|b| *b == 0x5a));
    }

    #[test]
    fn one_lun_configs() {
        let cfg = ram_lun(4096, 4096);
        assert_eq!(cfg.targets.len(), 1);
        assert_eq!(cfg.targets[0].luns.len(), 1);
        assert_eq!(cfg.targets[0].luns[0].block_size, 4096);
        assert_eq!(cfg.targets[0].luns[0].backing, Backing::Ram { size: 4096 });
    }
}
