//! `payrules subscription`: its arguments (and the destination they name), `create`, `show` and
//! the settings they read; the Subscription itself is [`crate::subscription`]'s.

use crate::config::{self, CommercetoolsSettings};
use crate::message::MessageType;
use crate::redact::Secret;
use crate::subscription::api::{Api, apply};
use crate::subscription::destination::{
    AuthMode, Destination, Draft, FormatArg, is_region, parse_topic, region_from_queue_url,
    split_queue_url,
};
use crate::subscription::plan::{coverage, describe_format, indent, render};
use crate::subscription::{
    DEFAULT_KEY, SQS_SECRET_ENV, SUBSCRIBED_EVENTS, SUBSCRIBED_MESSAGES, check_key,
};
use clap::builder::PossibleValue;
use clap::{Args, Subcommand, ValueEnum};

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

/// `payrules subscription …`.
#[derive(Debug, Subcommand)]
pub enum SubscriptionCommand {
    /// Creates the Subscription, or updates the one with this key to match; changes nothing
    /// when it already matches. Prints what it did and the grant the destination needs.
    Create(CreateArgs),
    /// Prints the live Subscription and what is missing from it (exit 1 when something is
    /// missing or it does not exist).
    Show(ShowArgs),
}

/// Where commercetools delivers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DestinationKind {
    /// Google Cloud Pub/Sub (`--topic projects/P/topics/T`).
    Pubsub,
    /// AWS SQS (`--queue-url URL`).
    Sqs,
}

/// `payrules subscription create`.
#[derive(Debug, Clone, Args)]
pub struct CreateArgs {
    /// Where commercetools delivers.
    #[arg(long, value_enum)]
    pub destination: DestinationKind,
    /// The Pub/Sub topic, `projects/P/topics/T`.
    #[arg(long)]
    pub topic: Option<String>,
    /// The SQS queue URL, `https://sqs.REGION.amazonaws.com/ACCOUNT/QUEUE` (a standard queue).
    #[arg(long)]
    pub queue_url: Option<String>,
    /// The queue's AWS region (derived from an `sqs.REGION.amazonaws.com` URL when absent).
    #[arg(long)]
    pub region: Option<String>,
    /// How commercetools authenticates to SQS.
    #[arg(long, value_enum, default_value = "iam")]
    pub authentication_mode: AuthMode,
    /// The access key id, with `--authentication-mode credentials` (the secret is read from
    /// PAYRULES_SUBSCRIPTION_SQS_ACCESS_SECRET).
    #[arg(long)]
    pub access_key: Option<String>,
    /// The delivery format.
    #[arg(long, value_enum, default_value = "platform")]
    pub format: FormatArg,
    /// The Subscription's key.
    #[arg(long, default_value = DEFAULT_KEY)]
    pub key: String,
    /// Prints the SubscriptionDraft JSON (and the grant) without calling anything.
    #[arg(long)]
    pub dry_run: bool,
    /// TOML configuration (its `[commercetools]` section); CTP_* variables override it.
    #[arg(long)]
    pub config: Option<PathBuf>,
}

impl CreateArgs {
    /// The destination these options name, validated; the error names the option.
    ///
    /// # Errors
    /// What is wrong, naming the option.
    pub fn destination(
        &self,
        secret: impl Fn(&str) -> Option<String>,
    ) -> Result<Destination, String> {
        let args = self;
        match args.destination {
            DestinationKind::Pubsub => {
                for (set, name) in [
                    (args.queue_url.is_some(), "--queue-url"),
                    (args.region.is_some(), "--region"),
                    (args.access_key.is_some(), "--access-key"),
                    (
                        args.authentication_mode != AuthMode::Iam,
                        "--authentication-mode",
                    ),
                ] {
                    if set {
                        return Err(format!("{name} applies to --destination sqs only"));
                    }
                }
                let topic = args.topic.as_deref().ok_or(
                    "--destination pubsub needs --topic projects/PROJECT/topics/TOPIC".to_string(),
                )?;
                let (project_id, topic) = parse_topic(topic)?;
                Ok(Destination::PubSub { project_id, topic })
            }
            DestinationKind::Sqs => {
                if args.topic.is_some() {
                    return Err("--topic applies to --destination pubsub only".into());
                }
                let queue_url = args.queue_url.as_deref().ok_or(
                    "--destination sqs needs --queue-url https://sqs.REGION.amazonaws.com/ACCOUNT/QUEUE"
                        .to_string(),
                )?;
                split_queue_url(queue_url)?;
                let region = match &args.region {
                    Some(r) if is_region(r) => r.clone(),
                    Some(r) => return Err(format!("--region {r:?} is not an AWS region name")),
                    None => region_from_queue_url(queue_url).ok_or_else(|| {
                        format!(
                            "--region is needed: it cannot be derived from --queue-url {queue_url:?}"
                        )
                    })?,
                };
                let credentials = match args.authentication_mode {
                    AuthMode::Iam => {
                        if args.access_key.is_some() {
                            return Err(
                                "--access-key applies to --authentication-mode credentials only"
                                    .into(),
                            );
                        }
                        None
                    }
                    AuthMode::Credentials => {
                        let key = args
                            .access_key
                            .clone()
                            .filter(|k| !k.trim().is_empty())
                            .ok_or(
                                "--authentication-mode credentials needs --access-key".to_string(),
                            )?;
                        let s = secret(SQS_SECRET_ENV).filter(|s| !s.is_empty()).ok_or_else(|| {
                            format!("--authentication-mode credentials needs the access secret in {SQS_SECRET_ENV}")
                        })?;
                        Some((key, Secret::new(s)))
                    }
                };
                Ok(Destination::Sqs {
                    queue_url: queue_url.to_string(),
                    region,
                    auth: args.authentication_mode,
                    credentials,
                })
            }
        }
    }
}

