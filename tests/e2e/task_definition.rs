//! EcsTaskDefinition end to end on the real apiserver and ECS endpoint.

use aws_sdk_ecs::types::TaskDefinitionStatus;
use ecs_operator::api::common::{UID_TAG, is_condition_true};
use ecs_operator::api::task_definition::EcsTaskDefinition;
use kube::api::{Api, DeleteParams};

use crate::support::{TestContext, eventually, sum_metric};

fn manifest(name: &str, image: &str, env: &[(&str, &str)], extra: &str) -> String {
    let env: String = env
        .iter()
        .map(|(k, v)| format!("      - name: {k}\n        value: \"{v}\"\n"))
        .collect();
    format!(
        "apiVersion: ecs.operator.dev/v1alpha1
kind: EcsTaskDefinition
metadata:
  name: {name}
spec:
  requiresCompatibilities: [FARGATE]
  networkMode: awsvpc
  cpu: \"256\"
  memory: \"512\"
{extra}  containerDefinitions:
    - name: web
      image: {image}
      portMappings:
        - containerPort: 80
      environment:
{env}"
    )
}

async fn wait_current(ctx: &TestContext, name: &str) -> EcsTaskDefinition {
    let api = Api::<EcsTaskDefinition>::namespaced(ctx.kube.clone(), &ctx.namespace);
    eventually(
        60,
        &format!("{name} Ready for its current generation"),
        || async {
            let o = api.get(name).await.ok()?;
            let s = o.status.as_ref()?;
            (s.observed_generation == o.metadata.generation
                && is_condition_true(&s.conditions, "Ready"))
            .then_some(o)
        },
    )
    .await
}

async fn active_revisions(ctx: &TestContext, family: &str) -> Vec<i32> {
    let out = ctx
        .ecs
        .list_task_definitions()
        .family_prefix(family)
        .status(TaskDefinitionStatus::Active)
        .send()
        .await
        .unwrap();
    let mut revs: Vec<i32> = out
        .task_definition_arns()
        .iter()
        .filter(|a| ecs_operator::ecs::task_definition::arn_family(a) == Some(family))
        .filter_map(|a| ecs_operator::ecs::task_definition::arn_revision(a))
        .collect();
    revs.sort();
    revs
}

fn registrations(metrics: &str) -> u64 {
    sum_metric(metrics, "ecs_operator_aws_requests_total", |l| {
        l.contains("operation=\"RegisterTaskDefinition\"") && l.contains("outcome=\"success\"")
    })
}

#[tokio::test]
async fn one_revision_per_real_change_none_for_reapply_or_reordering() {
    let ctx = TestContext::new("td-revisions").await;
    let op = ctx.start_operator(&[]).await;
    let name = ctx.name("web");
    ctx.apply(&manifest(
        &name,
        "nginx:1.27",
        &[("A", "1"), ("B", "2")],
        "",
    ))
    .await;
    let o = wait_current(&ctx, &name).await;
    let s = o.status.clone().unwrap();
    assert_eq!(s.latest_revision, Some(1));
    assert_eq!(s.family.as_deref(), Some(name.as_str()));
    assert!(
        s.latest_arn
            .as_deref()
            .is_some_and(|a| a.ends_with(&format!("{name}:1")))
    );
    assert_eq!(active_revisions(&ctx, &name).await, vec![1]);
    let tags = ctx
        .ecs
        .describe_task_definition()
        .task_definition(format!("{name}:1"))
        .include(aws_sdk_ecs::types::TaskDefinitionField::Tags)
        .send()
        .await
        .unwrap();
    let tags = ecs_operator::ecs::tags_from_sdk(tags.tags());
    assert_eq!(tags.get(UID_TAG), o.metadata.uid.as_ref());

    // Same manifest again, then env reordered (a spec change ECS treats as equal).
    ctx.apply(&manifest(
        &name,
        "nginx:1.27",
        &[("A", "1"), ("B", "2")],
        "",
    ))
    .await;
    ctx.apply(&manifest(
        &name,
        "nginx:1.27",
        &[("B", "2"), ("A", "1")],
        "",
    ))
    .await;
    let o = wait_current(&ctx, &name).await;
    assert_eq!(
        o.metadata.generation,
        Some(2),
        "the reorder is a new generation"
    );
    assert_eq!(o.status.unwrap().latest_revision, Some(1));
    assert_eq!(registrations(&op.metrics().await), 1);

    // A new image: exactly one new revision.
    ctx.apply(&manifest(
        &name,
        "nginx:1.28",
        &[("B", "2"), ("A", "1")],
        "",
    ))
    .await;
    let o = wait_current(&ctx, &name).await;
    assert_eq!(o.status.unwrap().latest_revision, Some(2));
    assert_eq!(registrations(&op.metrics().await), 2);
    assert_eq!(active_revisions(&ctx, &name).await, vec![1, 2]);

    let (ok, table) = ctx.kubectl(&["get", "ecstd", &name], None).await;
    assert!(ok, "{table}");
    for col in ["FAMILY", "REVISION", "READY"] {
        assert!(table.contains(col), "{table}");
    }
    op.stop().await;
}

