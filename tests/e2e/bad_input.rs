//! Bad input, as one table across every kind: each invalid manifest is refused at
//! admission with the message a person reads (schema or CEL), and ECS is left exactly
//! as it was. References that cannot resolve are not refused but wait, saying why.

use ecs_operator::api::service::EcsService;
use ecs_operator::api::task::EcsTask;

use crate::support::{TestContext, wait_for};

/// (kind, spec body, the text the refusal must contain).
type Case = (&'static str, String, &'static str);

const TD_SPEC: &str =
    "  containerDefinitions:\n    - name: app\n      image: busybox:1\n      memory: 64\n";
const PLACE: &str = "  cluster: a\n  taskDefinition: f:1\n";

fn cluster_cases() -> Vec<Case> {
    let k = "EcsCluster";
    vec![
        (k, "  clusterName: \"bad name\"\n".into(), "should match"),
        (k, "  clusterName: 42\n".into(), "must be of type string"),
        (k, "  tags:\n    AWS:team: x\n".into(), "tag keys may not start with 'aws:'"),
        (k, "  deletionPolicy: Destroy\n".into(), "Unsupported value: \"Destroy\""),
        (k, "  settings:\n    containerInsights: on\n".into(), "containerInsights"),
        (
            k,
            "  capacityProviders: [FARGATE]\n  defaultCapacityProviderStrategy:\n  - capacityProvider: FARGATE\n    base: 1\n  - capacityProvider: FARGATE_SPOT\n    base: 1\n".into(),
            "only one provider may set a base greater than 0",
        ),
        (k, "  adoptExisting: maybe\n".into(), "must be of type boolean"),
        (k, "  unknownField: 1\n".into(), "unknown field \"spec.unknownField\""),
    ]
}

fn task_definition_cases() -> Vec<Case> {
    let k = "EcsTaskDefinition";
    vec![
        (k, "  containerDefinitions: []\n".into(), "should have at least 1 items"),
        (
            k,
            "  containerDefinitions:\n    - name: app\n      image: a\n    - name: app\n      image: b\n".into(),
            "container names must be unique",
        ),
        (
            k,
            format!("  requiresCompatibilities: [FARGATE]\n  cpu: \"256\"\n  memory: \"512\"\n{TD_SPEC}"),
            "FARGATE requires networkMode: awsvpc",
        ),
        (
            k,
            format!("  requiresCompatibilities: [FARGATE]\n  networkMode: awsvpc\n{TD_SPEC}"),
            "FARGATE requires task-level cpu and memory",
        ),
        (
            k,
            format!("  requiresCompatibilities: [FARGATE]\n  networkMode: awsvpc\n  cpu: \"256\"\n  memory: \"4096\"\n{TD_SPEC}"),
            "not a valid FARGATE combination",
        ),
        (k, format!("  networkMode: mesh\n{TD_SPEC}"), "networkMode"),
        (
            k,
            "  containerDefinitions:\n    - name: app\n".into(),
            "image: Required value",
        ),
        (
            k,
            "  containerDefinitions:\n    - name: app\n      image: a\n      memory: \"lots\"\n".into(),
            "must be of type integer",
        ),
        (k, format!("  revisionHistoryLimit: -1\n{TD_SPEC}"), "revisionHistoryLimit"),
    ]
}

