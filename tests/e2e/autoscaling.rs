//! EcsService.spec.autoScaling end to end: the scalable target, target-tracking policy
//! and scheduled action in Application Auto Scaling (moto behind testenv's aas layer,
//! which checks services against the ECS endpoint), who owns the task count, and
//! deregistration.

use aws_sdk_applicationautoscaling::types::{ScalableDimension, ServiceNamespace};
use ecs_operator::api::service::EcsService;
use ecs_operator::api::service_scaling::CountOwner;

use crate::support::{
    TestContext, delete_and_wait_gone, ecs_cluster_and_td, env, events_for, eventually, sum_metric,
    wait_for,
};

fn aas() -> aws_sdk_applicationautoscaling::Client {
    use aws_sdk_applicationautoscaling::config::{BehaviorVersion, Credentials, Region};
    let endpoint = &env().aas_endpoint;
    assert!(
        !endpoint.is_empty(),
        "the test environment has no Application Auto Scaling endpoint"
    );
    let conf = aws_sdk_applicationautoscaling::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(testenv::REGION))
        .endpoint_url(endpoint)
        .credentials_provider(Credentials::new("test", "test", None, None, "e2e"))
        .build();
    aws_sdk_applicationautoscaling::Client::from_conf(conf)
}

/// (min, max) of the service's scalable target, None when there is none.
async fn target_range(cluster: &str, service: &str) -> Option<(i32, i32)> {
    let id = format!("service/{cluster}/{service}");
    let out = aas()
        .describe_scalable_targets()
        .service_namespace(ServiceNamespace::Ecs)
        .resource_ids(&id)
        .send()
        .await
        .unwrap();
    out.scalable_targets()
        .iter()
        .find(|t| t.resource_id() == id)
        .map(|t| (t.min_capacity(), t.max_capacity()))
}

async fn policies(
    cluster: &str,
    service: &str,
) -> Vec<aws_sdk_applicationautoscaling::types::ScalingPolicy> {
    aas()
        .describe_scaling_policies()
        .service_namespace(ServiceNamespace::Ecs)
        .resource_id(format!("service/{cluster}/{service}"))
        .send()
        .await
        .unwrap()
        .scaling_policies()
        .to_vec()
}

async fn actions(
    cluster: &str,
    service: &str,
) -> Vec<aws_sdk_applicationautoscaling::types::ScheduledAction> {
    aas()
        .describe_scheduled_actions()
        .service_namespace(ServiceNamespace::Ecs)
        .resource_id(format!("service/{cluster}/{service}"))
        .send()
        .await
        .unwrap()
        .scheduled_actions()
        .to_vec()
}

async fn ecs_desired_count(ctx: &TestContext, cluster: &str, service: &str) -> i32 {
    ctx.ecs_direct
        .describe_services()
        .cluster(cluster)
        .services(service)
        .send()
        .await
        .unwrap()
        .services()
        .first()
        .map(|s| s.desired_count())
        .unwrap_or(-1)
}

fn calls(metrics: &str, op: &str) -> u64 {
    let needle = format!("operation=\"{op}\"");
    sum_metric(metrics, "ecs_operator_aws_requests_total", |l| {
        l.contains(&needle)
    })
}

fn ready(o: &EcsService) -> bool {
    let Some(status) = &o.status else {
        return false;
    };
    status.observed_generation == o.metadata.generation
        && status
            .conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True")
}

fn manifest(name: &str, cluster: &str, td: &str, target_value: u32) -> String {
    format!(
        r#"apiVersion: ecs.operator.dev/v1alpha1
kind: EcsService
metadata:
  name: {name}
spec:
  cluster: {cluster}
  taskDefinition: {td}
  autoScaling:
    minCapacity: 2
    maxCapacity: 10
    targetTracking:
      - name: cpu
        predefinedMetric: ECSServiceAverageCPUUtilization
        targetValue: {target_value}
        scaleInCooldown: 120
    scheduled:
      - name: weekday-morning
        schedule: cron(0 7 ? * MON-FRI *)
        timezone: Europe/Berlin
        minCapacity: 4
        maxCapacity: 10
"#
    )
}

/// Reconciles of EcsServices so far, and the writes they sent (ECS and Application
/// Auto Scaling alike).
async fn reconciles_and_writes(op: &crate::support::Operator) -> (u64, u64) {
    (op.reconciles("EcsService").await, op.ecs_writes().await)
}

