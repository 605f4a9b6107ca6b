//! The `payrules` command: argument parsing and wiring only.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use payrules::app::{build_processor, open_store};
use payrules::config::{self, Settings, SourceSettings};
use payrules::replay::Replay;
use payrules::source::{FileInput, FileSource, PubsubSource, Source, SqsSource};
use payrules::telemetry::{self, SourceState};
use payrules::worker::Worker;

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
    Reconcile(payrules::reconcile::ReconcileArgs),
    /// Explains the rules' decision for an order or a payment, in words (or JSON).
    Explain(payrules::explain::ExplainArgs),
    /// Creates or shows the commercetools Subscription that feeds payrules.
    Subscription {
        #[command(subcommand)]
        command: payrules::subscription::SubscriptionCommand,
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
        } => runtime.block_on(replay(config.as_deref(), state.as_deref(), &inputs)),
        Command::Run { config } => runtime.block_on(run(config.as_deref())),
        Command::CheckConfig { file, connect } => {
            runtime.block_on(check_config(file.as_deref(), connect))
        }
        Command::Health { url } => runtime.block_on(health(url)),
        Command::Reconcile(args) => runtime.block_on(payrules::reconcile::cli(args)),
        Command::Explain(args) => runtime.block_on(payrules::explain::cli(args)),
        Command::Subscription { command } => runtime.block_on(payrules::subscription::cli(command)),
    }
}

async fn replay(config: Option<&Path>, state: Option<&Path>, inputs: &[PathBuf]) -> ExitCode {
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
    let mut write = |actions: Vec<payrules::action::Action>| -> std::io::Result<()> {
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
        Err(payrules::replay::ReplayError::Output(_)) => return ExitCode::FAILURE,
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

async fn check_config(file: Option<&Path>, connect: bool) -> ExitCode {
    let loaded = match config::load(file) {
        Ok(loaded) => loaded,
        Err(e) => {
            eprintln!("payrules check-config: {e}");
            return ExitCode::from(2);
        }
    };
    print!("{}", loaded.describe());
    if connect {
        let failures = payrules::app::check_connections(&loaded.settings).await;
        for (what, result) in &failures {
            match result {
                Ok(detail) => eprintln!("payrules check-config: {what}: ok ({detail})"),
                Err(e) => eprintln!("payrules check-config: {what}: FAILED: {e}"),
            }
        }
        if failures.iter().any(|(_, r)| r.is_err()) {
            return ExitCode::FAILURE;
        }
    }
    eprintln!("payrules check-config: configuration is valid");
    ExitCode::SUCCESS
}

async fn health(url: Option<String>) -> ExitCode {
    let url = url.unwrap_or_else(|| {
        let addr = std::env::var("PAYRULES_HTTP_ADDR")
            .ok()
            .and_then(|a| a.trim().parse().ok())
            .unwrap_or_else(|| std::net::SocketAddr::from(([127, 0, 0, 1], 9464)));
        telemetry::http::local_health_url(addr)
    });
    match telemetry::http::probe(&url, Duration::from_secs(5)).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("payrules health: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: Option<&Path>) -> ExitCode {
    let settings = match config::load(config) {
        Ok(l) => l.settings,
        Err(e) => {
            eprintln!("payrules run: {e}");
            return ExitCode::from(2);
        }
    };
    match start(settings).await {
        Ok(code) => code,
        Err(e) => {
            error!("{e}");
            ExitCode::from(2)
        }
    }
}

async fn start(settings: Settings) -> Result<ExitCode, String> {
    // The signal stops the worker; `stopped` stops the HTTP port once the worker has drained,
    // so the probes answer during the drain.
    let signalled = CancellationToken::new();
    let stopped = CancellationToken::new();
    tokio::spawn({
        let signalled = signalled.clone();
        async move {
            shutdown_signal().await;
            signalled.cancel();
        }
    });
    if let Some(addr) = settings.http_addr {
        let prometheus = telemetry::metrics::install()
            .map_err(|e| format!("cannot install the metrics recorder: {e}"))?;
        tokio::spawn(telemetry::metrics::upkeep(
            prometheus.clone(),
            Duration::from_secs(5),
        ));
        let server = telemetry::http::HttpServer::bind(addr, prometheus)
            .await
            .map_err(|e| format!("cannot listen on {addr} (PAYRULES_HTTP_ADDR): {e}"))?;
        let bound = server.local_addr().map_err(|e| e.to_string())?;
        info!(addr = %bound, "HTTP port open: /metrics, /healthz, /readyz");
        let stop = stopped.clone().cancelled_owned();
        tokio::spawn(async move {
            if let Err(e) = server.serve(stop).await {
                error!(error = %e, "the HTTP port stopped");
            }
        });
    }
    let result = work(settings, signalled).await;
    stopped.cancel();
    result
}

async fn work(settings: Settings, signalled: CancellationToken) -> Result<ExitCode, String> {
    let shutdown = signalled.cancelled_owned();
    tokio::pin!(shutdown);
    // The store first: a replica that cannot reach it must not lease messages it cannot
    // process (readiness says it waits for the store meanwhile).
    let store = if settings.dry_run {
        // A dry run decides on a scratch ledger: what it plans is never recorded where the
        // real workers would find it done.
        warn!(
            "dry run: actions are printed, not executed; decisions use a scratch in-memory ledger, the configured state store is not opened"
        );
        open_store("memory:", settings.claim_lease, &mut shutdown).await
    } else {
        open_store(&settings.state_url, settings.claim_lease, &mut shutdown).await
    }
    .map_err(|e| e.to_string())?;
    let source: Box<dyn Source> = match &settings.source {
        SourceSettings::File { path } => {
            let inputs =
                FileInput::resolve(std::slice::from_ref(path)).map_err(|e| e.to_string())?;
            SourceState {
                source: "file",
                result: Ok(()),
            }
            .emit();
            Box::new(FileSource::new(inputs, Duration::from_secs(30)))
        }
        SourceSettings::Pubsub(pubsub) => Box::new(
            PubsubSource::connect(pubsub)
                .await
                .map_err(|e| format!("Pub/Sub source: {e}"))?,
        ),
        SourceSettings::Sqs(sqs) => Box::new(
            SqsSource::connect(sqs)
                .await
                .map_err(|e| format!("SQS source: {e}"))?,
        ),
    };
    let processor = build_processor(&settings, store, Box::new(std::io::stdout()))?;
    let worker = Worker::new(processor, settings.worker.clone());
    info!(source = ?settings.source, dry_run = settings.dry_run, "payrules worker starting");
    let summary = worker.run(source, shutdown).await;
    Ok(if summary.parked > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => info!("SIGINT received"),
        () = term => info!("SIGTERM received"),
    }
}
