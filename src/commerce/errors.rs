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
    /// 500: the request may have taken effect; re-read before retrying a write.
    Verify,
    /// 409 ConcurrentModification: re-read, re-decide, retry.
    Conflict,
    /// 400, 401 (after a token refresh), 403, 404: retrying the same request will not help.
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
            retry: Retry::Backoff,
            status: None,
            codes: Vec::new(),
            message: format!(
                "{what} {kind}: {}",
                crate::config::http_error_text(e, crate::config::UrlKind::Plain)
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
    let retry_after = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let body = resp.text().await.unwrap_or_default();
    let parsed: Option<ErrorBody> = serde_json::from_str(&body).ok();
    let codes: Vec<String> = parsed
        .as_ref()
        .map(|b| b.errors.iter().filter_map(|e| e.code.clone()).collect())
        .unwrap_or_default();
    let detail = parsed
        .and_then(|b| b.message.or(b.error_description))
        .unwrap_or_default();
    let retry = match status.as_u16() {
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