fn service_cases() -> Vec<Case> {
    let k = "EcsService";
    vec![
        (
            k,
            "  taskDefinition: f:1\n".into(),
            "set exactly one of clusterRef",
        ),
        (
            k,
            "  cluster: a\n  clusterRef:\n    name: b\n  taskDefinition: f:1\n".into(),
            "set exactly one of clusterRef",
        ),
        (
            k,
            format!("{PLACE}  desiredCount: -1\n"),
            "should be greater than or equal to 0",
        ),
        (
            k,
            format!("{PLACE}  desiredCount: 6000\n"),
            "should be less than or equal to 5000",
        ),
        (
            k,
            format!("{PLACE}  desiredCount: two\n"),
            "must be of type integer",
        ),
        (
            k,
            format!("{PLACE}  launchType: MAINFRAME\n"),
            "Unsupported value: \"MAINFRAME\"",
        ),
        (
            k,
            format!(
                "{PLACE}  launchType: FARGATE\n  capacityProviderStrategy:\n    - capacityProvider: FARGATE_SPOT\n"
            ),
            "set launchType or capacityProviderStrategy, not both",
        ),
        (
            k,
            format!("{PLACE}  schedulingStrategy: DAEMON\n  desiredCount: 2\n"),
            "DAEMON service runs one task per container instance",
        ),
        (
            k,
            format!("{PLACE}  deploymentConfiguration:\n    maximumPercent: 50\n"),
            "maximumPercent",
        ),
        (
            k,
            "  cluster: a\n  taskDefinitionRef:\n    name: t\n    namespace: other\n".into(),
            "unknown field \"spec.taskDefinitionRef.namespace\"",
        ),
        (
            k,
            format!(
                "{PLACE}  loadBalancers:\n    - containerName: app\n      containerPort: 70000\n"
            ),
            "containerPort",
        ),
        (
            k,
            format!("{PLACE}  autoScaling:\n    minCapacity: 3\n    maxCapacity: 1\n"),
            "minCapacity must not be greater than maxCapacity",
        ),
    ]
}

fn task_cases() -> Vec<Case> {
    let k = "EcsTask";
    vec![
        (
            k,
            "  cluster: a\n".into(),
            "set exactly one of taskDefinitionRef",
        ),
        (k, format!("{PLACE}  count: 0\n"), "count"),
        (k, format!("{PLACE}  count: 11\n"), "count"),
        (k, format!("{PLACE}  backoffLimit: -2\n"), "backoffLimit"),
        (
            k,
            format!("{PLACE}  tags:\n    ecs.operator.dev/run: x\n"),
            "reserved for the operator's own tags",
        ),
        (
            k,
            format!("{PLACE}  activeDeadlineSeconds: 0\n"),
            "activeDeadlineSeconds",
        ),
    ]
}

fn scheduled_cases() -> Vec<Case> {
    let k = "EcsScheduledTask";
    let template = "  template:\n    cluster: a\n    taskDefinition: f:1\n";
    vec![
        (
            k,
            format!("  schedule: \"every day\"\n{template}"),
            "schedule must be five cron fields",
        ),
        (
            k,
            format!("  schedule: \"0 7 ? * MON-FRI *\"\n{template}"),
            "schedule must be five cron fields",
        ),
        (
            k,
            format!("  schedule: \"@daily\"\n  concurrencyPolicy: Sometimes\n{template}"),
            "Unsupported value: \"Sometimes\"",
        ),
        (
            k,
            "  schedule: \"@daily\"\n".into(),
            "template: Required value",
        ),
        (
            k,
            format!("  schedule: \"@daily\"\n  suspend: \"sometimes\"\n{template}"),
            "must be of type boolean",
        ),
    ]
}

fn capacity_provider_cases() -> Vec<Case> {
    let k = "EcsCapacityProvider";
    vec![
        (k, "  name: ecs-gpu\n  autoScalingGroupName: g\n".into(), "ECS reserves names starting with aws, ecs or fargate"),
        (k, "  name: Fargate-x\n  autoScalingGroupName: g\n".into(), "ECS reserves names starting with aws, ecs or fargate"),
        (
            k,
            "  autoScalingGroupName: g\n  autoScalingGroupArn: arn:aws:autoscaling:eu-west-1:1:autoScalingGroup:x:autoScalingGroupName/g\n".into(),
            "set exactly one of autoScalingGroupArn and autoScalingGroupName",
        ),
        (k, "  managedTerminationProtection: ENABLED\n  autoScalingGroupName: g\n".into(), "managedTerminationProtection ENABLED needs managedScaling.status ENABLED"),
        (
            k,
            "  autoScalingGroupName: g\n  managedScaling:\n    status: ENABLED\n    targetCapacity: 101\n".into(),
            "targetCapacity",
        ),
        (
            k,
            "  autoScalingGroupName: g\n  managedScaling:\n    status: ENABLED\n    minimumScalingStepSize: 10\n    maximumScalingStepSize: 2\n".into(),
            "minimumScalingStepSize must not be greater than maximumScalingStepSize",
        ),
    ]
}