/// How commercetools authenticates to SQS, as `--authentication-mode` names it.
impl ValueEnum for AuthMode {
    fn value_variants<'a>() -> &'a [Self] {
        &[AuthMode::Iam, AuthMode::Credentials]
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        Some(match self {
            AuthMode::Iam => PossibleValue::new("iam").help(
                "commercetools' AWS user sends; the queue policy grants it `sqs:SendMessage`",
            ),
            AuthMode::Credentials => PossibleValue::new("credentials")
                .help("An access key of yours (`--access-key`, secret in the environment)"),
        })
    }
}

/// The delivery format, as `--format` names it.
impl ValueEnum for FormatArg {
    fn value_variants<'a>() -> &'a [Self] {
        &[FormatArg::Platform, FormatArg::Cloudevents]
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        Some(match self {
            FormatArg::Platform => PossibleValue::new("platform").help("commercetools' own format"),
            FormatArg::Cloudevents => PossibleValue::new("cloudevents").help("CloudEvents 1.0"),
        })
    }
}

/// `payrules subscription show`.
#[derive(Debug, Clone, Args)]
pub struct ShowArgs {
    /// The Subscription's key.
    #[arg(long, default_value = DEFAULT_KEY)]
    pub key: String,
    /// TOML configuration (its `[commercetools]` section); CTP_* variables override it.
    #[arg(long)]
    pub config: Option<PathBuf>,
}

/// The subscribed types, one line per resource type, indented.
fn list_lines() -> String {
    let mut out = String::new();
    for (field, list) in [
        ("messages", SUBSCRIBED_MESSAGES),
        ("events", SUBSCRIBED_EVENTS),
    ] {
        for (rt, types) in list {
            let names: Vec<&str> = types.iter().map(MessageType::as_str).collect();
            let _ = writeln!(out, "  {field} {rt}: {}", names.join(", "));
        }
    }
    out
}

// ------------------------------------------------------------------------------------------------
// The commercetools calls

/// Reads the commercetools client settings: `--config FILE` and the CTP_* variables (which
/// override it). Only the `[commercetools]` section is used and checked here: the worker's
/// other options (source, rules, release targets) do not concern this command.
fn client_settings(config_file: Option<&Path>) -> Result<CommercetoolsSettings, String> {
    let file =
        config::merge_with(config_file, |k| std::env::var(k).ok()).map_err(|e| e.to_string())?;
    let c = &file.commercetools;
    let mut problems = Vec::new();
    let mut required = |value: &Option<String>, env: &str, what: &str| -> String {
        match value.as_deref().map(str::trim) {
            Some(v) if !v.is_empty() => v.trim_end_matches('/').to_string(),
            _ => {
                problems.push(format!("{env} (commercetools.{what}) is not set"));
                String::new()
            }
        }
    };
    let project_key = required(&c.project_key, "CTP_PROJECT_KEY", "project_key");
    let client_id = required(&c.client_id, "CTP_CLIENT_ID", "client_id");
    let auth_url = required(&c.auth_url, "CTP_AUTH_URL", "auth_url");
    let api_url = required(&c.api_url, "CTP_API_URL", "api_url");
    let client_secret = match &c.client_secret {
        Some(s) if !s.expose().is_empty() => s.clone(),
        _ => {
            problems.push("CTP_CLIENT_SECRET (commercetools.client_secret) is not set".into());
            Secret::default()
        }
    };
    for (url, env) in [(&auth_url, "CTP_AUTH_URL"), (&api_url, "CTP_API_URL")] {
        if !url.is_empty()
            && reqwest::Url::parse(url).map_or(true, |u| !u.scheme().starts_with("http"))
        {
            problems.push(format!("{env} {url:?} is not an http(s) URL"));
        }
    }
    let timeout = config::parse_duration(&c.timeout).unwrap_or_else(|e| {
        problems.push(format!(
            "PAYRULES_HTTP_TIMEOUT (commercetools.timeout): {e}"
        ));
        Duration::from_secs(10)
    });
    if !problems.is_empty() {
        return Err(format!(
            "the commercetools API client is not configured (set the CTP_* variables, or \
             [commercetools] in --config FILE):\n  - {}",
            problems.join("\n  - ")
        ));
    }
    Ok(CommercetoolsSettings {
        checkout_url: config::derive_checkout_url(&api_url).unwrap_or_else(|| api_url.clone()),
        project_key,
        client_id,
        client_secret,
        auth_url,
        api_url,
        scopes: c.scopes.clone(),
        timeout,
    })
}

