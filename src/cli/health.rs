//! `payrules health`: exits 0 when a running worker's `/healthz` answers 200 (the image's
//! HEALTHCHECK).

use std::process::ExitCode;
use std::time::Duration;

use crate::telemetry;

/// Runs `payrules health`.
pub async fn health(url: Option<String>) -> ExitCode {
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
