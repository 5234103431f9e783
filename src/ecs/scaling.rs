//! Application Auto Scaling of ECS services: the scalable target on
//! `service/<cluster>/<service>` (dimension `ecs:service:DesiredCount`), its scaling
//! policies and scheduled actions. Calls go through [`EcsApi::call`] (limiter, metrics,
//! error classification) like ECS's.

use std::collections::BTreeMap;

use aws_sdk_applicationautoscaling::types::{
    AdjustmentType as SdkAdjustment, CustomizedMetricSpecification,
    MetricAggregationType as SdkAggregation, MetricDimension as SdkDimension, MetricStatistic,
    MetricType, PolicyType, PredefinedMetricSpecification, ScalableDimension, ScalableTargetAction,
    ScalingPolicy, ScheduledAction, ServiceNamespace, StepAdjustment as SdkStep,
    StepScalingPolicyConfiguration, SuspendedState, TargetTrackingScalingPolicyConfiguration,
};

use tokio::time::{Duration, Instant};

use super::{Category, EcsApi};
use crate::api::service_scaling::{
    AdjustmentType, CustomizedMetric, MetricAggregationType, MetricDimension, PredefinedMetric,
    ScalingActivityStatus, ScheduledScaling, StepAdjustment, StepScalingPolicy, Suspended,
    TargetTrackingPolicy,
};
use crate::error::Error;

/// DescribeScalableTargets takes at most 50 resource IDs a call (API reference,
/// `ResourceIds`, and `MaxResults` 1-50).
pub const TARGETS_PER_CALL: usize = 50;

/// How many scaling activities status keeps.
pub const ACTIVITIES: i32 = 3;

/// The target's resource ID: `service/<cluster name>/<service name>`.
pub fn resource_id(cluster: &str, service: &str) -> String {
    format!(
        "service/{}/{service}",
        crate::ecs::service::cluster_name(cluster)
    )
}

/// A scalable target as Application Auto Scaling has it.
#[derive(Debug, Clone, PartialEq)]
pub struct ObservedTarget {
    pub resource_id: String,
    pub arn: Option<String>,
    pub min_capacity: i32,
    pub max_capacity: i32,
    pub suspended: Suspended,
}

/// A scaling policy as Application Auto Scaling has it.
#[derive(Debug, Clone, PartialEq)]
pub struct ObservedPolicy {
    pub name: String,
    pub type_: String,
    pub arn: String,
    pub alarms: Vec<String>,
    /// The target-tracking configuration in the spec's shape (None: another type).
    pub target_tracking: Option<TargetTrackingPolicy>,
    /// The step scaling configuration in the spec's shape, `alarm_name` empty (the
    /// alarm is CloudWatch's to say; see `ObservedScaling::alarm_actions`).
    pub step: Option<StepScalingPolicy>,
}

/// Everything of one service's scaling (target None: not registered).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ObservedScaling {
    pub target: Option<ObservedTarget>,
    pub policies: Vec<ObservedPolicy>,
    pub actions: Vec<ScheduledScaling>,
    pub activities: Vec<ScalingActivityStatus>,
    /// The alarm actions of the CloudWatch alarms step policies name (an alarm that
    /// does not exist is absent).
    pub alarm_actions: BTreeMap<String, Vec<String>>,
}

impl EcsApi {
    /// The Application Auto Scaling client (`with_scaling`).
    pub fn scaling(&self) -> Result<&aws_sdk_applicationautoscaling::Client, Error> {
        self.scaling
            .as_ref()
            .ok_or_else(|| Error::Internal("no Application Auto Scaling client configured".into()))
    }
}

