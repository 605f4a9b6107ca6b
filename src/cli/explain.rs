//! `payrules explain`: its arguments, reading live from commercetools or from a replay, opening
//! the ledger; the explanation itself is [`crate::explain`]'s.

use crate::commerce::{CtpClient, LiveView};
use crate::config::{self, CommercetoolsSettings, FileConfig};
use crate::explain::{Explanation, History, Kind, Offline, explain};
use crate::redact::Secret;
use crate::rules::Engine;
use crate::store::{MemoryStore, SqlStore, Store};
use clap::builder::PossibleValue;
use clap::{Args, ValueEnum};
use std::path::PathBuf;
use std::process::ExitCode;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;
use tracing::instrument::WithSubscriber;

/// `payrules explain …`.
#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// `order` or `payment`.
    #[arg(value_enum)]
    pub kind: Kind,
    /// The order or payment id.
    pub id: String,
    /// Print one JSON object instead of words.
    #[arg(long)]
    pub json: bool,
    /// Explain from the view replaying these streams builds (.json, .jsonl, directories, -),
    /// exactly as `payrules replay` would, instead of live commercetools. Repeatable.
    #[arg(long = "input", value_name = "STREAM")]
    pub inputs: Vec<PathBuf>,
    /// TOML configuration: the rules; live, also `[commercetools]` and `[state]` (the CTP_*
    /// and PAYRULES_* variables override it).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// With --input: snapshots, DIR/payments/*.json and DIR/orders/*.json (as replay --state).
    #[arg(long, value_name = "DIR", requires = "inputs")]
    pub state: Option<PathBuf>,
    /// Live: the state store whose ledger is read (default: `state.url`, PAYRULES_STATE_URL);
    /// `memory:` explains without a ledger.
    #[arg(long, value_name = "URL", conflicts_with = "inputs")]
    pub state_url: Option<String>,
}

/// Runs `payrules explain`: exit status 0 when the order or payment was found, 1 when it was
/// not, 2 on a usage, configuration or read error.
pub async fn cli(args: ExplainArgs) -> ExitCode {
    match run(&args).await {
        Ok(why) => {
            if args.json {
                println!("{}", why.to_json());
            } else {
                print!("{}", why.to_text());
            }
            if why.found() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("payrules explain: {e}");
            ExitCode::from(2)
        }
    }
}

async fn run(args: &ExplainArgs) -> Result<Explanation, String> {
    let file = config::merge_with(args.config.as_deref(), |k| std::env::var(k).ok())
        .map_err(|e| e.to_string())?;
    let rules = file.rules().map_err(|e| e.to_string())?;
    if !args.inputs.is_empty() {
        // The replay's own log lines (one per planned action) would bury the answer.
        let offline = Offline::replay(&args.inputs, rules, args.state.as_deref())
            .with_subscriber(tracing::subscriber::NoSubscriber::default())
            .await
            .map_err(|e| e.to_string())?;
        for s in &offline.summary().skipped {
            eprintln!("{}: skipped: {}", s.origin, s.error);
        }
        return offline
            .explain(args.kind, &args.id)
            .await
            .map_err(|e| e.to_string());
    }
    let settings = client_settings(&file)?;
    let url = args.state_url.clone().unwrap_or(file.state.url.clone());
    let lease = config::parse_duration(&file.state.claim_lease).unwrap_or(Duration::from_secs(15));
    let store = open_ledger(&url, lease).await?;
    let client = CtpClient::new(settings.clone()).map_err(|e| e.to_string())?;
    let engine = Engine::new(Arc::new(LiveView::new(client)), store.clone(), rules);
    let history = History::live(
        format!(
            "commercetools project {}, ledger {}",
            settings.project_key,
            config::mask_url(&url, config::UrlKind::Plain)
        ),
        store,
    );
    explain(&engine, &history, args.kind, &args.id)
        .await
        .map_err(|e| e.to_string())
}

/// The commercetools client from `[commercetools]` and the CTP_* variables; only that section is
/// checked (the worker's source and release targets do not concern this command).
pub(super) fn client_settings(file: &FileConfig) -> Result<CommercetoolsSettings, String> {
    let c = &file.commercetools;
    let mut missing = Vec::new();
    let mut required = |v: &Option<String>, env: &'static str| {
        let v = v.as_deref().map(str::trim).unwrap_or_default();
        if v.is_empty() {
            missing.push(env);
        }
        v.trim_end_matches('/').to_string()
    };
    let project_key = required(&c.project_key, "CTP_PROJECT_KEY");
    let client_id = required(&c.client_id, "CTP_CLIENT_ID");
    let auth_url = required(&c.auth_url, "CTP_AUTH_URL");
    let api_url = required(&c.api_url, "CTP_API_URL");
    let client_secret = c.client_secret.clone().unwrap_or_default();
    if client_secret.expose().is_empty() {
        missing.push("CTP_CLIENT_SECRET");
    }
    if missing.len() == 5 {
        return Err(
            "nothing to read: give --input STREAM… (explain from a replay), or set the \
                    CTP_* variables (or [commercetools] in --config FILE) to read commercetools"
                .into(),
        );
    }
    if !missing.is_empty() {
        return Err(format!(
            "the commercetools API client is not configured: {} not set",
            missing.join(", ")
        ));
    }
    Ok(CommercetoolsSettings {
        checkout_url: c
            .checkout_url
            .clone()
            .or_else(|| config::derive_checkout_url(&api_url))
            .unwrap_or_else(|| api_url.clone()),
        timeout: config::parse_duration(&c.timeout).unwrap_or(Duration::from_secs(10)),
        scopes: c.scopes.clone().filter(|s| !s.trim().is_empty()),
        project_key,
        client_id,
        client_secret: Secret::new(client_secret.expose()),
        auth_url,
        api_url,
    })
}

/// The live ledger. A SQLite file that does not exist is not created: nothing was ever
/// recorded there.
pub(super) async fn open_ledger(url: &str, lease: Duration) -> Result<Arc<dyn Store>, String> {
    if url == "memory:" {
        return Ok(Arc::new(MemoryStore::new()));
    }
    if url.starts_with("sqlite:") {
        let opts = sqlx::sqlite::SqliteConnectOptions::from_str(url).map_err(|e| {
            format!(
                "state store {:?}: {e}",
                config::mask_url(url, config::UrlKind::Plain)
            )
        })?;
        let file = opts.get_filename();
        if !file.exists() {
            return Err(format!(
                "no state store at {} (state.url {:?}): set --state-url or PAYRULES_STATE_URL \
                 to the worker's, or --state-url memory: to explain without a ledger",
                file.display(),
                config::mask_url(url, config::UrlKind::Plain)
            ));
        }
    }
    let store = SqlStore::connect(url, lease)
        .await
        .map_err(|e| format!("{e} (a worker holding the SQLite file locks it)"))?;
    Ok(Arc::new(store))
}

// ------------------------------------------------------------------------------------------------
// What the ledger remembers about when and why

/// `order` or `payment`, as the command line names them.
impl ValueEnum for Kind {
    fn value_variants<'a>() -> &'a [Self] {
        &[Kind::Order, Kind::Payment]
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        Some(match self {
            Kind::Order => PossibleValue::new("order").help("An order: released or not, and why"),
            Kind::Payment => PossibleValue::new("payment")
                .help("A payment: cancelled, captured or untouched, and why"),
        })
    }
}
