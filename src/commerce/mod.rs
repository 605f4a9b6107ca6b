//! The commercetools HTTP API and Checkout API client: OAuth2 client credentials with a shared,
//! single-flight token cache, the reads the rules need, and the writes the executors need.
//!
//! Every failure is a [`CtpError`] that says whether retrying may help. Reads retry transient
//! failures a few times with exponential backoff and jitter before giving up (the worker then
//! nacks the message); writes are never blindly retried here — the executors re-read first,
//! because a write that failed with a 500 or a timeout may have happened.

mod errors;
mod settings;

pub use errors::{BODY_LIMIT, CtpError, MAX_RETRY_AFTER, Retry};
pub use settings::CommercetoolsSettings;

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::sync::Mutex;
use tracing::{debug, warn};

use crate::model::{Cart, Order, Payment};
use crate::redact::Secret;
use crate::retry::Backoff;
use crate::telemetry::{CommercetoolsRequest, CredentialsState};

pub mod view;

pub(crate) use errors::{error_from, read_limited};
pub use view::LiveView;

/// A cached access token.
struct Token {
    value: Secret,
    /// Refresh once this has passed (ahead of the real expiry).
    refresh_at: Instant,
    /// The scopes the token grants (`check-config --connect` compares them with the rules').
    scopes: String,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default)]
    expires_in: Option<u64>,
    /// The scopes granted, space-separated.
    #[serde(default)]
    scope: Option<String>,
}

/// The client; cheap to clone (one shared connection pool and token cache).
#[derive(Clone)]
pub struct CtpClient {
    inner: Arc<Inner>,
}

struct Inner {
    /// One connection pool for every request.
    http: reqwest::Client,
    /// Project, hosts, credentials.
    settings: CommercetoolsSettings,
    /// The current token; the mutex makes concurrent callers wait for one refresh.
    token: Mutex<Option<Token>>,
    /// Bounded retries for reads.
    read_attempts: u32,
    /// First backoff delay for reads.
    backoff: Duration,
}

impl fmt::Debug for CtpClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CtpClient")
            .field("project_key", &self.inner.settings.project_key)
            .field("api_url", &self.inner.settings.api_url)
            .finish_non_exhaustive()
    }
}

/// The commercetools client's (and the release webhook's) retry policy from a first delay:
/// `base × 2^(attempt-1)` (at most 10 doublings), capped at 30 s, with ±50 % jitter.
#[must_use]
pub fn retry_policy(base: Duration) -> Backoff {
    Backoff::exponential(base, Duration::from_secs(30))
        .with_max_doublings(10)
        .with_jitter(0.5)
}

impl CtpClient {
    /// A client for `settings`.
    ///
    /// # Errors
    /// The HTTP client could not be built (TLS setup).
    pub fn new(settings: CommercetoolsSettings) -> Result<Self, CtpError> {
        Self::with_retry(settings, 4, Duration::from_millis(200))
    }