fn target_from_sdk(t: &aws_sdk_applicationautoscaling::types::ScalableTarget) -> ObservedTarget {
    let state = t.suspended_state();
    let flag = |f: fn(&SuspendedState) -> Option<bool>| state.and_then(f).unwrap_or(false);
    ObservedTarget {
        resource_id: t.resource_id().to_string(),
        arn: t.scalable_target_arn().map(str::to_string),
        min_capacity: t.min_capacity(),
        max_capacity: t.max_capacity(),
        suspended: Suspended {
            dynamic_scaling_in: flag(SuspendedState::dynamic_scaling_in_suspended),
            dynamic_scaling_out: flag(SuspendedState::dynamic_scaling_out_suspended),
            scheduled_scaling: flag(SuspendedState::scheduled_scaling_suspended),
        },
    }
}

/// The scalable targets of these services that exist, by resource ID: one call per
/// 50 IDs.
pub async fn describe_targets(
    api: &EcsApi,
    resource_ids: &[String],
) -> Result<BTreeMap<String, ObservedTarget>, Error> {
    let client = api.scaling()?;
    let mut found = BTreeMap::new();
    for chunk in resource_ids.chunks(TARGETS_PER_CALL) {
        let mut token = None;
        loop {
            let resp = api
                .call(
                    "DescribeScalableTargets",
                    Category::AutoScaling,
                    client
                        .describe_scalable_targets()
                        .service_namespace(ServiceNamespace::Ecs)
                        .scalable_dimension(ScalableDimension::EcsServiceDesiredCount)
                        .set_resource_ids(Some(chunk.to_vec()))
                        .set_next_token(token.take())
                        .send(),
                )
                .await?;
            for t in resp.scalable_targets() {
                found.insert(t.resource_id().to_string(), target_from_sdk(t));
            }
            match resp.next_token() {
                Some(next) if !next.is_empty() => token = Some(next.to_string()),
                _ => break,
            }
        }
    }
    Ok(found)
}

fn predefined_from_sdk(
    spec: &PredefinedMetricSpecification,
) -> (Option<PredefinedMetric>, Option<String>) {
    let metric = match spec.predefined_metric_type() {
        MetricType::EcsServiceAverageCpuUtilization => Some(PredefinedMetric::Cpu),
        MetricType::EcsServiceAverageMemoryUtilization => Some(PredefinedMetric::Memory),
        MetricType::AlbRequestCountPerTarget => Some(PredefinedMetric::AlbRequestCountPerTarget),
        _ => None,
    };
    (metric, spec.resource_label().map(str::to_string))
}

fn customized_from_sdk(spec: &CustomizedMetricSpecification) -> CustomizedMetric {
    CustomizedMetric {
        metric_name: spec.metric_name().unwrap_or_default().to_string(),
        namespace: spec.namespace().unwrap_or_default().to_string(),
        statistic: spec
            .statistic()
            .map(|s| s.as_str().to_string())
            .unwrap_or_default(),
        unit: spec.unit().map(str::to_string),
        dimensions: spec
            .dimensions()
            .iter()
            .map(|d| MetricDimension {
                name: d.name().to_string(),
                value: d.value().to_string(),
            })
            .collect(),
    }
}

fn tracking_from_sdk(
    name: &str,
    config: &TargetTrackingScalingPolicyConfiguration,
) -> TargetTrackingPolicy {
    let (predefined_metric, resource_label) = config
        .predefined_metric_specification()
        .map(predefined_from_sdk)
        .unwrap_or_default();
    TargetTrackingPolicy {
        name: name.to_string(),
        predefined_metric,
        resource_label,
        customized_metric: config
            .customized_metric_specification()
            .map(customized_from_sdk),
        target_value: config.target_value(),
        scale_in_cooldown: config.scale_in_cooldown(),
        scale_out_cooldown: config.scale_out_cooldown(),
        disable_scale_in: config.disable_scale_in(),
    }
}

fn policy_from_sdk(p: &ScalingPolicy) -> ObservedPolicy {
    ObservedPolicy {
        name: p.policy_name().to_string(),
        type_: p.policy_type().as_str().to_string(),
        arn: p.policy_arn().to_string(),
        alarms: p
            .alarms()
            .iter()
            .map(|a| a.alarm_name().to_string())
            .collect(),
        target_tracking: p
            .target_tracking_scaling_policy_configuration()
            .map(|c| tracking_from_sdk(p.policy_name(), c)),
        step: p
            .step_scaling_policy_configuration()
            .map(|c| step_from_sdk(p.policy_name(), c)),
    }
}

