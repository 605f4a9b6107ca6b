//! The `payrules` command: argument parsing only; each command is in `cli/` (of the library),
//! the wiring in `app.rs`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use payrules::cli::{check_config, explain, health, reconcile, replay, run, subscription};
use payrules::telemetry;

#[derive(Parser)]
#[command(
    name = "payrules",
    version,
    about = "Payment rules for commercetools: release authorized orders, cancel orphaned authorizations"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Replays notifications offline and prints the planned actions, one JSON object per line.
    Replay {
        /// TOML configuration (only the rules are used).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Snapshots: DIR/payments/*.json and DIR/orders/*.json.
        #[arg(long)]
        state: Option<PathBuf>,
        /// .json files, .jsonl files, directories, or - for stdin.
        #[arg(required = true)]
        inputs: Vec<PathBuf>,
    },
    /// Runs the worker.
    Run {
        /// TOML configuration; environment variables override it.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Validates a configuration exactly as `run` does, lists every problem, prints the
    /// effective configuration (secrets masked) and where each value came from.
    CheckConfig {
        /// TOML configuration; environment variables override it.
        file: Option<PathBuf>,
        /// Also try the store, the source, a commercetools token (and its scopes) and the
        /// Checkout host.
        #[arg(long)]
        connect: bool,
    },
    /// Exits 0 when a running worker's /healthz answers 200 (the image's HEALTHCHECK).
    Health {
        /// Default: /healthz on PAYRULES_HTTP_ADDR's port on loopback, else
        /// http://127.0.0.1:9464/healthz.
        url: Option<String>,
    },
    /// Feeds the messages of a past window (the Messages Query API) through the same path as
    /// `run`: what an outage left undone is done, once.
    Reconcile(reconcile::ReconcileArgs),
    /// Explains the rules' decision for an order or a payment, in words (or JSON).
    Explain(explain::ExplainArgs),
    /// Creates or shows the commercetools Subscription that feeds payrules.
    Subscription {
        #[command(subcommand)]
        command: subscription::SubscriptionCommand,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = telemetry::logging::init() {
        eprintln!("payrules: {e}");
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("payrules: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command {
        Command::Replay {
            config,
            state,
            inputs,
        } => runtime.block_on(replay::replay(config.as_deref(), state.as_deref(), &inputs)),
        Command::Run { config } => runtime.block_on(run::run(config.as_deref())),
        Command::CheckConfig { file, connect } => {
            runtime.block_on(check_config::check_config(file.as_deref(), connect))
        }
        Command::Health { url } => runtime.block_on(health::health(url)),
        Command::Reconcile(args) => runtime.block_on(reconcile::cli(args)),
        Command::Explain(args) => runtime.block_on(explain::cli(args)),
        Command::Subscription { command } => runtime.block_on(subscription::cli(command)),
    }
}
