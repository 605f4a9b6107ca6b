//! Validation: the checks the configuration's sections share (durations, URLs, the dry run's own
//! input), each reporting its problem; `build.rs` runs them section by section.

#[allow(clippy::wildcard_imports)]
use super::{
    CancelRule, CaptureRule, ConfigErrors, Duration, FileConfig, OPTIONS, OptionSpec,
    OrderCancelledRule, Problems, RefundOnOrderCancelledRule, RefundOrphanedRule, ReleaseRule,
    Rules, ShipmentState, UrlKind, get, insert, mask_url,
};
use crate::model::ReturnPaymentState;
use crate::rules::{ReturnOn, ReturnRule};

/// Parses `10m`, `2s`, `1h 30m`, `500ms`.
///
/// # Errors
/// A message naming the value.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|e| format!("{s:?} is not a duration such as \"10m\" or \"2s\" ({e})"))
}

/// The shortest claim lease `run` and `reconcile` accept: a lease is renewed every third of
/// itself, and one that runs out under a slow but live worker lets a second one run the same
/// effect.
pub const MIN_CLAIM_LEASE: Duration = Duration::from_secs(3);

/// The shortest grace period accepted with an orphan rule (cancel or refund) on (unless
/// `allow_short_grace_period`): a shorter one cancels the payment of an order that is merely
/// slow to be created. `replay` accepts any: its clock is virtual.
pub const MIN_GRACE_PERIOD: Duration = Duration::from_secs(30);

pub(crate) fn place(spec_path: &[&str]) -> String {
    let spec = OPTIONS.iter().find(|o| o.path == spec_path);
    match spec {
        Some(s) => format!("{} ({})", s.dotted(), s.env),
        None => spec_path.join("."),
    }
}

pub(crate) fn http_url(value: &str, at: &[&str], problems: &mut Problems) -> String {
    let trimmed = value.trim().trim_end_matches('/').to_string();
    if !(trimmed.starts_with("http://") || trimmed.starts_with("https://")) || trimmed.len() < 10 {
        let kind = OPTIONS
            .iter()
            .find(|o| o.path == at)
            .map_or(UrlKind::Plain, OptionSpec::url_kind);
        problems.add(
            at,
            format!("{:?} is not an http(s) URL", mask_url(value, kind)),
        );
    }
    trimmed
}

/// The regions Checkout serves (its API reference's hosts).
pub const CHECKOUT_REGIONS: &[&str] = &[
    "europe-west1.gcp",
    "eu-central-1.aws",
    "us-central1.gcp",
    "us-east-2.aws",
    "australia-southeast1.gcp",
];

/// `https://api.europe-west1.gcp.commercetools.com` → `https://checkout.europe-west1.gcp.commercetools.com`,
/// for the regions Checkout serves only; anything else has no Checkout host to guess.
pub fn derive_checkout_url(api_url: &str) -> Option<String> {
    let region = api_url
        .trim_end_matches('/')
        .strip_prefix("https://api.")?
        .strip_suffix(".commercetools.com")?;
    CHECKOUT_REGIONS
        .contains(&region)
        .then(|| format!("https://checkout.{region}.commercetools.com"))
}

