//! `EcsCluster`: one ECS cluster, with capacity providers, settings and defaults.

// Repeated `printcolumn` / `x_kube(validation)` derive attributes are intended.
#![allow(clippy::duplicated_attributes)]

use std::collections::BTreeMap;

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::common::{CapacityProviderStrategyItem, Condition, DeletionPolicy, LocalRef};

/// An Amazon ECS cluster managed by ecs-operator.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "ecs.operator.dev",
    version = "v1alpha1",
    kind = "EcsCluster",
    namespaced,
    status = "EcsClusterStatus",
    shortname = "ecscl",
    category = "ecs",
    doc = "An Amazon ECS cluster. The operator creates or adopts it, keeps its settings, capacity providers and tags equal to the spec, and reports what ECS holds in status.",
    printcolumn(name = "ECS Name", type_ = "string", json_path = ".status.clusterName"),
    printcolumn(name = "Status", type_ = "string", json_path = ".status.status"),
    printcolumn(
        name = "Services",
        type_ = "integer",
        json_path = ".status.activeServicesCount"
    ),
    printcolumn(
        name = "Running",
        type_ = "integer",
        json_path = ".status.runningTasksCount"
    ),
    printcolumn(
        name = "Instances",
        type_ = "integer",
        json_path = ".status.registeredContainerInstancesCount",
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
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = Rule::new("has(self.clusterName) == has(oldSelf.clusterName) && (!has(self.clusterName) || self.clusterName == oldSelf.clusterName)").message("clusterName is immutable: create a new EcsCluster to use another ECS cluster name"))]
#[x_kube(validation = Rule::new("!has(self.defaultCapacityProviderStrategy) || self.defaultCapacityProviderStrategy.filter(s, has(s.base) && s.base > 0).size() <= 1").message("defaultCapacityProviderStrategy: only one provider may set a base greater than 0"))]
#[x_kube(validation = Rule::new("!has(self.defaultCapacityProviderStrategy) || (!has(self.capacityProviders) && !has(self.capacityProviderRefs)) || self.defaultCapacityProviderStrategy.all(s, (has(self.capacityProviders) && s.capacityProvider in self.capacityProviders) || (has(self.capacityProviderRefs) && self.capacityProviderRefs.exists(r, r.name == s.capacityProvider)))").message("defaultCapacityProviderStrategy may only name providers listed in capacityProviders (or capacityProviderRefs)"))]
#[serde(rename_all = "camelCase")]
pub struct EcsClusterSpec {
    /// Name of the ECS cluster. Defaults to metadata.name. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 255), regex(pattern = r"^[a-zA-Z0-9_-]+$"))]
    pub cluster_name: Option<String>,

    /// Capacity providers associated with the cluster (e.g. FARGATE, FARGATE_SPOT, or an
    /// Auto Scaling group provider). Omitted: the operator leaves them as they are;
    /// an empty list removes them all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 20))]
    pub capacity_providers: Option<Vec<String>>,

    /// EcsCapacityProviders of this namespace the cluster uses, besides the names in
    /// capacityProviders. The cluster waits (WaitingForReference) until each is Ready and
    /// follows it; with any set, the cluster's providers are exactly capacityProviders
    /// plus these. defaultCapacityProviderStrategy may name them by metadata.name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 10))]
    pub capacity_provider_refs: Vec<LocalRef>,

    /// Strategy used for services and tasks that set neither a launch type nor a strategy.
    /// Set together with capacityProviders (ECS replaces both at once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 20))]
    pub default_capacity_provider_strategy: Option<Vec<CapacityProviderStrategyItem>>,

    /// Cluster settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settings: Option<ClusterSettings>,

    /// Cluster configuration (ECS Exec).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub configuration: Option<ClusterConfiguration>,

    /// Default Service Connect namespace for services in this cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_connect_defaults: Option<ServiceConnectDefaults>,

    /// Tags on the ECS cluster, besides the operator's ownership tags (at most 48: ECS
    /// allows 50 and the operator uses 2). Keys starting with `aws:` are reserved by AWS.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 50))]
    #[x_kube(validation = crate::api::common::tag_key_rule())]
    #[x_kube(validation = crate::api::common::tag_size_rule())]
    #[x_kube(validation = crate::api::common::tag_count_rule(2))]
    pub tags: BTreeMap<String, String>,

    /// Adopt an existing ECS cluster of the same name that the operator did not create:
    /// tag it as owned and manage it. Without this, such a cluster is never touched and
    /// the resource reports Stalled with reason NotOwned.
    #[serde(default)]
    pub adopt_existing: bool,

