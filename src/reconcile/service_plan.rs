//! Pure planning for `EcsService`: desired spec + observed ECS service -> what to
//! write, and observed rollout -> health. Every ECS service rule lives here:
//! immutable fields, defaults that would cause false diffs, the launch-type to
//! capacity-provider switch, rollbacks that must not be re-pushed.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::owned::{self, Adoption, Claimant, Release};
use crate::api::common::{AssignPublicIp, AwsVpcConfiguration};
use crate::api::common::{CapacityProviderStrategyItem, Reason};
use crate::api::common::{DeletionPolicy, Health};
use crate::api::service::{
    DeploymentConfiguration, DeploymentStatus, EcsServiceSpec, EcsServiceStatus, PlacementStrategy,
    ServiceEvent,
};
use crate::ecs::service::{ObservedService, ServiceState, ServiceUpdate};
use crate::ecs::service::{ROLLBACK_EVENTS, STATUS_EVENTS};
use crate::ecs::task_definition::{same_task_definition, td_short};

/// How soon a service is looked at again while a rollout runs.
pub const ROLLOUT_POLL: Duration = Duration::from_secs(5);
/// How soon a service is looked at again while a same-name service drains.
pub const DRAIN_POLL: Duration = Duration::from_secs(10);

/// Everything the plan needs besides the observed service.
#[derive(Debug, Clone)]
pub struct Desired<'a> {
    pub name: &'a str,
    pub me: &'a Claimant,
    pub spec: &'a EcsServiceSpec,
    /// Resolved task definition: an ARN or `family:revision`.
    pub task_definition: &'a str,
    /// spec.tags plus the ownership tags.
    pub tags: BTreeMap<String, String>,
    /// Keys of spec.tags applied before (status.managedTagKeys).
    pub managed_tag_keys: &'a [String],
    /// status.appliedTaskDefinition.
    pub applied_task_definition: Option<&'a str>,
    /// status.appliedRedeployToken.
    pub applied_redeploy_token: Option<&'a str>,
    /// status.rolledBackTaskDefinition: a revision ECS rolled back from, remembered
    /// after ECS itself has forgotten the failed deployment.
    pub rolled_back_task_definition: Option<&'a str>,
    /// status.replacedTaskDefinition: what the service ran before appliedTaskDefinition.
    pub replaced_task_definition: Option<&'a str>,
    /// CreateService was called within `NOT_SEEN_GRACE`: a service DescribeServices
    /// does not report may just not be visible yet.
    pub recently_created: bool,
    /// Uids of the existing EcsServices, when the observed service's tags name
    /// another one (see `owned::claim`).
    pub living: Option<&'a BTreeSet<String>>,
}

/// How long after CreateService a service DescribeServices does not report is "not
/// seen yet" (ECS reads are eventually consistent; a second create in that window
/// fails with "Creation of service was not idempotent." or makes a duplicate).
pub const NOT_SEEN_GRACE: Duration = Duration::from_secs(300);

/// True if `last_create` (status.lastCreateTime) is within `NOT_SEEN_GRACE` of `now`.
pub fn recently_created(last_create: Option<&str>, now: k8s_openapi::jiff::Timestamp) -> bool {
    last_create
        .and_then(|t| t.parse::<k8s_openapi::jiff::Timestamp>().ok())
        .is_some_and(|t| now.duration_since(t).unsigned_abs().lt(&NOT_SEEN_GRACE))
}

