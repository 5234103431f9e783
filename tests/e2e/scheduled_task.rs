//! EcsScheduledTask end to end: runs on the real clock (one slot per minute), owner
//! references, suspension, history pruning, invalid schedules. Missed-slot, DST and
//! concurrency rules are unit-tested against an injected clock in `schedule_plan`.

use ecs_operator::api::scheduled_task::EcsScheduledTask;
use ecs_operator::api::task::EcsTask;
use ecs_operator::reconcile::scheduled_task::{SCHEDULE_LABEL, SLOT_ANNOTATION};
use kube::api::{Api, ListParams, Patch, PatchParams};

use crate::support::{TestContext, ecs_cluster_and_td, eventually, wait_for};

/// `wait_for` typed for EcsScheduledTask.
async fn wait_sched(
    ctx: &TestContext,
    name: &str,
    secs: u64,
    what: &str,
    pred: impl Fn(&EcsScheduledTask) -> bool,
) -> EcsScheduledTask {
    wait_for(ctx, name, secs, what, pred).await
}

fn manifest(name: &str, body: &str) -> String {
    format!(
        "apiVersion: ecs.operator.dev/v1alpha1\nkind: EcsScheduledTask\nmetadata:\n  name: {name}\nspec:\n{body}"
    )
}

fn condition(o: &EcsScheduledTask, t: &str) -> Option<(String, String, String)> {
    o.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == t)
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

async fn runs(ctx: &TestContext, schedule: &str) -> Vec<EcsTask> {
    Api::<EcsTask>::namespaced(ctx.kube.clone(), &ctx.namespace)
        .list(&ListParams::default().labels(&format!("{SCHEDULE_LABEL}={schedule}")))
        .await
        .unwrap()
        .items
}

#[tokio::test]
async fn every_minute_schedule_starts_named_owned_runs() {
    let ctx = TestContext::new("sched-minute").await;
    let op = ctx.start_operator(&[]).await;
    let (cluster, td) = ecs_cluster_and_td(&ctx, "cron", "nightly").await;
    let name = ctx.name("report");
    ctx.apply(&manifest(
        &name,
        &format!(
            "  schedule: \"* * * * *\"\n  timeZone: Europe/Berlin\n  concurrencyPolicy: Forbid\n  template:\n    cluster: {cluster}\n    taskDefinition: {td}\n"
        ),
    ))
    .await;
    let o = wait_sched(&ctx, &name, 20, "Ready with a next slot", |o| {
        o.status
            .as_ref()
            .is_some_and(|s| s.next_schedule_time.is_some())
    })
    .await;
    assert_eq!(condition(&o, "Ready").unwrap().1, "Scheduled");
    let uid = o.metadata.uid.clone().unwrap();

    // The first slot is at most a minute away.
    let run = eventually(75, "a run for the first slot", || async {
        runs(&ctx, &name).await.into_iter().next()
    })
    .await;
    let slot: k8s_openapi::jiff::Timestamp = run.metadata.annotations.as_ref().unwrap()
        [SLOT_ANNOTATION]
        .parse()
        .unwrap();
    assert_eq!(slot.as_second() % 60, 0, "slots are whole minutes");
    assert_eq!(
        run.metadata.name.as_deref(),
        Some(format!("{name}-{}", slot.as_second() / 60).as_str())
    );
    let owner = &run.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(owner.uid, uid);
    assert_eq!(owner.controller, Some(true));
    assert_eq!(
        run.spec.placement.task_definition.as_deref(),
        Some(td.as_str())
    );

    // The run really runs in ECS, and the schedule lists it as active.
    let run_name = run.metadata.name.clone().unwrap();
    let api = Api::<EcsTask>::namespaced(ctx.kube.clone(), &ctx.namespace);
    eventually(30, "the run is Running", || async {
        let r = api.get(&run_name).await.ok()?;
        (r.status?.phase? == ecs_operator::api::task::Phase::Running).then_some(())
    })
    .await;
    let o = wait_sched(&ctx, &name, 20, "run listed as active", |o| {
        o.status
            .as_ref()
            .is_some_and(|s| s.active == vec![run_name.clone()] && s.last_schedule_time.is_some())
    })
    .await;
    assert_eq!(o.status.unwrap().active_count, 1);
    let (_, table) = ctx.kubectl(&["get", "ecssched", &name], None).await;
    for col in ["SCHEDULE", "SUSPEND", "ACTIVE", "LAST SCHEDULE", "AGE"] {
        assert!(table.contains(col), "{col}: {table}");
    }

    // Suspend: Ready, reason Suspended, no next slot.
    ctx.apply(&manifest(
        &name,
        &format!(
            "  schedule: \"* * * * *\"\n  timeZone: Europe/Berlin\n  concurrencyPolicy: Forbid\n  suspend: true\n  template:\n    cluster: {cluster}\n    taskDefinition: {td}\n"
        ),
    ))
    .await;
    let o = wait_sched(&ctx, &name, 20, "Suspended", |o| {
        condition(o, "Ready").is_some_and(|c| c.1 == "Suspended")
    })
    .await;
    assert!(o.status.unwrap().next_schedule_time.is_none());
    op.stop().await;
}

