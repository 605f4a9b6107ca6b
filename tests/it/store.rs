//! The durable state store on both backends: the embedded SQLite file and the PostgreSQL
//! server that runs on these machines (127.0.0.1:5432, trust auth). Each PostgreSQL test gets
//! a database of its own.

use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use payrules::store::{Claim, Decided, LedgerStatus, SqlStore, Store, Timer};

use crate::support::pg;

/// A fresh PostgreSQL database; fails (never skips) when the server is not there.
async fn fresh_pg() -> String {
    pg::fresh_pg("payrules").await
}

fn sqlite_url(dir: &tempfile::TempDir) -> String {
    format!("sqlite://{}", dir.path().join("state.db").display())
}

fn at(secs: i64) -> chrono::DateTime<Utc> {
    Utc.timestamp_opt(1_800_000_000 + secs, 0).unwrap()
}

async fn ledger_and_timers_behave(store: &dyn Store) {
    assert_eq!(store.claim("release:o1").await.unwrap(), Claim::Acquired);
    assert_eq!(
        store.claim("release:o1").await.unwrap(),
        Claim::Exists(LedgerStatus::Claimed),
        "a live claim is not handed out twice"
    );
    store
        .record(
            "release:o1",
            LedgerStatus::Done,
            Decided {
                message_id: Some("m1"),
                reason: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(
        store.claim("release:o1").await.unwrap(),
        Claim::Exists(LedgerStatus::Done)
    );
    assert_eq!(
        store.ledger_status("release:o1").await.unwrap(),
        Some(LedgerStatus::Done)
    );
    // What `payrules explain` reads: when, and on which message.
    let entry = store.ledger_entry("release:o1").await.unwrap().unwrap();
    assert_eq!(entry.status, LedgerStatus::Done);
    assert_eq!(entry.message_id.as_deref(), Some("m1"));
    let written = entry.at.expect("a SQL store keeps the time");
    assert!((Utc::now() - written).num_seconds().abs() < 60, "{written}");
    assert_eq!(store.ledger_entry("release:nothing").await.unwrap(), None);

    assert_eq!(store.claim("cancel:p9").await.unwrap(), Claim::Acquired);
    store.unclaim("cancel:p9").await.unwrap();
    assert_eq!(store.ledger_status("cancel:p9").await.unwrap(), None);
    assert_eq!(store.claim("cancel:p9").await.unwrap(), Claim::Acquired);
    let by_timer = Decided {
        message_id: None,
        reason: Some("grace_period_expired"),
    };
    store
        .record("cancel:p9", LedgerStatus::Done, by_timer)
        .await
        .unwrap();
    let entry = store.ledger_entry("cancel:p9").await.unwrap().unwrap();
    assert_eq!(
        (entry.message_id, entry.reason.as_deref()),
        (None, Some("grace_period_expired"))
    );

    let t = |p: &str, s| Timer {
        payment_id: p.into(),
        due: at(s),
        rechecks: 0,
    };
    assert!(store.schedule(t("p2", 20)).await.unwrap());
    assert!(store.schedule(t("p1", 10)).await.unwrap());
    assert!(
        !store.schedule(t("p1", 99)).await.unwrap(),
        "one timer per payment, ever"
    );
    assert_eq!(store.next_due().await.unwrap(), Some(at(10)));
    assert!(store.take_due(at(5), 10).await.unwrap().is_empty());
    let due = store.take_due(at(30), 10).await.unwrap();
    assert_eq!(due, vec![t("p1", 10), t("p2", 20)], "due order");
    assert!(
        store.take_due(at(30), 10).await.unwrap().is_empty(),
        "taken timers are not handed out again"
    );
    store.timer_done(&due[0]).await.unwrap();
    store.retry_timer(&due[1], at(40)).await.unwrap();
    assert_eq!(store.take_due(at(39), 10).await.unwrap(), vec![]);
    let retried = store.take_due(at(41), 10).await.unwrap();
    assert_eq!(retried, vec![t("p2", 40)], "a retry is not a recheck");
    // A check that found money in flight asks to look again: counted with the timer; a failed
    // check's retry keeps the count.
    store.recheck_timer(&retried[0], at(42)).await.unwrap();
    let rechecked = store.take_due(at(42), 10).await.unwrap();
    assert_eq!(
        rechecked.iter().map(|t| t.rechecks).collect::<Vec<_>>(),
        [1]
    );
    store.recheck_timer(&rechecked[0], at(43)).await.unwrap();
    let twice = store.take_due(at(43), 10).await.unwrap();
    store.retry_timer(&twice[0], at(40)).await.unwrap();
    let kept = store.take_due(at(43), 10).await.unwrap();
    assert_eq!(
        kept.iter().map(|t| (t.due, t.rechecks)).collect::<Vec<_>>(),
        [(at(40), 2)]
    );
    store.retry_timer(&kept[0], at(40)).await.unwrap();
    assert!(
        !store.schedule(t("p1", 50)).await.unwrap(),
        "a done timer is never scheduled again"
    );
    let fired = store.timer_entry("p1").await.unwrap().unwrap();
    assert_eq!(fired.due, at(10));
    assert!(fired.fired && fired.fired_at.is_some() && fired.scheduled_at.is_some());
    assert!(fired.scheduled_at <= fired.fired_at, "{fired:?}");
    let pending = store.timer_entry("p2").await.unwrap().unwrap();
    assert_eq!(
        (pending.due, pending.fired, pending.fired_at),
        (at(40), false, None)
    );
    assert_eq!(store.timer_entry("p-none").await.unwrap(), None);

    assert!(!store.is_processed("m1").await.unwrap());
    store.mark_processed("m1").await.unwrap();
    store.record_sequence("p1", 4).await.unwrap();
    store.record_sequence("p1", 2).await.unwrap();
    assert!(
        store.is_processed("m1").await.unwrap(),
        "buffered ids count"
    );
    store.flush().await.unwrap();
    assert!(store.is_processed("m1").await.unwrap());
    assert_eq!(store.latest_sequence("p1").await.unwrap(), Some(4));
}

#[tokio::test]
async fn sqlite_store_keeps_the_ledger_and_timers() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqlStore::connect(&sqlite_url(&dir), Duration::from_secs(60))
        .await
        .unwrap();
    ledger_and_timers_behave(&store).await;
}

#[tokio::test]
async fn postgres_store_keeps_the_ledger_and_timers() {
    let url = fresh_pg().await;
    let store = SqlStore::connect(&url, Duration::from_secs(60))
        .await
        .unwrap();
    ledger_and_timers_behave(&store).await;
}

#[tokio::test]
async fn sqlite_state_survives_a_restart_and_a_dead_claim_is_taken_over() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(&dir);
    {
        let crashed = SqlStore::connect(&url, Duration::from_millis(300))
            .await
            .unwrap();
        assert_eq!(crashed.claim("cancel:p1").await.unwrap(), Claim::Acquired);
        crashed
            .record(
                "release:o1",
                LedgerStatus::Done,
                Decided {
                    message_id: Some("m1"),
                    reason: None,
                },
            )
            .await
            .unwrap();
        crashed
            .schedule(Timer {
                payment_id: "p7".into(),
                due: at(0),
                rechecks: 0,
            })
            .await
            .unwrap();
        let taken = crashed.take_due(at(1), 10).await.unwrap();
        assert_eq!(taken.len(), 1);
        crashed.recheck_timer(&taken[0], at(0)).await.unwrap();
        let taken = crashed.take_due(at(1), 10).await.unwrap();
        assert_eq!(taken.len(), 1);
        // Dropped without settling the claim or the timer: a crash.
    }
    let restarted = SqlStore::connect(&url, Duration::from_millis(300))
        .await
        .unwrap();
    assert_eq!(
        restarted.ledger_status("release:o1").await.unwrap(),
        Some(LedgerStatus::Done)
    );
    assert_eq!(
        restarted.claim("cancel:p1").await.unwrap(),
        Claim::Exists(LedgerStatus::Claimed),
        "the lease has not passed yet"
    );
    assert!(restarted.take_due(at(1), 10).await.unwrap().is_empty());
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        restarted.claim("cancel:p1").await.unwrap(),
        Claim::Acquired,
        "taken over after the lease"
    );
    let again = restarted.take_due(at(1), 10).await.unwrap();
    assert_eq!(
        again.len(),
        1,
        "a timer taken by a dead worker fires again: none is lost"
    );
    assert_eq!(
        again[0].rechecks, 1,
        "the recheck count survives the restart"
    );
}