fn step_from_sdk(name: &str, config: &StepScalingPolicyConfiguration) -> StepScalingPolicy {
    let adjustment_type = match config.adjustment_type() {
        Some(SdkAdjustment::PercentChangeInCapacity) => AdjustmentType::PercentChangeInCapacity,
        Some(SdkAdjustment::ExactCapacity) => AdjustmentType::ExactCapacity,
        _ => AdjustmentType::ChangeInCapacity,
    };
    let metric_aggregation_type = config.metric_aggregation_type().and_then(|a| match a {
        SdkAggregation::Average => Some(MetricAggregationType::Average),
        SdkAggregation::Minimum => Some(MetricAggregationType::Minimum),
        SdkAggregation::Maximum => Some(MetricAggregationType::Maximum),
        _ => None,
    });
    StepScalingPolicy {
        name: name.to_string(),
        alarm_name: String::new(),
        adjustment_type,
        steps: config
            .step_adjustments()
            .iter()
            .map(|s| StepAdjustment {
                metric_interval_lower_bound: s.metric_interval_lower_bound(),
                metric_interval_upper_bound: s.metric_interval_upper_bound(),
                scaling_adjustment: s.scaling_adjustment(),
            })
            .collect(),
        cooldown: config.cooldown(),
        metric_aggregation_type,
        min_adjustment_magnitude: config.min_adjustment_magnitude(),
    }
}

fn action_from_sdk(a: &ScheduledAction) -> ScheduledScaling {
    let range = a.scalable_target_action();
    ScheduledScaling {
        name: a.scheduled_action_name().to_string(),
        schedule: a.schedule().to_string(),
        timezone: a.timezone().map(str::to_string),
        min_capacity: range.and_then(ScalableTargetAction::min_capacity),
        max_capacity: range.and_then(ScalableTargetAction::max_capacity),
    }
}

/// The target's policies, scheduled actions and latest activities (a target with
/// none of them costs three reads; only services with autoScaling or a target read
/// them).
pub async fn describe_attached(
    api: &EcsApi,
    target: ObservedTarget,
) -> Result<ObservedScaling, Error> {
    let client = api.scaling()?;
    let id = target.resource_id.clone();
    let mut policies = Vec::new();
    let mut token = None;
    loop {
        let resp = api
            .call(
                "DescribeScalingPolicies",
                Category::AutoScaling,
                client
                    .describe_scaling_policies()
                    .service_namespace(ServiceNamespace::Ecs)
                    .resource_id(&id)
                    .scalable_dimension(ScalableDimension::EcsServiceDesiredCount)
                    .set_next_token(token.take())
                    .send(),
            )
            .await?;
        policies.extend(resp.scaling_policies().iter().map(policy_from_sdk));
        match resp.next_token() {
            Some(next) if !next.is_empty() => token = Some(next.to_string()),
            _ => break,
        }
    }
    let actions = describe_actions(api, &id).await?;
    let activities = describe_activities(api, &id).await?;
    Ok(ObservedScaling {
        target: Some(target),
        policies,
        actions,
        activities,
        alarm_actions: BTreeMap::new(),
    })
}

async fn describe_actions(api: &EcsApi, id: &str) -> Result<Vec<ScheduledScaling>, Error> {
    let client = api.scaling()?;
    let mut actions = Vec::new();
    let mut token = None;
    loop {
        let resp = api
            .call(
                "DescribeScheduledActions",
                Category::AutoScaling,
                client
                    .describe_scheduled_actions()
                    .service_namespace(ServiceNamespace::Ecs)
                    .resource_id(id)
                    .scalable_dimension(ScalableDimension::EcsServiceDesiredCount)
                    .set_next_token(token.take())
                    .send(),
            )
            .await?;
        actions.extend(resp.scheduled_actions().iter().map(action_from_sdk));
        match resp.next_token() {
            Some(next) if !next.is_empty() => token = Some(next.to_string()),
            _ => break,
        }
    }
    Ok(actions)
}

