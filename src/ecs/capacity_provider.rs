//! ECS capacity provider calls, the EC2 Auto Scaling reads they need, and the
//! conversions between the SDKs' shapes and ours.

use std::collections::BTreeMap;

use aws_sdk_autoscaling::types::{AutoScalingGroup, LifecycleState};
use aws_sdk_ecs::types::{
    AutoScalingGroupProvider, AutoScalingGroupProviderUpdate, CapacityProvider,
    CapacityProviderField, ManagedDraining, ManagedScaling as SdkManagedScaling,
    ManagedScalingStatus, ManagedTerminationProtection,
};

use super::{Category, EcsApi, tags_from_sdk, tags_to_sdk};
use crate::api::capacity_provider::{ManagedScaling, Toggle};
use crate::error::Error;

super::ecs_state! {
    /// A capacity provider's status (DescribeCapacityProviders).
    ProviderState {
        Active = "ACTIVE",
        Inactive = "INACTIVE",
    }
}

super::ecs_state! {
    /// The last update ECS made to a capacity provider.
    ProviderUpdate {
        UpdateInProgress = "UPDATE_IN_PROGRESS",
        UpdateComplete = "UPDATE_COMPLETE",
        UpdateFailed = "UPDATE_FAILED",
        CreateInProgress = "CREATE_IN_PROGRESS",
        CreateComplete = "CREATE_COMPLETE",
        CreateFailed = "CREATE_FAILED",
        DeleteInProgress = "DELETE_IN_PROGRESS",
        DeleteComplete = "DELETE_COMPLETE",
        DeleteFailed = "DELETE_FAILED",
    }
}

/// What ECS holds for one capacity provider, in the operator's own terms.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObservedProvider {
    pub name: String,
    pub arn: String,
    pub status: ProviderState,
    pub update_status: ProviderUpdate,
    pub update_status_reason: Option<String>,
    pub auto_scaling_group_arn: String,
    /// Every field as ECS reports it (ECS fills in its defaults).
    pub managed_scaling: ManagedScaling,
    pub managed_termination_protection: Option<Toggle>,
    pub managed_draining: Option<Toggle>,
    pub tags: BTreeMap<String, String>,
}

impl ObservedProvider {
    /// A deleted provider stays visible as INACTIVE for a while.
    pub fn is_gone(&self) -> bool {
        self.status == ProviderState::Inactive
    }
}

/// What an EC2 Auto Scaling group reports that the provider's status shows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObservedGroup {
    pub name: String,
    pub arn: String,
    pub desired_capacity: i32,
    pub in_service: i32,
}

fn managed_scaling_from_sdk(m: &SdkManagedScaling) -> ManagedScaling {
    ManagedScaling {
        status: m.status().and_then(|s| Toggle::parse(s.as_str())),
        target_capacity: m.target_capacity(),
        minimum_scaling_step_size: m.minimum_scaling_step_size(),
        maximum_scaling_step_size: m.maximum_scaling_step_size(),
        instance_warmup_period: m.instance_warmup_period(),
    }
}

pub fn managed_scaling_to_sdk(m: &ManagedScaling) -> SdkManagedScaling {
    SdkManagedScaling::builder()
        .set_status(m.status.map(|s| ManagedScalingStatus::from(s.as_str())))
        .set_target_capacity(m.target_capacity)
        .set_minimum_scaling_step_size(m.minimum_scaling_step_size)
        .set_maximum_scaling_step_size(m.maximum_scaling_step_size)
        .set_instance_warmup_period(m.instance_warmup_period)
        .build()
}

pub fn from_sdk(p: &CapacityProvider) -> ObservedProvider {
    let asg = p.auto_scaling_group_provider();
    ObservedProvider {
        name: p.name().unwrap_or_default().to_string(),
        arn: p.capacity_provider_arn().unwrap_or_default().to_string(),
        status: ProviderState::parse(p.status().map(|s| s.as_str()).unwrap_or_default()),
        update_status: ProviderUpdate::parse(
            p.update_status().map(|s| s.as_str()).unwrap_or_default(),
        ),
        update_status_reason: p
            .update_status_reason()
            .filter(|r| !r.is_empty())
            .map(str::to_string),
        auto_scaling_group_arn: asg
            .map(|a| a.auto_scaling_group_arn().to_string())
            .unwrap_or_default(),
        managed_scaling: asg
            .and_then(|a| a.managed_scaling())
            .map(managed_scaling_from_sdk)
            .unwrap_or_default(),
        managed_termination_protection: asg
            .and_then(|a| a.managed_termination_protection())
            .and_then(|t| Toggle::parse(t.as_str())),
        managed_draining: asg
            .and_then(|a| a.managed_draining())
            .and_then(|t| Toggle::parse(t.as_str())),
        tags: tags_from_sdk(p.tags()),
    }
}

/// The provider named `name`, if ECS has one (INACTIVE ones included: a delete in
/// progress ends there).
pub async fn describe_one(ecs: &EcsApi, name: &str) -> Result<Option<ObservedProvider>, Error> {
    let resp = ecs
        .call(
            "DescribeCapacityProviders",
            Category::Read,
            ecs.client
                .describe_capacity_providers()
                .capacity_providers(name)
                .include(CapacityProviderField::Tags)
                .send(),
        )
        .await?;
    Ok(resp
        .capacity_providers()
        .iter()
        .map(from_sdk)
        .find(|p| p.name == name || p.arn == name))
}

/// What CreateCapacityProvider sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewProvider {
    pub name: String,
    pub auto_scaling_group_arn: String,
    pub managed_scaling: Option<ManagedScaling>,
    pub managed_termination_protection: Option<Toggle>,
    pub managed_draining: Option<Toggle>,
    pub tags: BTreeMap<String, String>,
}

