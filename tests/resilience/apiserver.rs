//! The kube-apiserver going away under a running operator: a restart on the same
//! etcd, and a 30 s outage, in an environment of the test's own (the other
//! scenarios keep theirs).

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;
use testenv::Environment;

use crate::support::{Operator, TestContext, eventually};
use crate::workload::Workload;

/// Until the process exits (at most `secs`): how long after `since` it did.
async fn exit_after(op: &mut Operator, since: Instant, secs: u64) -> Option<Duration> {
    let until = since + Duration::from_secs(secs);
    while Instant::now() < until {
        if op.exited().is_some() {
            return Some(since.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

#[tokio::test]
async fn an_apiserver_restart_and_outage_lose_nothing_and_write_nothing_twice() {
    let mut own = Environment::start()
        .await
        .expect("an environment of this test's own");
    let ctx = TestContext::in_env("apiserver", &own, true).await;
    let w = Workload::new(&ctx, 5, 3);
    let op = ctx.start_operator(&[]).await;
    ctx.apply(&w.all("busybox:1")).await;
    w.converged(&ctx, &w.services, 180).await;

    // A restart on the same etcd: the watches resume and the next change is acted on.
    own.restart_apiserver(Duration::ZERO).await.unwrap();
    ctx.apply(&w.base("busybox:2")).await;
    w.converged(&ctx, &w.services, 180).await;

    // A 30 s outage with nothing to do: the operator keeps running and writes
    // nothing to ECS when the watches come back (no reconcile repeats a write).
    let writes = op.ecs_writes().await;
    own.restart_apiserver(Duration::from_secs(30))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(op.ecs_writes().await, writes, "ECS writes after the outage");
    let late = ctx.name("late");
    ctx.apply(&w.services_yaml([&late])).await;
    let mut all = w.services.clone();
    all.push(late);
    w.converged(&ctx, &all, 120).await;
    let audit = w.audit(&ctx, &all, 2).await;
    op.stop().await;

    // With leader election: a leader that cannot renew its Lease stops before the
    // Lease can expire for a standby.
    let lease_secs = 8;
    let lease_duration = format!("{lease_secs}s");
    let args = [
        "--leader-elect",
        "--leader-election-namespace",
        ctx.namespace.as_str(),
        "--leader-election-lease-duration",
        lease_duration.as_str(),
    ];
    let mut leader = ctx.start_operator(&args).await;
    let leases = Api::<Lease>::namespaced(ctx.kube.clone(), &ctx.namespace);
    let renewed = eventually(60, "the leader renews its Lease", || async {
        let lease = leases.list(&Default::default()).await.ok()?.items.pop()?;
        lease.spec?.renew_time.map(|t| t.0)
    })
    .await;
    let (restarted, exited) = tokio::join!(
        own.restart_apiserver(Duration::from_secs(20)),
        exit_after(&mut leader, Instant::now(), 30)
    );
    restarted.unwrap();
    assert!(exited.is_some(), "the leader exits while it cannot renew");
    // When it stopped reconciling (its controllers are aborted right after this
    // line), against the last renewal it made: the Lease runs out `lease_secs` after.
    let log = leader.log_text();
    let stop_line = log
        .lines()
        .find(|l| l.contains("lost the leader Lease"))
        .unwrap_or_else(|| panic!("no 'lost the leader Lease' in the log:\n{log}"));
    let stopped_at: k8s_openapi::jiff::Timestamp = stop_line
        .split_whitespace()
        .next()
        .and_then(|t| t.parse().ok())
        .expect("a timestamp first on the log line");
    let stopped = Duration::try_from(stopped_at.duration_since(renewed)).unwrap_or_default();
    assert!(
        stopped < Duration::from_secs(lease_secs),
        "the leader stopped {:.1} s after its last renewal; the Lease lasts {lease_secs} s",
        stopped.as_secs_f64()
    );
    eprintln!(
        "apiserver: restart and a 30 s outage, 0 ECS writes after it; {audit}; the leader stopped {:.1} s after its last renewal (Lease {lease_secs} s)",
        stopped.as_secs_f64()
    );
}
