//! `payrules explain order ID | payment ID`: the decision as the rules see it now, in words.
//!
//! The order or payment is read live from commercetools (the `CTP_*` variables) or, with
//! `--input`, from the view that replaying those streams builds — exactly as `payrules replay`
//! builds it — with the store's ledger and timers. The facts and the decision come from the
//! engine ([`Engine::explain_order`], [`Engine::explain_payment`]: the rules' own reads and
//! decision functions); this module only adds what the ledger remembers about when and why
//! (for a replay: the planned actions, the messages and the timers) and puts it into words or
//! one JSON object.
//!
//! The verdict is the ledger's: an order is `released` when `release:{id}` is done; a payment
//! `captured` when `capture:{id}` is done, else `cancelled` when `cancel:{id}` is done, else
//! `untouched`. The words say why, and what the rules decide now.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use payrules::explain::{Kind, Offline};
//! use payrules::rules::Rules;
//!
//! let offline = Offline::replay(&["fixtures/scenarios/16-partial-coverage-two-payments.jsonl"],
//! Rules::default(), None).await?;
//! let why = offline.explain(Kind::Order, "…").await?;
//! println!("{}: {}", why.verdict(), why.because());
//! # Ok(()) }
//! ```

mod gather;
mod history;
mod offline;
mod report;
mod text;

pub use gather::explain;
pub use history::History;
pub use offline::Offline;
pub use report::{
    Decision, Explanation, LedgerLine, OrderExplanation, OrderRef, OrderRulesNow, OrderSummary,
    OrderVerdict, PaymentExplanation, PaymentLine, PaymentRulesNow, PaymentVerdict, Stamp,
    TimerLine,
};

use serde::Serialize;

/// What to explain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// An order: released or not, and why.
    Order,
    /// A payment: cancelled, captured or untouched, and why.
    Payment,
}
