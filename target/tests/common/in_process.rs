//! An in-process target for the endpoint tests (metrics.rs, snmp.rs): the
//! library's `serve` on an ephemeral loopback portal, one target whose ACL
//! admits one initiator, and a shutdown future for the endpoint under
//! test. Included with `#[path]` by the tests that use it, so the others
//! sharing `common/` do not compile it.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use iesp_target::config::TargetConfig;
use iesp_target::server::{Target, serve};
use tokio::sync::watch;

/// A target serving iSCSI on `iscsi` until dropped.
pub struct InProcess {
    pub iscsi: SocketAddr,
    /// The IQN of its one target node.
    pub iqn: String,
    pub target: Arc<Target>,
    stop: watch::Sender<bool>,
}

impl InProcess {
    /// The default configuration with `allowed` as the only initiator the
    /// ACL admits, served on `127.0.0.1:0`.
    pub async fn start(allowed: &str) -> InProcess {
        let mut config = TargetConfig::default();
        config.targets[0].acl = vec![allowed.to_owned()];
        config.targets[0].alias = Some("endpoint test".to_owned());
        let iqn = config.targets[0].iqn.clone();
        let target = Target::from_config(&config).expect("target");
        let portal = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let iscsi = portal.local_addr().unwrap();
        let (stop, _) = watch::channel(false);
        let t = InProcess {
            iscsi,
            iqn,
            target: target.clone(),
            stop,
        };
        tokio::spawn(serve(portal, target, t.stopped()));
        t
    }

    /// Completes when this target is dropped: the shutdown future for an
    /// endpoint served beside it.
    pub fn stopped(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.stop.subscribe();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}
