//! EcsCluster end to end: kubectl -> real apiserver -> operator binary -> ECS endpoint.

use std::collections::BTreeMap;

use aws_sdk_ecs::types::{ClusterField, ClusterSetting, ClusterSettingName, Tag};
use ecs_operator::api::cluster::EcsCluster;
use ecs_operator::api::common::{Condition, OWNER_TAG, UID_TAG, is_condition_true};
use ecs_operator::ecs::tags_from_sdk;
use kube::api::{Api, DeleteParams};
use kube::runtime::wait::await_condition;

use crate::support::{TestContext, events_for, eventually};

fn manifest(name: &str, extra_spec: &str) -> String {
    format!(
        "apiVersion: ecs.operator.dev/v1alpha1\nkind: EcsCluster\nmetadata:\n  name: {name}\nspec:\n{extra_spec}"
    )
}

async fn ecs_cluster(ctx: &TestContext, name: &str) -> Option<aws_sdk_ecs::types::Cluster> {
    ctx.ecs
        .describe_clusters()
        .clusters(name)
        .include(ClusterField::Tags)
        .include(ClusterField::Settings)
        .send()
        .await
        .unwrap()
        .clusters()
        .iter()
        .find(|c| c.status() != Some("INACTIVE"))
        .cloned()
}

async fn wait_condition(ctx: &TestContext, name: &str, type_: &str) -> EcsCluster {
    let api = Api::<EcsCluster>::namespaced(ctx.kube.clone(), &ctx.namespace);
    let t = type_.to_string();
    let res = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        await_condition(api.clone(), name, move |o: Option<&EcsCluster>| {
            o.and_then(|o| o.status.as_ref())
                .is_some_and(|s| is_condition_true(&s.conditions, &t))
        }),
    )
    .await;
    match res {
        Ok(Ok(Some(o))) => o,
        _ => {
            let now = api.get_opt(name).await.ok().flatten();
            panic!(
                "{name} never became {type_}; now: {:#?}",
                now.map(|o| o.status)
            )
        }
    }
}

/// Waits for Stalled=True and returns that condition.
async fn wait_stalled(ctx: &TestContext, name: &str) -> Condition {
    let obj = wait_condition(ctx, name, "Stalled").await;
    obj.status
        .into_iter()
        .flat_map(|s| s.conditions)
        .find(|c| c.type_ == "Stalled" && c.status == "True")
        .expect("Stalled condition")
}

#[tokio::test]
async fn cluster_is_created_ready_tagged_and_listed() {
    let ctx = TestContext::new("cluster-ready").await;
    let op = ctx.start_operator(&[]).await;
    let name = ctx.name("main");
    ctx.apply(&manifest(
        &name,
        "  settings:\n    containerInsights: enabled\n  tags:\n    team: payments\n",
    ))
    .await;
    let obj = wait_condition(&ctx, &name, "Ready").await;
    let status = obj.status.clone().unwrap();
    assert_eq!(status.observed_generation, obj.metadata.generation);
    assert_eq!(status.status.as_deref(), Some("ACTIVE"));
    assert!(status.arn.as_deref().is_some_and(|a| a.ends_with(&name)));
    assert!(is_condition_true(&status.conditions, "Ready"));
    assert!(!is_condition_true(&status.conditions, "Stalled"));
    assert!(!is_condition_true(&status.conditions, "Reconciling"));
    assert!(
        obj.metadata
            .finalizers
            .iter()
            .flatten()
            .any(|f| f == ecs_operator::api::common::FINALIZER)
    );

    let c = ecs_cluster(&ctx, &name).await.expect("cluster in ECS");
    let tags = tags_from_sdk(c.tags());
    assert_eq!(tags.get("team").map(String::as_str), Some("payments"));
    assert_eq!(
        tags.get(OWNER_TAG),
        Some(&format!("{}/{}", ctx.namespace, name))
    );
    assert_eq!(tags.get(UID_TAG), obj.metadata.uid.as_ref());
    assert!(
        c.settings()
            .iter()
            .any(|s| s.name() == Some(&ClusterSettingName::ContainerInsights)
                && s.value() == Some("enabled"))
    );

    let (ok, table) = ctx.kubectl(&["get", "ecsclusters"], None).await;
    assert!(ok, "{table}");
    let header = table.lines().next().unwrap_or_default();
    for col in ["ECS NAME", "STATUS", "SERVICES", "RUNNING", "READY", "AGE"] {
        assert!(header.contains(col), "missing column {col}: {table}");
    }
    assert!(
        table.contains(&name) && table.contains("ACTIVE") && table.contains("True"),
        "{table}"
    );
    let (ok, short) = ctx.kubectl(&["get", "ecscl", &name], None).await;
    assert!(ok, "short name ecscl: {short}");
    assert!(events_for(&ctx, &name).await.contains("Created"));
    op.stop().await;
}

