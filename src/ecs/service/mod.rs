//! ECS services: the calls (here), conversions between the SDK's shapes and ours
//! (`convert`), and the batched observer shared by all EcsService reconciles
//! (`observer`).

mod convert;
mod observer;

pub use convert::{deployment_configuration_to_sdk, from_sdk, network_from_sdk, network_to_sdk};
use convert::{sdk_settings, with_settings};
pub use observer::{FRESH, ServiceObserver};

use std::collections::{BTreeMap, HashMap};

use aws_sdk_ecs::types::{
    DeploymentConfiguration as SdkDeploymentConfiguration, DeploymentController as SdkController,
    DeploymentControllerType as SdkControllerType, LaunchType as SdkLaunchType,
    LoadBalancer as SdkLoadBalancer, SchedulingStrategy as SdkScheduling, ServiceField,
};

use super::{Category, EcsApi};
use crate::api::common::AwsVpcConfiguration;
use crate::api::common::CapacityProviderStrategyItem;
use crate::api::service::{
    DeploymentConfiguration, DeploymentStatus, EcsServiceSpec, LoadBalancer, PlacementStrategy,
    ServiceEvent, ServicePlacementConstraint, ServiceRegistry, TaskSetStatus,
};
use crate::ecs::tags_to_sdk;
use crate::error::Error;

/// DescribeServices takes at most 10 services per call.
pub const DESCRIBE_BATCH: usize = 10;
/// The newest events the rollback check reads (ECS writes "rolling back" there).
pub const ROLLBACK_EVENTS: usize = 3;
/// Distinct ECS event messages shown in status.
pub const STATUS_EVENTS: usize = 5;

super::ecs_state! {
    /// A service's status (DescribeServices).
    ServiceState {
        Active = "ACTIVE",
        Draining = "DRAINING",
        Inactive = "INACTIVE",
    }
}

/// What ECS holds for one service, in the operator's own terms.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ObservedService {
    pub name: String,
    pub arn: String,
    pub cluster_arn: String,
    pub status: ServiceState,
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
    /// Newest first, as ECS lists them; only the ones status and the rollback
    /// check read (see `convert::events_from_sdk`).
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
        self.status == ServiceState::Inactive
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
    let settings = sdk_settings(&ServiceUpdate::from_spec(spec), None)?;
    let controller = spec
        .deployment_controller
        .as_ref()
        .map(|c| {
            SdkController::builder()
                .r#type(SdkControllerType::from(c.type_.as_str()))
                .build()
                .map_err(|e| Error::InvalidSpec(format!("deploymentController: {e}")))
        })
        .transpose()?;
    let req = ecs
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
        .set_launch_type(
            spec.placement
                .launch_type
                .map(|l| SdkLaunchType::from(l.as_str())),
        )
        .set_scheduling_strategy(
            spec.scheduling_strategy
                .map(|s| SdkScheduling::from(s.as_str())),
        )
        .set_deployment_controller(controller)
        .set_tags(Some(tags_to_sdk(tags)));
    let req = with_settings!(req, settings);
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

    /// Everything the spec sets, as CreateService sends it (the count, launch type,
    /// scheduling strategy and deployment controller are set by `create` itself).
    pub fn from_spec(spec: &EcsServiceSpec) -> ServiceUpdate {
        ServiceUpdate {
            capacity_provider_strategy: spec.placement.capacity_provider_strategy.clone(),
            platform_version: spec.placement.platform_version.clone(),
            network: spec
                .placement
                .network_configuration
                .as_ref()
                .map(|n| n.awsvpc_configuration.clone()),
            load_balancers: spec.load_balancers.clone(),
            service_registries: spec.service_registries.clone(),
            placement_constraints: spec.placement_constraints.clone(),
            placement_strategy: spec.placement_strategy.clone(),
            deployment_configuration: spec.deployment_configuration.clone(),
            health_check_grace_period_seconds: spec.health_check_grace_period_seconds,
            enable_execute_command: spec.enable_execute_command,
            enable_ecs_managed_tags: spec.enable_ecs_managed_tags,
            propagate_tags: spec.propagate_tags.map(|p| p.as_str().to_string()),
            ..Default::default()
        }
    }
}

