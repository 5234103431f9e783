//! ECS service calls, conversions between the SDK's shapes and ours, and the
//! batched observer that keeps resyncs at ceil(N/10) DescribeServices per cluster.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_ecs::types::{
    AssignPublicIp as SdkAssignPublicIp, AwsVpcConfiguration as SdkAwsVpc,
    DeploymentAlarms as SdkAlarms, DeploymentCircuitBreaker as SdkBreaker,
    DeploymentConfiguration as SdkDeploymentConfiguration, DeploymentController as SdkController,
    DeploymentControllerType as SdkControllerType, LaunchType as SdkLaunchType,
    LoadBalancer as SdkLoadBalancer, NetworkConfiguration as SdkNetwork,
    PlacementConstraint as SdkConstraint, PlacementConstraintType,
    PlacementStrategy as SdkStrategy, PlacementStrategyType, PropagateTags as SdkPropagateTags,
    SchedulingStrategy as SdkScheduling, Service, ServiceField, ServiceRegistry as SdkRegistry,
};

use super::cluster::{strategy_to_sdk, tags_from_sdk, tags_to_sdk};
use super::{Category, EcsApi, rfc3339};
use crate::api::cluster::CapacityProviderStrategyItem;
use crate::api::service::{
    AssignPublicIp, AwsVpcConfiguration, DeploymentAlarms, DeploymentCircuitBreaker,
    DeploymentConfiguration, DeploymentStatus, EcsServiceSpec, LoadBalancer, PlacementStrategy,
    ServiceEvent, ServicePlacementConstraint, ServiceRegistry, TaskSetStatus,
};
use crate::error::Error;

/// DescribeServices takes at most 10 services per call.
pub const DESCRIBE_BATCH: usize = 10;

/// What ECS holds for one service, in the operator's own terms.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ObservedService {
    pub name: String,
    pub arn: String,
    pub cluster_arn: String,
    /// ACTIVE, DRAINING or INACTIVE.
    pub status: String,
    pub desired_count: i32,
    pub running_count: i32,
    pub pending_count: i32,
    pub task_definition: String,
    pub launch_type: Option<String>,
    /// Weights and bases made explicit (ECS reports 0 for unset ones).
    pub capacity_provider_strategy: Vec<CapacityProviderStrategyItem>,
    pub platform_version: Option<String>,
    pub network: Option<AwsVpcConfiguration>,
    pub load_balancers: Vec<LoadBalancer>,
    pub service_registries: Vec<ServiceRegistry>,
    pub placement_constraints: Vec<ServicePlacementConstraint>,
    pub placement_strategy: Vec<PlacementStrategy>,
    pub deployment_configuration: DeploymentConfiguration,
    pub deployment_controller: Option<String>,
    pub health_check_grace_period_seconds: Option<i32>,
    pub scheduling_strategy: Option<String>,
    pub enable_execute_command: bool,
    pub enable_ecs_managed_tags: bool,
    pub propagate_tags: Option<String>,
    pub tags: BTreeMap<String, String>,
    /// PRIMARY first, as ECS lists them.
    pub deployments: Vec<DeploymentStatus>,
    /// Newest first, as ECS lists them.
    pub events: Vec<ServiceEvent>,
    /// CODE_DEPLOY / EXTERNAL services: their task sets, PRIMARY first.
    pub task_sets: Vec<TaskSetStatus>,
    /// The deployment configuration and load balancers exactly as ECS has them,
    /// including settings the spec does not model (native blue/green strategy, bake
    /// time, lifecycle hooks, advancedConfiguration): an update carries them over
    /// instead of resetting them.
    pub raw_deployment_configuration: Option<SdkDeploymentConfiguration>,
    pub raw_load_balancers: Vec<SdkLoadBalancer>,
}

impl ObservedService {
    /// Deleted services stay visible as INACTIVE; a new one of that name can be created.
    pub fn is_gone(&self) -> bool {
        self.status == "INACTIVE"
    }
    pub fn primary(&self) -> Option<&DeploymentStatus> {
        self.deployments.iter().find(|d| d.status == "PRIMARY")
    }
    pub fn primary_task_set(&self) -> Option<&TaskSetStatus> {
        self.task_sets.iter().find(|t| t.status == "PRIMARY")
    }
    /// Deployed by CodeDeploy or an external controller, not by UpdateService.
    pub fn deployed_elsewhere(&self) -> bool {
        self.deployment_controller
            .as_deref()
            .is_some_and(|c| c != "ECS")
    }
}

