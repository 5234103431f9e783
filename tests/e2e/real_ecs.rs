//! What real ECS does and the emulator alone does not (issue "Behave like real
//! ECS"), shown through the strict layer (`testenv/strict`): tasks that exit on
//! their own with exit codes, reads that lag behind writes, strategy changes that
//! need a new deployment, zero writes at rest, delete-and-recreate.

use std::time::Duration;

use aws_sdk_ecs::types::{CapacityProviderStrategyItem, ContainerDefinition, KeyValuePair};
use ecs_operator::api::service::EcsService;
use ecs_operator::api::task::{EcsTask, Phase};
use ecs_operator::api::task_definition::EcsTaskDefinition;

use crate::support::{TestContext, eventually, wait_for};

fn env(name: &str, value: &str) -> KeyValuePair {
    KeyValuePair::builder().name(name).value(value).build()
}

/// A container that runs `secs` seconds and exits with `code` (strict layer).
fn container(name: &str, secs: u32, code: i32) -> ContainerDefinition {
    ContainerDefinition::builder()
        .name(name)
        .image("busybox:1")
        .memory(64)
        .environment(env("ECS_EMULATOR_RUN_SECONDS", &secs.to_string()))
        .environment(env("ECS_EMULATOR_EXIT_CODE", &code.to_string()))
        .build()
}

async fn register(ctx: &TestContext, family: &str, containers: Vec<ContainerDefinition>) -> String {
    ctx.ecs
        .register_task_definition()
        .family(ctx.name(family))
        .set_container_definitions(Some(containers))
        .send()
        .await
        .unwrap()
        .task_definition()
        .and_then(|t| t.task_definition_arn())
        .unwrap()
        .to_string()
}

async fn create_cluster(ctx: &TestContext, name: &str) -> String {
    let name = ctx.name(name);
    ctx.ecs
        .create_cluster()
        .cluster_name(&name)
        .capacity_providers("FARGATE")
        .capacity_providers("FARGATE_SPOT")
        .send()
        .await
        .unwrap();
    name
}

fn task_manifest(name: &str, body: &str) -> String {
    format!(
        "apiVersion: ecs.operator.dev/v1alpha1\nkind: EcsTask\nmetadata:\n  name: {name}\nspec:\n{body}"
    )
}

fn finished(o: &EcsTask) -> bool {
    o.status
        .as_ref()
        .and_then(|s| s.phase)
        .is_some_and(|p| matches!(p, Phase::Succeeded | Phase::Failed))
}

/// Tasks exit on their own: success, a non-zero exit, sidecars killed with 137.
/// With tasks invisible for up to 3 s after RunTask and retries allowed, each run
/// still starts exactly one attempt (defect 2: "a migration can run twice").
#[tokio::test]
async fn runs_finish_with_their_exit_codes_once_each() {
    let ctx = TestContext::new("real-runs").await;
    let op = ctx.start_operator(&[]).await;
    let cluster = create_cluster(&ctx, "batch").await;
    let ok = register(&ctx, "ok", vec![container("app", 2, 0)]).await;
    let failing = register(&ctx, "fail", vec![container("app", 2, 3)]).await;
    let sidecar = register(
        &ctx,
        "sidecar",
        vec![container("app", 2, 0), container("envoy", 3600, 0)],
    )
    .await;
    let cases = [
        (
            "ok",
            ok.as_str(),
            "  count: 2\n  backoffLimit: 2\n",
            Phase::Succeeded,
            Some(0),
        ),
        ("fail", failing.as_str(), "", Phase::Failed, Some(3)),
        (
            "sidecar",
            sidecar.as_str(),
            "  successContainers: [app]\n",
            Phase::Succeeded,
            Some(0),
        ),
        (
            "sidecar-strict",
            sidecar.as_str(),
            "",
            Phase::Failed,
            Some(137),
        ),
    ];
    for (name, td, extra, _, _) in &cases {
        ctx.apply(&task_manifest(
            &ctx.name(name),
            &format!("  cluster: {cluster}\n  taskDefinition: {td}\n{extra}"),
        ))
        .await;
    }
    for (name, _, _, phase, exit) in &cases {
        let o: EcsTask = wait_for(&ctx, &ctx.name(name), 60, "finished", finished).await;
        let st = o.status.clone().unwrap();
        assert_eq!(st.phase, Some(*phase), "{name}: {st:#?}");
        assert_eq!(st.exit_code, *exit, "{name}: {st:#?}");
        assert_eq!(st.attempts, 1, "{name}: a second attempt started: {st:#?}");
        let uid = o.metadata.uid.unwrap();
        let want = if *name == "ok" { 2 } else { 1 };
        assert_eq!(
            crate::support::started_task_arns(&ctx, &cluster, &uid)
                .await
                .len(),
            want,
            "{name}: tasks in ECS"
        );
    }
    let metrics = op.metrics().await;
    let run_tasks = crate::support::sum_metric(&metrics, "ecs_operator_aws_requests_total", |l| {
        l.contains("operation=\"RunTask\"")
    });
    assert_eq!(run_tasks, 4, "one RunTask per run");
    op.stop().await;
}

