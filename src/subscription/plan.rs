//! Comparing a live Subscription with the draft: the update actions `create` sends, what the live
//! one covers, and `show`'s rendering.

use super::destination::{Draft, describe_destination};
use super::{SUBSCRIBED_EVENTS, SUBSCRIBED_MESSAGES, subscriptions_json};
use crate::message::MessageType;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

/// `resourceTypeId` → the types of it (`None`: all types, as an absent or empty `types` means).
pub(crate) type Selection = BTreeMap<String, Option<BTreeSet<String>>>;

pub(crate) fn selection(list: Option<&Value>) -> Selection {
    let mut out: Selection = BTreeMap::new();
    for entry in list.and_then(Value::as_array).into_iter().flatten() {
        let Some(rt) = entry["resourceTypeId"].as_str() else {
            continue;
        };
        let types: Vec<String> = entry["types"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t.as_str().map(str::to_string))
            .collect();
        let slot = out.entry(rt.to_string()).or_insert(Some(BTreeSet::new()));
        match (slot, types.is_empty()) {
            (slot, true) => *slot = None,
            (Some(set), false) => set.extend(types),
            (None, false) => {}
        }
    }
    out
}

pub(crate) fn wanted(list: &[(&str, &[MessageType])]) -> Selection {
    list.iter()
        .map(|(rt, types)| {
            (
                rt.to_string(),
                Some(types.iter().map(|t| t.as_str().to_string()).collect()),
            )
        })
        .collect()
}

/// The destination as compared: an absent `authenticationMode` is `Credentials` (the API's
/// default), and the access secret only counts when the live one shows it.
pub(crate) fn comparable_destination(d: &Value, keep_secret: bool) -> Value {
    let mut d = d.clone();
    if let Some(o) = d.as_object_mut() {
        if o.get("type").and_then(Value::as_str) == Some("SQS")
            && !o.contains_key("authenticationMode")
        {
            o.insert("authenticationMode".into(), json!("Credentials"));
        }
        if !keep_secret {
            o.remove("accessSecret");
        }
    }
    d
}

/// The format as compared (`Platform` when absent).
pub(crate) fn comparable_format(f: Option<&Value>) -> Value {
    match f {
        Some(v) if v.is_object() => v.clone(),
        _ => json!({ "type": "Platform" }),
    }
}

/// One change `create` makes to an existing Subscription.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// What differed, for the output.
    pub what: String,
    /// The update action.
    pub action: Value,
}

/// The update actions that make `live` match `draft`; empty when it already does.
///
/// # Errors
/// The format differs: commercetools has no update action for it.
pub fn plan_update(live: &Value, draft: &Draft) -> Result<Vec<Change>, String> {
    let want = draft.to_json(true);
    let (live_format, want_format) = (
        comparable_format(live.get("format")),
        comparable_format(want.get("format")),
    );
    if live_format != want_format {
        return Err(format!(
            "the Subscription {:?} delivers in the format {} and --format asks for {}; commercetools \
             has no update action for the format: delete the Subscription and run create again",
            draft.key,
            describe_format(&live_format),
            describe_format(&want_format)
        ));
    }
    let mut changes = Vec::new();
    let keep_secret = live["destination"].get("accessSecret").is_some();
    if comparable_destination(&live["destination"], keep_secret)
        != comparable_destination(&want["destination"], keep_secret)
    {
        changes.push(Change {
            what: format!(
                "destination {} -> {}",
                describe_destination(&live["destination"]),
                draft.destination.describe()
            ),
            action: json!({ "action": "changeDestination", "destination": want["destination"] }),
        });
    }
    for (field, action, list) in [
        ("messages", "setMessages", SUBSCRIBED_MESSAGES),
        ("events", "setEvents", SUBSCRIBED_EVENTS),
    ] {
        if selection(live.get(field)) != wanted(list) {
            changes.push(Change {
                what: format!(
                    "{field} {} -> {}",
                    describe_selection(&selection(live.get(field))),
                    describe_selection(&wanted(list))
                ),
                action: json!({ "action": action, field: subscriptions_json(list) }),
            });
        }
    }
    let live_changes = selection(live.get("changes"));
    if !live_changes.is_empty() {
        changes.push(Change {
            what: format!(
                "changes {} -> none",
                live_changes.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
            action: json!({ "action": "setChanges", "changes": [] }),
        });
    }
    Ok(changes)
}

/// What a live Subscription lacks compared with the list, and what it has beyond it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Coverage {
    /// e.g. `messages payment PaymentCreated`, `events checkout CheckoutPaymentAuthorized`.
    pub missing: Vec<String>,
    /// e.g. `messages payment PaymentInteractionAdded`, `messages customer (all types)`.
    pub extra: Vec<String>,
}