/// The name part of a cluster ARN (`arn:...:cluster/NAME`), or the input itself.
pub fn cluster_name(cluster: &str) -> &str {
    match cluster.rsplit_once(":cluster/") {
        Some((_, name)) => name,
        None => cluster,
    }
}

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
        .map_err(|e| Error::Config(format!("networkConfiguration: {e}")))?;
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
                .map_err(|e| Error::Config(format!("deploymentConfiguration.alarms: {e}")))?,
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

pub fn from_sdk(s: &Service) -> ObservedService {
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
    ObservedService {
        name: s.service_name().unwrap_or_default().to_string(),
        arn: s.service_arn().unwrap_or_default().to_string(),
        cluster_arn: s.cluster_arn().unwrap_or_default().to_string(),
        status: s.status().unwrap_or_default().to_string(),
        desired_count: s.desired_count(),
        running_count: s.running_count(),
        pending_count: s.pending_count(),
        task_definition: s.task_definition().unwrap_or_default().to_string(),
        launch_type: s
            .launch_type()
            .map(|l| l.as_str().to_string())
            .filter(|l| !l.is_empty()),
        capacity_provider_strategy: s
            .capacity_provider_strategy()
            .iter()
            .map(|i| CapacityProviderStrategyItem {
                capacity_provider: i.capacity_provider().to_string(),
                weight: Some(i.weight()),
                base: Some(i.base()),
            })
            .collect(),
        platform_version: s
            .platform_version()
            .filter(|p| !p.is_empty())
            .map(str::to_string),
        network: s.network_configuration().and_then(network_from_sdk),
        load_balancers,
        service_registries,
        placement_constraints: s
            .placement_constraints()
            .iter()
            .map(|c| ServicePlacementConstraint {
                type_: c.r#type().map(|t| t.as_str()).unwrap_or("").to_string(),
                expression: c.expression().map(str::to_string),
            })
            .collect(),
        placement_strategy: s
            .placement_strategy()
            .iter()
            .map(|p| PlacementStrategy {
                type_: p.r#type().map(|t| t.as_str()).unwrap_or("").to_string(),
                field: p.field().map(str::to_string),
            })
            .collect(),
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
        deployments: s
            .deployments()
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
            .collect(),
        events: s
            .events()
            .iter()
            .map(|e| ServiceEvent {
                created_at: rfc3339(e.created_at()),
                message: e.message().unwrap_or_default().to_string(),
            })
            .collect(),
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

/// Describes up to 10 services of one cluster. Services ECS does not know are
/// absent from the map (DescribeServices lists them as MISSING failures).
pub async fn describe(
    ecs: &EcsApi,
    cluster: &str,
    names: &[String],
) -> Result<HashMap<String, ObservedService>, Error> {
    let resp = ecs
        .call(
            "DescribeServices",
            Category::Read,
            ecs.client
                .describe_services()
                .cluster(cluster)
                .set_services(Some(names.to_vec()))
                .include(ServiceField::Tags)
                .send(),
        )
        .await?;
    // MISSING means "no such service"; any other reason means we do not know.
    if let Some(f) = resp
        .failures()
        .iter()
        .find(|f| f.reason().is_some_and(|r| r != "MISSING"))
    {
        return Err(Error::Ecs {
            operation: "DescribeServices",
            code: f.reason().map(str::to_string),
            message: format!(
                "ECS could not describe {}: {} {}",
                f.arn().unwrap_or("a service"),
                f.reason().unwrap_or_default(),
                f.detail().unwrap_or_default()
            ),
            class: crate::error::ErrorClass::Retryable,
        });
    }
    Ok(resp
        .services()
        .iter()
        .map(from_sdk)
        .map(|s| (s.name.clone(), s))
        .collect())
}

/// Every service ARN in a cluster (ListServices, all pages).
pub async fn list(ecs: &EcsApi, cluster: &str) -> Result<Vec<String>, Error> {
    let mut arns = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let resp = ecs
            .call(
                "ListServices",
                Category::Read,
                ecs.client
                    .list_services()
                    .cluster(cluster)
                    .max_results(100)
                    .set_next_token(token.take())
                    .send(),
            )
            .await?;
        arns.extend(resp.service_arns().iter().cloned());
        match resp.next_token() {
            Some(t) if !t.is_empty() => token = Some(t.to_string()),
            _ => return Ok(arns),
        }
    }
}

/// CreateService from the spec. `client_token` makes a retried create (after a
/// crash or a lost response) return the first service instead of a second one.
pub async fn create(
    ecs: &EcsApi,
    cluster: &str,
    name: &str,
    task_definition: &str,
    spec: &EcsServiceSpec,
    tags: &BTreeMap<String, String>,
    client_token: &str,
) -> Result<ObservedService, Error> {
    let mut req = ecs
        .client
        .create_service()
        .cluster(cluster)
        .service_name(name)
        .task_definition(task_definition)
        .client_token(client_token)
        // REPLICA services need a count to start with; DAEMON services take none.
        .set_desired_count(match spec.scheduling_strategy {
            Some(crate::api::service::SchedulingStrategy::Daemon) => None,
            _ => Some(spec.desired_count.unwrap_or(1)),
        })
        .set_launch_type(spec.launch_type.map(|l| SdkLaunchType::from(l.as_str())))
        .set_platform_version(spec.platform_version.clone())
        .set_health_check_grace_period_seconds(spec.health_check_grace_period_seconds)
        .set_enable_execute_command(spec.enable_execute_command)
        .set_enable_ecs_managed_tags(spec.enable_ecs_managed_tags)
        .set_propagate_tags(
            spec.propagate_tags
                .map(|p| SdkPropagateTags::from(p.as_str())),
        )
        .set_scheduling_strategy(
            spec.scheduling_strategy
                .map(|s| SdkScheduling::from(s.as_str())),
        )
        .set_tags(Some(tags_to_sdk(tags)));
    if let Some(s) = &spec.capacity_provider_strategy {
        req = req.set_capacity_provider_strategy(Some(strategy_to_sdk(s)?));
    }
    if let Some(n) = &spec.network_configuration {
        req = req.network_configuration(network_to_sdk(&n.awsvpc_configuration)?);
    }
    if let Some(l) = &spec.load_balancers {
        req = req.set_load_balancers(Some(
            l.iter().map(|l| load_balancer_to_sdk(l, &[])).collect(),
        ));
    }
    if let Some(r) = &spec.service_registries {
        req = req.set_service_registries(Some(r.iter().map(registry_to_sdk).collect()));
    }
    if let Some(c) = &spec.placement_constraints {
        req = req.set_placement_constraints(Some(c.iter().map(constraint_to_sdk).collect()));
    }
    if let Some(p) = &spec.placement_strategy {
        req = req.set_placement_strategy(Some(p.iter().map(placement_strategy_to_sdk).collect()));
    }
    if let Some(d) = &spec.deployment_configuration {
        req = req.deployment_configuration(deployment_configuration_to_sdk(d, None)?);
    }
    if let Some(c) = &spec.deployment_controller {
        req = req.deployment_controller(
            SdkController::builder()
                .r#type(SdkControllerType::from(c.type_.as_str()))
                .build()
                .map_err(|e| Error::Config(format!("deploymentController: {e}")))?,
        );
    }
    let resp = ecs
        .call("CreateService", Category::ServiceModify, req.send())
        .await?;
    Ok(resp.service().map(from_sdk).unwrap_or_default())
}

/// The fields an UpdateService call sets; `None` leaves a field as ECS has it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ServiceUpdate {
    pub desired_count: Option<i32>,
    pub task_definition: Option<String>,
    pub capacity_provider_strategy: Option<Vec<CapacityProviderStrategyItem>>,
    pub platform_version: Option<String>,
    pub network: Option<AwsVpcConfiguration>,
    pub load_balancers: Option<Vec<LoadBalancer>>,
    pub service_registries: Option<Vec<ServiceRegistry>>,
    pub placement_constraints: Option<Vec<ServicePlacementConstraint>>,
    pub placement_strategy: Option<Vec<PlacementStrategy>>,
    pub deployment_configuration: Option<DeploymentConfiguration>,
    pub health_check_grace_period_seconds: Option<i32>,
    pub enable_execute_command: Option<bool>,
    pub enable_ecs_managed_tags: Option<bool>,
    pub propagate_tags: Option<String>,
    pub force_new_deployment: bool,
}

