//! `payrules reconcile`: its arguments, the window, the progress bar and the summary line; the
//! reconciling itself is [`crate::reconcile`]'s.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use chrono::{DateTime, Utc};
use clap::Args;
use indicatif::ProgressBar;

use crate::config;
use crate::reconcile::{Reconciler, Summary, parse_when, stamp};

/// `payrules reconcile …`.
#[derive(Debug, Args)]
pub struct ReconcileArgs {
    /// Start of the window: a duration back from now (`3h`, `90m`) or an RFC 3339 timestamp.
    #[arg(long)]
    pub since: String,
    /// End of the window (default: now), in the same forms.
    #[arg(long)]
    pub until: Option<String>,
    /// Print the actions the window calls for (replay's JSON lines) without executing any or
    /// writing the ledger.
    #[arg(long)]
    pub dry_run: bool,
    /// TOML configuration; environment variables override it (the commercetools client, the
    /// state store, the executors).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Messages per page (the API allows at most 500).
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=500))]
    pub page_size: u32,
}

/// Runs `payrules reconcile`.
pub async fn cli(args: ReconcileArgs) -> ExitCode {
    let (since, until) = match window(&args, Utc::now()) {
        Ok(w) => w,
        Err(e) => {
            eprintln!("payrules reconcile: {e}");
            return ExitCode::from(2);
        }
    };
    // The source is not used: a file source with no path must not stop the configuration.
    let loaded = config::load_with(args.config.as_deref(), |k| {
        std::env::var(k)
            .ok()
            .or_else(|| (k == "PAYRULES_FILE_PATH").then(|| "-".to_string()))
    });
    let settings = match loaded {
        Ok(l) => l.settings,
        Err(e) => {
            eprintln!("payrules reconcile: {e}");
            return ExitCode::from(2);
        }
    };
    // `dry_run = true` in the file or the environment is a dry run too: it never writes the
    // ledger the real workers rely on.
    let dry_run = args.dry_run || settings.dry_run;
    let reconciler = match Reconciler::new(settings, dry_run).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("payrules reconcile: {e}");
            return ExitCode::from(2);
        }
    };
    let window_ms = |t: DateTime<Utc>| u64::try_from((t - since).num_milliseconds()).unwrap_or(0);
    let bar = progress_bar(window_ms(until));
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let result = reconciler
        .run(
            since,
            until,
            args.page_size,
            |a| {
                if dry_run {
                    let _ = writeln!(out, "{}", a.to_json_line());
                }
            },
            |read, reached| {
                if let Some(b) = &bar {
                    if let Some(t) = reached {
                        b.set_position(window_ms(t).min(b.length().unwrap_or(0)));
                    }
                    b.set_message(format!("{read} read"));
                }
            },
        )
        .await;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let summary = match result {
        Ok(s) => s,
        Err(e) => {
            eprintln!("payrules reconcile: {e}");
            return ExitCode::FAILURE;
        }
    };
    print_summary(since, until, &summary, dry_run);
    for f in &summary.failures {
        eprintln!("payrules reconcile: failed: {f}");
    }
    if summary.failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// `--since` .. `--until` (default: now).
fn window(
    args: &ReconcileArgs,
    now: DateTime<Utc>,
) -> Result<(DateTime<Utc>, DateTime<Utc>), String> {
    parse_when(&args.since, now).and_then(|since| {
        let until = match &args.until {
            Some(u) => parse_when(u, now)?,
            None => now,
        };
        if since >= until {
            return Err(format!(
                "--since {} is not before --until {}",
                stamp(since),
                stamp(until)
            ));
        }
        Ok((since, until))
    })
}

/// A bar over the window's time, on a terminal (the Messages API gives no total): how far the
/// messages read so far have come from `since` toward `until`, `length` milliseconds away.
fn progress_bar(length: u64) -> Option<ProgressBar> {
    std::io::stderr().is_terminal().then(|| {
        let b = ProgressBar::new(length.max(1));
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{spinner} [{bar:30}] {percent:>3}% of the window  {msg}",
        ) {
            b.set_style(style.progress_chars("=> "));
        }
        b.set_message("reading");
        b.enable_steady_tick(Duration::from_millis(200));
        b
    })
}

/// The run's summary line, on stderr.
fn print_summary(since: DateTime<Utc>, until: DateTime<Utc>, summary: &Summary, dry_run: bool) {
    let actions: Vec<String> = summary
        .actions
        .iter()
        .map(|(k, n)| format!("{n} {k}"))
        .collect();
    eprintln!(
        "payrules reconcile: {} .. {}{}: {} {} read, {} could not make an action due, {} already processed, {} grace-period checks, actions {}: {}, {} already done, {} failed",
        stamp(since),
        stamp(until),
        if summary.swept {
            " (query sweep: the Messages API is not enabled)"
        } else {
            ""
        },
        summary.read,
        if summary.swept {
            "payments"
        } else {
            "messages"
        },
        summary.inert,
        summary.already_processed,
        summary.timers_fired,
        if dry_run { "called for" } else { "taken" },
        if actions.is_empty() {
            "none".to_string()
        } else {
            actions.join(", ")
        },
        summary.already_done,
        summary.failures.len()
    );
}
