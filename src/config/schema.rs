//! The configuration file's shape: plain serde data, defaults as named functions.

#[allow(clippy::wildcard_imports)]
use super::{Deserialize, Masked, Secret, Serialize, UrlKind, fmt, mask_url};

/// The configuration as written: the TOML file's shape.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Where notifications come from: `file`, `pubsub` or `sqs`.
    #[serde(default = "default_source")]
    pub source: String,
    /// Decide and log every action without executing any.
    #[serde(default)]
    pub dry_run: bool,
    /// The file source.
    #[serde(default)]
    pub file: FileSection,
    /// The Pub/Sub source.
    #[serde(default)]
    pub pubsub: PubsubSection,
    /// The SQS source.
    #[serde(default)]
    pub sqs: SqsSection,
    /// The state store.
    #[serde(default)]
    pub state: StateSection,
    /// Rule settings.
    #[serde(default)]
    pub rules: RulesSection,
    /// Where releases go.
    #[serde(default)]
    pub release: ReleaseSection,
    /// How authorizations are cancelled.
    #[serde(default)]
    pub cancel: CancelSection,
    /// The commercetools API client.
    #[serde(default)]
    pub commercetools: CommercetoolsSection,
    /// Worker tuning.
    #[serde(default)]
    pub worker: WorkerSection,
    /// The HTTP port (metrics, probes).
    #[serde(default)]
    pub http: HttpSection,
}

/// `[http]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSection {
    /// `HOST:PORT` to serve `/metrics`, `/healthz` and `/readyz` on; off when unset.
    pub addr: Option<String>,
}

pub(crate) fn default_source() -> String {
    "file".into()
}

/// `[file]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSection {
    /// A `.json`/`.jsonl` file, a directory, or `-` for stdin.
    pub path: Option<String>,
}

/// `[pubsub]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PubsubSection {
    /// `projects/P/subscriptions/S`.
    pub subscription: Option<String>,
    /// Streaming pulls open at once (each is capped at about 10 MB/s by Pub/Sub).
    #[serde(default = "default_streams")]
    pub streams: u32,
    /// Server-side flow control: messages leased at once, per stream.
    #[serde(default = "default_max_outstanding_messages")]
    pub max_outstanding_messages: u32,
    /// Server-side flow control: bytes leased at once, per stream.
    #[serde(default = "default_max_outstanding_bytes")]
    pub max_outstanding_bytes: u32,
    /// `projects/P/topics/T`: poison messages are published here and acked. Unset: they are
    /// nacked and left to the subscription's dead-letter policy.
    pub dead_letter_topic: Option<String>,
    /// `projects/P/subscriptions/S`: the subscription a dry run reads instead of
    /// `subscription` — one of its own on the same topic, so that a dry run never takes the
    /// real workers' messages. Required for a dry run from Pub/Sub.
    pub dry_run_subscription: Option<String>,
}

impl Default for PubsubSection {
    fn default() -> Self {
        Self {
            dry_run_subscription: None,
            subscription: None,
            streams: default_streams(),
            max_outstanding_messages: default_max_outstanding_messages(),
            max_outstanding_bytes: default_max_outstanding_bytes(),
            dead_letter_topic: None,
        }
    }
}

pub(crate) fn default_streams() -> u32 {
    1
}

pub(crate) fn default_max_outstanding_messages() -> u32 {
    1000
}

pub(crate) fn default_max_outstanding_bytes() -> u32 {
    100 * 1024 * 1024
}

/// `[sqs]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqsSection {
    /// The queue URL.
    pub queue_url: Option<String>,
    /// Concurrent long-poll receivers.
    #[serde(default = "default_pollers")]
    pub pollers: u32,
    /// How long a received message stays invisible; extended while it is worked on.
    #[serde(default = "default_visibility_timeout")]
    pub visibility_timeout: String,
    /// Poison messages are sent here and deleted. Unset: they are left to the queue's
    /// redrive policy.
    pub dead_letter_queue_url: Option<String>,
    /// The queue a dry run reads instead of `queue_url` — one of its own, subscribed to the
    /// same messages, so that a dry run never takes the real workers' messages. Required for
    /// a dry run from SQS.
    pub dry_run_queue_url: Option<String>,
}

