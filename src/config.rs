//! Configuration: a TOML file, overridden by environment variables (env wins).
//!
//! [`OPTIONS`] is the single list of every option: its place in the TOML file, its
//! environment variable, its kind and whether it is a secret. Loading merges the file and the
//! environment into one table, checks every key and value against that list (so all problems
//! are reported at once), deserializes the table into [`FileConfig`] (plain serde data, with
//! defaults as named functions) and builds the runtime [`Settings`] from it.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize, Serializer};

use crate::model::ShipmentState;
use crate::rules::{CancelRule, CaptureRule, OrderCancelledRule, ReleaseRule, Rules};

/// What kind of value an option takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Text.
    Str,
    /// `true` or `false`.
    Bool,
    /// A whole number ≥ 0.
    Int,
    /// A duration such as `10m`, `2s`, `1h 30m`.
    Duration,
}

/// One configuration option.
#[derive(Debug, Clone, Copy)]
pub struct OptionSpec {
    /// The TOML path, e.g. `["rules", "cancel_orphaned_authorization", "grace_period"]`.
    pub path: &'static [&'static str],
    /// The environment variable that overrides it.
    pub env: &'static str,
    /// Its kind.
    pub kind: Kind,
    /// Never printed or logged.
    pub secret: bool,
}

impl OptionSpec {
    /// `a.b.c`.
    pub fn dotted(&self) -> String {
        self.path.join(".")
    }
}

macro_rules! opt {
    ([$($p:literal),+], $env:literal, $kind:ident) => {
        OptionSpec { path: &[$($p),+], env: $env, kind: Kind::$kind, secret: false }
    };
    ([$($p:literal),+], $env:literal, $kind:ident, secret) => {
        OptionSpec { path: &[$($p),+], env: $env, kind: Kind::$kind, secret: true }
    };
}

