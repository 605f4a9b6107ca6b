//! The configuration's unit tests. Over 600 lines on purpose: every option family's checks in
//! one place, beside the option table's tests.

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
    let loaded = load_with(
        Some(&path),
        env(&[
            ("PAYRULES_GRACE_PERIOD", "45s"),
            ("PAYRULES_DRY_RUN", "true"),
        ]),
    )
    .unwrap();
    assert_eq!(
        loaded.settings.rules.cancel.grace_period,
        Duration::from_secs(45)
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
                "https://hooks.example.com/services/T000/B000/XXXXtopsecret?token=topsecret",
            ),
            ("PAYRULES_RELEASE_WEBHOOK_SECRET", "whsec_dG9wc2VjcmV0"),
            (
                "PAYRULES_STATE_URL",
                "postgres://payrules:topsecret@db:5432/payrules?password=topsecret&sslmode=require",
            ),
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
        "{}\n{}\n{:?}\n{:?}",
        loaded.file.to_masked_toml(),
        loaded.describe(),
        loaded.settings,
        loaded.file
    );
    assert!(!shown.contains("topsecret"), "{shown}");
    assert!(!shown.contains("dG9wc2VjcmV0"), "{shown}");
    // The webhook's path is hidden everywhere; the state URL keeps what is not secret.
    assert!(!shown.contains("T000"), "{shown}");
    assert!(
        shown.contains("postgres://payrules:****@db:5432/payrules?password=****&sslmode=require"),
        "{shown}"
    );
    assert!(shown.contains("https://hooks.example.com/****"), "{shown}");
    assert_eq!(
        loaded.settings.commercetools.unwrap().checkout_url,
        "https://checkout.europe-west1.gcp.commercetools.com"
    );
}

#[test]
fn secrets_come_from_files_trimmed_and_never_twice() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("ctp-secret");
    std::fs::write(&secret, "from-a-file\n").unwrap();
    let url = dir.path().join("state-url");
    std::fs::write(&url, "postgres://payrules:pg-pass@db:5432/payrules\r\n").unwrap();
    let base = [
        ("PAYRULES_FILE_PATH", "-"),
        ("PAYRULES_DRY_RUN", "true"),
        ("CTP_PROJECT_KEY", "shop"),
        ("CTP_CLIENT_ID", "id"),
        (
            "CTP_AUTH_URL",
            "https://auth.europe-west1.gcp.commercetools.com",
        ),
        (
            "CTP_API_URL",
            "https://api.europe-west1.gcp.commercetools.com",
        ),
    ];
    let secret_path = secret.display().to_string();
    let url_path = url.display().to_string();
    let mut pairs = base.to_vec();
    pairs.push(("CTP_CLIENT_SECRET_FILE", &secret_path));
    pairs.push(("PAYRULES_STATE_URL_FILE", &url_path));
    let loaded = load_with(None, env(&pairs)).unwrap();
    assert_eq!(
        loaded
            .settings
            .commercetools
            .as_ref()
            .unwrap()
            .client_secret
            .expose(),
        "from-a-file"
    );
    assert_eq!(
        loaded.settings.state_url,
        "postgres://payrules:pg-pass@db:5432/payrules"
    );
    let described = loaded.describe();
    assert!(
        described.contains("commercetools.client_secret = \"****\"  # env CTP_CLIENT_SECRET_FILE"),
        "{described}"
    );
    assert!(
        described.contains(
            "state.url = \"postgres://payrules:****@db:5432/payrules\"  # env PAYRULES_STATE_URL_FILE"
        ),
        "{described}"
    );
    assert!(
        described.contains("worker.concurrency = 32  # default"),
        "{described}"
    );
    assert!(!described.contains("pg-pass") && !described.contains("from-a-file"));

    // Both forms set, and a file that does not exist: both named, no value shown.
    let mut both = base.to_vec();
    both.push(("CTP_CLIENT_SECRET", "direct-secret"));
    both.push(("CTP_CLIENT_SECRET_FILE", &secret_path));
    both.push((
        "PAYRULES_RELEASE_WEBHOOK_SECRET_FILE",
        "/nonexistent/webhook-secret",
    ));
    let err = load_with(None, env(&both)).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains(
            "CTP_CLIENT_SECRET_FILE: set CTP_CLIENT_SECRET or CTP_CLIENT_SECRET_FILE, not both"
        ),
        "{text}"
    );
    assert!(
        text.contains(
            "PAYRULES_RELEASE_WEBHOOK_SECRET_FILE: cannot read \"/nonexistent/webhook-secret\""
        ),
        "{text}"
    );
    assert!(!text.contains("direct-secret") && !text.contains("from-a-file"));
}