/// What a failed CreateService means. Real ECS answers a create for a name that
/// exists with `InvalidParameterException: Creation of service was not idempotent.`
/// (terraform-provider-aws 23462, 2283) and one for a name still draining with
/// `InvalidParameterException: Unable to Start a service that is still Draining.`
/// (spinnaker 5476): both pass once ECS's reads catch up, so they are retried (the
/// next read shows the service, ours or not), never a terminal Stalled.
pub fn classify_create_error(name: &str, err: crate::error::Error) -> crate::error::Error {
    let crate::error::Error::Ecs {
        code: Some(code),
        message,
        ..
    } = &err
    else {
        return err;
    };
    let lower = message.to_ascii_lowercase();
    let retry = |code: &str, what: String| crate::error::Error::Ecs {
        operation: "CreateService",
        code: Some(code.into()),
        message: what,
        class: crate::error::ErrorClass::Retryable,
    };
    match code.as_str() {
        "InvalidParameterException" | "ClientException" if lower.contains("not idempotent") => {
            retry(
                "ServiceAlreadyExists",
                format!("an ECS service named {name} already exists; reading it again ({message})"),
            )
        }
        "InvalidParameterException" | "ClientException" if lower.contains("still draining") => {
            retry(
                "ServiceDraining",
                format!(
                    "an ECS service named {name} is still DRAINING; creating it once ECS reports it INACTIVE"
                ),
            )
        }
        _ => err,
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Plan {
    /// No live service of that name: create it.
    Create,
    /// Cannot proceed without a person (not ours, immutable field differs).
    Refuse(Health),
    /// A same-name service is still draining: look again later.
    Wait(Health),
    /// Bring the live service in line (possibly nothing to do).
    Converge(Box<Converge>),
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Converge {
    /// Taking over a service this resource did not create.
    pub adopt: Option<Adoption>,
    pub update: ServiceUpdate,
    /// Spec fields that differed, for the DriftCorrected / Updated Event.
    pub changed: Vec<String>,
    pub tag: BTreeMap<String, String>,
    pub untag: Vec<String>,
    /// The desired revision is not pushed again: ECS rolled it back.
    pub rolled_back: bool,
}

impl Converge {
    pub fn writes(&self) -> bool {
        !self.update.is_empty() || !self.tag.is_empty() || !self.untag.is_empty()
    }
}

/// CreateService clientToken (at most 36 characters): the same resource at the same
/// generation always gets the same token, so a create retried after a crash or a
/// lost response cannot make a second service.
/// `creations` (status.creations) changes the token once a create succeeded, so a
/// service deleted out of band is created anew rather than answered with the old one.
pub fn client_token(uid: &str, generation: Option<i64>, creations: i32) -> String {
    let digest =
        Sha256::digest(format!("{uid}/{}/{creations}", generation.unwrap_or(0)).as_bytes());
    hex::encode(digest)[..32].to_string()
}

fn normalise_strategy(s: &[CapacityProviderStrategyItem]) -> Vec<CapacityProviderStrategyItem> {
    s.iter()
        .map(|i| CapacityProviderStrategyItem {
            capacity_provider: i.capacity_provider.clone(),
            weight: Some(i.weight.unwrap_or(0)),
            base: Some(i.base.unwrap_or(0)),
        })
        .collect()
}

fn normalise_network(n: &AwsVpcConfiguration) -> AwsVpcConfiguration {
    let mut n = n.clone();
    n.subnets.sort();
    n.subnets.dedup();
    n.security_groups.sort();
    n.security_groups.dedup();
    n.assign_public_ip = Some(n.assign_public_ip.unwrap_or(AssignPublicIp::Disabled));
    n
}

/// ECS reports binpack's `cpu` / `memory` field in upper case.
fn normalise_placement(p: &[PlacementStrategy]) -> Vec<PlacementStrategy> {
    p.iter()
        .map(|s| PlacementStrategy {
            type_: s.type_.to_ascii_lowercase(),
            field: s.field.as_ref().map(|f| {
                if s.type_.eq_ignore_ascii_case("binpack") {
                    f.to_ascii_lowercase()
                } else {
                    f.clone()
                }
            }),
        })
        .collect()
}

fn sorted<T: Ord + Clone>(v: &[T]) -> Vec<T> {
    let mut v = v.to_vec();
    v.sort();
    v
}

/// The observed deployment configuration with the spec's fields laid over it
/// (fields the spec leaves out keep ECS's values), and the names that differ.
fn merge_deployment_configuration(
    observed: &DeploymentConfiguration,
    want: &DeploymentConfiguration,
) -> (DeploymentConfiguration, Vec<String>) {
    let mut merged = observed.clone();
    let mut changed = Vec::new();
    if want.maximum_percent.is_some() && want.maximum_percent != observed.maximum_percent {
        merged.maximum_percent = want.maximum_percent;
        changed.push("deploymentConfiguration.maximumPercent".to_string());
    }
    if want.minimum_healthy_percent.is_some()
        && want.minimum_healthy_percent != observed.minimum_healthy_percent
    {
        merged.minimum_healthy_percent = want.minimum_healthy_percent;
        changed.push("deploymentConfiguration.minimumHealthyPercent".to_string());
    }
    if let Some(b) = &want.deployment_circuit_breaker {
        let current = observed
            .deployment_circuit_breaker
            .clone()
            .unwrap_or_default();
        if *b != current {
            merged.deployment_circuit_breaker = Some(b.clone());
            changed.push("deploymentConfiguration.deploymentCircuitBreaker".to_string());
        }
    }
    if let Some(a) = &want.alarms {
        let mut a = a.clone();
        a.alarm_names.sort();
        let current = observed.alarms.clone().map(|mut c| {
            c.alarm_names.sort();
            c
        });
        // No alarms at all and alarms switched off mean the same.
        let same = match &current {
            Some(c) => *c == a,
            None => !a.enable && a.alarm_names.is_empty(),
        };
        if !same {
            merged.alarms = Some(a);
            changed.push("deploymentConfiguration.alarms".to_string());
        }
    }
    (merged, changed)
}

/// ECS moved the service off the revision the operator pushed: the circuit breaker
/// (or alarms) rolled the deployment back.
pub fn rolled_back(obs: &ObservedService, desired_td: &str) -> bool {
    let failed_desired = obs.deployments.iter().any(|d| {
        d.rollout_state.as_deref() == Some("FAILED")
            && same_task_definition(desired_td, &d.task_definition)
    });
    let said_so = |text: &str| {
        let t = text.to_ascii_lowercase();
        t.contains("rolling back") || t.contains("rolled back") || t.contains("circuit breaker")
    };
    let primary_says = obs
        .primary()
        .and_then(|p| p.rollout_state_reason.as_deref())
        .is_some_and(said_so);
    let events_say = obs
        .events
        .iter()
        .take(ROLLBACK_EVENTS)
        .any(|e| said_so(&e.message));
    failed_desired || primary_says || events_say
}

/// With rollback on (circuit breaker or alarms), a service found running the
/// revision the operator replaced was rolled back. This survives an operator
/// downtime in which the failed deployment and ECS's events aged out.
fn back_on_replaced(obs: &ObservedService, replaced: Option<&str>) -> bool {
    let config = &obs.deployment_configuration;
    let rollback_on = config
        .deployment_circuit_breaker
        .as_ref()
        .is_some_and(|b| b.enable && b.rollback)
        || config
            .alarms
            .as_ref()
            .is_some_and(|a| a.enable && a.rollback);
    rollback_on && replaced.is_some_and(|r| same_task_definition(r, &obs.task_definition))
}

/// Decides what to write.
pub fn plan(desired: &Desired<'_>, observed: Option<&ObservedService>) -> Plan {
    let obs = match gate(desired, observed) {
        Ok(obs) => obs,
        Err(plan) => return plan,
    };
    let what = format!("ECS service {}", desired.name);
    let adopt = match owned::adoption(&obs.tags, desired.me, desired.living, &what, "serviceName") {
        Ok(adopt) => adopt,
        Err(refusal) => return Plan::Refuse(refusal),
    };
    if let Some(refusal) = immutable_conflict(desired, obs) {
        return Plan::Refuse(refusal);
    }
    let mut converge = Converge {
        adopt,
        ..Default::default()
    };
    rollout_changes(desired, obs, &mut converge);
    setting_changes(
        desired.spec,
        obs,
        &mut converge.update,
        &mut converge.changed,
    );
    let tags = owned::tag_changes(&desired.tags, &obs.tags, desired.managed_tag_keys);
    converge.changed.extend(tags.changed);
    (converge.tag, converge.untag) = (tags.tag, tags.untag);
    if let Some(refusal) = deployed_elsewhere(desired.name, obs, &converge.update) {
        return Plan::Refuse(refusal);
    }
    Plan::Converge(Box::new(converge))
}

/// The live service to converge, or the plan when there is none to converge yet.
fn gate<'o>(
    desired: &Desired<'_>,
    observed: Option<&'o ObservedService>,
) -> Result<&'o ObservedService, Plan> {
    if observed.is_none() && desired.recently_created {
        return Err(Plan::Wait(Health::progressing(
            Reason::WaitingForVisibility,
            format!(
                "created ECS service {}; waiting for DescribeServices to report it",
                desired.name
            ),
        )));
    }
    let Some(obs) = observed.filter(|o| !o.is_gone()) else {
        return Err(Plan::Create);
    };
    if obs.status == ServiceState::Draining {
        return Err(Plan::Wait(Health::progressing(
            Reason::WaitingForDrain,
            format!(
                "an ECS service named {} is still DRAINING after a deletion; it is created again \
                 once ECS reports it INACTIVE",
                desired.name
            ),
        )));
    }
    Ok(obs)
}

/// The task definition, redeploy token and capacity provider strategy: the
/// changes that start a deployment, and a rollback that must not be undone.
fn rollout_changes(desired: &Desired<'_>, obs: &ObservedService, converge: &mut Converge) {
    let spec = desired.spec;
    let update = &mut converge.update;
    // Removing the token is not a request to redeploy.
    let redeploy = converge.adopt.is_none()
        && spec.redeploy_token.is_some()
        && spec.redeploy_token.as_deref() != desired.applied_redeploy_token;
    // An EXTERNAL service may have no service-level task definition at all.
    let no_service_td = obs.deployed_elsewhere() && obs.task_definition.is_empty();
    if !no_service_td && !same_task_definition(desired.task_definition, &obs.task_definition) {
        let ours_rolled_back = desired
            .applied_task_definition
            .is_some_and(|a| same_task_definition(desired.task_definition, a))
            && (rolled_back(obs, desired.task_definition)
                || back_on_replaced(obs, desired.replaced_task_definition)
                || desired
                    .rolled_back_task_definition
                    .is_some_and(|r| same_task_definition(desired.task_definition, r)));
        if ours_rolled_back && !redeploy {
            converge.rolled_back = true;
        } else {
            update.task_definition = Some(desired.task_definition.to_string());
            converge.changed.push("taskDefinition".into());
        }
    }
    if redeploy {
        update.force_new_deployment = true;
        converge.changed.push("redeployToken".into());
    }
    if let Some(s) = &spec.placement.capacity_provider_strategy {
        let want = normalise_strategy(s);
        if sorted(&want) != sorted(&obs.capacity_provider_strategy) || obs.launch_type.is_some() {
            // Real ECS takes a strategy change (and the move off a launch type) only
            // with a new deployment: "When switching from launch type to capacity
            // provider strategy on an existing service, or making a change to a
            // capacity provider strategy on a service that is already using one, you
            // must force a new deployment." (pipecd 6385, ecspresso 481).
            update.force_new_deployment = true;
            update.capacity_provider_strategy = Some(want);
            converge.changed.push("capacityProviderStrategy".into());
        }
    }
}

/// Sets `field` in the update when the spec sets it and ECS has it differently.
fn set_if<T: PartialEq + Clone>(
    want: Option<T>,
    have: T,
    slot: &mut Option<T>,
    field: &str,
    changed: &mut Vec<String>,
) {
    if let Some(want) = want
        && want != have
    {
        *slot = Some(want);
        changed.push(field.to_string());
    }
}

/// Every other setting UpdateService takes: only what the spec sets (omitted = keep),
/// compared in the form ECS reports it.
fn setting_changes(
    spec: &EcsServiceSpec,
    obs: &ObservedService,
    update: &mut ServiceUpdate,
    changed: &mut Vec<String>,
) {
    set_if(
        spec.desired_count,
        obs.desired_count,
        &mut update.desired_count,
        "desiredCount",
        changed,
    );
    if let Some(p) = &spec.placement.platform_version
        && obs.platform_version.as_ref() != Some(p)
    {
        update.platform_version = Some(p.clone());
        changed.push("platformVersion".into());
    }
    if let Some(n) = &spec.placement.network_configuration {
        let want = normalise_network(&n.awsvpc_configuration);
        if obs.network.as_ref() != Some(&want) {
            update.network = Some(want);
            changed.push("networkConfiguration".into());
        }
    }
    let lbs = spec.load_balancers.as_deref().map(sorted);
    set_if(
        lbs,
        obs.load_balancers.clone(),
        &mut update.load_balancers,
        "loadBalancers",
        changed,
    );
    let registries = spec.service_registries.as_deref().map(sorted);
    let have = obs.service_registries.clone();
    set_if(
        registries,
        have,
        &mut update.service_registries,
        "serviceRegistries",
        changed,
    );
    if let Some(p) = &spec.placement_constraints
        && sorted(p) != sorted(&obs.placement_constraints)
    {
        update.placement_constraints = Some(p.clone());
        changed.push("placementConstraints".into());
    }
    if let Some(p) = &spec.placement_strategy
        && normalise_placement(p) != normalise_placement(&obs.placement_strategy)
    {
        update.placement_strategy = Some(p.clone());
        changed.push("placementStrategy".into());
    }
    if let Some(want) = &spec.deployment_configuration {
        let (merged, fields) = merge_deployment_configuration(&obs.deployment_configuration, want);
        if !fields.is_empty() {
            update.deployment_configuration = Some(merged);
            changed.extend(fields);
        }
    }
    flag_changes(spec, obs, update, changed);
}

fn flag_changes(
    spec: &EcsServiceSpec,
    obs: &ObservedService,
    update: &mut ServiceUpdate,
    changed: &mut Vec<String>,
) {
    let grace = obs.health_check_grace_period_seconds.unwrap_or(0);
    let field = "healthCheckGracePeriodSeconds";
    set_if(
        spec.health_check_grace_period_seconds,
        grace,
        &mut update.health_check_grace_period_seconds,
        field,
        changed,
    );
    let exec = spec.enable_execute_command;
    set_if(
        exec,
        obs.enable_execute_command,
        &mut update.enable_execute_command,
        "enableExecuteCommand",
        changed,
    );
    let managed = spec.enable_ecs_managed_tags;
    set_if(
        managed,
        obs.enable_ecs_managed_tags,
        &mut update.enable_ecs_managed_tags,
        "enableECSManagedTags",
        changed,
    );
    let propagate = spec.propagate_tags.map(|p| p.as_str().to_string());
    let have = obs.propagate_tags.clone().unwrap_or_else(|| "NONE".into());
    set_if(
        propagate,
        have,
        &mut update.propagate_tags,
        "propagateTags",
        changed,
    );
}

/// With CodeDeploy or an external controller, deployments are not UpdateService's:
/// a change that would start one is refused, naming the fields.
fn deployed_elsewhere(name: &str, obs: &ObservedService, update: &ServiceUpdate) -> Option<Health> {
    let controller = obs.deployment_controller.as_deref().unwrap_or("ECS");
    if controller == "ECS" {
        return None;
    }
    let deploys = [
        ("taskDefinition", update.task_definition.is_some()),
        ("networkConfiguration", update.network.is_some()),
        ("loadBalancers", update.load_balancers.is_some()),
        ("platformVersion", update.platform_version.is_some()),
        (
            "capacityProviderStrategy",
            update.capacity_provider_strategy.is_some(),
        ),
        ("redeployToken", update.force_new_deployment),
    ];
    let blocked: Vec<&str> = deploys.iter().filter(|d| d.1).map(|d| d.0).collect();
    (!blocked.is_empty()).then(|| {
        Health::stalled(
            Reason::DeployedElsewhere,
            format!(
                "ECS service {name} uses the {controller} deployment controller: {} change(s) are \
                 deployed by it (e.g. a CodeDeploy deployment), not by UpdateService",
                blocked.join(", ")
            ),
        )
    })
}

/// A field ECS cannot change on a live service differs from the spec (possible for
/// adopted services or after out-of-band changes; CEL stops it for spec edits).
fn immutable_conflict(desired: &Desired<'_>, obs: &ObservedService) -> Option<Health> {
    let spec = desired.spec;
    let refuse = |field: &str, have: &str, want: &str| {
        Some(Health::stalled(
            Reason::ImmutableField,
            format!(
                "ECS service {} has {field} {have} but the spec asks for {want}; ECS cannot change \
                 {field} on an existing service. Delete the service (or this resource) to \
                 recreate it, or change the spec back",
                desired.name
            ),
        ))
    };
    if let Some(want) = spec.scheduling_strategy {
        let have = obs.scheduling_strategy.as_deref().unwrap_or("REPLICA");
        if have != want.as_str() {
            return refuse("schedulingStrategy", have, want.as_str());
        }
    }
    if let Some(want) = &spec.deployment_controller {
        let have = obs.deployment_controller.as_deref().unwrap_or("ECS");
        if have != want.type_.as_str() {
            return refuse("deploymentController.type", have, want.type_.as_str());
        }
    }
    if let Some(want) = spec.placement.launch_type {
        match obs.launch_type.as_deref() {
            Some(have) if have != want.as_str() => {
                return refuse("launchType", have, want.as_str());
            }
            None => {
                return refuse(
                    "launchType",
                    "(a capacity provider strategy)",
                    want.as_str(),
                );
            }
            _ => {}
        }
    }
    None
}

/// ECS service events for status: newest first, a message repeated (ECS repeats
/// "has reached a steady state" every few hours) kept once, at most `STATUS_EVENTS`.
pub fn status_events(events: &[ServiceEvent]) -> Vec<ServiceEvent> {
    let mut seen = BTreeSet::new();
    events
        .iter()
        .filter(|e| seen.insert(e.message.clone()))
        .take(STATUS_EVENTS)
        .cloned()
        .collect()
}

/// Health of a service no write is pending for, from its rollout; plus how soon
/// to look again.
pub fn health(
    obs: &ObservedService,
    desired_td: &str,
    rolled_back: bool,
) -> (Health, Option<Duration>) {
    if obs.deployed_elsewhere() {
        return task_set_health(obs);
    }
    let Some(primary) = obs.primary() else {
        return (
            Health::progressing(
                Reason::Deploying,
                format!("ECS service {} has no PRIMARY deployment yet", obs.name),
            ),
            Some(ROLLOUT_POLL),
        );
    };
    let revision = td_short(&primary.task_definition);
    if rolled_back {
        return (rolled_back_health(obs, primary, desired_td), None);
    }
    if primary.rollout_state.as_deref() == Some("FAILED") {
        let why = primary
            .rollout_state_reason
            .as_deref()
            .unwrap_or("no reason given");
        let message = format!("the rollout of {revision} FAILED: {why}");
        return (Health::stalled(Reason::RolloutFailed, message), None);
    }
    if !same_task_definition(desired_td, &primary.task_definition) {
        let message = format!(
            "ECS service {} runs {revision}; waiting for a deployment of {}",
            obs.name,
            td_short(desired_td)
        );
        return (
            Health::progressing(Reason::RolloutPending, message),
            Some(ROLLOUT_POLL),
        );
    }
    let in_progress = primary.rollout_state.as_deref() == Some("IN_PROGRESS");
    let others = obs.deployments.len().saturating_sub(1);
    if in_progress || others > 0 || obs.running_count != obs.desired_count {
        let message = rollout_progress(obs, primary, others);
        return (
            Health::progressing(Reason::RollingOut, message),
            Some(ROLLOUT_POLL),
        );
    }
    let message = format!(
        "{}/{} tasks running {revision}",
        obs.running_count, obs.desired_count
    );
    (Health::ready(Reason::Available, message), None)
}

fn rolled_back_health(
    obs: &ObservedService,
    primary: &DeploymentStatus,
    desired_td: &str,
) -> Health {
    let why = primary
        .rollout_state_reason
        .clone()
        .or_else(|| obs.events.first().map(|e| e.message.clone()))
        .unwrap_or_default();
    Health::stalled(
        Reason::RolledBack,
        format!(
            "the rollout to {} failed and ECS rolled back to {}: {why}. Fix the task definition \
             (a new revision is rolled out) or change spec.redeployToken to retry",
            td_short(desired_td),
            td_short(&primary.task_definition)
        ),
    )
}

fn rollout_progress(obs: &ObservedService, primary: &DeploymentStatus, others: usize) -> String {
    let mut message = format!(
        "rolling out {}: {}/{} tasks running",
        td_short(&primary.task_definition),
        primary.running_count,
        obs.desired_count
    );
    if others > 0 {
        message.push_str(&format!(", {others} older deployment(s) still running"));
    }
    if primary.failed_tasks > 0 {
        message.push_str(&format!(", {} task(s) failed", primary.failed_tasks));
    }
    message
}

/// Health of a CODE_DEPLOY / EXTERNAL service: ECS reports it in task sets, with
/// `deployments` empty (copilot-cli 1061). Ready when the PRIMARY task set is steady
/// with every task running and no other task set is left; no fast polling while
/// the deployment controller has not made one yet (it is not ours to drive).
fn task_set_health(obs: &ObservedService) -> (Health, Option<Duration>) {
    let controller = obs.deployment_controller.as_deref().unwrap_or("ECS");
    let Some(primary) = obs.primary_task_set() else {
        return (
            Health::progressing(
                Reason::WaitingForTaskSet,
                format!(
                    "ECS service {} has no PRIMARY task set yet; its {controller} deployment \
                     controller creates it",
                    obs.name
                ),
            ),
            None,
        );
    };
    let revision = td_short(&primary.task_definition);
    let others = obs.task_sets.len().saturating_sub(1);
    let steady = primary.stability_status.as_deref() == Some("STEADY_STATE")
        && primary.running_count == primary.computed_desired_count;
    if !steady || others > 0 {
        let mut msg = format!(
            "{controller} deployment of {revision}: {}/{} tasks running in the PRIMARY task set",
            primary.running_count, primary.computed_desired_count
        );
        if others > 0 {
            msg.push_str(&format!(", {others} other task set(s)"));
        }
        return (
            Health::progressing(Reason::RollingOut, msg),
            Some(ROLLOUT_POLL),
        );
    }
    (
        Health::ready(
            Reason::Available,
            format!(
                "{}/{} tasks running {revision} (PRIMARY task set {})",
                primary.running_count, primary.computed_desired_count, primary.id
            ),
        ),
        None,
    )
}

/// The status with what ECS reports about the service (`obs`) laid over `base`.
pub fn observed_status(
    base: EcsServiceStatus,
    cluster: &str,
    obs: Option<&ObservedService>,
) -> EcsServiceStatus {
    let mut status = base;
    status.cluster = Some(cluster.to_string());
    if let Some(o) = obs {
        status.service_name = Some(o.name.clone());
        status.arn = Some(o.arn.clone());
        status.status = Some(o.status.as_str().to_string());
        status.desired_count = Some(o.desired_count);
        status.running_count = Some(o.running_count);
        status.pending_count = Some(o.pending_count);
        status.task_definition = o.primary().map(|p| p.task_definition.clone());
        status.rollout_state = o.primary().and_then(|p| p.rollout_state.clone());
        status.deployments = o.deployments.clone();
        status.task_sets = o.task_sets.clone();
        status.events = status_events(&o.events);
    }
    status
}

/// What a successful CreateService leaves to remember: the revision and token
/// applied, one more creation (a new client token next time), no rollback memory.
pub fn created_status(
    mut status: EcsServiceStatus,
    spec: &EcsServiceSpec,
    task_definition: &str,
    now: &str,
) -> EcsServiceStatus {
    status.applied_task_definition = Some(task_definition.to_string());
    status.applied_redeploy_token = spec.redeploy_token.clone();
    status.managed_tag_keys = spec.tags.keys().cloned().collect();
    status.creations = status.creations.saturating_add(1);
    status.rolled_back_task_definition = None;
    status.replaced_task_definition = None;
    status.last_create_time = Some(now.to_string());
    status
}

/// What a converge pass leaves to remember (the rules the next plan relies on):
/// - appliedTaskDefinition moves when the revision was sent or ECS already runs it;
/// - replacedTaskDefinition is what the service ran before a revision was sent
///   (a service found back on it was rolled back);
/// - rolledBackTaskDefinition is set by a rollback and cleared by a new revision or
///   a forced deployment, and kept otherwise (ECS forgets failed deployments).
pub fn converged_status(
    mut status: EcsServiceStatus,
    spec: &EcsServiceSpec,
    task_definition: &str,
    obs: &ObservedService,
    converge: &Converge,
) -> EcsServiceStatus {
    let sent_revision = converge.update.task_definition.is_some();
    if sent_revision {
        status.replaced_task_definition = Some(obs.task_definition.clone());
    }
    if sent_revision || same_task_definition(task_definition, &obs.task_definition) {
        status.applied_task_definition = Some(task_definition.to_string());
    }
    status.applied_redeploy_token = spec.redeploy_token.clone();
    status.managed_tag_keys = spec.tags.keys().cloned().collect();
    if converge.rolled_back {
        status.rolled_back_task_definition = Some(task_definition.to_string());
    } else if sent_revision || converge.update.force_new_deployment {
        status.rolled_back_task_definition = None;
    }
    status
}

/// True if the update starts a new deployment.
pub fn is_rollout(update: &ServiceUpdate) -> bool {
    update.task_definition.is_some()
        || update.force_new_deployment
        || update.network.is_some()
        || update.capacity_provider_strategy.is_some()
        || update.platform_version.is_some()
        || update.load_balancers.is_some()
        || update.service_registries.is_some()
}

/// Health after a converge pass, and how soon to look again: a rollout just
/// asked for, an update ECS has yet to show, or the service's own health.
pub fn converge_health(
    name: &str,
    task_definition: &str,
    obs: &ObservedService,
    converge: &Converge,
) -> (Health, Option<Duration>) {
    if is_rollout(&converge.update) {
        let message = format!("asked ECS to deploy {}", td_short(task_definition));
        return (
            Health::progressing(Reason::RolloutStarted, message),
            Some(ROLLOUT_POLL),
        );
    }
    if !converge.update.is_empty() {
        // Report the effect once ECS has it, shortly.
        let message = format!(
            "updating ECS service {name}: {}",
            converge.changed.join(", ")
        );
        return (
            Health::progressing(Reason::Updating, message),
            Some(UPDATE_POLL),
        );
    }
    health(obs, task_definition, converge.rolled_back)
}

/// How soon a service is looked at again after an update that starts no deployment.
pub const UPDATE_POLL: Duration = Duration::from_secs(2);

/// Cleanup decision for deletion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cleanup {
    /// Nothing (more) to do in ECS.
    Done(Release),
    /// Remove the ownership tags and leave the service (Orphan).
    Untag,
    /// Scale to 0 (if needed) and DeleteService.
    Delete { scale_down: bool },
    /// DeleteService was accepted; ECS is draining it.
    Draining,
    /// Created moments ago and not reported by DescribeServices yet (ECS reads are
    /// eventually consistent): deleting it needs to see it first.
    NotSeenYet,
}