async fn describe_activities(api: &EcsApi, id: &str) -> Result<Vec<ScalingActivityStatus>, Error> {
    let client = api.scaling()?;
    let resp = api
        .call(
            "DescribeScalingActivities",
            Category::AutoScaling,
            client
                .describe_scaling_activities()
                .service_namespace(ServiceNamespace::Ecs)
                .resource_id(id)
                .scalable_dimension(ScalableDimension::EcsServiceDesiredCount)
                .max_results(ACTIVITIES)
                .send(),
        )
        .await?;
    Ok(resp
        .scaling_activities()
        .iter()
        .take(ACTIVITIES as usize)
        .map(|a| ScalingActivityStatus {
            start_time: a
                .start_time()
                .fmt(aws_sdk_applicationautoscaling::primitives::DateTimeFormat::DateTime)
                .ok(),
            status: a.status_code().as_str().to_string(),
            description: a.description().to_string(),
        })
        .collect())
}

/// The writes the plan asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum ScalingWrite {
    /// RegisterScalableTarget (creates, or updates min / max / suspended). `tags` only
    /// on a new target: RegisterScalableTarget ignores tags for an existing one.
    Register {
        min_capacity: i32,
        max_capacity: i32,
        suspended: Suspended,
        tags: BTreeMap<String, String>,
    },
    PutPolicy(TargetTrackingPolicy),
    PutStepPolicy(StepScalingPolicy),
    /// Adds the policy's ARN to the alarm's actions.
    AttachAlarm {
        policy: String,
        alarm: String,
    },
    /// Removes the policy's ARN from the alarm's actions.
    DetachAlarm {
        policy: String,
        alarm: String,
    },
    DeletePolicy(String),
    PutAction(ScheduledScaling),
    DeleteAction(String),
    /// DeregisterScalableTarget: its policies and scheduled actions go with it.
    Deregister,
}

impl ScalingWrite {
    /// The Application Auto Scaling action it sends (for Events).
    pub fn operation(&self) -> &'static str {
        match self {
            ScalingWrite::Register { .. } => "RegisterScalableTarget",
            ScalingWrite::PutPolicy(_) | ScalingWrite::PutStepPolicy(_) => "PutScalingPolicy",
            ScalingWrite::AttachAlarm { .. } | ScalingWrite::DetachAlarm { .. } => "PutMetricAlarm",
            ScalingWrite::DeletePolicy(_) => "DeleteScalingPolicy",
            ScalingWrite::PutAction(_) => "PutScheduledAction",
            ScalingWrite::DeleteAction(_) => "DeleteScheduledAction",
            ScalingWrite::Deregister => "DeregisterScalableTarget",
        }
    }
}

fn tracking_to_sdk(
    policy: &TargetTrackingPolicy,
) -> Result<TargetTrackingScalingPolicyConfiguration, Error> {
    let invalid = |e: aws_sdk_applicationautoscaling::error::BuildError| {
        Error::InvalidSpec(format!("targetTracking {}: {e}", policy.name))
    };
    let predefined = match policy.predefined_metric {
        Some(m) => Some(
            PredefinedMetricSpecification::builder()
                .predefined_metric_type(MetricType::from(m.as_str()))
                .set_resource_label(policy.resource_label.clone())
                .build()
                .map_err(invalid)?,
        ),
        None => None,
    };
    let customized = policy.customized_metric.as_ref().map(|m| {
        let dimensions = m.dimensions.iter().filter_map(|d| {
            SdkDimension::builder()
                .name(&d.name)
                .value(&d.value)
                .build()
                .ok()
        });
        CustomizedMetricSpecification::builder()
            .metric_name(&m.metric_name)
            .namespace(&m.namespace)
            .statistic(MetricStatistic::from(m.statistic.as_str()))
            .set_unit(m.unit.clone())
            .set_dimensions(Some(dimensions.collect()))
            .build()
    });
    TargetTrackingScalingPolicyConfiguration::builder()
        .target_value(policy.target_value)
        .set_predefined_metric_specification(predefined)
        .set_customized_metric_specification(customized)
        .set_scale_in_cooldown(policy.scale_in_cooldown)
        .set_scale_out_cooldown(policy.scale_out_cooldown)
        .set_disable_scale_in(policy.disable_scale_in)
        .build()
        .map_err(invalid)
}

