//! Replays every scenario in fixtures/scenarios and compares the planned actions with the
//! expected file beside it. Adding a scenario is adding two files: `NAME.jsonl` and
//! `NAME.expected.jsonl` (plus `NAME.toml` when it needs rule settings).

use std::path::{Path, PathBuf};

use payrules::config;
use payrules::replay::replay_files;
use payrules::rules::Rules;
use serde_json::Value;

/// The fields the replay output contract fixes; details after them may grow.
const CONTRACT: [&str; 7] = [
    "action",
    "rule",
    "key",
    "payment_id",
    "order_id",
    "message_id",
    "at",
];

fn project(v: &Value) -> Value {
    let mut out = serde_json::Map::new();
    for k in CONTRACT {
        out.insert(k.to_string(), v.get(k).cloned().unwrap_or(Value::Null));
    }
    Value::Object(out)
}

fn read_expected(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        .collect()
}

fn rules_for(stream: &Path) -> Rules {
    let toml = stream.with_extension("toml");
    let file = toml.exists().then_some(toml.as_path());
    config::merge_with(file, |_| None)
        .and_then(|c| c.rules())
        .unwrap_or_else(|e| panic!("{}: {e}", toml.display()))
}

fn scenarios() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/scenarios");
    let mut found: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.ends_with(".jsonl") && !name.ends_with(".expected.jsonl")
        })
        .collect();
    found.sort();
    found
}

#[tokio::test]
async fn every_scenario_plans_exactly_its_expected_actions() {
    let scenarios = scenarios();
    assert!(
        scenarios.len() >= 12,
        "expected at least 12 scenarios, found {}",
        scenarios.len()
    );
    let mut failures = Vec::new();
    for stream in &scenarios {
        let expected_path = PathBuf::from(
            stream
                .to_string_lossy()
                .replace(".jsonl", ".expected.jsonl"),
        );
        let expected = read_expected(&expected_path);
        let out = replay_files(&[stream], rules_for(stream), None)
            .await
            .unwrap();
        assert!(
            out.summary.skipped.is_empty(),
            "{}: skipped {:?}",
            stream.display(),
            out.summary.skipped
        );
        let got: Vec<Value> = out
            .actions
            .iter()
            .map(|a| project(&serde_json::to_value(a).unwrap()))
            .collect();
        let want: Vec<Value> = expected.iter().map(project).collect();
        if got != want {
            failures.push(format!(
                "{}\n  got:  {}\n  want: {}",
                stream.display(),
                got.iter()
                    .map(Value::to_string)
                    .collect::<Vec<_>>()
                    .join("\n        "),
                want.iter()
                    .map(Value::to_string)
                    .collect::<Vec<_>>()
                    .join("\n        ")
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "scenarios differ:\n{}",
        failures.join("\n")
    );
}

#[tokio::test]
async fn replaying_a_scenario_twice_in_one_stream_changes_nothing() {
    // Every message delivered twice, the whole stream again: the same decisions, once each.
    for stream in scenarios() {
        let once = replay_files(&[&stream], rules_for(&stream), None)
            .await
            .unwrap();
        let twice = replay_files(&[&stream, &stream], rules_for(&stream), None)
            .await
            .unwrap();
        let keys = |o: &payrules::replay::ReplayOutput| {
            o.actions.iter().map(|a| a.key.clone()).collect::<Vec<_>>()
        };
        assert_eq!(keys(&once), keys(&twice), "{}", stream.display());
    }
}

#[tokio::test]
async fn snapshots_from_a_state_directory_count_as_of_their_version() {
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/state");
    let stream = base.join("stream.jsonl");
    let with_state = replay_files(&[&stream], Rules::default(), Some(&base))
        .await
        .unwrap();
    let want: Vec<Value> = read_expected(&base.join("expected.jsonl"))
        .iter()
        .map(project)
        .collect();
    let got: Vec<Value> = with_state
        .actions
        .iter()
        .map(|a| project(&serde_json::to_value(a).unwrap()))
        .collect();
    assert_eq!(got, want);
    let without = replay_files(&[&stream], Rules::default(), None)
        .await
        .unwrap();
    assert!(
        without.actions.is_empty(),
        "the stream alone does not know the order"
    );
}
