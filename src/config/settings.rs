//! The runtime settings a configuration builds into, and what can be wrong with it.

#[allow(clippy::wildcard_imports)]
use super::{
    CommercetoolsSettings, Duration, Masked, OrderUpdate, PathBuf, PubsubSettings, Rules, Secret,
    SqsSettings, UrlKind, WorkerSettings, fmt,
};

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

/// The fulfillment webhook, validated. Its `Debug` shows only the URL's scheme, host and port.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookSettings {
    /// Where to POST.
    pub url: String,
    /// The signing secrets: one signature per secret, so a receiver can rotate without a gap.
    pub secrets: Vec<Secret>,
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