#[tokio::test]
async fn autoscaling_lands_exactly_owns_the_count_and_is_removed_cleanly() {
    let ctx = TestContext::new("svc-autoscaling").await;
    let op = ctx.start_operator(&[]).await;
    let (cluster, td) = ecs_cluster_and_td(&ctx, "cluster", "web").await;
    let name = ctx.name("web");
    ctx.apply(&manifest(&name, &cluster, &td, 60)).await;
    let svc = wait_for::<EcsService>(&ctx, &name, 120, "Ready with its scalable target", |o| {
        ready(o)
            && o.status
                .as_ref()
                .is_some_and(|s| s.auto_scaling.as_ref().is_some_and(|a| a.managed))
    })
    .await;
    let status = svc.status.clone().unwrap_or_default();
    assert_eq!(status.count_owner, Some(CountOwner::AutoScaling));

    // Exactly the spec in Application Auto Scaling; the service started at minCapacity.
    assert_eq!(target_range(&cluster, &name).await, Some((2, 10)));
    let found = policies(&cluster, &name).await;
    assert_eq!(found.len(), 1, "{found:?}");
    let tracking = found[0]
        .target_tracking_scaling_policy_configuration()
        .unwrap();
    assert_eq!(found[0].policy_name(), "cpu");
    assert_eq!(tracking.target_value(), 60.0);
    assert_eq!(tracking.scale_in_cooldown(), Some(120));
    assert_eq!(
        tracking
            .predefined_metric_specification()
            .map(|m| m.predefined_metric_type().as_str()),
        Some("ECSServiceAverageCPUUtilization")
    );
    let scheduled = actions(&cluster, &name).await;
    assert_eq!(scheduled.len(), 1, "{scheduled:?}");
    assert_eq!(scheduled[0].schedule(), "cron(0 7 ? * MON-FRI *)");
    assert_eq!(scheduled[0].timezone(), Some("Europe/Berlin"));
    let range = scheduled[0].scalable_target_action().unwrap();
    assert_eq!(
        (range.min_capacity(), range.max_capacity()),
        (Some(4), Some(10))
    );
    assert_eq!(ecs_desired_count(&ctx, &cluster, &name).await, 2);
    assert_eq!(
        status.auto_scaling.as_ref().map(|a| a.policies.len()),
        Some(1)
    );

    // targetValue 60 -> 70: one PutScalingPolicy, nothing else written.
    let before = op.metrics().await;
    ctx.apply(&manifest(&name, &cluster, &td, 70)).await;
    eventually(60, "the policy tracks 70", || async {
        let found = policies(&cluster, &name).await;
        let value = found
            .first()?
            .target_tracking_scaling_policy_configuration()?
            .target_value();
        (value == 70.0).then_some(())
    })
    .await;
    wait_for::<EcsService>(&ctx, &name, 60, "Ready at the new generation", ready).await;
    let after = op.metrics().await;
    assert_eq!(
        calls(&after, "PutScalingPolicy") - calls(&before, "PutScalingPolicy"),
        1
    );
    let writes = |m: &str| {
        sum_metric(m, "ecs_operator_aws_requests_total", |l| {
            !(l.contains("operation=\"Describe") || l.contains("operation=\"List"))
        })
    };
    assert_eq!(
        writes(&after) - writes(&before),
        1,
        "only the policy is written"
    );

    // Re-applied unchanged and woken by a label: zero writes.
    let (reconciles, writes_before) = reconciles_and_writes(&op).await;
    ctx.apply(&manifest(&name, &cluster, &td, 70)).await;
    ctx.kubectl(&["label", "ecssvc", &name, "touched=yes"], None)
        .await;
    eventually(60, "a reconcile after the label", || async {
        (op.reconciles("EcsService").await > reconciles).then_some(())
    })
    .await;
    assert_eq!(
        op.ecs_writes().await,
        writes_before,
        "an unchanged autoscaled service costs no write"
    );

    // The scaler moves ECS's count (here: by hand): the operator leaves it alone, and a
    // kubectl scale is reported, not applied.
    ctx.ecs_direct
        .update_service()
        .cluster(&cluster)
        .service(&name)
        .desired_count(5)
        .send()
        .await
        .unwrap();
    let (ok, out) = ctx
        .kubectl(&["scale", "ecssvc", &name, "--replicas=7"], None)
        .await;
    assert!(ok, "{out}");
    let events = eventually(
        60,
        "an Event saying the count belongs to the scaler",
        || async {
            let events = events_for(&ctx, &name).await;
            events.contains("CountOwnedElsewhere").then_some(events)
        },
    )
    .await;
    assert!(
        events.contains("spec.desiredCount 7 not applied"),
        "{events}"
    );
    wait_for::<EcsService>(&ctx, &name, 60, "Ready after the scale", ready).await;
    assert_eq!(
        ecs_desired_count(&ctx, &cluster, &name).await,
        5,
        "the scaler's count stays"
    );

    // autoScaling removed: the target (and with it the policy and action) is gone, and
    // spec.desiredCount (7, from kubectl scale) owns the count again.
    let (ok, out) = ctx
        .kubectl(
            &[
                "patch",
                "ecssvc",
                &name,
                "--type=json",
                "-p",
                r#"[{"op":"remove","path":"/spec/autoScaling"}]"#,
            ],
            None,
        )
        .await;
    assert!(ok, "{out}");
    eventually(60, "the scalable target deregistered", || async {
        target_range(&cluster, &name).await.is_none().then_some(())
    })
    .await;
    assert!(
        policies(&cluster, &name).await.is_empty(),
        "policies go with the target"
    );
    assert!(
        actions(&cluster, &name).await.is_empty(),
        "actions go with the target"
    );
    eventually(60, "spec.desiredCount applied again", || async {
        (ecs_desired_count(&ctx, &cluster, &name).await == 7).then_some(())
    })
    .await;
    let svc = wait_for::<EcsService>(&ctx, &name, 60, "Ready without autoScaling", ready).await;
    let status = svc.status.unwrap_or_default();
    assert_eq!(status.count_owner, Some(CountOwner::Spec));
    assert!(status.auto_scaling.is_none());
    let events = events_for(&ctx, &name).await;
    assert!(events.contains("owns the task count again"), "{events}");
    op.stop().await;
}

