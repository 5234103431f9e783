//! Counts every attempt the SDK makes, retries included: `ecs_operator_aws_requests_total`
//! sees one call however often the SDK retried it inside, so throttling the SDK
//! absorbed would not show anywhere else.

use std::sync::Arc;

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::FinalizerInterceptorContextRef;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;

use crate::telemetry::Metrics;

/// The SDK interceptor behind `ecs_operator_aws_attempts_total{kind,operation,outcome}`.
#[derive(Debug)]
pub struct AttemptCounter {
    metrics: Arc<Metrics>,
}

impl AttemptCounter {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        AttemptCounter { metrics }
    }
}

impl Intercept for AttemptCounter {
    fn name(&self) -> &'static str {
        "AttemptCounter"
    }

    fn read_after_attempt(
        &self,
        context: &FinalizerInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let operation = cfg
            .load::<Metadata>()
            .map(Metadata::name)
            .unwrap_or("unknown");
        let outcome = match context.response() {
            None => "transport".to_string(),
            Some(r) => outcome(r.status().as_u16(), r.body().bytes()),
        };
        self.metrics
            .aws_attempt(super::acting_for(), operation, &outcome);
        Ok(())
    }
}

/// `success`, the AWS error code of a JSON error body (`ThrottlingException`), or
/// `HTTP <status>` when the body names none (an HTML 500 from a proxy).
pub fn outcome(status: u16, body: Option<&[u8]>) -> String {
    if (200..300).contains(&status) {
        return "success".to_string();
    }
    let code = body
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(b).ok())
        .and_then(|v| {
            let raw = v
                .get("__type")
                .or_else(|| v.get("code"))?
                .as_str()?
                .to_string();
            // "com.amazonaws.ecs#ThrottlingException" / "Throttling:http://..." -> the code.
            let code = raw.rsplit('#').next()?.split(':').next()?.to_string();
            (!code.is_empty()).then_some(code)
        });
    code.unwrap_or_else(|| format!("HTTP {status}"))
}

#[cfg(test)]
mod tests {
    use super::outcome;

    #[test]
    fn attempts_are_labelled_by_the_code_ecs_sent() {
        assert_eq!(outcome(200, Some(b"{}")), "success");
        let throttled = br#"{"__type":"ThrottlingException","message":"Rate exceeded"}"#;
        assert_eq!(outcome(400, Some(throttled)), "ThrottlingException");
        let qualified = br#"{"__type":"com.amazonaws.ecs#ServerException"}"#;
        assert_eq!(outcome(500, Some(qualified)), "ServerException");
        assert_eq!(outcome(502, Some(b"<html>bad gateway</html>")), "HTTP 502");
        assert_eq!(outcome(500, None), "HTTP 500");
    }
}