impl Default for SqsSection {
    fn default() -> Self {
        Self {
            dry_run_queue_url: None,
            queue_url: None,
            pollers: default_pollers(),
            visibility_timeout: default_visibility_timeout(),
            dead_letter_queue_url: None,
        }
    }
}

pub(crate) fn default_pollers() -> u32 {
    4
}

pub(crate) fn default_visibility_timeout() -> String {
    "60s".into()
}

/// `[state]`.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateSection {
    /// `sqlite://path` or `postgres://…`.
    #[serde(default = "default_state_url")]
    pub url: String,
    /// How long a claimed action or a taken timer stays with one worker; after that, another
    /// worker takes it over (its holder is presumed dead). Longer than any single execution.
    #[serde(default = "default_claim_lease")]
    pub claim_lease: String,
}

impl Default for StateSection {
    fn default() -> Self {
        Self {
            url: default_state_url(),
            claim_lease: default_claim_lease(),
        }
    }
}

pub(crate) fn default_claim_lease() -> String {
    "15s".into()
}

pub(crate) fn default_state_url() -> String {
    "sqlite://payrules.db".into()
}

/// `[rules]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RulesSection {
    /// `[rules.release_for_fulfillment]`.
    #[serde(default)]
    pub release_for_fulfillment: ReleaseSettings,
    /// `[rules.cancel_orphaned_authorization]`.
    #[serde(default)]
    pub cancel_orphaned_authorization: CancelSettings,
    /// `[rules.cancel_on_order_cancelled]`.
    #[serde(default)]
    pub cancel_on_order_cancelled: OrderCancelledSettings,
    /// `[rules.capture_on_shipment]`.
    #[serde(default)]
    pub capture_on_shipment: CaptureSettings,
    /// `[rules.refund_orphaned_charge]`.
    #[serde(default)]
    pub refund_orphaned_charge: RefundOrphanedSettings,
    /// `[rules.refund_on_order_cancelled]`.
    #[serde(default)]
    pub refund_on_order_cancelled: RefundOnOrderCancelledSettings,
    /// `[rules.refund_on_return]`.
    #[serde(default)]
    pub refund_on_return: RefundOnReturnSettings,
}

/// `[rules.refund_on_return]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefundOnReturnSettings {
    /// The rule is on (off by default: many merchants decide a return's refund by hand).
    #[serde(default)]
    pub enabled: bool,
    /// The return shipment state that makes goods refundable: `Returned` or `BackInStock`.
    #[serde(default = "default_return_on")]
    pub on: String,
    /// Return items in these payment states are left out (someone refunded them, or decided
    /// not to). A TOML list, or (from the environment) names separated by commas.
    #[serde(
        default = "default_skip_payment_states",
        deserialize_with = "list_or_commas"
    )]
    pub skip_payment_states: Vec<String>,
}

impl Default for RefundOnReturnSettings {
    fn default() -> Self {
        Self {
            enabled: false,
            on: default_return_on(),
            skip_payment_states: default_skip_payment_states(),
        }
    }
}

pub(crate) fn default_return_on() -> String {
    "Returned".into()
}

/// A list of names, as a TOML list or as one string of names separated by commas (an
/// environment variable's form).
fn list_or_commas<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Names {
        List(Vec<String>),
        Commas(String),
    }
    Ok(match Names::deserialize(d)? {
        Names::List(v) => v,
        Names::Commas(s) => s
            .split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(str::to_string)
            .collect(),
    })
}

pub(crate) fn default_skip_payment_states() -> Vec<String> {
    vec!["Refunded".into(), "NotRefunded".into()]
}

/// `[rules.refund_orphaned_charge]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefundOrphanedSettings {
    /// The rule is on: charged money no order references is refunded after the grace period.
    #[serde(default = "default_true")]
    pub enabled: bool,
}

impl Default for RefundOrphanedSettings {
    fn default() -> Self {
        Self { enabled: true }
    }
}

/// `[rules.refund_on_order_cancelled]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefundOnOrderCancelledSettings {
    /// The rule is on (off by default: merchants often keep a fee on a cancellation).
    #[serde(default)]
    pub enabled: bool,
}

