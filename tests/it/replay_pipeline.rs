//! The two-thread replay (`payrules replay`, `replay_files`: lines read and decoded on a
//! second thread) plans exactly what the one-thread replay (`Replay::feed`, line by line)
//! plans: the same actions in the same order, the same summary. Checked on every scenario
//! (each alone and all of them in one run), on a generated stream of both message formats,
//! and on the `payrules replay` binary's stdout.

use std::path::{Path, PathBuf};

use payrules::replay::{Replay, ReplayOutput, replay_files};
use payrules::rules::Rules;

use crate::support::fixtures;

use crate::support::stream;

use fixtures::{rules_for, scenarios};

/// The one-thread replay: every non-empty line fed in order, then the remaining timers.
async fn one_thread(files: &[PathBuf], rules: Rules) -> ReplayOutput {
    let mut replay = Replay::new(rules);
    let mut actions = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(file).unwrap();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let origin = format!("{}:{}", file.display(), i + 1);
            actions.extend(replay.feed(&origin, line.as_bytes()).await);
        }
    }
    actions.extend(replay.finish().await);
    ReplayOutput {
        actions,
        summary: replay.summary().clone(),
    }
}

fn lines(out: &ReplayOutput) -> Vec<String> {
    out.actions.iter().map(|a| a.to_json_line()).collect()
}

#[tokio::test]
async fn every_scenario_plans_the_same_actions_on_two_threads_as_on_one() {
    let all = scenarios();
    assert!(all.len() > 30, "the scenarios are found: {}", all.len());
    for stream in &all {
        let rules = rules_for(stream);
        let one = one_thread(std::slice::from_ref(stream), rules.clone()).await;
        let two = replay_files(std::slice::from_ref(stream), rules, None)
            .await
            .unwrap();
        assert_eq!(lines(&two), lines(&one), "{}", stream.display());
        assert_eq!(two.summary, one.summary, "{}", stream.display());
    }
    // All of them in one run: batches span files, timers of one file fire in the next.
    let one = one_thread(&all, Rules::default()).await;
    let two = replay_files(&all, Rules::default(), None).await.unwrap();
    assert!(!one.actions.is_empty());
    assert_eq!(lines(&two), lines(&one));
    assert_eq!(two.summary, one.summary);
}

#[tokio::test]
async fn a_generated_stream_of_both_formats_plans_the_same_actions_on_two_threads() {
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for (name, cfg) in [
        (
            "platform.jsonl",
            stream::GenConfig {
                messages: 40_000,
                seed: 11,
                ..stream::GenConfig::default()
            },
        ),
        (
            "rich-mixed.jsonl",
            stream::GenConfig {
                messages: 40_000,
                seed: 12,
                cloudevents_share: 0.5,
                shape: stream::Shape::Rich,
                ..stream::GenConfig::default()
            },
        ),
    ] {
        let s = stream::generate(&cfg);
        let path = dir.path().join(name);
        s.write_jsonl(&path).unwrap();
        let one = one_thread(std::slice::from_ref(&path), Rules::default()).await;
        let two = replay_files(std::slice::from_ref(&path), Rules::default(), None)
            .await
            .unwrap();
        let e = &s.expected;
        let count = |kind: &str| {
            one.actions
                .iter()
                .filter(|a| a.to_json_line().contains(kind))
                .count()
        };
        assert_eq!(count("\"release_order\""), e.releases, "{name}");
        assert_eq!(
            count("\"cancel_payment\""),
            e.cancels_timer + e.cancels_event,
            "{name}"
        );
        assert!(
            one.summary.skipped.is_empty(),
            "{name}: {:?}",
            one.summary.skipped
        );
        assert_eq!(lines(&two), lines(&one), "{name}");
        assert_eq!(two.summary, one.summary, "{name}");
        files.push(path);
    }

    // The binary: stdout is the same lines, in the same order.
    let one = one_thread(&files, Rules::default()).await;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_payrules"))
        .arg("replay")
        .args(&files)
        .env_remove("PAYRULES_CONFIG")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let printed: Vec<String> = stdout.lines().map(str::to_string).collect();
    assert_eq!(printed, lines(&one));
}

#[tokio::test]
async fn a_bad_line_is_skipped_with_its_origin_and_a_missing_file_stops_the_replay() {
    let dir = tempfile::tempdir().unwrap();
    let good = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/scenarios/01-authorized-then-order.jsonl");
    let mut text = std::fs::read_to_string(&good).unwrap();
    text.insert_str(0, "{not json\n\n");
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(&bad, text).unwrap();
    let one = one_thread(std::slice::from_ref(&bad), Rules::default()).await;
    let two = replay_files(std::slice::from_ref(&bad), Rules::default(), None)
        .await
        .unwrap();
    assert_eq!(two.summary.skipped.len(), 1);
    assert_eq!(
        two.summary.skipped[0].origin,
        format!("{}:1", bad.display())
    );
    assert_eq!(two.summary, one.summary);
    assert_eq!(lines(&two), lines(&one));

    let missing = dir.path().join("missing.jsonl");
    let err = replay_files(&[bad, missing.clone()], Rules::default(), None)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains(&missing.display().to_string()),
        "{err}"
    );
}
