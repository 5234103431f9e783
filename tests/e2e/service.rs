//! EcsService end to end: references, rollouts, scale, ownership, batching, deletion.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_ecs::types::{Service, ServiceField};
use ecs_operator::api::common::{Condition, OWNER_TAG, UID_TAG};
use ecs_operator::api::service::EcsService;
use ecs_operator::ecs::tags_from_sdk;
use kube::api::{Api, DeleteParams};

use crate::support::{
    TestContext, ecs_cluster_and_td, events_for, eventually, sum_metric, wait_for,
};

/// `wait_for` typed for EcsService.
async fn wait_svc(
    ctx: &TestContext,
    name: &str,
    secs: u64,
    what: &str,
    pred: impl Fn(&EcsService) -> bool,
) -> EcsService {
    wait_for(ctx, name, secs, what, pred).await
}

fn condition(o: &EcsService, type_: &str) -> Option<Condition> {
    o.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .cloned()
}

fn is_true(o: &EcsService, type_: &str) -> bool {
    condition(o, type_).is_some_and(|c| c.status == "True")
}

/// Ready=True for the current generation.
fn ready(o: &EcsService) -> bool {
    o.status
        .as_ref()
        .is_some_and(|s| s.observed_generation == o.metadata.generation)
        && is_true(o, "Ready")
}

async fn ecs_service(ctx: &TestContext, cluster: &str, name: &str) -> Option<Service> {
    ctx.ecs
        .describe_services()
        .cluster(cluster)
        .services(name)
        .include(ServiceField::Tags)
        .send()
        .await
        .unwrap()
        .services()
        .iter()
        .find(|s| s.status() != Some("INACTIVE"))
        .cloned()
}

fn service_manifest(name: &str, body: &str) -> String {
    format!(
        "apiVersion: ecs.operator.dev/v1alpha1\nkind: EcsService\nmetadata:\n  name: {name}\nspec:\n{body}"
    )
}

fn operation_count(metrics: &str, op: &str) -> u64 {
    let needle = format!("operation=\"{op}\"");
    sum_metric(metrics, "ecs_operator_aws_requests_total", |l| {
        l.contains(&needle)
    })
}