#[tokio::test]
async fn a_target_registered_elsewhere_owns_the_count_and_deletion_deregisters_ours() {
    let ctx = TestContext::new("svc-external-target").await;
    // A short resync: the sweep sees the out-of-band count change.
    let op = ctx.start_operator(&["--resync-interval", "4s"]).await;
    let (cluster, td) = ecs_cluster_and_td(&ctx, "cluster", "api").await;
    let plain = ctx.name("plain");
    ctx.apply(&format!(
        "apiVersion: ecs.operator.dev/v1alpha1\nkind: EcsService\nmetadata:\n  name: {plain}\nspec:\n  cluster: {cluster}\n  taskDefinition: {td}\n  desiredCount: 2\n"
    ))
    .await;
    wait_for::<EcsService>(&ctx, &plain, 120, "Ready", ready).await;
    // Someone registers a target for it outside the operator (once Application Auto
    // Scaling sees the new service) and scales it to 3.
    eventually(30, "a target registered by hand", || async {
        aas()
            .register_scalable_target()
            .service_namespace(ServiceNamespace::Ecs)
            .resource_id(format!("service/{cluster}/{plain}"))
            .scalable_dimension(ScalableDimension::EcsServiceDesiredCount)
            .min_capacity(1)
            .max_capacity(6)
            .send()
            .await
            .ok()
    })
    .await;
    ctx.ecs_direct
        .update_service()
        .cluster(&cluster)
        .service(&plain)
        .desired_count(3)
        .send()
        .await
        .unwrap();
    ctx.kubectl(&["label", "ecssvc", &plain, "look=again"], None)
        .await;
    let svc = wait_for::<EcsService>(&ctx, &plain, 60, "countOwner External", |o| {
        o.status
            .as_ref()
            .is_some_and(|s| s.count_owner == Some(CountOwner::External))
    })
    .await;
    assert_eq!(
        ecs_desired_count(&ctx, &cluster, &plain).await,
        3,
        "the external scaler's count stays"
    );
    assert!(
        svc.status.and_then(|s| s.auto_scaling).is_none(),
        "not reported as ours"
    );
    assert_eq!(
        target_range(&cluster, &plain).await,
        Some((1, 6)),
        "the foreign target is untouched"
    );

    // An autoscaled service's target goes when the service is deleted.
    let scaled = ctx.name("scaled");
    ctx.apply(&manifest(&scaled, &cluster, &td, 50)).await;
    wait_for::<EcsService>(&ctx, &scaled, 120, "Ready with its target", |o| {
        ready(o) && o.status.as_ref().is_some_and(|s| s.auto_scaling.is_some())
    })
    .await;
    // Drift: someone widens the range by hand; the resync puts the spec's back and
    // says what it corrected.
    aas()
        .register_scalable_target()
        .service_namespace(ServiceNamespace::Ecs)
        .resource_id(format!("service/{cluster}/{scaled}"))
        .scalable_dimension(ScalableDimension::EcsServiceDesiredCount)
        .min_capacity(2)
        .max_capacity(30)
        .send()
        .await
        .unwrap();
    eventually(60, "the range corrected", || async {
        (target_range(&cluster, &scaled).await == Some((2, 10))).then_some(())
    })
    .await;
    let events = eventually(30, "a DriftCorrected Event", || async {
        let events = events_for(&ctx, &scaled).await;
        events.contains("DriftCorrected").then_some(events)
    })
    .await;
    assert!(events.contains("autoScaling.maxCapacity"), "{events}");

    // deletionPolicy Orphan leaves the target (and the service) as they are.
    let kept = ctx.name("kept");
    ctx.apply(&format!(
        "{}  deletionPolicy: Orphan\n",
        manifest(&kept, &cluster, &td, 50)
    ))
    .await;
    wait_for::<EcsService>(&ctx, &kept, 120, "Ready with its target", |o| {
        ready(o)
            && o.status
                .as_ref()
                .is_some_and(|s| s.auto_scaling.as_ref().is_some_and(|a| a.managed))
    })
    .await;
    delete_and_wait_gone::<EcsService>(&ctx, &kept, 120).await;
    assert_eq!(
        target_range(&cluster, &kept).await,
        Some((2, 10)),
        "Orphan keeps the target"
    );

    delete_and_wait_gone::<EcsService>(&ctx, &scaled, 120).await;
    assert_eq!(
        target_range(&cluster, &scaled).await,
        None,
        "deregistered with the service"
    );
    assert_eq!(
        target_range(&cluster, &plain).await,
        Some((1, 6)),
        "the foreign target still untouched"
    );
    op.stop().await;
}