#[test]
fn a_webhook_must_be_https_unless_loopback_or_allowed() {
    let with = |url: &str, extra: &[(&'static str, &'static str)]| {
        let url = url.to_string();
        let mut pairs: Vec<(&str, &str)> = vec![
            ("PAYRULES_FILE_PATH", "-"),
            ("PAYRULES_CANCEL_ENABLED", "false"),
            ("PAYRULES_REFUND_ORPHANED_ENABLED", "false"),
            ("PAYRULES_CANCEL_ON_ORDER_CANCELLED", "false"),
            ("PAYRULES_RELEASE_WEBHOOK_SECRET", "s3cret"),
        ];
        pairs.extend_from_slice(extra);
        let owned: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .chain([("PAYRULES_RELEASE_WEBHOOK_URL".to_string(), url)])
            .collect();
        load_with(None, move |k| {
            owned.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
        })
    };
    assert!(with("https://fulfil.example.com/hook", &[]).is_ok());
    assert!(with("http://127.0.0.1:8080/hook", &[]).is_ok());
    assert!(with("http://localhost:8080/hook", &[]).is_ok());
    assert!(with("http://[::1]:8080/hook", &[]).is_ok());
    let err = with("http://fulfil.example.com/hook", &[])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("release.webhook_url (PAYRULES_RELEASE_WEBHOOK_URL): must be https://"),
        "{err}"
    );
    assert!(
        with(
            "http://fulfil.internal/hook",
            &[("PAYRULES_RELEASE_ALLOW_INSECURE_WEBHOOK", "true")]
        )
        .is_ok()
    );
    let err = with("https://x.example.com/h", &[])
        .and_then(|_| {
            load_with(
                None,
                env(&[
                    ("PAYRULES_FILE_PATH", "-"),
                    ("PAYRULES_DRY_RUN", "true"),
                    ("PAYRULES_RELEASE_WEBHOOK_URL", "https://x.example.com/h"),
                    ("PAYRULES_RELEASE_WEBHOOK_SECRET", "whsec_not*base64"),
                ]),
            )
        })
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("secret 1 starts with whsec_ but the rest is not base64"),
        "{err}"
    );
    assert!(!err.contains("not*base64"), "{err}");
}

#[test]
fn type_errors_and_cross_option_problems_come_in_one_pass() {
    let err = load_with(
        None,
        env(&[
            ("PAYRULES_FILE_PATH", "-"),
            ("PAYRULES_CONCURRENCY", "many"),
            ("PAYRULES_HTTP_ADDR", "localhost:9464"),
            ("PAYRULES_PROGRESS_INTERVAL", "often"),
            ("CTP_PROJECT_KEY", "shop"),
            ("CTP_CLIENT_ID", "id"),
            ("CTP_CLIENT_SECRET", "x"),
            ("CTP_AUTH_URL", "https://auth.example.com"),
            (
                "CTP_API_URL",
                "https://api.eu-west-9.example.commercetools.com",
            ),
        ]),
    )
    .unwrap_err();
    let places: Vec<&str> = err.0.iter().map(|p| p.place.as_str()).collect();
    for expected in [
        "PAYRULES_CONCURRENCY",
        "http.addr (PAYRULES_HTTP_ADDR)",
        "worker.progress_interval (PAYRULES_PROGRESS_INTERVAL)",
        "commercetools.checkout_url (CTP_CHECKOUT_URL)",
        "rules.release_for_fulfillment.enabled (PAYRULES_RELEASE_ENABLED)",
    ] {
        assert!(
            places.contains(&expected),
            "{expected} missing from {places:?}"
        );
    }
    // The cancel rules have a client here, so they are not reported.
    assert!(
        !places
            .iter()
            .any(|p| p.contains("cancel_orphaned_authorization"))
    );
}