    /// A client whose reads make at most `read_attempts` attempts, the first retry after
    /// about `backoff` (tests use short delays).
    ///
    /// # Errors
    /// The HTTP client could not be built (TLS setup).
    pub fn with_retry(
        settings: CommercetoolsSettings,
        read_attempts: u32,
        backoff: Duration,
    ) -> Result<Self, CtpError> {
        let http = reqwest::Client::builder()
            .timeout(settings.timeout)
            // Never follow a redirect: the bearer token and a write's body must reach only the
            // configured host; a 3xx is an error like any other non-success answer.
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(settings.timeout.min(Duration::from_secs(5)))
            .user_agent(concat!("payrules/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| CtpError::transport("building the HTTP client", &e))?;
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                settings,
                token: Mutex::new(None),
                read_attempts: read_attempts.max(1),
                backoff,
            }),
        })
    }

    /// The project key.
    pub fn project_key(&self) -> &str {
        &self.inner.settings.project_key
    }

    /// The scopes a fresh token grants (`check-config --connect`).
    ///
    /// # Errors
    /// The token request failed (credentials, auth host).
    pub async fn granted_scopes(&self) -> Result<Vec<String>, CtpError> {
        self.token(None).await?;
        let guard = self.inner.token.lock().await;
        Ok(guard
            .as_ref()
            .map(|t| t.scopes.split_whitespace().map(str::to_string).collect())
            .unwrap_or_default())
    }

    /// A valid token: cached, refreshed ahead of expiry by exactly one request.
    async fn token(&self, stale: Option<&str>) -> Result<Secret, CtpError> {
        let mut guard = self.inner.token.lock().await;
        if let Some(t) = guard.as_ref() {
            let is_stale = stale.is_some_and(|s| s == t.value.expose());
            if !is_stale && Instant::now() < t.refresh_at {
                return Ok(t.value.clone());
            }
        }
        let s = &self.inner.settings;
        let mut form = vec![("grant_type", "client_credentials")];
        if let Some(scopes) = &s.scopes {
            form.push(("scope", scopes.as_str()));
        }
        let resp = self
            .inner
            .http
            .post(format!("{}/oauth/token", s.auth_url))
            .basic_auth(&s.client_id, Some(s.client_secret.expose()))
            .form(&form)
            .send()
            .await;
        CommercetoolsRequest {
            method: "POST",
            status: resp.as_ref().ok().map(|r| r.status().as_u16()),
        }
        .emit();
        let resp = resp.map_err(|e| CtpError::transport("requesting an access token", &e))?;
        if !resp.status().is_success() {
            let mut e = error_from("requesting an access token", resp).await;
            if matches!(e.status, Some(400 | 401 | 403)) {
                // The client is refused (invalid_client, invalid_scope): a secret rotated or
                // a scope removed — an operator fixes it, and payrules waits for that.
                e.retry = Retry::Configuration;
                e.message
                    .push_str(" — check CTP_CLIENT_ID, CTP_CLIENT_SECRET and CTP_SCOPES");
            }
            if e.is_configuration() {
                CredentialsState {
                    result: Err(&e.to_string()),
                }
                .emit();
            }
            return Err(e);
        }
        let body: TokenResponse = read_json(resp, "requesting an access token").await?;
        let lifetime = token_lifetime(body.expires_in);
        // Refresh ahead: at 90 % of the lifetime, at least a minute early.
        let ahead = (lifetime / 10)
            .max(Duration::from_secs(60))
            .min(lifetime / 2);
        let token = Token {
            value: Secret::new(body.access_token),
            refresh_at: Instant::now() + lifetime - ahead,
            scopes: body.scope.unwrap_or_default(),
        };
        let value = token.value.clone();
        *guard = Some(token);
        debug!(expires_in = ?lifetime, "access token refreshed");
        Ok(value)
    }

    /// Sends an authorized request; a 401 refreshes the token once and retries.
    async fn send(
        &self,
        what: &str,
        build: impl Fn(&reqwest::Client) -> RequestBuilder,
    ) -> Result<Response, CtpError> {
        let mut token = self.token(None).await?;
        for attempt in 0..2 {
            let request = build(&self.inner.http)
                .bearer_auth(token.expose())
                .build()
                .map_err(|e| CtpError::transport(what, &e))?;
            let method = request.method().clone();
            let resp = self.inner.http.execute(request).await;
            CommercetoolsRequest {
                method: method.as_str(),
                status: resp.as_ref().ok().map(|r| r.status().as_u16()),
            }
            .emit();
            let resp = resp.map_err(|e| CtpError::transport(what, &e))?;
            if resp.status() == StatusCode::UNAUTHORIZED && attempt == 0 {
                warn!(what, "access token rejected; refreshing it once");
                token = self.token(Some(token.expose())).await?;
                continue;
            }
            if resp.status() == StatusCode::FORBIDDEN {
                let e = error_from(what, resp).await;
                CredentialsState {
                    result: Err(&format!("{e} — check the API client's scopes")),
                }
                .emit();
                return Err(e);
            }
            if resp.status().is_success() {
                CredentialsState { result: Ok(()) }.emit();
            }
            return Ok(resp);
        }
        let e = CtpError {
            retry: Retry::Configuration,
            status: Some(401),
            codes: vec!["invalid_token".into()],
            message: format!(
                "{what} failed: the API rejects fresh tokens — check the API client's scopes"
            ),
        };
        CredentialsState {
            result: Err(&e.to_string()),
        }
        .emit();
        Err(e)
    }

    /// A GET returning `None` on 404, retried with backoff on transient failures.
    async fn get_optional<T: DeserializeOwned>(
        &self,
        what: &str,
        path: &str,
        query: &[(&str, &str)],
    ) -> Result<Option<T>, CtpError> {
        self.get(what, path, query, NotFound::IsNone).await
    }

    /// A GET retried with backoff on transient failures; a 404 means what `not_found` says.
    async fn get<T: DeserializeOwned>(
        &self,
        what: &str,
        path: &str,
        query: &[(&str, &str)],
        not_found: NotFound,
    ) -> Result<Option<T>, CtpError> {
        let url = format!(
            "{}/{}/{}",
            self.inner.settings.api_url,
            self.project_key(),
            path
        );
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result = async {
                let resp = self
                    .send(what, |http| http.request(Method::GET, &url).query(query))
                    .await?;
                match resp.status() {
                    s if s.is_success() => read_json(resp, what).await.map(Some),
                    StatusCode::NOT_FOUND if not_found == NotFound::IsNone => Ok(None),
                    StatusCode::NOT_FOUND => {
                        let mut e = error_from(what, resp).await;
                        // Only a successful answer says what exists: a query endpoint that is
                        // not there is a wrong project key or API URL, never "no results".
                        e.retry = Retry::Configuration;
                        e.message.push_str(
                            " — the endpoint is not there: check CTP_PROJECT_KEY and CTP_API_URL",
                        );
                        Err(e)
                    }
                    _ => Err(error_from(what, resp).await),
                }
            }
            .await;
            match result {
                Err(e)
                    if e.is_retryable()
                        && !e.is_conflict()
                        && attempt < self.inner.read_attempts =>
                {
                    let delay = e
                        .retry_after()
                        .unwrap_or_else(|| retry_policy(self.inner.backoff).delay(attempt));
                    warn!(what, error = %e, retry_in = ?delay, "read failed; retrying");
                    tokio::time::sleep(delay).await;
                }
                other => return other,
            }
        }
    }

    /// The payment, or `None` if it does not exist.
    ///
    /// # Errors
    /// See [`CtpError`].
    pub async fn payment(&self, id: &str) -> Result<Option<Payment>, CtpError> {
        self.get_optional("reading the payment", &format!("payments/{}", enc(id)), &[])
            .await
    }

    /// The order, or `None` if it does not exist.
    ///
    /// # Errors
    /// See [`CtpError`].
    pub async fn order(&self, id: &str) -> Result<Option<Order>, CtpError> {
        self.get_optional("reading the order", &format!("orders/{}", enc(id)), &[])
            .await
    }

    /// The cart, or `None` if it does not exist (a cart read by id is strongly consistent,
    /// unlike the orders query).
    ///
    /// # Errors
    /// See [`CtpError`].
    pub async fn cart(&self, id: &str) -> Result<Option<Cart>, CtpError> {
        self.get_optional("reading the cart", &format!("carts/{}", enc(id)), &[])
            .await
    }

    /// Every order referencing the payment (up to 500, oldest first), found with
    /// `paymentInfo(payments(id=:pid))` and a query variable (never a predicate built by
    /// concatenation). A payment is referenced by one order, or a few after a cancelled order
    /// was replaced; 500 is the API's page limit.
    ///
    /// # Errors
    /// See [`CtpError`].
    pub async fn orders_for_payment(&self, payment_id: &str) -> Result<Vec<Order>, CtpError> {
        #[derive(Deserialize)]
        struct Page {
            results: Vec<Order>,
        }
        let page: Option<Page> = self
            .get(
                "finding the order of a payment",
                "orders",
                &[
                    ("where", "paymentInfo(payments(id=:pid))"),
                    ("var.pid", payment_id),
                    ("sort", "createdAt asc"),
                    ("sort", "id asc"),
                    ("limit", "500"),
                    ("withTotal", "false"),
                ],
                NotFound::IsError,
            )
            .await?;
        Ok(page.map(|p| p.results).unwrap_or_default())
    }

    /// One page of a query endpoint (`messages`, `payments`, …) as raw JSON results; `None`
    /// when the endpoint answers 404 (the Messages Query API of a project without messages
    /// enabled, or a mock without it).
    ///
    /// # Errors
    /// See [`CtpError`].
    pub async fn query_page(
        &self,
        endpoint: &str,
        query: &[(&str, &str)],
    ) -> Result<Option<Vec<Value>>, CtpError> {
        #[derive(Deserialize)]
        struct Page {
            results: Vec<Value>,
        }
        let page: Option<Page> = self
            .get_optional("querying commercetools", endpoint, query)
            .await?;
        Ok(page.map(|p| p.results))
    }

    /// The raw order JSON (the executors check fields the rules do not model).
    ///
    /// # Errors
    /// See [`CtpError`].
    pub async fn order_json(&self, id: &str) -> Result<Option<Value>, CtpError> {
        self.get_optional("reading the order", &format!("orders/{}", enc(id)), &[])
            .await
    }

    /// The id of the State with this key, or `None`.
    ///
    /// # Errors
    /// See [`CtpError`].
    pub async fn state_id(&self, key: &str) -> Result<Option<String>, CtpError> {
        #[derive(Deserialize)]
        struct State {
            id: String,
        }
        let s: Option<State> = self
            .get_optional(
                "reading the State",
                &format!("states/key={}", enc(key)),
                &[],
            )
            .await?;
        Ok(s.map(|s| s.id))
    }

    /// `POST /orders/{id}` with `version` and `actions`; one attempt (the caller re-reads and
    /// re-decides on a conflict or a 500).
    ///
    /// # Errors
    /// See [`CtpError`].
    pub async fn update_order(
        &self,
        id: &str,
        version: u64,
        actions: &[Value],
    ) -> Result<Value, CtpError> {
        let url = format!(
            "{}/{}/orders/{}",
            self.inner.settings.api_url,
            self.project_key(),
            enc(id)
        );
        let body = serde_json::json!({ "version": version, "actions": actions });
        let what = "updating the order";
        let resp = self.send(what, |http| http.post(&url).json(&body)).await?;
        if resp.status().is_success() {
            // The update may have been applied: whoever reads this re-reads before retrying.
            return read_json(resp, what).await.map_err(|e| CtpError {
                retry: Retry::Verify,
                ..e
            });
        }
        Err(error_from(what, resp).await)
    }

    /// `POST {checkout}/{projectKey}/payment-intents/{paymentId}` with one action; returns the
    /// `outcome`. One attempt (the caller re-reads the payment before any retry).
    ///
    /// # Errors
    /// See [`CtpError`].
    pub async fn payment_intent(
        &self,
        payment_id: &str,
        action: &Value,
    ) -> Result<Option<String>, CtpError> {
        #[derive(Deserialize)]
        struct IntentResponse {
            outcome: Option<String>,
        }
        let url = format!(
            "{}/{}/payment-intents/{}",
            self.inner.settings.checkout_url,
            self.project_key(),
            enc(payment_id)
        );
        let body = serde_json::json!({ "actions": [action] });
        let what = "calling the Checkout Payment Intents API";
        let resp = self.send(what, |http| http.post(&url).json(&body)).await?;
        if resp.status().is_success() {
            let r: IntentResponse = read_json(resp, what).await.map_err(|e| CtpError {
                retry: Retry::Verify,
                ..e
            })?;
            return Ok(r.outcome);
        }
        Err(error_from(what, resp).await)
    }
}

