//! Destination builders: a Pub/Sub topic or SQS queue (URL, region, ARN, access policy) as
//! commercetools' destination JSON, and the Subscription draft.

use super::{PUBSUB_PUBLISHER, SQS_PRINCIPAL, events_json, messages_json};
use crate::redact::Secret;
use serde_json::{Value, json};

/// How commercetools authenticates to SQS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    /// commercetools' AWS user sends; the queue policy grants it `sqs:SendMessage`.
    Iam,
    /// An access key of yours (`--access-key`, secret in the environment).
    Credentials,
}

impl AuthMode {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Iam => "IAM",
            Self::Credentials => "Credentials",
        }
    }
}

/// The delivery format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FormatArg {
    /// commercetools' own format.
    Platform,
    /// CloudEvents 1.0.
    Cloudevents,
}

impl FormatArg {
    pub(crate) fn to_json(self) -> Value {
        match self {
            Self::Platform => json!({ "type": "Platform" }),
            Self::Cloudevents => json!({ "type": "CloudEvents", "cloudEventsVersion": "1.0" }),
        }
    }
}

/// A validated destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// `{"type":"GoogleCloudPubSub","projectId":P,"topic":T}`.
    PubSub {
        /// The Google Cloud project.
        project_id: String,
        /// The topic id.
        topic: String,
    },
    /// `{"type":"SQS","queueUrl":…,"region":…,"authenticationMode":…}`.
    Sqs {
        /// The queue URL.
        queue_url: String,
        /// Its region.
        region: String,
        /// IAM or Credentials.
        auth: AuthMode,
        /// Credentials mode: the access key id and secret.
        credentials: Option<(String, Secret)>,
    },
}

impl Destination {
    /// The Destination JSON; the access secret as `****` unless `with_secret`.
    pub fn to_json(&self, with_secret: bool) -> Value {
        match self {
            Self::PubSub { project_id, topic } => {
                json!({ "type": "GoogleCloudPubSub", "projectId": project_id, "topic": topic })
            }
            Self::Sqs {
                queue_url,
                region,
                auth,
                credentials,
            } => {
                let mut d = json!({
                    "type": "SQS",
                    "queueUrl": queue_url,
                    "region": region,
                    "authenticationMode": auth.as_str(),
                });
                if let Some((key, secret)) = credentials {
                    d["accessKey"] = json!(key);
                    d["accessSecret"] = json!(if with_secret { secret.expose() } else { "****" });
                }
                d
            }
        }
    }

    /// What the destination must allow before commercetools can deliver (the Subscription
    /// is only created once a test notification got through).
    pub fn grant(&self) -> String {
        match self {
            Self::PubSub { project_id, topic } => format!(
                "commercetools publishes as {PUBSUB_PUBLISHER}: grant it roles/pubsub.publisher on the topic\n  \
                 gcloud pubsub topics add-iam-policy-binding {topic} --project={project_id} \
                 --member=serviceAccount:{PUBSUB_PUBLISHER} --role=roles/pubsub.publisher"
            ),
            Self::Sqs {
                queue_url,
                region,
                auth: AuthMode::Iam,
                ..
            } => {
                let arn = sqs_queue_arn(queue_url, region)
                    .unwrap_or_else(|_| "arn:aws:sqs:REGION:ACCOUNT:QUEUE".into());
                let policy = sqs_policy(&arn);
                let pretty = serde_json::from_str::<Value>(&policy)
                    .and_then(|v| serde_json::to_string_pretty(&v))
                    .unwrap_or_else(|_| policy.clone());
                let attributes = json!({ "Policy": policy }).to_string();
                format!(
                    "commercetools sends as {SQS_PRINCIPAL}: the queue policy must allow it sqs:SendMessage on {arn}:\n\
                     {pretty}\n  aws sqs set-queue-attributes --queue-url {queue_url} --attributes '{attributes}'\n\
                     (that replaces the queue's policy: add the statement to an existing one instead)"
                )
            }
            Self::Sqs {
                queue_url,
                region,
                credentials,
                ..
            } => {
                let arn = sqs_queue_arn(queue_url, region)
                    .unwrap_or_else(|_| "arn:aws:sqs:REGION:ACCOUNT:QUEUE".into());
                let key = credentials.as_ref().map_or("", |(k, _)| k.as_str());
                format!("the IAM user of access key {key} needs sqs:SendMessage on {arn}")
            }
        }
    }

    pub(crate) fn describe(&self) -> String {
        describe_destination(&self.to_json(false))
    }
}

