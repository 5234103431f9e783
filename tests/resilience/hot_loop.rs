//! The hot-loop guard: an ECS endpoint that answers every request with an HTML 500
//! (a load balancer in front of nothing) and one resource of each kind that calls
//! ECS. Over 5 minutes each costs no more than the documented backoff allows.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{TestContext, sum_metric};

/// Answers every request with `500 Internal Server Error` and an HTML body; counts them.
async fn html_500_endpoint() -> (String, Arc<AtomicU64>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let served = Arc::new(AtomicU64::new(0));
    let count = served.clone();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let count = count.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                // One request per connection: read what arrived, answer, close.
                if conn.read(&mut buf).await.unwrap_or(0) == 0 {
                    return;
                }
                count.fetch_add(1, Ordering::Relaxed);
                let body = "<html><body><h1>500 Internal Server Error</h1></body></html>";
                let answer = format!(
                    "HTTP/1.1 500 Internal Server Error\r\nContent-Type: text/html\r\n\
                     Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = conn.write_all(answer.as_bytes()).await;
            });
        }
    });
    (url, served)
}

/// The failing passes the documented schedule allows in `window`: the first at
/// once, then after 2 s, doubling (README, "Troubleshooting": retried with backoff
/// from 2 s to 5 min).
fn passes_allowed(window: Duration) -> u64 {
    let (mut at, mut wait, mut passes) = (0u64, 2u64, 0u64);
    while at <= window.as_secs() {
        passes += 1;
        at += wait;
        wait = (wait * 2).min(300);
    }
    passes
}

#[tokio::test]
async fn a_resource_whose_ecs_calls_keep_failing_costs_no_more_than_its_backoff() {
    let ctx = TestContext::new("hot-loop").await;
    let (url, served) = html_500_endpoint().await;
    let op = ctx
        .start_operator_env(&[], &[("AWS_ENDPOINT_URL", &url)])
        .await;
    let p = &ctx.prefix;
    ctx.apply(&format!(
        "apiVersion: ecs.operator.dev/v1alpha1
kind: EcsCluster
metadata: {{name: {p}-c}}
spec: {{}}
---
apiVersion: ecs.operator.dev/v1alpha1
kind: EcsTaskDefinition
metadata: {{name: {p}-td}}
spec:
  containerDefinitions:
    - {{name: app, image: busybox:1, memory: 64}}
---
apiVersion: ecs.operator.dev/v1alpha1
kind: EcsService
metadata: {{name: {p}-s}}
spec:
  cluster: {p}-elsewhere
  taskDefinition: {p}-other:1
  desiredCount: 1
---
apiVersion: ecs.operator.dev/v1alpha1
kind: EcsTask
metadata: {{name: {p}-t}}
spec:
  cluster: {p}-elsewhere
  taskDefinition: {p}-other:1
---
apiVersion: ecs.operator.dev/v1alpha1
kind: EcsCapacityProvider
metadata: {{name: {p}-cp}}
spec:
  autoScalingGroupName: {p}-asg
"
    ))
    .await;
    let window = Duration::from_secs(300);
    tokio::time::sleep(window).await;
    let metrics = op.metrics().await;
    let allowed = passes_allowed(window);
    let mut report = Vec::new();
    for kind in [
        "EcsCluster",
        "EcsTaskDefinition",
        "EcsService",
        "EcsTask",
        "EcsCapacityProvider",
    ] {
        let needle = format!("kind=\"{kind}\"");
        let passes = sum_metric(&metrics, "ecs_operator_reconcile_total", |l| {
            l.contains(&needle)
        });
        let calls = sum_metric(&metrics, "ecs_operator_aws_requests_total", |l| {
            l.contains(&needle)
        });
        let attempts = sum_metric(&metrics, "ecs_operator_aws_attempts_total", |l| {
            l.contains(&needle)
        });
        report.push(format!(
            "{kind}: {passes} passes, {calls} calls, {attempts} attempts"
        ));
        assert!(passes >= 3, "{kind} kept trying: {passes} passes");
        // One pass more than the schedule: the finalizer's own pass before the first failure.
        assert!(
            passes <= allowed + 1,
            "{kind}: {passes} passes in 5 min, the backoff allows {allowed}"
        );
        // A failing pass stops at its first failed call; the SDK tries each call 3 times.
        assert!(
            calls <= passes * 2,
            "{kind}: {calls} calls in {passes} passes"
        );
        assert!(
            attempts <= calls * 3,
            "{kind}: {attempts} attempts for {calls} calls"
        );
    }
    eprintln!(
        "hot-loop guard: {} requests to the HTML-500 endpoint in 5 min, {allowed} passes allowed per resource; {}",
        served.load(Ordering::Relaxed),
        report.join("; ")
    );
    op.stop().await;
}