fn cloudwatch() -> aws_sdk_cloudwatch::Client {
    use aws_sdk_cloudwatch::config::{BehaviorVersion, Credentials, Region};
    let conf = aws_sdk_cloudwatch::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(testenv::REGION))
        .endpoint_url(&env().ecs_endpoint)
        .credentials_provider(Credentials::new("test", "test", None, None, "e2e"))
        .build();
    aws_sdk_cloudwatch::Client::from_conf(conf)
}

async fn alarm(name: &str) -> Option<aws_sdk_cloudwatch::types::MetricAlarm> {
    cloudwatch()
        .describe_alarms()
        .alarm_names(name)
        .send()
        .await
        .unwrap()
        .metric_alarms()
        .first()
        .cloned()
}

fn step_manifest(name: &str, cluster: &str, td: &str, alarm: Option<&str>) -> String {
    let step = alarm
        .map(|a| {
            format!(
                "    stepScaling:\n      - name: queue\n        alarmName: {a}\n        adjustmentType: ChangeInCapacity\n        cooldown: 120\n        steps:\n          - {{metricIntervalLowerBound: 0, metricIntervalUpperBound: 100, scalingAdjustment: 1}}\n          - {{metricIntervalLowerBound: 100, scalingAdjustment: 3}}\n"
            )
        })
        .unwrap_or_default();
    format!(
        "apiVersion: ecs.operator.dev/v1alpha1\nkind: EcsService\nmetadata:\n  name: {name}\nspec:\n  cluster: {cluster}\n  taskDefinition: {td}\n  autoScaling:\n    minCapacity: 1\n    maxCapacity: 6\n{step}"
    )
}

