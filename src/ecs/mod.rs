//! Thin adapter over aws-sdk-ecs: client construction and error classification.
//! Every ECS call the operator makes goes through here (later: batching,
//! rate limiting and call metrics).

pub mod alarms;
pub mod attempts;
pub mod capacity_provider;
pub mod cluster;
pub mod limiter;
pub mod reachability;
pub mod scaling;
pub mod service;
pub mod task;
pub mod task_definition;

use std::collections::BTreeMap;
use std::sync::Arc;

use aws_config::BehaviorVersion;
use aws_sdk_ecs::config::http::HttpResponse;
use aws_sdk_ecs::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

use aws_sdk_ecs::types::Tag;

use crate::api::common::CapacityProviderStrategyItem;
use crate::error::{Error, ErrorClass};
use crate::telemetry::Metrics;
pub use limiter::{Category, Limiter};

/// The one door to ECS: every call is rate-limited per quota category, counted in
/// `ecs_operator_aws_requests_total{kind,operation,outcome}` and classified on failure.
#[derive(Debug, Clone)]
pub struct EcsApi {
    pub client: aws_sdk_ecs::Client,
    /// EC2 Auto Scaling, for what EcsCapacityProvider reads of its group (same
    /// limiter and metrics as ECS).
    autoscaling: Option<aws_sdk_autoscaling::Client>,
    /// Application Auto Scaling, for EcsService.spec.autoScaling (same limiter and
    /// metrics; `scaling`).
    scaling: Option<aws_sdk_applicationautoscaling::Client>,
    /// CloudWatch, for the alarms step scaling policies are attached to (`cloudwatch`).
    cloudwatch: Option<aws_sdk_cloudwatch::Client>,
    limiter: Arc<Limiter>,
    metrics: Arc<Metrics>,
    /// Whether ECS answers (see `reachability`), shared by every clone.
    pub reach: Arc<reachability::Reachability>,
}

/// `client` (of the SDK crate `sdk`) with every attempt counted
/// (`ecs_operator_aws_attempts_total`).
macro_rules! counted {
    ($sdk:ident, $client:expr, $metrics:expr) => {
        $sdk::Client::from_conf(
            $client
                .config()
                .to_builder()
                .interceptor(attempts::AttemptCounter::new($metrics.clone()))
                .build(),
        )
    };
}

impl EcsApi {
    pub fn new(client: aws_sdk_ecs::Client, limiter: Limiter, metrics: Arc<Metrics>) -> Self {
        EcsApi {
            client: counted!(aws_sdk_ecs, client, metrics),
            autoscaling: None,
            scaling: None,
            cloudwatch: None,
            limiter: Arc::new(limiter),
            metrics,
            reach: Default::default(),
        }
    }

    /// While ECS does not answer, one ListClusters every `PROBE_EVERY`: the answer
    /// that ends the outage wakes what failed during it. Runs until the process ends.
    pub async fn probe_while_down(self) {
        loop {
            tokio::time::sleep(reachability::PROBE_EVERY).await;
            if self.reach.is_down() {
                let probe = self.client.list_clusters().max_results(1).send();
                let _ = self.call("ListClusters", Category::Read, probe).await;
            }
        }
    }

    pub fn with_autoscaling(mut self, client: aws_sdk_autoscaling::Client) -> Self {
        self.autoscaling = Some(counted!(aws_sdk_autoscaling, client, self.metrics));
        self
    }

    pub fn with_scaling(mut self, client: aws_sdk_applicationautoscaling::Client) -> Self {
        self.scaling = Some(counted!(
            aws_sdk_applicationautoscaling,
            client,
            self.metrics
        ));
        self
    }

    pub fn with_cloudwatch(mut self, client: aws_sdk_cloudwatch::Client) -> Self {
        self.cloudwatch = Some(counted!(aws_sdk_cloudwatch, client, self.metrics));
        self
    }

