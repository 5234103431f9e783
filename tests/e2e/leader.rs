//! Leader election: two operator processes against one apiserver; only the Lease
//! holder reconciles, and a standby takes over when the leader dies.

use std::time::Duration;

use ecs_operator::api::cluster::EcsCluster;
use kube::api::Api;

use crate::support::{Operator, TestContext, eventually};

fn cluster(name: &str) -> String {
    format!(
        "apiVersion: ecs.operator.dev/v1alpha1\nkind: EcsCluster\nmetadata:\n  name: {name}\nspec: {{}}\n"
    )
}

async fn ready(ctx: &TestContext, name: &str, secs: u64) {
    let api = Api::<EcsCluster>::namespaced(ctx.kube.clone(), &ctx.namespace);
    eventually(secs, &format!("{name} Ready"), || async {
        let o = api.get(name).await.ok()?;
        ecs_operator::api::common::is_condition_true(&o.status?.conditions, "Ready").then_some(())
    })
    .await;
}

fn is_leader(op: &Operator) -> bool {
    op.log_text().contains("became the leader")
}

#[tokio::test]
async fn only_the_leader_reconciles_and_a_standby_takes_over() {
    let ctx = TestContext::new("leader").await;
    let args = [
        "--leader-elect",
        "--leader-election-namespace",
        ctx.namespace.as_str(),
        "--leader-election-lease-duration",
        "4s",
    ];
    let a = ctx.start_operator(&args).await;
    let b = ctx.start_operator(&args).await;
    eventually(20, "one of them leads", || async {
        (is_leader(&a) || is_leader(&b)).then_some(())
    })
    .await;
    // Give the other one time to (wrongly) become leader too.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(is_leader(&a) != is_leader(&b), "both or neither lead");
    let (leader, standby) = if is_leader(&a) { (a, b) } else { (b, a) };

    let first = ctx.name("first");
    ctx.apply(&cluster(&first)).await;
    ready(&ctx, &first, 30).await;
    assert!(leader.ecs_writes().await >= 1);
    assert_eq!(standby.ecs_writes().await, 0, "the standby wrote to ECS");
    assert_eq!(standby.reconciles("EcsCluster").await, 0);

    // The leader dies without releasing the Lease (SIGKILL): the standby takes
    // over once the Lease expires (4 s).
    let killed_at = tokio::time::Instant::now();
    leader.stop().await;
    eventually(20, "the standby becomes the leader", || async {
        is_leader(&standby).then_some(())
    })
    .await;
    let took = killed_at.elapsed();
    assert!(took < Duration::from_secs(12), "takeover took {took:?}");
    let second = ctx.name("second");
    ctx.apply(&cluster(&second)).await;
    ready(&ctx, &second, 30).await;
    assert!(standby.ecs_writes().await >= 1);
    standby.stop().await;
}
