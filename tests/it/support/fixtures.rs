//! The scenario fixtures (`fixtures/scenarios`), for every test that replays or runs them:
//! their paths, their lines, and the rules each one is run with. Needs no peer.

use std::path::{Path, PathBuf};

use payrules::config;
use payrules::rules::Rules;

/// `fixtures/scenarios`.
pub(crate) fn scenarios_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/scenarios")
}

/// `fixtures/scenarios/NAME`.
pub(crate) fn scenario(name: &str) -> PathBuf {
    scenarios_dir().join(name)
}

/// Every scenario stream (`*.jsonl` but not `*.expected.jsonl`), sorted by name.
pub(crate) fn scenarios() -> Vec<PathBuf> {
    let dir = scenarios_dir();
    let mut found: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("entry").path())
        .filter(|p| {
            let name = p.file_name().unwrap_or_default().to_string_lossy();
            name.ends_with(".jsonl") && !name.ends_with(".expected.jsonl")
        })
        .collect();
    found.sort();
    found
}

/// The messages of a scenario: its non-empty lines, trimmed.
pub(crate) fn scenario_lines(name: &str) -> Vec<Vec<u8>> {
    let path = scenario(name);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| l.as_bytes().to_vec())
        .collect()
}

/// The scenario's rule settings, `NAME.toml` beside `NAME.jsonl`, when there is one.
pub(crate) fn config_for(stream: &Path) -> Option<PathBuf> {
    let toml = stream.with_extension("toml");
    toml.exists().then_some(toml)
}

/// The rules a scenario runs with: its `NAME.toml` over the defaults (no environment).
pub(crate) fn rules_for(stream: &Path) -> Rules {
    let toml = config_for(stream);
    config::merge_with(toml.as_deref(), |_| None)
        .and_then(|c| c.rules())
        .unwrap_or_else(|e| {
            let file = toml.unwrap_or_else(|| stream.with_extension("toml"));
            panic!("{}: {e}", file.display())
        })
}

/// The rules `payrules run` uses without a configuration file.
pub(crate) fn default_rules() -> Rules {
    config::merge_with(None, |_| None)
        .and_then(|c| c.rules())
        .expect("the default rules")
}
