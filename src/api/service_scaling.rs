//! `EcsService.spec.autoScaling`: Application Auto Scaling of the service's task count
//! (a scalable target on `service/<cluster>/<service>`, dimension
//! `ecs:service:DesiredCount`, target-tracking policies and scheduled actions).

// Repeated `x_kube(validation)` derive attributes are intended.
#![allow(clippy::duplicated_attributes)]

use kube::KubeSchema;
use serde::{Deserialize, Serialize};

/// Application Auto Scaling owns the service's task count.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.minCapacity <= self.maxCapacity").message("autoScaling.minCapacity must not be greater than maxCapacity"))]
#[x_kube(validation = Rule::new("!has(self.targetTracking) || self.targetTracking.all(p, self.targetTracking.exists_one(q, q.name == p.name))").message("autoScaling.targetTracking: policy names must be unique"))]
#[x_kube(validation = Rule::new("!has(self.scheduled) || self.scheduled.all(a, self.scheduled.exists_one(b, b.name == a.name))").message("autoScaling.scheduled: action names must be unique"))]
#[x_kube(validation = Rule::new("!has(self.stepScaling) || self.stepScaling.all(p, self.stepScaling.exists_one(q, q.name == p.name))").message("autoScaling.stepScaling: policy names must be unique"))]
#[x_kube(validation = Rule::new("!has(self.stepScaling) || !has(self.targetTracking) || !self.stepScaling.exists(p, self.targetTracking.exists(q, q.name == p.name))").message("autoScaling: a stepScaling policy and a targetTracking policy cannot share a name (they are policies of one scalable target)"))]
pub struct AutoScaling {
    /// Fewest tasks the scaler may leave running. Application Auto Scaling raises the
    /// count to this when it is below.
    #[schemars(range(min = 0, max = 5000))]
    pub min_capacity: i32,

    /// Most tasks the scaler may start.
    #[schemars(range(min = 0, max = 5000))]
    pub max_capacity: i32,

    /// Target-tracking policies: keep a metric (average CPU or memory, requests per
    /// target) near a value. Each becomes one scaling policy named as here.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 10))]
    pub target_tracking: Vec<TargetTrackingPolicy>,

    /// Step scaling policies, each run by a CloudWatch alarm you made: the operator
    /// adds the policy to the alarm's actions (and removes it when the policy goes).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 10))]
    pub step_scaling: Vec<StepScalingPolicy>,

    /// Scheduled changes of minCapacity / maxCapacity (e.g. more tasks on weekdays).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 50))]
    pub scheduled: Vec<ScheduledScaling>,

    /// Pause parts of the scaling without removing it (e.g. during an incident).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspended: Option<Suspended>,
}

/// One target-tracking scaling policy.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.predefinedMetric) != has(self.customizedMetric)").message("a target-tracking policy needs exactly one of predefinedMetric and customizedMetric"))]
#[x_kube(validation = Rule::new("has(self.resourceLabel) == (has(self.predefinedMetric) && self.predefinedMetric == 'ALBRequestCountPerTarget')").message("resourceLabel (app/<load-balancer>/<id>/targetgroup/<target-group>/<id>) is required with predefinedMetric ALBRequestCountPerTarget and allowed only with it"))]
#[x_kube(validation = Rule::new("self.targetValue > 0.0").message("targetValue must be greater than 0"))]
pub struct TargetTrackingPolicy {
    /// Name of the scaling policy, unique for the service.
    #[schemars(length(min = 1, max = 256), regex(pattern = r"^[A-Za-z0-9_.\-]+$"))]
    pub name: String,

    /// A metric ECS publishes: ECSServiceAverageCPUUtilization,
    /// ECSServiceAverageMemoryUtilization (percent) or ALBRequestCountPerTarget
    /// (needs resourceLabel).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub predefined_metric: Option<PredefinedMetric>,

    /// For ALBRequestCountPerTarget: the target group,
    /// `app/<load-balancer>/<id>/targetgroup/<target-group>/<id>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1023))]
    pub resource_label: Option<String>,

    /// A CloudWatch metric of your own instead of a predefined one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customized_metric: Option<CustomizedMetric>,

    /// The value to keep the metric at (e.g. 60 for 60 % CPU).
    pub target_value: f64,

    /// Seconds after a scale-in before another may start. Omitted: Application Auto
    /// Scaling's default (300 for ECS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 86400))]
    pub scale_in_cooldown: Option<i32>,

    /// Seconds after a scale-out before another may start. Omitted: the default (300).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 86400))]
    pub scale_out_cooldown: Option<i32>,

    /// Only scale out; never remove tasks because of this policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disable_scale_in: Option<bool>,
}

