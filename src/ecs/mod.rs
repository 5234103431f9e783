//! Thin adapter over aws-sdk-ecs: client construction and error classification.
//! Every ECS call the operator makes goes through here (later: batching,
//! rate limiting and call metrics).

pub mod cluster;
pub mod limiter;
pub mod service;
pub mod task;
pub mod task_definition;

use std::sync::Arc;

use aws_config::BehaviorVersion;
use aws_sdk_ecs::error::{ProvideErrorMetadata, SdkError};

use crate::error::{Error, ErrorClass};
use crate::telemetry::Metrics;
pub use limiter::{Category, Limiter};

/// The one door to ECS: every call is rate-limited per quota category, counted in
/// `ecs_operator_aws_requests_total{operation,outcome}` and classified on failure.
#[derive(Debug, Clone)]
pub struct EcsApi {
    pub client: aws_sdk_ecs::Client,
    limiter: Arc<Limiter>,
    metrics: Arc<Metrics>,
}

impl EcsApi {
    pub fn new(client: aws_sdk_ecs::Client, limiter: Limiter, metrics: Arc<Metrics>) -> Self {
        EcsApi {
            client,
            limiter: Arc::new(limiter),
            metrics,
        }
    }

    /// Runs one request (`send` is lazy: nothing goes out before the limiter allows it).
    pub async fn call<T, E, R>(
        &self,
        operation: &'static str,
        category: Category,
        send: impl std::future::Future<Output = Result<T, SdkError<E, R>>>,
    ) -> Result<T, Error>
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
        R: std::fmt::Debug,
    {
        self.limiter.acquire(category).await;
        match send.await {
            Ok(v) => {
                self.metrics.aws_request(operation, "success");
                Ok(v)
            }
            Err(e) => {
                let err = sdk_error(operation, e);
                let outcome = match &err {
                    Error::Ecs { code: Some(c), .. } => c.clone(),
                    _ => "transport".to_string(),
                };
                self.metrics.aws_request(operation, &outcome);
                tracing::debug!(operation, %err, "ECS request failed");
                Err(err)
            }
        }
    }
}

/// Sets `set` and removes `remove` on an ECS resource (TagResource / UntagResource,
/// each only when there is something to do).
pub async fn set_tags(
    ecs: &EcsApi,
    arn: &str,
    set: &std::collections::BTreeMap<String, String>,
    remove: &[String],
) -> Result<(), Error> {
    if !set.is_empty() {
        ecs.call(
            "TagResource",
            Category::Tagging,
            ecs.client
                .tag_resource()
                .resource_arn(arn)
                .set_tags(Some(cluster::tags_to_sdk(set)))
                .send(),
        )
        .await?;
    }
    if !remove.is_empty() {
        ecs.call(
            "UntagResource",
            Category::Tagging,
            ecs.client
                .untag_resource()
                .resource_arn(arn)
                .set_tag_keys(Some(remove.to_vec()))
                .send(),
        )
        .await?;
    }
    Ok(())
}

/// An ECS timestamp as RFC 3339 text, for status.
pub(crate) fn rfc3339(t: Option<&aws_sdk_ecs::primitives::DateTime>) -> Option<String> {
    t.and_then(|t| {
        t.fmt(aws_sdk_ecs::primitives::DateTimeFormat::DateTime)
            .ok()
    })
}

/// Loads region, credentials and endpoint through the standard AWS chain
/// (env, profile, IRSA / EKS Pod Identity, IMDS). `AWS_ENDPOINT_URL` or
/// `AWS_ENDPOINT_URL_ECS` redirect calls, e.g. to a local ECS emulator.
pub async fn load_sdk_config() -> aws_config::SdkConfig {
    aws_config::defaults(BehaviorVersion::latest()).load().await
}

pub fn client(sdk: &aws_config::SdkConfig) -> aws_sdk_ecs::Client {
    aws_sdk_ecs::Client::new(sdk)
}

/// AWS error codes that say "try again later". `ThrottlingException` is not
/// in ECS's model, so it arrives as an unhandled error carrying only the code.
const RETRYABLE_CODES: &[&str] = &[
    "ThrottlingException",
    "Throttling",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "ServerException",
    "ServiceUnavailable",
    "ServiceUnavailableException",
    "InternalFailure",
    "RequestTimeout",
    "RequestTimeoutException",
    // Another update to the same resource is in flight.
    "UpdateInProgressException",
    "ResourceInUseException",
];

pub fn classify_code(code: Option<&str>) -> ErrorClass {
    match code {
        Some(c) if RETRYABLE_CODES.contains(&c) => ErrorClass::Retryable,
        Some(_) => ErrorClass::Terminal,
        // No code: the request never got a modelled answer.
        None => ErrorClass::Retryable,
    }
}

/// Converts an SDK error into the operator's error, keeping ECS's own message.
pub fn sdk_error<E, R>(operation: &'static str, err: SdkError<E, R>) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    let (code, message, class) = match &err {
        SdkError::ServiceError(se) => {
            let e = se.err();
            let code = e.code().map(str::to_string);
            let message = e
                .message()
                .map(str::to_string)
                .unwrap_or_else(|| code.clone().unwrap_or_else(|| e.to_string()));
            let class = classify_code(code.as_deref());
            (code, message, class)
        }
        SdkError::ConstructionFailure(_) => (
            None,
            format!("could not build the request: {err:?}"),
            ErrorClass::Terminal,
        ),
        // Timeouts, dispatch failures (connection refused, DNS) and unparsable
        // responses are transient from where we stand.
        _ => (
            None,
            aws_sdk_ecs::error::DisplayErrorContext(&err).to_string(),
            ErrorClass::Retryable,
        ),
    };
    Error::Ecs {
        operation,
        code,
        message,
        class,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttling_and_server_errors_retry() {
        for c in [
            "ThrottlingException",
            "ServerException",
            "RequestLimitExceeded",
        ] {
            assert_eq!(classify_code(Some(c)), ErrorClass::Retryable, "{c}");
        }
    }

    #[test]
    fn client_mistakes_are_terminal() {
        for c in [
            "ClientException",
            "InvalidParameterException",
            "AccessDeniedException",
            "ClusterNotFoundException",
        ] {
            assert_eq!(classify_code(Some(c)), ErrorClass::Terminal, "{c}");
        }
    }

    #[test]
    fn missing_code_is_treated_as_transient() {
        assert_eq!(classify_code(None), ErrorClass::Retryable);
    }
}