/// Every option, with its environment variable.
pub const OPTIONS: &[OptionSpec] = &[
    opt!(["source"], "PAYRULES_SOURCE", Str),
    opt!(["dry_run"], "PAYRULES_DRY_RUN", Bool),
    opt!(["file", "path"], "PAYRULES_FILE_PATH", Str),
    opt!(
        ["pubsub", "subscription"],
        "PAYRULES_PUBSUB_SUBSCRIPTION",
        Str
    ),
    opt!(["pubsub", "streams"], "PAYRULES_PUBSUB_STREAMS", Int),
    opt!(
        ["pubsub", "max_outstanding_messages"],
        "PAYRULES_PUBSUB_MAX_OUTSTANDING_MESSAGES",
        Int
    ),
    opt!(
        ["pubsub", "max_outstanding_bytes"],
        "PAYRULES_PUBSUB_MAX_OUTSTANDING_BYTES",
        Int
    ),
    opt!(
        ["pubsub", "dead_letter_topic"],
        "PAYRULES_PUBSUB_DEAD_LETTER_TOPIC",
        Str
    ),
    opt!(["sqs", "queue_url"], "PAYRULES_SQS_QUEUE_URL", Str),
    opt!(["sqs", "pollers"], "PAYRULES_SQS_POLLERS", Int),
    opt!(
        ["sqs", "visibility_timeout"],
        "PAYRULES_SQS_VISIBILITY_TIMEOUT",
        Duration
    ),
    opt!(
        ["sqs", "dead_letter_queue_url"],
        "PAYRULES_SQS_DEAD_LETTER_QUEUE_URL",
        Str
    ),
    opt!(["state", "url"], "PAYRULES_STATE_URL", Str),
    opt!(["state", "claim_lease"], "PAYRULES_CLAIM_LEASE", Duration),
    opt!(
        ["rules", "release_for_fulfillment", "enabled"],
        "PAYRULES_RELEASE_ENABLED",
        Bool
    ),
    opt!(
        ["rules", "release_for_fulfillment", "also_on_charge"],
        "PAYRULES_RELEASE_ALSO_ON_CHARGE",
        Bool
    ),
    opt!(
        ["rules", "release_for_fulfillment", "require_full_coverage"],
        "PAYRULES_RELEASE_REQUIRE_FULL_COVERAGE",
        Bool
    ),
    opt!(
        ["rules", "cancel_orphaned_authorization", "enabled"],
        "PAYRULES_CANCEL_ENABLED",
        Bool
    ),
    opt!(
        ["rules", "cancel_orphaned_authorization", "grace_period"],
        "PAYRULES_GRACE_PERIOD",
        Duration
    ),
    opt!(
        ["rules", "cancel_on_order_cancelled", "enabled"],
        "PAYRULES_CANCEL_ON_ORDER_CANCELLED",
        Bool
    ),
    opt!(
        ["rules", "capture_on_shipment", "enabled"],
        "PAYRULES_CAPTURE_ENABLED",
        Bool
    ),
    opt!(
        ["rules", "capture_on_shipment", "on"],
        "PAYRULES_CAPTURE_ON",
        Str
    ),
    opt!(
        ["release", "webhook_url"],
        "PAYRULES_RELEASE_WEBHOOK_URL",
        Str
    ),
    opt!(
        ["release", "webhook_secret"],
        "PAYRULES_RELEASE_WEBHOOK_SECRET",
        Str,
        secret
    ),
    opt!(
        ["release", "order_update"],
        "PAYRULES_RELEASE_ORDER_UPDATE",
        Str
    ),
    opt!(["release", "state_key"], "PAYRULES_RELEASE_STATE_KEY", Str),
    opt!(
        ["release", "order_state"],
        "PAYRULES_RELEASE_ORDER_STATE",
        Str
    ),
    opt!(
        ["release", "shipment_state"],
        "PAYRULES_RELEASE_SHIPMENT_STATE",
        Str
    ),
    opt!(
        ["release", "custom_field_name"],
        "PAYRULES_RELEASE_CUSTOM_FIELD_NAME",
        Str
    ),
    opt!(
        ["release", "custom_field_value"],
        "PAYRULES_RELEASE_CUSTOM_FIELD_VALUE",
        Str
    ),
    opt!(
        ["cancel", "payment_intent_action"],
        "PAYRULES_CANCEL_PAYMENT_INTENT_ACTION",
        Str
    ),
    opt!(["commercetools", "project_key"], "CTP_PROJECT_KEY", Str),
    opt!(["commercetools", "client_id"], "CTP_CLIENT_ID", Str),
    opt!(
        ["commercetools", "client_secret"],
        "CTP_CLIENT_SECRET",
        Str,
        secret
    ),
    opt!(["commercetools", "auth_url"], "CTP_AUTH_URL", Str),
    opt!(["commercetools", "api_url"], "CTP_API_URL", Str),
    opt!(["commercetools", "scopes"], "CTP_SCOPES", Str),
    opt!(["commercetools", "checkout_url"], "CTP_CHECKOUT_URL", Str),
    opt!(
        ["commercetools", "timeout"],
        "PAYRULES_HTTP_TIMEOUT",
        Duration
    ),
    opt!(["worker", "concurrency"], "PAYRULES_CONCURRENCY", Int),
    opt!(["worker", "max_deliveries"], "PAYRULES_MAX_DELIVERIES", Int),
    opt!(
        ["worker", "shutdown_timeout"],
        "PAYRULES_SHUTDOWN_TIMEOUT",
        Duration
    ),
    opt!(["worker", "retry_delay"], "PAYRULES_RETRY_DELAY", Duration),
];

/// A string that must never be shown: `Debug`, `Display` and `Serialize` print `****`.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    /// The value, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(****)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("****")
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("****")
    }
}

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
}

fn default_source() -> String {
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
}

impl Default for PubsubSection {
    fn default() -> Self {
        Self {
            subscription: None,
            streams: default_streams(),
            max_outstanding_messages: default_max_outstanding_messages(),
            max_outstanding_bytes: default_max_outstanding_bytes(),
            dead_letter_topic: None,
        }
    }
}

fn default_streams() -> u32 {
    1
}

fn default_max_outstanding_messages() -> u32 {
    1000
}

fn default_max_outstanding_bytes() -> u32 {
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
}

impl Default for SqsSection {
    fn default() -> Self {
        Self {
            queue_url: None,
            pollers: default_pollers(),
            visibility_timeout: default_visibility_timeout(),
            dead_letter_queue_url: None,
        }
    }
}

fn default_pollers() -> u32 {
    4
}

fn default_visibility_timeout() -> String {
    "60s".into()
}

/// `[state]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
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

fn default_claim_lease() -> String {
    "2m".into()
}

fn default_state_url() -> String {
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

fn default_capture_on() -> String {
    "Shipped".into()
}

/// `[rules.release_for_fulfillment]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseSettings {
    /// The rule is on.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Accepted for existing configurations; ignored (a successful Charge always counts).
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
}

impl Default for CancelSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            grace_period: default_grace_period(),
        }
    }
}

fn default_true() -> bool {
    true
}

fn default_grace_period() -> String {
    "10m".into()
}

/// `[release]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseSection {
    /// The fulfillment team's webhook.
    pub webhook_url: Option<String>,
    /// The HMAC-SHA256 signing secret for the webhook.
    pub webhook_secret: Option<Secret>,
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
}

