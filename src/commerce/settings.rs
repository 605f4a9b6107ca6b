//! The commercetools client's settings, validated (the configuration builds them).

use std::fmt;
use std::time::Duration;

use crate::redact::{Masked, Secret, UrlKind};

/// The commercetools client, validated. Its `Debug` masks the URLs.
#[derive(Clone, PartialEq, Eq)]
pub struct CommercetoolsSettings {
    /// The project key.
    pub project_key: String,
    /// The API client id.
    pub client_id: String,
    /// The API client secret.
    pub client_secret: Secret,
    /// The auth host, without a trailing slash.
    pub auth_url: String,
    /// The API host, without a trailing slash.
    pub api_url: String,
    /// Scopes to request, when set.
    pub scopes: Option<String>,
    /// The Checkout host, without a trailing slash.
    pub checkout_url: String,
    /// Timeout of every request.
    pub timeout: Duration,
}

impl fmt::Debug for CommercetoolsSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CommercetoolsSettings")
            .field("project_key", &self.project_key)
            .field("client_id", &self.client_id)
            .field("client_secret", &self.client_secret)
            .field("auth_url", &Masked(&self.auth_url, UrlKind::Plain))
            .field("api_url", &Masked(&self.api_url, UrlKind::Plain))
            .field("scopes", &self.scopes)
            .field("checkout_url", &Masked(&self.checkout_url, UrlKind::Plain))
            .field("timeout", &self.timeout)
            .finish()
    }
}
