//! `payrules reconcile`: after an outage, feeds the messages of a past window through the
//! same path as `run` (decode → rules on the live view → ledger → effects).
//!
//! commercetools does not redeliver what a failing Subscription dropped, but the Messages
//! Query API keeps messages (when the project has them enabled). The ledger makes this
//! idempotent: running it twice, or while the worker runs, executes nothing twice. Where the
//! Messages API is not there, a query sweep stands in: payments with a successful transaction
//! modified in the window, each looked at as if a message had just arrived for it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};

use crate::action::Action;
use crate::app::{build_processor, open_store};
use crate::commerce::CtpClient;
use crate::config::Settings;
use crate::message::decode;
use crate::process::{Handled, ProcessError, Processor};
use crate::store::{LedgerStatus, MemoryStore, Store};
use crate::subscription::SUBSCRIBED_MESSAGES;

/// A reconcile run, for the summary.
#[derive(Debug, Default)]
pub struct Summary {
    /// Messages (or swept payments) read.
    pub read: usize,
    /// Messages that cannot make an action due.
    pub inert: usize,
    /// Messages the worker (or an earlier reconcile) had processed already.
    pub already_processed: usize,
    /// Actions taken, by kind.
    pub actions: BTreeMap<&'static str, usize>,
    /// Actions the window called for that the ledger shows settled already (done or failed).
    pub already_done: usize,
    /// Grace-period checks that came due and were evaluated.
    pub timers_fired: usize,
    /// What failed (message id: error).
    pub failures: Vec<String>,
    /// The Messages API was not there: a query sweep was used.
    pub swept: bool,
}

/// Parses `3h` (back from `now`) or an RFC 3339 timestamp.
///
/// # Errors
/// Neither form, named.
pub fn parse_when(text: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text.trim()) {
        return Ok(t.with_timezone(&Utc));
    }
    let d = humantime::parse_duration(text.trim())
        .map_err(|_| format!("{text:?} is neither a duration (3h, 90m) nor an RFC 3339 time"))?;
    chrono::Duration::from_std(d)
        .ok()
        .and_then(|d| now.checked_sub_signed(d))
        .ok_or_else(|| format!("{text:?} reaches too far back"))
}

/// A time as the Messages query and the summary write it (RFC 3339, milliseconds, `Z`).
pub fn stamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The message types the rules read, for the `where` of the Messages query. (Checkout's
/// events are not Messages: the Messages API does not keep them.)
fn message_types() -> Vec<String> {
    SUBSCRIBED_MESSAGES
        .iter()
        .flat_map(|(_, types)| types.iter().map(|t| t.as_str().to_string()))
        .collect()
}

/// Pages through `endpoint` in `createdAt`/`id` order (or `lastModifiedAt` for the sweep)
/// with a cursor, never an offset: `offset` is capped by the API and shifts under writes.
struct Cursor<'a> {
    client: &'a CtpClient,
    endpoint: &'static str,
    /// The time field that orders and bounds the pages.
    field: &'static str,
    /// The window's own condition, with its variables.
    filter: String,
    vars: Vec<(String, String)>,
    page_size: String,
    /// The last (time, id) handed out.
    after: Option<(String, String)>,
    done: bool,
}

impl Cursor<'_> {
    /// The next page; `Ok(None)` when the endpoint is not there (404).
    async fn next_page(&mut self) -> Result<Option<Vec<Value>>, String> {
        if self.done {
            return Ok(Some(Vec::new()));
        }
        let mut filter = self.filter.clone();
        let mut vars = self.vars.clone();
        if let Some((t, id)) = &self.after {
            filter = format!(
                "({filter}) and ({f} > :afterTime or ({f} = :afterTime and id > :afterId))",
                f = self.field
            );
            vars.push(("var.afterTime".into(), t.clone()));
            vars.push(("var.afterId".into(), id.clone()));
        }
        let sort = format!("{} asc", self.field);
        let mut query: Vec<(&str, &str)> = vec![
            ("where", filter.as_str()),
            ("sort", sort.as_str()),
            ("sort", "id asc"),
            ("limit", self.page_size.as_str()),
            ("withTotal", "false"),
        ];
        query.extend(vars.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let page = self
            .client
            .query_page(self.endpoint, &query)
            .await
            .map_err(|e| e.to_string())?;
        let Some(mut results) = page else {
            return Ok(None);
        };
        // The order is the cursor's contract: do not rely on the server's sort alone.
        results.sort_by(|a, b| {
            let key = |v: &Value| {
                (
                    v[self.field].as_str().unwrap_or_default().to_string(),
                    v["id"].as_str().unwrap_or_default().to_string(),
                )
            };
            key(a).cmp(&key(b))
        });
        if results.len() < self.page_size.parse::<usize>().unwrap_or(500) {
            self.done = true;
        }
        if let Some(last) = results.last() {
            self.after = Some((
                last[self.field].as_str().unwrap_or_default().to_string(),
                last["id"].as_str().unwrap_or_default().to_string(),
            ));
        }
        Ok(Some(results))
    }
}

