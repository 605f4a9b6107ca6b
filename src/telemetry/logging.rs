//! The log subscriber: JSON lines for collectors, text for people.
//!
//! `PAYRULES_LOG_FORMAT=json|text` (default: text on a terminal, JSON otherwise); colours only
//! on a terminal; the filter from `PAYRULES_LOG`, else `RUST_LOG`, else `info`.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line.
    Json,
    /// Human-readable text.
    Text,
}

/// The environment variable choosing the format.
pub const FORMAT_VAR: &str = "PAYRULES_LOG_FORMAT";

impl LogFormat {
    /// Reads `PAYRULES_LOG_FORMAT` from `env`; `stderr_is_terminal` decides the default.
    ///
    /// # Errors
    /// A value other than `json` or `text`, named.
    pub fn from_env(
        env: impl Fn(&str) -> Option<String>,
        stderr_is_terminal: bool,
    ) -> Result<Self, String> {
        match env(FORMAT_VAR).as_deref().map(str::trim) {
            None | Some("") => Ok(if stderr_is_terminal {
                LogFormat::Text
            } else {
                LogFormat::Json
            }),
            Some(v) if v.eq_ignore_ascii_case("json") => Ok(LogFormat::Json),
            Some(v) if v.eq_ignore_ascii_case("text") => Ok(LogFormat::Text),
            Some(v) => Err(format!("{FORMAT_VAR}: expected json or text, got {v:?}")),
        }
    }
}

/// The filter directives: `PAYRULES_LOG` wins over `RUST_LOG`; `info` when neither is set.
pub fn filter_directives(env: impl Fn(&str) -> Option<String>) -> (String, &'static str) {
    if let Some(v) = env("PAYRULES_LOG").filter(|v| !v.trim().is_empty()) {
        return (v, "PAYRULES_LOG");
    }
    if let Some(v) = env("RUST_LOG").filter(|v| !v.trim().is_empty()) {
        return (v, "RUST_LOG");
    }
    ("info".into(), "default")
}

/// Installs the global subscriber writing to stderr.
///
/// # Errors
/// A bad `PAYRULES_LOG_FORMAT` or filter, in words.
pub fn init() -> Result<(), String> {
    let env = |k: &str| std::env::var(k).ok();
    let terminal = std::io::stderr().is_terminal();
    let format = LogFormat::from_env(env, terminal)?;
    let (directives, from) = filter_directives(env);
    let filter = EnvFilter::try_new(&directives)
        .map_err(|e| format!("{from}: {directives:?} is not a log filter ({e})"))?;
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter)
        .with_ansi(terminal && format == LogFormat::Text);
    let result = match format {
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .flatten_event(true)
            .try_init(),
        LogFormat::Text => builder.try_init(),
    };
    result.map_err(|e| format!("cannot install the logger: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| (*v).to_string())
        }
    }

    #[test]
    fn format_defaults_to_the_terminal_and_rejects_unknown_values() {
        assert_eq!(LogFormat::from_env(env(&[]), true), Ok(LogFormat::Text));
        assert_eq!(LogFormat::from_env(env(&[]), false), Ok(LogFormat::Json));
        assert_eq!(
            LogFormat::from_env(env(&[(FORMAT_VAR, "JSON")]), true),
            Ok(LogFormat::Json)
        );
        let err = LogFormat::from_env(env(&[(FORMAT_VAR, "xml")]), true).unwrap_err();
        assert!(
            err.contains("PAYRULES_LOG_FORMAT") && err.contains("xml"),
            "{err}"
        );
    }

    #[test]
    fn payrules_log_wins_over_rust_log() {
        assert_eq!(
            filter_directives(env(&[("RUST_LOG", "debug"), ("PAYRULES_LOG", "warn")])),
            ("warn".to_string(), "PAYRULES_LOG")
        );
        assert_eq!(
            filter_directives(env(&[("RUST_LOG", "debug")])),
            ("debug".to_string(), "RUST_LOG")
        );
        assert_eq!(filter_directives(env(&[])), ("info".to_string(), "default"));
    }
}
