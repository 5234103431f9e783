//! ECS cluster calls and conversions between the SDK's shapes and ours.

use std::collections::BTreeMap;

use aws_sdk_ecs::types::{
    Cluster, ClusterConfiguration as SdkClusterConfiguration, ClusterField,
    ClusterServiceConnectDefaultsRequest, ClusterSetting, ClusterSettingName,
    ExecuteCommandConfiguration as SdkExec, ExecuteCommandLogConfiguration as SdkExecLog,
    ExecuteCommandLogging as SdkLogging,
};

use super::{Category, EcsApi, tags_from_sdk};
use crate::api::cluster::{
    ContainerInsights, ContainerInstances, ExecuteCommandConfiguration,
    ExecuteCommandLogConfiguration, ExecuteCommandLogging,
};
use crate::api::common::CapacityProviderStrategyItem;
use crate::error::Error;

super::ecs_state! {
    /// A cluster's status (DescribeClusters).
    ClusterState {
        Active = "ACTIVE",
        Provisioning = "PROVISIONING",
        Deprovisioning = "DEPROVISIONING",
        Failed = "FAILED",
        Inactive = "INACTIVE",
    }
}

/// What ECS holds for one cluster, in the operator's own terms.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObservedCluster {
    pub name: String,
    pub arn: String,
    pub status: ClusterState,
    /// Setting name -> value (e.g. containerInsights -> enabled).
    pub settings: BTreeMap<String, String>,
    pub execute_command: Option<ExecuteCommandConfiguration>,
    pub service_connect_namespace: Option<String>,
    pub capacity_providers: Vec<String>,
    pub default_strategy: Vec<CapacityProviderStrategyItem>,
    pub tags: BTreeMap<String, String>,
    pub registered_container_instances: i32,
    pub running_tasks: i32,
    pub pending_tasks: i32,
    pub active_services: i32,
}

impl ObservedCluster {
    /// ECS keeps deleted clusters visible as INACTIVE for a while; a new one of
    /// the same name can then be created.
    pub fn is_gone(&self) -> bool {
        self.status == ClusterState::Inactive
    }
}

fn logging_from_sdk(l: &SdkLogging) -> Option<ExecuteCommandLogging> {
    match l {
        SdkLogging::None => Some(ExecuteCommandLogging::None),
        SdkLogging::Default => Some(ExecuteCommandLogging::Default),
        SdkLogging::Override => Some(ExecuteCommandLogging::Override),
        _ => None,
    }
}

fn exec_from_sdk(e: &SdkExec) -> ExecuteCommandConfiguration {
    ExecuteCommandConfiguration {
        kms_key_id: e.kms_key_id().map(str::to_string),
        logging: e.logging().and_then(logging_from_sdk),
        log_configuration: e
            .log_configuration()
            .map(|l| ExecuteCommandLogConfiguration {
                cloud_watch_log_group_name: l.cloud_watch_log_group_name().map(str::to_string),
                cloud_watch_encryption_enabled: Some(l.cloud_watch_encryption_enabled())
                    .filter(|b| *b),
                s3_bucket_name: l.s3_bucket_name().map(str::to_string),
                s3_encryption_enabled: Some(l.s3_encryption_enabled()).filter(|b| *b),
                s3_key_prefix: l.s3_key_prefix().map(str::to_string),
            }),
    }
}

pub fn exec_to_sdk(e: &ExecuteCommandConfiguration) -> SdkClusterConfiguration {
    let mut b = SdkExec::builder();
    if let Some(k) = &e.kms_key_id {
        b = b.kms_key_id(k);
    }
    if let Some(l) = e.logging {
        b = b.logging(SdkLogging::from(l.as_str()));
    }
    if let Some(l) = &e.log_configuration {
        let mut lb = SdkExecLog::builder();
        if let Some(v) = &l.cloud_watch_log_group_name {
            lb = lb.cloud_watch_log_group_name(v);
        }
        if let Some(v) = l.cloud_watch_encryption_enabled {
            lb = lb.cloud_watch_encryption_enabled(v);
        }
        if let Some(v) = &l.s3_bucket_name {
            lb = lb.s3_bucket_name(v);
        }
        if let Some(v) = l.s3_encryption_enabled {
            lb = lb.s3_encryption_enabled(v);
        }
        if let Some(v) = &l.s3_key_prefix {
            lb = lb.s3_key_prefix(v);
        }
        b = b.log_configuration(lb.build());
    }
    SdkClusterConfiguration::builder()
        .execute_command_configuration(b.build())
        .build()
}

pub fn container_insights_setting(ci: ContainerInsights) -> ClusterSetting {
    ClusterSetting::builder()
        .name(ClusterSettingName::ContainerInsights)
        .value(ci.as_str())
        .build()
}

pub fn service_connect_to_sdk(namespace: &str) -> ClusterServiceConnectDefaultsRequest {
    // `build` only fails when the required namespace is missing; we always set it.
    ClusterServiceConnectDefaultsRequest::builder()
        .namespace(namespace)
        .build()
        .unwrap_or_else(|_| unreachable!("namespace is set"))
}