/// `[rules.cancel_on_order_cancelled]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrderCancelledSettings {
    /// The rule is on: an authorization held only by cancelled orders is cancelled.
    #[serde(default = "default_true")]
    pub enabled: bool,
}

impl Default for OrderCancelledSettings {
    fn default() -> Self {
        Self { enabled: true }
    }
}

/// `[rules.capture_on_shipment]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaptureSettings {
    /// The rule is on (off by default: capturing is the merchant's call).
    #[serde(default)]
    pub enabled: bool,
    /// The shipment state that triggers the capture: `Shipped` or `Delivered`.
    #[serde(default = "default_capture_on")]
    pub on: String,
}

impl Default for CaptureSettings {
    fn default() -> Self {
        Self {
            enabled: false,
            on: default_capture_on(),
        }
    }
}

pub(crate) fn default_capture_on() -> String {
    "Shipped".into()
}

/// `[rules.release_for_fulfillment]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseSettings {
    /// The rule is on.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Accepted for existing configurations and ignored (warned about at start): money
    /// received (a Charge in Success) always counts.
    #[serde(default)]
    pub also_on_charge: bool,
    /// Authorized payments must cover the order total.
    #[serde(default = "default_true")]
    pub require_full_coverage: bool,
}

impl Default for ReleaseSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            also_on_charge: false,
            require_full_coverage: true,
        }
    }
}

/// `[rules.cancel_orphaned_authorization]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CancelSettings {
    /// The rule is on.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// How long an authorization may wait for its order.
    #[serde(default = "default_grace_period")]
    pub grace_period: String,
    /// Accept a grace period under [`MIN_GRACE_PERIOD`] with the rule on (tests only: an
    /// order that takes longer than that to appear has its payment cancelled).
    #[serde(default)]
    pub allow_short_grace_period: bool,
}

impl Default for CancelSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            grace_period: default_grace_period(),
            allow_short_grace_period: false,
        }
    }
}

pub(crate) fn default_true() -> bool {
    true
}

pub(crate) fn default_grace_period() -> String {
    "10m".into()
}

/// `[release]`.
#[derive(Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseSection {
    /// The fulfillment team's webhook.
    pub webhook_url: Option<String>,
    /// The signing secret(s) for the webhook, whitespace-separated when rotating.
    pub webhook_secret: Option<Secret>,
    /// Allow an `http://` webhook URL to a host that is not loopback (releases and their
    /// signatures then travel in clear text).
    #[serde(default)]
    pub allow_insecure_webhook: bool,
    /// Also update the order in commercetools: `transitionState`, `changeOrderState`,
    /// `changeShipmentState` or `setCustomField`.
    pub order_update: Option<String>,
    /// For `transitionState`: the key of the State to move to.
    pub state_key: Option<String>,
    /// For `changeOrderState`: e.g. `Confirmed`.
    pub order_state: Option<String>,
    /// For `changeShipmentState`: e.g. `Ready`.
    pub shipment_state: Option<String>,
    /// For `setCustomField`: the field name.
    pub custom_field_name: Option<String>,
    /// For `setCustomField`: the value, as JSON (`true`, `"released"`); plain text is a string.
    pub custom_field_value: Option<String>,
}

/// `[cancel]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CancelSection {
    /// The Payment Intents action: `cancelPayment` (default) or `reversePayment`.
    #[serde(default = "default_payment_intent_action")]
    pub payment_intent_action: String,
    /// The `paymentInterface`s whose payments Checkout manages (comma- or space-separated);
    /// a payment with another is never sent to Checkout. Unset: any.
    pub payment_interfaces: Option<String>,
}

impl Default for CancelSection {
    fn default() -> Self {
        Self {
            payment_intent_action: default_payment_intent_action(),
            payment_interfaces: None,
        }
    }
}

pub(crate) fn default_payment_intent_action() -> String {
    "cancelPayment".into()
}

