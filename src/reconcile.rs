//! `payrules reconcile`: feeds the messages of a past window through the same path as `run`.

use std::process::ExitCode;

use clap::Args;

/// `payrules reconcile …`.
#[derive(Debug, Args)]
pub struct ReconcileArgs {
    /// Start of the window: a duration back from now (`3h`) or an RFC 3339 timestamp.
    #[arg(long)]
    pub since: String,
}

/// Runs `payrules reconcile`.
pub async fn cli(args: ReconcileArgs) -> ExitCode {
    eprintln!("payrules reconcile {args:?}: not built yet");
    ExitCode::from(2)
}