pub fn from_sdk(c: &Cluster) -> ObservedCluster {
    ObservedCluster {
        name: c.cluster_name().unwrap_or_default().to_string(),
        arn: c.cluster_arn().unwrap_or_default().to_string(),
        status: ClusterState::parse(c.status().unwrap_or_default()),
        settings: c
            .settings()
            .iter()
            .filter_map(|s| Some((s.name()?.as_str().to_string(), s.value()?.to_string())))
            .collect(),
        execute_command: c
            .configuration()
            .and_then(|cfg| cfg.execute_command_configuration())
            .map(exec_from_sdk),
        service_connect_namespace: c
            .service_connect_defaults()
            .and_then(|d| d.namespace())
            .map(str::to_string),
        capacity_providers: c.capacity_providers().to_vec(),
        default_strategy: c
            .default_capacity_provider_strategy()
            .iter()
            .map(|s| CapacityProviderStrategyItem {
                capacity_provider: s.capacity_provider().to_string(),
                weight: Some(s.weight()),
                base: Some(s.base()),
            })
            .collect(),
        tags: tags_from_sdk(c.tags()),
        registered_container_instances: c.registered_container_instances_count(),
        running_tasks: c.running_tasks_count(),
        pending_tasks: c.pending_tasks_count(),
        active_services: c.active_services_count(),
    }
}

/// Describes clusters by name or ARN, 100 per call (the ECS maximum). Clusters ECS
/// does not know are simply absent from the result.
pub async fn describe(ecs: &EcsApi, names: &[String]) -> Result<Vec<ObservedCluster>, Error> {
    let mut out = Vec::with_capacity(names.len());
    for chunk in names.chunks(100) {
        let resp = ecs
            .call(
                "DescribeClusters",
                Category::Read,
                ecs.client
                    .describe_clusters()
                    .set_clusters(Some(chunk.to_vec()))
                    .include(ClusterField::Settings)
                    .include(ClusterField::Configurations)
                    .include(ClusterField::Tags)
                    .send(),
            )
            .await?;
        out.extend(resp.clusters().iter().map(from_sdk));
    }
    Ok(out)
}

/// The cluster named `name`, if ECS has one that is not INACTIVE.
pub async fn describe_one(ecs: &EcsApi, name: &str) -> Result<Option<ObservedCluster>, Error> {
    Ok(describe(ecs, &[name.to_string()])
        .await?
        .into_iter()
        .find(|c| (c.name == name || c.arn == name) && !c.is_gone()))
}

/// A resource (CPU, MEMORY) of an instance, summed: ECS gives both as integers.
fn resource(resources: &[aws_sdk_ecs::types::Resource], name: &str) -> i64 {
    resources
        .iter()
        .filter(|r| r.name() == Some(name))
        .map(|r| i64::from(r.integer_value()))
        .sum()
}

/// Adds up what DescribeContainerInstances reports.
pub fn summarise(instances: &[aws_sdk_ecs::types::ContainerInstance]) -> ContainerInstances {
    let mut summary = ContainerInstances::default();
    for instance in instances {
        let status = instance.status().unwrap_or("UNKNOWN").to_string();
        *summary.by_status.entry(status).or_insert(0) += 1;
        if instance.agent_connected() {
            summary.agent_connected += 1;
        } else {
            summary.agent_disconnected += 1;
        }
        summary.remaining_cpu += resource(instance.remaining_resources(), "CPU");
        summary.remaining_memory_mib += resource(instance.remaining_resources(), "MEMORY");
        summary.registered_cpu += resource(instance.registered_resources(), "CPU");
        summary.registered_memory_mib += resource(instance.registered_resources(), "MEMORY");
    }
    summary
}

/// The cluster's container instances (all but INACTIVE), summed up: one
/// ListContainerInstances page and one DescribeContainerInstances per 100 (the
/// maximum of both).
pub async fn container_instances(ecs: &EcsApi, cluster: &str) -> Result<ContainerInstances, Error> {
    let mut arns = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let page = ecs
            .call(
                "ListContainerInstances",
                Category::Read,
                ecs.client
                    .list_container_instances()
                    .cluster(cluster)
                    .max_results(100)
                    .set_next_token(token.take())
                    .send(),
            )
            .await?;
        arns.extend(page.container_instance_arns().iter().cloned());
        match page.next_token() {
            Some(next) if !next.is_empty() => token = Some(next.to_string()),
            _ => break,
        }
    }
    let mut described = Vec::with_capacity(arns.len());
    for chunk in arns.chunks(100) {
        let resp = ecs
            .call(
                "DescribeContainerInstances",
                Category::Read,
                ecs.client
                    .describe_container_instances()
                    .cluster(cluster)
                    .set_container_instances(Some(chunk.to_vec()))
                    .send(),
            )
            .await?;
        described.extend(resp.container_instances().iter().cloned());
    }
    Ok(summarise(&described))
}

#[cfg(test)]
mod tests {
    use aws_sdk_ecs::types::{ContainerInstance, Resource};

    use super::*;

    fn instance(status: &str, connected: bool, cpu_left: i32) -> ContainerInstance {
        let cpu = |v| Resource::builder().name("CPU").integer_value(v).build();
        let memory = |v| Resource::builder().name("MEMORY").integer_value(v).build();
        ContainerInstance::builder()
            .status(status)
            .agent_connected(connected)
            .registered_resources(cpu(2048))
            .registered_resources(memory(4000))
            .remaining_resources(cpu(cpu_left))
            .remaining_resources(memory(1000))
            .build()
    }

    #[test]
    fn container_instances_add_up_by_status_agent_and_resources() {
        let summary = summarise(&[
            instance("ACTIVE", true, 1024),
            instance("ACTIVE", false, 2048),
            instance("DRAINING", true, 0),
        ]);
        assert_eq!(
            summary.by_status,
            [("ACTIVE".to_string(), 2), ("DRAINING".to_string(), 1)].into()
        );
        assert_eq!(
            (summary.agent_connected, summary.agent_disconnected),
            (2, 1)
        );
        assert_eq!(
            (summary.remaining_cpu, summary.registered_cpu),
            (3072, 6144)
        );
        assert_eq!(
            (summary.remaining_memory_mib, summary.registered_memory_mib),
            (3000, 12000)
        );
    }
}
