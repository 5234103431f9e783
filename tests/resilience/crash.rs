//! The operator process dying: SIGKILL at seeded random moments while it creates,
//! rolls out, runs an EcsTask and deletes; SIGTERM in the middle of a burst.

use std::time::{Duration, Instant};

use ecs_operator::api::service::EcsService;
use kube::api::Api;

use crate::support::{TestContext, eventually};
use crate::workload::{Workload, service_arns};
use crate::{Rng, seed};

/// Kills the operator at 6 seeded moments (0.3-4 s after each start) and starts it
/// again, while the workload is created, rolled to a new revision, its EcsTask run and
/// 3 services deleted. ECS ends with exactly what the resources describe: no
/// service, revision or task run twice, nothing left of the deleted services.
#[tokio::test]
async fn sigkill_anywhere_leaves_nothing_duplicated_or_leaked() {
    let seed = seed("crash-anywhere");
    let mut rng = Rng::new(seed);
    let ctx = TestContext::new("crash-anywhere").await;
    let w = Workload::new(&ctx, 12, 3);
    let mut op = ctx.start_operator(&[]).await;
    ctx.apply(&w.all("busybox:1")).await;
    let (kept, gone) = w.services.split_at(9);
    let mut kills = Vec::new();
    for round in 0..6 {
        let after = Duration::from_millis(rng.between(300, 4000));
        tokio::time::sleep(after).await;
        op.stop().await;
        kills.push(after.as_millis());
        match round {
            1 => ctx.apply(&w.base("busybox:2")).await,
            3 => w.delete_services(&ctx, gone).await,
            _ => {}
        }
        op = ctx.start_operator(&[]).await;
    }
    w.converged(&ctx, kept, 300).await;
    let audit = w.audit(&ctx, kept, 2).await;
    eprintln!("crash anywhere (seed {seed}): SIGKILL after {kills:?} ms of each run; {audit}");
    op.stop().await;
}

/// The chart's `terminationGracePeriodSeconds`.
fn grace_period() -> u64 {
    let chart = include_str!("../../charts/ecs-operator/templates/deployment.yaml");
    chart
        .lines()
        .find_map(|l| l.trim().strip_prefix("terminationGracePeriodSeconds:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("the chart sets terminationGracePeriodSeconds")
}

/// SIGTERM while 20 services are being created: the process exits within the
/// chart's grace period, and every ECS service that exists is recorded in its
/// EcsService's status (a write either done and recorded, or not started).
#[tokio::test]
async fn sigterm_during_a_burst_exits_in_time_with_every_write_recorded() {
    let ctx = TestContext::new("sigterm").await;
    let w = Workload::new(&ctx, 20, 3);
    let op = ctx.start_operator(&[]).await;
    ctx.apply(&w.all("busybox:1")).await;
    let services = Api::<EcsService>::namespaced(ctx.kube.clone(), &ctx.namespace);
    eventually(120, "the first services created", || async {
        let all = services.list(&Default::default()).await.ok()?.items;
        let created = all
            .iter()
            .filter(|s| s.status.as_ref().is_some_and(|st| st.arn.is_some()));
        (created.count() >= 3).then_some(())
    })
    .await;
    let sent = Instant::now();
    let exit = op.terminate().await;
    let took = sent.elapsed();
    let grace = grace_period();
    assert!(exit.success(), "exit status after SIGTERM: {exit:?}");
    assert!(
        took < Duration::from_secs(grace),
        "exited {:.1} s after SIGTERM (grace period {grace} s)",
        took.as_secs_f64()
    );

    // Every ECS service of the cluster is the recorded one of its EcsService.
    let recorded: std::collections::BTreeMap<String, Option<String>> = services
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|s| {
            let name = s.metadata.name.clone().unwrap_or_default();
            (name, s.status.and_then(|st| st.arn))
        })
        .collect();
    let arns = service_arns(&ctx, &w.cluster).await;
    for arn in &arns {
        let name = arn.rsplit('/').next().unwrap_or_default();
        assert_eq!(
            recorded.get(name).cloned().flatten().as_deref(),
            Some(arn.as_str()),
            "ECS service {arn} is recorded in EcsService {name}"
        );
    }
    eprintln!(
        "sigterm: exited {:.1} s after SIGTERM (grace {grace} s), {} ECS services, each recorded",
        took.as_secs_f64(),
        arns.len()
    );
    // A new process takes over where it stopped.
    let op = ctx.start_operator(&[]).await;
    w.converged(&ctx, &w.services, 180).await;
    w.audit(&ctx, &w.services, 1).await;
    op.stop().await;
}
