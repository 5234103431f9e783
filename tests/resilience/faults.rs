//! ECS misbehaving between the operator and the strict layer (microburst): a mix of
//! throttling, 5xx, resets, truncated bodies and latency; the first answer of every
//! write lost after ECS acted; ECS unreachable for 60 s.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use ecs_operator::api::service::EcsService;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};
use testenv::faults::FaultProxy;

use crate::support::{Operator, TestContext, env, events_for, eventually, sum_metric};
use crate::workload::{Workload, ecs_calls};

/// A proxy in front of the strict layer and an operator that talks to ECS through it.
async fn operator_behind_proxy(
    ctx: &TestContext,
    seed: u64,
    args: &[&str],
) -> (FaultProxy, Operator) {
    let env = env();
    let proxy = FaultProxy::start(&env.run_dir, &env.ecs_endpoint, seed)
        .await
        .expect("start microburst");
    let op = ctx
        .start_operator_env(args, &[("AWS_ENDPOINT_URL", &proxy.url)])
        .await;
    (proxy, op)
}

/// Requests that reached the proxy (what ECS would count, retries included).
async fn proxied_requests(proxy: &FaultProxy) -> u64 {
    let stats = proxy.stats().await.expect("microburst stats");
    stats["requests"]["total"].as_u64().unwrap_or(0)
}

/// Attempts of the operator's SDK that ECS answered with `code`.
fn attempts_with(metrics: &str, code: &str) -> u64 {
    let needle = format!("outcome=\"{code}\"");
    sum_metric(metrics, "ecs_operator_aws_attempts_total", |l| {
        l.contains(&needle)
    })
}

/// Until at least `n` of the workload's EcsServices have an ECS service.
async fn created(ctx: &TestContext, n: usize, secs: u64) {
    let api = Api::<EcsService>::namespaced(ctx.kube.clone(), &ctx.namespace);
    eventually(secs, &format!("{n} services created"), || async {
        let all = api.list(&Default::default()).await.ok()?.items;
        let with_arn = all
            .iter()
            .filter(|s| s.status.as_ref().is_some_and(|st| st.arn.is_some()))
            .count();
        (with_arn >= n).then_some(())
    })
    .await;
}

/// The fault mix, on every ECS operation (the rules name no operation). Each request
/// meets the first rule whose draw fires: 20 % ThrottlingException, then 5 % HTTP 500
/// ServerException, 3 % connection reset before ECS sees it, 3 % answer truncated
/// after ECS acted, 30 % 100-300 ms of latency.
fn fault_mix() -> Value {
    json!([
        {"service": "ecs", "probability": 0.2,
         "error": {"code": "ThrottlingException", "status": 400, "message": "Rate exceeded"}},
        {"service": "ecs", "probability": 0.05,
         "error": {"code": "ServerException", "status": 500, "message": "Service Unavailable"}},
        {"service": "ecs", "probability": 0.03, "reset": true},
        {"service": "ecs", "probability": 0.03, "response": {"truncate_frac": 0.5}},
        {"service": "ecs", "probability": 0.3, "latency": {"min": 100, "max": 300}}
    ])
}

struct MixRun {
    /// Requests ECS saw (at the proxy), retries included.
    requests: u64,
    /// Calls the operator made (its own count: one per SDK call).
    calls: u64,
    /// Attempts answered ThrottlingException, as the operator's metrics show them.
    throttled: u64,
    faults: usize,
    audit: String,
}

