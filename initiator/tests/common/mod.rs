//! Shared helpers for the integration tests: a reference target on a
//! loopback port, stopped on drop or on demand.
#![allow(dead_code)]

use std::net::SocketAddr;

use iesp_initiator::LoginOptions;
use iesp_target::config::TargetConfig;
use iesp_target::{DEFAULT_IQN, Target, serve};
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const INITIATOR: &str = "iqn.2026-11.org.iesp-test:initiator-tests";

/// A reference target serving on 127.0.0.1:<ephemeral>.
pub struct TestTarget {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl TestTarget {
    pub async fn start() -> TestTarget {
        TestTarget::start_with(TargetConfig::default()).await
    }

    pub async fn start_with(config: TargetConfig) -> TestTarget {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let target = Target::from_config(&config).expect("target config");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve(listener, target, async {
            let _ = stopped.await;
        }));
        TestTarget {
            addr,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Stops the target and waits until it has shut down.
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            t.await.expect("target task").expect("target serve");
        }
    }
}

impl Drop for TestTarget {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

/// Login options for the default target.
pub fn opts() -> LoginOptions {
    LoginOptions::new(INITIATOR, Some(DEFAULT_IQN))
}

/// `len` pseudo-random bytes from `seed`.
pub fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    StdRng::seed_from_u64(seed).fill_bytes(&mut v);
    v
}