/// `[commercetools]`, named after commercetools' own `CTP_*` convention.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommercetoolsSection {
    /// The project key.
    pub project_key: Option<String>,
    /// The API client id.
    pub client_id: Option<String>,
    /// The API client secret.
    pub client_secret: Option<Secret>,
    /// e.g. `https://auth.europe-west1.gcp.commercetools.com`.
    pub auth_url: Option<String>,
    /// e.g. `https://api.europe-west1.gcp.commercetools.com`.
    pub api_url: Option<String>,
    /// Space-separated scopes.
    pub scopes: Option<String>,
    /// The Checkout API; derived from `api_url` when absent.
    pub checkout_url: Option<String>,
    /// Timeout of every HTTP request.
    #[serde(default = "default_http_timeout")]
    pub timeout: String,
}

impl Default for CommercetoolsSection {
    fn default() -> Self {
        Self {
            project_key: None,
            client_id: None,
            client_secret: None,
            auth_url: None,
            api_url: None,
            scopes: None,
            checkout_url: None,
            timeout: default_http_timeout(),
        }
    }
}

pub(crate) fn default_http_timeout() -> String {
    "10s".into()
}

/// `[worker]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerSection {
    /// Messages processed at once.
    #[serde(default = "default_concurrency")]
    pub concurrency: u32,
    /// Deliveries after which a failing message is parked.
    #[serde(default = "default_max_deliveries")]
    pub max_deliveries: u32,
    /// How long to finish in-flight work after SIGTERM/SIGINT.
    #[serde(default = "default_shutdown_timeout")]
    pub shutdown_timeout: String,
    /// First delay before a failed message is retried (doubles per delivery).
    #[serde(default = "default_retry_delay")]
    pub retry_delay: String,
    /// Messages larger than this are parked unread.
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: u32,
    /// How often a progress line is logged (`0s`: never).
    #[serde(default = "default_progress_interval")]
    pub progress_interval: String,
}

impl Default for WorkerSection {
    fn default() -> Self {
        Self {
            concurrency: default_concurrency(),
            max_deliveries: default_max_deliveries(),
            shutdown_timeout: default_shutdown_timeout(),
            retry_delay: default_retry_delay(),
            progress_interval: default_progress_interval(),
            max_message_bytes: default_max_message_bytes(),
        }
    }
}

pub(crate) fn default_concurrency() -> u32 {
    32
}

pub(crate) fn default_max_deliveries() -> u32 {
    5
}

pub(crate) fn default_shutdown_timeout() -> String {
    "30s".into()
}

pub(crate) fn default_retry_delay() -> String {
    "1s".into()
}

pub(crate) fn default_progress_interval() -> String {
    "60s".into()
}

/// 1 MiB: above commercetools' own limits (SQS 256 KB, Pub/Sub payloads are smaller still).
pub(crate) fn default_max_message_bytes() -> u32 {
    1024 * 1024
}

// Debug output shows URLs masked (logs and panics must not carry a password or a webhook's
// token): the sections that hold URLs spell their Debug out.

impl fmt::Debug for StateSection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StateSection")
            .field("url", &Masked(&self.url, UrlKind::Plain))
            .field("claim_lease", &self.claim_lease)
            .finish()
    }
}

impl fmt::Debug for ReleaseSection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReleaseSection")
            .field(
                "webhook_url",
                &self
                    .webhook_url
                    .as_deref()
                    .map(|u| Masked(u, UrlKind::Webhook)),
            )
            .field("webhook_secret", &self.webhook_secret)
            .field("allow_insecure_webhook", &self.allow_insecure_webhook)
            .field("order_update", &self.order_update)
            .field("state_key", &self.state_key)
            .field("order_state", &self.order_state)
            .field("shipment_state", &self.shipment_state)
            .field("custom_field_name", &self.custom_field_name)
            .field("custom_field_value", &self.custom_field_value)
            .finish()
    }
}

impl fmt::Debug for CommercetoolsSection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let url = |u: &Option<String>| u.as_deref().map(|u| mask_url(u, UrlKind::Plain));
        f.debug_struct("CommercetoolsSection")
            .field("project_key", &self.project_key)
            .field("client_id", &self.client_id)
            .field("client_secret", &self.client_secret)
            .field("auth_url", &url(&self.auth_url))
            .field("api_url", &url(&self.api_url))
            .field("scopes", &self.scopes)
            .field("checkout_url", &url(&self.checkout_url))
            .field("timeout", &self.timeout)
            .finish()
    }
}