impl Default for CancelSection {
    fn default() -> Self {
        Self {
            payment_intent_action: default_payment_intent_action(),
        }
    }
}

fn default_payment_intent_action() -> String {
    "cancelPayment".into()
}

/// `[commercetools]`, named after commercetools' own `CTP_*` convention.
#[derive(Debug, Clone, Serialize, Deserialize)]
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

fn default_http_timeout() -> String {
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
}

impl Default for WorkerSection {
    fn default() -> Self {
        Self {
            concurrency: default_concurrency(),
            max_deliveries: default_max_deliveries(),
            shutdown_timeout: default_shutdown_timeout(),
            retry_delay: default_retry_delay(),
        }
    }
}

fn default_concurrency() -> u32 {
    32
}

fn default_max_deliveries() -> u32 {
    5
}

fn default_shutdown_timeout() -> String {
    "30s".into()
}

fn default_retry_delay() -> String {
    "1s".into()
}

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

/// The fulfillment webhook, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookSettings {
    /// Where to POST.
    pub url: String,
    /// The signing secrets: one signature per secret, so a receiver can rotate without a gap.
    pub secrets: Vec<Secret>,
}

/// The commercetools client, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
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
}

/// The runtime configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
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
    /// The commercetools client, if configured.
    pub commercetools: Option<CommercetoolsSettings>,
    /// Worker tuning.
    pub worker: WorkerSettings,
}

/// The loaded configuration: what was written (defaults filled in) and what it builds into.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The merged file + environment configuration.
    pub file: FileConfig,
    /// The runtime settings.
    pub settings: Settings,
}

/// Loads the configuration from an optional TOML file and the process environment.
///
/// # Errors
/// Every problem found, at once.
pub fn load(file: Option<&Path>) -> Result<Loaded, ConfigErrors> {
    load_with(file, |name| std::env::var(name).ok())
}

/// [`load`] with an explicit environment (tests).
///
/// # Errors
/// Every problem found, at once.
pub fn load_with(
    file: Option<&Path>,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Loaded, ConfigErrors> {
    let config = merge_with(file, env)?;
    let settings = config.build()?;
    Ok(Loaded {
        file: config,
        settings,
    })
}

/// Merges the file and the environment and checks every key and value, without the
/// cross-option checks of [`FileConfig::build`] (replay only needs the rules).
///
/// # Errors
/// Every problem found, at once.
pub fn merge_with(
    file: Option<&Path>,
    env: impl Fn(&str) -> Option<String>,
) -> Result<FileConfig, ConfigErrors> {
    let mut problems = Vec::new();
    let mut table = toml::Table::new();
    if let Some(path) = file {
        let place = path.display().to_string();
        match std::fs::read_to_string(path) {
            Ok(text) => match text.parse::<toml::Table>() {
                Ok(t) => table = t,
                Err(e) => problems.push(Problem {
                    place,
                    message: format!("not valid TOML: {}", e.message()),
                }),
            },
            Err(e) => problems.push(Problem {
                place,
                message: format!("cannot read: {e}"),
            }),
        }
    }
    check_keys(&table, &mut Vec::new(), &mut problems);
    for spec in OPTIONS {
        if let Some(value) = env(spec.env) {
            match env_value(spec, &value) {
                Ok(v) => insert(&mut table, spec.path, v),
                Err(message) => problems.push(Problem {
                    place: spec.env.to_string(),
                    message,
                }),
            }
        } else if let Some(v) = get(&table, spec.path) {
            check_type(spec, v, &mut problems);
        }
    }
    if !problems.is_empty() {
        return Err(ConfigErrors(problems));
    }
    toml::Value::Table(table)
        .try_into()
        .map_err(|e: toml::de::Error| {
            ConfigErrors(vec![Problem {
                place: "configuration".into(),
                message: e.to_string(),
            }])
        })
}

fn check_keys(table: &toml::Table, prefix: &mut Vec<String>, problems: &mut Vec<Problem>) {
    for (key, value) in table {
        prefix.push(key.clone());
        let is_option = OPTIONS.iter().any(|o| {
            o.path.len() == prefix.len() && o.path.iter().zip(prefix.iter()).all(|(a, b)| a == b)
        });
        let is_section = OPTIONS.iter().any(|o| {
            o.path.len() > prefix.len() && o.path.iter().zip(prefix.iter()).all(|(a, b)| a == b)
        });
        match value {
            toml::Value::Table(t) if is_section => check_keys(t, prefix, problems),
            _ if is_option => {}
            _ => problems.push(Problem {
                place: prefix.join("."),
                message: "unknown option".into(),
            }),
        }
        prefix.pop();
    }
}

fn get<'a>(table: &'a toml::Table, path: &[&str]) -> Option<&'a toml::Value> {
    let (last, parents) = path.split_last()?;
    let mut t = table;
    for p in parents {
        t = t.get(*p)?.as_table()?;
    }
    t.get(*last)
}

