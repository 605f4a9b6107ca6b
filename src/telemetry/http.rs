//! The HTTP port (`PAYRULES_HTTP_ADDR`): `/metrics`, `/healthz`, `/readyz`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;

use super::status::{STALL_AFTER, status};

/// What the handlers share.
struct HttpState {
    /// Renders `/metrics`.
    prometheus: PrometheusHandle,
}

/// The port, bound.
pub struct HttpServer {
    /// The bound listener (the address may have been `:0`).
    listener: TcpListener,
    /// The routes.
    router: Router,
}

impl HttpServer {
    /// Binds `addr`.
    ///
    /// # Errors
    /// The address cannot be bound (in use, no permission).
    pub async fn bind(addr: SocketAddr, prometheus: PrometheusHandle) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let state = Arc::new(HttpState { prometheus });
        let router = Router::new()
            .route("/metrics", get(metrics))
            .route("/healthz", get(healthz))
            .route("/readyz", get(readyz))
            .with_state(state);
        Ok(Self { listener, router })
    }

    /// The bound address.
    ///
    /// # Errors
    /// The socket has no local address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` resolves.
    ///
    /// # Errors
    /// Accepting failed for good.
    pub async fn serve(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        axum::serve(self.listener, self.router)
            .with_graceful_shutdown(shutdown)
            .await
    }
}

async fn metrics(State(state): State<Arc<HttpState>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.prometheus.render(),
    )
        .into_response()
}

async fn healthz() -> Response {
    let live = status().liveness(STALL_AFTER);
    let code = if live.status == "ok" {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, axum::Json(live)).into_response()
}

async fn readyz() -> Response {
    let report = status().readiness();
    let code = if report.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, axum::Json(report)).into_response()
}

/// `payrules health [URL]`: whether `/healthz` answers 200 within `timeout`.
///
/// # Errors
/// What went wrong, in words.
pub async fn probe(url: &str, timeout: Duration) -> Result<(), String> {
    let client = reqwest::Client::builder()
        .timeout(timeout)
        .build()
        .map_err(|e| format!("cannot build an HTTP client: {e}"))?;
    let resp = client
        .get(url)
        .send()
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    let code = resp.status();
    let body = resp.text().await.unwrap_or_default();
    if code.is_success() {
        Ok(())
    } else {
        Err(format!("{url} answered {code}: {}", body.trim()))
    }
}

/// The `/healthz` URL of a worker listening on `addr` (`0.0.0.0:9464` → `127.0.0.1:9464`).
pub fn local_health_url(addr: SocketAddr) -> String {
    let host = if addr.ip().is_unspecified() {
        if addr.is_ipv4() {
            "127.0.0.1".to_string()
        } else {
            "[::1]".to_string()
        }
    } else if addr.is_ipv6() {
        format!("[{}]", addr.ip())
    } else {
        addr.ip().to_string()
    };
    format!("http://{host}:{}/healthz", addr.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_url_of_an_unspecified_address_is_loopback() {
        assert_eq!(
            local_health_url("0.0.0.0:9464".parse().unwrap()),
            "http://127.0.0.1:9464/healthz"
        );
        assert_eq!(
            local_health_url("[::]:9464".parse().unwrap()),
            "http://[::1]:9464/healthz"
        );
        assert_eq!(
            local_health_url("10.0.0.5:80".parse().unwrap()),
            "http://10.0.0.5:80/healthz"
        );
    }
}
