//! Conversions between the SDK's service shapes and the operator's.

use std::collections::BTreeSet;

use aws_sdk_ecs::types::{
    AssignPublicIp as SdkAssignPublicIp, AwsVpcConfiguration as SdkAwsVpc,
    DeploymentAlarms as SdkAlarms, DeploymentCircuitBreaker as SdkBreaker,
    DeploymentConfiguration as SdkDeploymentConfiguration, LoadBalancer as SdkLoadBalancer,
    NetworkConfiguration as SdkNetwork, PlacementConstraint as SdkConstraint,
    PlacementConstraintType, PlacementStrategy as SdkStrategy, PlacementStrategyType,
    PropagateTags as SdkPropagateTags, Service, ServiceRegistry as SdkRegistry,
};

use super::{ObservedService, ROLLBACK_EVENTS, STATUS_EVENTS, ServiceState, ServiceUpdate};
use crate::api::common::CapacityProviderStrategyItem;
use crate::api::common::{AssignPublicIp, AwsVpcConfiguration};
use crate::api::service::{
    DeploymentAlarms, DeploymentCircuitBreaker, DeploymentConfiguration, DeploymentStatus,
    LoadBalancer, PlacementStrategy, ServiceEvent, ServicePlacementConstraint, ServiceRegistry,
    TaskSetStatus,
};
use crate::ecs::rfc3339;
use crate::ecs::{strategy_to_sdk, tags_from_sdk};
use crate::error::Error;

pub fn network_from_sdk(n: &SdkNetwork) -> Option<AwsVpcConfiguration> {
    let a = n.awsvpc_configuration()?;
    let mut subnets = a.subnets().to_vec();
    subnets.sort();
    let mut security_groups = a.security_groups().to_vec();
    security_groups.sort();
    Some(AwsVpcConfiguration {
        subnets,
        security_groups,
        assign_public_ip: match a.assign_public_ip() {
            Some(SdkAssignPublicIp::Enabled) => Some(AssignPublicIp::Enabled),
            _ => Some(AssignPublicIp::Disabled),
        },
    })
}

pub fn network_to_sdk(a: &AwsVpcConfiguration) -> Result<SdkNetwork, Error> {
    let vpc = SdkAwsVpc::builder()
        .set_subnets(Some(a.subnets.clone()))
        .set_security_groups(Some(a.security_groups.clone()))
        .assign_public_ip(SdkAssignPublicIp::from(
            a.assign_public_ip
                .unwrap_or(AssignPublicIp::Disabled)
                .as_str(),
        ))
        .build()
        .map_err(|e| Error::InvalidSpec(format!("networkConfiguration: {e}")))?;
    Ok(SdkNetwork::builder().awsvpc_configuration(vpc).build())
}

/// The SDK load balancer for `l`, keeping the advancedConfiguration (blue/green
/// target groups and listener rules, not modelled in the spec) that ECS has for the
/// same target group and container.
fn load_balancer_to_sdk(l: &LoadBalancer, observed: &[SdkLoadBalancer]) -> SdkLoadBalancer {
    let advanced = observed
        .iter()
        .find(|o| {
            o.target_group_arn() == l.target_group_arn.as_deref()
                && o.load_balancer_name() == l.load_balancer_name.as_deref()
                && o.container_name() == Some(l.container_name.as_str())
                && o.container_port() == Some(l.container_port)
        })
        .and_then(|o| o.advanced_configuration().cloned());
    SdkLoadBalancer::builder()
        .set_target_group_arn(l.target_group_arn.clone())
        .set_load_balancer_name(l.load_balancer_name.clone())
        .container_name(&l.container_name)
        .container_port(l.container_port)
        .set_advanced_configuration(advanced)
        .build()
}

fn registry_to_sdk(r: &ServiceRegistry) -> SdkRegistry {
    SdkRegistry::builder()
        .registry_arn(&r.registry_arn)
        .set_port(r.port)
        .set_container_name(r.container_name.clone())
        .set_container_port(r.container_port)
        .build()
}

fn constraint_to_sdk(c: &ServicePlacementConstraint) -> SdkConstraint {
    SdkConstraint::builder()
        .r#type(PlacementConstraintType::from(c.type_.as_str()))
        .set_expression(c.expression.clone())
        .build()
}

fn placement_strategy_to_sdk(s: &PlacementStrategy) -> SdkStrategy {
    SdkStrategy::builder()
        .r#type(PlacementStrategyType::from(s.type_.as_str()))
        .set_field(s.field.clone())
        .build()
}

