//! `EcsService`: one long-running ECS service, the Deployment of ECS.

// Repeated `printcolumn` / `x_kube(validation)` derive attributes are intended.
#![allow(clippy::duplicated_attributes)]

use std::collections::BTreeMap;

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::common::{Condition, DeletionPolicy, Placement};

/// An Amazon ECS service managed by ecs-operator.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "ecs.operator.dev",
    version = "v1alpha1",
    kind = "EcsService",
    namespaced,
    status = "EcsServiceStatus",
    shortname = "ecssvc",
    category = "ecs",
    doc = "An Amazon ECS service. The operator creates or adopts it, rolls it to the referenced task-definition revision, keeps its settings equal to the spec, and reports rollout progress as Ready / Reconciling / Stalled conditions (`kubectl wait --for=condition=Ready`).",
    scale(
        spec_replicas_path = ".spec.desiredCount",
        status_replicas_path = ".status.runningCount"
    ),
    printcolumn(
        name = "Desired",
        type_ = "integer",
        json_path = ".status.desiredCount"
    ),
    printcolumn(
        name = "Running",
        type_ = "integer",
        json_path = ".status.runningCount"
    ),
    printcolumn(name = "Rollout", type_ = "string", json_path = ".status.rolloutState"),
    printcolumn(
        name = "Count By",
        type_ = "string",
        json_path = ".status.countOwner",
        priority = 1
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason",
        priority = 1
    ),
    printcolumn(
        name = "Task Definition",
        type_ = "string",
        json_path = ".status.taskDefinition",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = Rule::new("!has(self.schedulingStrategy) || self.schedulingStrategy != 'DAEMON' || (!has(self.desiredCount) && !has(self.placementStrategy))").message("a DAEMON service runs one task per container instance: desiredCount and placementStrategy must not be set"))]
#[x_kube(validation = Rule::new("has(self.serviceName) == has(oldSelf.serviceName) && (!has(self.serviceName) || self.serviceName == oldSelf.serviceName)").message("serviceName is immutable: ECS cannot rename a service; create a new EcsService"))]
#[x_kube(validation = Rule::new("has(self.cluster) == has(oldSelf.cluster) && (!has(self.cluster) || self.cluster == oldSelf.cluster) && has(self.clusterRef) == has(oldSelf.clusterRef) && (!has(self.clusterRef) || self.clusterRef.name == oldSelf.clusterRef.name)").message("the cluster (cluster / clusterRef) is immutable: ECS cannot move a service to another cluster; create a new EcsService"))]
#[x_kube(validation = Rule::new("(has(self.schedulingStrategy) ? self.schedulingStrategy : 'REPLICA') == (has(oldSelf.schedulingStrategy) ? oldSelf.schedulingStrategy : 'REPLICA')").message("schedulingStrategy is immutable: ECS cannot switch a service between REPLICA and DAEMON; create a new EcsService"))]
#[x_kube(validation = Rule::new("(has(self.deploymentController) ? self.deploymentController.type : 'ECS') == (has(oldSelf.deploymentController) ? oldSelf.deploymentController.type : 'ECS')").message("deploymentController.type is immutable: create a new EcsService to change the deployment controller"))]
#[x_kube(validation = Rule::new("has(oldSelf.launchType) ? (has(self.launchType) ? self.launchType == oldSelf.launchType : has(self.capacityProviderStrategy)) : !has(self.launchType)").message("launchType cannot be added or changed after creation. A service can move from a launchType to a capacityProviderStrategy (the operator forces the new deployment ECS requires), but not back: UpdateService cannot name a launch type. Create a new EcsService to go back to a launchType"))]
#[x_kube(validation = Rule::new("!has(self.autoScaling) || !has(self.schedulingStrategy) || self.schedulingStrategy != 'DAEMON'").message("a DAEMON service runs one task per container instance and cannot use autoScaling"))]
#[serde(rename_all = "camelCase")]
pub struct EcsServiceSpec {
    /// Name of the ECS service. Defaults to metadata.name. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 255), regex(pattern = r"^[a-zA-Z0-9_-]+$"))]
    pub service_name: Option<String>,

    /// Cluster, task definition, launch type or capacity providers, network.
    #[serde(flatten)]
    pub placement: Placement,

