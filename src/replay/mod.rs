//! Offline, deterministic replay: feed notifications, get the actions the rules would plan.
//!
//! The clock is the latest `createdAt` seen so far and never goes back. Before a message is
//! processed, every grace-period timer due at or before the clock fires, in due order; at the
//! end of the input, all remaining timers fire in due order. A timer's decision is stamped
//! with its due time, a message's with the clock. The same input always gives the same output.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! use payrules::replay::Replay;
//! use payrules::rules::Rules;
//!
//! let mut replay = Replay::new(Rules::default());
//! let fixture = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/messages/PaymentCreated.json");
//! let line = std::fs::read(fixture).unwrap();
//! let mut planned = replay.feed("PaymentCreated.json", &line).await;
//! planned.extend(replay.finish().await);
//! for action in &planned {
//!     println!("{}", action.to_json_line());
//! }
//! assert_eq!(replay.summary().messages, 1);
//! # }
//! ```

use std::collections::HashSet;
use std::fmt;
use std::path::Path;
use std::sync::Arc;

use chrono::DateTime;

use crate::action::Action;
use crate::effects::PlanOnly;
use crate::message::{DecodeError, Message, Timestamp, decode};
use crate::process::Processor;
use crate::rules::{Engine, Rules};
use crate::source::{FileInput, SourceError};

pub mod pipeline;
use crate::store::{MemoryStore, Store};
use crate::view::StreamView;
use crate::view::stream::SnapshotError;

/// An input that was skipped, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// `file:line` (or whatever origin the caller gave).
    pub origin: String,
    /// What was wrong with it.
    pub error: String,
}

/// Counters of a replay.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplaySummary {
    /// Messages decoded and processed.
    pub messages: usize,
    /// Subscription test notifications recognised and skipped.
    pub subscription_tests: usize,
    /// Inputs that could not be decoded or processed.
    pub skipped: Vec<Skipped>,
    /// Actions planned.
    pub actions: usize,
}

/// A replay in progress; see the module docs.
pub struct Replay {
    processor: Processor,
    view: Arc<StreamView>,
    store: Arc<dyn Store>,
    clock: Option<Timestamp>,
    summary: ReplaySummary,
}

impl Replay {
    /// A replay with the given rule settings and an empty view.
    pub fn new(rules: Rules) -> Self {
        Self::with_store(rules, Arc::new(MemoryStore::new()))
    }

    /// A replay whose ledger and timers live in `store` (e.g. the durable store, to measure
    /// it); `store` should start empty.
    pub fn with_store(rules: Rules, store: Arc<dyn Store>) -> Self {
        Self::with_view(rules, store, Arc::new(StreamView::new()))
    }

    /// A replay over a given (empty) view, e.g. [`StreamView::as_if_live`].
    pub fn with_view(rules: Rules, store: Arc<dyn Store>, view: Arc<StreamView>) -> Self {
        let engine = Engine::new(view.clone(), store.clone(), rules);
        let processor = Processor::new(engine, store.clone(), Arc::new(PlanOnly));
        Self {
            processor,
            view,
            store,
            clock: None,
            summary: ReplaySummary::default(),
        }
    }

    /// Adds the snapshots of a `--state` directory (`payments/*.json`, `orders/*.json`).
    ///
    /// # Errors
    /// Every snapshot that could not be loaded.
    pub fn load_state(&mut self, dir: &Path) -> Result<usize, Vec<SnapshotError>> {
        self.view.load_snapshots(dir)
    }

    /// The view, e.g. to add snapshots directly.
    pub fn view(&self) -> &StreamView {
        &self.view
    }

    /// Feeds one notification; returns the actions planned because of it (timers that came
    /// due first included). Undecodable input is recorded in the summary and skipped.
    pub async fn feed(&mut self, origin: &str, bytes: &[u8]) -> Vec<Action> {
        let decoded = decode(bytes);
        self.feed_decoded(&origin, decoded.as_ref()).await
    }

    /// [`Replay::feed`] for a notification decoded elsewhere (e.g. on the reader thread of
    /// [`pipeline`]); `origin` is formatted only if the input is skipped.
    pub async fn feed_decoded(
        &mut self,
        origin: &dyn fmt::Display,
        decoded: Result<&Message, &DecodeError>,
    ) -> Vec<Action> {
        let message = match decoded {
            Ok(m) => m,
            Err(e) => {
                self.skip(origin, e.to_string());
                return Vec::new();
            }
        };
        if message.is_subscription_test() {
            self.summary.subscription_tests += 1;
            return Vec::new();
        }
        self.summary.messages += 1;
        if let Some(t) = message.created_at {
            self.clock = Some(self.clock.map_or(t, |c| c.max(t)));
        }
        let now = self.clock.unwrap_or(DateTime::UNIX_EPOCH);
        let mut planned = self.fire_timers(now).await;
        match self.processor.message(message, now).await {
            Ok(actions) => planned.extend(actions),
            Err(e) => self.skip(origin, e.to_string()),
        }
        self.summary.actions += planned.len();
        planned
    }