    /// The EC2 Auto Scaling client (`with_autoscaling`).
    pub fn autoscaling(&self) -> Result<&aws_sdk_autoscaling::Client, Error> {
        self.autoscaling
            .as_ref()
            .ok_or_else(|| Error::Internal("no EC2 Auto Scaling client configured".into()))
    }

    /// Runs one request (`send` is lazy: nothing goes out before the limiter allows it).
    pub async fn call<T, E>(
        &self,
        operation: &'static str,
        category: Category,
        send: impl std::future::Future<Output = Result<T, SdkError<E, HttpResponse>>>,
    ) -> Result<T, Error>
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        self.limiter.acquire(category).await;
        let kind = acting_for();
        match send.await {
            Ok(v) => {
                self.metrics.aws_request(kind, operation, "success");
                self.reach.saw(Ok(()));
                Ok(v)
            }
            Err(e) => {
                let err = sdk_error(operation, e);
                let outcome = match &err {
                    Error::Ecs { code: Some(c), .. } => c.clone(),
                    _ => "transport".to_string(),
                };
                self.metrics.aws_request(kind, operation, &outcome);
                self.reach.saw(Err(&err));
                tracing::debug!(operation, %err, "ECS request failed");
                Err(err)
            }
        }
    }
}

tokio::task_local! {
    /// The kind whose reconcile (or sweep) is making ECS calls, for the `kind` label.
    static KIND: &'static str;
}

/// Runs `work` with its ECS calls counted for `kind`: with one failing resource of
/// a kind, `ecs_operator_aws_requests_total{kind}` is what that resource costs.
pub async fn acting_as<F: std::future::Future>(kind: &'static str, work: F) -> F::Output {
    KIND.scope(kind, work).await
}

/// The kind set by `acting_as`; `operator` for the process's own calls (the
/// start-up probe).
pub fn acting_for() -> &'static str {
    KIND.try_with(|k| *k).unwrap_or("operator")
}

/// Tags as the SDK returns them, as a map.
pub fn tags_from_sdk(tags: &[Tag]) -> BTreeMap<String, String> {
    tags.iter()
        .filter_map(|t| Some((t.key()?.to_string(), t.value().unwrap_or("").to_string())))
        .collect()
}

/// A tag map in the SDK's shape.
pub fn tags_to_sdk(tags: &BTreeMap<String, String>) -> Vec<Tag> {
    tags.iter()
        .map(|(k, v)| Tag::builder().key(k).value(v).build())
        .collect()
}

/// A capacity provider strategy in the SDK's shape (ECS treats omitted weight and
/// base as 0).
pub fn strategy_to_sdk(
    items: &[CapacityProviderStrategyItem],
) -> Result<Vec<aws_sdk_ecs::types::CapacityProviderStrategyItem>, Error> {
    items
        .iter()
        .map(|i| {
            aws_sdk_ecs::types::CapacityProviderStrategyItem::builder()
                .capacity_provider(&i.capacity_provider)
                .weight(i.weight.unwrap_or(0))
                .base(i.base.unwrap_or(0))
                .build()
                .map_err(|e| Error::InvalidSpec(format!("capacity provider strategy: {e}")))
        })
        .collect()
}

/// A state ECS reports as an UPPER_CASE word: the ones the operator acts on, and any
/// other as ECS spells it (ECS adds states; none of them may break a read).
macro_rules! ecs_state {
    ($(#[$doc:meta])* $name:ident { $($variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub enum $name {
            $($variant,)+
            /// A state this operator does not act on, as ECS spelled it (empty: none).
            Other(String),
        }

        impl Default for $name {
            fn default() -> Self {
                $name::Other(String::new())
            }
        }

        impl $name {
            pub fn parse(text: &str) -> $name {
                match text {
                    $($text => $name::$variant,)+
                    other => $name::Other(other.to_string()),
                }
            }
            pub fn as_str(&self) -> &str {
                match self {
                    $($name::$variant => $text,)+
                    $name::Other(text) => text,
                }
            }
        }

        impl From<&str> for $name {
            fn from(text: &str) -> $name {
                $name::parse(text)
            }
        }
    };
}
pub(crate) use ecs_state;

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
                .set_tags(Some(tags_to_sdk(set)))
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
/// (env, profile, IRSA / EKS Pod Identity, IMDS). `AWS_ENDPOINT_URL` redirects
/// every client, `AWS_ENDPOINT_URL_ECS` / `AWS_ENDPOINT_URL_AUTO_SCALING` /
/// `AWS_ENDPOINT_URL_APPLICATION_AUTO_SCALING` / `AWS_ENDPOINT_URL_CLOUDWATCH` one
/// each, e.g. to a local emulator.
pub async fn load_sdk_config() -> aws_config::SdkConfig {
    aws_config::defaults(BehaviorVersion::latest()).load().await
}