/// Runs a `payrules subscription` command.
pub async fn cli(command: SubscriptionCommand) -> ExitCode {
    match command {
        SubscriptionCommand::Create(args) => create(&args).await,
        SubscriptionCommand::Show(args) => show(&args).await,
    }
}

async fn create(args: &CreateArgs) -> ExitCode {
    let fail = |e: &dyn std::fmt::Display| {
        eprintln!("payrules subscription create: {e}");
        ExitCode::from(2)
    };
    if let Err(e) = check_key(&args.key) {
        return fail(&e);
    }
    let destination = match args.destination(|k| std::env::var(k).ok()) {
        Ok(d) => d,
        Err(e) => return fail(&e),
    };
    let draft = Draft {
        key: args.key.clone(),
        destination,
        format: args.format,
    };
    if args.dry_run {
        println!(
            "{}",
            serde_json::to_string_pretty(&draft.to_json(false)).unwrap_or_default()
        );
        eprintln!(
            "payrules subscription create: dry run, nothing was called. The destination needs:\n{}",
            indent(&draft.destination.grant())
        );
        return ExitCode::SUCCESS;
    }
    let settings = match client_settings(args.config.as_deref()) {
        Ok(s) => s,
        Err(e) => return fail(&e),
    };
    let project = settings.project_key.clone();
    match apply(settings, &draft).await {
        Ok(outcome) => {
            println!("{outcome}");
            println!(
                "destination {}, format {}; subscribed:\n{}",
                draft.destination.describe(),
                describe_format(&draft.format.to_json()),
                list_lines().trim_end()
            );
            println!(
                "the destination needs (already in place if commercetools' test message got through):\n{}",
                indent(&draft.destination.grant())
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            let hint = if e.codes.iter().any(|c| c == "InvalidInput") {
                format!(
                    "\ncommercetools delivers a test message before it accepts a destination; the destination needs:\n{}",
                    indent(&draft.destination.grant())
                )
            } else {
                String::new()
            };
            fail(&format!("project {project:?}: {e}{hint}"))
        }
    }
}

async fn show(args: &ShowArgs) -> ExitCode {
    let fail = |e: &dyn std::fmt::Display| {
        eprintln!("payrules subscription show: {e}");
        ExitCode::from(2)
    };
    if let Err(e) = check_key(&args.key) {
        return fail(&e);
    }
    let settings = match client_settings(args.config.as_deref()) {
        Ok(s) => s,
        Err(e) => return fail(&e),
    };
    let project = settings.project_key.clone();
    let live = match Api::connect(settings).await {
        Ok(api) => api.by_key(&args.key).await,
        Err(e) => Err(e),
    };
    let live = match live {
        Ok(Some(live)) => live,
        Ok(None) => {
            println!(
                "no Subscription with key {:?} in project {project:?}; create it with `payrules subscription create`\nit should carry:\n{}",
                args.key,
                list_lines().trim_end()
            );
            return ExitCode::FAILURE;
        }
        Err(e) => return fail(&format!("project {project:?}: {e}")),
    };
    print!("{}", render(&live, &args.key, &project));
    if coverage(&live).missing.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn args(extra: &[&str]) -> CreateArgs {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            create: CreateArgs,
        }
        let argv = std::iter::once("create").chain(extra.iter().copied());
        Cli::try_parse_from(argv).unwrap().create
    }

    #[test]
    fn destinations_validate_their_options() {
        let d = args(&["--destination", "pubsub", "--topic", "projects/p/topics/t"])
            .destination(|_| None)
            .unwrap();
        assert_eq!(
            d.to_json(false),
            json!({"type": "GoogleCloudPubSub", "projectId": "p", "topic": "t"})
        );
        let e = args(&["--destination", "pubsub"])
            .destination(|_| None)
            .unwrap_err();
        assert!(e.contains("--topic"), "{e}");
        let e = args(&[
            "--destination",
            "sqs",
            "--queue-url",
            "http://127.0.0.1:4567/000000000000/q",
        ])
        .destination(|_| None)
        .unwrap_err();
        assert!(e.contains("--region"), "{e}");
        let e = args(&[
            "--destination",
            "sqs",
            "--queue-url",
            "https://sqs.eu-west-1.amazonaws.com/1/q",
            "--authentication-mode",
            "credentials",
            "--access-key",
            "AKIA",
        ])
        .destination(|_| None)
        .unwrap_err();
        assert!(e.contains(SQS_SECRET_ENV), "{e}");
        let d = args(&[
            "--destination",
            "sqs",
            "--queue-url",
            "https://sqs.eu-west-1.amazonaws.com/1/q",
            "--authentication-mode",
            "credentials",
            "--access-key",
            "AKIA",
        ])
        .destination(|_| Some("s3cr3t".into()))
        .unwrap();
        assert_eq!(d.to_json(false)["accessSecret"], "****");
        assert_eq!(d.to_json(true)["accessSecret"], "s3cr3t");
        assert!(!format!("{d:?}").contains("s3cr3t"));
    }
}