/// 30 services applied at once; once 10 exist, a new task definition revision (a
/// rollout of every service) and 5 services deleted; then everything converges and
/// ECS is audited.
async fn mix_run(test: &str, seed: u64, rules: Option<Value>) -> MixRun {
    let ctx = TestContext::new(test).await;
    let (proxy, op) = operator_behind_proxy(&ctx, seed, &[]).await;
    if let Some(rules) = &rules {
        proxy.set_rules(rules).await.expect("set the fault rules");
    }
    let w = Workload::new(&ctx, 30, 3);
    ctx.apply(&w.all("busybox:1")).await;
    created(&ctx, 10, 180).await;
    ctx.apply(&w.base("busybox:2")).await;
    let (kept, gone) = w.services.split_at(25);
    w.delete_services(&ctx, gone).await;
    w.converged(&ctx, kept, 420).await;
    let audit = w.audit(&ctx, kept, 2).await;
    let metrics = op.metrics().await;
    let run = MixRun {
        requests: proxied_requests(&proxy).await,
        calls: ecs_calls(&metrics),
        throttled: attempts_with(&metrics, "ThrottlingException"),
        faults: proxy.fired().await.map(|f| f.len()).unwrap_or(0),
        audit,
    };
    op.stop().await;
    run
}

#[tokio::test]
async fn a_fault_mix_on_every_operation_converges_to_exactly_what_is_declared() {
    let seed = crate::seed("fault-mix");
    // The fault-free run beside it is the yardstick for the calls.
    let (clean, faulty) = tokio::join!(
        mix_run("mix-clean", seed, None),
        mix_run("mix-faulty", seed, Some(fault_mix()))
    );
    eprintln!(
        "fault-mix (seed {seed}): fault-free {} requests / {} calls; with faults {} requests / {} calls, {} faults fired, {} throttled attempts seen in metrics; {}",
        clean.requests,
        clean.calls,
        faulty.requests,
        faulty.calls,
        faulty.faults,
        faulty.throttled,
        faulty.audit
    );
    assert_eq!(clean.faults, 0, "the fault-free run met no fault");
    assert!(faulty.faults > 20, "faults fired: {}", faulty.faults);
    assert!(
        faulty.requests <= 2 * clean.requests,
        "no retry storm: {} requests with faults vs {} without",
        faulty.requests,
        clean.requests
    );
    assert!(
        faulty.throttled > 0,
        "throttling shows in ecs_operator_aws_attempts_total"
    );
}

/// The write operations whose first answer is lost.
const WRITES: [&str; 10] = [
    "CreateCluster",
    "RegisterTaskDefinition",
    "CreateService",
    "UpdateService",
    "DeleteService",
    "RunTask",
    "StopTask",
    "DeregisterTaskDefinition",
    "DeleteTaskDefinitions",
    "DeleteCluster",
];

/// The first answer of each write is cut after ECS acted on the request: the
/// operator (or its SDK) sees a broken connection and must not do it twice.
#[tokio::test]
async fn the_first_answer_of_every_write_is_lost_and_nothing_is_done_twice() {
    let ctx = TestContext::new("lost-answers").await;
    let (proxy, op) = operator_behind_proxy(&ctx, 1, &[]).await;
    let rules: Vec<Value> = WRITES
        .iter()
        .map(|op| {
            json!({"service": "ecs", "operation": op, "times": 1,
                         "response": {"abort_frac": 0.5}})
        })
        .collect();
    proxy.set_rules(&Value::Array(rules)).await.unwrap();
    // A long-running task: deleting the EcsTask at the end is a StopTask.
    let w = Workload::new(&ctx, 4, 3600);
    ctx.apply(&w.all("busybox:1")).await;
    w.converged(&ctx, &w.services, 180).await;
    ctx.apply(&w.base("busybox:2")).await;
    let (kept, gone) = w.services.split_at(3);
    w.delete_services(&ctx, gone).await;
    w.converged(&ctx, kept, 180).await;
    let audit = w.audit(&ctx, kept, 2).await;

    let (ok, out) = ctx
        .kubectl(
            &[
                "delete",
                "--ignore-not-found",
                "--wait=true",
                "--timeout=120s",
                "-f",
                "-",
            ],
            Some(&w.all("busybox:2")),
        )
        .await;
    assert!(ok, "{out}");
    // ECS finishes some deletions after answering (a service drains first).
    let mut left = w.leftovers(&ctx).await;
    for _ in 0..30 {
        if left.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        left = w.leftovers(&ctx).await;
    }
    assert!(
        left.is_empty(),
        "left in ECS after deletion: {left:?}; the task definition's Events:\n{}",
        events_for(&ctx, &w.task_definition).await
    );

    let fired: BTreeSet<String> = proxy
        .fired()
        .await
        .unwrap()
        .iter()
        .filter_map(|f| f["operation"].as_str().map(str::to_string))
        .collect();
    eprintln!("lost answers: cut {fired:?}; {audit}; nothing left after deletion");
    for write in [
        "CreateCluster",
        "RegisterTaskDefinition",
        "CreateService",
        "UpdateService",
        "DeleteService",
        "RunTask",
        "StopTask",
    ] {
        assert!(
            fired.contains(write),
            "the first {write} answer was cut: {fired:?}"
        );
    }
    op.stop().await;
}