pub fn client(sdk: &aws_config::SdkConfig) -> aws_sdk_ecs::Client {
    aws_sdk_ecs::Client::new(sdk)
}

pub fn autoscaling_client(sdk: &aws_config::SdkConfig) -> aws_sdk_autoscaling::Client {
    aws_sdk_autoscaling::Client::new(sdk)
}

pub fn scaling_client(sdk: &aws_config::SdkConfig) -> aws_sdk_applicationautoscaling::Client {
    aws_sdk_applicationautoscaling::Client::new(sdk)
}

pub fn cloudwatch_client(sdk: &aws_config::SdkConfig) -> aws_sdk_cloudwatch::Client {
    aws_sdk_cloudwatch::Client::new(sdk)
}

/// AWS error codes that say "try again later". `ThrottlingException` is not
/// in ECS's model, so it arrives as an unhandled error carrying only the code.
/// `ResourceInUseException` is not here: "the capacity provider is in use" stays
/// true until the spec or ECS changes, so it is reported, not retried quickly.
const RETRYABLE_CODES: &[&str] = &[
    "ThrottlingException",
    "Throttling",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "RequestTimeout",
    "RequestTimeoutException",
    // Another update to the same resource is in flight.
    "UpdateInProgressException",
    // Application Auto Scaling: another change to the same target is in flight, or
    // its own transient failure.
    "ConcurrentUpdateException",
    "InternalServiceException",
];

/// AWS error codes that say ECS itself is failing, not the request: retried, and
/// an outage for `reachability`.
pub(crate) const SERVER_FAULT_CODES: &[&str] = &[
    "ServerException",
    "ServiceUnavailable",
    "ServiceUnavailableException",
    "InternalFailure",
];

/// ClientException messages that are transient: RegisterTaskDefinition answers
/// "Too many concurrent attempts to create a new revision of the specified family."
/// while another registration of the family runs.
const RETRYABLE_CLIENT_MESSAGES: &[&str] = &["too many concurrent attempts"];

pub fn classify(code: Option<&str>, message: &str) -> ErrorClass {
    let lower = message.to_ascii_lowercase();
    match code {
        Some(c) if RETRYABLE_CODES.contains(&c) || SERVER_FAULT_CODES.contains(&c) => {
            ErrorClass::Retryable
        }
        Some("ClientException") if RETRYABLE_CLIENT_MESSAGES.iter().any(|m| lower.contains(m)) => {
            ErrorClass::Retryable
        }
        Some(_) => ErrorClass::Terminal,
        // No code: the request never got a modelled answer.
        None => ErrorClass::Retryable,
    }
}

/// ECS's way of saying "no such object": a `*NotFoundException` code, or one of
/// the messages ECS sends with a ClientException / InvalidParameterException for a
/// missing task definition or task. Any other ClientException is a real error.
pub fn is_not_found(err: &Error) -> bool {
    let Error::Ecs {
        code: Some(code),
        message,
        ..
    } = err
    else {
        return false;
    };
    if code.ends_with("NotFoundException") {
        return true;
    }
    let lower = message.to_ascii_lowercase();
    matches!(
        code.as_str(),
        "ClientException" | "InvalidParameterException"
    ) && [
        "unable to describe task definition",
        "does not exist",
        "not found",
    ]
    .iter()
    .any(|m| lower.contains(m))
}