#[tokio::test]
async fn sample_app_becomes_ready_and_rolls_to_each_new_revision() {
    let ctx = TestContext::new("svc-sample-app").await;
    // Default 5 minute resync: anything faster below comes from the watches.
    let op = ctx.start_operator(&[]).await;
    let (cl, td, svc) = (ctx.name("cluster"), ctx.name("web"), ctx.name("web"));
    let app = |image: &str| {
        format!(
            "apiVersion: ecs.operator.dev/v1alpha1
kind: EcsCluster
metadata:
  name: {cl}
spec: {{}}
---
apiVersion: ecs.operator.dev/v1alpha1
kind: EcsTaskDefinition
metadata:
  name: {td}
spec:
  requiresCompatibilities: [FARGATE]
  networkMode: awsvpc
  cpu: \"256\"
  memory: \"512\"
  containerDefinitions:
    - name: web
      image: {image}
      portMappings:
        - containerPort: 80
---
apiVersion: ecs.operator.dev/v1alpha1
kind: EcsService
metadata:
  name: {svc}
spec:
  clusterRef:
    name: {cl}
  taskDefinitionRef:
    name: {td}
  desiredCount: 2
  launchType: FARGATE
  networkConfiguration:
    awsvpcConfiguration:
      subnets: [subnet-0a, subnet-0b]
      securityGroups: [sg-0web]
  deploymentConfiguration:
    maximumPercent: 100
    minimumHealthyPercent: 50
  tags:
    app: web
"
        )
    };
    ctx.apply(&app("nginx:1.27")).await;
    let o = wait_svc(&ctx, &svc, 60, "Ready", ready).await;
    let st = o.status.clone().unwrap();
    assert_eq!(st.desired_count, Some(2));
    assert_eq!(st.running_count, Some(2));
    assert_eq!(st.rollout_state.as_deref(), Some("COMPLETED"));
    let rev1 = st.task_definition.clone().unwrap();
    assert!(rev1.ends_with(&format!("{td}:1")), "{rev1}");
    assert_eq!(st.deployments.len(), 1);

    // ECS has it, tagged as ours, with the spec's settings.
    let s = ecs_service(&ctx, &cl, &svc).await.expect("service in ECS");
    let tags = tags_from_sdk(s.tags());
    assert_eq!(tags.get(UID_TAG), o.metadata.uid.as_ref());
    assert_eq!(tags.get("app").map(String::as_str), Some("web"));
    assert_eq!(s.desired_count(), 2);
    assert_eq!(
        s.deployment_configuration()
            .and_then(|d| d.maximum_percent()),
        Some(100)
    );

    // The cluster's counts follow its services without waiting for a resync (5 min).
    let clusters =
        Api::<ecs_operator::api::cluster::EcsCluster>::namespaced(ctx.kube.clone(), &ctx.namespace);
    eventually(15, "EcsCluster counts the service", || async {
        let c = clusters.get(&cl).await.ok()?;
        let st = c.status?;
        (st.active_services_count == Some(1) && st.running_tasks_count == Some(2)).then_some(())
    })
    .await;

    // kubectl get shows the columns people look at.
    let (_, table) = ctx.kubectl(&["get", "ecssvc", &svc], None).await;
    let header = table.lines().next().unwrap_or_default();
    for col in ["DESIRED", "RUNNING", "ROLLOUT", "READY", "AGE"] {
        assert!(header.contains(col), "{col} missing: {table}");
    }
    assert!(table.contains("COMPLETED"), "{table}");

    // New image -> new revision -> the service rolls, without a resync.
    let writes_before = op.ecs_writes().await;
    let changed_at = tokio::time::Instant::now();
    ctx.apply(&app("nginx:1.28")).await;
    let rolling = wait_svc(&ctx, &svc, 60, "Reconciling during the rollout", |o| {
        is_true(o, "Reconciling")
            && o.status
                .as_ref()
                .and_then(|s| s.task_definition.as_deref())
                .is_some_and(|t| t.ends_with(&format!("{td}:2")))
    })
    .await;
    let took = changed_at.elapsed();
    // The resync interval is 5 minutes: this fast, the watch on the task definition did it.
    assert!(
        took < Duration::from_secs(15),
        "rollout started after {took:?}"
    );
    assert!(!is_true(&rolling, "Ready"));
    let st = rolling.status.clone().unwrap();
    assert_eq!(st.rollout_state.as_deref(), Some("IN_PROGRESS"), "{st:#?}");
    assert!(st.deployments.len() >= 2, "{st:#?}");
    assert!(op.ecs_writes().await > writes_before);

    // The emulator leaves a capacity-limited rollout half way; one no-op
    // UpdateService stands in for the ECS scheduler's next step.
    ctx.ecs
        .update_service()
        .cluster(&cl)
        .service(&svc)
        .send()
        .await
        .unwrap();
    let done = wait_svc(&ctx, &svc, 30, "Ready on revision 2", ready).await;
    let st = done.status.clone().unwrap();
    assert!(st.task_definition.unwrap().ends_with(&format!("{td}:2")));
    assert_eq!(st.deployments.len(), 1);
    assert_eq!(st.running_count, Some(2));

    // kubectl wait is the deploy-and-wait command.
    let (ok, out) = ctx
        .kubectl(
            &[
                "wait",
                "--for=condition=Ready",
                &format!("ecsservice/{svc}"),
                "--timeout=30s",
            ],
            None,
        )
        .await;
    assert!(ok, "{out}");
    op.stop().await;
}