#[tokio::test]
async fn history_is_pruned_past_the_limit() {
    let ctx = TestContext::new("td-history").await;
    let op = ctx.start_operator(&[]).await;
    let name = ctx.name("job");
    for (i, image) in ["busybox:1", "busybox:2", "busybox:3", "busybox:4"]
        .iter()
        .enumerate()
    {
        ctx.apply(&manifest(&name, image, &[], "  revisionHistoryLimit: 2\n"))
            .await;
        let o = wait_current(&ctx, &name).await;
        assert_eq!(o.status.unwrap().latest_revision, Some(i as i32 + 1));
    }
    let o = wait_current(&ctx, &name).await;
    let revs: Vec<i32> = o
        .status
        .unwrap()
        .revisions
        .iter()
        .map(|r| r.revision)
        .collect();
    assert_eq!(revs, vec![4, 3]);
    assert_eq!(active_revisions(&ctx, &name).await, vec![3, 4]);
    op.stop().await;
}

#[tokio::test]
async fn foreign_family_is_not_touched_until_adopted() {
    let ctx = TestContext::new("td-adopt").await;
    let op = ctx.start_operator(&[]).await;
    let name = ctx.name("legacy");
    ctx.ecs
        .register_task_definition()
        .family(&name)
        .container_definitions(
            aws_sdk_ecs::types::ContainerDefinition::builder()
                .name("web")
                .image("nginx:1.0")
                .memory(128)
                .build(),
        )
        .send()
        .await
        .unwrap();
    ctx.apply(&manifest(&name, "nginx:1.27", &[], "")).await;
    let api = Api::<EcsTaskDefinition>::namespaced(ctx.kube.clone(), &ctx.namespace);
    let stalled = eventually(60, "Stalled NotOwned", || async {
        let o = api.get(&name).await.ok()?;
        o.status?
            .conditions
            .into_iter()
            .find(|c| c.type_ == "Stalled" && c.status == "True")
    })
    .await;
    assert_eq!(stalled.reason, "NotOwned");
    assert_eq!(
        active_revisions(&ctx, &name).await,
        vec![1],
        "nothing registered"
    );

    ctx.apply(&manifest(
        &name,
        "nginx:1.27",
        &[],
        "  adoptExisting: true\n",
    ))
    .await;
    let o = wait_current(&ctx, &name).await;
    assert_eq!(o.status.unwrap().latest_revision, Some(2));
    op.stop().await;
}

#[tokio::test]
async fn deletion_policies_for_revisions() {
    let ctx = TestContext::new("td-delete").await;
    let op = ctx.start_operator(&[]).await;
    let gone = ctx.name("gone");
    let kept = ctx.name("kept");
    ctx.apply(&manifest(&gone, "nginx:1", &[], "")).await;
    ctx.apply(&manifest(
        &kept,
        "nginx:1",
        &[],
        "  deletionPolicy: Orphan\n",
    ))
    .await;
    wait_current(&ctx, &gone).await;
    wait_current(&ctx, &kept).await;
    let api = Api::<EcsTaskDefinition>::namespaced(ctx.kube.clone(), &ctx.namespace);
    for n in [&gone, &kept] {
        api.delete(n, &DeleteParams::default()).await.unwrap();
        eventually(60, "resource gone", || async {
            api.get_opt(n).await.unwrap().is_none().then_some(())
        })
        .await;
    }
    assert!(active_revisions(&ctx, &gone).await.is_empty());
    assert_eq!(active_revisions(&ctx, &kept).await, vec![1]);
    op.stop().await;
}