fn insert(table: &mut toml::Table, path: &[&str], value: toml::Value) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut t = table;
    for p in parents {
        let entry = t
            .entry(p.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if !entry.is_table() {
            *entry = toml::Value::Table(toml::Table::new());
        }
        let toml::Value::Table(next) = entry else {
            return;
        };
        t = next;
    }
    t.insert(last.to_string(), value);
}

fn env_value(spec: &OptionSpec, raw: &str) -> Result<toml::Value, String> {
    let shown = if spec.secret { "****" } else { raw };
    match spec.kind {
        Kind::Str | Kind::Duration => Ok(toml::Value::String(raw.to_string())),
        Kind::Bool => match raw.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Ok(toml::Value::Boolean(true)),
            "false" | "0" | "no" | "off" => Ok(toml::Value::Boolean(false)),
            _ => Err(format!("expected true or false, got {shown:?}")),
        },
        Kind::Int => raw
            .trim()
            .parse::<u32>()
            .map(|n| toml::Value::Integer(i64::from(n)))
            .map_err(|_| format!("expected a whole number, got {shown:?}")),
    }
}

fn check_type(spec: &OptionSpec, v: &toml::Value, problems: &mut Vec<Problem>) {
    let ok = match spec.kind {
        Kind::Str | Kind::Duration => v.is_str(),
        Kind::Bool => v.is_bool(),
        Kind::Int => v
            .as_integer()
            .is_some_and(|n| (0..=i64::from(u32::MAX)).contains(&n)),
    };
    if !ok {
        let expected = match spec.kind {
            Kind::Str => "a string",
            Kind::Duration => "a duration string such as \"10m\"",
            Kind::Bool => "true or false",
            Kind::Int => "a whole number",
        };
        problems.push(Problem {
            place: spec.dotted(),
            message: format!("expected {expected}, got a {}", v.type_str()),
        });
    }
}

/// Parses `10m`, `2s`, `1h 30m`, `500ms`.
///
/// # Errors
/// A message naming the value.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|e| format!("{s:?} is not a duration such as \"10m\" or \"2s\" ({e})"))
}

fn place(spec_path: &[&str]) -> String {
    let spec = OPTIONS.iter().find(|o| o.path == spec_path);
    match spec {
        Some(s) => format!("{} ({})", s.dotted(), s.env),
        None => spec_path.join("."),
    }
}

fn http_url(value: &str, at: &[&str], problems: &mut Vec<Problem>) -> String {
    let trimmed = value.trim().trim_end_matches('/').to_string();
    if !(trimmed.starts_with("http://") || trimmed.starts_with("https://")) || trimmed.len() < 10 {
        problems.push(Problem {
            place: place(at),
            message: format!("{value:?} is not an http(s) URL"),
        });
    }
    trimmed
}

/// `https://api.europe-west1.gcp.commercetools.com` → `https://checkout.europe-west1.gcp.commercetools.com`.
pub fn derive_checkout_url(api_url: &str) -> Option<String> {
    let (scheme, rest) = api_url.split_once("://")?;
    let host_rest = rest.strip_prefix("api.")?;
    Some(format!("{scheme}://checkout.{host_rest}"))
}

