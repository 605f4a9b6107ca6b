//! commercetools errors: what a failure means for retrying (Retry), the error type and reading it
//! from a response.

use reqwest::Response;
use serde::Deserialize;
use std::fmt;
use std::time::Duration;

/// What kind of failure, for the retry decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Connection error, timeout, 502, 503, 504: retry with backoff.
    Backoff,
    /// 429: retry after the given delay.
    After(Duration),
    /// 500, or a timeout after the request was sent: the request may have taken effect;
    /// re-read before retrying a write.
    Verify,
    /// 409 ConcurrentModification: re-read, re-decide, retry.
    Conflict,
    /// The credentials or the configuration are refused: 401 (after a token refresh), 403, a
    /// token endpoint that refuses the client, a redirect, an endpoint that is not there. An
    /// outage an operator fixes (a secret rotated, a scope removed): retried with the outage
    /// policy, never recorded as failed for good; `/readyz` names it meanwhile.
    Configuration,
    /// 400, 404 of a resource: retrying the same request will not help.
    Never,
}

/// A failed commercetools request. Carries commercetools' error codes; never a token or secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CtpError {
    /// What to do about it.
    pub retry: Retry,
    /// The HTTP status, when there was a response.
    pub status: Option<u16>,
    /// commercetools' error codes (`errors[].code`), e.g. `InvalidOperation`.
    pub codes: Vec<String>,
    /// What happened, with the request's method and path.
    pub message: String,
}

impl fmt::Display for CtpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.message)?;
        if let Some(s) = self.status {
            write!(f, " (HTTP {s}")?;
            if !self.codes.is_empty() {
                write!(f, ", {}", self.codes.join(", "))?;
            }
            write!(f, ")")?;
        }
        Ok(())
    }
}

impl std::error::Error for CtpError {}

impl CtpError {
    /// Whether a later attempt may succeed.
    pub fn is_retryable(&self) -> bool {
        self.retry != Retry::Never
    }

    /// The delay the server asked for.
    pub fn retry_after(&self) -> Option<Duration> {
        match self.retry {
            Retry::After(d) => Some(d),
            _ => None,
        }
    }

    /// Whether the credentials or the configuration are refused (see [`Retry::Configuration`]).
    pub fn is_configuration(&self) -> bool {
        self.retry == Retry::Configuration
    }

    pub(super) fn transport(what: &str, e: &reqwest::Error) -> Self {
        // reqwest's Display names the URL; ours carry no credentials (they go in headers).
        let kind = if e.is_timeout() {
            "timed out"
        } else if e.is_connect() {
            "could not connect"
        } else {
            "failed"
        };
        CtpError {
            // A timeout after the connection was made: the request was sent and its answer is
            // unknown — a write may have happened, exactly as after a 500.
            retry: if e.is_timeout() && !e.is_connect() {
                Retry::Verify
            } else {
                Retry::Backoff
            },
            status: None,
            codes: Vec::new(),
            message: format!(
                "{what} {kind}: {}",
                crate::redact::http_error_text(e, crate::redact::UrlKind::Plain)
            ),
        }
    }

    /// The `currentVersion` a 409 reported, when present.
    pub fn is_conflict(&self) -> bool {
        self.retry == Retry::Conflict
    }
}

#[derive(Deserialize)]
pub(super) struct ErrorBody {
    #[serde(default)]
    message: Option<String>,
    /// OAuth's own error field (the token endpoint), where `message` is absent.
    #[serde(default)]
    error_description: Option<String>,
    #[serde(default)]
    errors: Vec<ErrorItem>,
}

#[derive(Deserialize)]
pub(super) struct ErrorItem {
    #[serde(default)]
    code: Option<String>,
}

/// Classifies a non-success response (every commercetools call of payrules, the subscription
/// command's included).
pub(crate) async fn error_from(what: &str, resp: Response) -> CtpError {
    let status = resp.status();
    let retry_after = retry_after(&resp);
    let redirect_host = status
        .is_redirection()
        .then(|| redirect_host(&resp))
        .flatten();
    let body = read_limited(resp, ERROR_BODY_LIMIT)
        .await
        .unwrap_or_default();
    let body = String::from_utf8_lossy(&body);
    let parsed: Option<ErrorBody> = serde_json::from_str(&body).ok();
    let codes: Vec<String> = parsed
        .as_ref()
        .map(|b| b.errors.iter().filter_map(|e| e.code.clone()).collect())
        .unwrap_or_default();
    let detail = parsed
        .and_then(|b| b.message.or(b.error_description))
        .unwrap_or_default();
    let retry = match status.as_u16() {
        300..=399 => Retry::Configuration,
        401 | 403 => Retry::Configuration,
        409 => Retry::Conflict,
        429 => Retry::After(retry_after.unwrap_or(Duration::from_secs(1))),
        500 => Retry::Verify,
        502..=504 => Retry::Backoff,
        // Checkout could not reach the connector, or is itself unavailable: an outage, not a
        // refusal, whatever the status (ConnectorFailed comes with a 400). Nothing happened, so
        // it is retried; recorded as failed, the authorization would stay blocked for good.
        _ if codes
            .iter()
            .any(|c| c == "ConnectorFailed" || c == "ServiceUnavailable") =>
        {
            Retry::Backoff
        }
        _ => Retry::Never,
    };
    let detail = match (status.is_redirection(), redirect_host) {
        (true, Some(host)) => format!(
            "redirected to host {host} (redirects are never followed: check the configured URL)"
        ),
        (true, None) => {
            "redirected (redirects are never followed: check the configured URL)".into()
        }
        (false, _) => detail,
    };
    CtpError {
        retry,
        status: Some(status.as_u16()),
        codes,
        message: if detail.is_empty() {
            format!("{what} failed")
        } else {
            format!("{what} failed: {detail}")
        },
    }
}

/// The longest a `Retry-After` is waited for: a larger value (or a date far ahead) would stall
/// the task that waits — the timer task serves every payment — until the liveness probe
/// restarts the pod.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// The largest commercetools or Checkout response body read (a page of 500 orders is well
/// below it): a larger one is refused instead of filling memory.
pub const BODY_LIMIT: usize = 8 * 1024 * 1024;

/// Error bodies are only read for their codes and message.
const ERROR_BODY_LIMIT: usize = 64 * 1024;

/// `Retry-After` in seconds, capped at [`MAX_RETRY_AFTER`].
fn retry_after(resp: &Response) -> Option<Duration> {
    resp.headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|secs| Duration::from_secs(secs).min(MAX_RETRY_AFTER))
}

/// The host a redirect points to (never its path or query, which may carry a token).
fn redirect_host(resp: &Response) -> Option<String> {
    let location = resp
        .headers()
        .get(reqwest::header::LOCATION)?
        .to_str()
        .ok()?;
    resp.url()
        .join(location)
        .ok()?
        .host_str()
        .map(str::to_string)
}

/// The body, read chunk by chunk up to `limit` bytes.
///
/// # Errors
/// The body is larger than `limit` (a `Content-Length` over it is refused before reading), or
/// reading it failed.
pub(crate) async fn read_limited(mut resp: Response, limit: usize) -> Result<Vec<u8>, String> {
    if let Some(len) = resp.content_length()
        && len > limit as u64
    {
        return Err(format!(
            "the response body of {len} bytes is over the limit of {limit}"
        ));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| e.without_url().to_string())?
    {
        if body.len() + chunk.len() > limit {
            return Err(format!(
                "the response body is over the limit of {limit} bytes"
            ));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}
