//! What must not be shown: secrets (never shown) and the parts of a URL that may carry one.
//! Configuration, telemetry and every HTTP client go through these; they are nobody's
//! configuration, so they depend on nothing of payrules.
//!
//! - [`mask`]: what of a URL may be shown (logs, errors, `check-config`, `/readyz`).
//! - [`secret`]: the secret type.

pub mod mask;
pub mod secret;

pub use mask::*;
pub use secret::*;
