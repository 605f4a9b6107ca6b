//! `payrules check-config`: the configuration validated exactly as `run` does, printed with
//! where each value came from; with `--connect`, the connections tried.

use std::path::Path;
use std::process::ExitCode;

use crate::app::check_connections;
use crate::config;

/// Runs `payrules check-config`.
pub async fn check_config(file: Option<&Path>, connect: bool) -> ExitCode {
    let loaded = match config::load(file) {
        Ok(loaded) => loaded,
        Err(e) => {
            eprintln!("payrules check-config: {e}");
            return ExitCode::from(2);
        }
    };
    print!("{}", loaded.describe());
    if connect {
        let failures = check_connections(&loaded.settings).await;
        for (what, result) in &failures {
            match result {
                Ok(detail) => eprintln!("payrules check-config: {what}: ok ({detail})"),
                Err(e) => eprintln!("payrules check-config: {what}: FAILED: {e}"),
            }
        }
        if failures.iter().any(|(_, r)| r.is_err()) {
            return ExitCode::FAILURE;
        }
    }
    eprintln!("payrules check-config: configuration is valid");
    ExitCode::SUCCESS
}
