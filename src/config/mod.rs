//! Configuration: a TOML file, overridden by environment variables (env wins).
//!
//! [`OPTIONS`] is the single list of every option: its place in the TOML file, its
//! environment variable, its kind and whether it is a secret. Loading merges the file and the
//! environment into one table, checks every key and value against that list (so all problems
//! are reported at once), deserializes the table into [`FileConfig`] (plain serde data, with
//! defaults as named functions) and builds the runtime [`Settings`] from it.

//!
//! - [`options`]: the option table and the environment overlay.
//! - [`reference`]: each option's default and meaning; the table `docs/configuration.md` shows.
//! - [`schema`]: the file's shape (serde structs, defaults as named functions).
//! - [`settings`]: the runtime settings it builds into, and the problems.
//! - `build`: the runtime settings built section by section, every problem collected.
//! - [`validate`]: the checks the sections share (durations, URLs, the dry run's own input).
//!
//! Secrets and URL masking are [`crate::redact`]'s (re-exported here).

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::model::ShipmentState;
use crate::rules::{
    CancelRule, CaptureRule, OrderCancelledRule, RefundOnOrderCancelledRule, RefundOrphanedRule,
    ReleaseRule, Rules,
};

mod build;
mod options;
mod reference;
mod schema;
mod settings;
mod validate;

use build::Problems;
pub use options::*;
pub use reference::*;
pub use schema::*;
pub use settings::*;
pub use validate::*;

pub use crate::redact::*;
// Each runtime settings type lives with the part it configures (so that part does not depend
// on the configuration); the configuration builds them all, and names them here too.
pub use crate::commerce::CommercetoolsSettings;
pub use crate::effects::order_update::OrderUpdate;
pub use crate::source::pubsub::PubsubSettings;
pub use crate::source::sqs::SqsSettings;
pub use crate::worker::WorkerSettings;

/// The loaded configuration: what was written (defaults filled in), where each value came
/// from, and what it builds into.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The merged file + environment configuration.
    pub file: FileConfig,
    /// Where each option's value came from, in [`OPTIONS`] order.
    pub origins: Vec<(&'static OptionSpec, Origin)>,
    /// The runtime settings.
    pub settings: Settings,
}

/// Loads the configuration from an optional TOML file and the process environment.
///
/// # Errors
/// Every problem found, at once.
pub fn load(file: Option<&Path>) -> Result<Loaded, ConfigErrors> {
    load_with(file, |name| std::env::var(name).ok())
}

/// [`load`] with an explicit environment (tests). The one validation `run` and
/// `check-config` share: every problem of every kind (unknown keys, types, cross-option
/// checks) in one pass.
///
/// # Errors
/// Every problem found, at once.
pub fn load_with(
    file: Option<&Path>,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Loaded, ConfigErrors> {
    let (config, origins, mut problems) = merge(file, &env);
    let settings = match &config {
        Some(c) => match c.build() {
            Ok(s) => Some(s),
            Err(ConfigErrors(more)) => {
                problems.extend(more);
                None
            }
        },
        None => None,
    };
    match (config, settings) {
        (Some(file), Some(settings)) if problems.is_empty() => {
            let loaded = Loaded {
                file,
                origins,
                settings,
            };
            for option in loaded.ignored() {
                tracing::warn!(
                    option = %option.dotted(),
                    env = option.env,
                    "option accepted for existing configurations and ignored; remove it"
                );
            }
            Ok(loaded)
        }
        _ => Err(ConfigErrors(problems)),
    }
}

/// Options still accepted from existing configurations that change nothing (warned about at
/// start): `rules.release_for_fulfillment.also_on_charge` — money received always counts.
const IGNORED_OPTIONS: &[&str] = &["PAYRULES_RELEASE_ALSO_ON_CHARGE"];

impl Loaded {
    /// The options set (in the file or the environment) that are accepted and ignored.
    pub fn ignored(&self) -> impl Iterator<Item = &'static OptionSpec> + '_ {
        self.origins
            .iter()
            .filter(|(o, origin)| *origin != Origin::Default && IGNORED_OPTIONS.contains(&o.env))
            .map(|(o, _)| *o)
    }
}

/// Merges the file and the environment and checks every key and value, without the
/// cross-option checks of [`FileConfig::build`] (replay only needs the rules).
///
/// # Errors
/// Every problem found, at once.
pub fn merge_with(
    file: Option<&Path>,
    env: impl Fn(&str) -> Option<String>,
) -> Result<FileConfig, ConfigErrors> {
    match merge(file, &env) {
        (Some(config), _, problems) if problems.is_empty() => Ok(config),
        (_, _, problems) => Err(ConfigErrors(problems)),
    }
}

type Merged = (
    Option<FileConfig>,
    Vec<(&'static OptionSpec, Origin)>,
    Vec<Problem>,
);

/// The file overlaid with the environment. A value of the wrong type is reported and left
/// out (its default applies), so the cross-option checks still run and report theirs.
fn merge(file: Option<&Path>, env: &impl Fn(&str) -> Option<String>) -> Merged {
    let mut problems = Vec::new();
    let mut table = toml::Table::new();
    if let Some(path) = file {
        let place = path.display().to_string();
        match std::fs::read_to_string(path) {
            Ok(text) => match text.parse::<toml::Table>() {
                Ok(t) => table = t,
                Err(e) => problems.push(Problem {
                    place,
                    message: format!("not valid TOML: {}", e.message()),
                }),
            },
            Err(e) => problems.push(Problem {
                place,
                message: format!("cannot read: {e}"),
            }),
        }
    }
    check_keys(&mut table, &mut Vec::new(), &mut problems);
    let mut origins = Vec::with_capacity(OPTIONS.len());
    for spec in OPTIONS {
        let mut origin = Origin::Default;
        match env_raw(spec, env) {
            Err(p) => problems.push(p),
            Ok(Some((value, from))) => match env_value(spec, &value) {
                Ok(v) => {
                    insert(&mut table, spec.path, v);
                    origin = from;
                }
                Err(message) => problems.push(Problem {
                    place: match from {
                        Origin::EnvFile(name) => format!("{name}_FILE"),
                        _ => spec.env.to_string(),
                    },
                    message,
                }),
            },
            Ok(None) => {
                if let Some(v) = get(&table, spec.path) {
                    if check_type(spec, v, &mut problems) {
                        origin = Origin::File;
                    } else {
                        remove(&mut table, spec.path);
                    }
                }
            }
        }
        origins.push((spec, origin));
    }
    let config = toml::Value::Table(table)
        .try_into()
        .map_err(|e: toml::de::Error| {
            problems.push(Problem {
                place: "configuration".into(),
                message: e.to_string(),
            });
        })
        .ok();
    (config, origins, problems)
}

impl Loaded {
    /// The effective configuration for `payrules check-config`: one line per option, its
    /// value (secrets masked, URLs masked by [`mask_url`]) and where it came from.
    pub fn describe(&self) -> String {
        let shown = toml::Value::try_from(&self.file)
            .ok()
            .and_then(|v| v.as_table().cloned())
            .unwrap_or_default();
        let mut out = String::new();
        for (spec, origin) in &self.origins {
            let value = match get(&shown, spec.path) {
                None => "(unset)".to_string(),
                Some(_) if spec.secret => "\"****\"".to_string(),
                Some(toml::Value::String(s)) => {
                    toml::Value::String(mask_url(s, spec.url_kind())).to_string()
                }
                Some(v) => v.to_string(),
            };
            out.push_str(&format!("{} = {value}  # {origin}\n", spec.dotted()));
        }
        out
    }
}

#[cfg(test)]
mod tests;