/// A Message resource as the Platform-format notification the decoder reads.
fn as_notification(message: &Value, project: &str) -> Value {
    let mut n = message.clone();
    if let Some(o) = n.as_object_mut() {
        o.insert("notificationType".into(), json!("Message"));
        o.entry("projectKey").or_insert(json!(project));
    }
    n
}

/// A payment found by the sweep, as a message that makes the rules look at it (and, through
/// the live view, at its orders).
fn sweep_message(payment: &Value, project: &str) -> Option<Value> {
    let id = payment["id"].as_str()?;
    let tx = payment["transactions"]
        .as_array()?
        .iter()
        .rev()
        .find(|t| t["state"] == "Success")?;
    let at = payment["lastModifiedAt"].clone();
    Some(json!({
        "notificationType": "Message", "projectKey": project,
        "id": format!("reconcile-sweep:{id}:{}", payment["version"]),
        "version": 1, "sequenceNumber": 0,
        "resource": {"typeId": "payment", "id": id},
        "resourceVersion": payment["version"],
        "type": "PaymentTransactionStateChanged",
        "transactionId": tx["id"], "state": "Success",
        "createdAt": at, "lastModifiedAt": at,
    }))
}

/// What a reconcile run needs.
pub struct Reconciler {
    /// Reads the Messages API or sweeps.
    client: CtpClient,
    /// The same path as `run`.
    processor: Arc<Processor>,
    /// The worker's store (a dry run reads it to tell done actions apart).
    ledger: Arc<dyn Store>,
    /// Where the processor's timers live (the ledger, or the dry run's scratch store).
    timers: Arc<dyn Store>,
    /// For the messages' `projectKey`.
    project: String,
    /// A dry run: actions are collected, not executed.
    dry_run: bool,
}

impl Reconciler {
    /// Builds the processor `run` would build; a dry run decides on a scratch store so the
    /// real ledger is only read.
    ///
    /// # Errors
    /// No commercetools client; the store cannot be opened; an executor cannot be built.
    pub async fn new(mut settings: Settings, dry_run: bool) -> Result<Self, String> {
        let ct = settings.commercetools.clone().ok_or(
            "reconcile reads commercetools: set CTP_PROJECT_KEY, CTP_CLIENT_ID, CTP_CLIENT_SECRET, CTP_AUTH_URL, CTP_API_URL",
        )?;
        let client = CtpClient::new(ct.clone()).map_err(|e| e.to_string())?;
        let ledger = open_store(
            &settings.state_url,
            settings.claim_lease,
            tokio::time::sleep(Duration::from_secs(30)),
        )
        .await
        .map_err(|e| format!("the state store: {e}"))?;
        let (processor, timers) = if dry_run {
            settings.dry_run = true;
            let scratch: Arc<dyn Store> = Arc::new(MemoryStore::new());
            let p = build_processor(&settings, scratch.clone(), Box::new(std::io::sink()))?;
            (p, scratch)
        } else {
            let p = build_processor(&settings, ledger.clone(), Box::new(std::io::sink()))?;
            (p, ledger.clone())
        };
        Ok(Self {
            client,
            processor,
            ledger,
            timers,
            project: ct.project_key,
            dry_run,
        })
    }

