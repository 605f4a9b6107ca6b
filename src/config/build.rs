//! Building the runtime settings from the file's shape, one section at a time, every problem
//! collected on the way (in the order the sections are built).

#[allow(clippy::wildcard_imports)]
use super::{
    CHECKOUT_REGIONS, CommercetoolsSettings, ConfigErrors, Duration, FileConfig, MIN_CLAIM_LEASE,
    MIN_GRACE_PERIOD, OrderUpdate, PathBuf, Problem, PubsubSettings, Secret, Settings,
    SourceSettings, SqsSettings, UrlKind, WebhookSettings, WorkerSettings, derive_checkout_url,
    http_url, is_loopback_url, is_subscription_name, mask_url, parse_duration, place,
};

/// The problems found so far, in the order found.
#[derive(Debug, Default)]
pub(crate) struct Problems(Vec<Problem>);

impl Problems {
    /// One more: `message`, at the option whose path is `at` (named as file key and variable).
    pub(crate) fn add(&mut self, at: &[&str], message: impl Into<String>) {
        self.0.push(Problem {
            place: place(at),
            message: message.into(),
        });
    }

    /// Whether none was found.
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<Problems> for ConfigErrors {
    fn from(p: Problems) -> Self {
        ConfigErrors(p.0)
    }
}

/// The orphan cancel rule's grace period, in the file.
const GRACE_PATH: [&str; 3] = ["rules", "cancel_orphaned_authorization", "grace_period"];

impl FileConfig {
    /// Validates and builds the runtime settings.
    ///
    /// # Errors
    /// Every problem found, at once.
    pub fn build(&self) -> Result<Settings, ConfigErrors> {
        let mut problems = Problems::default();
        let source = self.source_settings(&mut problems);
        let grace_period = self.duration(
            &self.rules.cancel_orphaned_authorization.grace_period,
            &GRACE_PATH,
            &mut problems,
        );
        let capture_on = self.capture_on(&mut problems);
        let returns = self.return_rule(&mut problems);
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
        self.check_floors(claim_lease, grace_period, &mut problems);
        self.check_state_url(&mut problems);
        let webhook = self.webhook_settings(&mut problems);
        let commercetools = self.commercetools_settings(&mut problems);
        let order_update = self.order_update(&mut problems);
        if order_update.is_some() && commercetools.is_none() {
            problems.add(&["release", "order_update"], "needs the commercetools client (CTP_PROJECT_KEY, CTP_CLIENT_ID, CTP_CLIENT_SECRET, CTP_AUTH_URL, CTP_API_URL)");
        }
        let intent = self.payment_intent_action(&mut problems);
        if self.worker.concurrency == 0 {
            problems.add(&["worker", "concurrency"], "must be at least 1");
        }
        let progress_interval = self.duration(
            &self.worker.progress_interval,
            &["worker", "progress_interval"],
            &mut problems,
        );
        let http_addr = self.http_addr(&mut problems);
        // What the executors need, checked here so `check-config` finds it before `run` does.
        if !self.dry_run {
            self.check_executors(commercetools.is_some(), &mut problems);
        }
        if self.worker.max_deliveries == 0 {
            problems.add(&["worker", "max_deliveries"], "must be at least 1");
        }

        match (problems.is_empty(), source) {
            (true, Some(source)) => Ok(Settings {
                source,
                dry_run: self.dry_run,
                state_url: self.state.url.clone(),
                claim_lease,
                rules: self.rules_with(grace_period, capture_on, returns),
                webhook,
                order_update,
                payment_intent_action: intent,
                checkout_interfaces: self.checkout_interfaces(),
                commercetools,
                worker: WorkerSettings {
                    concurrency: self.worker.concurrency as usize,
                    max_deliveries: self.worker.max_deliveries,
                    shutdown_timeout,
                    retry_delay,
                    progress_interval,
                    max_message_bytes: self.worker.max_message_bytes as usize,
                },
                http_addr,
            }),
            _ => Err(problems.into()),
        }
    }