#[tokio::test]
async fn missing_reference_waits_then_proceeds_when_it_appears() {
    let ctx = TestContext::new("svc-waiting-ref").await;
    let op = ctx.start_operator(&[]).await;
    let (cluster, _) = ecs_cluster_and_td(&ctx, "ecs", "app").await;
    let (svc, td) = (ctx.name("api"), ctx.name("api-td"));
    ctx.apply(&service_manifest(
        &svc,
        &format!("  cluster: {cluster}\n  taskDefinitionRef:\n    name: {td}\n  desiredCount: 1\n"),
    ))
    .await;
    let o = wait_svc(&ctx, &svc, 30, "WaitingForReference", |o| {
        condition(o, "Ready").is_some_and(|c| c.reason == "WaitingForReference")
    })
    .await;
    assert!(is_true(&o, "Reconciling"));
    assert!(!is_true(&o, "Stalled"));
    assert!(
        condition(&o, "Ready")
            .unwrap()
            .message
            .contains("does not exist"),
        "{:?}",
        condition(&o, "Ready")
    );
    assert!(ecs_service(&ctx, &cluster, &svc).await.is_none());

    ctx.apply(&format!(
        "apiVersion: ecs.operator.dev/v1alpha1
kind: EcsTaskDefinition
metadata:
  name: {td}
spec:
  containerDefinitions:
    - name: api
      image: busybox:1
      memory: 64
"
    ))
    .await;
    // The watch on EcsTaskDefinition wakes the service (its own poll is 30 s).
    wait_svc(&ctx, &svc, 20, "Ready after the reference appeared", ready).await;
    assert!(ecs_service(&ctx, &cluster, &svc).await.is_some());
    op.stop().await;
}

#[tokio::test]
async fn kubectl_scale_and_desired_count_ownership() {
    let ctx = TestContext::new("svc-scale").await;
    let op = ctx.start_operator(&["--resync-interval", "4s"]).await;
    let (cluster, td) = ecs_cluster_and_td(&ctx, "ecs", "app").await;
    let (owned, free) = (ctx.name("owned"), ctx.name("free"));
    ctx.apply(&service_manifest(
        &owned,
        &format!("  cluster: {cluster}\n  taskDefinition: {td}\n  desiredCount: 1\n"),
    ))
    .await;
    ctx.apply(&service_manifest(
        &free,
        &format!("  cluster: {cluster}\n  taskDefinition: {td}\n"),
    ))
    .await;
    wait_svc(&ctx, &owned, 60, "Ready", ready).await;
    wait_svc(&ctx, &free, 60, "Ready", ready).await;

    // kubectl scale goes through the scale subresource to spec.desiredCount.
    let (ok, out) = ctx
        .kubectl(
            &["scale", &format!("ecsservice/{owned}"), "--replicas=3"],
            None,
        )
        .await;
    assert!(ok, "{out}");
    eventually(30, "ECS desiredCount 3", || async {
        let s = ecs_service(&ctx, &cluster, &owned).await?;
        (s.desired_count() == 3).then_some(())
    })
    .await;
    wait_svc(&ctx, &owned, 30, "running 3", |o| {
        ready(o) && o.status.as_ref().and_then(|s| s.running_count) == Some(3)
    })
    .await;
    let (_, scale) = ctx
        .kubectl(
            &[
                "get",
                "--raw",
                &format!(
                    "/apis/ecs.operator.dev/v1alpha1/namespaces/{}/ecsservices/{owned}/scale",
                    ctx.namespace
                ),
            ],
            None,
        )
        .await;
    assert!(scale.contains("\"replicas\":3"), "{scale}");

    // Out-of-band changes: corrected where the spec sets desiredCount, left alone
    // where it does not (auto scaling owns it).
    for (name, count) in [(&owned, 5), (&free, 4)] {
        ctx.ecs
            .update_service()
            .cluster(&cluster)
            .service(name.as_str())
            .desired_count(count)
            .send()
            .await
            .unwrap();
    }
    eventually(30, "drift on the owned service corrected", || async {
        let s = ecs_service(&ctx, &cluster, &owned).await?;
        (s.desired_count() == 3).then_some(())
    })
    .await;
    let events = eventually(15, "DriftCorrected Event", || async {
        let e = events_for(&ctx, &owned).await;
        e.contains("DriftCorrected").then_some(e)
    })
    .await;
    assert!(events.contains("desiredCount"), "{events}");
    // Several resyncs later the free service still has what someone else set.
    let before = op.sweeps().await;
    eventually(40, "a few more resyncs", || async {
        (op.sweeps().await >= before + 3).then_some(())
    })
    .await;
    let s = ecs_service(&ctx, &cluster, &free).await.unwrap();
    assert_eq!(s.desired_count(), 4);
    let o = wait_svc(&ctx, &free, 20, "status shows 4", |o| {
        o.status.as_ref().and_then(|s| s.desired_count) == Some(4)
    })
    .await;
    assert!(ready(&o));
    op.stop().await;
}

