//! `payrules explain order ID | payment ID`: the decision as the rules see it now, in words.

use std::process::ExitCode;

use clap::Args;

/// `payrules explain …`.
#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// `order` or `payment`.
    pub kind: String,
    /// The resource id.
    pub id: String,
}

/// Runs `payrules explain`.
pub async fn cli(args: ExplainArgs) -> ExitCode {
    eprintln!("payrules explain {args:?}: not built yet");
    ExitCode::from(2)
}