#[test]
fn checkout_is_derived_for_its_regions_only() {
    assert_eq!(
        derive_checkout_url("https://api.us-east-2.aws.commercetools.com/").as_deref(),
        Some("https://checkout.us-east-2.aws.commercetools.com")
    );
    assert_eq!(
        derive_checkout_url("https://api.eu-west-9.gcp.commercetools.com"),
        None
    );
    assert_eq!(derive_checkout_url("http://127.0.0.1:8989"), None);
}

#[test]
fn url_passwords_are_masked() {
    assert_eq!(
        mask_url("postgres://u:p@h:5432/db?sslmode=require", UrlKind::Plain),
        "postgres://u:****@h:5432/db?sslmode=require"
    );
    assert_eq!(
        mask_url("postgres://u@h/db", UrlKind::Plain),
        "postgres://u@h/db"
    );
    assert_eq!(
        mask_url("sqlite:///var/x.db", UrlKind::Plain),
        "sqlite:///var/x.db"
    );
    assert_eq!(mask_url("https://h/p@q", UrlKind::Plain), "https://h/p@q");
}

/// The problems `load_with` reports at `place` (an env var's name is in it), for `pairs` on
/// top of a file source.
fn problems_at(pairs: &[(&str, &str)], place: &str) -> Vec<String> {
    let mut all = vec![("PAYRULES_FILE_PATH", "-"), ("PAYRULES_DRY_RUN", "true")];
    all.extend_from_slice(pairs);
    match load_with(None, env(&all)) {
        Ok(_) => Vec::new(),
        Err(ConfigErrors(problems)) => problems
            .into_iter()
            .filter(|p| p.place.contains(place))
            .map(|p| p.to_string())
            .collect(),
    }
}

#[test]
fn a_claim_lease_under_3s_is_refused() {
    for short in ["2999ms", "300ms", "0s"] {
        let found = problems_at(&[("PAYRULES_CLAIM_LEASE", short)], "PAYRULES_CLAIM_LEASE");
        assert_eq!(found.len(), 1, "{short}: {found:?}");
        assert!(found[0].contains("under 3s"), "{found:?}");
    }
    assert!(problems_at(&[("PAYRULES_CLAIM_LEASE", "3s")], "PAYRULES_CLAIM_LEASE").is_empty());
    // The short-grace escape does not cover the lease.
    assert_eq!(
        problems_at(
            &[
                ("PAYRULES_CLAIM_LEASE", "1s"),
                ("PAYRULES_ALLOW_SHORT_GRACE_PERIOD", "true")
            ],
            "PAYRULES_CLAIM_LEASE"
        )
        .len(),
        1
    );
    // Not a duration: reported once, as such.
    let found = problems_at(&[("PAYRULES_CLAIM_LEASE", "soon")], "PAYRULES_CLAIM_LEASE");
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].contains("not a duration"), "{found:?}");
}

#[test]
fn a_grace_period_under_30s_is_refused_with_the_cancel_rule_on() {
    for short in ["29s", "2s", "0s"] {
        let found = problems_at(&[("PAYRULES_GRACE_PERIOD", short)], "PAYRULES_GRACE_PERIOD");
        assert_eq!(found.len(), 1, "{short}: {found:?}");
        assert!(
            found[0].contains("under 30s")
                && found[0].contains("PAYRULES_ALLOW_SHORT_GRACE_PERIOD"),
            "{found:?}"
        );
    }
    assert!(problems_at(&[("PAYRULES_GRACE_PERIOD", "30s")], "PAYRULES_GRACE_PERIOD").is_empty());
    // The rule off: the grace period is not used.
    assert!(
        problems_at(
            &[
                ("PAYRULES_GRACE_PERIOD", "2s"),
                ("PAYRULES_CANCEL_ENABLED", "false"),
                ("PAYRULES_REFUND_ORPHANED_ENABLED", "false")
            ],
            "PAYRULES_GRACE_PERIOD"
        )
        .is_empty()
    );
    // The tests' escape.
    let loaded = load_with(
        None,
        env(&[
            ("PAYRULES_FILE_PATH", "-"),
            ("PAYRULES_DRY_RUN", "true"),
            ("PAYRULES_GRACE_PERIOD", "2s"),
            ("PAYRULES_ALLOW_SHORT_GRACE_PERIOD", "true"),
        ]),
    )
    .unwrap();
    assert_eq!(
        loaded.settings.rules.cancel.grace_period,
        Duration::from_secs(2)
    );
    // replay's rules: any grace period (its clock is virtual).
    let config = merge_with(None, env(&[("PAYRULES_GRACE_PERIOD", "2s")])).unwrap();
    assert_eq!(
        config.rules().unwrap().cancel.grace_period,
        Duration::from_secs(2)
    );
}

