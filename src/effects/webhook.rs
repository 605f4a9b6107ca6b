//! The release webhook to the fulfillment team: a signed JSON POST.
//!
//! The body is the release event; the headers carry the idempotency key (the same on every
//! attempt, so receivers can dedupe), a Unix timestamp and an HMAC-SHA256 signature over
//! `"{timestamp}.{body}"` with the shared secret — the scheme Stripe and Svix use. A receiver
//! recomputes the signature, compares in constant time, and rejects old timestamps.

use std::time::Duration;

use async_trait::async_trait;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::json;
use sha2::Sha256;
use tracing::warn;

use super::{Effect, EffectError, Executor};
use crate::action::{Action, ActionKind, format_timestamp};
use crate::commerce::backoff_with_jitter;
use crate::config::Secret;

/// Header with the idempotency key (`release:{order_id}`).
pub const KEY_HEADER: &str = "payrules-idempotency-key";
/// Header with the Unix timestamp (seconds) that was signed.
pub const TIMESTAMP_HEADER: &str = "payrules-timestamp";
/// Header with `v1=` and the hex HMAC-SHA256 of `"{timestamp}.{body}"`.
pub const SIGNATURE_HEADER: &str = "payrules-signature";

/// `v1=<hex hmac-sha256(secret, "{timestamp}.{body}")>`.
pub fn sign(secret: &Secret, timestamp: i64, body: &[u8]) -> String {
    // HMAC takes keys of any length, so this cannot fail.
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.expose().as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// Checks a signature the way a receiver should (constant-time), for tests and as reference.
pub fn verify(secret: &Secret, timestamp: i64, body: &[u8], signature: &str) -> bool {
    let Some(hex_sig) = signature.strip_prefix("v1=") else {
        return false;
    };
    let Ok(given) = hex::decode(hex_sig) else {
        return false;
    };
    let Ok(mut mac) = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.expose().as_bytes()) else {
        return false;
    };
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.verify_slice(&given).is_ok()
}

/// The release event sent to the fulfillment team.
pub fn release_event(action: &Action) -> serde_json::Value {
    json!({
        "type": "order.released",
        "order_id": action.order_id,
        "order_number": action.order_number,
        "payment_ids": action.payment_ids,
        "amount": action.amount.as_ref().map(|m| json!({
            "centAmount": m.cent_amount,
            "currencyCode": m.currency_code,
        })),
        "key": action.key,
        "message_id": action.message_id,
        "released_at": format_timestamp(&action.at),
    })
}

/// Posts release events.
pub struct Webhook {
    /// Shared connection pool.
    http: reqwest::Client,
    /// Where to POST.
    url: String,
    /// The signing secrets (the first signs the legacy header).
    secrets: Vec<Secret>,
    /// Attempts per execution before the action is reported as transiently failed (the
    /// message is then nacked and retried later with the same key).
    attempts: u32,
    /// First backoff delay between attempts.
    backoff: Duration,
}

impl Webhook {
    /// A webhook with a per-request `timeout`.
    ///
    /// # Errors
    /// The HTTP client could not be built.
    pub fn new(url: String, secrets: Vec<Secret>, timeout: Duration) -> Result<Self, EffectError> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .user_agent(concat!("payrules/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| EffectError::Permanent {
                detail: format!("building the webhook HTTP client: {e}"),
            })?;
        Ok(Self {
            http,
            url,
            secrets,
            attempts: 3,
            backoff: Duration::from_millis(200),
        })
    }

    /// Sets the attempts per execution and the first backoff (tests use short ones).
    pub fn with_retry(mut self, attempts: u32, backoff: Duration) -> Self {
        self.attempts = attempts.max(1);
        self.backoff = backoff;
        self
    }

    /// Delivers the release event of `action`.
    ///
    /// # Errors
    /// [`EffectError::Transient`] after every attempt failed (any non-2xx or transport
    /// error); the worker retries later with the same key.
    pub async fn deliver(&self, action: &Action) -> Result<Effect, EffectError> {
        let body =
            serde_json::to_vec(&release_event(action)).map_err(|e| EffectError::Permanent {
                detail: format!("encoding the release event: {e}"),
            })?;
        let mut last = String::new();
        for attempt in 1..=self.attempts {
            if attempt > 1 {
                tokio::time::sleep(backoff_with_jitter(self.backoff, attempt - 1)).await;
            }
            let timestamp = chrono::Utc::now().timestamp();
            let result = self
                .http
                .post(&self.url)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .header(KEY_HEADER, &action.key)
                .header(TIMESTAMP_HEADER, timestamp.to_string())
                .header(
                    SIGNATURE_HEADER,
                    sign(
                        self.secrets.first().unwrap_or(&Secret::new("")),
                        timestamp,
                        &body,
                    ),
                )
                .body(body.clone())
                .send()
                .await;
            match result {
                Ok(resp) if resp.status().is_success() => {
                    return Ok(Effect::applied(format!(
                        "webhook {}",
                        resp.status().as_u16()
                    )));
                }
                Ok(resp) => last = format!("the webhook answered HTTP {}", resp.status().as_u16()),
                Err(e) => last = format!("the webhook request failed: {e}"),
            }
            warn!(key = %action.key, attempt, error = %last, "release webhook failed");
        }
        Err(EffectError::Transient {
            detail: last,
            retry_after: None,
        })
    }
}

#[async_trait]
impl Executor for Webhook {
    async fn execute(&self, action: &Action) -> Result<Effect, EffectError> {
        match action.action {
            ActionKind::ReleaseOrder => self.deliver(action).await,
            ActionKind::CancelPayment | ActionKind::CapturePayment => Err(EffectError::Permanent {
                detail: "the webhook only carries releases".into(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_and_detect_tampering() {
        let secret = Secret::new("whsec_test");
        let sig = sign(&secret, 1_700_000_000, b"{\"a\":1}");
        assert!(sig.starts_with("v1=") && sig.len() == 3 + 64);
        assert!(verify(&secret, 1_700_000_000, b"{\"a\":1}", &sig));
        assert!(!verify(&secret, 1_700_000_001, b"{\"a\":1}", &sig));
        assert!(!verify(&secret, 1_700_000_000, b"{\"a\":2}", &sig));
        assert!(!verify(
            &Secret::new("other"),
            1_700_000_000,
            b"{\"a\":1}",
            &sig
        ));
    }
}
