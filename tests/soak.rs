//! The short soak for CI: 50,000 messages of the load tool's stream through `payrules run` on a
//! file source, the SQLite state store, live executors against the loopback stub
//! (`examples/loadtest/stub.rs`) and a 1 s grace period. RSS may grow by at most 10 MB from the
//! moment 10 % of the messages are acked to the end (and over the last 10 %), open file
//! descriptors by at most 5, and the run must do exactly what the generator planned: exit 0,
//! every message acked, nothing parked, every release and cancel received once. No assertion
//! on speed. The long run (1,000,000 messages) is `scripts/soak.sh`; see `examples/loadtest/soak.rs`.

#[path = "../benches/support/stream.rs"]
mod stream;

#[allow(dead_code)]
#[path = "../examples/loadtest/stub.rs"]
mod stub;

#[path = "../examples/loadtest/procfs.rs"]
mod procfs;

#[allow(dead_code)]
#[path = "../examples/loadtest/soak.rs"]
mod soak;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_thousand_messages_keep_rss_and_file_descriptors_bounded() {
    let logs = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("soak");
    std::fs::create_dir_all(&logs).unwrap();
    let log = logs.join(format!("worker-{}.log", std::process::id()));
    let cfg = soak::Config::new(50_000, env!("CARGO_BIN_EXE_payrules").into(), log.clone());
    let r = soak::run(&cfg).await;
    r.print();
    assert!(
        r.passed(),
        "{:#?}\nfigures: {}\nworker log: {}",
        r.failures,
        r.to_json(),
        log.display()
    );
    let _ = std::fs::remove_file(&log);
}
