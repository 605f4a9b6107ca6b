//! `payrules replay`: notifications replayed offline, the planned actions printed one JSON object
//! per line.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::action::Action;
use crate::config;
use crate::replay::{Replay, ReplayError};
use crate::source::FileInput;

/// Runs `payrules replay`.
pub async fn replay(config: Option<&Path>, state: Option<&Path>, inputs: &[PathBuf]) -> ExitCode {
    let rules = match config::merge_with(config, |k| std::env::var(k).ok()).and_then(|c| c.rules())
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("payrules replay: {e}");
            return ExitCode::from(2);
        }
    };
    let mut replay = Replay::new(rules);
    if let Some(dir) = state
        && let Err(errors) = replay.load_state(dir)
    {
        for e in errors {
            eprintln!("payrules replay: {e}");
        }
        return ExitCode::from(2);
    }
    let inputs = match FileInput::resolve(inputs) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("payrules replay: {e}");
            return ExitCode::from(2);
        }
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut write = |actions: Vec<Action>| -> std::io::Result<()> {
        for a in actions {
            writeln!(out, "{}", a.to_json_line())?;
        }
        Ok(())
    };
    let fed = replay
        .feed_inputs(inputs, |actions, skipped| {
            for s in skipped {
                eprintln!("{}: skipped: {}", s.origin, s.error);
            }
            write(actions)
        })
        .await;
    match fed {
        Ok(()) => {}
        Err(ReplayError::Output(_)) => return ExitCode::FAILURE,
        Err(e) => {
            eprintln!("payrules replay: {e}");
            return ExitCode::from(2);
        }
    }
    if out.flush().is_err() {
        return ExitCode::FAILURE;
    }
    let summary = replay.summary();
    eprintln!(
        "payrules replay: {} messages, {} actions, {} subscription test notifications, {} skipped",
        summary.messages,
        summary.actions,
        summary.subscription_tests,
        summary.skipped.len()
    );
    if summary.skipped.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
