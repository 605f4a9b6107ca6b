//! `payrules subscription`: creates and shows the commercetools Subscription that feeds the
//! worker.

use std::process::ExitCode;

use clap::Subcommand;

/// `payrules subscription …`.
#[derive(Debug, Subcommand)]
pub enum SubscriptionCommand {
    /// Creates the Subscription (or updates the one with this key).
    Create,
    /// Prints the live Subscription and what is missing from it.
    Show,
}

/// Runs a `payrules subscription` command.
pub async fn cli(command: SubscriptionCommand) -> ExitCode {
    eprintln!("payrules subscription {command:?}: not built yet");
    ExitCode::from(2)
}