#[tokio::test]
async fn unchanged_reapply_costs_no_ecs_write() {
    let ctx = TestContext::new("cluster-idle").await;
    let op = ctx.start_operator(&[]).await;
    let name = ctx.name("idle");
    let m = manifest(&name, "  tags:\n    a: b\n");
    ctx.apply(&m).await;
    wait_condition(&ctx, &name, "Ready").await;
    // Let the status write's own watch event settle.
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let writes = op.ecs_writes().await;
    let reconciles = op.reconciles("EcsCluster").await;
    assert!(writes >= 1, "the create was a write");

    ctx.apply(&m).await;
    // A label change triggers a reconcile without touching the spec.
    let (ok, out) = ctx
        .kubectl(&["label", "ecscluster", &name, "touched=yes"], None)
        .await;
    assert!(ok, "{out}");
    eventually(30, "a reconcile after the label change", || async {
        (op.reconciles("EcsCluster").await > reconciles).then_some(())
    })
    .await;
    assert_eq!(op.ecs_writes().await, writes, "{}", op.metrics().await);
    op.stop().await;
}

#[tokio::test]
async fn out_of_band_drift_is_corrected_at_resync_with_an_event() {
    let ctx = TestContext::new("cluster-drift").await;
    let op = ctx.start_operator(&["--resync-interval", "2s"]).await;
    let name = ctx.name("drift");
    ctx.apply(&manifest(
        &name,
        "  settings:\n    containerInsights: enabled\n  tags:\n    env: prod\n",
    ))
    .await;
    let obj = wait_condition(&ctx, &name, "Ready").await;
    let arn = obj.status.unwrap().arn.unwrap();

    ctx.ecs
        .update_cluster()
        .cluster(&name)
        .settings(
            ClusterSetting::builder()
                .name(ClusterSettingName::ContainerInsights)
                .value("disabled")
                .build(),
        )
        .send()
        .await
        .unwrap();
    ctx.ecs
        .tag_resource()
        .resource_arn(&arn)
        .tags(Tag::builder().key("env").value("dev").build())
        .tags(Tag::builder().key("someone-else").value("x").build())
        .send()
        .await
        .unwrap();

    let tags: BTreeMap<String, String> = eventually(30, "drift corrected in ECS", || async {
        let c = ecs_cluster(&ctx, &name).await?;
        let ci_ok = c.settings().iter().any(|s| {
            s.name() == Some(&ClusterSettingName::ContainerInsights) && s.value() == Some("enabled")
        });
        let tags = tags_from_sdk(c.tags());
        (ci_ok && tags.get("env").map(String::as_str) == Some("prod")).then_some(tags)
    })
    .await;
    // Tags set by others are left alone.
    assert_eq!(tags.get("someone-else").map(String::as_str), Some("x"));
    // One DriftCorrected Event per ECS action, each naming its fields.
    let events = eventually(15, "DriftCorrected events naming both fields", || async {
        let e = events_for(&ctx, &name).await;
        let drift: Vec<&str> = e
            .lines()
            .filter(|l| l.starts_with("DriftCorrected"))
            .collect();
        (drift
            .iter()
            .any(|l| l.contains("settings.containerInsights"))
            && drift.iter().any(|l| l.contains("tags[env]")))
        .then_some(e)
    })
    .await;
    assert!(!events.contains("someone-else"), "{events}");
    op.stop().await;
}