/// Whether `url`'s host is this machine (an `http://` webhook there is fine).
pub(crate) fn is_loopback_url(url: &str) -> bool {
    let Some((_, rest)) = url.split_once("://") else {
        return false;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host_port = authority.rsplit('@').next().unwrap_or("");
    let host = if let Some(v6) = host_port.strip_prefix('[') {
        v6.split(']').next().unwrap_or("")
    } else {
        host_port.split(':').next().unwrap_or("")
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

impl FileConfig {
    /// The subscription or queue to read, with where it was set: the real one, or in a dry
    /// run the dry run's own. A dry run never reads the real workers' subscription or queue:
    /// what it acked would be gone for them.
    pub(crate) fn broker_input<'a>(
        &self,
        real: Option<&'a str>,
        own: Option<&'a str>,
        real_place: &'static [&'static str],
        own_place: &'static [&'static str],
        problems: &mut Problems,
    ) -> Option<(&'static [&'static str], &'a str)> {
        let own = own.filter(|s| !s.trim().is_empty());
        if !self.dry_run {
            if real.is_none() {
                problems.add(
                    real_place,
                    format!("required when the source is {}", self.source),
                );
            }
            return real.map(|r| (real_place, r));
        }
        match own {
            Some(o) if Some(o) == real => {
                problems.add(own_place, format!(
                        "is the real workers' own ({}): a dry run needs one of its own, or it takes their messages",
                        place(real_place)
                    ));
                None
            }
            Some(o) => Some((own_place, o)),
            None => {
                problems.add(own_place, format!(
                        "required for a dry run from {}: a dry run acks what it reads, so it reads a {} of its own (on the same messages), never the real workers'",
                        self.source,
                        if self.source == "sqs" { "queue" } else { "subscription" }
                    ));
                None
            }
        }
    }

    /// Only the rule settings (what `replay` needs).
    ///
    /// # Errors
    /// A grace period that is not a duration.
    pub fn rules(&self) -> Result<Rules, ConfigErrors> {
        let mut problems = Problems::default();
        let grace_period = self.duration(
            &self.rules.cancel_orphaned_authorization.grace_period,
            &["rules", "cancel_orphaned_authorization", "grace_period"],
            &mut problems,
        );
        let capture_on = self.capture_on(&mut problems);
        let returns = self.return_rule(&mut problems);
        if !problems.is_empty() {
            return Err(problems.into());
        }
        Ok(self.rules_with(grace_period, capture_on, returns))
    }

    /// `rules.capture_on_shipment.on`: Shipped or Delivered.
    pub(crate) fn capture_on(&self, problems: &mut Problems) -> ShipmentState {
        let on = &self.rules.capture_on_shipment.on;
        match ShipmentState::parse(on) {
            s @ (ShipmentState::Shipped | ShipmentState::Delivered) => s,
            _ => {
                problems.add(
                    &["rules", "capture_on_shipment", "on"],
                    format!("{on:?} is not Shipped or Delivered"),
                );
                ShipmentState::Shipped
            }
        }
    }

    /// `[rules.refund_on_return]`: `on` is Returned or BackInStock, `skip_payment_states`
    /// names return payment states.
    pub(crate) fn return_rule(&self, problems: &mut Problems) -> ReturnRule {
        let r = &self.rules.refund_on_return;
        let on = match r.on.trim() {
            "Returned" => ReturnOn::Returned,
            "BackInStock" => ReturnOn::BackInStock,
            other => {
                problems.add(
                    &["rules", "refund_on_return", "on"],
                    format!("{other:?} is not Returned or BackInStock"),
                );
                ReturnOn::Returned
            }
        };
        let mut skip = Vec::new();
        for s in &r.skip_payment_states {
            match ReturnPaymentState::parse(s) {
                ReturnPaymentState::Unknown => problems.add(
                    &["rules", "refund_on_return", "skip_payment_states"],
                    format!(
                        "{s:?} is not a return payment state (NonRefundable, Initial, Refunded, NotRefunded)"
                    ),
                ),
                state => skip.push(state),
            }
        }
        ReturnRule {
            enabled: r.enabled,
            on,
            skip_payment_states: skip,
        }
    }

    pub(crate) fn rules_with(
        &self,
        grace_period: Duration,
        capture_on: ShipmentState,
        returns: ReturnRule,
    ) -> Rules {
        let r = &self.rules.release_for_fulfillment;
        Rules {
            release: ReleaseRule {
                enabled: r.enabled,
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
            refund_orphaned: RefundOrphanedRule {
                enabled: self.rules.refund_orphaned_charge.enabled,
            },
            refund_on_order_cancelled: RefundOnOrderCancelledRule {
                enabled: self.rules.refund_on_order_cancelled.enabled,
            },
            refund_on_return: returns,
        }
    }

    pub(crate) fn duration(&self, value: &str, at: &[&str], problems: &mut Problems) -> Duration {
        parse_duration(value).unwrap_or_else(|message| {
            problems.add(at, message);
            Duration::ZERO
        })
    }

    /// The effective configuration as TOML, secrets and URLs masked ([`mask_url`]).
    pub fn to_masked_toml(&self) -> String {
        let mut table = match toml::Value::try_from(self) {
            Ok(toml::Value::Table(t)) => t,
            Ok(_) => toml::Table::new(),
            Err(e) => return format!("# cannot print the configuration: {e}\n"),
        };
        for spec in OPTIONS {
            if let Some(toml::Value::String(s)) = get(&table, spec.path) {
                let shown = toml::Value::String(mask_url(s, spec.url_kind()));
                insert(&mut table, spec.path, shown);
            }
        }
        toml::to_string(&table)
            .unwrap_or_else(|e| format!("# cannot print the configuration: {e}\n"))
    }
}

pub(crate) fn is_subscription_name(s: &str) -> bool {
    let parts: Vec<&str> = s.split('/').collect();
    parts.len() == 4
        && parts[0] == "projects"
        && parts[2] == "subscriptions"
        && !parts[1].is_empty()
        && !parts[3].is_empty()
}