/// What UpdateCapacityProvider sends: only the parts that differ (a whole
/// managedScaling, merged over what ECS has, so nothing falls back to a default).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProviderUpdateRequest {
    pub managed_scaling: Option<ManagedScaling>,
    pub managed_termination_protection: Option<Toggle>,
    pub managed_draining: Option<Toggle>,
}

/// CreateCapacityProvider. Its answer is not read: the caller reads the provider back
/// after its tag writes too.
pub async fn create(ecs: &EcsApi, new: &NewProvider) -> Result<(), Error> {
    let group = AutoScalingGroupProvider::builder()
        .auto_scaling_group_arn(&new.auto_scaling_group_arn)
        .set_managed_scaling(new.managed_scaling.as_ref().map(managed_scaling_to_sdk))
        .set_managed_termination_protection(
            new.managed_termination_protection
                .map(|t| ManagedTerminationProtection::from(t.as_str())),
        )
        .set_managed_draining(
            new.managed_draining
                .map(|t| ManagedDraining::from(t.as_str())),
        )
        .build()
        .map_err(|e| Error::InvalidSpec(format!("capacity provider: {e}")))?;
    let req = ecs
        .client
        .create_capacity_provider()
        .name(&new.name)
        .auto_scaling_group_provider(group)
        .set_tags(Some(tags_to_sdk(&new.tags)));
    ecs.call(
        "CreateCapacityProvider",
        Category::ClusterModify,
        req.send(),
    )
    .await?;
    Ok(())
}

pub async fn update(ecs: &EcsApi, name: &str, change: &ProviderUpdateRequest) -> Result<(), Error> {
    let group = AutoScalingGroupProviderUpdate::builder()
        .set_managed_scaling(change.managed_scaling.as_ref().map(managed_scaling_to_sdk))
        .set_managed_termination_protection(
            change
                .managed_termination_protection
                .map(|t| ManagedTerminationProtection::from(t.as_str())),
        )
        .set_managed_draining(
            change
                .managed_draining
                .map(|t| ManagedDraining::from(t.as_str())),
        )
        .build();
    let req = ecs
        .client
        .update_capacity_provider()
        .name(name)
        .auto_scaling_group_provider(group);
    ecs.call(
        "UpdateCapacityProvider",
        Category::ClusterModify,
        req.send(),
    )
    .await?;
    Ok(())
}

/// DeleteCapacityProvider. ECS answers a provider that a cluster still lists with
/// success and `updateStatus: DELETE_FAILED` (the reason names the cluster), not with
/// an error: the caller reads the answer.
pub async fn delete(ecs: &EcsApi, name: &str) -> Result<Option<ObservedProvider>, Error> {
    let req = ecs
        .client
        .delete_capacity_provider()
        .capacity_provider(name);
    match ecs
        .call(
            "DeleteCapacityProvider",
            Category::ClusterModify,
            req.send(),
        )
        .await
    {
        Ok(resp) => Ok(resp.capacity_provider().map(from_sdk)),
        Err(e) if super::is_not_found(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

fn group_from_sdk(g: &AutoScalingGroup) -> ObservedGroup {
    ObservedGroup {
        name: g.auto_scaling_group_name().unwrap_or_default().to_string(),
        arn: g.auto_scaling_group_arn().unwrap_or_default().to_string(),
        desired_capacity: g.desired_capacity().unwrap_or_default(),
        in_service: g
            .instances()
            .iter()
            .filter(|i| i.lifecycle_state() == Some(&LifecycleState::InService))
            .count()
            .try_into()
            .unwrap_or(i32::MAX),
    }
}

/// The group's name in its ARN (`...:autoScalingGroupName/<name>`).
pub fn group_name_of_arn(arn: &str) -> Option<&str> {
    arn.split_once(":autoScalingGroupName/")
        .map(|(_, name)| name)
        .filter(|name| !name.is_empty())
}

/// The Auto Scaling group named `name`, if there is one. DescribeAutoScalingGroups
/// leaves unknown names out of its answer rather than failing.
pub async fn describe_group(ecs: &EcsApi, name: &str) -> Result<Option<ObservedGroup>, Error> {
    let autoscaling = ecs.autoscaling()?;
    let resp = ecs
        .call(
            "DescribeAutoScalingGroups",
            Category::Read,
            autoscaling
                .describe_auto_scaling_groups()
                .auto_scaling_group_names(name)
                .send(),
        )
        .await?;
    Ok(resp
        .auto_scaling_groups()
        .iter()
        .map(group_from_sdk)
        .find(|g| g.name == name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_group_name_is_read_from_its_arn() {
        let arn = "arn:aws:autoscaling:eu-west-1:123456789012:autoScalingGroup:\
                   0b5e0a0e-1111-2222-3333-444455556666:autoScalingGroupName/gpu-pool";
        assert_eq!(group_name_of_arn(arn), Some("gpu-pool"));
        assert_eq!(group_name_of_arn("arn:aws:autoscaling:x"), None);
        assert_eq!(
            group_name_of_arn("arn:aws:autoscaling:r:1:autoScalingGroup:u:autoScalingGroupName/"),
            None
        );
    }

    #[test]
    fn managed_scaling_survives_the_round_trip() {
        let spec = ManagedScaling {
            status: Some(Toggle::Enabled),
            target_capacity: Some(80),
            minimum_scaling_step_size: Some(2),
            maximum_scaling_step_size: Some(20),
            instance_warmup_period: Some(120),
        };
        assert_eq!(
            managed_scaling_from_sdk(&managed_scaling_to_sdk(&spec)),
            spec
        );
    }
}
