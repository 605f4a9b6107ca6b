//! Starts the installed broker peers (`bash scripts/peers/install.sh` puts them in `.peers/`)
//! on free loopback ports; each is killed with its process group when dropped.

use std::collections::HashMap;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub(crate) struct Peer {
    pub port: u16,
    child: Child,
}

impl Peer {
    pub(crate) fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub(crate) fn host_port(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        // The peer leads its own process group (java and node may fork helpers).
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .status();
        let _ = self.child.wait();
    }
}

fn env_file() -> HashMap<String, String> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".peers/env");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; run `bash scripts/peers/install.sh` first",
            path.display()
        )
    });
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

async fn start(
    name: &'static str,
    program: &str,
    args: &[String],
    env: &[(&str, String)],
    ready_path: &str,
) -> Peer {
    let port = free_port();
    let args: Vec<String> = args
        .iter()
        .map(|a| a.replace("{port}", &port.to_string()))
        .collect();
    let log = std::fs::File::create(format!("target/loadtest/{name}.log")).expect("peer log");
    let mut cmd = Command::new(program);
    cmd.args(&args)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("dup log"))
        .stderr(log)
        .process_group(0);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("starting {name} ({program}): {e}"));
    let peer = Peer { port, child };
    let http = reqwest::Client::new();
    let url = format!("{}{ready_path}", peer.endpoint());
    let started = Instant::now();
    loop {
        if let Ok(r) = http.get(&url).timeout(Duration::from_secs(2)).send().await
            && r.status().is_success()
        {
            return peer;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{name} did not answer GET {url} within 60 s (see target/loadtest/{name}.log)"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Google's Pub/Sub emulator.
pub(crate) async fn pubsub_emulator() -> Peer {
    let env = env_file();
    let launcher = env
        .get("PAYRULES_PEER_PUBSUB_EMULATOR")
        .expect("PAYRULES_PEER_PUBSUB_EMULATOR in .peers/env");
    let logging = env
        .get("PAYRULES_PEER_PUBSUB_LOGGING")
        .expect("PAYRULES_PEER_PUBSUB_LOGGING in .peers/env");
    start(
        "pubsub-emulator",
        launcher,
        &["--host=127.0.0.1".into(), "--port={port}".into()],
        &[
            (
                "JAVA_OPTS",
                format!("-Xmx1g -Djava.util.logging.config.file={logging}"),
            ),
            ("CLOUD_PUBSUB_EMULATOR_OPTS", String::new()),
        ],
        "/",
    )
    .await
}

/// fauxqs (SQS).
pub(crate) async fn fauxqs() -> Peer {
    let env = env_file();
    let node = env.get("PAYRULES_PEER_NODE").expect("PAYRULES_PEER_NODE");
    let node_dir = env
        .get("PAYRULES_PEER_NODE_DIR")
        .expect("PAYRULES_PEER_NODE_DIR")
        .clone();
    let script = env
        .get("PAYRULES_PEER_FAUXQS_SCRIPT")
        .expect("PAYRULES_PEER_FAUXQS_SCRIPT")
        .clone();
    start(
        "fauxqs",
        node,
        &[script, "{port}".into()],
        &[("PAYRULES_PEER_NODE_DIR", node_dir)],
        "/health",
    )
    .await
}
