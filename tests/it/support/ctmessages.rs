//! commercetools-mock with Messages and Subscription delivery on (`CTMOCK_MESSAGES=1`, see
//! `scripts/peers/ctmock-server.mjs`): payment and order writes generate Messages, delivered to
//! the stored Subscriptions (Pub/Sub through the emulator at `PUBSUB_EMULATOR_HOST`, SQS with an
//! unsigned SendMessage to the queue URL's host — fauxqs), a test notification on Subscription
//! create, and `GET /{projectKey}/messages`.
//!
//! Like every peer, it panics (never skips) when it cannot be started.

use std::collections::HashMap;
use std::path::PathBuf;

use super::peers::{self, Peer, PeerSpec};

/// An installed component: the process environment first, then `<repo>/.peers/env` (written by
/// `scripts/peers/install.sh`).
fn installed(key: &str) -> PathBuf {
    let from_file = || -> Option<String> {
        let text = std::fs::read_to_string(peers::repo_root().join(".peers/env")).ok()?;
        let map: HashMap<&str, &str> = text
            .lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.trim(), v.trim()))
            .collect();
        map.get(key).map(|v| v.to_string())
    };
    let value = std::env::var(key)
        .ok()
        .filter(|v| !v.is_empty())
        .or_else(from_file)
        .unwrap_or_else(|| {
            panic!(
                "test peer `commercetools-mock` (messages) is not installed: {key} is neither in the \
                 environment nor in .peers/env; run `bash scripts/peers/install.sh`"
            )
        });
    let path = PathBuf::from(&value);
    assert!(
        path.exists(),
        "test peer `commercetools-mock` (messages): {key}={value} does not exist; run `bash scripts/peers/install.sh`"
    );
    path
}

/// Starts commercetools-mock with Messages on, delivering to Pub/Sub through the emulator at
/// `pubsub_emulator_host` (`127.0.0.1:PORT`). OAuth is on, as with [`peers::commercetools_mock`].
pub(crate) async fn commercetools_mock_with_messages(pubsub_emulator_host: &str) -> Peer {
    let node = installed("PAYRULES_PEER_NODE");
    let node_dir = installed("PAYRULES_PEER_NODE_DIR");
    let script = installed("PAYRULES_PEER_CTMOCK_SCRIPT");
    peers::start(PeerSpec {
        name: "commercetools-mock",
        program: node,
        args: vec![script.display().to_string(), "{port}".into()],
        env: vec![
            (
                "PAYRULES_PEER_NODE_DIR".into(),
                node_dir.display().to_string(),
            ),
            ("CTMOCK_MESSAGES".into(), "1".into()),
            ("PUBSUB_EMULATOR_HOST".into(), pubsub_emulator_host.into()),
        ],
        ready_path: "/payrules-ready-probe".into(),
        ready: |s| s == 200 || s == 401,
    })
    .await
}