impl FileConfig {
    /// Validates and builds the runtime settings.
    ///
    /// # Errors
    /// Every problem found, at once.
    pub fn build(&self) -> Result<Settings, ConfigErrors> {
        let mut problems = Vec::new();
        let source = match self.source.as_str() {
            "file" => match &self.file.path {
                Some(p) if !p.trim().is_empty() => Some(SourceSettings::File {
                    path: PathBuf::from(p),
                }),
                _ => {
                    problems.push(Problem {
                        place: place(&["file", "path"]),
                        message: "required when the source is file".into(),
                    });
                    None
                }
            },
            "pubsub" => match &self.pubsub.subscription {
                Some(s) if is_subscription_name(s) => {
                    Some(SourceSettings::Pubsub(PubsubSettings {
                        subscription: s.clone(),
                        streams: self.pubsub.streams.max(1) as usize,
                        max_outstanding_messages: i64::from(self.pubsub.max_outstanding_messages),
                        max_outstanding_bytes: i64::from(self.pubsub.max_outstanding_bytes),
                        dead_letter_topic: self
                            .pubsub
                            .dead_letter_topic
                            .clone()
                            .filter(|t| !t.trim().is_empty()),
                    }))
                }
                Some(s) => {
                    problems.push(Problem {
                        place: place(&["pubsub", "subscription"]),
                        message: format!("{s:?} is not of the form projects/P/subscriptions/S"),
                    });
                    None
                }
                None => {
                    problems.push(Problem {
                        place: place(&["pubsub", "subscription"]),
                        message: "required when the source is pubsub".into(),
                    });
                    None
                }
            },
            "sqs" => match &self.sqs.queue_url {
                Some(u) => Some(SourceSettings::Sqs(SqsSettings {
                    queue_url: http_url(u, &["sqs", "queue_url"], &mut problems),
                    pollers: self.sqs.pollers.max(1) as usize,
                    visibility_timeout: self.duration(
                        &self.sqs.visibility_timeout,
                        &["sqs", "visibility_timeout"],
                        &mut problems,
                    ),
                    dead_letter_queue_url: self
                        .sqs
                        .dead_letter_queue_url
                        .as_deref()
                        .filter(|u| !u.trim().is_empty())
                        .map(|u| http_url(u, &["sqs", "dead_letter_queue_url"], &mut problems)),
                })),
                None => {
                    problems.push(Problem {
                        place: place(&["sqs", "queue_url"]),
                        message: "required when the source is sqs".into(),
                    });
                    None
                }
            },
            other => {
                problems.push(Problem {
                    place: place(&["source"]),
                    message: format!("{other:?} is not one of file, pubsub, sqs"),
                });
                None
            }
        };

        let grace_path = ["rules", "cancel_orphaned_authorization", "grace_period"];
        let grace_period = self.duration(
            &self.rules.cancel_orphaned_authorization.grace_period,
            &grace_path,
            &mut problems,
        );
        let capture_on = self.capture_on(&mut problems);
        let shutdown_timeout = self.duration(
            &self.worker.shutdown_timeout,
            &["worker", "shutdown_timeout"],
            &mut problems,
        );
        let claim_lease = self.duration(
            &self.state.claim_lease,
            &["state", "claim_lease"],
            &mut problems,
        );
        let retry_delay = self.duration(
            &self.worker.retry_delay,
            &["worker", "retry_delay"],
            &mut problems,
        );

        if !(self.state.url.starts_with("sqlite:")
            || self.state.url.starts_with("postgres://")
            || self.state.url.starts_with("postgresql://")
            || self.state.url == "memory:")
        {
            problems.push(Problem {
                place: place(&["state", "url"]),
                message: format!(
                    "{:?} is not a sqlite://PATH, postgres://… or memory: URL",
                    self.state.url
                ),
            });
        }

        let webhook = match (&self.release.webhook_url, &self.release.webhook_secret) {
            (Some(url), Some(secret)) if !secret.expose().trim().is_empty() => {
                Some(WebhookSettings {
                    url: http_url(url, &["release", "webhook_url"], &mut problems),
                    // Several secrets (whitespace-separated) rotate: each signs every delivery.
                    secrets: secret
                        .expose()
                        .split_whitespace()
                        .map(Secret::new)
                        .collect(),
                })
            }
            (Some(_), _) => {
                problems.push(Problem {
                    place: place(&["release", "webhook_secret"]),
                    message: "required when a webhook URL is set: receivers verify the signature"
                        .into(),
                });
                None
            }
            (None, Some(_)) => {
                problems.push(Problem {
                    place: place(&["release", "webhook_url"]),
                    message: "a webhook secret is set but no webhook URL".into(),
                });
                None
            }
            (None, None) => None,
        };

        let commercetools = self.commercetools_settings(&mut problems);
        let order_update = self.order_update(&mut problems);
        if order_update.is_some() && commercetools.is_none() {
            problems.push(Problem {
                place: place(&["release", "order_update"]),
                message: "needs the commercetools client (CTP_PROJECT_KEY, CTP_CLIENT_ID, CTP_CLIENT_SECRET, CTP_AUTH_URL, CTP_API_URL)".into(),
            });
        }
        let intent = self.cancel.payment_intent_action.trim().to_string();
        if intent != "cancelPayment" && intent != "reversePayment" {
            problems.push(Problem {
                place: place(&["cancel", "payment_intent_action"]),
                message: format!("{intent:?} is not cancelPayment or reversePayment"),
            });
        }

        if self.worker.concurrency == 0 {
            problems.push(Problem {
                place: place(&["worker", "concurrency"]),
                message: "must be at least 1".into(),
            });
        }
        if self.worker.max_deliveries == 0 {
            problems.push(Problem {
                place: place(&["worker", "max_deliveries"]),
                message: "must be at least 1".into(),
            });
        }

        match (problems.is_empty(), source) {
            (true, Some(source)) => Ok(Settings {
                source,
                dry_run: self.dry_run,
                state_url: self.state.url.clone(),
                claim_lease,
                rules: self.rules_with(grace_period, capture_on),
                webhook,
                order_update,
                payment_intent_action: intent,
                commercetools,
                worker: WorkerSettings {
                    concurrency: self.worker.concurrency as usize,
                    max_deliveries: self.worker.max_deliveries,
                    shutdown_timeout,
                    retry_delay,
                },
            }),
            _ => Err(ConfigErrors(problems)),
        }
    }