/// What a 404 means for a GET.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NotFound {
    /// The resource does not exist.
    IsNone,
    /// The endpoint should be there (a query): the configuration is wrong.
    IsError,
}

/// A success body, at most [`BODY_LIMIT`] bytes, as `T`. A body that is too large or does not
/// decode is retried like an outage (a proxy's page, a truncated answer), never taken as
/// permanent: the next answer may well be right.
async fn read_json<T: DeserializeOwned>(resp: Response, what: &str) -> Result<T, CtpError> {
    let status = resp.status().as_u16();
    let failed = |message: String| CtpError {
        retry: Retry::Backoff,
        status: Some(status),
        codes: Vec::new(),
        message: format!("{what}: {message}"),
    };
    let body = read_limited(resp, BODY_LIMIT).await.map_err(&failed)?;
    serde_json::from_slice(&body).map_err(|e| failed(format!("unexpected response body: {e}")))
}

/// A token's lifetime from `expires_in`, within sane bounds: commercetools grants 48 h; a
/// value of 0 would refresh on every call and an absurd one would overflow the clock.
fn token_lifetime(expires_in: Option<u64>) -> Duration {
    const SHORTEST: u64 = 30;
    const LONGEST: u64 = 7 * 24 * 3600;
    Duration::from_secs(expires_in.unwrap_or(3600).clamp(SHORTEST, LONGEST))
}