/// Sends one write for the target `id`. `policy_arn` is the ARN of the policy an
/// Attach/DetachAlarm names; a put returns the ARN of its policy.
pub async fn write(
    api: &EcsApi,
    id: &str,
    write: &ScalingWrite,
    policy_arn: Option<&str>,
) -> Result<Option<String>, Error> {
    match write {
        ScalingWrite::Register {
            min_capacity,
            max_capacity,
            suspended,
            tags,
        } => register(api, id, (*min_capacity, *max_capacity), suspended, tags)
            .await
            .map(|()| None),
        ScalingWrite::PutPolicy(policy) => {
            let config = PolicyConfig::Tracking(tracking_to_sdk(policy)?);
            put_policy(api, id, &policy.name, config).await.map(Some)
        }
        ScalingWrite::PutStepPolicy(policy) => {
            let config = PolicyConfig::Step(step_to_sdk(policy)?);
            put_policy(api, id, &policy.name, config).await.map(Some)
        }
        ScalingWrite::AttachAlarm { alarm, .. } => alarm_action(api, alarm, policy_arn, true)
            .await
            .map(|()| None),
        ScalingWrite::DetachAlarm { alarm, .. } => alarm_action(api, alarm, policy_arn, false)
            .await
            .map(|()| None),
        ScalingWrite::PutAction(action) => put_action(api, id, action).await.map(|()| None),
        ScalingWrite::DeletePolicy(_)
        | ScalingWrite::DeleteAction(_)
        | ScalingWrite::Deregister => delete(api, id, write).await.map(|()| None),
    }
}

const NS: ServiceNamespace = ServiceNamespace::Ecs;
const DIM: ScalableDimension = ScalableDimension::EcsServiceDesiredCount;

async fn register(
    api: &EcsApi,
    id: &str,
    (min, max): (i32, i32),
    suspended: &Suspended,
    tags: &BTreeMap<String, String>,
) -> Result<(), Error> {
    let state = SuspendedState::builder()
        .dynamic_scaling_in_suspended(suspended.dynamic_scaling_in)
        .dynamic_scaling_out_suspended(suspended.dynamic_scaling_out)
        .scheduled_scaling_suspended(suspended.scheduled_scaling)
        .build();
    let tags = (!tags.is_empty()).then(|| tags.clone().into_iter().collect());
    let send = api
        .scaling()?
        .register_scalable_target()
        .service_namespace(NS)
        .resource_id(id)
        .scalable_dimension(DIM)
        .min_capacity(min)
        .max_capacity(max)
        .suspended_state(state)
        .set_tags(tags)
        .send();
    api.call("RegisterScalableTarget", Category::AutoScaling, send)
        .await
        .map(drop)
}

enum PolicyConfig {
    Tracking(TargetTrackingScalingPolicyConfiguration),
    Step(StepScalingPolicyConfiguration),
}

async fn put_policy(
    api: &EcsApi,
    id: &str,
    name: &str,
    config: PolicyConfig,
) -> Result<String, Error> {
    let request = api
        .scaling()?
        .put_scaling_policy()
        .service_namespace(NS)
        .resource_id(id)
        .scalable_dimension(DIM)
        .policy_name(name);
    let request = match config {
        PolicyConfig::Tracking(c) => request
            .policy_type(PolicyType::TargetTrackingScaling)
            .target_tracking_scaling_policy_configuration(c),
        PolicyConfig::Step(c) => request
            .policy_type(PolicyType::StepScaling)
            .step_scaling_policy_configuration(c),
    };
    let resp = api
        .call("PutScalingPolicy", Category::AutoScaling, request.send())
        .await?;
    Ok(resp.policy_arn().to_string())
}