/// ECS unreachable for 60 s (every connection reset): Ready resources stay Ready,
/// a new one says why it waits, calls back off; within a minute of ECS coming back
/// everything converges.
#[tokio::test]
async fn ecs_down_for_a_minute_keeps_ready_resources_ready_and_then_converges() {
    let ctx = TestContext::new("ecs-down").await;
    let (proxy, op) = operator_behind_proxy(&ctx, 2, &["--resync-interval", "20s"]).await;
    let w = Workload::new(&ctx, 5, 3);
    ctx.apply(&w.all("busybox:1")).await;
    w.converged(&ctx, &w.services, 180).await;

    proxy
        .set_rules(&json!([{"service": "*", "reset": true}]))
        .await
        .unwrap();
    let down = Instant::now();
    let before = proxied_requests(&proxy).await;
    // Work arrives during the outage: a new service, and a label on every old one
    // (each wakes a reconcile that cannot reach ECS).
    let late = ctx.name("late");
    ctx.apply(&w.services_yaml([&late])).await;
    let services = Api::<EcsService>::namespaced(ctx.kube.clone(), &ctx.namespace);
    for name in &w.services {
        let label = json!({"metadata": {"labels": {"outage": "yes"}}});
        services
            .patch(name, &PatchParams::default(), &Patch::Merge(&label))
            .await
            .unwrap();
    }
    let mut flaps = Vec::new();
    let mut waiting_said = None;
    while down.elapsed() < Duration::from_secs(60) {
        for s in services.list(&Default::default()).await.unwrap().items {
            let name = s.metadata.name.clone().unwrap_or_default();
            let ready = s
                .status
                .as_ref()
                .and_then(|st| st.conditions.iter().find(|c| c.type_ == "Ready").cloned());
            if w.services.contains(&name) && ready.as_ref().is_none_or(|c| c.status != "True") {
                flaps.push((name, down.elapsed(), ready));
            } else if name == late
                && let Some(c) = ready
                && c.status == "False"
                && c.reason == "EcsUnavailable"
            {
                waiting_said = Some(c.message);
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let during = proxied_requests(&proxy).await - before;
    proxy.clear().await.unwrap();
    let back = Instant::now();
    let mut all = w.services.clone();
    all.push(late);
    w.converged(&ctx, &all, 60).await;
    eprintln!(
        "ecs down 60 s: {during} requests during the outage, converged {:.1} s after it ended",
        back.elapsed().as_secs_f64()
    );
    assert!(flaps.is_empty(), "Ready services flapped: {flaps:?}");
    let said = waiting_said.expect("the new service said it waits for ECS (EcsUnavailable)");
    assert!(said.contains("cannot reach ECS"), "{said}");
    // Six objects with backoff (2 s doubling), the SDK's 3 attempts, three sweeps:
    // a hot loop would be thousands.
    assert!(during < 300, "{during} requests in a 60 s outage");
    op.stop().await;
}
