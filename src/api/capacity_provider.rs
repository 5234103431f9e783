//! `EcsCapacityProvider`: an ECS capacity provider backed by an EC2 Auto Scaling group.

// Repeated `printcolumn` / `x_kube(validation)` derive attributes are intended.
#![allow(clippy::duplicated_attributes)]

use std::collections::BTreeMap;

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::common::{Condition, DeletionPolicy};

/// An Amazon ECS capacity provider for an EC2 Auto Scaling group.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "ecs.operator.dev",
    version = "v1alpha1",
    kind = "EcsCapacityProvider",
    namespaced,
    status = "EcsCapacityProviderStatus",
    shortname = "ecscp",
    category = "ecs",
    doc = "An Amazon ECS capacity provider backed by an EC2 Auto Scaling group. The operator creates or adopts it and keeps its scaling settings and tags equal to the spec. The Auto Scaling group itself belongs to whoever made it: the operator reads it and never changes it. EcsClusters use the provider through spec.capacityProviders.",
    printcolumn(name = "ECS Name", type_ = "string", json_path = ".status.name"),
    printcolumn(name = "Status", type_ = "string", json_path = ".status.status"),
    printcolumn(
        name = "Scaling",
        type_ = "string",
        json_path = ".status.managedScaling"
    ),
    printcolumn(
        name = "Desired",
        type_ = "integer",
        json_path = ".status.desiredCapacity"
    ),
    printcolumn(
        name = "InService",
        type_ = "integer",
        json_path = ".status.inServiceInstances"
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
#[x_kube(validation = Rule::new("has(self.name) == has(oldSelf.name) && (!has(self.name) || self.name == oldSelf.name)").message("name is immutable: create a new EcsCapacityProvider to use another ECS name"))]
#[x_kube(validation = Rule::new("has(self.autoScalingGroupArn) != has(self.autoScalingGroupName)").message("set exactly one of autoScalingGroupArn and autoScalingGroupName"))]
#[x_kube(validation = Rule::new("has(self.autoScalingGroupArn) == has(oldSelf.autoScalingGroupArn) && (!has(self.autoScalingGroupArn) || self.autoScalingGroupArn == oldSelf.autoScalingGroupArn) && has(self.autoScalingGroupName) == has(oldSelf.autoScalingGroupName) && (!has(self.autoScalingGroupName) || self.autoScalingGroupName == oldSelf.autoScalingGroupName)").message("the Auto Scaling group is immutable (ECS cannot move a capacity provider to another group): create a new EcsCapacityProvider for the other group"))]
#[x_kube(validation = Rule::new("!has(self.managedTerminationProtection) || self.managedTerminationProtection == 'DISABLED' || (has(self.managedScaling) && has(self.managedScaling.status) && self.managedScaling.status == 'ENABLED')").message("managedTerminationProtection ENABLED needs managedScaling.status ENABLED: ECS protects only the instances it scales"))]
#[serde(rename_all = "camelCase")]
pub struct EcsCapacityProviderSpec {
    /// Name of the capacity provider in ECS. Defaults to metadata.name. Immutable. Up to
    /// 255 letters, digits, `_` and `-`; ECS reserves names starting with `aws`, `ecs` or
    /// `fargate`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 255), regex(pattern = r"^[a-zA-Z0-9_-]+$"))]
    #[x_kube(validation = Rule::new("!self.matches('^(?i)(aws|ecs|fargate)')").message("name: ECS reserves names starting with aws, ecs or fargate; choose another"))]
    pub name: Option<String>,

    /// ARN of the EC2 Auto Scaling group that gives the capacity
    /// (`arn:aws:autoscaling:<region>:<account>:autoScalingGroup:<id>:autoScalingGroupName/<name>`).
    /// Immutable. Set this or autoScalingGroupName.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(max = 1600),
        regex(
            pattern = r"^arn:[a-z-]+:autoscaling:[a-z0-9-]*:[0-9]*:autoScalingGroup:[^:]+:autoScalingGroupName/.+$"
        )
    )]
    pub auto_scaling_group_arn: Option<String>,

    /// Name of the EC2 Auto Scaling group, resolved to its ARN in the operator's region
    /// (the resource waits while no group has that name). Immutable. Set this or
    /// autoScalingGroupArn.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 255))]
    pub auto_scaling_group_name: Option<String>,

    /// Managed scaling: ECS scales the group so that its instances are used at
    /// targetCapacity percent. Omitted fields: ECS's defaults at creation, left as ECS
    /// has them afterwards.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managed_scaling: Option<ManagedScaling>,

    /// ENABLED: ECS keeps instances that run tasks from being terminated on scale-in.
    /// Needs managedScaling ENABLED and scale-in protection on the Auto Scaling group.
    /// Omitted: DISABLED at creation, left as ECS has it afterwards.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managed_termination_protection: Option<Toggle>,

    /// ENABLED: ECS drains an instance's tasks before the group terminates it.
    /// Omitted: ECS's default at creation (ENABLED), left as ECS has it afterwards.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managed_draining: Option<Toggle>,

    /// Tags on the capacity provider, besides the operator's ownership tags (at most 48:
    /// ECS allows 50 and the operator uses 2). Keys starting with `aws:` are reserved by
    /// AWS.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 50))]
    #[x_kube(validation = crate::api::common::tag_key_rule())]
    #[x_kube(validation = crate::api::common::tag_size_rule())]
    #[x_kube(validation = crate::api::common::tag_count_rule(2))]
    pub tags: BTreeMap<String, String>,

    /// Adopt an existing capacity provider of the same name that the operator did not
    /// create: tag it as owned and manage it. Without this, such a provider is never
    /// touched and the resource reports Stalled with reason NotOwned.
    #[serde(default)]
    pub adopt_existing: bool,

    /// What happens to the capacity provider when this resource is deleted: Delete
    /// (default; waits while a cluster still lists it) or Orphan (keep it, remove the
    /// ownership tags).
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
}

