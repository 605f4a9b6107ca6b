//! Unit tests of the parent module.

use super::*;
use super::{destination::*, plan::*};
use crate::redact::Secret;

#[test]
fn topics_parse_and_bad_ones_are_named() {
    assert_eq!(
        parse_topic("projects/p-1/topics/ct-notes"),
        Ok(("p-1".into(), "ct-notes".into()))
    );
    for bad in [
        "ct-notes",
        "projects/p/topics/",
        "projects/p/subscriptions/s",
        "projects/p/topics/t/x",
    ] {
        let e = parse_topic(bad).unwrap_err();
        assert!(e.contains(bad), "{e}");
    }
}

#[test]
fn queue_urls_give_region_and_arn() {
    let url = "https://sqs.eu-west-1.amazonaws.com/123456789012/ct-payrules";
    assert_eq!(region_from_queue_url(url).as_deref(), Some("eu-west-1"));
    assert_eq!(
        sqs_queue_arn(url, "eu-west-1").unwrap(),
        "arn:aws:sqs:eu-west-1:123456789012:ct-payrules"
    );
    assert_eq!(
        region_from_queue_url("https://us-east-2.queue.amazonaws.com/1/q").as_deref(),
        Some("us-east-2")
    );
    assert_eq!(
        region_from_queue_url("http://127.0.0.1:4567/000000000000/q"),
        None
    );
    assert!(split_queue_url("https://sqs.eu-west-1.amazonaws.com/1/q.fifo").is_err());
    assert!(split_queue_url("https://sqs.eu-west-1.amazonaws.com/q").is_err());
}

fn draft() -> Draft {
    Draft {
        key: "payrules".into(),
        destination: Destination::PubSub {
            project_id: "p".into(),
            topic: "t".into(),
        },
        format: FormatArg::Platform,
    }
}

#[test]
fn a_matching_subscription_needs_no_update_and_covers_everything() {
    let mut live = draft().to_json(true);
    live["status"] = json!("Healthy");
    live["changes"] = json!([]);
    assert_eq!(plan_update(&live, &draft()), Ok(vec![]));
    assert_eq!(coverage(&live), Coverage::default());
    // Order of entries and types does not matter.
    live["messages"] = json!([
        {"resourceTypeId": "order", "types": ["ReturnInfoSet", "OrderEditApplied", "OrderImported", "OrderCreated", "OrderPaymentAdded", "OrderCreatedFromRecurringOrder", "OrderReturnShipmentStateChanged", "OrderStateChanged", "OrderShipmentStateChanged", "ReturnInfoAdded"]},
        {"resourceTypeId": "payment", "types": ["PaymentTransactionStateChanged", "PaymentTransactionAdded", "PaymentCreated"]},
    ]);
    assert_eq!(plan_update(&live, &draft()), Ok(vec![]));
}

#[test]
fn differences_become_update_actions() {
    let mut live = draft().to_json(true);
    live["destination"]["topic"] = json!("old");
    live["messages"] = json!([{"resourceTypeId": "payment", "types": ["PaymentCreated"]}]);
    live["changes"] = json!([{"resourceTypeId": "order"}]);
    live.as_object_mut().unwrap().remove("events");
    let plan = plan_update(&live, &draft()).unwrap();
    let actions: Vec<&str> = plan
        .iter()
        .map(|c| c.action["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "changeDestination",
            "setMessages",
            "setEvents",
            "setChanges"
        ]
    );
    let c = coverage(&live);
    assert!(
        c.missing
            .contains(&"messages payment PaymentTransactionAdded".to_string())
    );
    assert!(
        c.missing
            .contains(&"events checkout CheckoutPaymentAuthorized".to_string())
    );
    assert_eq!(c.extra, ["changes order"]);
}

#[test]
fn all_types_of_a_resource_cover_it_and_are_reported_as_extra() {
    let mut live = draft().to_json(true);
    live["messages"] = json!([{"resourceTypeId": "payment"}, {"resourceTypeId": "order", "types": []}, {"resourceTypeId": "customer"}]);
    let c = coverage(&live);
    assert!(c.missing.is_empty(), "{c:?}");
    assert_eq!(
        c.extra,
        [
            "messages customer (all types)",
            "messages order (all other types)",
            "messages payment (all other types)"
        ]
    );
    // But create narrows it to exactly the list.
    let plan = plan_update(&live, &draft()).unwrap();
    assert_eq!(plan.len(), 1);
    assert_eq!(plan[0].action["action"], "setMessages");
}

#[test]
fn a_different_format_is_refused_with_advice() {
    let mut live = draft().to_json(true);
    live["format"] = json!({"type": "CloudEvents", "cloudEventsVersion": "1.0"});
    let e = plan_update(&live, &draft()).unwrap_err();
    assert!(e.contains("delete the Subscription"), "{e}");
    // An absent format is Platform.
    live.as_object_mut().unwrap().remove("format");
    assert_eq!(plan_update(&live, &draft()), Ok(vec![]));
}

#[test]
fn sqs_authentication_mode_defaults_to_credentials_when_absent() {
    let d = Draft {
        destination: Destination::Sqs {
            queue_url: "https://sqs.eu-west-1.amazonaws.com/1/q".into(),
            region: "eu-west-1".into(),
            auth: AuthMode::Credentials,
            credentials: Some(("AKIA".into(), Secret::new("s"))),
        },
        ..draft()
    };
    let mut live = d.to_json(true);
    live["destination"]
        .as_object_mut()
        .unwrap()
        .remove("authenticationMode");
    live["destination"]
        .as_object_mut()
        .unwrap()
        .remove("accessSecret");
    assert_eq!(plan_update(&live, &d), Ok(vec![]));
    let iam = Draft {
        destination: Destination::Sqs {
            queue_url: "https://sqs.eu-west-1.amazonaws.com/1/q".into(),
            region: "eu-west-1".into(),
            auth: AuthMode::Iam,
            credentials: None,
        },
        ..draft()
    };
    let plan = plan_update(&live, &iam).unwrap();
    assert_eq!(plan[0].action["action"], "changeDestination");
    assert!(iam.destination.grant().contains(SQS_PRINCIPAL));
    assert!(
        iam.destination
            .grant()
            .contains("arn:aws:sqs:eu-west-1:1:q")
    );
}

#[test]
fn keys_are_checked() {
    assert!(check_key("payrules").is_ok());
    assert!(check_key("p").is_err());
    assert!(check_key("pay rules").is_err());
}
