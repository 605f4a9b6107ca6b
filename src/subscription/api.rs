//! The commercetools calls: reading, creating and updating a Subscription by key.

use super::destination::Draft;
use super::plan::plan_update;
use crate::commerce::CommercetoolsSettings;
use crate::commerce::{CtpError, Retry, error_from};
use crate::redact::Secret;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::fmt::Write as _;
use std::time::Duration;

/// A commercetools session for one command: one token, requested without a scope (the API
/// client's own scopes; it needs `manage_subscriptions:{projectKey}`, or
/// `view_subscriptions:{projectKey}` for `show`).
pub(crate) struct Api {
    http: reqwest::Client,
    settings: CommercetoolsSettings,
    token: Secret,
}

pub(crate) fn ctp_error(what: &str, retry: Retry, message: String) -> CtpError {
    CtpError {
        retry,
        status: None,
        codes: Vec::new(),
        message: format!("{what}: {message}"),
    }
}

impl Api {
    pub(crate) async fn connect(settings: CommercetoolsSettings) -> Result<Self, CtpError> {
        let http = reqwest::Client::builder()
            .timeout(settings.timeout.max(Duration::from_secs(10)))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("payrules/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ctp_error("building the HTTP client", Retry::Never, e.to_string()))?;
        let what = "requesting an access token";
        let resp = http
            .post(format!("{}/oauth/token", settings.auth_url))
            .basic_auth(&settings.client_id, Some(settings.client_secret.expose()))
            .form(&[("grant_type", "client_credentials")])
            .send()
            .await
            .map_err(|e| ctp_error(what, Retry::Backoff, e.to_string()))?;
        if !resp.status().is_success() {
            let mut e = error_from(what, resp).await;
            e.message
                .push_str(" — check CTP_AUTH_URL, CTP_CLIENT_ID and CTP_CLIENT_SECRET");
            return Err(e);
        }
        let body: Value = resp
            .json()
            .await
            .map_err(|e| ctp_error(what, Retry::Backoff, e.to_string()))?;
        let token = body["access_token"]
            .as_str()
            .ok_or_else(|| ctp_error(what, Retry::Never, "no access_token in the answer".into()))?;
        Ok(Self {
            http,
            settings,
            token: Secret::new(token),
        })
    }

    fn url(&self, path: &str) -> String {
        format!(
            "{}/{}/{path}",
            self.settings.api_url, self.settings.project_key
        )
    }

    async fn call(
        &self,
        what: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<Option<Value>, CtpError> {
        let resp = request
            .bearer_auth(self.token.expose())
            .send()
            .await
            .map_err(|e| ctp_error(what, Retry::Backoff, e.to_string()))?;
        match resp.status() {
            s if s.is_success() => resp
                .json()
                .await
                .map(Some)
                .map_err(|e| ctp_error(what, Retry::Never, format!("unexpected answer: {e}"))),
            StatusCode::NOT_FOUND => Ok(None),
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                let mut e = error_from(what, resp).await;
                let _ = write!(
                    e.message,
                    " — the API client needs manage_subscriptions:{} (view_subscriptions:{0} for show)",
                    self.settings.project_key
                );
                Err(e)
            }
            _ => Err(error_from(what, resp).await),
        }
    }

    pub(crate) async fn by_key(&self, key: &str) -> Result<Option<Value>, CtpError> {
        let url = self.url(&format!("subscriptions/key={key}"));
        self.call("reading the Subscription", self.http.get(url))
            .await
    }

    async fn create(&self, draft: &Value) -> Result<Value, CtpError> {
        let what = "creating the Subscription";
        self.call(what, self.http.post(self.url("subscriptions")).json(draft))
            .await?
            .ok_or_else(|| CtpError {
                retry: Retry::Never,
                status: Some(404),
                codes: Vec::new(),
                message: format!(
                    "{what} failed: {} answered 404 — check CTP_API_URL and CTP_PROJECT_KEY",
                    self.url("subscriptions")
                ),
            })
    }

    async fn update(&self, id: &str, version: u64, actions: &[Value]) -> Result<Value, CtpError> {
        let what = "updating the Subscription";
        let body = json!({ "version": version, "actions": actions });
        self.call(
            what,
            self.http
                .post(self.url(&format!("subscriptions/{id}")))
                .json(&body),
        )
        .await?
        .ok_or_else(|| CtpError {
            retry: Retry::Never,
            status: Some(404),
            codes: Vec::new(),
            message: format!("{what} failed: it no longer exists"),
        })
    }
}

// ------------------------------------------------------------------------------------------------
// The commands

/// Creates, updates or leaves the Subscription; returns the line saying which.
pub(crate) async fn apply(
    settings: CommercetoolsSettings,
    draft: &Draft,
) -> Result<String, CtpError> {
    let project = settings.project_key.clone();
    let api = Api::connect(settings).await?;
    let key = &draft.key;
    let Some(live) = api.by_key(key).await? else {
        let created = api.create(&draft.to_json(true)).await?;
        return Ok(format!(
            "created: Subscription {key:?} in project {project:?} (id {}, version {})",
            created["id"].as_str().unwrap_or("?"),
            created["version"]
        ));
    };
    let changes = plan_update(&live, draft).map_err(|m| CtpError {
        retry: Retry::Never,
        status: None,
        codes: Vec::new(),
        message: m,
    })?;
    let id = live["id"].as_str().unwrap_or_default().to_string();
    let version = live["version"].as_u64().unwrap_or_default();
    if changes.is_empty() {
        return Ok(format!(
            "unchanged: Subscription {key:?} in project {project:?} already matches (id {id}, version {version})"
        ));
    }
    let actions: Vec<Value> = changes.iter().map(|c| c.action.clone()).collect();
    let updated = api.update(&id, version, &actions).await?;
    let mut out = format!(
        "updated: Subscription {key:?} in project {project:?} (id {id}, version {version} -> {})",
        updated["version"]
    );
    for c in &changes {
        let _ = write!(out, "\n  {}", c.what);
    }
    Ok(out)
}