#[tokio::test]
async fn finished_runs_are_pruned_to_the_history_limits() {
    let ctx = TestContext::new("sched-history").await;
    crate::support::install_crds(&ctx.kube).await;
    let name = ctx.name("hist");
    ctx.apply(&manifest(
        &name,
        "  schedule: \"@daily\"\n  suspend: true\n  successfulRunsHistoryLimit: 1\n  failedRunsHistoryLimit: 1\n  template:\n    cluster: none\n    taskDefinition: none:1\n",
    ))
    .await;
    let sched = Api::<EcsScheduledTask>::namespaced(ctx.kube.clone(), &ctx.namespace)
        .get(&name)
        .await
        .unwrap();
    let owner = kube::Resource::controller_owner_ref(&sched, &()).unwrap();
    let tasks = Api::<EcsTask>::namespaced(ctx.kube.clone(), &ctx.namespace);
    // Four finished runs (two of each outcome), made before the operator starts.
    for (i, phase) in ["Succeeded", "Succeeded", "Failed", "Failed"]
        .iter()
        .enumerate()
    {
        let run = format!("{name}-{}", 1000 + i);
        ctx.apply(&format!(
            "apiVersion: ecs.operator.dev/v1alpha1
kind: EcsTask
metadata:
  name: {run}
  labels: {{{SCHEDULE_LABEL}: {name}}}
  annotations: {{{SLOT_ANNOTATION}: \"2026-01-01T00:{:02}:00Z\"}}
  ownerReferences:
    - apiVersion: ecs.operator.dev/v1alpha1
      kind: EcsScheduledTask
      name: {name}
      uid: {}
      controller: true
spec:
  cluster: none
  taskDefinition: none:1
",
            i, owner.uid
        ))
        .await;
        tasks
            .patch_status(
                &run,
                &PatchParams::apply("e2e").force(),
                &Patch::Apply(serde_json::json!({
                    "apiVersion": "ecs.operator.dev/v1alpha1",
                    "kind": "EcsTask",
                    "status": {"phase": phase, "attempts": 1, "completionTime": format!("2026-01-01T00:{:02}:30Z", i)}
                })),
            )
            .await
            .unwrap();
    }
    let op = ctx.start_operator(&[]).await;
    let left = eventually(30, "history pruned to 1 + 1", || async {
        let mut names: Vec<String> = runs(&ctx, &name)
            .await
            .into_iter()
            .filter(|r| r.metadata.deletion_timestamp.is_none())
            .filter_map(|r| r.metadata.name)
            .collect();
        names.sort();
        (names.len() == 2).then_some(names)
    })
    .await;
    // The newest of each outcome stays.
    assert_eq!(left, vec![format!("{name}-1001"), format!("{name}-1003")]);
    let o = wait_sched(&ctx, &name, 20, "lastSuccessfulTime", |o| {
        o.status
            .as_ref()
            .is_some_and(|s| s.last_successful_time.is_some())
    })
    .await;
    assert_eq!(
        o.status.unwrap().last_successful_time.as_deref(),
        Some("2026-01-01T00:01:30Z")
    );
    op.stop().await;
}

#[tokio::test]
async fn invalid_schedules_are_refused_or_stalled_with_the_reason() {
    let ctx = TestContext::new("sched-invalid").await;
    let op = ctx.start_operator(&[]).await;
    let template = "  template:\n    cluster: c\n    taskDefinition: f:1\n";
    let (ok, out) = ctx
        .kubectl(
            &["apply", "-f", "-"],
            Some(&manifest(
                &ctx.name("four"),
                &format!("  schedule: \"* * * *\"\n{template}"),
            )),
        )
        .await;
    assert!(!ok);
    assert!(out.contains("schedule must be five cron fields"), "{out}");

    for (suffix, body, want) in [
        (
            "range",
            "  schedule: \"61 * * * *\"\n",
            "minute field has 61, outside 0-59",
        ),
        (
            "tz",
            "  schedule: \"@hourly\"\n  timeZone: Mars/Olympus\n",
            "unknown time zone",
        ),
    ] {
        let name = ctx.name(suffix);
        ctx.apply(&manifest(&name, &format!("{body}{template}")))
            .await;
        let o = wait_sched(&ctx, &name, 20, "Stalled", |o| {
            condition(o, "Stalled").is_some_and(|c| c.0 == "True")
        })
        .await;
        let (_, reason, message) = condition(&o, "Stalled").unwrap();
        assert_eq!(reason, "InvalidSchedule");
        assert!(message.contains(want), "{message}");
    }
    op.stop().await;
}