/// How a destination JSON reads in `show` and in a change line.
pub(crate) fn describe_destination(d: &Value) -> String {
    let s = |k: &str| d[k].as_str().unwrap_or("?").to_string();
    match d["type"].as_str() {
        Some("GoogleCloudPubSub") => format!(
            "GoogleCloudPubSub projects/{}/topics/{}",
            s("projectId"),
            s("topic")
        ),
        Some("SQS") => format!(
            "SQS {} (region {}, authentication {})",
            s("queueUrl"),
            s("region"),
            d["authenticationMode"].as_str().unwrap_or("Credentials")
        ),
        Some(other) => other.to_string(),
        None => "(none)".into(),
    }
}

/// `projects/P/topics/T` → (P, T).
///
/// # Errors
/// What is wrong with it.
pub fn parse_topic(name: &str) -> Result<(String, String), String> {
    let parts: Vec<&str> = name.trim().split('/').collect();
    match parts.as_slice() {
        ["projects", p, "topics", t] if !p.is_empty() && !t.is_empty() => {
            Ok((p.to_string(), t.to_string()))
        }
        _ => Err(format!(
            "--topic {name:?} is not of the form projects/PROJECT/topics/TOPIC"
        )),
    }
}

/// (host, account, queue) of an SQS queue URL `http(s)://HOST/ACCOUNT/QUEUE`.
pub(crate) fn split_queue_url(url: &str) -> Result<(String, String, String), String> {
    let bad = || {
        format!(
            "--queue-url {url:?} is not of the form https://sqs.REGION.amazonaws.com/ACCOUNT/QUEUE"
        )
    };
    let parsed = reqwest::Url::parse(url).map_err(|_| bad())?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(bad());
    }
    let host = parsed.host_str().ok_or_else(bad)?.to_string();
    let segments: Vec<&str> = parsed
        .path()
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    match segments.as_slice() {
        [account, queue] => {
            if queue.ends_with(".fifo") {
                return Err(format!(
                    "--queue-url {url:?} is a FIFO queue; commercetools delivers to standard queues only"
                ));
            }
            Ok((host, account.to_string(), queue.to_string()))
        }
        _ => Err(bad()),
    }
}

pub(crate) fn is_region(r: &str) -> bool {
    !r.is_empty()
        && r.split('-').count() >= 3
        && r.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// The region of `https://sqs.REGION.amazonaws.com/…` or `https://REGION.queue.amazonaws.com/…`.
pub fn region_from_queue_url(url: &str) -> Option<String> {
    let (host, _, _) = split_queue_url(url).ok()?;
    let labels: Vec<&str> = host.split('.').collect();
    let region = match labels.as_slice() {
        ["sqs", region, "amazonaws", ..] => *region,
        [region, "queue", "amazonaws", ..] => *region,
        _ => return None,
    };
    is_region(region).then(|| region.to_string())
}

/// `arn:aws:sqs:REGION:ACCOUNT:QUEUE` for a queue URL.
///
/// # Errors
/// The URL is not a queue URL.
pub fn sqs_queue_arn(queue_url: &str, region: &str) -> Result<String, String> {
    let (host, account, queue) = split_queue_url(queue_url)?;
    let partition = if host.ends_with(".amazonaws.com.cn") {
        "aws-cn"
    } else {
        "aws"
    };
    Ok(format!("arn:{partition}:sqs:{region}:{account}:{queue}"))
}

/// The queue policy that lets commercetools send to the queue (IAM mode), compact JSON.
pub fn sqs_policy(queue_arn: &str) -> String {
    json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Sid": "commercetools-subscriptions",
            "Effect": "Allow",
            "Principal": { "AWS": SQS_PRINCIPAL },
            "Action": "sqs:SendMessage",
            "Resource": queue_arn,
        }],
    })
    .to_string()
}

/// What `create` wants the Subscription to be.
#[derive(Debug, Clone)]
pub struct Draft {
    /// The key.
    pub key: String,
    /// The destination.
    pub destination: Destination,
    /// The delivery format.
    pub format: FormatArg,
}

impl Draft {
    /// The SubscriptionDraft JSON; the access secret as `****` unless `with_secret`.
    pub fn to_json(&self, with_secret: bool) -> Value {
        json!({
            "key": self.key,
            "destination": self.destination.to_json(with_secret),
            "messages": messages_json(),
            "events": events_json(),
            "format": self.format.to_json(),
        })
    }
}