    /// `source` and its section: a file, a Pub/Sub subscription or an SQS queue.
    fn source_settings(&self, problems: &mut Problems) -> Option<SourceSettings> {
        match self.source.as_str() {
            "file" => match &self.file.path {
                Some(p) if !p.trim().is_empty() => Some(SourceSettings::File {
                    path: PathBuf::from(p),
                }),
                _ => {
                    problems.add(&["file", "path"], "required when the source is file");
                    None
                }
            },
            "pubsub" => self.pubsub_settings(problems).map(SourceSettings::Pubsub),
            "sqs" => self.sqs_settings(problems).map(SourceSettings::Sqs),
            other => {
                problems.add(
                    &["source"],
                    format!("{other:?} is not one of file, pubsub, sqs"),
                );
                None
            }
        }
    }

    /// `[pubsub]`: the subscription and its flow control.
    fn pubsub_settings(&self, problems: &mut Problems) -> Option<PubsubSettings> {
        match self.broker_input(
            self.pubsub.subscription.as_deref(),
            self.pubsub.dry_run_subscription.as_deref(),
            &["pubsub", "subscription"],
            &["pubsub", "dry_run_subscription"],
            problems,
        ) {
            None => None,
            Some((place_of, s)) if !is_subscription_name(s) => {
                problems.add(
                    place_of,
                    format!("{s:?} is not of the form projects/P/subscriptions/S"),
                );
                None
            }
            Some((_, s)) => {
                Some(PubsubSettings {
                    subscription: s.to_string(),
                    streams: self.pubsub.streams.max(1) as usize,
                    max_outstanding_messages: i64::from(self.pubsub.max_outstanding_messages),
                    max_outstanding_bytes: i64::from(self.pubsub.max_outstanding_bytes),
                    // A dry run parks nothing into the real workers' dead-letter topic.
                    dead_letter_topic: self
                        .pubsub
                        .dead_letter_topic
                        .clone()
                        .filter(|t| !t.trim().is_empty() && !self.dry_run),
                })
            }
        }
    }

    /// `[sqs]`: the queue, its pollers and visibility timeout.
    fn sqs_settings(&self, problems: &mut Problems) -> Option<SqsSettings> {
        self.broker_input(
            self.sqs.queue_url.as_deref(),
            self.sqs.dry_run_queue_url.as_deref(),
            &["sqs", "queue_url"],
            &["sqs", "dry_run_queue_url"],
            problems,
        )
        .map(|(place_of, u)| SqsSettings {
            queue_url: http_url(u, place_of, problems),
            pollers: self.sqs.pollers.max(1) as usize,
            visibility_timeout: self.duration(
                &self.sqs.visibility_timeout,
                &["sqs", "visibility_timeout"],
                problems,
            ),
            dead_letter_queue_url: self
                .sqs
                .dead_letter_queue_url
                .as_deref()
                .filter(|u| !u.trim().is_empty() && !self.dry_run)
                .map(|u| http_url(u, &["sqs", "dead_letter_queue_url"], problems)),
        })
    }

    /// The floors under the claim lease and (an orphan rule on) the grace period. A value
    /// that is no duration was reported already.
    fn check_floors(&self, claim_lease: Duration, grace_period: Duration, problems: &mut Problems) {
        if parse_duration(&self.state.claim_lease).is_ok() && claim_lease < MIN_CLAIM_LEASE {
            problems.add(&["state", "claim_lease"], format!(
                    "{:?} is under {}: a claim renewed every third of it would run out under a slow but live worker, and a second worker would run the same effect",
                    self.state.claim_lease,
                    humantime::format_duration(MIN_CLAIM_LEASE)
                ));
        }
        let cancel = &self.rules.cancel_orphaned_authorization;
        let orphan_rules = cancel.enabled || self.rules.refund_orphaned_charge.enabled;
        if orphan_rules
            && !cancel.allow_short_grace_period
            && parse_duration(&cancel.grace_period).is_ok()
            && grace_period < MIN_GRACE_PERIOD
        {
            problems.add(&GRACE_PATH, format!(
                    "{:?} is under {} with an orphan rule on: an order slower than that to be created would have its payment cancelled or refunded (tests: set PAYRULES_ALLOW_SHORT_GRACE_PERIOD=true)",
                    cancel.grace_period,
                    humantime::format_duration(MIN_GRACE_PERIOD)
                ));
        }
    }