    /// Only the rule settings (what `replay` needs).
    ///
    /// # Errors
    /// A grace period that is not a duration.
    pub fn rules(&self) -> Result<Rules, ConfigErrors> {
        let mut problems = Vec::new();
        let grace_period = self.duration(
            &self.rules.cancel_orphaned_authorization.grace_period,
            &["rules", "cancel_orphaned_authorization", "grace_period"],
            &mut problems,
        );
        let capture_on = self.capture_on(&mut problems);
        if !problems.is_empty() {
            return Err(ConfigErrors(problems));
        }
        Ok(self.rules_with(grace_period, capture_on))
    }

    /// `rules.capture_on_shipment.on`: Shipped or Delivered.
    fn capture_on(&self, problems: &mut Vec<Problem>) -> ShipmentState {
        let on = &self.rules.capture_on_shipment.on;
        match ShipmentState::parse(on) {
            s @ (ShipmentState::Shipped | ShipmentState::Delivered) => s,
            _ => {
                problems.push(Problem {
                    place: place(&["rules", "capture_on_shipment", "on"]),
                    message: format!("{on:?} is not Shipped or Delivered"),
                });
                ShipmentState::Shipped
            }
        }
    }

    fn rules_with(&self, grace_period: Duration, capture_on: ShipmentState) -> Rules {
        let r = &self.rules.release_for_fulfillment;
        Rules {
            release: ReleaseRule {
                enabled: r.enabled,
                also_on_charge: r.also_on_charge,
                require_full_coverage: r.require_full_coverage,
            },
            cancel: CancelRule {
                enabled: self.rules.cancel_orphaned_authorization.enabled,
                grace_period,
            },
            cancel_on_order_cancelled: OrderCancelledRule {
                enabled: self.rules.cancel_on_order_cancelled.enabled,
            },
            capture: CaptureRule {
                enabled: self.rules.capture_on_shipment.enabled,
                on: capture_on,
            },
        }
    }

    fn duration(&self, value: &str, at: &[&str], problems: &mut Vec<Problem>) -> Duration {
        parse_duration(value).unwrap_or_else(|message| {
            problems.push(Problem {
                place: place(at),
                message,
            });
            Duration::ZERO
        })
    }

