//! Logging (tracing) set-up; metrics and health endpoints join later.

use tracing_subscriber::{EnvFilter, fmt, prelude::*};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log pipelines.
    Json,
}

/// Installs the global subscriber. Level comes from `RUST_LOG` (default `info`).
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(filter);
    let result = match format {
        LogFormat::Text => registry
            .with(
                fmt::layer()
                    .with_target(false)
                    .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout())),
            )
            .try_init(),
        LogFormat::Json => registry
            .with(fmt::layer().json().flatten_event(true))
            .try_init(),
    };
    if let Err(e) = result {
        eprintln!("logging was already initialised: {e}");
    }
}

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReconcileLabels {
    pub kind: String,
    /// `success`, or the error kind (`ecs`, `kube`, `blocked`, ...).
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AwsLabels {
    /// The kind whose reconcile made the call (`operator`: the process's own).
    pub kind: String,
    pub operation: String,
    /// `success`, or the AWS error code (`ThrottlingException`, ...), or `transport`.
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResourceLabels {
    pub kind: String,
    pub ready: String,
}

type HistogramFamily = Family<KindLabels, Histogram, fn() -> Histogram>;

fn reconcile_histogram() -> Histogram {
    // 5ms .. ~40s
    Histogram::new(exponential_buckets(0.005, 2.0, 14))
}

/// The operator's Prometheus metrics.
pub struct Metrics {
    registry: Registry,
    pub reconcile_total: Family<ReconcileLabels, Counter>,
    pub reconcile_duration: HistogramFamily,
    pub aws_requests_total: Family<AwsLabels, Counter>,
    /// Every attempt the SDK made, retries included (see `ecs::attempts`).
    pub aws_attempts_total: Family<AwsLabels, Counter>,
    resources: Family<ResourceLabels, Gauge>,
    /// Resync sweeps of EcsServices, and the services they found changed in ECS.
    pub sweeps_total: Counter,
    pub sweep_changed_total: Counter,
    /// Ready state per object, so the resources gauge counts each object once.
    readiness: Mutex<HashMap<(String, String), bool>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("ecs_operator");
        let reconcile_total = Family::<ReconcileLabels, Counter>::default();
        let reconcile_duration: HistogramFamily =
            Family::new_with_constructor(reconcile_histogram as fn() -> Histogram);
        let aws_requests_total = Family::<AwsLabels, Counter>::default();
        let aws_attempts_total = Family::<AwsLabels, Counter>::default();
        let resources = Family::<ResourceLabels, Gauge>::default();
        let sweeps_total = Counter::default();
        let sweep_changed_total = Counter::default();
        registry.register(
            "service_sweeps",
            "Resync sweeps of EcsServices (one batched read of all of them)",
            sweeps_total.clone(),
        );
        registry.register(
            "service_sweep_changed",
            "EcsServices a resync sweep found changed in ECS, and reconciled",
            sweep_changed_total.clone(),
        );
        registry.register(
            "reconcile",
            "Reconciles by kind and outcome",
            reconcile_total.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Time spent in one reconcile, by kind",
            reconcile_duration.clone(),
        );
        registry.register(
            "aws_requests",
            "ECS API requests by kind, operation and outcome",
            aws_requests_total.clone(),
        );
        registry.register(
            "aws_attempts",
            "ECS API attempts by kind, operation and outcome, the SDK's retries included \
             (a throttled attempt the SDK retried shows here, not in aws_requests)",
            aws_attempts_total.clone(),
        );
        registry.register(
            "resources",
            "Managed resources by kind and Ready status",
            resources.clone(),
        );
        Metrics {
            registry,
            reconcile_total,
            reconcile_duration,
            aws_requests_total,
            aws_attempts_total,
            resources,
            sweeps_total,
            sweep_changed_total,
            readiness: Mutex::new(HashMap::new()),
        }
    }
}

impl Metrics {
    pub fn aws_request(&self, kind: &str, operation: &str, outcome: &str) {
        Self::count(&self.aws_requests_total, kind, operation, outcome);
    }

    pub fn aws_attempt(&self, kind: &str, operation: &str, outcome: &str) {
        Self::count(&self.aws_attempts_total, kind, operation, outcome);
    }

    fn count(family: &Family<AwsLabels, Counter>, kind: &str, operation: &str, outcome: &str) {
        family
            .get_or_create(&AwsLabels {
                kind: kind.to_string(),
                operation: operation.to_string(),
                outcome: outcome.to_string(),
            })
            .inc();
    }

    pub fn reconciled(&self, kind: &str, outcome: &str, seconds: f64) {
        self.reconcile_total
            .get_or_create(&ReconcileLabels {
                kind: kind.to_string(),
                outcome: outcome.to_string(),
            })
            .inc();
        self.reconcile_duration
            .get_or_create(&KindLabels {
                kind: kind.to_string(),
            })
            .observe(seconds);
    }

    /// Records an object's Ready state (`None`: the object is gone).
    pub fn set_ready(&self, kind: &str, key: &str, ready: Option<bool>) {
        let mut map = self.readiness.lock().unwrap_or_else(|e| e.into_inner());
        let k = (kind.to_string(), key.to_string());
        match ready {
            Some(r) => {
                map.insert(k, r);
            }
            None => {
                map.remove(&k);
            }
        }
        for ready in [true, false] {
            let n = map
                .iter()
                .filter(|((kd, _), r)| kd == kind && **r == ready)
                .count();
            self.resources
                .get_or_create(&ResourceLabels {
                    kind: kind.to_string(),
                    ready: if ready { "True" } else { "False" }.to_string(),
                })
                .set(n as i64);
        }
    }

    /// Prometheus text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// Serves `/metrics`, `/healthz` (process alive) and `/readyz` (controllers running).
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::http::StatusCode;
    use axum::routing::get;
    let app = axum::Router::new()
        .route(
            "/metrics",
            get(move || {
                let m = metrics.clone();
                async move {
                    (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        m.encode(),
                    )
                }
            }),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(move || {
                let r = ready.clone();
                async move {
                    if r.load(Ordering::Relaxed) {
                        (StatusCode::OK, "ok")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "starting")
                    }
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "serving /metrics, /healthz, /readyz");
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_exposed_with_prefix_and_labels() {
        let m = Metrics::default();
        m.aws_request("EcsCluster", "DescribeClusters", "success");
        m.aws_request("EcsCluster", "CreateCluster", "ThrottlingException");
        m.aws_attempt("EcsCluster", "CreateCluster", "ThrottlingException");
        m.reconciled("EcsCluster", "success", 0.02);
        m.set_ready("EcsCluster", "ns/a", Some(true));
        m.set_ready("EcsCluster", "ns/b", Some(false));
        m.set_ready("EcsCluster", "ns/b", None);
        let text = m.encode();
        assert!(
            text.contains(
                r#"ecs_operator_aws_requests_total{kind="EcsCluster",operation="DescribeClusters",outcome="success"} 1"#
            ),
            "{text}"
        );
        assert!(text.contains(r#"outcome="ThrottlingException""#));
        assert!(text.contains(
            r#"ecs_operator_aws_attempts_total{kind="EcsCluster",operation="CreateCluster",outcome="ThrottlingException"} 1"#
        ));
        assert!(
            text.contains(r#"ecs_operator_reconcile_total{kind="EcsCluster",outcome="success"} 1"#)
        );
        assert!(text.contains("ecs_operator_reconcile_duration_seconds_bucket"));
        assert!(text.contains(r#"ecs_operator_resources{kind="EcsCluster",ready="True"} 1"#));
        assert!(text.contains(r#"ecs_operator_resources{kind="EcsCluster",ready="False"} 0"#));
    }
}
