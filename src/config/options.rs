//! The option table: every option's TOML place, environment variable, kind and secrecy, and
//! the overlay of the environment onto the file.

#[allow(clippy::wildcard_imports)]
use super::{Problem, UrlKind, fmt};

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
    /// Also readable from a file named by `{env}_FILE` (secrets mounted as files).
    pub from_file: bool,
}

impl OptionSpec {
    /// `a.b.c`.
    pub fn dotted(&self) -> String {
        self.path.join(".")
    }

    /// How a URL in this option is masked when shown: the webhook's path and query are often
    /// its credential.
    pub fn url_kind(&self) -> UrlKind {
        if self.path == ["release", "webhook_url"] {
            UrlKind::Webhook
        } else {
            UrlKind::Plain
        }
    }
}

macro_rules! opt {
    ([$($p:literal),+], $env:literal, $kind:ident) => {
        OptionSpec { path: &[$($p),+], env: $env, kind: Kind::$kind, secret: false, from_file: false }
    };
    ([$($p:literal),+], $env:literal, $kind:ident, secret) => {
        OptionSpec { path: &[$($p),+], env: $env, kind: Kind::$kind, secret: true, from_file: true }
    };
    // Not secret as a whole (a URL is shown with its password masked), but often kept in a
    // mounted secret.
    ([$($p:literal),+], $env:literal, $kind:ident, file) => {
        OptionSpec { path: &[$($p),+], env: $env, kind: Kind::$kind, secret: false, from_file: true }
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
    opt!(
        ["pubsub", "dry_run_subscription"],
        "PAYRULES_DRY_RUN_SUBSCRIPTION",
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
    opt!(
        ["sqs", "dry_run_queue_url"],
        "PAYRULES_DRY_RUN_QUEUE_URL",
        Str
    ),
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
    opt!(["state", "url"], "PAYRULES_STATE_URL", Str, file),
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
        [
            "rules",
            "cancel_orphaned_authorization",
            "allow_short_grace_period"
        ],
        "PAYRULES_ALLOW_SHORT_GRACE_PERIOD",
        Bool
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
        ["rules", "refund_orphaned_charge", "enabled"],
        "PAYRULES_REFUND_ORPHANED_ENABLED",
        Bool
    ),
    opt!(
        ["rules", "refund_on_order_cancelled", "enabled"],
        "PAYRULES_REFUND_ON_ORDER_CANCELLED",
        Bool
    ),
    opt!(
        ["rules", "refund_on_return", "enabled"],
        "PAYRULES_REFUND_ON_RETURN",
        Bool
    ),
    opt!(
        ["rules", "refund_on_return", "on"],
        "PAYRULES_REFUND_ON_RETURN_ON",
        Str
    ),
    opt!(
        ["rules", "refund_on_return", "skip_payment_states"],
        "PAYRULES_REFUND_ON_RETURN_SKIP_PAYMENT_STATES",
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
        ["release", "allow_insecure_webhook"],
        "PAYRULES_RELEASE_ALLOW_INSECURE_WEBHOOK",
        Bool
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
    opt!(
        ["worker", "progress_interval"],
        "PAYRULES_PROGRESS_INTERVAL",
        Duration
    ),
    opt!(["http", "addr"], "PAYRULES_HTTP_ADDR", Str),
    opt!(
        ["cancel", "payment_interfaces"],
        "PAYRULES_CANCEL_PAYMENT_INTERFACES",
        Str
    ),
    opt!(
        ["worker", "max_message_bytes"],
        "PAYRULES_MAX_MESSAGE_BYTES",
        Int
    ),
];

/// Reports (and drops, so the rest still deserializes) every key that is not an option.
pub(crate) fn check_keys(
    table: &mut toml::Table,
    prefix: &mut Vec<String>,
    problems: &mut Vec<Problem>,
) {
    let mut unknown = Vec::new();
    for (key, value) in table.iter_mut() {
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
            _ => {
                problems.push(Problem {
                    place: prefix.join("."),
                    message: "unknown option".into(),
                });
                unknown.push(key.clone());
            }
        }
        prefix.pop();
    }
    for key in unknown {
        table.remove(&key);
    }
}

/// Removes the value at `path`, if there.
pub(crate) fn remove(table: &mut toml::Table, path: &[&str]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut t = table;
    for p in parents {
        match t.get_mut(*p).and_then(toml::Value::as_table_mut) {
            Some(next) => t = next,
            None => return,
        }
    }
    t.remove(*last);
}

pub(crate) fn get<'a>(table: &'a toml::Table, path: &[&str]) -> Option<&'a toml::Value> {
    let (last, parents) = path.split_last()?;
    let mut t = table;
    for p in parents {
        t = t.get(*p)?.as_table()?;
    }
    t.get(*last)
}

pub(crate) fn insert(table: &mut toml::Table, path: &[&str], value: toml::Value) {
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

pub(crate) fn env_value(spec: &OptionSpec, raw: &str) -> Result<toml::Value, String> {
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

/// Whether `v` has the option's type; if not, the problem is added.
pub(crate) fn check_type(spec: &OptionSpec, v: &toml::Value, problems: &mut Vec<Problem>) -> bool {
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
    ok
}

/// Where an option's value came from (`payrules check-config` shows it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Not set: the default.
    Default,
    /// The TOML file.
    File,
    /// The environment variable.
    Env(&'static str),
    /// The file named by `{NAME}_FILE`.
    EnvFile(&'static str),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Default => f.write_str("default"),
            Origin::File => f.write_str("file"),
            Origin::Env(name) => write!(f, "env {name}"),
            Origin::EnvFile(name) => write!(f, "env {name}_FILE"),
        }
    }
}

/// The raw environment value of `spec`: from `NAME`, or from the file `NAME_FILE` names
/// (trailing newline trimmed). Both set is an error.
///
/// # Errors
/// Both set; the file cannot be read. The value is never in the message.
pub(crate) fn env_raw(
    spec: &OptionSpec,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<Option<(String, Origin)>, Problem> {
    let direct = env(spec.env);
    let file_var = format!("{}_FILE", spec.env);
    let file = if spec.from_file { env(&file_var) } else { None };
    match (direct, file) {
        (Some(_), Some(_)) => Err(Problem {
            place: file_var,
            message: format!("set {} or {}_FILE, not both", spec.env, spec.env),
        }),
        (Some(v), None) => Ok(Some((v, Origin::Env(spec.env)))),
        (None, Some(path)) => match std::fs::read_to_string(path.trim()) {
            Ok(text) => Ok(Some((
                text.trim_end_matches(['\n', '\r']).to_string(),
                Origin::EnvFile(spec.env),
            ))),
            Err(e) => Err(Problem {
                place: file_var,
                message: format!("cannot read {path:?}: {e}"),
            }),
        },
        (None, None) => Ok(None),
    }
}