    /// Ends the input: every remaining timer fires in due order.
    pub async fn finish(&mut self) -> Vec<Action> {
        self.processor.input_ended();
        let planned = self.fire_timers(DateTime::<chrono::Utc>::MAX_UTC).await;
        self.summary.actions += planned.len();
        planned
    }

    /// What happened so far.
    pub fn summary(&self) -> &ReplaySummary {
        &self.summary
    }

    fn skip(&mut self, origin: &dyn fmt::Display, error: String) {
        self.summary.skipped.push(Skipped {
            origin: origin.to_string(),
            error,
        });
    }

    async fn fire_timers(&mut self, now: Timestamp) -> Vec<Action> {
        let mut planned = Vec::new();
        // A check that asked to be made again (money in flight) may come due again before
        // `now`; nothing changes until the next input, so it waits for that input, due at it.
        let mut fired = HashSet::new();
        let mut again = Vec::new();
        loop {
            let due = match self.store.take_due(now, 256).await {
                Ok(due) if !due.is_empty() => due,
                _ => break,
            };
            for timer in due {
                if !fired.insert(timer.payment_id.clone()) {
                    again.push(timer);
                    continue;
                }
                match self.processor.timer(&timer, timer.due).await {
                    Ok(actions) => planned.extend(actions),
                    Err(e) => {
                        let origin = format!("timer {}", timer.key());
                        self.skip(&origin, e.to_string());
                    }
                }
            }
        }
        for timer in again {
            if let Err(e) = self.store.retry_timer(&timer, now).await {
                let origin = format!("timer {}", timer.key());
                self.skip(&origin, e.to_string());
            }
        }
        planned
    }
}

/// The result of [`replay_files`].
#[derive(Debug, Clone, Default)]
pub struct ReplayOutput {
    /// Every planned action, in order.
    pub actions: Vec<Action>,
    /// Counters and skipped inputs.
    pub summary: ReplaySummary,
}

/// Replays files (`.json`, `.jsonl`, directories, `-`) with optional snapshots and returns
/// every planned action: the library form of `payrules replay`.
///
/// # Errors
/// An input or snapshot that cannot be read at all (undecodable lines are only skipped).
pub async fn replay_files<P: AsRef<Path>>(
    inputs: &[P],
    rules: Rules,
    state: Option<&Path>,
) -> Result<ReplayOutput, ReplayError> {
    let mut replay = Replay::new(rules);
    if let Some(dir) = state {
        replay.load_state(dir).map_err(ReplayError::State)?;
    }
    let mut actions = Vec::new();
    replay
        .feed_inputs(FileInput::resolve(inputs)?, |planned, _| {
            actions.extend(planned);
            Ok(())
        })
        .await?;
    Ok(ReplayOutput {
        actions,
        summary: replay.summary().clone(),
    })
}

impl Replay {
    /// Replays `inputs` to the end (the remaining timers fire last), reading and decoding them
    /// on a second thread ([`pipeline`]) while the rules run here, in input order: the actions
    /// are exactly those of feeding every line to [`Replay::feed`]. `sink` gets the actions
    /// planned and the inputs skipped since its previous call, as they happen.
    ///
    /// # Errors
    /// An input that cannot be read (what came before it has been replayed), or the error
    /// `sink` returned.
    pub async fn feed_inputs<F>(
        &mut self,
        inputs: Vec<FileInput>,
        mut sink: F,
    ) -> Result<(), ReplayError>
    where
        F: FnMut(Vec<Action>, &[Skipped]) -> std::io::Result<()>,
    {
        let mut ahead = pipeline::DecodeAhead::start(inputs);
        let mut reported = 0;
        while let Some(mut batch) = ahead.next_batch().await {
            for item in &batch {
                let pipeline::Item::Line(line) = item else {
                    continue;
                };
                let planned = self.feed_decoded(line, line.message.as_ref()).await;
                if !planned.is_empty() || self.summary.skipped.len() > reported {
                    sink(planned, &self.summary.skipped[reported..])
                        .map_err(ReplayError::Output)?;
                    reported = self.summary.skipped.len();
                }
            }
            // A read failure is the last item of its batch, after the lines read before it.
            if let Some(pipeline::Item::Failed(_)) = batch.last()
                && let Some(pipeline::Item::Failed(e)) = batch.pop()
            {
                return Err(ReplayError::Input(e));
            }
            ahead.recycle(batch);
        }
        let planned = self.finish().await;
        sink(planned, &self.summary.skipped[reported..]).map_err(ReplayError::Output)
    }
}

/// An input that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// An input file.
    #[error(transparent)]
    Input(#[from] SourceError),
    /// The `--state` snapshots.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    State(Vec<SnapshotError>),
    /// Writing the output.
    #[error("writing the output: {0}")]
    Output(std::io::Error),
}
