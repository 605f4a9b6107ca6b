//! Error classification: what an SQS error means (retry soon, retry late, receipt gone, refused)
//! and how long to wait.

use crate::retry::Backoff;
use aws_sdk_sqs::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use std::time::Duration;

/// Receive retries after transient trouble: 1 s doubling to 30 s.
pub(super) const TRANSIENT_BACKOFF: Backoff =
    Backoff::exponential(Duration::from_secs(1), Duration::from_secs(30));
/// Receive retries after a configuration problem: 5 s doubling to 2 min.
pub(super) const CONFIG_BACKOFF: Backoff =
    Backoff::exponential(Duration::from_secs(5), Duration::from_secs(120));

/// What an SQS error means for the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Network trouble, a timeout, throttling, a 5xx: retry soon, with backoff.
    Transient,
    /// Configuration or permissions: unknown queue, access denied, bad credentials, KMS key
    /// unusable. Retrying helps only once someone fixes it.
    Config,
    /// The receipt handle no longer names an in-flight message (its visibility ran out, or it
    /// was deleted).
    ReceiptGone,
    /// The request was refused for another reason (an invalid parameter, say).
    Rejected,
}

impl ErrorClass {
    /// Classifies an SQS error code and HTTP status.
    pub fn of(code: Option<&str>, status: Option<u16>) -> Self {
        match code {
            Some(
                "QueueDoesNotExist"
                | "AWS.SimpleQueueService.NonExistentQueue"
                | "AccessDenied"
                | "AccessDeniedException"
                | "InvalidClientTokenId"
                | "SignatureDoesNotMatch"
                | "UnrecognizedClientException"
                | "MissingAuthenticationToken"
                | "IncompleteSignature"
                | "InvalidSecurity"
                | "InvalidAddress"
                | "KmsAccessDenied"
                | "KmsDisabled"
                | "KmsNotFound"
                | "KmsInvalidState"
                | "KmsInvalidKeyUsage"
                | "KmsOptInRequired",
            ) => Self::Config,
            Some(
                "ReceiptHandleIsInvalid"
                | "MessageNotInflight"
                | "AWS.SimpleQueueService.MessageNotInflight",
            ) => Self::ReceiptGone,
            Some(
                "RequestThrottled"
                | "ThrottlingException"
                | "Throttling"
                | "OverLimit"
                | "KmsThrottled"
                | "ServiceUnavailable"
                | "InternalError"
                | "InternalFailure"
                | "RequestTimeout"
                | "RequestExpired"
                | "ExpiredToken",
            ) => Self::Transient,
            _ => match status {
                Some(s) if s == 429 || s >= 500 => Self::Transient,
                Some(_) => Self::Rejected,
                // No answer at all: the request never got through.
                None => Self::Transient,
            },
        }
    }

    /// Classifies an SDK error.
    pub fn of_sdk<E: ProvideErrorMetadata>(err: &SdkError<E>) -> Self {
        match err {
            SdkError::ConstructionFailure(_) => Self::Config,
            SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) => Self::Transient,
            SdkError::ResponseError(_) | SdkError::ServiceError(_) => {
                Self::of(err.code(), err.raw_response().map(|r| r.status().as_u16()))
            }
            _ => Self::Transient,
        }
    }

    /// The pause before attempt `failures + 1`: short for transient trouble, long otherwise.
    pub(super) fn backoff(self, failures: u32) -> Duration {
        match self {
            Self::Transient => TRANSIENT_BACKOFF,
            _ => CONFIG_BACKOFF,
        }
        .delay(failures)
    }
}

/// An SDK error as one line: the chain of causes, which is where the useful part is.
pub(super) fn describe<E: std::error::Error + 'static>(err: &SdkError<E>) -> String {
    DisplayErrorContext(err).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_classified_by_code_then_status() {
        assert_eq!(
            ErrorClass::of(Some("QueueDoesNotExist"), Some(400)),
            ErrorClass::Config
        );
        assert_eq!(
            ErrorClass::of(Some("AccessDenied"), Some(403)),
            ErrorClass::Config
        );
        assert_eq!(
            ErrorClass::of(Some("RequestThrottled"), Some(403)),
            ErrorClass::Transient
        );
        assert_eq!(
            ErrorClass::of(Some("ReceiptHandleIsInvalid"), Some(400)),
            ErrorClass::ReceiptGone
        );
        assert_eq!(
            ErrorClass::of(Some("InvalidParameterValue"), Some(400)),
            ErrorClass::Rejected
        );
        assert_eq!(ErrorClass::of(None, Some(503)), ErrorClass::Transient);
        assert_eq!(ErrorClass::of(None, Some(429)), ErrorClass::Transient);
        assert_eq!(ErrorClass::of(None, None), ErrorClass::Transient);
    }

    #[test]
    fn backoff_grows_and_is_longer_for_configuration_errors() {
        let t = ErrorClass::Transient;
        assert_eq!(t.backoff(1), Duration::from_secs(1));
        assert_eq!(t.backoff(3), Duration::from_secs(4));
        assert_eq!(t.backoff(50), Duration::from_secs(30));
        let c = ErrorClass::Config;
        assert_eq!(c.backoff(1), Duration::from_secs(5));
        assert_eq!(c.backoff(50), Duration::from_secs(120));
    }
}