#[tokio::test]
async fn invalid_task_definitions_are_refused_with_clear_messages() {
    let ctx = TestContext::new("td-admission").await;
    crate::support::install_crds(&ctx.kube).await;
    let bad = [
        (
            "apiVersion: ecs.operator.dev/v1alpha1\nkind: EcsTaskDefinition\nmetadata:\n  name: no-awsvpc\nspec:\n  requiresCompatibilities: [FARGATE]\n  networkMode: bridge\n  cpu: \"256\"\n  memory: \"512\"\n  containerDefinitions:\n  - {name: a, image: x}\n",
            "FARGATE requires networkMode: awsvpc",
        ),
        (
            "apiVersion: ecs.operator.dev/v1alpha1\nkind: EcsTaskDefinition\nmetadata:\n  name: bad-size\nspec:\n  requiresCompatibilities: [FARGATE]\n  networkMode: awsvpc\n  cpu: \"256\"\n  memory: \"4096\"\n  containerDefinitions:\n  - {name: a, image: x}\n",
            "not a valid FARGATE combination",
        ),
        (
            "apiVersion: ecs.operator.dev/v1alpha1\nkind: EcsTaskDefinition\nmetadata:\n  name: dup\nspec:\n  containerDefinitions:\n  - {name: a, image: img-1}\n  - {name: a, image: img-2}\n",
            "container names must be unique",
        ),
        (
            "apiVersion: ecs.operator.dev/v1alpha1\nkind: EcsTaskDefinition\nmetadata:\n  name: empty\nspec:\n  containerDefinitions: []\n",
            "containerDefinitions",
        ),
        (
            "apiVersion: ecs.operator.dev/v1alpha1\nkind: EcsTaskDefinition\nmetadata:\n  name: reserved-tag\nspec:\n  tags: {\"aws:x\": \"1\"}\n  containerDefinitions:\n  - {name: a, image: x}\n",
            "tag keys may not start with 'aws:'",
        ),
    ];
    // ECS's tag limits (Tag data type): `aws:` in any case, value length, 50 in all
    // (the operator adds 2 of its own to a task definition).
    let many: Vec<String> = (0..49).map(|i| format!("\"k{i}\": v")).collect();
    let tag_cases = [
        (
            "upper-aws",
            "{\"AWS:x\": \"1\"}".to_string(),
            "tag keys may not start with 'aws:'",
        ),
        (
            "long-value",
            format!("{{\"k\": \"{}\"}}", "v".repeat(257)),
            "tag values of up to 256 characters",
        ),
        (
            "too-many",
            format!("{{{}}}", many.join(", ")),
            "operator adds 2 of its own, so spec.tags may have at most 48",
        ),
    ];
    let tag_yaml: Vec<(String, &str)> = tag_cases
        .iter()
        .map(|(name, tags, expect)| {
            (
                format!(
                    "apiVersion: ecs.operator.dev/v1alpha1\nkind: EcsTaskDefinition\nmetadata:\n  name: {name}\nspec:\n  tags: {tags}\n  containerDefinitions:\n  - {{name: a, image: x}}\n"
                ),
                *expect,
            )
        })
        .collect();
    let bad = bad.iter().map(|(y, e)| (y.to_string(), *e)).chain(tag_yaml);
    for (yaml, expect) in bad {
        let yaml = yaml.as_str();
        let (ok, out) = ctx.kubectl(&["apply", "-f", "-"], Some(yaml)).await;
        assert!(!ok, "accepted:\n{yaml}");
        assert!(out.contains(expect), "expected {expect:?} in:\n{out}");
    }
    let name = ctx.name("fam");
    ctx.apply(&manifest(&name, "x", &[], "  family: one\n"))
        .await;
    let (ok, out) = ctx
        .kubectl(
            &["apply", "-f", "-"],
            Some(&manifest(&name, "x", &[], "  family: two\n")),
        )
        .await;
    assert!(!ok);
    assert!(out.contains("family is immutable"), "{out}");

    // Over ECS's 64 KiB: refused before RegisterTaskDefinition, with the limit named.
    let op = ctx.start_operator(&[]).await;
    let big = ctx.name("big");
    ctx.apply(&format!(
        "apiVersion: ecs.operator.dev/v1alpha1\nkind: EcsTaskDefinition\nmetadata:\n  name: {big}\nspec:\n  containerDefinitions:\n  - name: a\n    image: x\n    environment:\n    - {{name: BIG, value: '{}'}}\n",
        "x".repeat(70 * 1024)
    ))
    .await;
    let o: EcsTaskDefinition =
        crate::support::wait_for(&ctx, &big, 30, "Stalled", |o: &EcsTaskDefinition| {
            o.status.as_ref().is_some_and(|s| {
                s.conditions
                    .iter()
                    .any(|c| c.type_ == "Stalled" && c.status == "True")
            })
        })
        .await;
    let stalled = o
        .status
        .unwrap()
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Stalled")
        .unwrap();
    assert_eq!(stalled.reason, "TooLarge");
    assert!(
        stalled.message.contains("65536 bytes (64 KiB)"),
        "{}",
        stalled.message
    );
    // Nothing was registered for it.
    let arns = ctx
        .ecs_direct
        .list_task_definitions()
        .family_prefix(&big)
        .send()
        .await
        .unwrap();
    assert!(arns.task_definition_arns().is_empty(), "{arns:?}");
    op.stop().await;
}