#[tokio::test]
async fn two_postgres_replicas_never_take_the_same_timer_or_claim() {
    let url = fresh_pg().await;
    let a = Arc::new(
        SqlStore::connect(&url, Duration::from_secs(60))
            .await
            .unwrap(),
    );
    let b = Arc::new(
        SqlStore::connect(&url, Duration::from_secs(60))
            .await
            .unwrap(),
    );
    for i in 0..200 {
        a.schedule(Timer {
            payment_id: format!("p{i:03}"),
            due: at(i),
            rechecks: 0,
        })
        .await
        .unwrap();
    }
    let mut tasks = Vec::new();
    for store in [a.clone(), b.clone(), a.clone(), b.clone()] {
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            loop {
                let batch = store.take_due(at(1000), 7).await.unwrap();
                if batch.is_empty() {
                    break;
                }
                got.extend(batch.into_iter().map(|t| t.payment_id));
            }
            got
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let n = all.len();
    all.sort();
    all.dedup();
    assert_eq!((n, all.len()), (200, 200), "every timer taken exactly once");

    let mut claims = Vec::new();
    for i in 0..20 {
        let (a, b) = (a.clone(), b.clone());
        claims.push(tokio::spawn(async move {
            let key = format!("release:o{i}");
            let (x, y) = tokio::join!(a.claim(&key), b.claim(&key));
            [x.unwrap(), y.unwrap()]
                .iter()
                .filter(|c| **c == Claim::Acquired)
                .count()
        }));
    }
    for c in claims {
        assert_eq!(c.await.unwrap(), 1, "exactly one replica wins each key");
    }
}

#[tokio::test]
async fn a_corrupted_or_read_only_sqlite_file_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    std::fs::write(&path, vec![0x42u8; 8192]).unwrap();
    let err = SqlStore::connect(
        &format!("sqlite://{}", path.display()),
        Duration::from_secs(60),
    )
    .await
    .err()
    .expect("a corrupted file must not open");
    let text = err.to_string();
    eprintln!("verify-full with a wrong CA: {text}");
    assert!(
        text.contains("SQLite state store") && text.contains(path.to_str().unwrap()),
        "{text}"
    );
    assert!(text.to_lowercase().contains("not a database"), "{text}");

    // Read-only: chmod does not stop root, so the file is made immutable (chattr +i) there.
    let ro_dir = tempfile::tempdir().unwrap();
    let ro = ro_dir.path().join("state.db");
    drop(
        SqlStore::connect(
            &format!("sqlite://{}", ro.display()),
            Duration::from_secs(60),
        )
        .await
        .unwrap(),
    );
    let is_root = std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout == b"0\n")
        .unwrap_or(false);
    let lock = |on: bool| {
        if is_root {
            let flag = if on { "+i" } else { "-i" };
            for f in [&ro, &ro_dir.path().to_path_buf()] {
                let ok = std::process::Command::new("chattr")
                    .arg(flag)
                    .arg(f)
                    .status()
                    .unwrap()
                    .success();
                assert!(ok, "chattr {flag} {}", f.display());
            }
        } else {
            for f in [&ro, &ro_dir.path().to_path_buf()] {
                let mut p = std::fs::metadata(f).unwrap().permissions();
                p.set_readonly(on);
                std::fs::set_permissions(f, p).unwrap();
            }
        }
    };
    lock(true);
    let result = SqlStore::connect(
        &format!("sqlite://{}", ro.display()),
        Duration::from_secs(60),
    )
    .await;
    lock(false);
    let text = result
        .err()
        .expect("a read-only store must not open")
        .to_string();
    assert!(
        text.contains("state store") && text.to_lowercase().contains("readonly"),
        "{text}"
    );
}