pub async fn update(
    ecs: &EcsApi,
    cluster: &str,
    name: &str,
    update: &ServiceUpdate,
    observed: Option<&ObservedService>,
) -> Result<(), Error> {
    let settings = sdk_settings(update, observed)?;
    let req = ecs
        .client
        .update_service()
        .cluster(cluster)
        .service(name)
        .set_desired_count(update.desired_count)
        .set_task_definition(update.task_definition.clone())
        .force_new_deployment(update.force_new_deployment);
    let req = with_settings!(req, settings);
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    use aws_sdk_ecs::Client;
    use aws_sdk_ecs::operation::describe_services::DescribeServicesOutput;
    use aws_sdk_ecs::operation::list_services::ListServicesOutput;
    use aws_sdk_ecs::types::Service;
    use aws_sdk_ecs::types::{Deployment, Failure};
    use aws_smithy_mocks::{RuleMode, mock, mock_client};

    use crate::api::common::{DeletionPolicy, ownership_tags};
    use crate::ecs::Limiter;
    use crate::reconcile::owned::Release;
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
            r#"ecs_operator_aws_requests_total{kind="operator",operation="ListServices",outcome="success"} 2"#
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
            plan_cleanup("uid-1", DeletionPolicy::Delete, first.as_ref(), false),
            Cleanup::Draining
        );
        let second = observer
            .observe(&ecs, "c", "web", Duration::ZERO)
            .await
            .unwrap();
        assert_eq!(
            plan_cleanup("uid-1", DeletionPolicy::Delete, second.as_ref(), false),
            Cleanup::Done(Release::Gone)
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
        let me = crate::reconcile::owned::Claimant {
            kind: "EcsService",
            uid: "uid-2".into(),
            owner: "ns/web".into(),
            adopt_existing: false,
        };
        let d = crate::reconcile::service_plan::Desired {
            name: "web",
            me: &me,
            spec: &spec,
            task_definition: "web:1",
            tags: BTreeMap::new(),
            managed_tag_keys: &[],
            applied_task_definition: None,
            applied_redeploy_token: None,
            rolled_back_task_definition: None,
            replaced_task_definition: None,
            recently_created: false,
            living: None,
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
        // After the window a reconcile's read is one call (itself and 9 stale
        // peers); the resync round is the sweep's: all 26, 10 per call.
        let observer_later = ServiceObserver::new(Duration::ZERO);
        let all: Vec<String> = names.iter().cloned().chain(["gone".to_string()]).collect();
        for n in &all {
            observer_later.cached("c", n, Duration::ZERO);
        }
        let before = echo.num_calls();
        observer_later
            .observe(&ecs, "c", "s00", Duration::ZERO)
            .await
            .unwrap();
        assert_eq!(echo.num_calls() - before, 1, "one call per reconcile");
        observer_later
            .sweep(&ecs, "c", &all, Duration::ZERO)
            .await
            .unwrap();
        assert_eq!(echo.num_calls() - before, 4, "26 services, 10 per call");
    }

    // 1,000 EcsServices applied at once: their first reads ("does ECS have it?")
    // share calls, and a "no" stays good until a write.
    #[tokio::test]
    async fn never_created_services_are_read_a_hundred_at_once() {
        let echo = mock!(Client::describe_services)
            .match_requests(|r| r.services().len() <= DESCRIBE_BATCH)
            .then_compute_output(|r| {
                let mut out = DescribeServicesOutput::builder();
                for n in r.services() {
                    out = out.failures(Failure::builder().arn(n).reason("MISSING").build());
                }
                out.build()
            });
        let client = mock_client!(aws_sdk_ecs, RuleMode::MatchAny, [&echo]);
        let (ecs, _) = ecs(client);
        let observer = ServiceObserver::new(Duration::ZERO);
        let names: Vec<String> = (0..250).map(|i| format!("new-{i:03}")).collect();
        let pending = || names.clone();
        for n in &names {
            let seen = observer.observe_new(&ecs, "c", n, pending).await.unwrap();
            assert!(seen.is_none());
        }
        // 250 services, 100 per miss (10 calls of 10): 3 misses.
        assert_eq!(echo.num_calls(), 25);
        // A write (CreateService) makes the next look real.
        observer.invalidate("c", "new-000");
        observer
            .observe_new(&ecs, "c", "new-000", pending)
            .await
            .unwrap();
        assert_eq!(echo.num_calls(), 26);
    }

    #[test]
    fn cluster_name_from_arn_or_name() {
        assert_eq!(
            cluster_name("arn:aws:ecs:us-east-1:000000000000:cluster/prod"),
            "prod"
        );
        assert_eq!(cluster_name("prod"), "prod");
    }

    // A resync that finds ECS as the last reconcile saw it wakes nobody; one that
    // finds a change wakes exactly that service.
    #[tokio::test]
    async fn a_sweep_names_only_the_services_ecs_changed() {
        let answer = |running: i32| {
            move || {
                let mut changed = sdk_service("b", "ACTIVE");
                changed.running_count = running;
                DescribeServicesOutput::builder()
                    .services(sdk_service("a", "ACTIVE"))
                    .services(changed)
                    .build()
            }
        };
        let rules = [answer(0), answer(0), answer(0), answer(1)]
            .map(|a| mock!(Client::describe_services).then_output(a));
        let [r1, r2, r3, r4] = &rules;
        let client = mock_client!(aws_sdk_ecs, RuleMode::Sequential, [r1, r2, r3, r4]);
        let (ecs, _) = ecs(client);
        let observer = ServiceObserver::new(Duration::from_secs(30));
        // Both reconciled, each given its copy.
        for name in ["a", "b"] {
            let copy = observer.observe(&ecs, "c", name, Duration::ZERO).await;
            assert!(copy.unwrap().is_some());
        }
        let names = vec!["a".to_string(), "b".to_string()];
        assert!(
            observer
                .sweep(&ecs, "c", &names, Duration::ZERO)
                .await
                .unwrap()
                .is_empty()
        );
        let changed = observer
            .sweep(&ecs, "c", &names, Duration::ZERO)
            .await
            .unwrap();
        assert_eq!(changed, vec!["b".to_string()]);
        // Each sweep is one DescribeServices call for both.
        assert_eq!(rules.iter().map(|r| r.num_calls()).sum::<usize>(), 4);
    }
}