impl ServiceUpdate {
    pub fn is_empty(&self) -> bool {
        *self == ServiceUpdate::default()
    }
}

pub async fn update(
    ecs: &EcsApi,
    cluster: &str,
    name: &str,
    u: &ServiceUpdate,
    observed: Option<&ObservedService>,
) -> Result<(), Error> {
    let raw_lbs = observed
        .map(|o| o.raw_load_balancers.as_slice())
        .unwrap_or(&[]);
    let raw_deployment = observed.and_then(|o| o.raw_deployment_configuration.as_ref());
    let mut req = ecs
        .client
        .update_service()
        .cluster(cluster)
        .service(name)
        .set_desired_count(u.desired_count)
        .set_task_definition(u.task_definition.clone())
        .set_platform_version(u.platform_version.clone())
        .set_health_check_grace_period_seconds(u.health_check_grace_period_seconds)
        .set_enable_execute_command(u.enable_execute_command)
        .set_enable_ecs_managed_tags(u.enable_ecs_managed_tags)
        .set_propagate_tags(u.propagate_tags.as_deref().map(SdkPropagateTags::from))
        .force_new_deployment(u.force_new_deployment);
    if let Some(s) = &u.capacity_provider_strategy {
        req = req.set_capacity_provider_strategy(Some(strategy_to_sdk(s)?));
    }
    if let Some(n) = &u.network {
        req = req.network_configuration(network_to_sdk(n)?);
    }
    if let Some(l) = &u.load_balancers {
        req = req.set_load_balancers(Some(
            l.iter().map(|l| load_balancer_to_sdk(l, raw_lbs)).collect(),
        ));
    }
    if let Some(r) = &u.service_registries {
        req = req.set_service_registries(Some(r.iter().map(registry_to_sdk).collect()));
    }
    if let Some(c) = &u.placement_constraints {
        req = req.set_placement_constraints(Some(c.iter().map(constraint_to_sdk).collect()));
    }
    if let Some(p) = &u.placement_strategy {
        req = req.set_placement_strategy(Some(p.iter().map(placement_strategy_to_sdk).collect()));
    }
    if let Some(d) = &u.deployment_configuration {
        req = req.deployment_configuration(deployment_configuration_to_sdk(d, raw_deployment)?);
    }
    ecs.call("UpdateService", Category::ServiceModify, req.send())
        .await?;
    Ok(())
}

