//! The operator's one error type, classified so the reconcile driver can decide
//! between "retry with backoff" and "report and wait for a spec change".

use crate::api::common::Reason;

/// Whether trying the same thing again later can succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Throttling, 5xx, timeouts, conflicts: retry with backoff.
    Retryable,
    /// The request itself is wrong (validation, permissions, not found):
    /// retrying unchanged input fails the same way.
    Terminal,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),

    /// An ECS call failed. `code` is the AWS error code when ECS sent one.
    #[error("ECS {operation} failed: {message}")]
    Ecs {
        operation: &'static str,
        code: Option<String>,
        message: String,
        class: ErrorClass,
    },

    /// Deletion cannot finish yet (e.g. the cluster still has services); the
    /// finalizer stays and the reconcile is retried.
    #[error("{message}")]
    DeleteBlocked { reason: Reason, message: String },

    /// Deletion is under way in ECS (e.g. a service draining); the finalizer
    /// stays and the resource is checked again soon. Not a failure.
    #[error("{message}")]
    DeleteInProgress { reason: Reason, message: String },

    #[error("cannot serialize {what}: {message}")]
    Serialization { what: &'static str, message: String },

    /// The spec asks for something that cannot be sent to ECS as written (admission
    /// rules let it through). Waits for a spec change.
    #[error("invalid spec: {0}")]
    InvalidSpec(String),

    /// An invariant of the operator itself broke (e.g. an object without a uid).
    #[error("internal error: {0}")]
    Internal(String),

    /// The process cannot start or go on: flags, signals, leader election.
    #[error("{0}")]
    Startup(String),
}

impl Error {
    pub fn class(&self) -> ErrorClass {
        match self {
            Error::Kube(e) => classify_kube(e),
            Error::Ecs { class, .. } => *class,
            Error::DeleteBlocked { .. } | Error::DeleteInProgress { .. } => ErrorClass::Retryable,
            Error::Serialization { .. }
            | Error::InvalidSpec(_)
            | Error::Internal(_)
            | Error::Startup(_) => ErrorClass::Terminal,
        }
    }

    pub fn is_retryable(&self) -> bool {
        self.class() == ErrorClass::Retryable
    }

    /// The condition reason for this error.
    pub fn reason(&self) -> Reason {
        match self {
            Error::Ecs {
                class: ErrorClass::Terminal,
                ..
            } => Reason::EcsRejected,
            Error::Ecs { code: Some(c), .. } if c.contains("Throttl") => Reason::Throttled,
            Error::Ecs { .. } => Reason::EcsUnavailable,
            Error::DeleteBlocked { reason, .. } | Error::DeleteInProgress { reason, .. } => {
                reason.clone()
            }
            Error::Kube(_) => Reason::KubernetesApiError,
            Error::Serialization { .. } | Error::Internal(_) | Error::Startup(_) => {
                Reason::InternalError
            }
            Error::InvalidSpec(_) => Reason::InvalidSpec,
        }
    }

    /// A short stable label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::Ecs { .. } => "ecs",
            Error::DeleteBlocked { .. } => "blocked",
            Error::DeleteInProgress { .. } => "deleting",
            Error::Serialization { .. } => "serialization",
            Error::InvalidSpec(_) => "invalid_spec",
            Error::Internal(_) => "internal",
            Error::Startup(_) => "startup",
        }
    }
}

fn classify_kube(e: &kube::Error) -> ErrorClass {
    match e {
        kube::Error::Api(status) => match status.code {
            // Conflict (stale resourceVersion), rate limiting and server-side trouble pass.
            409 | 429 | 500..=599 => ErrorClass::Retryable,
            _ => ErrorClass::Terminal,
        },
        // Transport-level problems (connection reset, TLS handshake, timeouts).
        kube::Error::HyperError(_) | kube::Error::Service(_) => ErrorClass::Retryable,
        _ => ErrorClass::Terminal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api_error(code: u16) -> kube::Error {
        kube::Error::Api(
            kube::core::Status::failure("x", "Reason")
                .with_code(code)
                .boxed(),
        )
    }

    #[test]
    fn kube_errors_are_classified_by_status_code() {
        for code in [409, 429, 500, 503] {
            assert_eq!(
                Error::Kube(api_error(code)).class(),
                ErrorClass::Retryable,
                "{code}"
            );
        }
        for code in [400, 403, 404, 422] {
            assert_eq!(
                Error::Kube(api_error(code)).class(),
                ErrorClass::Terminal,
                "{code}"
            );
        }
    }

    #[test]
    fn spec_and_internal_errors_are_terminal_and_told_apart() {
        let spec = Error::InvalidSpec("bad".into());
        assert!(!spec.is_retryable());
        assert_eq!(spec.reason(), "InvalidSpec");
        let internal = Error::Internal("no uid".into());
        assert!(!internal.is_retryable());
        assert_eq!(internal.reason(), "InternalError");
        assert_ne!(spec.kind(), internal.kind());
    }
}
