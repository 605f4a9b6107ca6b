//! The runtime settings a configuration builds into, and what can be wrong with it.

#[allow(clippy::wildcard_imports)]
use super::*;

/// One thing wrong with the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Where: `PAYRULES_GRACE_PERIOD`, `rules.cancel_orphaned_authorization.grace_period`, the
    /// file, …
    pub place: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.place, self.message)
    }
}

/// Every problem found, at once.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration:\n{}", .0.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
pub struct ConfigErrors(pub Vec<Problem>);

/// Where notifications come from, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceSettings {
    /// Files or stdin.
    File {
        /// The input path(s).
        path: PathBuf,
    },
    /// A Pub/Sub subscription.
    Pubsub(PubsubSettings),
    /// An SQS queue.
    Sqs(SqsSettings),
}

/// The Pub/Sub source, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PubsubSettings {
    /// `projects/P/subscriptions/S`.
    pub subscription: String,
    /// Streaming pulls open at once (≥ 1).
    pub streams: usize,
    /// Flow control: messages leased at once, per stream.
    pub max_outstanding_messages: i64,
    /// Flow control: bytes leased at once, per stream.
    pub max_outstanding_bytes: i64,
    /// `projects/P/topics/T` for poison messages, if configured.
    pub dead_letter_topic: Option<String>,
}

/// The SQS source, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqsSettings {
    /// The queue URL.
    pub queue_url: String,
    /// Concurrent long-poll receivers (≥ 1).
    pub pollers: usize,
    /// Visibility timeout given to received messages and renewed while they are worked on.
    pub visibility_timeout: Duration,
    /// Where poison messages go, if configured.
    pub dead_letter_queue_url: Option<String>,
}

/// How the order is updated on release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrderUpdate {
    /// `transitionState` to the State with this key.
    TransitionState {
        /// The State's key.
        state_key: String,
    },
    /// `changeOrderState`.
    ChangeOrderState {
        /// e.g. `Confirmed`.
        order_state: String,
    },
    /// `changeShipmentState`.
    ChangeShipmentState {
        /// e.g. `Ready`.
        shipment_state: String,
    },
    /// `setCustomField`.
    SetCustomField {
        /// The field name.
        name: String,
        /// The value.
        value: serde_json::Value,
    },
}

/// The fulfillment webhook, validated. Its `Debug` shows only the URL's scheme, host and port.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookSettings {
    /// Where to POST.
    pub url: String,
    /// The signing secrets: one signature per secret, so a receiver can rotate without a gap.
    pub secrets: Vec<Secret>,
}

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

/// Worker tuning, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerSettings {
    /// Messages processed at once.
    pub concurrency: usize,
    /// Deliveries after which a failing message is parked.
    pub max_deliveries: u32,
    /// How long to finish in-flight work on shutdown.
    pub shutdown_timeout: Duration,
    /// First retry delay.
    pub retry_delay: Duration,
    /// How often the progress line is logged (zero: never).
    pub progress_interval: Duration,
    /// Messages larger than this are parked without being decoded.
    pub max_message_bytes: usize,
}

/// The runtime configuration. Its `Debug` masks the URLs.
#[derive(Clone, PartialEq, Eq)]
pub struct Settings {
    /// Where notifications come from.
    pub source: SourceSettings,
    /// Decide and log, execute nothing.
    pub dry_run: bool,
    /// The state store URL.
    pub state_url: String,
    /// How long a claim or a taken timer stays with one worker.
    pub claim_lease: Duration,
    /// Rule settings.
    pub rules: Rules,
    /// The fulfillment webhook, if configured.
    pub webhook: Option<WebhookSettings>,
    /// The order update on release, if configured.
    pub order_update: Option<OrderUpdate>,
    /// The Payment Intents action used to cancel: `cancelPayment` or `reversePayment`.
    pub payment_intent_action: String,
    /// The `paymentInterface`s Checkout manages; `None`: any.
    pub checkout_interfaces: Option<Vec<String>>,
    /// The commercetools client, if configured.
    pub commercetools: Option<CommercetoolsSettings>,
    /// Worker tuning.
    pub worker: WorkerSettings,
    /// Where the HTTP port listens, if on.
    pub http_addr: Option<std::net::SocketAddr>,
}

impl fmt::Debug for WebhookSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookSettings")
            .field("url", &Masked(&self.url, UrlKind::Webhook))
            .field("secrets", &self.secrets)
            .finish()
    }
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

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Spelled out so that a new field must be added here (and masked if it is a URL).
        let Settings {
            source,
            dry_run,
            state_url,
            claim_lease,
            rules,
            webhook,
            order_update,
            payment_intent_action,
            checkout_interfaces,
            commercetools,
            worker,
            http_addr,
        } = self;
        f.debug_struct("Settings")
            .field("source", source)
            .field("dry_run", dry_run)
            .field("state_url", &Masked(state_url, UrlKind::Plain))
            .field("claim_lease", claim_lease)
            .field("rules", rules)
            .field("webhook", webhook)
            .field("order_update", order_update)
            .field("payment_intent_action", payment_intent_action)
            .field("checkout_interfaces", checkout_interfaces)
            .field("commercetools", commercetools)
            .field("worker", worker)
            .field("http_addr", http_addr)
            .finish()
    }
}