fn manifest(kind: &str, name: &str, spec: &str) -> String {
    format!(
        "apiVersion: ecs.operator.dev/v1alpha1\nkind: {kind}\nmetadata:\n  name: {name}\nspec:\n{spec}"
    )
}

/// What ECS holds, as far as a bad manifest could have touched it.
async fn ecs_snapshot(ctx: &TestContext) -> (Vec<String>, Vec<String>) {
    let clusters = ctx.ecs_direct.list_clusters().send().await.unwrap();
    let families = ctx
        .ecs_direct
        .list_task_definition_families()
        .send()
        .await
        .unwrap();
    let mut clusters = clusters.cluster_arns().to_vec();
    let mut families = families.families().to_vec();
    clusters.retain(|c| c.contains(&ctx.prefix));
    families.retain(|f| f.contains(&ctx.prefix));
    (clusters, families)
}

#[tokio::test]
async fn every_kind_refuses_bad_manifests_with_a_message_and_ecs_is_untouched() {
    let ctx = TestContext::new("bad-input").await;
    crate::support::install_crds(&ctx.kube).await;
    let before = ecs_snapshot(&ctx).await;
    let cases: Vec<Case> = [
        cluster_cases(),
        task_definition_cases(),
        service_cases(),
        task_cases(),
        scheduled_cases(),
        capacity_provider_cases(),
    ]
    .concat();
    assert!(cases.len() >= 40, "{} cases", cases.len());
    let mut failures = Vec::new();
    for (i, (kind, spec, want)) in cases.iter().enumerate() {
        let name = ctx.name(&format!("bad-{i}"));
        let text = manifest(kind, &name, spec);
        let (ok, out) = ctx.kubectl(&["apply", "-f", "-"], Some(&text)).await;
        if ok || !out.contains(want) {
            failures.push(format!(
                "case {i} ({kind}): accepted={ok}, want {want:?} in: {out}\n{text}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n---\n"));
    assert_eq!(
        ecs_snapshot(&ctx).await,
        before,
        "a refused manifest changed ECS"
    );
}

#[tokio::test]
async fn references_that_cannot_resolve_wait_and_say_why() {
    let ctx = TestContext::new("bad-refs").await;
    let op = ctx.start_operator(&[]).await;
    let before = ecs_snapshot(&ctx).await;
    let svc = ctx.name("orphan-svc");
    ctx.apply(&manifest(
        "EcsService",
        &svc,
        "  clusterRef:\n    name: no-such-cluster\n  taskDefinition: f:1\n",
    ))
    .await;
    let task = ctx.name("orphan-task");
    ctx.apply(&manifest(
        "EcsTask",
        &task,
        "  cluster: a\n  taskDefinitionRef:\n    name: no-such-td\n",
    ))
    .await;
    let waiting = |reason: &'static str, name: &'static str| {
        move |conditions: &[ecs_operator::api::common::Condition]| {
            conditions.iter().any(|c| {
                c.type_ == "Ready"
                    && c.status == "False"
                    && c.reason == reason
                    && c.message.contains(name)
            })
        }
    };
    let says = waiting("WaitingForReference", "no-such-cluster");
    wait_for::<EcsService>(&ctx, &svc, 60, "the service waits for its cluster", |o| {
        o.status.as_ref().is_some_and(|s| says(&s.conditions))
    })
    .await;
    let says = waiting("WaitingForReference", "no-such-td");
    wait_for::<EcsTask>(
        &ctx,
        &task,
        60,
        "the task waits for its task definition",
        |o| o.status.as_ref().is_some_and(|s| says(&s.conditions)),
    )
    .await;
    assert_eq!(
        ecs_snapshot(&ctx).await,
        before,
        "waiting resources changed ECS"
    );
    op.stop().await;
}