async fn put_action(api: &EcsApi, id: &str, action: &ScheduledScaling) -> Result<(), Error> {
    let range = ScalableTargetAction::builder()
        .set_min_capacity(action.min_capacity)
        .set_max_capacity(action.max_capacity)
        .build();
    let send = api
        .scaling()?
        .put_scheduled_action()
        .service_namespace(NS)
        .resource_id(id)
        .scalable_dimension(DIM)
        .scheduled_action_name(&action.name)
        .schedule(&action.schedule)
        .set_timezone(action.timezone.clone())
        .scalable_target_action(range)
        .send();
    api.call("PutScheduledAction", Category::AutoScaling, send)
        .await
        .map(drop)
}

async fn delete(api: &EcsApi, id: &str, write: &ScalingWrite) -> Result<(), Error> {
    let client = api.scaling()?;
    let op = write.operation();
    match write {
        ScalingWrite::DeletePolicy(name) => {
            let send = client
                .delete_scaling_policy()
                .service_namespace(NS)
                .resource_id(id)
                .scalable_dimension(DIM)
                .policy_name(name)
                .send();
            api.call(op, Category::AutoScaling, send).await.map(drop)
        }
        ScalingWrite::DeleteAction(name) => {
            let send = client
                .delete_scheduled_action()
                .service_namespace(NS)
                .resource_id(id)
                .scalable_dimension(DIM)
                .scheduled_action_name(name)
                .send();
            api.call(op, Category::AutoScaling, send).await.map(drop)
        }
        _ => {
            let send = client
                .deregister_scalable_target()
                .service_namespace(NS)
                .resource_id(id)
                .scalable_dimension(DIM)
                .send();
            api.call(op, Category::AutoScaling, send).await.map(drop)
        }
    }
}

/// Adds (`attach`) or removes the policy's ARN in the alarm's actions, read fresh so
/// actions someone else set meanwhile are kept. An alarm that is gone has nothing to
/// detach; one missing for an attach is an error the caller reports.
async fn alarm_action(
    api: &EcsApi,
    alarm: &str,
    policy_arn: Option<&str>,
    attach: bool,
) -> Result<(), Error> {
    let Some(arn) = policy_arn else {
        return Err(Error::Internal(format!("no policy ARN for alarm {alarm}")));
    };
    let found = super::alarms::describe(api, &[alarm.to_string()]).await?;
    let Some(current) = found.get(alarm) else {
        return if attach {
            Err(Error::Internal(format!(
                "CloudWatch alarm {alarm} does not exist"
            )))
        } else {
            Ok(())
        };
    };
    let mut actions: Vec<String> = current.alarm_actions().to_vec();
    let has = actions.iter().any(|a| a == arn);
    match (attach, has) {
        (true, false) => actions.push(arn.to_string()),
        (false, true) => actions.retain(|a| a != arn),
        _ => return Ok(()),
    }
    super::alarms::set_actions(api, current, actions).await
}