/// ECS's on/off switch.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum Toggle {
    #[serde(rename = "ENABLED")]
    Enabled,
    #[serde(rename = "DISABLED")]
    Disabled,
}

impl Toggle {
    pub fn as_str(&self) -> &'static str {
        match self {
            Toggle::Enabled => "ENABLED",
            Toggle::Disabled => "DISABLED",
        }
    }

    pub fn parse(text: &str) -> Option<Toggle> {
        match text {
            "ENABLED" => Some(Toggle::Enabled),
            "DISABLED" => Some(Toggle::Disabled),
            _ => None,
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[x_kube(validation = Rule::new("!has(self.minimumScalingStepSize) || !has(self.maximumScalingStepSize) || self.minimumScalingStepSize <= self.maximumScalingStepSize").message("managedScaling: minimumScalingStepSize must not be greater than maximumScalingStepSize"))]
#[serde(rename_all = "camelCase")]
pub struct ManagedScaling {
    /// ENABLED or DISABLED (ECS's default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Toggle>,
    /// Percent of the group's capacity ECS aims to use, 1-100 (ECS's default 100: no
    /// spare instances).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub target_capacity: Option<i32>,
    /// Fewest instances ECS adds or removes at once, 1-10000 (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10000))]
    pub minimum_scaling_step_size: Option<i32>,
    /// Most instances ECS adds or removes at once, 1-10000 (default 10000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10000))]
    pub maximum_scaling_step_size: Option<i32>,
    /// Seconds a new instance takes before its metrics count, 0-10000 (default 300).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 10000))]
    pub instance_warmup_period: Option<i32>,
}

/// What the operator observed in ECS and EC2 Auto Scaling.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct EcsCapacityProviderStatus {
    /// The metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Ready, Reconciling and Stalled, as kstatus (Flux, Argo CD) expects.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Name of the capacity provider in ECS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// ARN of the capacity provider.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arn: Option<String>,
    /// ECS status: ACTIVE or INACTIVE (PROVISIONING / DEPROVISIONING for other kinds of
    /// provider).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// The last update ECS made: e.g. UPDATE_COMPLETE, UPDATE_FAILED, DELETE_FAILED.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_status: Option<String>,
    /// Why, when updateStatus is a failure (ECS's words).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_status_reason: Option<String>,
    /// ARN of the Auto Scaling group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_scaling_group_arn: Option<String>,
    /// Managed scaling as ECS has it: ENABLED or DISABLED.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managed_scaling: Option<String>,
    /// The Auto Scaling group's desired number of instances.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired_capacity: Option<i32>,
    /// The group's instances in the InService lifecycle state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_service_instances: Option<i32>,
    /// ECS clusters that list this provider, as the EcsClusters of this namespace
    /// report them. While any does, deleting this resource waits.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub clusters: Vec<String>,
    /// Tag keys from spec.tags the operator has applied, so that a key removed from the
    /// spec is removed from ECS while tags set by others are left alone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub managed_tag_keys: Vec<String>,
}

impl EcsCapacityProvider {
    /// The ECS name: spec.name, else metadata.name.
    pub fn ecs_name(&self) -> String {
        self.spec
            .name
            .clone()
            .or_else(|| self.metadata.name.clone())
            .unwrap_or_default()
    }
}