#[tokio::test]
async fn foreign_cluster_is_not_touched_until_adopted() {
    let ctx = TestContext::new("cluster-adopt").await;
    let op = ctx.start_operator(&[]).await;
    let name = ctx.name("legacy");
    ctx.ecs
        .create_cluster()
        .cluster_name(&name)
        .tags(Tag::builder().key("made-by").value("terraform").build())
        .send()
        .await
        .unwrap();
    let writes_before = op.ecs_writes().await;

    ctx.apply(&manifest(&name, "  tags:\n    team: a\n")).await;
    let stalled = wait_stalled(&ctx, &name).await;
    assert_eq!(stalled.reason, "NotOwned");
    assert!(
        stalled.message.contains("adoptExisting"),
        "{}",
        stalled.message
    );
    assert_eq!(
        op.ecs_writes().await,
        writes_before,
        "nothing written to a foreign cluster"
    );
    let tags = tags_from_sdk(ecs_cluster(&ctx, &name).await.unwrap().tags());
    assert!(!tags.contains_key(UID_TAG) && !tags.contains_key("team"));

    ctx.apply(&manifest(
        &name,
        "  adoptExisting: true\n  tags:\n    team: a\n",
    ))
    .await;
    let obj = wait_condition(&ctx, &name, "Ready").await;
    let tags = tags_from_sdk(ecs_cluster(&ctx, &name).await.unwrap().tags());
    assert_eq!(tags.get(UID_TAG), obj.metadata.uid.as_ref());
    assert_eq!(tags.get("team").map(String::as_str), Some("a"));
    assert_eq!(tags.get("made-by").map(String::as_str), Some("terraform"));
    assert!(events_for(&ctx, &name).await.contains("Adopted"));
    op.stop().await;
}

async fn delete_and_wait_gone(ctx: &TestContext, name: &str) {
    let api = Api::<EcsCluster>::namespaced(ctx.kube.clone(), &ctx.namespace);
    api.delete(name, &DeleteParams::default()).await.unwrap();
    eventually(60, "the EcsCluster to be gone", || async {
        api.get_opt(name).await.unwrap().is_none().then_some(())
    })
    .await;
}

#[tokio::test]
async fn deletion_policy_delete_and_orphan() {
    let ctx = TestContext::new("cluster-delete").await;
    let op = ctx.start_operator(&[]).await;
    let gone = ctx.name("gone");
    let kept = ctx.name("kept");
    let vanished = ctx.name("vanished");
    ctx.apply(&manifest(&gone, "  deletionPolicy: Delete\n"))
        .await;
    ctx.apply(&manifest(
        &kept,
        "  deletionPolicy: Orphan\n  tags:\n    keep: me\n",
    ))
    .await;
    ctx.apply(&manifest(&vanished, "  tags: {}\n")).await;
    for n in [&gone, &kept, &vanished] {
        wait_condition(&ctx, n, "Ready").await;
    }

    delete_and_wait_gone(&ctx, &gone).await;
    assert!(
        ecs_cluster(&ctx, &gone).await.is_none(),
        "Delete policy deletes"
    );

    delete_and_wait_gone(&ctx, &kept).await;
    let c = ecs_cluster(&ctx, &kept)
        .await
        .expect("Orphan policy keeps the cluster");
    let tags = tags_from_sdk(c.tags());
    assert!(
        !tags.contains_key(UID_TAG) && !tags.contains_key(OWNER_TAG),
        "{tags:?}"
    );
    assert_eq!(tags.get("keep").map(String::as_str), Some("me"));

    // Deleted in ECS behind our back: the finalizer must not stick.
    ctx.ecs
        .delete_cluster()
        .cluster(&vanished)
        .send()
        .await
        .unwrap();
    delete_and_wait_gone(&ctx, &vanished).await;
    op.stop().await;
}