    /// What happens to the ECS cluster when this resource is deleted: Delete (default) or
    /// Orphan (keep it, remove the ownership tags).
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterSettings {
    /// CloudWatch Container Insights: enabled, disabled, or enhanced. Omitted: left as ECS has it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_insights: Option<ContainerInsights>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ContainerInsights {
    Enabled,
    Disabled,
    Enhanced,
}

impl ContainerInsights {
    pub fn as_str(&self) -> &'static str {
        match self {
            ContainerInsights::Enabled => "enabled",
            ContainerInsights::Disabled => "disabled",
            ContainerInsights::Enhanced => "enhanced",
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterConfiguration {
    /// Settings for ECS Exec (`aws ecs execute-command`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execute_command_configuration: Option<ExecuteCommandConfiguration>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExecuteCommandConfiguration {
    /// KMS key that encrypts data between the client and the container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kms_key_id: Option<String>,
    /// Where session output goes: NONE, DEFAULT (the task's awslogs configuration) or
    /// OVERRIDE (logConfiguration below).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logging: Option<ExecuteCommandLogging>,
    /// Log destination when logging is OVERRIDE.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_configuration: Option<ExecuteCommandLogConfiguration>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum ExecuteCommandLogging {
    #[serde(rename = "NONE")]
    None,
    #[serde(rename = "DEFAULT")]
    Default,
    #[serde(rename = "OVERRIDE")]
    Override,
}

impl ExecuteCommandLogging {
    pub fn as_str(&self) -> &'static str {
        match self {
            ExecuteCommandLogging::None => "NONE",
            ExecuteCommandLogging::Default => "DEFAULT",
            ExecuteCommandLogging::Override => "OVERRIDE",
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExecuteCommandLogConfiguration {
    /// CloudWatch Logs group for session output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cloud_watch_log_group_name: Option<String>,
    /// Require the log group to be encrypted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cloud_watch_encryption_enabled: Option<bool>,
    /// S3 bucket for session output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3_bucket_name: Option<String>,
    /// Require the bucket to be encrypted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3_encryption_enabled: Option<bool>,
    /// Key prefix for objects in the bucket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3_key_prefix: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceConnectDefaults {
    /// Cloud Map namespace name or ARN used by Service Connect services in this cluster.
    pub namespace: String,
}

/// What the operator observed in ECS.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct EcsClusterStatus {
    /// The metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Ready, Reconciling and Stalled, as kstatus (Flux, Argo CD) expects.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Name of the ECS cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_name: Option<String>,
    /// ARN of the ECS cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arn: Option<String>,
    /// ECS status: ACTIVE, PROVISIONING, DEPROVISIONING, FAILED or INACTIVE.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Container instances registered with the cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registered_container_instances_count: Option<i32>,
    /// Tasks in the RUNNING state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running_tasks_count: Option<i32>,
    /// Tasks in the PENDING state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_tasks_count: Option<i32>,
    /// Services in the ACTIVE state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_services_count: Option<i32>,
    /// Capacity providers ECS reports for the cluster.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub capacity_providers: Vec<String>,
    /// The EC2 container instances registered with the cluster (absent without any).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_instances: Option<ContainerInstances>,
    /// Tag keys from spec.tags the operator has applied, so that a key removed from the
    /// spec is removed from ECS while tags set by others are left alone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub managed_tag_keys: Vec<String>,
}

/// What the cluster's EC2 container instances add up to.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContainerInstances {
    /// Instances by ECS status: ACTIVE, DRAINING, REGISTERING, DEREGISTERING,
    /// REGISTRATION_FAILED.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub by_status: BTreeMap<String, i32>,
    /// Instances whose ECS agent is connected.
    pub agent_connected: i32,
    /// Instances whose ECS agent is not connected: ECS places no new tasks there.
    pub agent_disconnected: i32,
    /// CPU units left for tasks over all instances (1024 per vCPU).
    pub remaining_cpu: i64,
    /// MiB of memory left for tasks over all instances.
    pub remaining_memory_mib: i64,
    /// CPU units the instances registered.
    pub registered_cpu: i64,
    /// MiB of memory the instances registered.
    pub registered_memory_mib: i64,
}

impl EcsCluster {
    /// The ECS cluster name: spec.clusterName, else metadata.name.
    pub fn ecs_name(&self) -> String {
        self.spec
            .cluster_name
            .clone()
            .or_else(|| self.metadata.name.clone())
            .unwrap_or_default()
    }
}