pub async fn delete(ecs: &EcsApi, cluster: &str, name: &str) -> Result<(), Error> {
    ecs.call(
        "DeleteService",
        Category::ServiceModify,
        ecs.client
            .delete_service()
            .cluster(cluster)
            .service(name)
            .send(),
    )
    .await?;
    Ok(())
}

#[derive(Default)]
struct ClusterCache {
    /// Every service of this cluster some EcsService asked about: the peers a
    /// DescribeServices call is filled up with.
    known: BTreeSet<String>,
    /// name -> (when read, what was read; None = ECS does not have it).
    seen: HashMap<String, (Instant, Option<ObservedService>)>,
    /// name -> invalidations so far: a read that was in flight while we wrote must
    /// not be cached as if it saw the write.
    epoch: HashMap<String, u64>,
}

/// Reads services through a short-lived cache shared by all EcsService reconciles.
///
/// A reconcile that needs a fresh read of its service also reads every other
/// known service of that cluster whose cached copy is stale, 10 per call; the
/// reconciles that follow in the same resync round find their copy fresh. With
/// resyncs aligned to the interval (see `reconcile::service`), one round of N
/// services in a cluster costs ceil(N/10) DescribeServices calls.
#[derive(Default)]
pub struct ServiceObserver {
    /// How old a peer's copy may be before a read for another service refreshes it.
    window: Duration,
    clusters: Mutex<HashMap<String, ClusterCache>>,
    /// One fetch per cluster at a time, so concurrent reconciles share it.
    fetching: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl ServiceObserver {
    pub fn new(window: Duration) -> Self {
        ServiceObserver {
            window,
            ..Default::default()
        }
    }

    /// How old a copy may be for a routine (resync) read.
    pub fn window(&self) -> Duration {
        self.window
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, ClusterCache>> {
        self.clusters.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn cached(
        &self,
        cluster: &str,
        name: &str,
        max_age: Duration,
    ) -> Option<Option<ObservedService>> {
        let mut all = self.lock();
        let c = all.entry(cluster_name(cluster).to_string()).or_default();
        c.known.insert(name.to_string());
        match c.seen.get(name) {
            Some((at, obs)) if at.elapsed() <= max_age => Some(obs.clone()),
            _ => None,
        }
    }

    /// The service `name` in `cluster`, read no longer than `max_age` ago.
    pub async fn observe(
        &self,
        ecs: &EcsApi,
        cluster: &str,
        name: &str,
        max_age: Duration,
    ) -> Result<Option<ObservedService>, Error> {
        if let Some(hit) = self.cached(cluster, name, max_age) {
            return Ok(hit);
        }
        let key = cluster_name(cluster).to_string();
        let gate = self
            .fetching
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key.clone())
            .or_default()
            .clone();
        let arrived = Instant::now();
        let _turn = gate.lock().await;
        // Someone else may have read it while we waited for our turn: good enough if
        // it is as fresh as we asked, or was requested after we arrived.
        if let Some(hit) = self.cached(cluster, name, max_age.max(arrived.elapsed())) {
            return Ok(hit);
        }
        let peers: Vec<String> = {
            let all = self.lock();
            all.get(&key)
                .map(|c| {
                    c.known
                        .iter()
                        .filter(|n| n.as_str() != name)
                        .filter(|n| {
                            c.seen
                                .get(*n)
                                .is_none_or(|(at, _)| at.elapsed() > self.window)
                        })
                        .cloned()
                        .collect()
                })
                .unwrap_or_default()
        };
        let mut wanted = vec![name.to_string()];
        wanted.extend(peers);
        let mut result = None;
        for chunk in wanted.chunks(DESCRIBE_BATCH) {
            // Age counts from the request, not the answer.
            let sent = Instant::now();
            let epochs: Vec<u64> = {
                let all = self.lock();
                chunk
                    .iter()
                    .map(|n| {
                        all.get(&key)
                            .and_then(|c| c.epoch.get(n).copied())
                            .unwrap_or(0)
                    })
                    .collect()
            };
            let mut found = describe(ecs, cluster, chunk).await?;
            let mut all = self.lock();
            let c = all.entry(key.clone()).or_default();
            for (n, epoch) in chunk.iter().zip(epochs) {
                let obs = found.remove(n);
                if n == name {
                    result = obs.clone();
                }
                if c.epoch.get(n).copied().unwrap_or(0) == epoch {
                    c.seen.insert(n.clone(), (sent, obs));
                }
            }
        }
        Ok(result)
    }

    /// Forget the cached copy (after a write, so the next read sees its effect).
    pub fn invalidate(&self, cluster: &str, name: &str) {
        let mut all = self.lock();
        let c = all.entry(cluster_name(cluster).to_string()).or_default();
        c.seen.remove(name);
        *c.epoch.entry(name.to_string()).or_insert(0) += 1;
    }

    /// (task definition, "ECS service <cluster>/<name>") for every revision the
    /// services last read run or deploy (deployments and task sets): ECS's own view
    /// of what is in use, which may be newer than any status.
    pub fn task_definitions_in_use(&self) -> Vec<(String, String)> {
        let all = self.lock();
        let mut out = Vec::new();
        for (cluster, cache) in all.iter() {
            for (name, (_, obs)) in &cache.seen {
                let Some(obs) = obs.as_ref().filter(|o| o.status == "ACTIVE") else {
                    continue;
                };
                let who = format!("ECS service {cluster}/{name}");
                let tds = std::iter::once(&obs.task_definition)
                    .chain(obs.deployments.iter().map(|d| &d.task_definition))
                    .chain(obs.task_sets.iter().map(|t| &t.task_definition))
                    .filter(|td| !td.is_empty());
                out.extend(tds.map(|td| (td.clone(), who.clone())));
            }
        }
        out
    }

    /// Stop reading a service along with its peers (its EcsService is gone).
    pub fn forget(&self, cluster: &str, name: &str) {
        if let Some(c) = self.lock().get_mut(cluster_name(cluster)) {
            c.seen.remove(name);
            c.known.remove(name);
            c.epoch.remove(name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use aws_sdk_ecs::Client;
    use aws_sdk_ecs::operation::describe_services::DescribeServicesOutput;
    use aws_sdk_ecs::operation::list_services::ListServicesOutput;
    use aws_sdk_ecs::types::{Deployment, Failure};
    use aws_smithy_mocks::{RuleMode, mock, mock_client};

    use crate::api::common::{DeletionPolicy, ownership_tags};
    use crate::ecs::Limiter;
    use crate::reconcile::service_plan::{Cleanup, plan_cleanup};
    use crate::telemetry::Metrics;

    fn ecs(client: Client) -> (EcsApi, Arc<Metrics>) {
        let metrics = Arc::new(Metrics::default());
        (
            EcsApi::new(client, Limiter::default(), metrics.clone()),
            metrics,
        )
    }

    fn sdk_service(name: &str, status: &str) -> Service {
        Service::builder()
            .service_name(name)
            .service_arn(format!("arn:aws:ecs:us-east-1:0:service/c/{name}"))
            .status(status)
            .desired_count(0)
            .set_tags(Some(tags_to_sdk(&ownership_tags("ns", name, "uid-1"))))
            .deployments(
                Deployment::builder()
                    .id("ecs-svc/1")
                    .status("PRIMARY")
                    .task_definition("arn:aws:ecs:us-east-1:0:task-definition/web:1")
                    .build(),
            )
            .build()
    }

    // ministack returns every service in one page; real ECS pages by 10 (100 max).
    #[tokio::test]
    async fn list_follows_every_page() {
        let page1 = mock!(Client::list_services)
            .match_requests(|r| r.next_token().is_none() && r.cluster() == Some("c"))
            .then_output(|| {
                ListServicesOutput::builder()
                    .service_arns("arn:1")
                    .service_arns("arn:2")
                    .next_token("t2")
                    .build()
            });
        let page2 = mock!(Client::list_services)
            .match_requests(|r| r.next_token() == Some("t2"))
            .then_output(|| ListServicesOutput::builder().service_arns("arn:3").build());
        let client = mock_client!(aws_sdk_ecs, RuleMode::Sequential, [&page1, &page2]);
        let (ecs, metrics) = ecs(client);
        assert_eq!(
            list(&ecs, "c").await.unwrap(),
            vec!["arn:1", "arn:2", "arn:3"]
        );
        assert_eq!(page1.num_calls() + page2.num_calls(), 2);
        assert!(metrics.encode().contains(
            r#"ecs_operator_aws_requests_total{operation="ListServices",outcome="success"} 2"#
        ));
    }

    // ministack lands deleted services in INACTIVE at once; real ECS drains first.
    #[tokio::test]
    async fn deletion_waits_while_draining_and_finishes_when_inactive() {
        let draining = mock!(Client::describe_services).then_output(|| {
            DescribeServicesOutput::builder()
                .services(sdk_service("web", "DRAINING"))
                .build()
        });
        let inactive = mock!(Client::describe_services).then_output(|| {
            DescribeServicesOutput::builder()
                .services(sdk_service("web", "INACTIVE"))
                .build()
        });
        let client = mock_client!(aws_sdk_ecs, RuleMode::Sequential, [&draining, &inactive]);
        let (ecs, _) = ecs(client);
        let observer = ServiceObserver::new(Duration::from_secs(30));

        let first = observer
            .observe(&ecs, "c", "web", Duration::ZERO)
            .await
            .unwrap();
        assert_eq!(first.as_ref().map(|o| o.status.as_str()), Some("DRAINING"));
        assert_eq!(
            plan_cleanup("uid-1", DeletionPolicy::Delete, first.as_ref()),
            Cleanup::Draining
        );
        let second = observer
            .observe(&ecs, "c", "web", Duration::ZERO)
            .await
            .unwrap();
        assert_eq!(
            plan_cleanup("uid-1", DeletionPolicy::Delete, second.as_ref()),
            Cleanup::Done {
                reason: "AlreadyGone"
            }
        );
    }

    #[tokio::test]
    async fn a_draining_same_name_service_blocks_create_until_inactive() {
        let draining = mock!(Client::describe_services).then_output(|| {
            DescribeServicesOutput::builder()
                .services(sdk_service("web", "DRAINING"))
                .build()
        });
        let client = mock_client!(aws_sdk_ecs, RuleMode::Sequential, [&draining]);
        let (ecs, _) = ecs(client);
        let observer = ServiceObserver::new(Duration::from_secs(30));
        let obs = observer
            .observe(&ecs, "c", "web", Duration::ZERO)
            .await
            .unwrap();
        let spec = EcsServiceSpec::default();
        let d = crate::reconcile::service_plan::Desired {
            name: "web",
            uid: "uid-2",
            spec: &spec,
            task_definition: "web:1",
            tags: BTreeMap::new(),
            managed_tag_keys: &[],
            applied_task_definition: None,
            applied_redeploy_token: None,
            rolled_back_task_definition: None,
            replaced_task_definition: None,
            recently_created: false,
            own_history: false,
        };
        assert!(matches!(
            crate::reconcile::service_plan::plan(&d, obs.as_ref()),
            crate::reconcile::service_plan::Plan::Wait(_)
        ));
    }

    #[tokio::test]
    async fn a_read_in_flight_during_a_write_is_not_cached() {
        let observer = Arc::new(ServiceObserver::new(Duration::from_secs(30)));
        let during = observer.clone();
        // While DescribeServices is in flight, our own UpdateService to "b" lands.
        let describe = mock!(Client::describe_services).then_compute_output(move |r| {
            during.invalidate("c", "b");
            let mut out = DescribeServicesOutput::builder();
            for n in r.services() {
                out = out.services(sdk_service(n, "ACTIVE"));
            }
            out.build()
        });
        let client = mock_client!(aws_sdk_ecs, RuleMode::MatchAny, [&describe]);
        let (ecs, _) = ecs(client);
        let w = observer.window();
        observer.cached("c", "b", w); // "b" is a known peer
        observer.observe(&ecs, "c", "a", w).await.unwrap();
        assert!(observer.cached("c", "a", w).is_some(), "a was read");
        assert!(
            observer.cached("c", "b", w).is_none(),
            "b's pre-write copy must not be served as fresh"
        );
    }

    #[tokio::test]
    async fn an_update_keeps_native_deployment_settings_the_spec_does_not_model() {
        use aws_sdk_ecs::types::{AdvancedConfiguration, DeploymentStrategy};
        // An adopted blue/green service: strategy, bake time and the load balancer's
        // advancedConfiguration exist only in ECS.
        let advanced = AdvancedConfiguration::builder()
            .alternate_target_group_arn("arn:tg/green")
            .production_listener_rule("arn:rule/prod")
            .role_arn("arn:role/ecs")
            .build();
        let raw_lb = SdkLoadBalancer::builder()
            .target_group_arn("arn:tg/blue")
            .container_name("app")
            .container_port(80)
            .advanced_configuration(advanced.clone())
            .build();
        let raw_deployment = SdkDeploymentConfiguration::builder()
            .strategy(DeploymentStrategy::BlueGreen)
            .bake_time_in_minutes(15)
            .maximum_percent(200)
            .build();
        let observed = ObservedService {
            raw_deployment_configuration: Some(raw_deployment),
            raw_load_balancers: vec![raw_lb],
            ..Default::default()
        };
        let change = ServiceUpdate {
            deployment_configuration: Some(DeploymentConfiguration {
                minimum_healthy_percent: Some(50),
                maximum_percent: Some(200),
                ..Default::default()
            }),
            load_balancers: Some(vec![LoadBalancer {
                target_group_arn: Some("arn:tg/blue".into()),
                load_balancer_name: None,
                container_name: "app".into(),
                container_port: 80,
            }]),
            ..Default::default()
        };
        let sent = mock!(Client::update_service)
            .match_requests(move |r| {
                let d = r.deployment_configuration();
                let lb = r.load_balancers().first();
                d.and_then(|d| d.strategy()) == Some(&DeploymentStrategy::BlueGreen)
                    && d.and_then(|d| d.bake_time_in_minutes()) == Some(15)
                    && d.and_then(|d| d.minimum_healthy_percent()) == Some(50)
                    && lb.and_then(|l| l.advanced_configuration()) == Some(&advanced)
            })
            .then_output(|| {
                aws_sdk_ecs::operation::update_service::UpdateServiceOutput::builder().build()
            });
        let client = mock_client!(aws_sdk_ecs, RuleMode::Sequential, [&sent]);
        let (ecs, _) = ecs(client);
        update(&ecs, "c", "web", &change, Some(&observed))
            .await
            .expect("the update carries the settings over");
        assert_eq!(sent.num_calls(), 1);
    }

    #[tokio::test]
    async fn create_sends_the_client_token() {
        let create = mock!(Client::create_service)
            .match_requests(|r| r.client_token() == Some("tok-1") && r.desired_count() == Some(1))
            .then_output(|| {
                aws_sdk_ecs::operation::create_service::CreateServiceOutput::builder()
                    .service(sdk_service("web", "ACTIVE"))
                    .build()
            });
        let client = mock_client!(aws_sdk_ecs, RuleMode::Sequential, [&create]);
        let (ecs, _) = ecs(client);
        let spec = EcsServiceSpec::default();
        let created = create_service_for_test(&ecs, &spec).await;
        assert_eq!(created.name, "web");
        assert_eq!(create.num_calls(), 1);
    }

    async fn create_service_for_test(ecs: &EcsApi, spec: &EcsServiceSpec) -> ObservedService {
        create(ecs, "c", "web", "web:1", spec, &BTreeMap::new(), "tok-1")
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn one_read_fills_the_cache_for_every_known_peer_ten_per_call() {
        let names: Vec<String> = (0..25).map(|i| format!("s{i:02}")).collect();
        // Answers each requested service (like ECS), MISSING for "gone".
        let echo = mock!(Client::describe_services)
            .match_requests(|r| r.services().len() <= DESCRIBE_BATCH)
            .then_compute_output(|r| {
                let mut out = DescribeServicesOutput::builder();
                for n in r.services() {
                    if n == "gone" {
                        out = out.failures(Failure::builder().arn(n).reason("MISSING").build());
                    } else {
                        out = out.services(sdk_service(n, "ACTIVE"));
                    }
                }
                out.build()
            });
        let client = mock_client!(aws_sdk_ecs, RuleMode::MatchAny, [&echo]);
        let (ecs, _) = ecs(client);
        let observer = ServiceObserver::new(Duration::from_secs(30));
        let window = observer.window();
        // First round: every service makes itself known (as their first reconciles do).
        for n in &names {
            observer.observe(&ecs, "c", n, window).await.unwrap();
        }
        observer.observe(&ecs, "c", "gone", window).await.unwrap();
        let first_round = echo.num_calls();
        // Everything read in that round is cached: a second round reads nothing.
        for n in &names {
            assert!(
                observer
                    .observe(&ecs, "c", n, window)
                    .await
                    .unwrap()
                    .is_some()
            );
        }
        assert!(
            observer
                .observe(&ecs, "c", "gone", window)
                .await
                .unwrap()
                .is_none()
        );
        assert_eq!(echo.num_calls(), first_round);
        // A round after the window: the first read refreshes all 26, 10 per call.
        let observer_later = ServiceObserver::new(Duration::ZERO);
        for n in names.iter().chain(["gone".to_string()].iter()) {
            observer_later.cached("c", n, Duration::ZERO);
        }
        let before = echo.num_calls();
        observer_later
            .observe(&ecs, "c", "s00", Duration::ZERO)
            .await
            .unwrap();
        assert_eq!(echo.num_calls() - before, 3, "26 services, 10 per call");
    }

    #[test]
    fn cluster_name_from_arn_or_name() {
        assert_eq!(
            cluster_name("arn:aws:ecs:us-east-1:000000000000:cluster/prod"),
            "prod"
        );
        assert_eq!(cluster_name("prod"), "prod");
    }
}