fn step_to_sdk(policy: &StepScalingPolicy) -> Result<StepScalingPolicyConfiguration, Error> {
    let steps = policy
        .steps
        .iter()
        .map(|s| {
            SdkStep::builder()
                .set_metric_interval_lower_bound(s.metric_interval_lower_bound)
                .set_metric_interval_upper_bound(s.metric_interval_upper_bound)
                .scaling_adjustment(s.scaling_adjustment)
                .build()
                .map_err(|e| Error::InvalidSpec(format!("stepScaling {}: {e}", policy.name)))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(StepScalingPolicyConfiguration::builder()
        .adjustment_type(SdkAdjustment::from(policy.adjustment_type.as_str()))
        .set_step_adjustments(Some(steps))
        .set_cooldown(policy.cooldown)
        .set_metric_aggregation_type(
            policy
                .metric_aggregation_type
                .map(|a| SdkAggregation::from(a.as_str())),
        )
        .set_min_adjustment_magnitude(policy.min_adjustment_magnitude)
        .build())
}

/// The tags of a scalable target (ListTagsForResource on its ARN).
pub async fn target_tags(api: &EcsApi, arn: &str) -> Result<BTreeMap<String, String>, Error> {
    let client = api.scaling()?;
    let resp = api
        .call(
            "ListTagsForResource",
            Category::AutoScaling,
            client.list_tags_for_resource().resource_arn(arn).send(),
        )
        .await?;
    Ok(resp
        .tags()
        .map(|t| t.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default())
}

/// "ECS service doesn't exist": Application Auto Scaling has not caught up with a
/// CreateService yet (eventual consistency), or the service is gone.
pub fn is_service_not_visible(err: &Error) -> bool {
    matches!(err, Error::Ecs { code: Some(code), message, .. }
        if code == "ValidationException"
            && message.to_ascii_lowercase().contains("service doesn't exist"))
}

/// Copies of scalable targets (None: none registered), shared by every EcsService
/// reconcile: a miss reads the target together with up to 49 stale peers in one
/// DescribeScalableTargets, so a resync round of N autoscaled services costs N/50
/// target reads.
#[derive(Debug, Default)]
pub struct TargetCache {
    copies: std::sync::Mutex<std::collections::HashMap<String, (Instant, Option<ObservedTarget>)>>,
}

impl TargetCache {
    fn copies(
        &self,
    ) -> std::sync::MutexGuard<
        '_,
        std::collections::HashMap<String, (Instant, Option<ObservedTarget>)>,
    > {
        self.copies.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn fresh(&self, id: &str, max_age: Duration) -> Option<Option<ObservedTarget>> {
        let copies = self.copies();
        let (at, copy) = copies.get(id)?;
        (at.elapsed() <= max_age).then(|| copy.clone())
    }

    /// The target of `id`, from a copy at most `max_age` old or read now with the
    /// stale ones among `peers`.
    pub async fn observe(
        &self,
        api: &EcsApi,
        id: &str,
        max_age: Duration,
        peers: impl FnOnce() -> Vec<String>,
    ) -> Result<Option<ObservedTarget>, Error> {
        if let Some(copy) = self.fresh(id, max_age) {
            return Ok(copy);
        }
        let mut ids = vec![id.to_string()];
        let stale = peers()
            .into_iter()
            .filter(|p| p != id && self.fresh(p, max_age).is_none());
        ids.extend(stale.take(TARGETS_PER_CALL - 1));
        let found = describe_targets(api, &ids).await?;
        let now = Instant::now();
        let mut copies = self.copies();
        for read in &ids {
            copies.insert(read.clone(), (now, found.get(read).cloned()));
        }
        Ok(found.get(id).cloned())
    }

    /// Forgets the copy of `id` (after a write to it).
    pub fn invalidate(&self, id: &str) {
        self.copies().remove(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorClass;

    fn err(code: &str, message: &str) -> Error {
        Error::Ecs {
            operation: "RegisterScalableTarget",
            code: Some(code.into()),
            message: message.into(),
            class: ErrorClass::Terminal,
        }
    }

    #[test]
    fn an_ecs_service_not_visible_yet_is_told_from_other_refusals() {
        let lag = "ECS service doesn't exist: service/prod/web";
        assert!(is_service_not_visible(&err("ValidationException", lag)));
        assert!(!is_service_not_visible(&err(
            "ValidationException",
            "Minimum capacity cannot be greater than maximum capacity"
        )));
        assert!(!is_service_not_visible(&err(
            "ObjectNotFoundException",
            lag
        )));
    }

    #[test]
    fn resource_ids_name_the_cluster_by_name() {
        assert_eq!(resource_id("prod", "web"), "service/prod/web");
        assert_eq!(
            resource_id("arn:aws:ecs:eu-west-1:1:cluster/prod", "web"),
            "service/prod/web"
        );
    }
}
