//! `payrules run`: the worker, its HTTP port and the shutdown signal; what it runs is wired by
//! [`crate::app`].

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::app::{build_processor, open_source, open_store};
use crate::config::{self, Settings};
use crate::telemetry;
use crate::worker::Worker;

/// Runs `payrules run`.
pub async fn run(config: Option<&Path>) -> ExitCode {
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
    let source = open_source(&settings.source).await?;
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