/// The SDK deployment configuration for `d`, on top of `observed` (what ECS has):
/// the native deployment settings the spec does not model (strategy, bake time,
/// lifecycle hooks, canary / linear configuration) are carried over, never reset.
pub fn deployment_configuration_to_sdk(
    d: &DeploymentConfiguration,
    observed: Option<&SdkDeploymentConfiguration>,
) -> Result<SdkDeploymentConfiguration, Error> {
    let alarms = match &d.alarms {
        Some(a) => Some(
            SdkAlarms::builder()
                .set_alarm_names(Some(a.alarm_names.clone()))
                .enable(a.enable)
                .rollback(a.rollback)
                .build()
                .map_err(|e| Error::InvalidSpec(format!("deploymentConfiguration.alarms: {e}")))?,
        ),
        None => None,
    };
    Ok(SdkDeploymentConfiguration::builder()
        .set_maximum_percent(d.maximum_percent)
        .set_minimum_healthy_percent(d.minimum_healthy_percent)
        .set_deployment_circuit_breaker(d.deployment_circuit_breaker.as_ref().map(|b| {
            SdkBreaker::builder()
                .enable(b.enable)
                .rollback(b.rollback)
                .build()
        }))
        .set_alarms(alarms)
        .set_strategy(observed.and_then(|o| o.strategy().cloned()))
        .set_bake_time_in_minutes(observed.and_then(|o| o.bake_time_in_minutes()))
        .set_lifecycle_hooks(
            observed
                .map(|o| o.lifecycle_hooks().to_vec())
                .filter(|h| !h.is_empty()),
        )
        .set_canary_configuration(observed.and_then(|o| o.canary_configuration().cloned()))
        .set_linear_configuration(observed.and_then(|o| o.linear_configuration().cloned()))
        .build())
}

fn deployment_configuration_from_sdk(d: &SdkDeploymentConfiguration) -> DeploymentConfiguration {
    DeploymentConfiguration {
        maximum_percent: d.maximum_percent(),
        minimum_healthy_percent: d.minimum_healthy_percent(),
        deployment_circuit_breaker: d.deployment_circuit_breaker().map(|b| {
            DeploymentCircuitBreaker {
                enable: b.enable(),
                rollback: b.rollback(),
            }
        }),
        alarms: d.alarms().map(|a| DeploymentAlarms {
            alarm_names: a.alarm_names().to_vec(),
            enable: a.enable(),
            rollback: a.rollback(),
        }),
    }
}

fn load_balancers_from_sdk(s: &Service) -> Vec<LoadBalancer> {
    let mut load_balancers: Vec<LoadBalancer> = s
        .load_balancers()
        .iter()
        .map(|l| LoadBalancer {
            target_group_arn: l.target_group_arn().map(str::to_string),
            load_balancer_name: l.load_balancer_name().map(str::to_string),
            container_name: l.container_name().unwrap_or_default().to_string(),
            container_port: l.container_port().unwrap_or_default(),
        })
        .collect();
    load_balancers.sort();
    load_balancers
}

fn registries_from_sdk(s: &Service) -> Vec<ServiceRegistry> {
    let mut service_registries: Vec<ServiceRegistry> = s
        .service_registries()
        .iter()
        .map(|r| ServiceRegistry {
            registry_arn: r.registry_arn().unwrap_or_default().to_string(),
            port: r.port(),
            container_name: r.container_name().map(str::to_string),
            container_port: r.container_port(),
        })
        .collect();
    service_registries.sort();
    service_registries
}

fn constraints_from_sdk(s: &Service) -> Vec<ServicePlacementConstraint> {
    s.placement_constraints()
        .iter()
        .map(|c| ServicePlacementConstraint {
            type_: c.r#type().map(|t| t.as_str()).unwrap_or("").to_string(),
            expression: c.expression().map(str::to_string),
        })
        .collect()
}

fn placement_strategy_from_sdk(s: &Service) -> Vec<PlacementStrategy> {
    s.placement_strategy()
        .iter()
        .map(|p| PlacementStrategy {
            type_: p.r#type().map(|t| t.as_str()).unwrap_or("").to_string(),
            field: p.field().map(str::to_string),
        })
        .collect()
}

fn capacity_strategy_from_sdk(s: &Service) -> Vec<CapacityProviderStrategyItem> {
    s.capacity_provider_strategy()
        .iter()
        .map(|i| CapacityProviderStrategyItem {
            capacity_provider: i.capacity_provider().to_string(),
            weight: Some(i.weight()),
            base: Some(i.base()),
        })
        .collect()
}

fn deployments_from_sdk(s: &Service) -> Vec<DeploymentStatus> {
    s.deployments()
        .iter()
        .map(|d| DeploymentStatus {
            id: d.id().unwrap_or_default().to_string(),
            status: d.status().unwrap_or_default().to_string(),
            rollout_state: d
                .rollout_state()
                .map(|r| r.as_str().to_string())
                .filter(|r| !r.is_empty()),
            rollout_state_reason: d
                .rollout_state_reason()
                .filter(|r| !r.is_empty())
                .map(str::to_string),
            task_definition: d.task_definition().unwrap_or_default().to_string(),
            desired_count: d.desired_count(),
            running_count: d.running_count(),
            pending_count: d.pending_count(),
            failed_tasks: d.failed_tasks(),
            created_at: rfc3339(d.created_at()),
            updated_at: rfc3339(d.updated_at()),
        })
        .collect()
}