#[tokio::test]
async fn postgres_down_is_a_clear_retryable_error_and_passwords_are_not_shown() {
    let err = SqlStore::connect(
        "postgres://payrules:hunter2@127.0.0.1:1/none",
        Duration::from_secs(60),
    )
    .await
    .err()
    .expect("nothing listens on port 1");
    let text = err.to_string();
    eprintln!("verify-full with a wrong CA: {text}");
    assert!(
        text.contains("connecting to the PostgreSQL state store"),
        "{text}"
    );
    assert!(!text.contains("hunter2") && text.contains("****"), "{text}");
}

/// A TCP proxy in front of PostgreSQL that can be cut: "PostgreSQL down" as the worker sees
/// it, without stopping the server other tests use.
struct Proxy {
    port: u16,
    up: Arc<std::sync::atomic::AtomicBool>,
    conns: Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl Proxy {
    async fn start() -> Self {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let conns: Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
        let (up2, conns2) = (up.clone(), conns.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    return;
                };
                if !up2.load(Ordering::SeqCst) {
                    drop(client); // refused, as a server that is down
                    continue;
                }
                let task = tokio::spawn(async move {
                    if let Ok(mut server) = tokio::net::TcpStream::connect("127.0.0.1:5432").await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                conns2.lock().unwrap().push(task.abort_handle());
            }
        });
        Self { port, up, conns }
    }

    fn down(&self) {
        self.up.store(false, std::sync::atomic::Ordering::SeqCst);
        for c in self.conns.lock().unwrap().drain(..) {
            c.abort();
        }
    }