#[tokio::test]
async fn delete_waits_while_services_remain() {
    let ctx = TestContext::new("cluster-busy").await;
    let op = ctx.start_operator(&[]).await;
    let name = ctx.name("busy");
    ctx.apply(&manifest(&name, "  tags: {}\n")).await;
    wait_condition(&ctx, &name, "Ready").await;
    let family = ctx.name("td");
    ctx.ecs
        .register_task_definition()
        .family(&family)
        .container_definitions(
            aws_sdk_ecs::types::ContainerDefinition::builder()
                .name("app")
                .image("busybox")
                .memory(128)
                .build(),
        )
        .send()
        .await
        .unwrap();
    ctx.ecs
        .create_service()
        .cluster(&name)
        .service_name("someone-elses")
        .task_definition(format!("{family}:1"))
        .desired_count(1)
        .send()
        .await
        .unwrap();

    let api = Api::<EcsCluster>::namespaced(ctx.kube.clone(), &ctx.namespace);
    api.delete(&name, &DeleteParams::default()).await.unwrap();
    let stalled = wait_stalled(&ctx, &name).await;
    assert_eq!(stalled.reason, "ServicesRemain");
    assert!(
        stalled.message.contains("1 active service")
            && stalled.message.contains("(services: someone-elses)"),
        "{}",
        stalled.message
    );
    assert!(ecs_cluster(&ctx, &name).await.is_some());
    let events = eventually(15, "a DeleteBlocked event", || async {
        let e = events_for(&ctx, &name).await;
        e.contains("DeleteBlocked").then_some(e)
    })
    .await;
    assert!(events.contains("active service"), "{events}");

    // The service goes away (by its owner): the cluster delete then completes.
    ctx.ecs
        .delete_service()
        .cluster(&name)
        .service("someone-elses")
        .force(true)
        .send()
        .await
        .unwrap();
    eventually(60, "the EcsCluster to be gone", || async {
        api.get_opt(&name).await.unwrap().is_none().then_some(())
    })
    .await;
    assert!(ecs_cluster(&ctx, &name).await.is_none());
    op.stop().await;
}

#[tokio::test]
async fn invalid_manifests_are_refused_at_admission_with_clear_messages() {
    let ctx = TestContext::new("cluster-admission").await;
    crate::support::install_crds(&ctx.kube).await;
    let cases = [
        (
            "  tags:\n    aws:owner: me\n",
            "tag keys may not start with 'aws:'",
        ),
        (
            "  capacityProviders: [FARGATE]\n  defaultCapacityProviderStrategy:\n  - capacityProvider: FARGATE\n    weight: 5000\n",
            "weight",
        ),
        (
            "  capacityProviders: [FARGATE]\n  defaultCapacityProviderStrategy:\n  - capacityProvider: FARGATE_SPOT\n    weight: 1\n",
            "may only name providers listed in capacityProviders",
        ),
        (
            "  deletionPolicy: Destroy\n",
            "Unsupported value: \"Destroy\"",
        ),
        (
            "  settings:\n    containerInsights: on\n",
            "containerInsights",
        ),
    ];
    for (i, (spec, expect)) in cases.iter().enumerate() {
        let (ok, out) = ctx
            .kubectl(
                &["apply", "-f", "-"],
                Some(&manifest(&format!("bad-{i}"), spec)),
            )
            .await;
        assert!(!ok, "case {i} was accepted:\n{spec}");
        assert!(
            out.contains(expect),
            "case {i}: expected {expect:?} in:\n{out}"
        );
    }

    let name = ctx.name("fixed");
    ctx.apply(&manifest(&name, "  clusterName: first\n")).await;
    let (ok, out) = ctx
        .kubectl(
            &["apply", "-f", "-"],
            Some(&manifest(&name, "  clusterName: second\n")),
        )
        .await;
    assert!(!ok);
    assert!(out.contains("clusterName is immutable"), "{out}");
}