/// What deleting the resource does in ECS. `recently_created`: CreateService
/// succeeded within `NOT_SEEN_GRACE`, so a service ECS does not report (not even
/// INACTIVE) may just not be visible yet; taking that for "gone" would leave it
/// running.
pub fn plan_cleanup(
    uid: &str,
    policy: DeletionPolicy,
    observed: Option<&ObservedService>,
    recently_created: bool,
) -> Cleanup {
    if observed.is_none() && recently_created && policy == DeletionPolicy::Delete {
        return Cleanup::NotSeenYet;
    }
    let obs = observed.filter(|o| !o.is_gone());
    match (owned::release(obs.map(|o| &o.tags), uid, policy), obs) {
        (Release::Gone, _) | (_, None) => Cleanup::Done(Release::Gone),
        (Release::NotOwned, _) => Cleanup::Done(Release::NotOwned),
        (Release::Orphan, _) => Cleanup::Untag,
        (Release::Delete, Some(o)) if o.status == ServiceState::Draining => Cleanup::Draining,
        // DAEMON services take no desiredCount; DeleteService drains them itself.
        (Release::Delete, Some(o)) => Cleanup::Delete {
            scale_down: o.desired_count > 0 && o.scheduling_strategy.as_deref() != Some("DAEMON"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::common::{LaunchType, NetworkConfiguration, Placement};
    use crate::api::common::{UID_TAG, ownership_tags};
    use crate::api::service::{
        DeploymentCircuitBreaker, DeploymentController, DeploymentControllerType, DeploymentStatus,
        LoadBalancer, PlacementStrategy, PropagateTags, SchedulingStrategy,
        ServicePlacementConstraint, ServiceRegistry, TaskSetStatus,
    };

    const TD1: &str = "arn:aws:ecs:us-east-1:000000000000:task-definition/web:1";
    const TD2: &str = "arn:aws:ecs:us-east-1:000000000000:task-definition/web:2";

    fn dep(id: &str, status: &str, td: &str, rollout: &str, running: i32) -> DeploymentStatus {
        DeploymentStatus {
            id: id.into(),
            status: status.into(),
            rollout_state: Some(rollout.into()),
            task_definition: td.into(),
            desired_count: 2,
            running_count: running,
            ..Default::default()
        }
    }

    /// A steady service of ours that matches `spec()` exactly.
    fn observed() -> ObservedService {
        let mut tags = ownership_tags("ns", "web", "uid-1");
        tags.insert("team".into(), "a".into());
        ObservedService {
            name: "web".into(),
            arn: "arn:aws:ecs:us-east-1:000000000000:service/c/web".into(),
            status: "ACTIVE".into(),
            desired_count: 2,
            running_count: 2,
            task_definition: TD1.into(),
            launch_type: Some("FARGATE".into()),
            deployment_configuration: DeploymentConfiguration {
                maximum_percent: Some(200),
                minimum_healthy_percent: Some(100),
                deployment_circuit_breaker: Some(DeploymentCircuitBreaker {
                    enable: false,
                    rollback: false,
                }),
                alarms: None,
            },
            network: Some(AwsVpcConfiguration {
                subnets: vec!["subnet-a".into(), "subnet-b".into()],
                security_groups: vec!["sg-1".into()],
                assign_public_ip: Some(AssignPublicIp::Disabled),
            }),
            deployment_controller: Some("ECS".into()),
            scheduling_strategy: Some("REPLICA".into()),
            propagate_tags: Some("NONE".into()),
            tags,
            deployments: vec![dep("d1", "PRIMARY", TD1, "COMPLETED", 2)],
            ..Default::default()
        }
    }

    fn spec() -> EcsServiceSpec {
        EcsServiceSpec {
            placement: Placement {
                cluster: Some("c".into()),
                task_definition: Some(TD1.into()),
                launch_type: Some(LaunchType::Fargate),
                network_configuration: Some(NetworkConfiguration {
                    awsvpc_configuration: AwsVpcConfiguration {
                        // Order and the DISABLED default do not matter.
                        subnets: vec!["subnet-b".into(), "subnet-a".into()],
                        security_groups: vec!["sg-1".into()],
                        assign_public_ip: None,
                    },
                }),
                ..Default::default()
            },
            desired_count: Some(2),
            tags: BTreeMap::from([("team".into(), "a".into())]),
            ..Default::default()
        }
    }

    fn me(adopt_existing: bool) -> &'static Claimant {
        Box::leak(Box::new(Claimant {
            kind: "EcsService",
            uid: "uid-1".into(),
            owner: "ns/web".into(),
            adopt_existing,
        }))
    }

    fn desired<'a>(spec: &'a EcsServiceSpec, managed: &'a [String]) -> Desired<'a> {
        let mut tags = spec.tags.clone();
        tags.extend(ownership_tags("ns", "web", "uid-1"));
        Desired {
            name: "web",
            me: me(spec.adopt_existing),
            spec,
            task_definition: spec.placement.task_definition.as_deref().unwrap_or(TD1),
            tags,
            managed_tag_keys: managed,
            applied_task_definition: Some(TD1),
            applied_redeploy_token: None,
            rolled_back_task_definition: None,
            replaced_task_definition: None,
            recently_created: false,
            living: None,
        }
    }

    fn converge(p: Plan) -> Converge {
        match p {
            Plan::Converge(c) => *c,
            other => panic!("expected Converge, got {other:?}"),
        }
    }

    #[test]
    fn missing_or_inactive_service_is_created() {
        let s = spec();
        let d = desired(&s, &[]);
        assert_eq!(plan(&d, None), Plan::Create);
        let mut gone = observed();
        gone.status = "INACTIVE".into();
        assert_eq!(plan(&d, Some(&gone)), Plan::Create);
    }

    #[test]
    fn draining_same_name_service_is_waited_for() {
        let s = spec();
        let mut o = observed();
        o.status = "DRAINING".into();
        match plan(&desired(&s, &[]), Some(&o)) {
            Plan::Wait(Health::Progressing { reason, .. }) => assert_eq!(reason, "WaitingForDrain"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn matching_service_needs_no_write() {
        let s = spec();
        let managed = vec!["team".to_string()];
        let c = converge(plan(&desired(&s, &managed), Some(&observed())));
        assert!(!c.writes(), "{c:?}");
        assert!(c.changed.is_empty());
    }

    #[test]
    fn foreign_service_is_refused_unless_adopted() {
        let mut s = spec();
        let mut o = observed();
        o.tags.clear();
        match plan(&desired(&s, &[]), Some(&o)) {
            Plan::Refuse(Health::Stalled { reason, message }) => {
                assert_eq!(reason, "NotOwned");
                assert!(message.contains("adoptExisting"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        s.adopt_existing = true;
        let c = converge(plan(&desired(&s, &[]), Some(&o)));
        assert_eq!(c.adopt, Some(Adoption::Requested));
        assert_eq!(c.tag.get(UID_TAG).map(String::as_str), Some("uid-1"));
    }

    #[test]
    fn desired_count_is_managed_only_when_set() {
        let mut s = spec();
        let mut o = observed();
        o.desired_count = 7;
        let c = converge(plan(&desired(&s, &["team".into()]), Some(&o)));
        assert_eq!(c.update.desired_count, Some(2));
        assert_eq!(c.changed, vec!["desiredCount"]);
        s.desired_count = None;
        let c = converge(plan(&desired(&s, &["team".into()]), Some(&o)));
        assert!(!c.writes(), "{c:?}");
    }

    #[test]
    fn new_task_definition_is_rolled_out() {
        let mut s = spec();
        s.placement.task_definition = Some(TD2.into());
        let c = converge(plan(&desired(&s, &["team".into()]), Some(&observed())));
        assert_eq!(c.update.task_definition.as_deref(), Some(TD2));
        assert!(!c.update.force_new_deployment);
        assert_eq!(c.changed, vec!["taskDefinition"]);
    }

    #[test]
    fn family_revision_form_matches_the_arn() {
        assert!(same_task_definition("web:1", TD1));
        assert!(!same_task_definition("web:1", TD2));
        assert!(!same_task_definition("eb:1", TD1));
        assert!(same_task_definition(TD1, TD1));
    }

    #[test]
    fn rolled_back_revision_is_not_pushed_again() {
        let mut s = spec();
        s.placement.task_definition = Some(TD2.into());
        let mut o = observed();
        o.deployments = vec![
            DeploymentStatus {
                rollout_state_reason: Some(
                    "ECS deployment circuit breaker: rolling back to deploymentId d1".into(),
                ),
                ..dep("d3", "PRIMARY", TD1, "IN_PROGRESS", 2)
            },
            dep("d2", "ACTIVE", TD2, "FAILED", 0),
        ];
        let team = ["team".to_string()];
        let mut d = desired(&s, &team);
        d.applied_task_definition = Some(TD2);
        let c = converge(plan(&d, Some(&o)));
        assert!(c.rolled_back);
        assert_eq!(c.update.task_definition, None);
        let (h, _) = health(&o, TD2, c.rolled_back);
        assert!(
            matches!(h, Health::Stalled { ref reason, .. } if reason == "RolledBack"),
            "{h:?}"
        );

        // A new redeployToken retries the same revision.
        s.redeploy_token = Some("retry-1".into());
        let team = ["team".to_string()];
        let mut d = desired(&s, &team);
        d.applied_task_definition = Some(TD2);
        let c = converge(plan(&d, Some(&o)));
        assert_eq!(c.update.task_definition.as_deref(), Some(TD2));
        assert!(c.update.force_new_deployment);
    }

    #[test]
    fn someone_elses_revision_change_is_corrected() {
        // Not a rollback: the revision we applied is not the one ECS dropped.
        let s = spec();
        let mut o = observed();
        o.task_definition = TD2.into();
        o.deployments = vec![dep("d2", "PRIMARY", TD2, "COMPLETED", 2)];
        let c = converge(plan(&desired(&s, &["team".into()]), Some(&o)));
        assert_eq!(c.update.task_definition.as_deref(), Some(TD1));
    }

    #[test]
    fn redeploy_token_change_forces_a_new_deployment() {
        let mut s = spec();
        s.redeploy_token = Some("2".into());
        let mut d = desired(&s, &[]);
        d.applied_redeploy_token = Some("1");
        let c = converge(plan(&d, Some(&observed())));
        assert!(c.update.force_new_deployment);
        assert!(c.changed.contains(&"redeployToken".to_string()));
        // Unchanged token: nothing.
        d.applied_redeploy_token = Some("2");
        let c = converge(plan(&d, Some(&observed())));
        assert!(!c.update.force_new_deployment);
        // Adopting records the token without redeploying.
        let mut o = observed();
        o.tags.clear();
        s.adopt_existing = true;
        let mut d = desired(&s, &[]);
        d.applied_redeploy_token = None;
        assert!(!converge(plan(&d, Some(&o))).update.force_new_deployment);
    }

    #[test]
    fn launch_type_to_capacity_provider_forces_new_deployment() {
        let mut s = spec();
        s.placement.launch_type = None;
        s.placement.capacity_provider_strategy = Some(vec![CapacityProviderStrategyItem {
            capacity_provider: "FARGATE_SPOT".into(),
            weight: Some(1),
            base: None,
        }]);
        let c = converge(plan(&desired(&s, &["team".into()]), Some(&observed())));
        assert!(c.update.force_new_deployment);
        let want = c.update.capacity_provider_strategy.expect("strategy");
        assert_eq!(want[0].base, Some(0));
        // Once on the strategy (ECS reports explicit zeros), nothing more to do.
        let mut o = observed();
        o.launch_type = None;
        o.capacity_provider_strategy = want;
        let c = converge(plan(&desired(&s, &["team".into()]), Some(&o)));
        assert!(!c.writes(), "{c:?}");
    }

    #[test]
    fn immutable_fields_are_refused_with_the_field_named() {
        type Edit = Box<dyn Fn(&mut EcsServiceSpec)>;
        let cases: Vec<(Edit, &str)> = vec![
            (
                Box::new(|s| s.placement.launch_type = Some(LaunchType::Ec2)),
                "launchType",
            ),
            (
                Box::new(|s| s.scheduling_strategy = Some(SchedulingStrategy::Daemon)),
                "schedulingStrategy",
            ),
            (
                Box::new(|s| {
                    s.deployment_controller = Some(DeploymentController {
                        type_: DeploymentControllerType::CodeDeploy,
                    })
                }),
                "deploymentController.type",
            ),
        ];
        for (edit, field) in cases {
            let mut s = spec();
            edit(&mut s);
            match plan(&desired(&s, &[]), Some(&observed())) {
                Plan::Refuse(Health::Stalled { reason, message }) => {
                    assert_eq!(reason, "ImmutableField");
                    assert!(message.contains(field), "{field}: {message}");
                }
                other => panic!("{field}: {other:?}"),
            }
        }
    }

    #[test]
    fn each_updatable_field_is_diffed() {
        type Edit = Box<dyn Fn(&mut EcsServiceSpec)>;
        type Check = Box<dyn Fn(&ServiceUpdate) -> bool>;
        let cases: Vec<(Edit, &str, Check)> = vec![
            (
                Box::new(|s| s.placement.platform_version = Some("1.4.0".into())),
                "platformVersion",
                Box::new(|u| u.platform_version.as_deref() == Some("1.4.0")),
            ),
            (
                Box::new(|s| {
                    s.placement
                        .network_configuration
                        .as_mut()
                        .unwrap()
                        .awsvpc_configuration
                        .assign_public_ip = Some(AssignPublicIp::Enabled)
                }),
                "networkConfiguration",
                Box::new(|u| u.network.is_some()),
            ),
            (
                Box::new(|s| {
                    s.load_balancers = Some(vec![LoadBalancer {
                        target_group_arn: Some("tg".into()),
                        container_name: "web".into(),
                        container_port: 80,
                        ..Default::default()
                    }])
                }),
                "loadBalancers",
                Box::new(|u| u.load_balancers.as_ref().is_some_and(|l| l.len() == 1)),
            ),
            (
                Box::new(|s| {
                    s.service_registries = Some(vec![ServiceRegistry {
                        registry_arn: "arn:sr".into(),
                        ..Default::default()
                    }])
                }),
                "serviceRegistries",
                Box::new(|u| u.service_registries.is_some()),
            ),
            (
                Box::new(|s| {
                    s.placement_constraints = Some(vec![ServicePlacementConstraint {
                        type_: "distinctInstance".into(),
                        expression: None,
                    }])
                }),
                "placementConstraints",
                Box::new(|u| u.placement_constraints.is_some()),
            ),
            (
                Box::new(|s| {
                    s.placement_strategy = Some(vec![PlacementStrategy {
                        type_: "spread".into(),
                        field: Some("attribute:ecs.availability-zone".into()),
                    }])
                }),
                "placementStrategy",
                Box::new(|u| u.placement_strategy.is_some()),
            ),
            (
                Box::new(|s| {
                    s.deployment_configuration = Some(DeploymentConfiguration {
                        maximum_percent: Some(150),
                        ..Default::default()
                    })
                }),
                "deploymentConfiguration.maximumPercent",
                // The rest of the configuration keeps ECS's values.
                Box::new(|u| {
                    u.deployment_configuration.as_ref().is_some_and(|d| {
                        d.maximum_percent == Some(150) && d.minimum_healthy_percent == Some(100)
                    })
                }),
            ),
            (
                Box::new(|s| {
                    s.deployment_configuration = Some(DeploymentConfiguration {
                        deployment_circuit_breaker: Some(DeploymentCircuitBreaker {
                            enable: true,
                            rollback: true,
                        }),
                        ..Default::default()
                    })
                }),
                "deploymentConfiguration.deploymentCircuitBreaker",
                Box::new(|u| u.deployment_configuration.is_some()),
            ),
            (
                Box::new(|s| s.health_check_grace_period_seconds = Some(30)),
                "healthCheckGracePeriodSeconds",
                Box::new(|u| u.health_check_grace_period_seconds == Some(30)),
            ),
            (
                Box::new(|s| s.enable_execute_command = Some(true)),
                "enableExecuteCommand",
                Box::new(|u| u.enable_execute_command == Some(true)),
            ),
            (
                Box::new(|s| s.enable_ecs_managed_tags = Some(true)),
                "enableECSManagedTags",
                Box::new(|u| u.enable_ecs_managed_tags == Some(true)),
            ),
            (
                Box::new(|s| s.propagate_tags = Some(PropagateTags::Service)),
                "propagateTags",
                Box::new(|u| u.propagate_tags.as_deref() == Some("SERVICE")),
            ),
        ];
        for (edit, field, check) in cases {
            let mut s = spec();
            edit(&mut s);
            let c = converge(plan(&desired(&s, &["team".into()]), Some(&observed())));
            assert_eq!(c.changed, vec![field.to_string()], "{field}");
            assert!(check(&c.update), "{field}: {:?}", c.update);
            assert!(!c.update.force_new_deployment, "{field}");
        }
    }

    #[test]
    fn defaults_ecs_reports_cause_no_diff() {
        let mut s = spec();
        s.propagate_tags = Some(PropagateTags::None);
        s.health_check_grace_period_seconds = Some(0);
        s.enable_execute_command = Some(false);
        s.deployment_configuration = Some(DeploymentConfiguration {
            maximum_percent: Some(200),
            deployment_circuit_breaker: Some(DeploymentCircuitBreaker {
                enable: false,
                rollback: false,
            }),
            alarms: Some(crate::api::service::DeploymentAlarms {
                alarm_names: vec![],
                enable: false,
                rollback: false,
            }),
            ..Default::default()
        });
        let c = converge(plan(&desired(&s, &["team".into()]), Some(&observed())));
        assert!(!c.writes(), "{c:?}");
    }

    #[test]
    fn empty_list_clears_and_omitted_keeps() {
        let mut o = observed();
        o.load_balancers = vec![LoadBalancer {
            target_group_arn: Some("tg".into()),
            container_name: "web".into(),
            container_port: 80,
            ..Default::default()
        }];
        let s = spec();
        assert!(!converge(plan(&desired(&s, &["team".into()]), Some(&o))).writes());
        let mut s = spec();
        s.load_balancers = Some(vec![]);
        let c = converge(plan(&desired(&s, &["team".into()]), Some(&o)));
        assert_eq!(c.update.load_balancers, Some(vec![]));
    }

    #[test]
    fn tags_set_and_removed_only_for_managed_keys() {
        let mut s = spec();
        s.tags = BTreeMap::from([("env".into(), "prod".into())]);
        let mut o = observed();
        o.tags.insert("other-tool".into(), "x".into());
        let c = converge(plan(&desired(&s, &["team".into()]), Some(&o)));
        assert_eq!(c.tag, BTreeMap::from([("env".into(), "prod".into())]));
        assert_eq!(c.untag, vec!["team".to_string()]);
        assert!(c.update.is_empty());
    }

    #[test]
    fn health_follows_the_rollout() {
        let mut o = observed();
        let (h, requeue) = health(&o, TD1, false);
        assert!(h.is_ready(), "{h:?}");
        assert_eq!(requeue, None);

        o.deployments = vec![
            dep("d2", "PRIMARY", TD2, "IN_PROGRESS", 1),
            dep("d1", "ACTIVE", TD1, "COMPLETED", 1),
        ];
        let (h, requeue) = health(&o, TD2, false);
        match h {
            Health::Progressing { reason, message } => {
                assert_eq!(reason, "RollingOut");
                assert!(message.contains("web:2"), "{message}");
                assert!(message.contains("1 older deployment"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(requeue, Some(ROLLOUT_POLL));

        // Completed, but the old deployment is still there: not Ready yet.
        o.deployments[0].rollout_state = Some("COMPLETED".into());
        assert!(!health(&o, TD2, false).0.is_ready());
        o.deployments.truncate(1);
        o.deployments[0].running_count = 2;
        assert!(health(&o, TD2, false).0.is_ready());
        // Running below desired: not Ready.
        o.running_count = 1;
        assert!(!health(&o, TD2, false).0.is_ready());
    }

    #[test]
    fn failed_rollout_is_stalled_with_the_ecs_reason() {
        let mut o = observed();
        o.deployments[0].rollout_state = Some("FAILED".into());
        o.deployments[0].rollout_state_reason =
            Some("ECS deployment circuit breaker: tasks failed to start.".into());
        match health(&o, TD1, false).0 {
            Health::Stalled { reason, message } => {
                assert_eq!(reason, "RolloutFailed");
                assert!(message.contains("tasks failed to start"), "{message}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_stale_primary_is_pending_not_ready() {
        let o = observed();
        let (h, _) = health(&o, TD2, false);
        assert!(matches!(h, Health::Progressing { ref reason, .. } if reason == "RolloutPending"));
    }

    #[test]
    fn events_are_deduplicated_newest_first() {
        let ev = |m: &str, t: &str| ServiceEvent {
            created_at: Some(t.into()),
            message: m.into(),
        };
        let events = vec![
            ev("steady", "5"),
            ev("started 1 task", "4"),
            ev("steady", "3"),
            ev("a", "2"),
            ev("b", "1"),
            ev("c", "0"),
            ev("d", "0"),
        ];
        let out = status_events(&events);
        assert_eq!(out.len(), STATUS_EVENTS);
        assert_eq!(out[0], ev("steady", "5"));
        assert_eq!(out[1].message, "started 1 task");
        assert_eq!(out[2].message, "a");
    }

    #[test]
    fn binpack_field_case_is_not_a_diff() {
        let mut s = spec();
        s.placement_strategy = Some(vec![PlacementStrategy {
            type_: "binpack".into(),
            field: Some("memory".into()),
        }]);
        let mut o = observed();
        o.placement_strategy = vec![PlacementStrategy {
            type_: "binpack".into(),
            field: Some("MEMORY".into()),
        }];
        assert!(!converge(plan(&desired(&s, &["team".into()]), Some(&o))).writes());
    }

    #[test]
    fn another_resources_service_is_never_adopted() {
        let mut s = spec();
        s.adopt_existing = true;
        let mut o = observed();
        o.tags = ownership_tags("other-ns", "web", "uid-9");
        let living = BTreeSet::from(["uid-9".to_string()]);
        let mut d = desired(&s, &[]);
        d.living = Some(&living);
        match plan(&d, Some(&o)) {
            Plan::Refuse(Health::Stalled { reason, message }) => {
                assert_eq!(reason, "NotOwned");
                assert!(message.contains("other-ns/web"), "{message}");
            }
            other => panic!("{other:?}"),
        }
    }

    /// The shared ownership table, seen through the service plan.
    #[test]
    fn ownership_table_holds_for_services() {
        use crate::reconcile::owned::table::{self, Expect};
        let living = table::living();
        let team = ["team".to_string()];
        for row in table::rows("web") {
            let mut s = spec();
            s.adopt_existing = row.adopt_existing;
            let known = table::living_for(&row.tags, &living);
            let mut d = desired(&s, &team);
            d.living = known.as_ref();
            let mut o = observed();
            o.tags = row.tags.clone();
            o.tags.insert("team".into(), "a".into());
            let got = match plan(&d, Some(&o)) {
                Plan::Converge(c) => match c.adopt {
                    None => Expect::Ours,
                    Some(how) => {
                        assert_eq!(c.tag.get(UID_TAG).map(String::as_str), Some(table::UID));
                        Expect::Adopt(how)
                    }
                },
                Plan::Refuse(h) => {
                    assert!(matches!(&h, Health::Stalled { reason, .. } if reason == "NotOwned"));
                    Expect::Refuse
                }
                other => panic!("{other:?}"),
            };
            assert_eq!(
                got, row.expect,
                "{:?} adoptExisting={}",
                row.tags, row.adopt_existing
            );
        }
    }

    fn strategy(items: &[(&str, i32)]) -> Vec<CapacityProviderStrategyItem> {
        items
            .iter()
            .map(|(p, w)| CapacityProviderStrategyItem {
                capacity_provider: p.to_string(),
                weight: Some(*w),
                base: Some(0),
            })
            .collect()
    }

    #[test]
    fn a_strategy_change_on_a_strategy_service_forces_a_new_deployment() {
        let mut s = spec();
        s.placement.launch_type = None;
        s.placement.capacity_provider_strategy =
            Some(strategy(&[("FARGATE", 1), ("FARGATE_SPOT", 3)]));
        let mut o = observed();
        o.launch_type = None;
        o.capacity_provider_strategy = strategy(&[("FARGATE", 1), ("FARGATE_SPOT", 1)]);
        let c = converge(plan(&desired(&s, &["team".into()]), Some(&o)));
        assert!(c.update.force_new_deployment, "{c:?}");
        assert_eq!(c.changed, vec!["capacityProviderStrategy"]);
        // The same strategy in another order is no change and no deployment.
        o.capacity_provider_strategy = strategy(&[("FARGATE_SPOT", 3), ("FARGATE", 1)]);
        let c = converge(plan(&desired(&s, &["team".into()]), Some(&o)));
        assert!(!c.writes(), "{c:?}");
    }

    #[test]
    fn a_service_just_created_and_not_reported_yet_is_not_created_again() {
        let s = spec();
        let mut d = desired(&s, &[]);
        d.recently_created = true;
        match plan(&d, None) {
            Plan::Wait(Health::Progressing { reason, .. }) => {
                assert_eq!(reason, "WaitingForVisibility")
            }
            other => panic!("{other:?}"),
        }
        // Long after the create, a service ECS does not know is gone.
        d.recently_created = false;
        assert_eq!(plan(&d, None), Plan::Create);
        // Deleted out of band (INACTIVE) right after the create: created again.
        d.recently_created = true;
        let mut gone = observed();
        gone.status = "INACTIVE".into();
        assert_eq!(plan(&d, Some(&gone)), Plan::Create);
    }

    #[test]
    fn recently_created_counts_minutes_from_the_create() {
        let now: k8s_openapi::jiff::Timestamp = "2026-12-01T10:00:00Z".parse().unwrap();
        assert!(recently_created(Some("2026-12-01T09:59:59Z"), now));
        assert!(recently_created(Some("2026-12-01T09:56:00Z"), now));
        assert!(!recently_created(Some("2026-12-01T09:54:59Z"), now));
        assert!(!recently_created(None, now));
        assert!(!recently_created(Some("not a time"), now));
    }

    fn ecs_err(code: &str, message: &str) -> crate::error::Error {
        crate::error::Error::Ecs {
            operation: "CreateService",
            code: Some(code.into()),
            message: message.into(),
            class: crate::error::ErrorClass::Terminal,
        }
    }

    #[test]
    fn create_conflicts_are_read_again_not_stalled() {
        for (msg, code) in [
            (
                "Creation of service was not idempotent.",
                "ServiceAlreadyExists",
            ),
            (
                "Unable to Start a service that is still Draining.",
                "ServiceDraining",
            ),
        ] {
            let e = classify_create_error("web", ecs_err("InvalidParameterException", msg));
            assert!(e.is_retryable(), "{msg}");
            assert!(matches!(&e, crate::error::Error::Ecs { code: Some(c), .. } if c == code));
        }
        let other = classify_create_error(
            "web",
            ecs_err(
                "InvalidParameterException",
                "The container app does not exist",
            ),
        );
        assert!(!other.is_retryable());
    }

    #[test]
    fn a_rollback_is_recognised_from_state_after_the_events_aged_out() {
        let mut s = spec();
        s.placement.task_definition = Some(TD2.into());
        // The operator pushed TD2 over TD1; ECS (circuit breaker with rollback) is
        // back on TD1, and neither the failed deployment nor an event is left.
        let mut o = observed();
        o.deployment_configuration.deployment_circuit_breaker = Some(DeploymentCircuitBreaker {
            enable: true,
            rollback: true,
        });
        o.events.clear();
        let team = ["team".to_string()];
        let mut d = desired(&s, &team);
        d.applied_task_definition = Some(TD2);
        d.replaced_task_definition = Some(TD1);
        let c = converge(plan(&d, Some(&o)));
        assert!(c.rolled_back, "{c:?}");
        assert!(c.update.task_definition.is_none());
        // Without rollback configured, the same picture is drift: corrected.
        o.deployment_configuration.deployment_circuit_breaker = None;
        let c = converge(plan(&d, Some(&o)));
        assert_eq!(c.update.task_definition.as_deref(), Some(TD2));
    }

    fn task_set(status: &str, running: i32, desired: i32, stability: &str) -> TaskSetStatus {
        TaskSetStatus {
            id: format!("ecs-svc/{status}"),
            status: status.into(),
            task_definition: TD1.into(),
            computed_desired_count: desired,
            running_count: running,
            stability_status: Some(stability.into()),
            ..Default::default()
        }
    }

    #[test]
    fn codedeploy_and_external_services_follow_their_primary_task_set() {
        let mut o = observed();
        o.deployment_controller = Some("CODE_DEPLOY".into());
        o.deployments.clear();
        o.task_sets = vec![task_set("PRIMARY", 2, 2, "STEADY_STATE")];
        let (h, requeue) = health(&o, TD1, false);
        assert!(h.is_ready(), "{h:?}");
        assert_eq!(requeue, None);
        // A blue/green deployment in flight: two task sets.
        o.task_sets.push(task_set("ACTIVE", 2, 2, "STABILIZING"));
        let (h, requeue) = health(&o, TD1, false);
        assert!(matches!(&h, Health::Progressing { reason, .. } if reason == "RollingOut"));
        assert_eq!(requeue, Some(ROLLOUT_POLL));
        // No task set yet: waiting on the controller, without fast polling.
        o.deployment_controller = Some("EXTERNAL".into());
        o.task_sets.clear();
        let (h, requeue) = health(&o, TD1, false);
        assert!(matches!(&h, Health::Progressing { reason, .. } if reason == "WaitingForTaskSet"));
        assert_eq!(requeue, None);
    }

    #[test]
    fn an_external_service_without_a_service_task_definition_is_not_refused() {
        let s = spec();
        let mut o = observed();
        o.deployment_controller = Some("EXTERNAL".into());
        o.task_definition.clear();
        let c = converge(plan(&desired(&s, &["team".into()]), Some(&o)));
        assert!(!c.writes(), "{c:?}");
    }

    #[test]
    fn the_service_of_a_deleted_resource_of_the_same_name_is_taken_back() {
        let s = spec();
        let mut o = observed();
        o.tags = ownership_tags("ns", "web", "uid-of-the-deleted-one");
        o.tags.insert("team".into(), "a".into());
        let team = ["team".to_string()];
        // A living other owner: refused, as before.
        let alive = BTreeSet::from(["uid-of-the-deleted-one".to_string()]);
        let mut d = desired(&s, &team);
        d.living = Some(&alive);
        assert!(matches!(plan(&d, Some(&o)), Plan::Refuse(_)));
        // Its own history: re-tagged with this resource's uid, nothing else.
        let none_alive = BTreeSet::from(["uid-1".to_string()]);
        d.living = Some(&none_alive);
        let c = converge(plan(&d, Some(&o)));
        assert_eq!(c.adopt, Some(Adoption::OwnHistory));
        assert_eq!(c.tag.get(UID_TAG).map(String::as_str), Some("uid-1"));
        assert!(c.update.is_empty(), "{c:?}");
    }

    #[test]
    fn a_remembered_rollback_holds_after_ecs_forgets_it() {
        let mut s = spec();
        s.placement.task_definition = Some(TD2.into());
        // ECS shows only the restored deployment now, no trace of the failure.
        let o = observed();
        let team = ["team".to_string()];
        let mut d = desired(&s, &team);
        d.applied_task_definition = Some(TD2);
        d.rolled_back_task_definition = Some(TD2);
        let c = converge(plan(&d, Some(&o)));
        assert!(c.rolled_back);
        assert!(!c.writes(), "{c:?}");
    }

    /// What a pass remembers decides the next plan: the carry-over rules, pass by pass.
    #[test]
    fn status_remembers_what_the_next_plan_needs() {
        let mut s = spec();
        s.redeploy_token = Some("1".into());
        let o = observed(); // runs TD1
        // A create starts a fresh history and counts the creation (new client token).
        let before = EcsServiceStatus {
            creations: 2,
            rolled_back_task_definition: Some(TD2.into()),
            replaced_task_definition: Some(TD2.into()),
            ..Default::default()
        };
        let created = created_status(before, &s, TD1, "2026-12-02T00:00:00Z");
        assert_eq!(created.creations, 3);
        assert_eq!(created.applied_task_definition.as_deref(), Some(TD1));
        assert_eq!(created.applied_redeploy_token.as_deref(), Some("1"));
        assert_eq!(created.managed_tag_keys, vec!["team".to_string()]);
        assert_eq!(created.rolled_back_task_definition, None);
        assert_eq!(created.replaced_task_definition, None);
        assert_eq!(
            created.last_create_time.as_deref(),
            Some("2026-12-02T00:00:00Z")
        );

        // Rolling to TD2: TD1 is what it replaced, TD2 is applied, old rollback memory goes.
        let sent = Converge {
            update: ServiceUpdate {
                task_definition: Some(TD2.into()),
                ..Default::default()
            },
            ..Default::default()
        };
        let rolling = converged_status(created.clone(), &s, TD2, &o, &sent);
        assert_eq!(rolling.replaced_task_definition.as_deref(), Some(TD1));
        assert_eq!(rolling.applied_task_definition.as_deref(), Some(TD2));

        // ECS rolled back: remembered until a new revision or a forced deployment.
        let rolled = Converge {
            rolled_back: true,
            ..Default::default()
        };
        let remembered = converged_status(rolling.clone(), &s, TD2, &o, &rolled);
        assert_eq!(remembered.rolled_back_task_definition.as_deref(), Some(TD2));
        let quiet = converged_status(remembered.clone(), &s, TD2, &o, &Converge::default());
        assert_eq!(quiet.rolled_back_task_definition.as_deref(), Some(TD2));
        assert_eq!(quiet.replaced_task_definition.as_deref(), Some(TD1));
        // An unsent revision ECS does not run is not "applied".
        assert_eq!(quiet.applied_task_definition.as_deref(), Some(TD2));
        let fresh = converged_status(created, &s, TD2, &o, &Converge::default());
        assert_eq!(fresh.applied_task_definition.as_deref(), Some(TD1));
        let forced = Converge {
            update: ServiceUpdate {
                force_new_deployment: true,
                ..Default::default()
            },
            ..Default::default()
        };
        let retried = converged_status(remembered, &s, TD2, &o, &forced);
        assert_eq!(retried.rolled_back_task_definition, None);
    }

    #[test]
    fn removing_the_redeploy_token_does_not_redeploy() {
        let s = spec();
        let team = ["team".to_string()];
        let mut d = desired(&s, &team);
        d.applied_redeploy_token = Some("7");
        assert!(
            !converge(plan(&d, Some(&observed())))
                .update
                .force_new_deployment
        );
    }

    #[test]
    fn codedeploy_services_get_no_deployments_through_update_service() {
        let mut s = spec();
        s.placement.task_definition = Some(TD2.into());
        let mut o = observed();
        o.deployment_controller = Some("CODE_DEPLOY".into());
        match plan(&desired(&s, &["team".into()]), Some(&o)) {
            Plan::Refuse(Health::Stalled { reason, message }) => {
                assert_eq!(reason, "DeployedElsewhere");
                assert!(message.contains("taskDefinition"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        // Other fields still converge.
        let mut s = spec();
        s.desired_count = Some(4);
        let c = converge(plan(&desired(&s, &["team".into()]), Some(&o)));
        assert_eq!(c.update.desired_count, Some(4));
    }

    #[test]
    fn daemon_services_are_deleted_without_scaling() {
        let mut o = observed();
        o.scheduling_strategy = Some("DAEMON".into());
        assert_eq!(
            plan_cleanup("uid-1", DeletionPolicy::Delete, Some(&o), false),
            Cleanup::Delete { scale_down: false }
        );
    }

    #[test]
    fn client_token_is_stable_per_generation_and_fits_ecs() {
        let uid = "0b1c2d3e-aaaa-bbbb-cccc-000000000000";
        let a = client_token(uid, Some(1), 0);
        assert_eq!(a, client_token(uid, Some(1), 0));
        assert_ne!(a, client_token(uid, Some(2), 0));
        // After a successful create, a re-create needs a new service, not the old one.
        assert_ne!(a, client_token(uid, Some(1), 1));
        assert!(a.len() <= 36);
    }

    #[test]
    fn cleanup_follows_policy_and_ownership() {
        let o = observed();
        assert_eq!(
            plan_cleanup("uid-1", DeletionPolicy::Delete, Some(&o), false),
            Cleanup::Delete { scale_down: true }
        );
        assert_eq!(
            plan_cleanup("uid-1", DeletionPolicy::Orphan, Some(&o), false),
            Cleanup::Untag
        );
        assert_eq!(
            plan_cleanup("uid-2", DeletionPolicy::Delete, Some(&o), false),
            Cleanup::Done(Release::NotOwned)
        );
        let mut draining = o.clone();
        draining.status = "DRAINING".into();
        assert_eq!(
            plan_cleanup("uid-1", DeletionPolicy::Delete, Some(&draining), false),
            Cleanup::Draining
        );
        let mut gone = o;
        gone.status = "INACTIVE".into();
        assert_eq!(
            plan_cleanup("uid-1", DeletionPolicy::Delete, Some(&gone), false),
            Cleanup::Done(Release::Gone)
        );
        assert_eq!(
            plan_cleanup("uid-1", DeletionPolicy::Delete, None, false),
            Cleanup::Done(Release::Gone)
        );
    }

    #[test]
    fn a_service_created_moments_ago_is_seen_before_it_is_taken_for_gone() {
        // MISSING right after CreateService: not visible yet, not gone.
        assert_eq!(
            plan_cleanup("uid-1", DeletionPolicy::Delete, None, true),
            Cleanup::NotSeenYet
        );
        // Seen (even INACTIVE): ECS's answer counts.
        let mut gone = observed();
        gone.status = "INACTIVE".into();
        assert_eq!(
            plan_cleanup("uid-1", DeletionPolicy::Delete, Some(&gone), true),
            Cleanup::Done(Release::Gone)
        );
        // Orphan leaves it either way; nothing to wait for.
        assert_eq!(
            plan_cleanup("uid-1", DeletionPolicy::Orphan, None, true),
            Cleanup::Done(Release::Gone)
        );
    }
}