/// One step scaling policy: when its alarm fires, change the count by the step the
/// alarm's metric falls in.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.minAdjustmentMagnitude) || self.adjustmentType == 'PercentChangeInCapacity'").message("minAdjustmentMagnitude is only valid with adjustmentType PercentChangeInCapacity"))]
pub struct StepScalingPolicy {
    /// Name of the scaling policy, unique for the service.
    #[schemars(length(min = 1, max = 256), regex(pattern = r"^[A-Za-z0-9_.\-]+$"))]
    pub name: String,

    /// The CloudWatch alarm (same account and region) that runs this policy. The
    /// alarm is yours: the operator only adds this policy's ARN to its alarm actions.
    /// While no alarm has the name, the service waits (WaitingForReference).
    #[schemars(length(min = 1, max = 255))]
    pub alarm_name: String,

    /// How scalingAdjustment is read: ChangeInCapacity (tasks more or fewer),
    /// PercentChangeInCapacity or ExactCapacity (the new count).
    pub adjustment_type: AdjustmentType,

    /// The steps, by how far the alarm's metric is from its threshold. Bounds are
    /// relative to the threshold; one step may leave out the lower bound (minus
    /// infinity), one the upper bound (plus infinity).
    #[schemars(length(min = 1, max = 20))]
    pub steps: Vec<StepAdjustment>,

    /// Seconds to wait after a scaling activity before another one. Omitted: the
    /// policy keeps what Application Auto Scaling has.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 86400))]
    pub cooldown: Option<i32>,

    /// Average (default), Minimum or Maximum: how the metric's data points are combined.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric_aggregation_type: Option<MetricAggregationType>,

    /// With PercentChangeInCapacity: change the count by at least this many tasks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 5000))]
    pub min_adjustment_magnitude: Option<i32>,
}

/// One step of a step scaling policy.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.metricIntervalLowerBound) || has(self.metricIntervalUpperBound)").message("a step needs metricIntervalLowerBound, metricIntervalUpperBound or both"))]
#[x_kube(validation = Rule::new("!has(self.metricIntervalLowerBound) || !has(self.metricIntervalUpperBound) || self.metricIntervalLowerBound < self.metricIntervalUpperBound").message("a step's metricIntervalLowerBound must be below its metricIntervalUpperBound"))]
pub struct StepAdjustment {
    /// Lower bound (inclusive) of the metric minus the threshold. Omitted: minus infinity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric_interval_lower_bound: Option<f64>,
    /// Upper bound (exclusive) of the metric minus the threshold. Omitted: plus infinity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric_interval_upper_bound: Option<f64>,
    /// The change, read as adjustmentType says (negative: scale in).
    pub scaling_adjustment: i32,
}

#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema,
)]
pub enum AdjustmentType {
    #[default]
    ChangeInCapacity,
    PercentChangeInCapacity,
    ExactCapacity,
}

impl AdjustmentType {
    pub fn as_str(&self) -> &'static str {
        match self {
            AdjustmentType::ChangeInCapacity => "ChangeInCapacity",
            AdjustmentType::PercentChangeInCapacity => "PercentChangeInCapacity",
            AdjustmentType::ExactCapacity => "ExactCapacity",
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum MetricAggregationType {
    Average,
    Minimum,
    Maximum,
}

impl MetricAggregationType {
    pub fn as_str(&self) -> &'static str {
        match self {
            MetricAggregationType::Average => "Average",
            MetricAggregationType::Minimum => "Minimum",
            MetricAggregationType::Maximum => "Maximum",
        }
    }
}

/// A metric ECS publishes for every service.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum PredefinedMetric {
    #[serde(rename = "ECSServiceAverageCPUUtilization")]
    Cpu,
    #[serde(rename = "ECSServiceAverageMemoryUtilization")]
    Memory,
    #[serde(rename = "ALBRequestCountPerTarget")]
    AlbRequestCountPerTarget,
}

impl PredefinedMetric {
    pub fn as_str(&self) -> &'static str {
        match self {
            PredefinedMetric::Cpu => "ECSServiceAverageCPUUtilization",
            PredefinedMetric::Memory => "ECSServiceAverageMemoryUtilization",
            PredefinedMetric::AlbRequestCountPerTarget => "ALBRequestCountPerTarget",
        }
    }
}

/// A CloudWatch metric for target tracking.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct CustomizedMetric {
    /// Metric name, e.g. ApproximateNumberOfMessagesVisible.
    #[schemars(length(min = 1, max = 255))]
    pub metric_name: String,
    /// Metric namespace, e.g. AWS/SQS.
    #[schemars(length(min = 1, max = 255))]
    pub namespace: String,
    /// Average, Minimum, Maximum, SampleCount or Sum.
    #[schemars(regex(pattern = r"^(Average|Minimum|Maximum|SampleCount|Sum)$"))]
    pub statistic: String,
    /// Unit of the metric (e.g. Percent, Count). Omitted: any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    pub unit: Option<String>,
    /// Dimensions that select the metric, exactly as it is published.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 30))]
    pub dimensions: Vec<MetricDimension>,
}