#[test]
fn http_commercetools_urls_are_refused_unless_loopback() {
    let ctp = |auth: &'static str, api: &'static str, checkout: &'static str| {
        vec![
            ("CTP_PROJECT_KEY", "shop"),
            ("CTP_CLIENT_ID", "id"),
            ("CTP_CLIENT_SECRET", "s3cr3t"),
            ("CTP_AUTH_URL", auth),
            ("CTP_API_URL", api),
            ("CTP_CHECKOUT_URL", checkout),
        ]
    };
    let https = "https://api.europe-west1.gcp.commercetools.com";
    for (name, env_var) in [
        ("auth", "CTP_AUTH_URL"),
        ("api", "CTP_API_URL"),
        ("checkout", "CTP_CHECKOUT_URL"),
    ] {
        let plain = "http://ct.example.com";
        let pairs = match name {
            "auth" => ctp(plain, https, https),
            "api" => ctp(https, plain, https),
            _ => ctp(https, https, plain),
        };
        let found = problems_at(&pairs, env_var);
        assert_eq!(found.len(), 1, "{env_var}: {found:?}");
        assert!(found[0].contains("must be https://"), "{found:?}");
    }
    for local in [
        "http://127.0.0.1:8989",
        "http://127.1.2.3:8989",
        "http://localhost:8989",
        "http://[::1]:8989",
    ] {
        let Ok(loaded) = load_with(
            None,
            env(&[
                &[("PAYRULES_FILE_PATH", "-"), ("PAYRULES_DRY_RUN", "true")][..],
                &ctp(local, local, local),
            ]
            .concat()),
        ) else {
            panic!("{local} refused");
        };
        assert_eq!(loaded.settings.commercetools.unwrap().api_url, local);
    }
}

#[test]
fn every_option_has_exactly_one_reference_entry() {
    for o in OPTIONS {
        let n = OPTION_DOCS.iter().filter(|d| d.env == o.env).count();
        assert_eq!(n, 1, "{} has {n} entries in OPTION_DOCS", o.env);
    }
    for d in OPTION_DOCS {
        assert!(
            OPTIONS.iter().any(|o| o.env == d.env),
            "OPTION_DOCS names {}, which is not an option",
            d.env
        );
        assert!(!d.default.is_empty() && !d.meaning.is_empty(), "{}", d.env);
    }
}

/// `docs/configuration.md`'s options table is the one [`options_markdown_table`] renders
/// (`PAYRULES_UPDATE_DOCS=1` rewrites it).
#[test]
fn the_configuration_page_table_is_the_generated_one() {
    crate::doc_section::assert_section(
        "docs/configuration.md",
        "options-table",
        &options_markdown_table(),
    );
}

/// A default the reference writes as one value (`` `10m` ``) is what an empty configuration
/// gets, and `—` means the option is unset by default.
#[test]
fn the_documented_defaults_are_the_defaults() {
    let Ok(config) = merge_with(None, |_| None) else {
        panic!("an empty configuration merges");
    };
    let Ok(toml::Value::Table(defaults)) = toml::Value::try_from(&config) else {
        panic!("the configuration serializes to a table");
    };
    let mut checked = 0;
    for o in OPTIONS {
        let Some(d) = option_doc(o.env) else { continue };
        let actual = get(&defaults, o.path).map(|v| match v {
            toml::Value::String(s) => s.clone(),
            other => other.to_string(),
        });
        let one_value = d
            .default
            .strip_prefix('`')
            .and_then(|r| r.strip_suffix('`'))
            .filter(|v| !v.contains('`'));
        match (d.default, one_value) {
            ("—", _) => assert_eq!(actual, None, "{}: documented unset", o.env),
            (_, Some(v)) => assert_eq!(actual.as_deref(), Some(v), "{}", o.env),
            _ => continue,
        }
        checked += 1;
    }
    assert!(checked >= 40, "only {checked} defaults checked");
}