#[tokio::test]
async fn foreign_service_is_not_owned_until_adopted() {
    let ctx = TestContext::new("svc-adopt").await;
    let op = ctx.start_operator(&[]).await;
    let (cluster, td) = ecs_cluster_and_td(&ctx, "ecs", "app").await;
    let name = ctx.name("legacy");
    ctx.ecs
        .create_service()
        .cluster(&cluster)
        .service_name(&name)
        .task_definition(&td)
        .desired_count(1)
        .tags(
            aws_sdk_ecs::types::Tag::builder()
                .key("owner")
                .value("terraform")
                .build(),
        )
        .send()
        .await
        .unwrap();
    let body = format!("  cluster: {cluster}\n  taskDefinition: {td}\n  desiredCount: 2\n");
    ctx.apply(&service_manifest(&name, &body)).await;
    let o = wait_svc(&ctx, &name, 30, "Stalled NotOwned", |o| {
        is_true(o, "Stalled")
    })
    .await;
    let c = condition(&o, "Stalled").unwrap();
    assert_eq!(c.reason, "NotOwned");
    assert!(c.message.contains("adoptExisting"), "{}", c.message);
    let s = ecs_service(&ctx, &cluster, &name).await.unwrap();
    assert_eq!(s.desired_count(), 1, "a foreign service was changed");
    assert!(!tags_from_sdk(s.tags()).contains_key(UID_TAG));

    ctx.apply(&service_manifest(
        &name,
        &format!("{body}  adoptExisting: true\n"),
    ))
    .await;
    let o = wait_svc(&ctx, &name, 30, "Ready after adoption", ready).await;
    let s = ecs_service(&ctx, &cluster, &name).await.unwrap();
    let tags = tags_from_sdk(s.tags());
    assert_eq!(tags.get(UID_TAG), o.metadata.uid.as_ref());
    assert_eq!(tags.get("owner").map(String::as_str), Some("terraform"));
    assert_eq!(s.desired_count(), 2);
    op.stop().await;
}

#[tokio::test]
async fn crash_after_create_does_not_make_a_second_service() {
    let ctx = TestContext::new("svc-crash").await;
    crate::support::install_crds(&ctx.kube).await;
    let (cluster, td) = ecs_cluster_and_td(&ctx, "ecs", "app").await;
    let name = ctx.name("once");
    // The resource exists but no operator has seen it yet...
    ctx.apply(&service_manifest(
        &name,
        &format!("  cluster: {cluster}\n  taskDefinition: {td}\n  desiredCount: 1\n"),
    ))
    .await;
    let api = Api::<EcsService>::namespaced(ctx.kube.clone(), &ctx.namespace);
    let obj = api.get(&name).await.unwrap();
    let uid = obj.metadata.uid.clone().unwrap();
    // ...and ECS already has the service the operator created before it crashed
    // (same tags, same client token), with no status written.
    let mut tags = ecs_operator::api::common::ownership_tags(&ctx.namespace, &name, &uid);
    tags.insert("x".into(), "y".into());
    ctx.ecs
        .create_service()
        .cluster(&cluster)
        .service_name(&name)
        .task_definition(&td)
        .desired_count(1)
        .client_token(ecs_operator::reconcile::service_plan::client_token(
            &uid,
            obj.metadata.generation,
            0,
        ))
        .set_tags(Some(ecs_operator::ecs::tags_to_sdk(&tags)))
        .send()
        .await
        .unwrap();
    // A restart takes longer than ECS's reads lag behind CreateService.
    eventually(10, "the service visible", || async {
        let out = ctx
            .ecs
            .describe_services()
            .cluster(&cluster)
            .services(&name)
            .send()
            .await
            .ok()?;
        (!out.services().is_empty()).then_some(())
    })
    .await;

    let op = ctx.start_operator(&[]).await;
    wait_svc(&ctx, &name, 30, "Ready", ready).await;
    let metrics = op.metrics().await;
    assert_eq!(
        operation_count(&metrics, "CreateService"),
        0,
        "the operator created again"
    );
    let arns = ctx
        .ecs
        .list_services()
        .cluster(&cluster)
        .send()
        .await
        .unwrap()
        .service_arns()
        .to_vec();
    assert_eq!(arns.len(), 1, "{arns:?}");
    op.stop().await;
}