    /// Number of tasks to keep running. Omitted: the operator never changes ECS's
    /// desiredCount (new services start with 1). `kubectl scale` sets this field.
    /// With autoScaling set, only the count a new service starts with (clamped into
    /// [minCapacity, maxCapacity]; omitted: minCapacity): from then on the scaler
    /// owns the count and a changed desiredCount is reported, not applied. While a
    /// scalable target registered outside this resource exists, the operator never
    /// writes desiredCount either.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 5000))]
    pub desired_count: Option<i32>,

    /// Application Auto Scaling of the task count: a scalable target with minCapacity /
    /// maxCapacity, target-tracking policies and scheduled actions, kept exactly as
    /// here. Removing it deregisters the target (its policies and actions go with it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_scaling: Option<super::service_scaling::AutoScaling>,

    /// Load balancer target groups the tasks register with. Omitted: left as ECS has
    /// them; an empty list removes them all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 5))]
    pub load_balancers: Option<Vec<LoadBalancer>>,

    /// Cloud Map service registries. Omitted: left as ECS has them; empty list clears.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1))]
    pub service_registries: Option<Vec<ServiceRegistry>>,

    /// Placement constraints (EC2). Omitted: left as they are; empty list clears.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 10))]
    pub placement_constraints: Option<Vec<ServicePlacementConstraint>>,

    /// Placement strategy (EC2). Omitted: left as it is; empty list clears.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 5))]
    pub placement_strategy: Option<Vec<PlacementStrategy>>,

    /// How rollouts replace tasks: maximumPercent / minimumHealthyPercent, the
    /// circuit breaker and CloudWatch alarms. Fields left out keep ECS's values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment_configuration: Option<DeploymentConfiguration>,

    /// Deployment controller. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment_controller: Option<DeploymentController>,

    /// Seconds to ignore failing load balancer health checks after a task starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 2147483647))]
    pub health_check_grace_period_seconds: Option<i32>,

    /// REPLICA (default: desiredCount tasks) or DAEMON (one task per container
    /// instance). Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduling_strategy: Option<SchedulingStrategy>,

    /// Allow `aws ecs execute-command` into the tasks. Omitted: left as ECS has it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_execute_command: Option<bool>,

    /// Let ECS tag tasks with the cluster and service names. Omitted: left as it is.
    #[serde(
        default,
        rename = "enableECSManagedTags",
        skip_serializing_if = "Option::is_none"
    )]
    pub enable_ecs_managed_tags: Option<bool>,

    /// Copy tags to tasks from the SERVICE or the TASK_DEFINITION, or NONE.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub propagate_tags: Option<PropagateTags>,

    /// Tags on the ECS service, besides the operator's ownership tags.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 50))]
    #[x_kube(validation = crate::api::common::tag_key_rule())]
    #[x_kube(validation = crate::api::common::tag_size_rule())]
    #[x_kube(validation = crate::api::common::tag_count_rule(2))]
    pub tags: BTreeMap<String, String>,

    /// Adopt an existing ECS service of the same name that the operator did not create.
    /// Without this, such a service is never touched and the resource reports Stalled
    /// with reason NotOwned.
    #[serde(default)]
    pub adopt_existing: bool,

    /// What happens to the ECS service when this resource is deleted: Delete (default:
    /// scale to 0, delete, wait until INACTIVE) or Orphan (keep it running, remove the
    /// ownership tags).
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,

    /// Any string; changing it starts a new deployment of the same task definition
    /// (ECS forceNewDeployment), e.g. to pull a moved image tag. The
    /// `kubectl rollout restart` of ECS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub redeploy_token: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum SchedulingStrategy {
    #[serde(rename = "REPLICA")]
    Replica,
    #[serde(rename = "DAEMON")]
    Daemon,
}