/// Defect 3: real ECS refuses a capacity-provider strategy change without
/// forceNewDeployment; the operator sends it, and the weights change.
#[tokio::test]
async fn capacity_provider_weights_can_change() {
    let ctx = TestContext::new("real-weights").await;
    let op = ctx.start_operator(&[]).await;
    let cluster = create_cluster(&ctx, "cp").await;
    let td = register(&ctx, "web", vec![container("app", 3600, 0)]).await;
    let name = ctx.name("web");
    let manifest = |spot: i32| {
        format!(
            "apiVersion: ecs.operator.dev/v1alpha1\nkind: EcsService\nmetadata:\n  name: {name}\nspec:\n  cluster: {cluster}\n  taskDefinition: {td}\n  desiredCount: 1\n  capacityProviderStrategy:\n    - {{capacityProvider: FARGATE, weight: 1}}\n    - {{capacityProvider: FARGATE_SPOT, weight: {spot}}}\n"
        )
    };
    let ready = |generation: i64| {
        move |o: &EcsService| {
            o.status.as_ref().is_some_and(|s| {
                s.observed_generation == Some(generation)
                    && s.conditions
                        .iter()
                        .any(|c| c.type_ == "Ready" && c.status == "True")
            })
        }
    };
    ctx.apply(&manifest(1)).await;
    wait_for(&ctx, &name, 60, "Ready", ready(1)).await;
    ctx.apply(&manifest(3)).await;
    wait_for(&ctx, &name, 60, "Ready with the new weights", ready(2)).await;
    let svc = ctx
        .ecs_direct
        .describe_services()
        .cluster(&cluster)
        .services(&name)
        .send()
        .await
        .unwrap();
    let strategy: Vec<&CapacityProviderStrategyItem> = svc.services()[0]
        .capacity_provider_strategy()
        .iter()
        .collect();
    assert!(
        strategy
            .iter()
            .any(|s| s.capacity_provider() == "FARGATE_SPOT" && s.weight() == 3),
        "{strategy:?}"
    );
    op.stop().await;
}