    fn order_update(&self, problems: &mut Vec<Problem>) -> Option<OrderUpdate> {
        let r = &self.release;
        let kind = r.order_update.as_deref()?.trim();
        let mut need = |v: &Option<String>, name: &'static str| -> Option<String> {
            match v.as_deref().map(str::trim) {
                Some(s) if !s.is_empty() => Some(s.to_string()),
                _ => {
                    problems.push(Problem {
                        place: place(&["release", name]),
                        message: format!("required when release.order_update is {kind}"),
                    });
                    None
                }
            }
        };
        match kind {
            "transitionState" => need(&r.state_key, "state_key")
                .map(|state_key| OrderUpdate::TransitionState { state_key }),
            "changeOrderState" => need(&r.order_state, "order_state")
                .map(|order_state| OrderUpdate::ChangeOrderState { order_state }),
            "changeShipmentState" => need(&r.shipment_state, "shipment_state")
                .map(|shipment_state| OrderUpdate::ChangeShipmentState { shipment_state }),
            "setCustomField" => {
                let name = need(&r.custom_field_name, "custom_field_name");
                let value = need(&r.custom_field_value, "custom_field_value");
                Some(OrderUpdate::SetCustomField {
                    name: name?,
                    value: value.map(|v| {
                        serde_json::from_str(&v).unwrap_or(serde_json::Value::String(v))
                    })?,
                })
            }
            other => {
                problems.push(Problem {
                    place: place(&["release", "order_update"]),
                    message: format!(
                        "{other:?} is not one of transitionState, changeOrderState, changeShipmentState, setCustomField"
                    ),
                });
                None
            }
        }
    }

    fn commercetools_settings(&self, problems: &mut Vec<Problem>) -> Option<CommercetoolsSettings> {
        let c = &self.commercetools;
        let any = c.project_key.is_some()
            || c.client_id.is_some()
            || c.client_secret.is_some()
            || c.api_url.is_some()
            || c.auth_url.is_some();
        if !any {
            return None;
        }
        let mut required = |v: &Option<String>, name: &'static str| -> String {
            match v {
                Some(s) if !s.trim().is_empty() => s.trim().to_string(),
                _ => {
                    problems.push(Problem {
                        place: place(&["commercetools", name]),
                        message: "required when any commercetools option is set".into(),
                    });
                    String::new()
                }
            }
        };
        let project_key = required(&c.project_key, "project_key");
        let client_id = required(&c.client_id, "client_id");
        let auth_url = required(&c.auth_url, "auth_url");
        let api_url = required(&c.api_url, "api_url");
        let client_secret = match &c.client_secret {
            Some(s) if !s.expose().is_empty() => s.clone(),
            _ => {
                problems.push(Problem {
                    place: place(&["commercetools", "client_secret"]),
                    message: "required when any commercetools option is set".into(),
                });
                Secret::default()
            }
        };
        let auth_url = if auth_url.is_empty() {
            auth_url
        } else {
            http_url(&auth_url, &["commercetools", "auth_url"], problems)
        };
        let api_url = if api_url.is_empty() {
            api_url
        } else {
            http_url(&api_url, &["commercetools", "api_url"], problems)
        };
        let checkout_url = match &c.checkout_url {
            Some(u) => http_url(u, &["commercetools", "checkout_url"], problems),
            None => match derive_checkout_url(&api_url) {
                Some(u) => u,
                None => {
                    if !api_url.is_empty() {
                        problems.push(Problem {
                            place: place(&["commercetools", "checkout_url"]),
                            message: format!(
                                "cannot be derived from {api_url:?} (expected https://api.REGION.commercetools.com); set it"
                            ),
                        });
                    }
                    String::new()
                }
            },
        };
        let timeout = self.duration(&c.timeout, &["commercetools", "timeout"], problems);
        Some(CommercetoolsSettings {
            timeout,
            project_key,
            client_id,
            client_secret,
            auth_url,
            api_url,
            scopes: c.scopes.clone().filter(|s| !s.trim().is_empty()),
            checkout_url,
        })
    }

    /// The effective configuration as TOML, secrets masked (`payrules check-config`).
    pub fn to_masked_toml(&self) -> String {
        toml::to_string(self).unwrap_or_else(|e| format!("# cannot print the configuration: {e}\n"))
    }
}

