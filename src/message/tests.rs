//! The decoder's unit tests.

use super::*;

thread_local! {
    /// Turns the single-pass fast path of [`parse_top`] off.
    pub(crate) static EXACT_ONLY: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

fn decode_exact(bytes: &[u8]) -> Result<Message, DecodeError> {
    EXACT_ONLY.with(|c| c.set(true));
    let r = decode(bytes);
    EXACT_ONLY.with(|c| c.set(false));
    r
}

#[test]
fn every_well_formed_fixture_takes_the_single_pass() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/messages");
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            let text = std::fs::read_to_string(&path).unwrap();
            let typed = serde_json::from_str::<RawTyped<'_>>(&text);
            assert!(typed.is_ok(), "{}: {:?}", path.display(), typed.err());
        }
    }
}

#[test]
fn the_fast_path_decodes_exactly_like_the_two_pass_path() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
    let mut inputs: Vec<Vec<u8>> = Vec::new();
    for dir in ["messages", "messages/bad"] {
        for entry in std::fs::read_dir(root.join(dir)).unwrap() {
            let path = entry.unwrap().path();
            if path.is_file() {
                inputs.push(std::fs::read(path).unwrap());
            }
        }
    }
    for entry in std::fs::read_dir(root.join("scenarios")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "jsonl") {
            let text = std::fs::read_to_string(path).unwrap();
            inputs.extend(text.lines().map(|l| l.as_bytes().to_vec()));
        }
    }
    // Payloads that do not fit the typed fields: the fast path must fall back.
    inputs.extend([
        br#"{"notificationType":"Message","id":"m","resource":{"typeId":"payment","id":"p"},"type":"PaymentCreated","payment":{"version":1}}"#.to_vec(),
        br#"{"notificationType":"Message","id":"m","resource":{"typeId":"payment","id":"p"},"type":"PaymentCreated","payment":"p"}"#.to_vec(),
        br#"{"notificationType":"Message","id":"m","resource":{"typeId":"order","id":"o"},"type":"OrderStateChanged","orderState":"Confirmed","order":{"weird":true},"payment":[1]}"#.to_vec(),
        br#"{"notificationType":"Message","id":"m","resource":{"typeId":"order","id":"o"},"type":"OrderCreated","order":{"id":"o","version":1}}"#.to_vec(),
        br#"{"notificationType":"Message","id":"m","resource":{"typeId":"payment","id":"p"},"type":"PaymentCreated","payment":null}"#.to_vec(),
        br#"{"notificationType":"Message","id":"m","resource":{"typeId":"payment","id":"p"},"type":"PaymentCreated","payment":{"id":"p","version":1},"payment":{"id":"p","version":2}}"#.to_vec(),
        br#"{"id":"c","specversion":"1.0","data":{"notificationType":"Message","id":"m","resource":{"typeId":"payment","id":"p"},"type":"PaymentCreated","payment":{"id":"p"}}}"#.to_vec(),
    ]);
    assert!(inputs.len() > 100, "{} inputs", inputs.len());
    for bytes in &inputs {
        assert_eq!(
            decode(bytes),
            decode_exact(bytes),
            "{}",
            String::from_utf8_lossy(bytes)
        );
    }
}

#[test]
fn not_utf8_names_the_offset() {
    assert_eq!(
        decode(b"{\"a\":\xff}"),
        Err(DecodeError::NotUtf8 { offset: 5 })
    );
}

#[test]
fn not_json_names_line_and_column() {
    let err = decode(b"{\n  nope").unwrap_err();
    assert!(
        matches!(err, DecodeError::NotJson { line: 2, .. }),
        "{err:?}"
    );
}

#[test]
fn wrong_shape_names_the_field() {
    let err =
        decode(br#"{"notificationType":"Message","id":"m","resource":"payment/1","type":"X"}"#)
            .unwrap_err();
    assert!(matches!(err, DecodeError::WrongShape { .. }), "{err:?}");
    let err = decode(b"[1,2]").unwrap_err();
    assert!(err.to_string().contains("array"), "{err}");
    let err = decode(b"42").unwrap_err();
    assert!(err.to_string().contains("not a JSON object"), "{err}");
}

#[test]
fn missing_transaction_is_reported_with_the_type() {
    let err = decode(
        br#"{"notificationType":"Message","id":"m","resource":{"typeId":"payment","id":"p"},"type":"PaymentTransactionAdded"}"#,
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "missing field `transaction` in PaymentTransactionAdded message"
    );
}

#[test]
fn payload_not_included_takes_the_type_from_payload_type() {
    let m = decode(
        br#"{"notificationType":"Message","id":"m","resource":{"typeId":"payment","id":"p"},
            "resourceVersion":4,"sequenceNumber":3,"createdAt":"2026-01-01T00:00:00.000Z",
            "payloadNotIncluded":{"reason":"Payload too large.","payloadType":"PaymentTransactionStateChanged"}}"#,
    )
    .unwrap();
    assert_eq!(m.kind, MessageType::PaymentTransactionStateChanged);
    assert!(matches!(m.body, Body::PayloadNotIncluded { .. }));
    assert_eq!(m.payment_id(), Some("p"));
}

#[test]
fn subscription_test_notification_is_recognised() {
    let m = decode(
        br#"{"notificationType":"ResourceCreated","projectKey":"p","resource":{"typeId":"subscription","id":"s"},"version":1,"modifiedAt":"2025-04-01T16:07:22.335Z"}"#,
    )
    .unwrap();
    assert!(m.is_subscription_test());
}

#[test]
fn unknown_types_keep_id_type_and_resource() {
    let m = decode(
        br#"{"notificationType":"Message","id":"m1","resource":{"typeId":"payment","id":"p"},"type":"PaymentInteractionAdded","interaction":{}}"#,
    )
    .unwrap();
    assert_eq!(m.kind, MessageType::Other("PaymentInteractionAdded".into()));
    assert_eq!(m.id.as_deref(), Some("m1"));
    assert_eq!(m.payment_id(), Some("p"));
}

#[test]
fn escaped_strings_decode() {
    let m = decode(
        br#"{"notificationType":"Message","id":"m\u0031","resource":{"typeId":"order","id":"o"},"type":"Order\u0053tateChanged","orderState":"Confirmed"}"#,
    )
    .unwrap();
    assert_eq!(m.id.as_deref(), Some("m1"));
    assert_eq!(m.body, Body::OrderStateChanged(OrderState::Confirmed));
}
