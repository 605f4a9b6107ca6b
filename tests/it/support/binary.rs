//! Running the `payrules` binary as a process: `payrules run` with a given environment, read
//! until it printed its action lines, then SIGTERM.

use std::time::Duration;

/// Sends SIGTERM to a child process.
pub(crate) fn sigterm(pid: u32) {
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -TERM {pid}");
}

/// Runs `payrules run` with exactly `env` (plus PATH), reads its stdout until `want_lines`
/// non-empty lines arrived (or 30 s), sends SIGTERM and returns (stdout lines, stderr, exit
/// code).
pub(crate) async fn run_binary_until_lines(
    env: &[(&str, String)],
    want_lines: usize,
) -> (Vec<String>, String, Option<i32>) {
    run_binary(env, want_lines, Duration::ZERO).await
}

/// [`run_binary_until_lines`], reading on for `linger` after the `want_lines` arrived (so that a
/// duplicate line, if any, shows up) before the SIGTERM.
pub(crate) async fn run_binary(
    env: &[(&str, String)],
    want_lines: usize,
    linger: Duration,
) -> (Vec<String>, String, Option<i32>) {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_payrules"));
    cmd.arg("run")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("PAYRULES_LOG", "info")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn payrules run");
    let pid = child.id().expect("pid");
    let mut stderr = child.stderr.take().expect("stderr");
    let stderr_task = tokio::spawn(async move {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s).await;
        s
    });
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut got = Vec::new();
    let read = async {
        while got.len() < want_lines {
            match lines.next_line().await {
                Ok(Some(l)) if !l.trim().is_empty() => got.push(l),
                Ok(Some(_)) => {}
                _ => break,
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(30), read).await;
    if !linger.is_zero() {
        let _ = tokio::time::timeout(linger, async {
            while let Ok(Some(l)) = lines.next_line().await {
                if !l.trim().is_empty() {
                    got.push(l);
                }
            }
        })
        .await;
    }
    sigterm(pid);
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("payrules exits within 30 s of SIGTERM")
        .expect("wait");
    while let Ok(Some(l)) = lines.next_line().await {
        if !l.trim().is_empty() {
            got.push(l);
        }
    }
    let stderr = stderr_task.await.unwrap_or_default();
    (got, stderr, status.code())
}
