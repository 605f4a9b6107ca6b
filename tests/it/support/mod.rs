//! What the tests of the `it` binary share, compiled once: the local peers and the calls that
//! set them up, the PostgreSQL databases, the scenario fixtures, the `payrules` binary as a
//! process, and the harness of the broker tests.

pub(crate) mod binary;
pub(crate) mod broker;
pub(crate) mod ctadmin;
pub(crate) mod ctmessages;
pub(crate) mod fixtures;
pub(crate) mod peers;
pub(crate) mod pg;
pub(crate) mod pg_tls;
/// The generated notification stream of the benchmarks and the load tool.
#[path = "../../../benches/support/stream.rs"]
pub(crate) mod stream;