/// Percent-encodes one path segment.
fn enc(segment: &str) -> String {
    url_escape(segment)
}

fn url_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_are_escaped() {
        assert_eq!(url_escape("ab-12_x.~"), "ab-12_x.~");
        assert_eq!(url_escape("a/b?c=d"), "a%2Fb%3Fc%3Dd");
    }

    #[test]
    fn backoff_grows_with_jitter_and_caps() {
        for attempt in 1..20 {
            let d = retry_policy(Duration::from_millis(100)).delay(attempt);
            assert!(d <= Duration::from_secs(45), "{d:?}");
        }
        let first = retry_policy(Duration::from_millis(100)).delay(1);
        assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(150));
    }

    #[test]
    fn errors_show_codes_but_no_secrets() {
        let e = CtpError {
            retry: Retry::Never,
            status: Some(400),
            codes: vec!["InvalidOperation".into()],
            message: "updating the order failed: nope".into(),
        };
        assert_eq!(
            e.to_string(),
            "updating the order failed: nope (HTTP 400, InvalidOperation)"
        );
        assert!(!e.is_retryable());
    }

    #[test]
    fn a_token_lifetime_is_bounded() {
        assert_eq!(token_lifetime(Some(172_800)), Duration::from_secs(172_800));
        assert_eq!(token_lifetime(None), Duration::from_secs(3600));
        assert_eq!(token_lifetime(Some(0)), Duration::from_secs(30));
        // Was a panic: Instant + u64::MAX seconds overflows.
        let lifetime = token_lifetime(Some(u64::MAX));
        assert_eq!(lifetime, Duration::from_secs(7 * 24 * 3600));
        assert!(Instant::now().checked_add(lifetime).is_some());
    }
}