impl SchedulingStrategy {
    pub fn as_str(&self) -> &'static str {
        match self {
            SchedulingStrategy::Replica => "REPLICA",
            SchedulingStrategy::Daemon => "DAEMON",
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum PropagateTags {
    #[serde(rename = "SERVICE")]
    Service,
    #[serde(rename = "TASK_DEFINITION")]
    TaskDefinition,
    #[serde(rename = "NONE")]
    None,
}

impl PropagateTags {
    pub fn as_str(&self) -> &'static str {
        match self {
            PropagateTags::Service => "SERVICE",
            PropagateTags::TaskDefinition => "TASK_DEFINITION",
            PropagateTags::None => "NONE",
        }
    }
}

/// One container port registered with a load balancer.
#[derive(
    Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, KubeSchema,
)]
#[serde(rename_all = "camelCase")]
pub struct LoadBalancer {
    /// ARN of the ALB/NLB target group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_group_arn: Option<String>,
    /// Name of a Classic Load Balancer (instead of a target group).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancer_name: Option<String>,
    /// Container (from the task definition) that receives the traffic.
    #[schemars(length(min = 1, max = 255))]
    pub container_name: String,
    /// Port of that container.
    #[schemars(range(min = 1, max = 65535))]
    pub container_port: i32,
}

/// A Cloud Map registry for the service's tasks.
#[derive(
    Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, KubeSchema,
)]
#[serde(rename_all = "camelCase")]
pub struct ServiceRegistry {
    /// ARN of the Cloud Map service.
    #[schemars(length(min = 1))]
    pub registry_arn: String,
    /// Port for SRV records (awsvpc tasks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i32>,
    /// Container for SRV records (bridge/host tasks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_name: Option<String>,
    /// Container port for SRV records (bridge/host tasks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_port: Option<i32>,
}

/// A rule tasks must satisfy to be placed (EC2 launch type).
#[derive(
    Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, KubeSchema,
)]
#[serde(rename_all = "camelCase")]
pub struct ServicePlacementConstraint {
    /// distinctInstance (each task on its own instance) or memberOf (an expression).
    #[serde(rename = "type")]
    #[schemars(regex(pattern = r"^(distinctInstance|memberOf)$"))]
    pub type_: String,
    /// Cluster query language expression, for memberOf.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2000))]
    pub expression: Option<String>,
}