    fn up(&self) {
        self.up.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Counts what would have been executed.
#[derive(Default)]
struct Recorder(std::sync::Mutex<Vec<String>>);

#[async_trait::async_trait]
impl payrules::effects::Executor for Recorder {
    async fn execute(
        &self,
        action: &payrules::action::Action,
    ) -> Result<payrules::effects::Effect, payrules::effects::EffectError> {
        self.0.lock().unwrap().push(action.key.clone());
        Ok(payrules::effects::Effect::applied("recorded"))
    }
}

#[tokio::test]
async fn postgres_going_down_mid_run_acks_nothing_until_effects_are_recorded() {
    use payrules::config::WorkerSettings;
    use payrules::process::Processor;
    use payrules::rules::{Engine, Rules};
    use payrules::source::MemorySource;
    use payrules::view::StreamView;
    use payrules::worker::Worker;

    let direct = fresh_pg().await;
    let db = direct.rsplit('/').next().unwrap().to_string();
    let proxy = Proxy::start().await;
    let store = Arc::new(
        SqlStore::connect(
            &format!("postgres://postgres@127.0.0.1:{}/{db}", proxy.port),
            Duration::from_secs(60),
        )
        .await
        .unwrap(),
    );
    let recorder = Arc::new(Recorder::default());
    let mut rules = Rules::default();
    // The run ends once no timer is pending, so the grace period is short; but it must
    // outlast the outage backoff (up to ~6 s here), or the payment's grace check fires
    // before the retried OrderCreated arrives and rightly cancels (CI saw that at 1 s).
    rules.cancel.grace_period = Duration::from_secs(15);
    let engine = Engine::new(Arc::new(StreamView::new()), store.clone(), rules);
    let processor = Arc::new(Processor::new(engine, store.clone(), recorder.clone()));
    let worker = Worker::new(
        processor,
        WorkerSettings {
            concurrency: 1,
            max_deliveries: 1000,
            shutdown_timeout: Duration::from_secs(5),
            retry_delay: Duration::from_millis(100),
            progress_interval: Duration::ZERO,
            max_message_bytes: 1024 * 1024,
        },
    );
    let (source, handle) = MemorySource::new(Duration::from_secs(30));
    let scenario = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/scenarios/01-authorized-then-order.jsonl");
    let lines: Vec<String> = std::fs::read_to_string(scenario)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();

    proxy.down();
    for (i, l) in lines.iter().enumerate() {
        handle.push(l.clone().into_bytes(), format!("line {}", i + 1));
    }
    handle.close();
    let run =
        tokio::spawn(async move { worker.run(Box::new(source), std::future::pending()).await });

    tokio::time::sleep(Duration::from_secs(3)).await;
    let during = handle.stats();
    assert_eq!(
        during.acked, 0,
        "nothing is acked while the store is down: {during:?}"
    );
    // A store outage is a dependency's: the message is held (not nacked) and retried in
    // place, and pulling pauses, so the rest stays waiting in the source.
    assert_eq!(
        (during.nacked, during.outstanding),
        (0, 1),
        "the first message is held, not nacked: {during:?}"
    );
    assert_eq!(
        during.waiting,
        lines.len() - 1,
        "no other message taken: {during:?}"
    );
    assert!(
        recorder.0.lock().unwrap().is_empty(),
        "no effect runs without its claim"
    );

    proxy.up();
    let summary = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("the worker finishes once the store is back")
        .unwrap();
    let after = handle.stats();
    assert_eq!(after.acked, lines.len(), "{after:?} {summary:?}");
    assert!(after.parked.is_empty());
    let executed = recorder.0.lock().unwrap().clone();
    assert_eq!(executed.len(), 1, "the release ran once: {executed:?}");
    assert!(executed[0].starts_with("release:"), "{executed:?}");
    assert_eq!(
        store.ledger_status(&executed[0]).await.unwrap(),
        Some(LedgerStatus::Done)
    );
}

#[tokio::test]
async fn a_second_worker_on_the_same_sqlite_file_is_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(&dir);
    let first = SqlStore::connect(&url, Duration::from_secs(60))
        .await
        .unwrap();
    let second = SqlStore::connect(&url, Duration::from_secs(60)).await;
    let text = second
        .err()
        .expect("the file is locked by the first worker")
        .to_string();
    assert!(
        text.contains("another payrules worker holds this file") && text.contains("PostgreSQL"),
        "{text}"
    );
    // The first one is unaffected, and once it is gone the file opens again.
    assert_eq!(first.claim("release:o1").await.unwrap(), Claim::Acquired);
    drop(first);
    let again = SqlStore::connect(&url, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(
        again.ledger_status("release:o1").await.unwrap(),
        Some(LedgerStatus::Claimed)
    );
}

/// Many reads (and timer inserts) at once share statements; each must still get its own
/// answer.
async fn concurrent_reads_get_their_own_answers(store: Arc<SqlStore>) {
    for i in 0..100 {
        store.mark_processed(&format!("m{i}")).await.unwrap();
        if i % 3 == 0 {
            assert_eq!(
                store.claim(&format!("cancel:p{i}")).await.unwrap(),
                Claim::Acquired
            );
        }
        if i % 5 == 0 {
            store
                .record(
                    &format!("release:o{i}"),
                    LedgerStatus::Done,
                    Decided::default(),
                )
                .await
                .unwrap();
        }
    }
    store.flush().await.unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..200 {
        let store = store.clone();
        tasks.spawn(async move {
            let seen = store.is_processed(&format!("m{i}")).await.unwrap();
            assert_eq!(seen, i < 100, "m{i}");
            let cancel = store.ledger_status(&format!("cancel:p{i}")).await.unwrap();
            let want = (i < 100 && i % 3 == 0).then_some(LedgerStatus::Claimed);
            assert_eq!(cancel, want, "cancel:p{i}");
            let release = store.ledger_status(&format!("release:o{i}")).await.unwrap();
            let want = (i < 100 && i % 5 == 0).then_some(LedgerStatus::Done);
            assert_eq!(release, want, "release:o{i}");
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }

    // Timer inserts share statements too: of two tasks scheduling one payment at once,
    // exactly one is told the timer is new, and every payment ends up with one timer.
    for i in 0..50 {
        assert!(store.schedule(timer(i, 0)).await.unwrap());
    }
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..200 {
        let store = store.clone();
        tasks.spawn(async move { (i % 100, store.schedule(timer(i % 100, i)).await.unwrap()) });
    }
    let mut new = vec![0; 100];
    while let Some(r) = tasks.join_next().await {
        let (p, was_new) = r.unwrap();
        new[p] += usize::from(was_new);
    }
    for (p, n) in new.iter().enumerate() {
        assert_eq!(
            *n,
            usize::from(p >= 50),
            "p{p}: times told the timer was new"
        );
    }
    let due = store.take_due(at(1_000), 1_000).await.unwrap();
    let mut ids: Vec<_> = due.iter().map(|t| t.payment_id.clone()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!((due.len(), ids.len()), (100, 100), "one timer per payment");
}

fn timer(payment: usize, due_secs: usize) -> Timer {
    Timer {
        payment_id: format!("p{payment}"),
        due: at(due_secs as i64),
        rechecks: 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_reads_get_their_own_answers_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqlStore::connect(&sqlite_url(&dir), Duration::from_secs(60))
        .await
        .unwrap();
    concurrent_reads_get_their_own_answers(Arc::new(store)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_reads_get_their_own_answers_on_postgres() {
    let url = fresh_pg().await;
    let store = SqlStore::connect(&url, Duration::from_secs(60))
        .await
        .unwrap();
    concurrent_reads_get_their_own_answers(Arc::new(store)).await;
}

/// Replicas share PostgreSQL: during a rolling upgrade a replica of this version restarts on a
/// database a newer version already migrated, and must still open it (migrations only add).
#[tokio::test]
async fn postgres_store_opens_a_database_a_newer_version_migrated() {
    let url = fresh_pg().await;
    drop(
        SqlStore::connect(&url, Duration::from_secs(60))
            .await
            .unwrap(),
    );
    let db = sqlx::PgPool::connect(&url).await.unwrap();
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
         VALUES (99990101000000, 'a later payrules', true, '\\x00', 0)",
    )
    .execute(&db)
    .await
    .unwrap();
    db.close().await;
    let store = SqlStore::connect(&url, Duration::from_secs(60))
        .await
        .expect("opens despite a migration it does not know");
    assert_eq!(store.claim("release:o1").await.unwrap(), Claim::Acquired);
}

/// Two workers on one PostgreSQL ledger. One takes an orphan's grace check, claims its cancel
/// and dies (kill -9) before calling Checkout. The survivor takes the check over once the
/// lease passes and cancels: the dead worker's claim is a cancel that may not have happened,
/// not a cancel done (the crash test once ended with one authorization never cancelled), and
/// an order arriving meanwhile does not leave it half done.
#[tokio::test]
async fn a_cancel_claimed_by_a_dead_worker_is_taken_over_at_the_grace_check() {
    use payrules::action::Action;
    use payrules::process::Processor;
    use payrules::rules::{Engine, Rules};
    use payrules::view::StreamView;

    let url = fresh_pg().await;
    let lease = Duration::from_millis(300);
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/messages/PaymentCreated.json"
    );
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    v["payment"]["transactions"][0]["state"] = "Success".into();
    let authorized = payrules::message::decode(&serde_json::to_vec(&v).unwrap()).unwrap();
    let pid = authorized.payment_id().unwrap().to_string();
    let key = Action::cancel_key(&pid);
    let timer = Timer {
        payment_id: pid.clone(),
        due: at(0),
        rechecks: 0,
    };

    let store = Arc::new(SqlStore::connect(&url, lease).await.unwrap());
    let recorder = Arc::new(Recorder::default());
    let engine = Engine::new(Arc::new(StreamView::new()), store.clone(), Rules::default());
    let processor = Processor::new(engine, store.clone(), recorder.clone());
    let seen = processor.message(&authorized, at(-600)).await.unwrap();
    assert!(seen.is_empty(), "inside the grace period: {seen:?}");
    store.flush().await.unwrap();

    let dead = SqlStore::connect(&url, lease).await.unwrap();
    assert_eq!(
        dead.take_due(at(1), 10).await.unwrap(),
        std::slice::from_ref(&timer)
    );
    assert_eq!(dead.claim(&key).await.unwrap(), Claim::Acquired);
    drop(dead); // killed: neither the claim nor the timer is settled

    // A late order for the payment: the cancel was decided before the order existed and
    // stands, so the order is not released on money being given back.
    let order = payrules::message::decode(
        &std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/fixtures/messages/OrderCreated.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let held = processor.message(&order, at(1)).await.unwrap();
    assert!(held.is_empty(), "{held:?}");

    // While the claim is live the check is retried, never concluded.
    let err = processor
        .timer(&timer, at(1))
        .await
        .expect_err("the cancel is claimed by the dead worker");
    assert!(err.is_retryable(), "{err}");
    assert!(recorder.0.lock().unwrap().is_empty());

    tokio::time::sleep(lease + Duration::from_millis(200)).await;
    let taken = store.take_due(at(2), 10).await.unwrap();
    assert_eq!(taken.len(), 1, "the dead worker's check is taken over");
    let done = processor.timer(&taken[0], at(2)).await.unwrap();
    assert_eq!(
        done.iter().map(|a| a.key.as_str()).collect::<Vec<_>>(),
        [key.as_str()]
    );
    assert_eq!(
        recorder.0.lock().unwrap().as_slice(),
        std::slice::from_ref(&key)
    );
    assert_eq!(
        store.ledger_status(&key).await.unwrap(),
        Some(LedgerStatus::Done)
    );
    assert_eq!(store.timers_pending().await.unwrap(), 0);
    let retried = processor.message(&order, at(3)).await.unwrap();
    assert!(retried.is_empty(), "the money is given back: {retried:?}");
    assert_eq!(
        recorder.0.lock().unwrap().as_slice(),
        std::slice::from_ref(&key)
    );
}

/// Two replicas on one PostgreSQL ledger: one's claim runs out and the other takes it over.
/// The first one's outcome is then refused, with an error naming the key (its message is
/// retried, not acked), and the new owner's outcome stands. Before, `settle` overwrote the row
/// whoever owned it.
#[tokio::test]
async fn a_settle_after_the_claim_was_taken_over_is_refused() {
    use payrules::store::StoreError;
    let url = fresh_pg().await;
    let lease = Duration::from_millis(300);
    let a = SqlStore::connect(&url, lease).await.unwrap();
    let b = SqlStore::connect(&url, lease).await.unwrap();
    let key = "release:o-lost";
    assert_eq!(a.claim(key).await.unwrap(), Claim::Acquired);
    tokio::time::sleep(lease + Duration::from_millis(200)).await;
    assert_eq!(b.claim(key).await.unwrap(), Claim::Acquired, "taken over");
    assert!(!a.renew(key).await.unwrap(), "no longer a's to renew");

    let err = a
        .record(key, LedgerStatus::Failed, Decided::default())
        .await
        .expect_err("a's claim is b's now");
    assert!(
        matches!(&err, StoreError::ClaimLost { key: k } if k == key),
        "{err:?}"
    );
    assert!(err.to_string().contains(key), "{err}");
    assert_eq!(
        b.ledger_status(key).await.unwrap(),
        Some(LedgerStatus::Claimed),
        "b's claim is left as it is"
    );
    b.record(key, LedgerStatus::Done, Decided::default())
        .await
        .unwrap();
    assert!(
        matches!(
            a.record(key, LedgerStatus::Failed, Decided::default())
                .await,
            Err(StoreError::ClaimLost { .. })
        ),
        "a settled key is not overwritten either"
    );
    assert_eq!(
        a.ledger_status(key).await.unwrap(),
        Some(LedgerStatus::Done)
    );
}

/// Leases on PostgreSQL are measured with the server's clock: a replica whose clock runs an
/// hour ahead does not take over a live claim or a taken timer, and one whose clock runs an
/// hour behind holds its claim for the whole lease. Before, each replica computed the expiry
/// with its own clock.
#[tokio::test]
async fn postgres_leases_use_the_database_clock_not_the_replicas() {
    let url = fresh_pg().await;
    let lease = Duration::from_secs(60);
    let hour = chrono::Duration::hours(1);
    let behind = SqlStore::connect(&url, lease)
        .await
        .unwrap()
        .with_clock_skew(-hour);
    let ahead = SqlStore::connect(&url, lease)
        .await
        .unwrap()
        .with_clock_skew(hour);

    assert_eq!(behind.claim("release:o1").await.unwrap(), Claim::Acquired);
    assert_eq!(
        ahead.claim("release:o1").await.unwrap(),
        Claim::Exists(LedgerStatus::Claimed),
        "a live claim is not taken over by a replica whose clock runs ahead"
    );
    assert!(behind.renew("release:o1").await.unwrap());
    assert_eq!(
        ahead.claim("release:o1").await.unwrap(),
        Claim::Exists(LedgerStatus::Claimed),
        "a renewal by a replica whose clock runs behind still lasts a lease"
    );

    behind
        .schedule(Timer {
            payment_id: "p1".into(),
            due: at(0),
            rechecks: 0,
        })
        .await
        .unwrap();
    behind.flush().await.unwrap();
    assert_eq!(behind.take_due(at(1), 10).await.unwrap().len(), 1);
    assert!(
        ahead.take_due(at(1), 10).await.unwrap().is_empty(),
        "a taken timer's lease is live whatever the taker's clock said"
    );
}

/// What a durable SQLite write costs (claim + settle of one key; schedule, take and complete a
/// timer), on a file in the target directory (a real disk, not a tmpfs). A measurement, not a
/// check: `cargo test --release --test it -- --ignored --nocapture store::sqlite_write_cost`.
#[tokio::test]
#[ignore = "a measurement; run by hand"]
async fn sqlite_write_cost() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let store = SqlStore::connect(&sqlite_url(&dir), Duration::from_secs(60))
        .await
        .unwrap();
    let n = 2000;
    let started = std::time::Instant::now();
    for i in 0..n {
        let key = format!("release:o{i}");
        assert_eq!(store.claim(&key).await.unwrap(), Claim::Acquired);
        store
            .record(&key, LedgerStatus::Done, Decided::default())
            .await
            .unwrap();
    }
    let ledger = started.elapsed() / n;
    let started = std::time::Instant::now();
    for i in 0..n {
        let t = Timer {
            payment_id: format!("p{i}"),
            due: at(0),
            rechecks: 0,
        };
        store.schedule(t).await.unwrap();
        for t in store.take_due(at(1), 1).await.unwrap() {
            store.timer_done(&t).await.unwrap();
        }
    }
    let timers = started.elapsed() / n;
    println!("claim+settle: {ledger:?} per key; schedule+take+done: {timers:?} per timer");
}

use crate::support::pg_tls;

/// PostgreSQL over TLS, as managed servers (Cloud SQL, RDS, Azure) require: against a server
/// of the test's own with a throwaway CA, `sslmode=require` connects (encrypted, certificate not
/// checked), `verify-ca` and `verify-full` connect with the right CA given as `sslrootcert`,
/// `verify-full` with a wrong CA fails naming the certificate, and a plain connection is
/// refused by the server (hostssl only). Before, sqlx was built without TLS and every one of
/// these failed.
#[tokio::test]
async fn postgres_over_tls_verifies_the_server_certificate() {
    let Some(server) = pg_tls::TlsPg::start() else {
        return;
    };
    let lease = Duration::from_secs(60);
    let ca = server.ca.display().to_string();
    for query in [
        "sslmode=require".to_string(),
        format!("sslmode=verify-ca&sslrootcert={ca}"),
        format!("sslmode=verify-full&sslrootcert={ca}"),
    ] {
        let store = SqlStore::connect(&server.url(&query), lease)
            .await
            .unwrap_or_else(|e| panic!("{query}: {e}"));
        let key = format!("release:{query}");
        assert_eq!(store.claim(&key).await.unwrap(), Claim::Acquired, "{query}");
    }

    let wrong = format!(
        "sslmode=verify-full&sslrootcert={}",
        server.wrong_ca.display()
    );
    let err = SqlStore::connect(&server.url(&wrong), lease)
        .await
        .err()
        .expect("a certificate no given CA signed is refused");
    let text = err.to_string();
    eprintln!("verify-full with a wrong CA: {text}");
    assert!(
        text.contains("connecting to the PostgreSQL state store")
            && text.contains("invalid peer certificate")
            && text.contains("not signed by a CA in sslrootcert"),
        "{text}"
    );

    let err = SqlStore::connect(&server.url("sslmode=disable"), lease)
        .await
        .err()
        .expect("the server accepts TLS connections only");
    assert!(err.to_string().contains("no encryption"), "{err}");
}

/// Adds `n` processed ids at once, one task each (messages finishing together); the tasks.
fn mark_many(
    store: &Arc<SqlStore>,
    prefix: &str,
    n: usize,
) -> Vec<tokio::task::JoinHandle<Result<(), payrules::store::StoreError>>> {
    (0..n)
        .map(|i| {
            let store = store.clone();
            let id = format!("{prefix}-{i}");
            tokio::spawn(async move { store.mark_processed(&id).await })
        })
        .collect()
}

/// Waits (up to a minute) until the buffer holds `n` entries.
async fn buffer_reaches(store: &SqlStore, n: usize) {
    for _ in 0..600 {
        if store.buffered() >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the buffer holds {}, not {n}", store.buffered());
}

/// Waits for the tasks; every one must succeed.
async fn all_land(tasks: Vec<tokio::task::JoinHandle<Result<(), payrules::store::StoreError>>>) {
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(60), t)
            .await
            .expect("a caller still waits once the store takes writes again")
            .unwrap()
            .unwrap();
    }
}

async fn processed_rows(url: &str, prefix: &str) -> i64 {
    let pool = sqlx::PgPool::connect(url).await.unwrap();
    let n = sqlx::query_scalar("SELECT COUNT(*) FROM processed WHERE message_id LIKE $1")
        .bind(format!("{prefix}-%"))
        .fetch_one(&pool)
        .await
        .unwrap();
    pool.close().await;
    n
}

/// The buffered writes (processed ids) cannot go through: first they hang (another session
/// holds the table locked, as a long migration or a stuck transaction would), then they fail
/// (the server is down). Either way the buffer fills to its bound and stays there, and the
/// messages that add to it wait, not acked, instead of the buffer growing or their ids being
/// dropped; once the store takes writes again every waiting caller returns and every id lands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_takes_no_writes_holds_callers_at_the_buffer_bound() {
    use payrules::store::sql::BUFFER_MAX;
    use sqlx::Connection;
    let direct = fresh_pg().await;
    let db = direct.rsplit('/').next().unwrap().to_string();
    let proxy = Proxy::start().await;
    let store = Arc::new(
        SqlStore::connect(
            &format!("postgres://postgres@127.0.0.1:{}/{db}", proxy.port),
            Duration::from_secs(60),
        )
        .await
        .unwrap(),
    );
    let callers = BUFFER_MAX + 300;

    // Writes hang: the table is locked for writing (reads still work).
    let mut locker = sqlx::PgConnection::connect(&direct).await.unwrap();
    sqlx::query("BEGIN").execute(&mut locker).await.unwrap();
    sqlx::query("LOCK TABLE processed IN EXCLUSIVE MODE")
        .execute(&mut locker)
        .await
        .unwrap();
    let tasks = mark_many(&store, "locked", callers);
    buffer_reaches(&store, BUFFER_MAX).await;
    // Not a speed measure: a moment for the waiting callers to get in, if they could.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        store.buffered(),
        BUFFER_MAX,
        "the buffer stays at its bound"
    );
    let waiting = tasks.iter().filter(|t| !t.is_finished()).count();
    assert!(waiting >= callers - BUFFER_MAX, "{waiting} callers wait");
    assert!(store.is_processed("locked-0").await.unwrap());
    sqlx::query("COMMIT").execute(&mut locker).await.unwrap();
    all_land(tasks).await;
    store.flush().await.unwrap();
    assert_eq!(store.buffered(), 0);
    assert_eq!(processed_rows(&direct, "locked").await, callers as i64);

    // Writes fail: the server is down.
    proxy.down();
    let tasks = mark_many(&store, "down", callers);
    buffer_reaches(&store, BUFFER_MAX).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        store.buffered(),
        BUFFER_MAX,
        "the buffer stays at its bound"
    );
    let waiting = tasks.iter().filter(|t| !t.is_finished()).count();
    assert!(waiting >= callers - BUFFER_MAX, "{waiting} callers wait");
    proxy.up();
    all_land(tasks).await;
    store.flush().await.unwrap();
    assert_eq!(processed_rows(&direct, "down").await, callers as i64);
}

/// A taken timer's lease is renewed only while it is still taken as it was: not once it is
/// done, nor once it was given back (and taken again: another taking, whose due differs).
async fn timer_renewals_hold_only_the_taking(store: &dyn Store) {
    let t = |p: &str, s| Timer {
        payment_id: p.into(),
        due: at(s),
        rechecks: 0,
    };
    assert!(store.schedule(t("r1", 10)).await.unwrap());
    assert!(store.schedule(t("r2", 10)).await.unwrap());
    let taken = store.take_due(at(10), 10).await.unwrap();
    assert_eq!(taken, vec![t("r1", 10), t("r2", 10)]);
    assert!(
        store.renew_timer(&taken[0]).await.unwrap(),
        "taken: renewed"
    );

    store.retry_timer(&taken[0], at(20)).await.unwrap();
    assert!(
        !store.renew_timer(&taken[0]).await.unwrap(),
        "given back: no longer held"
    );
    let again = store.take_due(at(20), 10).await.unwrap();
    assert_eq!(again, vec![t("r1", 20)]);
    assert!(
        !store.renew_timer(&taken[0]).await.unwrap(),
        "the old taking does not renew the new one"
    );
    assert!(store.renew_timer(&again[0]).await.unwrap());

    store.timer_done(&taken[1]).await.unwrap();
    assert!(!store.renew_timer(&taken[1]).await.unwrap(), "done");
    assert!(!store.renew_timer(&t("r-none", 10)).await.unwrap());
}

#[tokio::test]
async fn sqlite_timer_renewals_hold_only_the_taking() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqlStore::connect(&sqlite_url(&dir), Duration::from_secs(60))
        .await
        .unwrap();
    timer_renewals_hold_only_the_taking(&store).await;
}

#[tokio::test]
async fn postgres_timer_renewals_hold_only_the_taking() {
    let url = fresh_pg().await;
    let store = SqlStore::connect(&url, Duration::from_secs(60))
        .await
        .unwrap();
    timer_renewals_hold_only_the_taking(&store).await;
}

/// A check running longer than the lease keeps its timer by renewing it: another replica does
/// not take it over (and check the same payment at once) while the renewals go on, and does
/// once they stop (its holder died).
#[tokio::test]
async fn a_renewed_timer_is_not_taken_over_by_another_replica() {
    let url = fresh_pg().await;
    let lease = Duration::from_secs(3);
    let a = SqlStore::connect(&url, lease).await.unwrap();
    let b = SqlStore::connect(&url, lease).await.unwrap();
    let timer = Timer {
        payment_id: "slow".into(),
        due: at(0),
        rechecks: 0,
    };
    a.schedule(timer.clone()).await.unwrap();
    assert_eq!(a.take_due(at(1), 10).await.unwrap(), vec![timer.clone()]);
    // Two thirds of the lease, a renewal, two thirds again: past the first lease, inside the
    // renewed one.
    tokio::time::sleep(lease * 2 / 3).await;
    assert!(a.renew_timer(&timer).await.unwrap());
    tokio::time::sleep(lease * 2 / 3).await;
    assert!(
        b.take_due(at(1), 10).await.unwrap().is_empty(),
        "the renewed lease holds"
    );
    tokio::time::sleep(lease).await;
    assert_eq!(
        b.take_due(at(1), 10).await.unwrap(),
        vec![timer],
        "without renewals the timer is taken over"
    );
}

/// A capture's or refund's note on its claim (`Store::note`): only the claim's live owner
/// writes it; it is read back with the ledger entry; giving the claim back keeps the key (it
/// reads as claimed) and its note, and the next claim takes it over at once; recording keeps
/// it too; a key without a note is given back as before (forgotten). The same on every store.
async fn notes_outlive_their_claim(store: &dyn Store) {
    use payrules::store::StoreError;
    let lost = |r: Result<(), StoreError>| matches!(r, Err(StoreError::ClaimLost { .. }));
    let key = "refund:p-note";
    assert!(
        lost(store.note(key, "taken_before=0").await),
        "no claim, no note"
    );
    assert_eq!(
        store.ledger_entry(key).await.unwrap(),
        None,
        "nothing written"
    );

    assert_eq!(store.claim(key).await.unwrap(), Claim::Acquired);
    let first = "taken_before=0 amount=333 currency=EUR";
    store.note(key, first).await.unwrap();
    let entry = store.ledger_entry(key).await.unwrap().unwrap();
    assert_eq!(
        (entry.status, entry.note.as_deref()),
        (LedgerStatus::Claimed, Some(first))
    );
    assert_eq!(
        store.ledger_status(key).await.unwrap(),
        Some(LedgerStatus::Claimed)
    );

    store.unclaim(key).await.unwrap();
    assert_eq!(
        store.ledger_status(key).await.unwrap(),
        Some(LedgerStatus::Claimed),
        "a noted key given back reads as claimed, not absent"
    );
    assert_eq!(
        store
            .ledger_entry(key)
            .await
            .unwrap()
            .unwrap()
            .note
            .as_deref(),
        Some(first),
        "giving the claim back keeps its note"
    );
    assert!(
        lost(store.note(key, "overwritten").await),
        "a claim given back is no one's to write on"
    );
    assert_eq!(
        store.claim(key).await.unwrap(),
        Claim::Acquired,
        "taken over at once, no lease to wait for"
    );
    assert_eq!(
        store.claim(key).await.unwrap(),
        Claim::Exists(LedgerStatus::Claimed),
        "and held again"
    );
    assert_eq!(
        store
            .ledger_entry(key)
            .await
            .unwrap()
            .unwrap()
            .note
            .as_deref(),
        Some(first),
        "the retry reads the first attempt's note"
    );
    store
        .record(key, LedgerStatus::Done, Decided::default())
        .await
        .unwrap();
    let done = store.ledger_entry(key).await.unwrap().unwrap();
    assert_eq!(
        (done.status, done.note.as_deref()),
        (LedgerStatus::Done, Some(first)),
        "recording keeps the note"
    );
    assert!(lost(store.note(key, "late").await), "settled: no note");
    assert_eq!(
        store.claim(key).await.unwrap(),
        Claim::Exists(LedgerStatus::Done)
    );

    let plain = "refund:p-plain";
    assert_eq!(store.claim(plain).await.unwrap(), Claim::Acquired);
    store.unclaim(plain).await.unwrap();
    assert_eq!(
        store.ledger_status(plain).await.unwrap(),
        None,
        "without a note, forgotten as before"
    );
}

/// `noted(prefix)` answers exactly the noted keys starting with the prefix, in key order, with
/// their status: an order's return refunds, never another order's whose id starts the same,
/// never a key claimed without a note.
async fn noted_keys_by_prefix(store: &dyn Store) {
    use payrules::store::{Decided, LedgerStatus};
    let keys = [
        "refund:o1:l1:1:p1",
        "refund:o1:l1:2:p1",
        "refund:o1:l2:1:p2",
        "refund:o10:l1:1:p1",
        "refund:o1",
        "refund:o1;x",
    ];
    for k in keys {
        assert_eq!(store.claim(k).await.unwrap(), Claim::Acquired);
        store.note(k, "amount=5 currency=EUR").await.unwrap();
    }
    assert_eq!(
        store.claim("refund:o1:l3:1:p1").await.unwrap(),
        Claim::Acquired
    );
    store
        .record("refund:o1:l1:1:p1", LedgerStatus::Done, Decided::default())
        .await
        .unwrap();
    let got = store.noted("refund:o1:").await.unwrap();
    let got: Vec<(&str, LedgerStatus, &str)> = got
        .iter()
        .map(|n| (n.key.as_str(), n.status, n.note.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            (
                "refund:o1:l1:1:p1",
                LedgerStatus::Done,
                "amount=5 currency=EUR"
            ),
            (
                "refund:o1:l1:2:p1",
                LedgerStatus::Claimed,
                "amount=5 currency=EUR"
            ),
            (
                "refund:o1:l2:1:p2",
                LedgerStatus::Claimed,
                "amount=5 currency=EUR"
            ),
        ]
    );
    assert!(store.noted("refund:o2:").await.unwrap().is_empty());
}

#[tokio::test]
async fn memory_store_keeps_notes_on_claims() {
    notes_outlive_their_claim(&payrules::store::MemoryStore::new()).await;
    noted_keys_by_prefix(&payrules::store::MemoryStore::new()).await;
}

#[tokio::test]
async fn sqlite_store_keeps_notes_on_claims() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqlStore::connect(&sqlite_url(&dir), Duration::from_secs(60))
        .await
        .unwrap();
    notes_outlive_their_claim(&store).await;
    let dir = tempfile::tempdir().unwrap();
    let store = SqlStore::connect(&sqlite_url(&dir), Duration::from_secs(60))
        .await
        .unwrap();
    noted_keys_by_prefix(&store).await;
}