const UNREACHABLE: &str = "cannot reach ECS";

/// The request never reached an ECS endpoint (connection refused, DNS, timeout).
pub fn is_unreachable(err: &Error) -> bool {
    matches!(err, Error::Ecs { code: None, message, .. } if message.starts_with(UNREACHABLE))
}

/// Longest text kept from an error: condition messages must stay short and the
/// same for the same cause, or each failure rewrites status.
const ERROR_TEXT_BYTES: usize = 300;

/// Converts an SDK error into the operator's error, keeping ECS's own message but
/// never the raw HTTP response (its headers change on every call).
pub fn sdk_error<E>(operation: &'static str, err: SdkError<E, HttpResponse>) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let (code, message, class) = match &err {
        SdkError::ServiceError(se) => {
            let e = se.err();
            let code = e.code().map(str::to_string);
            let status = se.raw().status().as_u16();
            let message = match (e.message(), &code) {
                (Some(m), _) => m.to_string(),
                (None, Some(c)) => c.clone(),
                (None, None) => format!("ECS answered HTTP {status} without an AWS error"),
            };
            let class = match code.as_deref() {
                None if status < 500 && status != 429 => ErrorClass::Terminal,
                c => classify(c, &message),
            };
            (code, message, class)
        }
        SdkError::ResponseError(re) => (
            None,
            format!(
                "ECS sent a response that could not be read (HTTP {})",
                re.raw().status().as_u16()
            ),
            ErrorClass::Retryable,
        ),
        SdkError::TimeoutError(_) => (
            None,
            "ECS did not answer in time".to_string(),
            ErrorClass::Retryable,
        ),
        SdkError::DispatchFailure(df) => {
            let why = if df.is_timeout() {
                "timed out"
            } else if df.is_io() {
                "connection failed"
            } else {
                "request could not be sent"
            };
            (None, format!("{UNREACHABLE}: {why}"), ErrorClass::Retryable)
        }
        SdkError::ConstructionFailure(_) => (
            None,
            format!("could not build the request: {}", DisplayErrorContext(&err)),
            ErrorClass::Terminal,
        ),
        _ => (
            None,
            "ECS request failed".to_string(),
            ErrorClass::Retryable,
        ),
    };
    Error::Ecs {
        operation,
        code,
        message: crate::reconcile::shorten(&message, ERROR_TEXT_BYTES),
        class,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An SDK config whose only working endpoint is `env_var`'s (the generic
    /// `AWS_ENDPOINT_URL` points nowhere), and the task that answers one request there
    /// with `body` and returns the request it got.
    async fn one_endpoint(
        env_var: &str,
        content_type: &'static str,
        body: &'static str,
    ) -> (
        aws_config::SdkConfig,
        tokio::task::JoinHandle<std::io::Result<String>>,
    ) {
        use aws_types::os_shim_internal::{Env, Fs};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let env = Env::from_slice(&[
            (env_var, url.as_str()),
            ("AWS_ENDPOINT_URL", "http://127.0.0.1:9"),
            ("AWS_REGION", "eu-west-1"),
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
        ]);
        let sdk = aws_config::defaults(BehaviorVersion::latest())
            .env(env)
            .fs(Fs::from_slice(&[]))
            .load()
            .await;
        let served = tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await?;
            let mut request = vec![0u8; 16 * 1024];
            let n = conn.read(&mut request).await?;
            let reply = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
                 Connection: close\r\n\r\n{body}",
                body.len()
            );
            conn.write_all(reply.as_bytes()).await?;
            Ok(String::from_utf8_lossy(&request[..n]).into_owned())
        });
        (sdk, served)
    }

    /// `AWS_ENDPOINT_URL_AUTO_SCALING` sends EC2 Auto Scaling calls to its own
    /// endpoint, ahead of the generic `AWS_ENDPOINT_URL`.
    #[tokio::test]
    async fn the_auto_scaling_endpoint_override_is_read() {
        let body = "<DescribeAutoScalingGroupsResponse><DescribeAutoScalingGroupsResult>\
                    <AutoScalingGroups/></DescribeAutoScalingGroupsResult>\
                    </DescribeAutoScalingGroupsResponse>";
        let (sdk, served) = one_endpoint("AWS_ENDPOINT_URL_AUTO_SCALING", "text/xml", body).await;
        let answer = autoscaling_client(&sdk)
            .describe_auto_scaling_groups()
            .auto_scaling_group_names("pool")
            .send()
            .await;
        let request = served.await.unwrap().unwrap();
        assert!(request.starts_with("POST / HTTP/1.1"), "{request}");
        assert!(answer.unwrap().auto_scaling_groups().is_empty());
    }

    /// `AWS_ENDPOINT_URL_APPLICATION_AUTO_SCALING` does the same for Application Auto
    /// Scaling.
    #[tokio::test]
    async fn the_application_auto_scaling_endpoint_override_is_read() {
        let (sdk, served) = one_endpoint(
            "AWS_ENDPOINT_URL_APPLICATION_AUTO_SCALING",
            "application/x-amz-json-1.1",
            r#"{"ScalableTargets":[]}"#,
        )
        .await;
        let answer = scaling_client(&sdk)
            .describe_scalable_targets()
            .service_namespace(aws_sdk_applicationautoscaling::types::ServiceNamespace::Ecs)
            .send()
            .await;
        let request = served.await.unwrap().unwrap();
        assert!(
            request.contains("AnyScaleFrontendService.DescribeScalableTargets"),
            "{request}"
        );
        assert!(answer.unwrap().scalable_targets().is_empty());
    }

    #[test]
    fn throttling_and_server_errors_retry() {
        for c in [
            "ThrottlingException",
            "ServerException",
            "RequestLimitExceeded",
        ] {
            assert_eq!(classify(Some(c), "x"), ErrorClass::Retryable, "{c}");
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
            assert_eq!(classify(Some(c), "bad input"), ErrorClass::Terminal, "{c}");
        }
    }

    #[test]
    fn missing_code_is_treated_as_transient() {
        assert_eq!(classify(None, ""), ErrorClass::Retryable);
    }

    #[test]
    fn a_capacity_provider_in_use_waits_for_a_change() {
        // PutClusterCapacityProviders: "The specified capacity provider is in use and
        // cannot be removed." stays true until a service moves off the provider.
        assert_eq!(
            classify(
                Some("ResourceInUseException"),
                "The specified capacity provider is in use and cannot be removed."
            ),
            ErrorClass::Terminal
        );
    }

    #[test]
    fn concurrent_revision_registration_is_retried() {
        let m = "Too many concurrent attempts to create a new revision of the specified family.";
        assert_eq!(classify(Some("ClientException"), m), ErrorClass::Retryable);
        assert_eq!(
            classify(
                Some("ClientException"),
                "Container.image should not be null"
            ),
            ErrorClass::Terminal
        );
    }

    fn ecs_error(code: &str, message: &str) -> Error {
        Error::Ecs {
            operation: "X",
            code: Some(code.into()),
            message: message.into(),
            class: ErrorClass::Terminal,
        }
    }

    #[test]
    fn only_real_not_found_answers_mean_gone() {
        assert!(is_not_found(&ecs_error(
            "ClusterNotFoundException",
            "Cluster not found."
        )));
        assert!(is_not_found(&ecs_error("ServiceNotFoundException", "")));
        assert!(is_not_found(&ecs_error(
            "ClientException",
            "Unable to describe task definition."
        )));
        assert!(!is_not_found(&ecs_error(
            "ClientException",
            "Too many concurrent attempts to create a new revision of the specified family."
        )));
        assert!(!is_not_found(&ecs_error(
            "ClientException",
            "User is not authorized to perform this action"
        )));
        assert!(!is_not_found(&ecs_error(
            "ThrottlingException",
            "Rate exceeded"
        )));
    }
}
