//! For your own tests: replay fixture streams through the rules and compare what they plan
//! with an expected-actions file — `NAME.expected.jsonl`, one action per line, exactly as
//! `payrules replay` prints them (so a reviewed run's output can become the expectation).
//!
//! Only the fields of the output contract are compared ([`CONTRACT`]: action, rule, key,
//! payment id, order id, message id, time); details after them may grow between versions.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! use std::path::Path;
//!
//! let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/scenarios");
//! // Replays 01-authorized-then-order.jsonl (with 01-authorized-then-order.toml when there is
//! // one) and compares with 01-authorized-then-order.expected.jsonl.
//! payrules::testing::check_scenario(&dir.join("01-authorized-then-order.jsonl"))
//!     .await
//!     .unwrap();
//!
//! // Or step by step, with rules of your own:
//! let out = payrules::replay::replay_files(
//!     &[dir.join("01-authorized-then-order.jsonl")],
//!     payrules::rules::Rules::default(),
//!     None,
//! )
//! .await
//! .unwrap();
//! let want =
//!     payrules::testing::read_actions(&dir.join("01-authorized-then-order.expected.jsonl"))
//!         .unwrap();
//! assert_eq!(want[0].action, payrules::action::ActionKind::ReleaseOrder);
//! payrules::testing::compare(&out.actions, &want).unwrap();
//! # }
//! ```

use std::fmt;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::action::Action;
use crate::replay::{ReplayError, replay_files};

/// The fields of a replay output line that are compared: the output contract.
pub const CONTRACT: [&str; 7] = [
    "action",
    "rule",
    "key",
    "payment_id",
    "order_id",
    "message_id",
    "at",
];

/// Why a check failed.
#[derive(Debug, thiserror::Error)]
pub enum TestingError {
    /// A file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// What went wrong.
        source: std::io::Error,
    },
    /// A line of an expected-actions file is not an action.
    #[error("{path}:{line}: not an action line: {detail}")]
    NotAnAction {
        /// The file.
        path: String,
        /// 1-based line number.
        line: usize,
        /// What serde said.
        detail: String,
    },
    /// The rule settings (`NAME.toml`) are invalid.
    #[error("{path}: {detail}")]
    Config {
        /// The file.
        path: String,
        /// What was wrong.
        detail: String,
    },
    /// The stream could not be replayed.
    #[error(transparent)]
    Replay(#[from] ReplayError),
    /// The replay skipped inputs it could not decode.
    #[error("{} inputs skipped: {}", .0.len(), .0.join("; "))]
    Skipped(Vec<String>),
    /// The actions differ.
    #[error(transparent)]
    Mismatch(#[from] Mismatch),
}

/// Planned and expected actions differ; the message shows both, as contract fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    /// The planned actions' contract fields, one JSON object per line.
    pub got: Vec<String>,
    /// The expected actions' contract fields.
    pub want: Vec<String>,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "the planned actions differ from the expected ones")?;
        writeln!(f, "  got ({}):", self.got.len())?;
        for l in &self.got {
            writeln!(f, "    {l}")?;
        }
        writeln!(f, "  want ({}):", self.want.len())?;
        for l in &self.want {
            writeln!(f, "    {l}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Mismatch {}

/// An action's contract fields as one compact JSON object.
fn contract_line(a: &Action) -> String {
    let v = serde_json::to_value(a).unwrap_or(Value::Null);
    let mut out = serde_json::Map::new();
    for k in CONTRACT {
        out.insert(k.to_string(), v.get(k).cloned().unwrap_or(Value::Null));
    }
    Value::Object(out).to_string()
}

/// Compares planned with expected actions, in order, on their [`CONTRACT`] fields.
///
/// # Errors
/// A [`Mismatch`] showing both lists.
pub fn compare(got: &[Action], want: &[Action]) -> Result<(), Mismatch> {
    let got: Vec<String> = got.iter().map(contract_line).collect();
    let want: Vec<String> = want.iter().map(contract_line).collect();
    if got == want {
        Ok(())
    } else {
        Err(Mismatch { got, want })
    }
}

/// Reads an expected-actions file: one action per line as `payrules replay` prints it; empty
/// lines are skipped.
///
/// # Errors
/// The file cannot be read, or a line is not an action (the error names the line).
pub fn read_actions(path: &Path) -> Result<Vec<Action>, TestingError> {
    let text = std::fs::read_to_string(path).map_err(|source| TestingError::Read {
        path: path.display().to_string(),
        source,
    })?;
    let mut actions = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let action = serde_json::from_str(line).map_err(|e| TestingError::NotAnAction {
            path: path.display().to_string(),
            line: i + 1,
            detail: e.to_string(),
        })?;
        actions.push(action);
    }
    Ok(actions)
}

/// Replays `stream` (`NAME.jsonl`) with the rule settings of `NAME.toml` when it exists
/// (defaults otherwise; the environment is not read) and compares the planned actions with
/// `NAME.expected.jsonl`.
///
/// # Errors
/// Any of [`TestingError`]: unreadable files, skipped inputs, or a [`Mismatch`].
pub async fn check_scenario(stream: &Path) -> Result<(), TestingError> {
    let sibling = |suffix: &str| -> PathBuf {
        let name = stream
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        let stem = name.strip_suffix(".jsonl").unwrap_or(&name);
        stream.with_file_name(format!("{stem}{suffix}"))
    };
    let toml = sibling(".toml");
    let file = toml.exists().then_some(toml.as_path());
    let rules = crate::config::merge_with(file, |_| None)
        .and_then(|c| c.rules())
        .map_err(|e| TestingError::Config {
            path: toml.display().to_string(),
            detail: e.to_string(),
        })?;
    let want = read_actions(&sibling(".expected.jsonl"))?;
    let out = replay_files(&[stream], rules, None).await?;
    if !out.summary.skipped.is_empty() {
        return Err(TestingError::Skipped(
            out.summary
                .skipped
                .iter()
                .map(|s| format!("{}: {}", s.origin, s.error))
                .collect(),
        ));
    }
    compare(&out.actions, &want)?;
    Ok(())
}