    /// Runs the window `[since, until)`; `on_action` gets each action taken (or, in a dry
    /// run, each action the ledger does not show done), `on_progress` the count read so far and
    /// how far into the window the last page reached (its last `createdAt`, or `lastModifiedAt`
    /// when sweeping).
    ///
    /// # Errors
    /// The window cannot be read (neither the Messages API nor the sweep).
    pub async fn run(
        &self,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
        page_size: u32,
        mut on_action: impl FnMut(&Action),
        mut on_progress: impl FnMut(usize, Option<DateTime<Utc>>),
    ) -> Result<Summary, String> {
        let mut summary = Summary::default();
        let types = message_types();
        let mut vars = vec![
            ("var.since".to_string(), stamp(since)),
            ("var.until".to_string(), stamp(until)),
        ];
        vars.extend(types.iter().map(|t| ("var.types".to_string(), t.clone())));
        let mut cursor = Cursor {
            client: &self.client,
            endpoint: "messages",
            field: "createdAt",
            filter: "type in :types and createdAt >= :since and createdAt < :until".into(),
            vars,
            page_size: page_size.to_string(),
            after: None,
            done: false,
        };
        let mut sweeping = false;
        loop {
            let page = match cursor.next_page().await? {
                Some(p) => p,
                None if !sweeping => {
                    tracing::warn!(
                        "the Messages Query API is not available on this project (messages not enabled?): sweeping payments with a successful transaction modified in the window instead"
                    );
                    summary.swept = true;
                    sweeping = true;
                    cursor = Cursor {
                        client: &self.client,
                        endpoint: "payments",
                        field: "lastModifiedAt",
                        filter: "transactions(state = \"Success\") and lastModifiedAt >= :since and lastModifiedAt < :until".into(),
                        vars: vec![
                            ("var.since".to_string(), stamp(since)),
                            ("var.until".to_string(), stamp(until)),
                        ],
                        page_size: page_size.to_string(),
                        after: None,
                        done: false,
                    };
                    continue;
                }
                None => return Err("the payments query answered 404".into()),
            };
            if page.is_empty() {
                break;
            }
            for item in &page {
                summary.read += 1;
                let notification = if sweeping {
                    match sweep_message(item, &self.project) {
                        Some(m) => m,
                        None => continue,
                    }
                } else {
                    as_notification(item, &self.project)
                };
                self.feed(&notification, &mut summary, &mut on_action).await;
            }
            let reached = page
                .last()
                .and_then(|item| item[cursor.field].as_str())
                .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.with_timezone(&Utc));
            on_progress(summary.read, reached);
        }
        self.fire_due_timers(&mut summary, &mut on_action).await;
        if !self.dry_run {
            // Counted per action by the processor: an action executed before its message met
            // another worker's claim, then found done on the retry, is counted as taken.
            let tally = self.processor.tally();
            summary.actions = tally.executed;
            summary.already_done = tally.already_settled;
        }
        Ok(summary)
    }

    /// How long to wait on a claim another process holds before calling it a failure: two
    /// leases, so a live holder settles it and a dead holder's claim runs out.
    fn claim_wait(&self) -> Duration {
        self.ledger
            .lease()
            .map_or(Duration::from_secs(30), |lease| lease * 2)
    }

    async fn feed(
        &self,
        notification: &Value,
        summary: &mut Summary,
        on_action: &mut impl FnMut(&Action),
    ) {
        let bytes = notification.to_string();
        let message = match decode(bytes.as_bytes()) {
            Ok(m) => m,
            Err(e) => {
                let id = notification["id"].as_str().unwrap_or("-");
                summary.failures.push(format!("{id}: cannot decode: {e}"));
                return;
            }
        };
        let id = message.id.clone().unwrap_or_default();
        // Decided as of when the message was created, as if it had been delivered then: a
        // grace period that started in the window runs from there, and is due at once if it
        // has run out since.
        let at = message.created_at.unwrap_or_else(Utc::now).min(Utc::now());
        let deadline = tokio::time::Instant::now() + self.claim_wait();
        let result = loop {
            match self.processor.handle(&message, at).await {
                // The worker (or another reconcile) is executing it: wait for its outcome.
                Err(ProcessError::Claimed { retry_after, .. })
                    if tokio::time::Instant::now() + retry_after < deadline =>
                {
                    tokio::time::sleep(retry_after).await;
                }
                other => break other,
            }
        };
        match result {
            Ok(Handled::Inert) => summary.inert += 1,
            Ok(Handled::Duplicate) => summary.already_processed += 1,
            Ok(Handled::Done(actions)) => self.taken(actions, summary, on_action).await,
            Err(e) => summary.failures.push(format!("{id}: {e}")),
        }
    }

    async fn taken(
        &self,
        actions: Vec<Action>,
        summary: &mut Summary,
        on_action: &mut impl FnMut(&Action),
    ) {
        for action in actions {
            if self.dry_run {
                // Decided on a scratch store: the real ledger says what is done already.
                if matches!(
                    self.ledger.ledger_status(&action.key).await,
                    Ok(Some(LedgerStatus::Done | LedgerStatus::Failed))
                ) {
                    summary.already_done += 1;
                    continue;
                }
                *summary.actions.entry(action.action.as_str()).or_default() += 1;
            }
            on_action(&action);
        }
    }

    /// Grace periods that ran out during the window (or before now) are evaluated at once.
    async fn fire_due_timers(&self, summary: &mut Summary, on_action: &mut impl FnMut(&Action)) {
        let now = Utc::now();
        loop {
            let due = match self.timers.take_due(now, 64).await {
                Ok(d) => d,
                Err(e) => {
                    summary.failures.push(format!("timers: {e}"));
                    return;
                }
            };
            if due.is_empty() {
                return;
            }
            for timer in due {
                summary.timers_fired += 1;
                let deadline = tokio::time::Instant::now() + self.claim_wait();
                let result = loop {
                    match self.processor.timer(&timer, now).await {
                        Err(ProcessError::Claimed { retry_after, .. })
                            if tokio::time::Instant::now() + retry_after < deadline =>
                        {
                            tokio::time::sleep(retry_after).await;
                        }
                        other => break other,
                    }
                };
                match result {
                    Ok(actions) => self.taken(actions, summary, on_action).await,
                    Err(e) => summary.failures.push(format!("{}: {e}", timer.key())),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn when_is_a_duration_back_or_a_timestamp() {
        let now = DateTime::parse_from_rfc3339("2026-12-04T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            stamp(parse_when("3h", now).unwrap()),
            "2026-12-04T09:00:00.000Z"
        );
        assert_eq!(
            stamp(parse_when("2026-12-01T00:00:00+01:00", now).unwrap()),
            "2026-11-30T23:00:00.000Z"
        );
        assert!(
            parse_when("yesterday", now)
                .unwrap_err()
                .contains("yesterday")
        );
    }
}