#[tokio::test]
async fn fifty_services_cost_at_most_five_describe_calls_per_resync() {
    let ctx = TestContext::new("svc-batch").await;
    let interval = 10u64;
    let op = ctx
        .start_operator(&["--resync-interval", &format!("{interval}s")])
        .await;
    let (cluster, td) = ecs_cluster_and_td(&ctx, "ecs", "app").await;
    let names: Vec<String> = (0..50).map(|i| ctx.name(&format!("s{i:02}"))).collect();
    let docs: Vec<String> = names
        .iter()
        .map(|n| {
            service_manifest(
                n,
                &format!("  cluster: {cluster}\n  taskDefinition: {td}\n  desiredCount: 0\n"),
            )
        })
        .collect();
    ctx.apply(&docs.join("---\n")).await;
    let api = Api::<EcsService>::namespaced(ctx.kube.clone(), &ctx.namespace);
    eventually(120, "all 50 services Ready", || async {
        let list = api.list(&Default::default()).await.ok()?;
        (list.items.len() == 50 && list.items.iter().all(ready)).then_some(())
    })
    .await;

    // Measure over one whole resync round: from 5 s after a boundary to 5 s after
    // the next (resyncs are aligned to multiples of the interval).
    let to_mid_round = || {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        let period = interval * 1000;
        Duration::from_millis(period - now % period + period / 2)
    };
    tokio::time::sleep(to_mid_round()).await;
    let m0 = op.metrics().await;
    let (r0, s0) = (op.reconciles("EcsService").await, op.sweeps().await);
    let t0 = SystemTime::now();
    tokio::time::sleep(to_mid_round()).await;
    let m1 = op.metrics().await;
    let (r1, s1) = (op.reconciles("EcsService").await, op.sweeps().await);
    let describes =
        operation_count(&m1, "DescribeServices") - operation_count(&m0, "DescribeServices");
    eprintln!(
        "batching: 50 services, one resync round: {} sweep(s), {} reconciles, {describes} DescribeServices calls",
        s1 - s0,
        r1 - r0
    );
    // The round looked at every service (one sweep, 10 a call) ...
    assert_eq!(s1 - s0, 1, "one sweep per resync interval");
    assert_eq!(
        describes, 5,
        "{describes} DescribeServices calls for one resync of 50 services"
    );
    // ... and reconciled none: nothing changed in ECS. (Unless the window holds the
    // safety-net boundary, every 12 intervals, when each is reconciled on its own.)
    let safety = interval * 12;
    let secs = |t: SystemTime| t.duration_since(UNIX_EPOCH).unwrap().as_secs();
    let safety_in_window = secs(t0) / safety != secs(SystemTime::now()) / safety;
    if !safety_in_window {
        assert_eq!(r1 - r0, 0, "unchanged services were reconciled");
    }
    op.stop().await;
}