/// One CloudWatch metric dimension.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct MetricDimension {
    #[schemars(length(min = 1, max = 255))]
    pub name: String,
    #[schemars(length(min = 1, max = 1024))]
    pub value: String,
}

/// A scheduled change of the scaling range.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.minCapacity) || has(self.maxCapacity)").message("a scheduled action sets minCapacity, maxCapacity or both"))]
#[x_kube(validation = Rule::new("!has(self.minCapacity) || !has(self.maxCapacity) || self.minCapacity <= self.maxCapacity").message("scheduled: minCapacity must not be greater than maxCapacity"))]
pub struct ScheduledScaling {
    /// Name of the scheduled action, unique for the service.
    #[schemars(length(min = 1, max = 256), regex(pattern = r"^[A-Za-z0-9_.\-]+$"))]
    pub name: String,

    /// When, as Application Auto Scaling writes it: `at(yyyy-mm-ddThh:mm:ss)` once,
    /// `rate(value unit)` (minute(s), hour(s), day(s)), or
    /// `cron(minutes hours day-of-month month day-of-week year)`: six fields, the
    /// last the year, and `?` in one of day-of-month / day-of-week. Not the five-field
    /// cron of EcsScheduledTask.
    #[schemars(
        length(min = 1, max = 256),
        regex(
            pattern = r"^(at\(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\)|rate\([1-9]\d* (minute|minutes|hour|hours|day|days)\)|cron\(\S+ \S+ (\? \S+ \S+|\S+ \S+ \?) \S+\))$"
        )
    )]
    pub schedule: String,

    /// IANA time zone the schedule is read in (e.g. Europe/Berlin). Omitted: UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    pub timezone: Option<String>,

    /// The new minCapacity from then on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 5000))]
    pub min_capacity: Option<i32>,

    /// The new maxCapacity from then on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 5000))]
    pub max_capacity: Option<i32>,
}

/// Parts of the scaling that are paused. All false: scaling runs.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Suspended {
    /// No scale-in by policies.
    #[serde(default)]
    pub dynamic_scaling_in: bool,
    /// No scale-out by policies.
    #[serde(default)]
    pub dynamic_scaling_out: bool,
    /// Scheduled actions do not run.
    #[serde(default)]
    pub scheduled_scaling: bool,
}

/// Who sets the service's desiredCount.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum CountOwner {
    /// spec.desiredCount.
    Spec,
    /// Application Auto Scaling, as spec.autoScaling says.
    AutoScaling,
    /// A scalable target registered outside this resource: the operator leaves the
    /// count alone.
    External,
    /// Nobody in the spec: ECS keeps the count it has.
    Ecs,
}

/// The scalable target, policies and scheduled actions as Application Auto Scaling
/// has them.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct AutoScalingStatus {
    /// The target's resource ID, `service/<cluster>/<service>`.
    pub resource_id: String,
    /// The operator registered (or adopted) the target for this resource.
    #[serde(default)]
    pub managed: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_capacity: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_capacity: Option<i32>,
    /// What is paused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspended: Option<Suspended>,
    /// The target's scaling policies.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policies: Vec<ScalingPolicyStatus>,
    /// The target's scheduled actions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scheduled_actions: Vec<ScheduledActionStatus>,
    /// The latest scaling activities, newest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub activities: Vec<ScalingActivityStatus>,
}

/// One scaling policy of the target.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScalingPolicyStatus {
    pub name: String,
    /// TargetTrackingScaling, StepScaling or PredictiveScaling.
    #[serde(rename = "type")]
    pub type_: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arn: Option<String>,
    /// The CloudWatch alarms that drive it (target tracking creates its own).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub alarms: Vec<String>,
    /// Created by the operator from spec.autoScaling (removed when the spec drops it).
    #[serde(default)]
    pub managed: bool,
}

/// One scheduled action of the target.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScheduledActionStatus {
    pub name: String,
    pub schedule: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_capacity: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_capacity: Option<i32>,
    /// Created by the operator from spec.autoScaling.
    #[serde(default)]
    pub managed: bool,
}

/// One scaling activity (what `aws application-autoscaling
/// describe-scaling-activities` lists).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScalingActivityStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,
    /// Pending, InProgress, Successful, Overridden, Unfulfilled or Failed.
    pub status: String,
    pub description: String,
}