#[test]
fn a_dry_run_from_a_broker_reads_a_subscription_or_queue_of_its_own() {
    let real = "projects/p/subscriptions/payrules";
    let own = "projects/p/subscriptions/payrules-dry-run";
    let base = [
        ("PAYRULES_DRY_RUN", "true"),
        ("PAYRULES_SOURCE", "pubsub"),
        ("PAYRULES_PUBSUB_SUBSCRIPTION", real),
        (
            "PAYRULES_PUBSUB_DEAD_LETTER_TOPIC",
            "projects/p/topics/parked",
        ),
    ];
    // Without one of its own: refused, naming the option.
    let err = load_with(None, env(&base)).unwrap_err().to_string();
    assert!(err.contains("PAYRULES_DRY_RUN_SUBSCRIPTION"), "{err}");
    // The real workers' own named as the dry run's: refused.
    let mut same = base.to_vec();
    same.push(("PAYRULES_DRY_RUN_SUBSCRIPTION", real));
    let err = load_with(None, env(&same)).unwrap_err().to_string();
    assert!(err.contains("real workers'"), "{err}");
    // One of its own: read instead, and nothing is parked into the real dead-letter topic.
    let mut ok = base.to_vec();
    ok.push(("PAYRULES_DRY_RUN_SUBSCRIPTION", own));
    let s = load_with(None, env(&ok)).unwrap().settings;
    let SourceSettings::Pubsub(p) = s.source else {
        panic!("pubsub");
    };
    assert_eq!((p.subscription.as_str(), p.dead_letter_topic), (own, None));
    // SQS alike.
    let sqs = [
        ("PAYRULES_DRY_RUN", "true"),
        ("PAYRULES_SOURCE", "sqs"),
        (
            "PAYRULES_SQS_QUEUE_URL",
            "http://127.0.0.1:4566/000/payrules",
        ),
    ];
    let err = load_with(None, env(&sqs)).unwrap_err().to_string();
    assert!(err.contains("PAYRULES_DRY_RUN_QUEUE_URL"), "{err}");
    let mut ok = sqs.to_vec();
    ok.push((
        "PAYRULES_DRY_RUN_QUEUE_URL",
        "http://127.0.0.1:4566/000/payrules-dry",
    ));
    let s = load_with(None, env(&ok)).unwrap().settings;
    let SourceSettings::Sqs(q) = s.source else {
        panic!("sqs");
    };
    assert_eq!(q.queue_url, "http://127.0.0.1:4566/000/payrules-dry");
    // Not a dry run: the real subscription, as before (the dry run's is not asked for).
    let err = load_with(None, env(&base[1..])).unwrap_err().to_string();
    assert!(!err.contains("PAYRULES_DRY_RUN_SUBSCRIPTION"), "{err}");
    assert!(!err.contains("PAYRULES_PUBSUB_SUBSCRIPTION"), "{err}");
}

/// The rules a configuration without any rule key gets are the rules' own defaults: the
/// defaults are written twice (the config schema's strings such as `"10m"`, the rule types'
/// `Default`), and this keeps the two equal.
#[test]
fn the_config_defaults_are_the_rule_defaults() {
    // The least a configuration can say: where messages come from, and a dry run (so no
    // webhook or commercetools client is needed); no rule key at all.
    let loaded = load_with(
        None,
        env(&[
            ("PAYRULES_FILE_PATH", "a.jsonl"),
            ("PAYRULES_DRY_RUN", "true"),
        ]),
    )
    .unwrap();
    assert_eq!(loaded.settings.rules, crate::rules::Rules::default());
}

/// `also_on_charge` is still accepted and changes nothing; set, it is named as ignored (and
/// warned about at start), unset it is not.
#[test]
fn also_on_charge_is_accepted_and_reported_as_ignored() {
    let base = [
        ("PAYRULES_FILE_PATH", "a.jsonl"),
        ("PAYRULES_DRY_RUN", "true"),
    ];
    let quiet = load_with(None, env(&base)).unwrap();
    assert_eq!(quiet.ignored().count(), 0);
    let mut set = base.to_vec();
    set.push(("PAYRULES_RELEASE_ALSO_ON_CHARGE", "true"));
    let loaded = load_with(None, env(&set)).unwrap();
    let ignored: Vec<String> = loaded.ignored().map(|o| o.dotted()).collect();
    assert_eq!(ignored, ["rules.release_for_fulfillment.also_on_charge"]);
    assert_eq!(loaded.settings.rules, quiet.settings.rules);
}