#[tokio::test]
async fn a_step_policy_waits_for_its_alarm_then_runs_from_it_and_leaves_it_when_dropped() {
    let ctx = TestContext::new("svc-step-scaling").await;
    let op = ctx.start_operator(&[]).await;
    let (cluster, td) = ecs_cluster_and_td(&ctx, "cluster", "worker").await;
    let name = ctx.name("worker");
    let alarm_name = ctx.name("queue-deep");
    ctx.apply(&step_manifest(&name, &cluster, &td, Some(&alarm_name)))
        .await;
    let waiting = wait_for::<EcsService>(&ctx, &name, 120, "waiting for the alarm", |o| {
        o.status.as_ref().is_some_and(|s| {
            s.conditions.iter().any(|c| {
                c.type_ == "Ready"
                    && c.reason == "WaitingForReference"
                    && c.message.contains(&alarm_name)
            })
        })
    })
    .await;
    assert!(!ready(&waiting));

    // The user's alarm, with an action of its own.
    let page_me = "arn:aws:sns:us-east-1:000000000000:page-me";
    cloudwatch()
        .put_metric_alarm()
        .alarm_name(&alarm_name)
        .namespace("AWS/SQS")
        .metric_name("ApproximateNumberOfMessagesVisible")
        .statistic(aws_sdk_cloudwatch::types::Statistic::Average)
        .period(60)
        .evaluation_periods(3)
        .threshold(500.0)
        .comparison_operator(aws_sdk_cloudwatch::types::ComparisonOperator::GreaterThanThreshold)
        .alarm_actions(page_me)
        .send()
        .await
        .unwrap();
    let svc = wait_for::<EcsService>(
        &ctx,
        &name,
        90,
        "Ready with the step policy on its alarm",
        |o| {
            ready(o)
                && o.status.as_ref().is_some_and(|s| {
                    s.auto_scaling.as_ref().is_some_and(|a| {
                        a.policies
                            .iter()
                            .any(|p| p.name == "queue" && p.alarms == [alarm_name.clone()])
                    })
                })
        },
    )
    .await;
    let found = policies(&cluster, &name).await;
    let queue = found
        .iter()
        .find(|p| p.policy_name() == "queue")
        .expect("the step policy");
    let config = queue
        .step_scaling_policy_configuration()
        .expect("a step policy");
    assert_eq!(config.cooldown(), Some(120));
    let steps: Vec<(Option<f64>, Option<f64>, i32)> = config
        .step_adjustments()
        .iter()
        .map(|s| {
            (
                s.metric_interval_lower_bound(),
                s.metric_interval_upper_bound(),
                s.scaling_adjustment(),
            )
        })
        .collect();
    assert_eq!(
        steps,
        vec![(Some(0.0), Some(100.0), 1), (Some(100.0), None, 3)]
    );
    let attached = alarm(&alarm_name).await.expect("the alarm");
    assert_eq!(
        attached.alarm_actions(),
        [page_me.to_string(), queue.policy_arn().to_string()],
        "the policy is added, the user's action kept"
    );
    assert_eq!(
        (
            attached.threshold(),
            attached.period(),
            attached.evaluation_periods()
        ),
        (Some(500.0), Some(60), Some(3))
    );
    assert!(svc.status.is_some());

    // Dropped from the spec: the alarm runs only the user's action again.
    ctx.apply(&step_manifest(&name, &cluster, &td, None)).await;
    eventually(60, "the alarm released and the policy deleted", || async {
        let actions = alarm(&alarm_name).await?.alarm_actions().to_vec();
        let gone = policies(&cluster, &name)
            .await
            .iter()
            .all(|p| p.policy_name() != "queue");
        (actions == [page_me.to_string()] && gone).then_some(())
    })
    .await;
    wait_for::<EcsService>(&ctx, &name, 60, "Ready without the step policy", ready).await;
    op.stop().await;
}

