//! What the tests of the `it` binary share, compiled once: the local peers and the calls that
//! set them up, the PostgreSQL databases, the scenario fixtures, the `payrules` binary as a
//! process, and the harness of the broker tests.

pub mod binary;
pub mod broker;
pub mod ctadmin;
pub mod ctmessages;
pub mod fixtures;
pub mod peers;
pub mod pg;
pub mod pg_tls;
/// The generated notification stream of the benchmarks and the load tool.
#[path = "../../../benches/support/stream.rs"]
pub mod stream;
