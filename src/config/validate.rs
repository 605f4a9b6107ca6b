//! Validation: every check that `run` and `check-config` make, returning every problem.

#[allow(clippy::wildcard_imports)]
use super::*;

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

/// The shortest grace period accepted with the orphan cancel rule on (unless
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

pub(crate) fn http_url(value: &str, at: &[&str], problems: &mut Vec<Problem>) -> String {
    let trimmed = value.trim().trim_end_matches('/').to_string();
    if !(trimmed.starts_with("http://") || trimmed.starts_with("https://")) || trimmed.len() < 10 {
        let kind = OPTIONS
            .iter()
            .find(|o| o.path == at)
            .map_or(UrlKind::Plain, OptionSpec::url_kind);
        problems.push(Problem {
            place: place(at),
            message: format!("{:?} is not an http(s) URL", mask_url(value, kind)),
        });
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
fn is_loopback_url(url: &str) -> bool {
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
    fn broker_input<'a>(
        &self,
        real: Option<&'a str>,
        own: Option<&'a str>,
        real_place: &'static [&'static str],
        own_place: &'static [&'static str],
        problems: &mut Vec<Problem>,
    ) -> Option<(&'static [&'static str], &'a str)> {
        let own = own.filter(|s| !s.trim().is_empty());
        if !self.dry_run {
            if real.is_none() {
                problems.push(Problem {
                    place: place(real_place),
                    message: format!("required when the source is {}", self.source),
                });
            }
            return real.map(|r| (real_place, r));
        }
        match own {
            Some(o) if Some(o) == real => {
                problems.push(Problem {
                    place: place(own_place),
                    message: format!(
                        "is the real workers' own ({}): a dry run needs one of its own, or it takes their messages",
                        place(real_place)
                    ),
                });
                None
            }
            Some(o) => Some((own_place, o)),
            None => {
                problems.push(Problem {
                    place: place(own_place),
                    message: format!(
                        "required for a dry run from {}: a dry run acks what it reads, so it reads a {} of its own (on the same messages), never the real workers'",
                        self.source,
                        if self.source == "sqs" { "queue" } else { "subscription" }
                    ),
                });
                None
            }
        }
    }

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
            "pubsub" => match self.broker_input(
                self.pubsub.subscription.as_deref(),
                self.pubsub.dry_run_subscription.as_deref(),
                &["pubsub", "subscription"],
                &["pubsub", "dry_run_subscription"],
                &mut problems,
            ) {
                None => None,
                Some((place_of, s)) if !is_subscription_name(s) => {
                    problems.push(Problem {
                        place: place(place_of),
                        message: format!("{s:?} is not of the form projects/P/subscriptions/S"),
                    });
                    None
                }
                Some((_, s)) => {
                    Some(SourceSettings::Pubsub(PubsubSettings {
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
                    }))
                }
            },
            "sqs" => self
                .broker_input(
                    self.sqs.queue_url.as_deref(),
                    self.sqs.dry_run_queue_url.as_deref(),
                    &["sqs", "queue_url"],
                    &["sqs", "dry_run_queue_url"],
                    &mut problems,
                )
                .map(|(place_of, u)| {
                    SourceSettings::Sqs(SqsSettings {
                        queue_url: http_url(u, place_of, &mut problems),
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
                            .filter(|u| !u.trim().is_empty() && !self.dry_run)
                            .map(|u| http_url(u, &["sqs", "dead_letter_queue_url"], &mut problems)),
                    })
                }),
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

        // A value that is no duration was reported above.
        if parse_duration(&self.state.claim_lease).is_ok() && claim_lease < MIN_CLAIM_LEASE {
            problems.push(Problem {
                place: place(&["state", "claim_lease"]),
                message: format!(
                    "{:?} is under {}: a claim renewed every third of it would run out under a slow but live worker, and a second worker would run the same effect",
                    self.state.claim_lease,
                    humantime::format_duration(MIN_CLAIM_LEASE)
                ),
            });
        }
        let cancel = &self.rules.cancel_orphaned_authorization;
        if cancel.enabled
            && !cancel.allow_short_grace_period
            && parse_duration(&cancel.grace_period).is_ok()
            && grace_period < MIN_GRACE_PERIOD
        {
            problems.push(Problem {
                place: place(&grace_path),
                message: format!(
                    "{:?} is under {} with the orphan cancel rule on: an order slower than that to be created would have its payment cancelled (tests: set PAYRULES_ALLOW_SHORT_GRACE_PERIOD=true)",
                    cancel.grace_period,
                    humantime::format_duration(MIN_GRACE_PERIOD)
                ),
            });
        }

        if !(self.state.url.starts_with("sqlite:")
            || self.state.url.starts_with("postgres://")
            || self.state.url.starts_with("postgresql://")
            || self.state.url == "memory:")
        {
            problems.push(Problem {
                place: place(&["state", "url"]),
                message: format!(
                    "{:?} is not a sqlite://PATH, postgres://… or memory: URL",
                    mask_url(&self.state.url, UrlKind::Plain)
                ),
            });
        }

        let webhook = match (&self.release.webhook_url, &self.release.webhook_secret) {
            (Some(url), Some(secret)) if !secret.expose().trim().is_empty() => {
                let url = http_url(url, &["release", "webhook_url"], &mut problems);
                if url.starts_with("http://")
                    && !is_loopback_url(&url)
                    && !self.release.allow_insecure_webhook
                {
                    problems.push(Problem {
                        place: place(&["release", "webhook_url"]),
                        message: "must be https:// (releases and their signatures would travel in clear text); set release.allow_insecure_webhook = true to allow http:// to a host that is not loopback".into(),
                    });
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
                        problems.push(Problem {
                            place: place(&["release", "webhook_secret"]),
                            message: format!(
                                "secret {} starts with whsec_ but the rest is not base64",
                                i + 1
                            ),
                        });
                    }
                }
                Some(WebhookSettings { url, secrets })
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
        let progress_interval = self.duration(
            &self.worker.progress_interval,
            &["worker", "progress_interval"],
            &mut problems,
        );
        let http_addr = self.http.addr.as_deref().map(str::trim).filter(|a| !a.is_empty()).and_then(|a| {
            match a.parse::<std::net::SocketAddr>() {
                Ok(addr) => Some(addr),
                Err(_) => {
                    problems.push(Problem {
                        place: place(&["http", "addr"]),
                        message: format!("{a:?} is not HOST:PORT with an IP address, e.g. 0.0.0.0:9464 or 127.0.0.1:9464"),
                    });
                    None
                }
            }
        });

        // What the executors need, checked here so `check-config` finds it before `run` does.
        if !self.dry_run {
            // Without the client the rules read a view built from the stream itself, which
            // holds only what this process has seen: after a restart, the messages that came
            // before were acked and are gone, so a release or cancel they lead up to would
            // never be decided. Fine for a finite input read in one go (files), not for a
            // broker worker.
            if commercetools.is_none() && (self.source == "pubsub" || self.source == "sqs") {
                problems.push(Problem {
                    place: place(&["source"]),
                    message: format!(
                        "a {} worker needs the commercetools client (CTP_*): without it the rules only know the messages this process has seen, and forget them at every restart (set PAYRULES_DRY_RUN=true to try it out)",
                        self.source
                    ),
                });
            }
            let r = &self.rules;
            if r.release_for_fulfillment.enabled
                && self.release.webhook_url.is_none()
                && self.release.order_update.is_none()
            {
                problems.push(Problem {
                    place: place(&["rules", "release_for_fulfillment", "enabled"]),
                    message: "releases have nowhere to go: set PAYRULES_RELEASE_WEBHOOK_URL and/or release.order_update, disable the rule, or set PAYRULES_DRY_RUN=true".into(),
                });
            }
            if commercetools.is_none() {
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
                ] {
                    if on {
                        problems.push(Problem {
                            place: place(&path),
                            message: "cancels and captures need the commercetools client: set the CTP_* variables, disable the rule, or set PAYRULES_DRY_RUN=true".into(),
                        });
                    }
                }
            }
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
                checkout_interfaces: self
                    .cancel
                    .payment_interfaces
                    .as_deref()
                    .map(|list| {
                        list.split([',', ' '])
                            .map(str::trim)
                            .filter(|i| !i.is_empty())
                            .map(str::to_string)
                            .collect::<Vec<_>>()
                    })
                    .filter(|l| !l.is_empty()),
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
                                "cannot be derived from {api_url:?}: Checkout is served in {} only; set CTP_CHECKOUT_URL",
                                CHECKOUT_REGIONS.join(", ")
                            ),
                        });
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
                problems.push(Problem {
                    place: place(&["commercetools", name]),
                    message: format!(
                        "{:?} must be https:// (the client secret, tokens and payment operations would travel in clear text); http:// is accepted only to a loopback host (127.0.0.0/8, ::1, localhost)",
                        mask_url(url, UrlKind::Plain)
                    ),
                });
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