fn is_subscription_name(s: &str) -> bool {
    let parts: Vec<&str> = s.split('/').collect();
    parts.len() == 4
        && parts[0] == "projects"
        && parts[2] == "subscriptions"
        && !parts[1].is_empty()
        && !parts[3].is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn env_wins_over_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "source = \"file\"\n[file]\npath = \"a.jsonl\"\n[rules.cancel_orphaned_authorization]\ngrace_period = \"5m\"\n",
        )
        .unwrap();
        let loaded = load_with(Some(&path), env(&[("PAYRULES_GRACE_PERIOD", "2s")])).unwrap();
        assert_eq!(
            loaded.settings.rules.cancel.grace_period,
            Duration::from_secs(2)
        );
        assert_eq!(
            loaded.settings.source,
            SourceSettings::File {
                path: "a.jsonl".into()
            }
        );
    }

    #[test]
    fn every_problem_is_listed_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "colour = \"blue\"\n[worker]\nconcurrency = \"many\"\n",
        )
        .unwrap();
        let err = load_with(
            Some(&path),
            env(&[("PAYRULES_DRY_RUN", "maybe"), ("PAYRULES_SOURCE", "kafka")]),
        )
        .unwrap_err();
        let places: Vec<&str> = err.0.iter().map(|p| p.place.as_str()).collect();
        assert!(places.contains(&"colour"), "{err}");
        assert!(places.contains(&"worker.concurrency"), "{err}");
        assert!(places.contains(&"PAYRULES_DRY_RUN"), "{err}");
    }

    #[test]
    fn semantic_problems_are_listed_together() {
        let err = load_with(
            None,
            env(&[
                ("PAYRULES_SOURCE", "pubsub"),
                ("PAYRULES_PUBSUB_SUBSCRIPTION", "my-sub"),
                ("PAYRULES_GRACE_PERIOD", "soon"),
                (
                    "PAYRULES_RELEASE_WEBHOOK_URL",
                    "https://fulfil.example.com/hook",
                ),
                ("CTP_PROJECT_KEY", "shop"),
            ]),
        )
        .unwrap_err();
        let text = err.to_string();
        for needle in [
            "projects/P/subscriptions/S",
            "PAYRULES_GRACE_PERIOD",
            "PAYRULES_RELEASE_WEBHOOK_SECRET",
            "CTP_CLIENT_SECRET",
        ] {
            assert!(text.contains(needle), "missing {needle} in:\n{text}");
        }
    }

    fn leaves(v: &toml::Value, prefix: &mut Vec<String>, out: &mut Vec<String>) {
        match v {
            toml::Value::Table(t) => {
                for (k, v) in t {
                    prefix.push(k.clone());
                    leaves(v, prefix, out);
                    prefix.pop();
                }
            }
            _ => out.push(prefix.join(".")),
        }
    }

    #[test]
    fn every_option_has_an_env_var_and_every_field_is_an_option() {
        // Every field of a fully populated configuration is in OPTIONS (so it can be set by
        // env, is type-checked and printed), and every OPTIONS entry is settable by env.
        let mut pairs: Vec<(&str, String)> = Vec::new();
        for o in OPTIONS {
            let v = match o.kind {
                Kind::Bool => "true".to_string(),
                Kind::Int => "3".to_string(),
                Kind::Duration => "2s".to_string(),
                Kind::Str => format!("https://example.com/{}", o.env),
            };
            pairs.push((o.env, v));
        }
        let env_map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        let config = merge_with(None, |k| env_map.get(k).cloned()).unwrap();
        let table = toml::Value::try_from(&config).unwrap();
        let mut found = Vec::new();
        leaves(&table, &mut Vec::new(), &mut found);
        let known: Vec<String> = OPTIONS.iter().map(OptionSpec::dotted).collect();
        for leaf in &found {
            assert!(known.contains(leaf), "{leaf} has no OPTIONS entry");
        }
        for k in &known {
            assert!(found.contains(k), "{k} is in OPTIONS but not in FileConfig");
        }
    }

    #[test]
    fn the_release_order_update_builds_from_env() {
        let loaded = load_with(
            None,
            env(&[
                ("PAYRULES_FILE_PATH", "-"),
                ("PAYRULES_RELEASE_ORDER_UPDATE", "setCustomField"),
                ("PAYRULES_RELEASE_CUSTOM_FIELD_NAME", "released"),
                ("PAYRULES_RELEASE_CUSTOM_FIELD_VALUE", "true"),
                ("CTP_PROJECT_KEY", "shop"),
                ("CTP_CLIENT_ID", "id"),
                ("CTP_CLIENT_SECRET", "s"),
                (
                    "CTP_AUTH_URL",
                    "https://auth.europe-west1.gcp.commercetools.com",
                ),
                (
                    "CTP_API_URL",
                    "https://api.europe-west1.gcp.commercetools.com",
                ),
            ]),
        )
        .unwrap();
        assert_eq!(
            loaded.settings.order_update,
            Some(OrderUpdate::SetCustomField {
                name: "released".into(),
                value: serde_json::Value::Bool(true)
            })
        );
    }

    #[test]
    fn secrets_never_print() {
        let loaded = load_with(
            None,
            env(&[
                ("PAYRULES_FILE_PATH", "-"),
                (
                    "PAYRULES_RELEASE_WEBHOOK_URL",
                    "https://fulfil.example.com/hook",
                ),
                ("PAYRULES_RELEASE_WEBHOOK_SECRET", "whsec_topsecret"),
                ("CTP_PROJECT_KEY", "shop"),
                ("CTP_CLIENT_ID", "id"),
                ("CTP_CLIENT_SECRET", "ctp-topsecret"),
                (
                    "CTP_AUTH_URL",
                    "https://auth.europe-west1.gcp.commercetools.com",
                ),
                (
                    "CTP_API_URL",
                    "https://api.europe-west1.gcp.commercetools.com",
                ),
            ]),
        )
        .unwrap();
        let shown = format!(
            "{}\n{:?}\n{:?}",
            loaded.file.to_masked_toml(),
            loaded.settings,
            loaded.file
        );
        assert!(!shown.contains("topsecret"), "{shown}");
        assert_eq!(
            loaded.settings.commercetools.unwrap().checkout_url,
            "https://checkout.europe-west1.gcp.commercetools.com"
        );
    }
}