/// How tasks are spread over instances (EC2 launch type).
#[derive(
    Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, KubeSchema,
)]
#[serde(rename_all = "camelCase")]
pub struct PlacementStrategy {
    /// random, spread or binpack.
    #[serde(rename = "type")]
    #[schemars(regex(pattern = r"^(random|spread|binpack)$"))]
    pub type_: String,
    /// For spread: instanceId or an attribute such as attribute:ecs.availability-zone;
    /// for binpack: cpu or memory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentConfiguration {
    /// Upper limit of running tasks during a rollout, in percent of desiredCount
    /// (ECS default 200). Below 200 a rollout replaces tasks in steps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 100, max = 2000))]
    pub maximum_percent: Option<i32>,
    /// Lower limit of healthy tasks during a rollout, in percent of desiredCount (ECS
    /// default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub minimum_healthy_percent: Option<i32>,
    /// Stop (and optionally roll back) a rollout whose tasks keep failing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment_circuit_breaker: Option<DeploymentCircuitBreaker>,
    /// Fail (and optionally roll back) a rollout when CloudWatch alarms fire.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alarms: Option<DeploymentAlarms>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentCircuitBreaker {
    /// Turn the circuit breaker on.
    pub enable: bool,
    /// Roll back to the last completed deployment when it trips.
    pub rollback: bool,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentAlarms {
    /// CloudWatch alarm names watched during a rollout.
    #[schemars(length(max = 10))]
    pub alarm_names: Vec<String>,
    /// Use the alarms.
    pub enable: bool,
    /// Roll back when an alarm fires.
    pub rollback: bool,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentController {
    /// ECS (rolling update, default), CODE_DEPLOY (blue/green) or EXTERNAL.
    #[serde(rename = "type")]
    pub type_: DeploymentControllerType,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum DeploymentControllerType {
    #[serde(rename = "ECS")]
    Ecs,
    #[serde(rename = "CODE_DEPLOY")]
    CodeDeploy,
    #[serde(rename = "EXTERNAL")]
    External,
}

impl DeploymentControllerType {
    pub fn as_str(&self) -> &'static str {
        match self {
            DeploymentControllerType::Ecs => "ECS",
            DeploymentControllerType::CodeDeploy => "CODE_DEPLOY",
            DeploymentControllerType::External => "EXTERNAL",
        }
    }
}

/// What the operator observed in ECS.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct EcsServiceStatus {
    /// The metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Ready, Reconciling and Stalled, as kstatus (Flux, Argo CD) expects.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Name of the ECS service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_name: Option<String>,
    /// The ECS cluster the service runs in (as resolved from cluster / clusterRef).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// ARN of the ECS service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arn: Option<String>,
    /// ECS status: ACTIVE, DRAINING or INACTIVE.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Tasks ECS is asked to keep running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired_count: Option<i32>,
    /// Tasks RUNNING.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running_count: Option<i32>,
    /// Tasks PENDING.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_count: Option<i32>,
    /// Task definition ARN of the service (its PRIMARY deployment).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_definition: Option<String>,
    /// Rollout state of the PRIMARY deployment: IN_PROGRESS, COMPLETED or FAILED.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout_state: Option<String>,
    /// The service's deployments, PRIMARY first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deployments: Vec<DeploymentStatus>,
    /// The latest ECS service events (newest first, repeated messages folded).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<ServiceEvent>,
    /// The task definition the operator last asked ECS to run. Tells a rollback by
    /// the circuit breaker (not re-pushed) from drift made by someone else (corrected).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_task_definition: Option<String>,
    /// A revision ECS rolled back from (circuit breaker / alarms); not pushed again
    /// until the spec asks for another revision or a new redeployToken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rolled_back_task_definition: Option<String>,
    /// The task definition the service ran when the operator pushed
    /// appliedTaskDefinition. With rollback enabled, a service found back on it is
    /// a rollback, even after an operator downtime in which ECS's events aged out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaced_task_definition: Option<String>,
    /// When the operator last called CreateService (RFC 3339). DescribeServices lags
    /// behind CreateService: until a grace period after this, a service ECS does not
    /// report is "not seen yet", never "gone" (no second create).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_create_time: Option<String>,
    /// Task sets (CODE_DEPLOY and EXTERNAL deployment controllers report the rollout
    /// here instead of in deployments), PRIMARY first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub task_sets: Vec<TaskSetStatus>,
    /// Services this resource has created so far; part of the CreateService client
    /// token, so a service deleted outside Kubernetes is created anew.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub creations: i32,
    /// spec.redeployToken as last applied; a different value starts a new deployment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_redeploy_token: Option<String>,
    /// Tag keys from spec.tags the operator has applied, so that a key removed from the
    /// spec is removed from ECS while tags set by others are left alone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub managed_tag_keys: Vec<String>,
    /// Who sets desiredCount: Spec, AutoScaling, External (a scalable target made
    /// outside this resource) or Ecs (nobody: ECS keeps its count).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count_owner: Option<super::service_scaling::CountOwner>,
    /// The service's Application Auto Scaling target, policies and scheduled actions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_scaling: Option<super::service_scaling::AutoScalingStatus>,
}

/// One task set of a CODE_DEPLOY or EXTERNAL service.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct TaskSetStatus {
    /// Task set ID (ecs-svc/...).
    pub id: String,
    /// PRIMARY (serves production traffic), ACTIVE or DRAINING.
    pub status: String,
    /// Task definition ARN of this task set.
    pub task_definition: String,
    /// Tasks ECS computed for this task set from its scale.
    pub computed_desired_count: i32,
    pub running_count: i32,
    pub pending_count: i32,
    /// STEADY_STATE once running matches computedDesiredCount, else STABILIZING.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stability_status: Option<String>,
}

/// One ECS deployment of the service.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentStatus {
    /// Deployment ID (ecs-svc/...).
    pub id: String,
    /// PRIMARY (the newest), ACTIVE (being replaced) or INACTIVE.
    pub status: String,
    /// IN_PROGRESS, COMPLETED or FAILED.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout_state: Option<String>,
    /// Why the rollout is in its state (e.g. the circuit breaker's message).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout_state_reason: Option<String>,
    /// Task definition ARN of this deployment.
    pub task_definition: String,
    pub desired_count: i32,
    pub running_count: i32,
    pub pending_count: i32,
    /// Tasks of this deployment that failed to start or stay running.
    pub failed_tasks: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<String>,
}

/// One ECS service event (what `aws ecs describe-services` lists under events).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceEvent {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    pub message: String,
}

fn is_zero(v: &i32) -> bool {
    *v == 0
}

impl EcsService {
    /// The ECS service name: spec.serviceName, else metadata.name.
    pub fn ecs_name(&self) -> String {
        self.spec
            .service_name
            .clone()
            .or_else(|| self.metadata.name.clone())
            .unwrap_or_default()
    }
}
