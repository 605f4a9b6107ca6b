//! The durable state store on both backends: the embedded SQLite file and the PostgreSQL
//! server that runs on these machines (127.0.0.1:5432, trust auth). Each PostgreSQL test gets
//! a database of its own.

use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use payrules::store::{Claim, LedgerStatus, SqlStore, Store, Timer};

const PG_ADMIN: &str = "postgres://postgres@127.0.0.1:5432/test";

/// A fresh PostgreSQL database; fails (never skips) when the server is not there.
async fn fresh_pg() -> String {
    use sqlx::Executor;
    let name = format!("payrules_{:016x}", fastrand::u64(..));
    let admin = sqlx::PgPool::connect(PG_ADMIN)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL must run at {PG_ADMIN} for these tests: {e}"));
    admin
        .execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .await
        .unwrap();
    format!("postgres://postgres@127.0.0.1:5432/{name}")
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
        .settle("release:o1", LedgerStatus::Done)
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

    assert_eq!(store.claim("cancel:p9").await.unwrap(), Claim::Acquired);
    store.release("cancel:p9").await.unwrap();
    assert_eq!(store.ledger_status("cancel:p9").await.unwrap(), None);
    assert_eq!(store.claim("cancel:p9").await.unwrap(), Claim::Acquired);

    let t = |p: &str, s| Timer {
        payment_id: p.into(),
        due: at(s),
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
    assert_eq!(store.take_due(at(41), 10).await.unwrap(), vec![t("p2", 40)]);
    assert!(
        !store.schedule(t("p1", 50)).await.unwrap(),
        "a done timer is never scheduled again"
    );

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
            .settle("release:o1", LedgerStatus::Done)
            .await
            .unwrap();
        crashed
            .schedule(Timer {
                payment_id: "p7".into(),
                due: at(0),
            })
            .await
            .unwrap();
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
    assert!(
        text.contains("connecting to the PostgreSQL state store"),
        "{text}"
    );
    assert!(!text.contains("hunter2") && text.contains("****"), "{text}");
}
