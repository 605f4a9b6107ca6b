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

fn message_fixture(name: &str) -> Message {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/messages")
        .join(format!("{name}.json"));
    decode(&std::fs::read(&path).unwrap()).unwrap()
}

#[test]
fn return_info_added_carries_the_return() {
    use crate::model::{ReturnPaymentState, ReturnedLine};
    let m = message_fixture("ReturnInfoAdded");
    assert_eq!(m.kind, MessageType::ReturnInfoAdded);
    assert_eq!(m.order_id(), Some("5a5709de-26e8-47c5-ab8a-4e7953b072d1"));
    assert_eq!((m.resource_version, m.sequence_number), (Some(6), Some(6)));
    let Body::ReturnInfoAdded(info) = &m.body else {
        panic!("{:?}", m.body)
    };
    let [item] = info.items.as_slice() else {
        panic!("{info:?}")
    };
    assert_eq!(item.id, "6f1d7b52-3c0e-4f5a-a1d3-0b8e6c2f4a90");
    assert_eq!(item.quantity, 1);
    assert_eq!(
        item.line,
        ReturnedLine::LineItem("fd9b4c96-4d17-4a13-aa09-3586fca08896".into())
    );
    assert_eq!(item.shipment_state, ReturnShipmentState::Returned);
    assert_eq!(item.payment_state, ReturnPaymentState::Initial);
}

#[test]
fn return_info_set_carries_every_return_and_may_carry_none() {
    use crate::model::{ReturnPaymentState, ReturnedLine};
    let m = message_fixture("ReturnInfoSet");
    assert_eq!(m.kind, MessageType::ReturnInfoSet);
    let Body::ReturnInfoSet(infos) = &m.body else {
        panic!("{:?}", m.body)
    };
    let items: Vec<_> = infos.iter().flat_map(|i| &i.items).collect();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0].quantity, 2);
    assert_eq!(
        items[1].line,
        ReturnedLine::CustomLineItem("4e5f6a7b-8c9d-4e0f-a1b2-c3d4e5f6a7b8".into())
    );
    assert_eq!(items[1].shipment_state, ReturnShipmentState::Advised);
    assert_eq!(items[1].payment_state, ReturnPaymentState::NonRefundable);
    // `returnInfo` is optional: absent or null, the order has no returns left.
    for extra in ["", r#","returnInfo":null"#, r#","returnInfo":[]"#] {
        let json = format!(
            r#"{{"notificationType":"Message","id":"m","resource":{{"typeId":"order","id":"o"}},"type":"ReturnInfoSet"{extra}}}"#
        );
        assert_eq!(
            decode(json.as_bytes()).unwrap().body,
            Body::ReturnInfoSet(Vec::new()),
            "{json}"
        );
    }
}

#[test]
fn return_shipment_state_changed_names_the_item() {
    let m = message_fixture("OrderReturnShipmentStateChanged");
    assert_eq!(m.kind, MessageType::OrderReturnShipmentStateChanged);
    assert_eq!(
        m.body,
        Body::ReturnShipmentStateChanged {
            return_item_id: "6f1d7b52-3c0e-4f5a-a1d3-0b8e6c2f4a90".into(),
            state: ReturnShipmentState::BackInStock,
        }
    );
    let err = decode(
        br#"{"notificationType":"Message","id":"m","resource":{"typeId":"order","id":"o"},"type":"OrderReturnShipmentStateChanged","returnShipmentState":"Returned"}"#,
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "missing field `returnItemId` in OrderReturnShipmentStateChanged"
    );
    let m = decode(
        br#"{"notificationType":"Message","id":"m","resource":{"typeId":"order","id":"o"},"type":"OrderReturnShipmentStateChanged","returnItemId":"r","returnShipmentState":"Lost "}"#,
    )
    .unwrap();
    assert!(matches!(
        m.body,
        Body::ReturnShipmentStateChanged {
            state: ReturnShipmentState::Unknown,
            ..
        }
    ));
}

#[test]
fn a_return_info_added_without_its_return_is_reported() {
    let err = decode(
        br#"{"notificationType":"Message","id":"m","resource":{"typeId":"order","id":"o"},"type":"ReturnInfoAdded"}"#,
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "missing field `returnInfo` in ReturnInfoAdded message"
    );
}