    /// `state.url`: a store payrules has.
    fn check_state_url(&self, problems: &mut Problems) {
        if !(self.state.url.starts_with("sqlite:")
            || self.state.url.starts_with("postgres://")
            || self.state.url.starts_with("postgresql://")
            || self.state.url == "memory:")
        {
            problems.add(
                &["state", "url"],
                format!(
                    "{:?} is not a sqlite://PATH, postgres://… or memory: URL",
                    mask_url(&self.state.url, UrlKind::Plain)
                ),
            );
        }
    }

    /// The release webhook: its URL and signing secrets.
    fn webhook_settings(&self, problems: &mut Problems) -> Option<WebhookSettings> {
        match (&self.release.webhook_url, &self.release.webhook_secret) {
            (Some(url), Some(secret)) if !secret.expose().trim().is_empty() => {
                let url = http_url(url, &["release", "webhook_url"], problems);
                if url.starts_with("http://")
                    && !is_loopback_url(&url)
                    && !self.release.allow_insecure_webhook
                {
                    problems.add(&["release", "webhook_url"], "must be https:// (releases and their signatures would travel in clear text); set release.allow_insecure_webhook = true to allow http:// to a host that is not loopback");
                }
                // Several secrets (whitespace-separated) rotate: each signs every delivery.
                let secrets: Vec<Secret> = secret
                    .expose()
                    .split_whitespace()
                    .map(Secret::new)
                    .collect();
                for (i, s) in secrets.iter().enumerate() {
                    if let Some(b64) = s.expose().strip_prefix("whsec_")
                        && base64::Engine::decode(&base64::engine::general_purpose::STANDARD, b64)
                            .is_err()
                    {
                        problems.add(
                            &["release", "webhook_secret"],
                            format!(
                                "secret {} starts with whsec_ but the rest is not base64",
                                i + 1
                            ),
                        );
                    }
                }
                Some(WebhookSettings { url, secrets })
            }
            (Some(_), _) => {
                problems.add(
                    &["release", "webhook_secret"],
                    "required when a webhook URL is set: receivers verify the signature",
                );
                None
            }
            (None, Some(_)) => {
                problems.add(
                    &["release", "webhook_url"],
                    "a webhook secret is set but no webhook URL",
                );
                None
            }
            (None, None) => None,
        }
    }

    /// `cancel.payment_intent_action`.
    fn payment_intent_action(&self, problems: &mut Problems) -> String {
        let intent = self.cancel.payment_intent_action.trim().to_string();
        if intent != "cancelPayment" && intent != "reversePayment" {
            problems.add(
                &["cancel", "payment_intent_action"],
                format!("{intent:?} is not cancelPayment or reversePayment"),
            );
        }
        intent
    }

    /// `http.addr`: where the HTTP port listens, if on.
    fn http_addr(&self, problems: &mut Problems) -> Option<std::net::SocketAddr> {
        self.http.addr.as_deref().map(str::trim).filter(|a| !a.is_empty()).and_then(|a| {
            match a.parse::<std::net::SocketAddr>() {
                Ok(addr) => Some(addr),
                Err(_) => {
                    problems.add(&["http", "addr"], format!("{a:?} is not HOST:PORT with an IP address, e.g. 0.0.0.0:9464 or 127.0.0.1:9464"));
                    None
                }
            }
        })
    }