/// The events later read: the newest `ROLLBACK_EVENTS`, and the first of each
/// message until `STATUS_EVENTS` messages are known. Real ECS returns up to 100
/// events per service and the observer keeps a copy of every service it read, so
/// keeping them all would cost ~25 KiB per service (250 MiB at 10,000).
fn events_from_sdk(s: &Service) -> Vec<ServiceEvent> {
    let mut messages = BTreeSet::new();
    s.events()
        .iter()
        .enumerate()
        .filter(|(newest, e)| {
            let first = messages.insert(e.message().unwrap_or_default());
            *newest < ROLLBACK_EVENTS || (first && messages.len() <= STATUS_EVENTS)
        })
        .map(|(_, e)| ServiceEvent {
            created_at: rfc3339(e.created_at()),
            message: e.message().unwrap_or_default().to_string(),
        })
        .collect()
}

/// A text field ECS may send empty, as None.
fn text(v: Option<&str>) -> Option<String> {
    v.filter(|s| !s.is_empty()).map(str::to_string)
}

pub fn from_sdk(s: &Service) -> ObservedService {
    ObservedService {
        name: s.service_name().unwrap_or_default().to_string(),
        arn: s.service_arn().unwrap_or_default().to_string(),
        cluster_arn: s.cluster_arn().unwrap_or_default().to_string(),
        status: ServiceState::parse(s.status().unwrap_or_default()),
        desired_count: s.desired_count(),
        running_count: s.running_count(),
        pending_count: s.pending_count(),
        task_definition: s.task_definition().unwrap_or_default().to_string(),
        launch_type: text(s.launch_type().map(|l| l.as_str())),
        capacity_provider_strategy: capacity_strategy_from_sdk(s),
        platform_version: text(s.platform_version()),
        network: s.network_configuration().and_then(network_from_sdk),
        load_balancers: load_balancers_from_sdk(s),
        service_registries: registries_from_sdk(s),
        placement_constraints: constraints_from_sdk(s),
        placement_strategy: placement_strategy_from_sdk(s),
        deployment_configuration: s
            .deployment_configuration()
            .map(deployment_configuration_from_sdk)
            .unwrap_or_default(),
        deployment_controller: s
            .deployment_controller()
            .map(|c| c.r#type().as_str().to_string()),
        health_check_grace_period_seconds: s.health_check_grace_period_seconds(),
        scheduling_strategy: s.scheduling_strategy().map(|x| x.as_str().to_string()),
        enable_execute_command: s.enable_execute_command(),
        enable_ecs_managed_tags: s.enable_ecs_managed_tags(),
        propagate_tags: s.propagate_tags().map(|p| p.as_str().to_string()),
        tags: tags_from_sdk(s.tags()),
        deployments: deployments_from_sdk(s),
        events: events_from_sdk(s),
        task_sets: task_sets_from_sdk(s.task_sets()),
        raw_deployment_configuration: s.deployment_configuration().cloned(),
        raw_load_balancers: s.load_balancers().to_vec(),
    }
}

fn task_sets_from_sdk(sets: &[aws_sdk_ecs::types::TaskSet]) -> Vec<TaskSetStatus> {
    let mut out: Vec<TaskSetStatus> = sets
        .iter()
        .map(|t| TaskSetStatus {
            id: t.id().unwrap_or_default().to_string(),
            status: t.status().unwrap_or_default().to_string(),
            task_definition: t.task_definition().unwrap_or_default().to_string(),
            computed_desired_count: t.computed_desired_count(),
            running_count: t.running_count(),
            pending_count: t.pending_count(),
            stability_status: t
                .stability_status()
                .map(|s| s.as_str().to_string())
                .filter(|s| !s.is_empty()),
        })
        .collect();
    // PRIMARY first, as for deployments.
    out.sort_by_key(|t| t.status != "PRIMARY");
    out
}

/// The settings CreateService and UpdateService both take, converted once from a
/// [`ServiceUpdate`] (one mapping for both calls; see [`with_settings!`]).
pub struct SdkSettings {
    pub capacity_provider_strategy: Option<Vec<aws_sdk_ecs::types::CapacityProviderStrategyItem>>,
    pub platform_version: Option<String>,
    pub network_configuration: Option<SdkNetwork>,
    pub load_balancers: Option<Vec<SdkLoadBalancer>>,
    pub service_registries: Option<Vec<SdkRegistry>>,
    pub placement_constraints: Option<Vec<SdkConstraint>>,
    pub placement_strategy: Option<Vec<SdkStrategy>>,
    pub deployment_configuration: Option<SdkDeploymentConfiguration>,
    pub health_check_grace_period_seconds: Option<i32>,
    pub enable_execute_command: Option<bool>,
    pub enable_ecs_managed_tags: Option<bool>,
    pub propagate_tags: Option<SdkPropagateTags>,
}

/// `u` in the SDK's shapes. `observed` is the service as ECS has it (None for a
/// create): settings the spec does not model are carried over from it.
pub fn sdk_settings(
    update: &ServiceUpdate,
    observed: Option<&ObservedService>,
) -> Result<SdkSettings, Error> {
    let raw_lbs = observed
        .map(|o| o.raw_load_balancers.as_slice())
        .unwrap_or(&[]);
    let raw_deployment = observed.and_then(|o| o.raw_deployment_configuration.as_ref());
    let lbs = update.load_balancers.as_deref();
    Ok(SdkSettings {
        capacity_provider_strategy: update
            .capacity_provider_strategy
            .as_deref()
            .map(strategy_to_sdk)
            .transpose()?,
        platform_version: update.platform_version.clone(),
        network_configuration: update.network.as_ref().map(network_to_sdk).transpose()?,
        load_balancers: lbs.map(|l| l.iter().map(|l| load_balancer_to_sdk(l, raw_lbs)).collect()),
        service_registries: update
            .service_registries
            .as_deref()
            .map(|r| r.iter().map(registry_to_sdk).collect()),
        placement_constraints: update
            .placement_constraints
            .as_deref()
            .map(|c| c.iter().map(constraint_to_sdk).collect()),
        placement_strategy: update
            .placement_strategy
            .as_deref()
            .map(|p| p.iter().map(placement_strategy_to_sdk).collect()),
        deployment_configuration: update
            .deployment_configuration
            .as_ref()
            .map(|d| deployment_configuration_to_sdk(d, raw_deployment))
            .transpose()?,
        health_check_grace_period_seconds: update.health_check_grace_period_seconds,
        enable_execute_command: update.enable_execute_command,
        enable_ecs_managed_tags: update.enable_ecs_managed_tags,
        propagate_tags: update.propagate_tags.as_deref().map(SdkPropagateTags::from),
    })
}

/// Sets [`SdkSettings`] on a CreateService or UpdateService request builder (their
/// setters have the same names).
macro_rules! with_settings {
    ($request:expr, $settings:expr) => {{
        let s = $settings;
        $request
            .set_capacity_provider_strategy(s.capacity_provider_strategy)
            .set_platform_version(s.platform_version)
            .set_network_configuration(s.network_configuration)
            .set_load_balancers(s.load_balancers)
            .set_service_registries(s.service_registries)
            .set_placement_constraints(s.placement_constraints)
            .set_placement_strategy(s.placement_strategy)
            .set_deployment_configuration(s.deployment_configuration)
            .set_health_check_grace_period_seconds(s.health_check_grace_period_seconds)
            .set_enable_execute_command(s.enable_execute_command)
            .set_enable_ecs_managed_tags(s.enable_ecs_managed_tags)
            .set_propagate_tags(s.propagate_tags)
    }};
}
pub(crate) use with_settings;

#[cfg(test)]
mod tests {
    use aws_sdk_ecs::types::{Service, ServiceEvent as SdkEvent};

    use super::*;

    fn service_with(messages: &[&str]) -> Service {
        let mut service = Service::builder();
        for message in messages {
            service = service.events(SdkEvent::builder().message(*message).build());
        }
        service.build()
    }

    #[test]
    fn keeps_only_the_events_status_and_rollback_read() {
        // ECS's usual shape: the steady-state message repeated, a few others between.
        let mut messages = vec!["steady"; 100];
        for (at, message) in [
            (1, "a"),
            (2, "steady"),
            (40, "b"),
            (41, "c"),
            (60, "d"),
            (70, "e"),
        ] {
            messages[at] = message;
        }
        let kept = events_from_sdk(&service_with(&messages));
        let texts = |events: &[ServiceEvent]| -> Vec<String> {
            events.iter().map(|e| e.message.clone()).collect()
        };
        // The newest three as they are, then the first of each new message up to five.
        assert_eq!(texts(&kept), ["steady", "a", "steady", "b", "c", "d"]);
        // Status shows what it would have shown from all 100.
        let shown = crate::reconcile::service_plan::status_events(&kept);
        assert_eq!(texts(&shown), ["steady", "a", "b", "c", "d"]);
    }

    #[test]
    fn keeps_a_short_list_whole() {
        let kept = events_from_sdk(&service_with(&["x", "x", "x", "x"]));
        assert_eq!(kept.len(), 3);
        assert!(events_from_sdk(&service_with(&[])).is_empty());
    }
}
