//! The offline explanation: a replay whose view and ledger are explained at its end (the library
//! form of `payrules explain --input`).

use std::path::Path;
use std::sync::{Arc, Mutex};

use super::Kind;
use super::gather::explain;
use super::history::{History, Log, Recording};
use super::report::{Explanation, Stamp};
use crate::action::{Action, format_timestamp};
use crate::message::{Timestamp, decode};
use crate::replay::{Replay, ReplayError, ReplaySummary};
use crate::rules::{Engine, EngineError, Rules};
use crate::source::{FileInput, InputReader};
use crate::store::{MemoryStore, Store};
use crate::view::StreamView;

/// A finished replay whose view and ledger can be explained: the library form of
/// `payrules explain --input`.
pub struct Offline {
    engine: Engine,
    history: History,
    actions: Vec<Action>,
    summary: ReplaySummary,
}

impl Offline {
    /// Replays `inputs` (with `state` snapshots) exactly as `payrules replay` does, to the end
    /// of the input (every timer fired).
    ///
    /// # Errors
    /// An input or snapshot that cannot be read at all (undecodable lines are only skipped).
    pub async fn replay<P: AsRef<Path>>(
        inputs: &[P],
        rules: Rules,
        state: Option<&Path>,
    ) -> Result<Self, ReplayError> {
        let view = Arc::new(StreamView::new());
        let log = Arc::new(Mutex::new(Log::default()));
        let store: Arc<dyn Store> = Arc::new(Recording {
            inner: MemoryStore::new(),
            log: log.clone(),
        });
        let lock = || log.lock().unwrap_or_else(|p| p.into_inner());
        let record = |actions: &[Action]| {
            let mut log = lock();
            for a in actions {
                log.actions.insert(a.key.clone(), a.clone());
            }
        };
        let mut replay = Replay::with_view(rules.clone(), store.clone(), view.clone());
        if let Some(dir) = state {
            replay.load_state(dir).map_err(ReplayError::State)?;
        }
        let mut actions = Vec::new();
        let mut clock: Option<Timestamp> = None;
        for line in InputReader::new(FileInput::resolve(inputs)?) {
            let line = line?;
            let origin = line.origin();
            {
                let mut log = lock();
                log.current = Stamp {
                    origin: Some(origin.clone()),
                    ..Stamp::default()
                };
                if let Ok(m) = decode(&line.bytes) {
                    if let Some(t) = m.created_at {
                        clock = Some(clock.map_or(t, |c| c.max(t)));
                    }
                    log.current.at = clock.as_ref().map(format_timestamp);
                    log.current.message_type = Some(m.kind.to_string());
                    if let Some(id) = m.id {
                        log.messages
                            .entry(id.clone())
                            .or_insert((m.kind.to_string(), origin.clone()));
                        log.current.message_id = Some(id);
                    }
                }
            }
            let planned = replay.feed(&origin, &line.bytes).await;
            record(&planned);
            actions.extend(planned);
        }
        lock().current = Stamp {
            origin: Some("at the end of the input".into()),
            ..Stamp::default()
        };
        let planned = replay.finish().await;
        record(&planned);
        actions.extend(planned);
        let summary = replay.summary().clone();
        let names: Vec<String> = inputs
            .iter()
            .map(|p| p.as_ref().display().to_string())
            .collect();
        let log = std::mem::take(&mut *lock());
        Ok(Self {
            engine: Engine::new(view, store, rules),
            history: History::replayed(format!("replay of {}", names.join(" ")), log),
            actions,
            summary,
        })
    }

    /// Every action the replay planned, in order (what `payrules replay` prints).
    pub fn actions(&self) -> &[Action] {
        &self.actions
    }

    /// The replay's counters and skipped inputs.
    pub fn summary(&self) -> &ReplaySummary {
        &self.summary
    }

    /// Explains an order or a payment as the rules see it at the end of the replay.
    ///
    /// # Errors
    /// A view or store failure.
    pub async fn explain(&self, kind: Kind, id: &str) -> Result<Explanation, EngineError> {
        explain(&self.engine, &self.history, kind, id).await
    }
}