/// Acceptance: once everything is Ready, two resyncs cost no ECS write, for every
/// sample and for a cluster with false ECS Exec encryption flags (defect 6).
#[tokio::test]
async fn samples_at_rest_cost_no_ecs_writes() {
    let ctx = TestContext::new("real-rest").await;
    let op = ctx.start_operator(&["--resync-interval", "4s"]).await;
    let samples = concat!(env!("CARGO_MANIFEST_DIR"), "/config/samples");
    let (ok, rendered) = ctx.kubectl(&["kustomize", samples], None).await;
    assert!(ok, "{rendered}");
    // Prefix the resource names (and so the ECS names) to keep runs apart; container
    // names (`- name:`) stay.
    let prefix = &ctx.prefix;
    let yaml: String = rendered
        .lines()
        .map(|l| match l.trim_start().strip_prefix("name: ") {
            Some(n) if ["shop", "web", "worker", "migrate-0042", "nightly-report"].contains(&n) => {
                l.replace(&format!("name: {n}"), &format!("name: {prefix}-{n}"))
            }
            _ => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n");
    ctx.apply(&yaml).await;
    let exec = ctx.name("exec");
    ctx.apply(&format!(
        "apiVersion: ecs.operator.dev/v1alpha1\nkind: EcsCluster\nmetadata:\n  name: {exec}\nspec:\n  configuration:\n    executeCommandConfiguration:\n      logging: OVERRIDE\n      logConfiguration:\n        cloudWatchLogGroupName: /ecs/exec\n        cloudWatchEncryptionEnabled: false\n        s3EncryptionEnabled: false\n"
    ))
    .await;
    let names = [
        ("ecscluster", ctx.name("shop")),
        ("ecscluster", exec.clone()),
        ("ecstaskdefinition", ctx.name("web")),
        ("ecstaskdefinition", ctx.name("worker")),
        ("ecsservice", ctx.name("web")),
        ("ecsservice", ctx.name("worker")),
        ("ecsscheduledtask", ctx.name("nightly-report")),
    ];
    for (kind, name) in &names {
        let (ok, out) = ctx
            .kubectl(
                &[
                    "wait",
                    "--for=condition=Ready",
                    "--timeout=90s",
                    &format!("{kind}/{name}"),
                ],
                None,
            )
            .await;
        assert!(ok, "{kind}/{name}: {out}");
    }
    let run = ctx.name("migrate-0042");
    let (ok, out) = ctx
        .kubectl(
            &[
                "wait",
                "--for=condition=Complete",
                "--timeout=90s",
                &format!("ecstask/{run}"),
            ],
            None,
        )
        .await;
    assert!(ok, "the sample run completes: {out}");
    // Let the first resync after Ready settle, then count over two more.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let before = op.ecs_writes().await;
    tokio::time::sleep(Duration::from_secs(9)).await;
    let after = op.ecs_writes().await;
    assert_eq!(
        after,
        before,
        "ECS writes at rest; metrics:\n{}",
        op.metrics()
            .await
            .lines()
            .filter(|l| l.starts_with("ecs_operator_aws_requests_total"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    op.stop().await;
}

/// Defect 16: `kubectl delete -f app.yaml && kubectl apply -f app.yaml` (cluster, task
/// definition, a running EcsTask) just works: the revision the EcsTask ran is not kept
/// for it, the new EcsTaskDefinition is not NotOwned, and the new run starts.
#[tokio::test]
async fn delete_and_reapply_just_works() {
    let ctx = TestContext::new("real-recreate").await;
    let op = ctx.start_operator(&[]).await;
    let (cl, td, run) = (ctx.name("c"), ctx.name("job"), ctx.name("run"));
    let app = format!(
        "apiVersion: ecs.operator.dev/v1alpha1
kind: EcsCluster
metadata: {{name: {cl}}}
spec: {{}}
---
apiVersion: ecs.operator.dev/v1alpha1
kind: EcsTaskDefinition
metadata: {{name: {td}}}
spec:
  containerDefinitions:
    - name: app
      image: busybox:1
      memory: 64
      environment:
        - {{name: ECS_EMULATOR_RUN_SECONDS, value: '3600'}}
---
apiVersion: ecs.operator.dev/v1alpha1
kind: EcsTask
metadata: {{name: {run}}}
spec:
  clusterRef: {{name: {cl}}}
  taskDefinitionRef: {{name: {td}}}
"
    );
    let running = |o: &EcsTask| o.status.as_ref().and_then(|s| s.phase) == Some(Phase::Running);
    ctx.apply(&app).await;
    wait_for(&ctx, &run, 60, "Running", running).await;
    let (ok, out) = ctx
        .kubectl(
            &["delete", "--wait=true", "--timeout=90s", "-f", "-"],
            Some(&app),
        )
        .await;
    assert!(ok, "{out}");
    ctx.apply(&app).await;
    let o: EcsTaskDefinition = wait_for(&ctx, &td, 60, "Ready", |o: &EcsTaskDefinition| {
        o.status.as_ref().is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        })
    })
    .await;
    wait_for(&ctx, &run, 60, "the new run Running", running).await;
    // ECS holds exactly the revision the new resource describes: nothing leaked.
    let active = eventually(30, "one ACTIVE revision", || async {
        let arns = ctx
            .ecs_direct
            .list_task_definitions()
            .family_prefix(&td)
            .status(aws_sdk_ecs::types::TaskDefinitionStatus::Active)
            .send()
            .await
            .ok()?
            .task_definition_arns()
            .to_vec();
        (arns.len() == 1).then_some(arns)
    })
    .await;
    assert_eq!(
        Some(active[0].as_str()),
        o.status.unwrap().latest_arn.as_deref()
    );
    op.stop().await;
}
