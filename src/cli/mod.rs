//! The `payrules` commands, one file each; `main.rs` parses the arguments and calls them. The
//! library does not depend on this module: it is the command line over it.
//!
//! - [`run`]: the worker. - [`replay`]: offline replay. - [`check_config`]: the configuration
//!   checked. - [`health`]: the image's health check. - [`reconcile`]: a past window.
//!   - [`explain`]: a decision in words. - [`subscription`]: the commercetools Subscription.

pub mod check_config;
pub mod explain;
pub mod health;
pub mod reconcile;
pub mod replay;
pub mod run;
pub mod subscription;
