//! The configuration loader on arbitrary input: it must return Ok or Err, never panic.
//!
//! The input is a TOML file, optionally followed by a NUL byte and environment lines
//! `NAME=VALUE`. Only names of `payrules::config::OPTIONS` are kept (not their `NAME_FILE`
//! forms: those name files to read, which is not what is fuzzed here).
//!
//! Each input goes through:
//! - `toml::from_str::<FileConfig>` then `FileConfig::build`, `rules` and `to_masked_toml`
//!   (the file's shape and every cross-option check, no I/O);
//! - `load_with(Some(file), env)` with the TOML written to a scratch file (the real path:
//!   unknown keys, type checks, the environment overlay), then `describe` on success;
//! - `load_with(None, env)` (the environment alone).
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use payrules::config::{FileConfig, OPTIONS, load_with};

/// One scratch file per fuzzing process, in memory when /dev/shm exists.
fn scratch() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let dir = if std::path::Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        dir.join(format!("payrules-fuzz-config-{}.toml", std::process::id()))
    })
}

fn env_of(text: &[u8]) -> Vec<(&'static str, String)> {
    let text = String::from_utf8_lossy(text);
    let mut vars: Vec<(&'static str, String)> = Vec::new();
    for line in text.split('\n') {
        let Some((name, value)) = line.split_once('=') else {
            continue;
        };
        // A real environment cannot hold NUL.
        if value.contains('\0') {
            continue;
        }
        if let Some(spec) = OPTIONS.iter().find(|s| s.env == name) {
            vars.retain(|(n, _)| *n != spec.env);
            vars.push((spec.env, value.to_string()));
        }
    }
    vars
}

fuzz_target!(|data: &[u8]| {
    let (file, env) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let vars = env_of(env);
    let env = |name: &str| {
        vars.iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.clone())
    };

    if let Ok(text) = std::str::from_utf8(file) {
        if let Ok(config) = toml::from_str::<FileConfig>(text) {
            let _ = config.rules();
            let _ = config.build();
            std::hint::black_box(config.to_masked_toml());
        }
    }

    let path = scratch();
    std::fs::write(path, file).expect("write the scratch file");
    match load_with(Some(path), env) {
        Ok(loaded) => {
            std::hint::black_box(loaded.describe());
            std::hint::black_box(loaded.file.to_masked_toml());
        }
        Err(e) => {
            std::hint::black_box(e.to_string());
        }
    }

    match load_with(None, env) {
        Ok(loaded) => {
            std::hint::black_box(loaded.describe());
        }
        Err(e) => {
            std::hint::black_box(e.to_string());
        }
    }
});