    /// What the executors need, outside a dry run.
    fn check_executors(&self, has_commercetools: bool, problems: &mut Problems) {
        // Without the client the rules read a view built from the stream itself, which
        // holds only what this process has seen: after a restart, the messages that came
        // before were acked and are gone, so a release or cancel they lead up to would
        // never be decided. Fine for a finite input read in one go (files), not for a
        // broker worker.
        if !has_commercetools && (self.source == "pubsub" || self.source == "sqs") {
            problems.add(&["source"], format!(
                    "a {} worker needs the commercetools client (CTP_*): without it the rules only know the messages this process has seen, and forget them at every restart (set PAYRULES_DRY_RUN=true to try it out)",
                    self.source
                ));
        }
        let r = &self.rules;
        if r.release_for_fulfillment.enabled
            && self.release.webhook_url.is_none()
            && self.release.order_update.is_none()
        {
            problems.add(&["rules", "release_for_fulfillment", "enabled"], "releases have nowhere to go: set PAYRULES_RELEASE_WEBHOOK_URL and/or release.order_update, disable the rule, or set PAYRULES_DRY_RUN=true");
        }
        if !has_commercetools {
            for (on, path) in [
                (
                    r.cancel_orphaned_authorization.enabled,
                    ["rules", "cancel_orphaned_authorization", "enabled"],
                ),
                (
                    r.cancel_on_order_cancelled.enabled,
                    ["rules", "cancel_on_order_cancelled", "enabled"],
                ),
                (
                    r.capture_on_shipment.enabled,
                    ["rules", "capture_on_shipment", "enabled"],
                ),
                (
                    r.refund_orphaned_charge.enabled,
                    ["rules", "refund_orphaned_charge", "enabled"],
                ),
                (
                    r.refund_on_order_cancelled.enabled,
                    ["rules", "refund_on_order_cancelled", "enabled"],
                ),
                (
                    r.refund_on_return.enabled,
                    ["rules", "refund_on_return", "enabled"],
                ),
            ] {
                if on {
                    problems.add(&path, "cancels, captures and refunds need the commercetools client: set the CTP_* variables, disable the rule, or set PAYRULES_DRY_RUN=true");
                }
            }
        }
    }

    /// `cancel.payment_interfaces`: the `paymentInterface`s Checkout manages; `None`: any.
    fn checkout_interfaces(&self) -> Option<Vec<String>> {
        self.cancel
            .payment_interfaces
            .as_deref()
            .map(|list| {
                list.split([',', ' '])
                    .map(str::trim)
                    .filter(|i| !i.is_empty())
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            })
            .filter(|l| !l.is_empty())
    }

    fn order_update(&self, problems: &mut Problems) -> Option<OrderUpdate> {
        let r = &self.release;
        let kind = r.order_update.as_deref()?.trim();
        let mut need = |v: &Option<String>, name: &'static str| -> Option<String> {
            match v.as_deref().map(str::trim) {
                Some(s) if !s.is_empty() => Some(s.to_string()),
                _ => {
                    problems.add(
                        &["release", name],
                        format!("required when release.order_update is {kind}"),
                    );
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
                problems.add(&["release", "order_update"], format!(
                        "{other:?} is not one of transitionState, changeOrderState, changeShipmentState, setCustomField"
                    ));
                None
            }
        }
    }

    fn commercetools_settings(&self, problems: &mut Problems) -> Option<CommercetoolsSettings> {
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
                    problems.add(
                        &["commercetools", name],
                        "required when any commercetools option is set",
                    );
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
                problems.add(
                    &["commercetools", "client_secret"],
                    "required when any commercetools option is set",
                );
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
                        problems.add(&["commercetools", "checkout_url"], format!(
                                "cannot be derived from {api_url:?}: Checkout is served in {} only; set CTP_CHECKOUT_URL",
                                CHECKOUT_REGIONS.join(", ")
                            ));
                    }
                    String::new()
                }
            },
        };
        for (url, name) in [
            (&auth_url, "auth_url"),
            (&api_url, "api_url"),
            (&checkout_url, "checkout_url"),
        ] {
            if url.starts_with("http://") && !is_loopback_url(url) {
                problems.add(&["commercetools", name], format!(
                        "{:?} must be https:// (the client secret, tokens and payment operations would travel in clear text); http:// is accepted only to a loopback host (127.0.0.0/8, ::1, localhost)",
                        mask_url(url, UrlKind::Plain)
                    ));
            }
        }
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
}
