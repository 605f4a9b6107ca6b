//! `payrules::message::decode` on arbitrary bytes: it must return Ok or Err, never panic —
//! and neither may what the worker does next with the result (the accessors it reads, the
//! error's text it parks the message with).
#![no_main]

use libfuzzer_sys::fuzz_target;
use payrules::message::decode;

fuzz_target!(|data: &[u8]| {
    match decode(data) {
        Ok(m) => {
            let _ = m.is_subscription_test();
            let _ = m.payment_id();
            let _ = m.order_id();
            let _ = m.kind.as_str();
            let _ = m.notification.as_str();
            std::hint::black_box(format!("{m:?}"));
        }
        Err(e) => {
            std::hint::black_box(e.to_string());
        }
    }
});