#[tokio::test]
async fn delete_policies_delete_or_orphan_the_ecs_service() {
    let ctx = TestContext::new("svc-delete").await;
    let op = ctx.start_operator(&[]).await;
    let (cluster, td) = ecs_cluster_and_td(&ctx, "ecs", "app").await;
    let (gone, kept) = (ctx.name("gone"), ctx.name("kept"));
    let body = format!("  cluster: {cluster}\n  taskDefinition: {td}\n  desiredCount: 2\n");
    ctx.apply(&service_manifest(&gone, &body)).await;
    ctx.apply(&service_manifest(
        &kept,
        &format!("{body}  deletionPolicy: Orphan\n"),
    ))
    .await;
    wait_svc(&ctx, &gone, 60, "Ready", ready).await;
    wait_svc(&ctx, &kept, 60, "Ready", ready).await;

    let api = Api::<EcsService>::namespaced(ctx.kube.clone(), &ctx.namespace);
    for n in [&gone, &kept] {
        api.delete(n, &DeleteParams::default()).await.unwrap();
    }
    eventually(30, "both resources gone", || async {
        (api.get_opt(&gone).await.ok()?.is_none() && api.get_opt(&kept).await.ok()?.is_none())
            .then_some(())
    })
    .await;
    assert!(
        ecs_service(&ctx, &cluster, &gone).await.is_none(),
        "Delete policy left the service"
    );
    let s = ecs_service(&ctx, &cluster, &kept)
        .await
        .expect("Orphan policy deleted the service");
    assert_eq!(s.status(), Some("ACTIVE"));
    assert_eq!(s.desired_count(), 2);
    let tags = tags_from_sdk(s.tags());
    assert!(!tags.contains_key(UID_TAG) && !tags.contains_key(OWNER_TAG));
    op.stop().await;
}

#[tokio::test]
async fn invalid_services_are_refused_at_admission() {
    let ctx = TestContext::new("svc-admission").await;
    crate::support::install_crds(&ctx.kube).await;
    let name = ctx.name("bad");
    let cases = [
        (
            "  cluster: a\n  clusterRef:\n    name: b\n  taskDefinition: f:1\n",
            "set exactly one of clusterRef",
        ),
        ("  taskDefinition: f:1\n", "set exactly one of clusterRef"),
        (
            "  cluster: a\n  taskDefinition: f:1\n  taskDefinitionRef:\n    name: t\n",
            "set exactly one of taskDefinitionRef",
        ),
        (
            "  cluster: a\n  taskDefinition: f:1\n  launchType: FARGATE\n  capacityProviderStrategy:\n    - capacityProvider: FARGATE_SPOT\n",
            "set launchType or capacityProviderStrategy, not both",
        ),
        (
            "  cluster: a\n  taskDefinition: f:1\n  schedulingStrategy: DAEMON\n  desiredCount: 2\n",
            "DAEMON",
        ),
        ("  cluster: a\n  taskDefinition: latest\n", "taskDefinition"),
    ];
    for (body, want) in cases {
        let (ok, out) = ctx
            .kubectl(&["apply", "-f", "-"], Some(&service_manifest(&name, body)))
            .await;
        assert!(!ok, "accepted:\n{body}");
        assert!(out.contains(want), "want {want:?} in: {out}");
    }

    // Immutable fields, checked on update.
    let good = "  cluster: a\n  taskDefinition: f:1\n  serviceName: first\n  launchType: FARGATE\n";
    ctx.apply(&service_manifest(&name, good)).await;
    let updates = [
        (good.replace("first", "second"), "serviceName is immutable"),
        (
            good.replace("cluster: a", "cluster: b"),
            "cluster (cluster / clusterRef) is immutable",
        ),
        (
            good.replace("launchType: FARGATE", "launchType: EC2"),
            "launchType cannot be added or changed",
        ),
        (
            format!("{good}  schedulingStrategy: DAEMON\n"),
            "schedulingStrategy is immutable",
        ),
        (
            format!("{good}  deploymentController:\n    type: CODE_DEPLOY\n"),
            "deploymentController.type is immutable",
        ),
    ];
    for (body, want) in updates {
        let (ok, out) = ctx
            .kubectl(&["apply", "-f", "-"], Some(&service_manifest(&name, &body)))
            .await;
        assert!(!ok, "accepted:\n{body}");
        assert!(out.contains(want), "want {want:?} in: {out}");
    }
    // Moving from a launch type to a capacity provider strategy is allowed.
    let moved = good.replace(
        "  launchType: FARGATE\n",
        "  capacityProviderStrategy:\n    - capacityProvider: FARGATE_SPOT\n      weight: 1\n",
    );
    ctx.apply(&service_manifest(&name, &moved)).await;
}