/// Compares a live Subscription with [`SUBSCRIBED_MESSAGES`] and [`SUBSCRIBED_EVENTS`].
pub fn coverage(live: &Value) -> Coverage {
    let mut c = Coverage::default();
    for (field, list) in [
        ("messages", SUBSCRIBED_MESSAGES),
        ("events", SUBSCRIBED_EVENTS),
    ] {
        let have = selection(live.get(field));
        let want = wanted(list);
        for (rt, types) in &want {
            for t in types.iter().flatten() {
                let covered = match have.get(rt) {
                    Some(None) => true,
                    Some(Some(set)) => set.contains(t),
                    None => false,
                };
                if !covered {
                    c.missing.push(format!("{field} {rt} {t}"));
                }
            }
        }
        for (rt, types) in &have {
            let ours = want.get(rt).cloned().flatten().unwrap_or_default();
            match types {
                None if ours.is_empty() => c.extra.push(format!("{field} {rt} (all types)")),
                None => c.extra.push(format!("{field} {rt} (all other types)")),
                Some(set) => {
                    for t in set.difference(&ours) {
                        c.extra.push(format!("{field} {rt} {t}"));
                    }
                }
            }
        }
    }
    for rt in selection(live.get("changes")).keys() {
        c.extra.push(format!("changes {rt}"));
    }
    c
}

pub(crate) fn describe_selection(sel: &Selection) -> String {
    if sel.is_empty() {
        return "(none)".into();
    }
    sel.iter()
        .map(|(rt, types)| match types {
            None => format!("{rt}: all types"),
            Some(set) => format!(
                "{rt}: {}",
                set.iter().cloned().collect::<Vec<_>>().join(", ")
            ),
        })
        .collect::<Vec<_>>()
        .join("; ")
}

pub(crate) fn describe_format(f: &Value) -> String {
    match (f["type"].as_str(), f["cloudEventsVersion"].as_str()) {
        (Some(t), Some(v)) => format!("{t} {v}"),
        (Some(t), None) => t.to_string(),
        _ => "Platform".into(),
    }
}

pub(crate) fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("  {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The `show` report of a live Subscription.
pub fn render(live: &Value, key: &str, project: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Subscription {key:?} in project {project:?} (id {}, version {})",
        live["id"].as_str().unwrap_or("?"),
        live["version"]
    );
    let _ = writeln!(
        out,
        "  destination: {}",
        describe_destination(&live["destination"])
    );
    let _ = writeln!(
        out,
        "  format:      {}",
        describe_format(&comparable_format(live.get("format")))
    );
    let status = live["status"].as_str().unwrap_or("?");
    let _ = writeln!(out, "  status:      {status}");
    if status != "Healthy" {
        let _ = writeln!(
            out,
            "  warning: the status is not Healthy: commercetools is not delivering (fix the destination, then run create, which changes the destination to re-test it, or recreate it)"
        );
    }
    for field in ["messages", "events", "changes"] {
        let _ = writeln!(
            out,
            "  {field:<12} {}",
            describe_selection(&selection(live.get(field)))
        );
    }
    let c = coverage(live);
    if c.missing.is_empty() {
        let _ = writeln!(
            out,
            "nothing missing: every type the rules read is subscribed"
        );
    } else {
        let _ = writeln!(
            out,
            "missing ({}; run `payrules subscription create` to add them):",
            c.missing.len()
        );
        for m in &c.missing {
            let _ = writeln!(out, "  {m}");
        }
    }
    if !c.extra.is_empty() {
        let _ = writeln!(
            out,
            "extra (information; payrules does not read these, they only cost deliveries):"
        );
        for x in &c.extra {
            let _ = writeln!(out, "  {x}");
        }
    }
    out
}
