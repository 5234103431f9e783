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

fn labelled_cluster(name: &str, shard: &str) -> String {
    format!(
        "apiVersion: ecs.operator.dev/v1alpha1\nkind: EcsCluster\nmetadata:\n  name: {name}\n  labels:\n    ecs.operator.dev/shard: {shard}\nspec: {{}}\n"
    )
}

/// Horizontal scale: two deployments split the objects by label, each leading its
/// own Lease; neither touches the other's objects.
#[tokio::test]
async fn shards_split_the_objects_and_each_leads_its_own_lease() {
    let ctx = TestContext::new("shards").await;
    let shard = |name: &'static str| {
        [
            "--selector".to_string(),
            format!("ecs.operator.dev/shard={name}"),
            "--leader-elect".to_string(),
            "--leader-election-namespace".to_string(),
            ctx.namespace.clone(),
            "--leader-election-id".to_string(),
            format!("ecs-operator-{name}"),
        ]
    };
    let (args_a, args_b) = (shard("a"), shard("b"));
    let a = ctx
        .start_operator(&args_a.iter().map(String::as_str).collect::<Vec<_>>())
        .await;
    let b = ctx
        .start_operator(&args_b.iter().map(String::as_str).collect::<Vec<_>>())
        .await;
    eventually(20, "each shard leads its Lease", || async {
        (is_leader(&a) && is_leader(&b)).then_some(())
    })
    .await;
    let (in_a, in_b) = (ctx.name("in-a"), ctx.name("in-b"));
    ctx.apply(&labelled_cluster(&in_a, "a")).await;
    ctx.apply(&labelled_cluster(&in_b, "b")).await;
    ready(&ctx, &in_a, 30).await;
    ready(&ctx, &in_b, 30).await;
    let key = |name: &str| format!("EcsCluster/{}/{name}", ctx.namespace);
    let (log_a, log_b) = (a.log_text(), b.log_text());
    assert!(
        log_a.contains(&key(&in_a)) && !log_a.contains(&key(&in_b)),
        "{log_a}"
    );
    assert!(
        log_b.contains(&key(&in_b)) && !log_b.contains(&key(&in_a)),
        "{log_b}"
    );
    assert!(a.reconciles("EcsCluster").await >= 1 && b.reconciles("EcsCluster").await >= 1);
    // Neither Lease is the unsharded default.
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(ctx.kube.clone(), &ctx.namespace);
    for name in ["ecs-operator-a", "ecs-operator-b"] {
        assert!(leases.get_opt(name).await.unwrap().is_some(), "{name}");
    }
    a.stop().await;
    b.stop().await;
}