#[tokio::test]
async fn postgres_store_keeps_notes_on_claims() {
    let url = fresh_pg().await;
    let store = SqlStore::connect(&url, Duration::from_secs(60))
        .await
        .unwrap();
    notes_outlive_their_claim(&store).await;
    let url = fresh_pg().await;
    let store = SqlStore::connect(&url, Duration::from_secs(60))
        .await
        .unwrap();
    noted_keys_by_prefix(&store).await;
}

/// A worker claims a refund, notes its baseline and dies (kill -9) before recording. Another
/// worker may not write on the live claim; once the lease passes it takes the claim over and
/// reads the dead one's note, which the dead one can no longer write. On PostgreSQL two
/// replicas side by side; on SQLite (one worker per file) a restart.
#[tokio::test]
async fn a_note_survives_the_takeover_of_a_dead_workers_claim() {
    use payrules::store::StoreError;
    let lease = Duration::from_millis(300);
    let key = "refund:p-dead";
    let note = "taken_before=100 amount=333 currency=EUR";

    let url = fresh_pg().await;
    let dead = SqlStore::connect(&url, lease).await.unwrap();
    let survivor = SqlStore::connect(&url, lease).await.unwrap();
    assert_eq!(dead.claim(key).await.unwrap(), Claim::Acquired);
    dead.note(key, note).await.unwrap();
    assert!(
        matches!(
            survivor.note(key, "not mine").await,
            Err(StoreError::ClaimLost { .. })
        ),
        "only the claim's owner writes its note"
    );
    tokio::time::sleep(lease + Duration::from_millis(200)).await;
    assert!(
        matches!(
            dead.note(key, "lease passed").await,
            Err(StoreError::ClaimLost { .. })
        ),
        "not once its lease has passed"
    );
    assert_eq!(survivor.claim(key).await.unwrap(), Claim::Acquired);
    let entry = survivor.ledger_entry(key).await.unwrap().unwrap();
    assert_eq!(entry.note.as_deref(), Some(note), "the takeover keeps it");
    assert!(
        matches!(
            dead.note(key, "too late").await,
            Err(StoreError::ClaimLost { .. })
        ),
        "the claim is the survivor's now"
    );
    survivor.note(key, note).await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    {
        let crashed = SqlStore::connect(&sqlite_url(&dir), lease).await.unwrap();
        assert_eq!(crashed.claim(key).await.unwrap(), Claim::Acquired);
        crashed.note(key, note).await.unwrap();
        // Dropped without recording: a crash.
    }
    let restarted = SqlStore::connect(&sqlite_url(&dir), lease).await.unwrap();
    assert!(
        matches!(
            restarted.note(key, "not mine").await,
            Err(StoreError::ClaimLost { .. })
        ),
        "the dead worker's live claim is not the restarted one's"
    );
    assert_eq!(
        restarted.claim(key).await.unwrap(),
        Claim::Exists(LedgerStatus::Claimed)
    );
    tokio::time::sleep(lease + Duration::from_millis(200)).await;
    assert_eq!(restarted.claim(key).await.unwrap(), Claim::Acquired);
    assert_eq!(
        restarted
            .ledger_entry(key)
            .await
            .unwrap()
            .unwrap()
            .note
            .as_deref(),
        Some(note)
    );
}