#[tokio::test]
async fn invalid_auto_scaling_is_refused_at_admission_with_clear_messages() {
    let ctx = TestContext::new("svc-autoscaling-admission").await;
    crate::support::install_crds(&ctx.kube).await;
    let name = ctx.name("bad");
    let tracking = |extra: &str| {
        format!(
            "    targetTracking:\n      - name: cpu\n        predefinedMetric: ECSServiceAverageCPUUtilization\n        targetValue: 60\n{extra}"
        )
    };
    let cases = [
        ("    minCapacity: 5\n    maxCapacity: 2\n".to_string(), "minCapacity must not be greater than maxCapacity"),
        (
            format!("    minCapacity: 1\n    maxCapacity: 2\n{}", tracking("      - name: cpu\n        predefinedMetric: ECSServiceAverageMemoryUtilization\n        targetValue: 70\n")),
            "policy names must be unique",
        ),
        (
            "    minCapacity: 1\n    maxCapacity: 2\n    targetTracking:\n      - name: cpu\n        predefinedMetric: ECSServiceAverageCPUUtilization\n        resourceLabel: app/lb/1/targetgroup/tg/2\n        targetValue: 60\n".to_string(),
            "resourceLabel",
        ),
        (
            "    minCapacity: 1\n    maxCapacity: 2\n    targetTracking:\n      - name: rps\n        predefinedMetric: ALBRequestCountPerTarget\n        targetValue: 100\n".to_string(),
            "required with predefinedMetric ALBRequestCountPerTarget",
        ),
        (
            "    minCapacity: 1\n    maxCapacity: 2\n    targetTracking:\n      - name: cpu\n        targetValue: 60\n".to_string(),
            "exactly one of predefinedMetric and customizedMetric",
        ),
        (
            "    minCapacity: 1\n    maxCapacity: 2\n    targetTracking:\n      - name: cpu\n        predefinedMetric: ECSServiceAverageCPUUtilization\n        targetValue: 0\n".to_string(),
            "targetValue must be greater than 0",
        ),
        (
            "    minCapacity: 1\n    maxCapacity: 2\n    scheduled:\n      - name: nightly\n        schedule: cron(0 22 * * *)\n        minCapacity: 1\n".to_string(),
            "schedule",
        ),
        (
            "    minCapacity: 1\n    maxCapacity: 2\n    scheduled:\n      - name: nightly\n        schedule: cron(0 22 * * ? *)\n".to_string(),
            "sets minCapacity, maxCapacity or both",
        ),
        (
            "    minCapacity: 1\n    maxCapacity: 6000\n".to_string(),
            "maxCapacity",
        ),
        (
            format!("    minCapacity: 1\n    maxCapacity: 2\n{}    stepScaling:\n      - name: cpu\n        alarmName: a\n        adjustmentType: ChangeInCapacity\n        steps: [{{metricIntervalLowerBound: 0, scalingAdjustment: 1}}]\n", tracking("")),
            "cannot share a name",
        ),
        (
            "    minCapacity: 1\n    maxCapacity: 2\n    stepScaling:\n      - name: q\n        alarmName: a\n        adjustmentType: ChangeInCapacity\n        minAdjustmentMagnitude: 2\n        steps: [{metricIntervalLowerBound: 0, scalingAdjustment: 1}]\n".to_string(),
            "minAdjustmentMagnitude is only valid with adjustmentType PercentChangeInCapacity",
        ),
        (
            "    minCapacity: 1\n    maxCapacity: 2\n    stepScaling:\n      - name: q\n        alarmName: a\n        adjustmentType: ChangeInCapacity\n        steps: [{scalingAdjustment: 1}]\n".to_string(),
            "a step needs metricIntervalLowerBound, metricIntervalUpperBound or both",
        ),
    ];
    for (scaling, want) in &cases {
        let manifest = format!(
            "apiVersion: ecs.operator.dev/v1alpha1\nkind: EcsService\nmetadata:\n  name: {name}\nspec:\n  cluster: a\n  taskDefinition: f:1\n  autoScaling:\n{scaling}"
        );
        let (ok, out) = ctx.kubectl(&["apply", "-f", "-"], Some(&manifest)).await;
        assert!(!ok, "accepted:\n{manifest}");
        assert!(out.contains(want), "want {want:?} in: {out}");
    }
    let daemon = format!(
        "apiVersion: ecs.operator.dev/v1alpha1\nkind: EcsService\nmetadata:\n  name: {name}\nspec:\n  cluster: a\n  taskDefinition: f:1\n  schedulingStrategy: DAEMON\n  autoScaling:\n    minCapacity: 1\n    maxCapacity: 2\n"
    );
    let (ok, out) = ctx.kubectl(&["apply", "-f", "-"], Some(&daemon)).await;
    assert!(!ok && out.contains("cannot use autoScaling"), "{out}");
}
