//! Every fixture message decodes into its typed form; bad inputs give typed errors; arbitrary
//! bytes never panic the decoder.

use std::path::Path;

use payrules::message::{Body, DecodeError, Format, MessageType, NotificationType, decode};
use proptest::prelude::*;

fn fixture(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/messages")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn every_message_fixture_decodes_to_its_type() {
    let cases: &[(&str, MessageType)] = &[
        ("PaymentCreated.json", MessageType::PaymentCreated),
        (
            "PaymentTransactionAdded.json",
            MessageType::PaymentTransactionAdded,
        ),
        (
            "PaymentTransactionStateChanged.json",
            MessageType::PaymentTransactionStateChanged,
        ),
        (
            "PaymentStatusStateTransition.json",
            MessageType::PaymentStatusStateTransition,
        ),
        ("OrderCreated.json", MessageType::OrderCreated),
        ("OrderImported.json", MessageType::OrderImported),
        ("OrderPaymentAdded.json", MessageType::OrderPaymentAdded),
        ("OrderStateChanged.json", MessageType::OrderStateChanged),
        (
            "OrderPaymentStateChanged.json",
            MessageType::OrderPaymentStateChanged,
        ),
        (
            "OrderShipmentStateChanged.json",
            MessageType::OrderShipmentStateChanged,
        ),
        ("ReturnInfoAdded.json", MessageType::ReturnInfoAdded),
        ("ReturnInfoSet.json", MessageType::ReturnInfoSet),
        (
            "OrderReturnShipmentStateChanged.json",
            MessageType::OrderReturnShipmentStateChanged,
        ),
        (
            "CheckoutOrderCreationFailed.json",
            MessageType::CheckoutOrderCreationFailed,
        ),
        (
            "CheckoutPaymentAuthorized.json",
            MessageType::CheckoutPaymentAuthorized,
        ),
        (
            "CheckoutPaymentAuthorizationFailed.json",
            MessageType::CheckoutPaymentAuthorizationFailed,
        ),
        (
            "CheckoutPaymentAuthorizationCancelled.json",
            MessageType::CheckoutPaymentAuthorizationCancelled,
        ),
        (
            "CloudEvents-PaymentTransactionAdded.json",
            MessageType::PaymentTransactionAdded,
        ),
        (
            "PayloadNotIncluded-PaymentTransactionStateChanged.json",
            MessageType::PaymentTransactionStateChanged,
        ),
        ("ResourceCreated-payment.json", MessageType::ResourceCreated),
        ("ResourceUpdated-order.json", MessageType::ResourceUpdated),
        ("ResourceDeleted-payment.json", MessageType::ResourceDeleted),
        (
            "SubscriptionTestNotification.json",
            MessageType::ResourceCreated,
        ),
        (
            "Other-PaymentInteractionAdded.json",
            MessageType::Other("PaymentInteractionAdded".into()),
        ),
    ];
    for (file, kind) in cases {
        let m = decode(&fixture(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(&m.kind, kind, "{file}");
        if m.notification != NotificationType::Event {
            assert!(m.resource.is_some(), "{file}: resource");
        }
        if m.notification == NotificationType::Message || m.notification == NotificationType::Event
        {
            assert!(m.id.is_some(), "{file}: id");
            assert!(m.created_at.is_some(), "{file}: createdAt");
        }
    }
}

#[test]
fn typed_bodies_carry_what_the_rules_read() {
    let m = decode(&fixture("PaymentCreated.json")).unwrap();
    let Body::PaymentCreated(p) = &m.body else {
        panic!("{:?}", m.body)
    };
    assert!(!p.transactions.is_empty());
    assert_eq!(m.resource_version, Some(p.version));

    let m = decode(&fixture("OrderCreated.json")).unwrap();
    let Body::OrderCreated(o) = &m.body else {
        panic!("{:?}", m.body)
    };
    assert!(o.total_price.cent_amount > 0);
    assert!(o.payment_ids().count() >= 1);

    let m = decode(&fixture("PaymentTransactionStateChanged.json")).unwrap();
    assert!(matches!(m.body, Body::TransactionStateChanged { .. }));

    let m = decode(&fixture("CheckoutOrderCreationFailed.json")).unwrap();
    let Body::CheckoutOrderCreationFailed {
        payments, errors, ..
    } = &m.body
    else {
        panic!()
    };
    assert!(!payments.is_empty() && !errors.is_empty());
    assert!(
        m.project_key.is_some(),
        "Checkout events carry projectKey inside data"
    );

    let m = decode(&fixture("CloudEvents-PaymentTransactionAdded.json")).unwrap();
    assert_eq!(m.format, Format::CloudEvents);
    assert!(matches!(m.body, Body::TransactionAdded(_)));

    let m = decode(&fixture(
        "PayloadNotIncluded-PaymentTransactionStateChanged.json",
    ))
    .unwrap();
    assert!(matches!(m.body, Body::PayloadNotIncluded { .. }));

    assert!(
        decode(&fixture("SubscriptionTestNotification.json"))
            .unwrap()
            .is_subscription_test()
    );
    assert!(
        !decode(&fixture("ResourceCreated-payment.json"))
            .unwrap()
            .is_subscription_test()
    );
}

#[test]
fn bad_inputs_give_typed_errors_naming_the_problem() {
    let err = |name: &str| decode(&fixture(&format!("bad/{name}"))).unwrap_err();
    assert!(matches!(err("not-utf8.bin"), DecodeError::NotUtf8 { .. }));
    assert!(matches!(err("not-json.txt"), DecodeError::NotJson { .. }));
    let e = err("no-id.json");
    assert!(
        matches!(e, DecodeError::MissingField { field: "id", .. }),
        "{e}"
    );
    let e = err("no-resource.json");
    assert!(
        matches!(
            e,
            DecodeError::MissingField {
                field: "resource",
                ..
            }
        ),
        "{e}"
    );
    let e = err("wrong-shape.json");
    assert!(
        matches!(e, DecodeError::WrongShape { .. }) && e.to_string().contains("Reference"),
        "{e}"
    );
    assert!(matches!(
        err("top-level-array.json"),
        DecodeError::WrongShape { .. }
    ));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode(&bytes);
    }

    #[test]
    fn mutated_fixtures_never_panic(
        file in prop::sample::select(vec!["PaymentCreated.json", "OrderCreated.json", "CloudEvents-PaymentTransactionAdded.json", "CheckoutOrderCreationFailed.json"]),
        cut in 0usize..6000,
        flip in any::<u8>(),
    ) {
        let mut bytes = fixture(file);
        let at = cut % bytes.len().max(1);
        if let Some(b) = bytes.get_mut(at) { *b ^= flip; }
        let _ = decode(&bytes);
        bytes.truncate(at);
        let _ = decode(&bytes);
    }
}
