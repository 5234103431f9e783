//! Pure planning for `EcsCapacityProvider`: (spec, observed ECS capacity provider)
//! -> actions, and deletion's answer -> what to tell. No I/O here; every ECS rule
//! about capacity providers lives in this file with a test.

use std::collections::{BTreeMap, BTreeSet};

use super::owned::{self, Adoption, Claimant, Release};
use crate::api::capacity_provider::{EcsCapacityProviderSpec, ManagedScaling, Toggle};
use crate::api::common::{DeletionPolicy, Health, Reason};
use crate::ecs::capacity_provider::{
    NewProvider, ObservedProvider, ProviderState, ProviderUpdate, ProviderUpdateRequest,
};

/// Everything the planner needs to know about the resource itself.
#[derive(Debug, Clone)]
pub struct Desired<'a> {
    pub name: String,
    pub me: &'a Claimant,
    pub spec: &'a EcsCapacityProviderSpec,
    /// The Auto Scaling group's ARN: spec.autoScalingGroupArn, or the one its name
    /// resolved to.
    pub group_arn: String,
    /// spec.tags plus this resource's ownership tags.
    pub tags: BTreeMap<String, String>,
    /// spec.tags keys applied by an earlier reconcile (status.managedTagKeys).
    pub managed_tag_keys: &'a [String],
    /// Uids of the existing EcsCapacityProviders, when the observed provider's tags
    /// name another one (see `owned::claim`).
    pub living: Option<&'a BTreeSet<String>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Create(NewProvider),
    Update(ProviderUpdateRequest),
    Tag(BTreeMap<String, String>),
    Untag(Vec<String>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Create or bring the provider in line. `changed` names the fields that differ
    /// (empty with no actions: nothing to do). `adopt`: the provider is not ours yet.
    Sync {
        actions: Vec<Action>,
        changed: Vec<String>,
        adopt: Option<Adoption>,
    },
    /// Do not touch ECS; report this instead.
    Refuse(Health),
}

/// ECS names reserved for its own providers ("The name can't be prefixed with
/// "aws", "ecs", or "fargate"", CreateCapacityProvider reference). The CRD refuses
/// them in spec.name; a metadata.name used as the default is checked here.
pub fn reserved_name(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    ["aws", "ecs", "fargate"]
        .iter()
        .any(|prefix| lower.starts_with(prefix))
}

fn create(desired: &Desired<'_>) -> Plan {
    let spec = desired.spec;
    Plan::Sync {
        actions: vec![Action::Create(NewProvider {
            name: desired.name.clone(),
            auto_scaling_group_arn: desired.group_arn.clone(),
            managed_scaling: spec.managed_scaling.clone(),
            managed_termination_protection: spec.managed_termination_protection,
            managed_draining: spec.managed_draining,
            tags: desired.tags.clone(),
        })],
        changed: vec!["capacityProvider".into()],
        adopt: None,
    }
}

pub fn plan(desired: &Desired<'_>, observed: Option<&ObservedProvider>) -> Plan {
    let Some(obs) = observed.filter(|o| !o.is_gone()) else {
        return create(desired);
    };
    let what = format!("ECS capacity provider {}", desired.name);
    let adopt = match owned::adoption(&obs.tags, desired.me, desired.living, &what, "name") {
        Ok(adopt) => adopt,
        Err(refusal) => return Plan::Refuse(refusal),
    };
    if obs.auto_scaling_group_arn != desired.group_arn {
        return Plan::Refuse(Health::stalled(
            Reason::ImmutableField,
            format!(
                "{what} uses Auto Scaling group {}, the spec names {}; ECS cannot move a \
                 capacity provider to another group. Create a new EcsCapacityProvider (another \
                 name) for that group",
                obs.auto_scaling_group_arn, desired.group_arn
            ),
        ));
    }
    let mut changed = Vec::new();
    let mut actions: Vec<Action> = provider_update(desired.spec, obs, &mut changed)
        .into_iter()
        .collect();
    let tags = owned::tag_changes(&desired.tags, &obs.tags, desired.managed_tag_keys);
    changed.extend(tags.changed);
    if !tags.tag.is_empty() {
        actions.push(Action::Tag(tags.tag));
    }
    if !tags.untag.is_empty() {
        actions.push(Action::Untag(tags.untag));
    }
    Plan::Sync {
        actions,
        changed,
        adopt,
    }
}

/// managedScaling as the spec wants it: the spec's fields over what ECS has (a field
/// the spec omits keeps its value), or None if that is what ECS has already.
fn scaling_update(
    spec: Option<&ManagedScaling>,
    observed: &ManagedScaling,
    changed: &mut Vec<String>,
) -> Option<ManagedScaling> {
    let spec = spec?;
    let merged = ManagedScaling {
        status: spec.status.or(observed.status),
        target_capacity: spec.target_capacity.or(observed.target_capacity),
        minimum_scaling_step_size: spec
            .minimum_scaling_step_size
            .or(observed.minimum_scaling_step_size),
        maximum_scaling_step_size: spec
            .maximum_scaling_step_size
            .or(observed.maximum_scaling_step_size),
        instance_warmup_period: spec
            .instance_warmup_period
            .or(observed.instance_warmup_period),
    };
    let fields = [
        ("status", merged.status != observed.status),
        (
            "targetCapacity",
            merged.target_capacity != observed.target_capacity,
        ),
        (
            "minimumScalingStepSize",
            merged.minimum_scaling_step_size != observed.minimum_scaling_step_size,
        ),
        (
            "maximumScalingStepSize",
            merged.maximum_scaling_step_size != observed.maximum_scaling_step_size,
        ),
        (
            "instanceWarmupPeriod",
            merged.instance_warmup_period != observed.instance_warmup_period,
        ),
    ];
    let before = changed.len();
    changed.extend(
        fields
            .iter()
            .filter(|(_, differs)| *differs)
            .map(|(field, _)| format!("managedScaling.{field}")),
    );
    (changed.len() > before).then_some(merged)
}

/// A switch the spec sets and ECS has otherwise (omitted = keep).
fn toggle_update(
    field: &str,
    spec: Option<Toggle>,
    observed: Option<Toggle>,
    changed: &mut Vec<String>,
) -> Option<Toggle> {
    let wanted = spec.filter(|t| Some(*t) != observed)?;
    changed.push(field.to_string());
    Some(wanted)
}

/// UpdateCapacityProvider with only what differs. The group is not in it: ECS has
/// no way to change it (AutoScalingGroupProviderUpdate).
fn provider_update(
    spec: &EcsCapacityProviderSpec,
    obs: &ObservedProvider,
    changed: &mut Vec<String>,
) -> Option<Action> {
    let update = ProviderUpdateRequest {
        managed_scaling: scaling_update(
            spec.managed_scaling.as_ref(),
            &obs.managed_scaling,
            changed,
        ),
        managed_termination_protection: toggle_update(
            "managedTerminationProtection",
            spec.managed_termination_protection,
            obs.managed_termination_protection,
            changed,
        ),
        managed_draining: toggle_update(
            "managedDraining",
            spec.managed_draining,
            obs.managed_draining,
            changed,
        ),
    };
    (update != ProviderUpdateRequest::default()).then_some(Action::Update(update))
}

/// Health of a provider that needs no more writes, from its ECS state.
pub fn health(obs: &ObservedProvider) -> Health {
    let name = &obs.name;
    let why = obs
        .update_status_reason
        .as_deref()
        .unwrap_or("no reason given");
    match (&obs.status, &obs.update_status) {
        (_, ProviderUpdate::UpdateFailed | ProviderUpdate::CreateFailed) => Health::stalled(
            Reason::EcsRejected,
            format!(
                "ECS capacity provider {name}: {} ({why})",
                obs.update_status.as_str()
            ),
        ),
        (_, ProviderUpdate::UpdateInProgress | ProviderUpdate::CreateInProgress) => {
            Health::progressing(
                Reason::Updating,
                format!(
                    "ECS capacity provider {name} is {}",
                    obs.update_status.as_str()
                ),
            )
        }
        (ProviderState::Active, _) => Health::ready(
            Reason::Active,
            format!("ECS capacity provider {name} is ACTIVE"),
        ),
        (other, _) => Health::progressing(
            Reason::Waiting,
            format!("ECS capacity provider {name} is {}", other.as_str()),
        ),
    }
}

/// What deletion does with the ECS capacity provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cleanup {
    /// Nothing to do in ECS (gone already, or never ours): drop the finalizer.
    Done(Release),
    /// Orphan: keep the provider, remove the ownership tags.
    Untag(Vec<String>),
    Delete,
}

pub fn plan_cleanup(
    uid: &str,
    policy: DeletionPolicy,
    observed: Option<&ObservedProvider>,
) -> Cleanup {
    let obs = observed.filter(|o| !o.is_gone());
    match owned::release(obs.map(|o| &o.tags), uid, policy) {
        Release::Gone => Cleanup::Done(Release::Gone),
        Release::NotOwned => Cleanup::Done(Release::NotOwned),
        Release::Orphan => Cleanup::Untag(owned::ownership_keys()),
        Release::Delete => Cleanup::Delete,
    }
}

/// What DeleteCapacityProvider's answer means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deletion {
    /// INACTIVE, or no such provider any more.
    Done,
    /// DELETE_IN_PROGRESS: look again soon.
    InProgress(String),
    /// DELETE_FAILED: a cluster still lists it. ECS answers this with success, the
    /// reason naming the cluster ("The capacity provider cannot be deleted because it
    /// is associated with cluster: X. Remove the capacity provider from the cluster
    /// and try again.", terraform-provider-aws#48156): the finalizer stays.
    Blocked { reason: Reason, message: String },
}

pub fn deletion(name: &str, answer: Option<&ObservedProvider>, users: &[String]) -> Deletion {
    let Some(answer) = answer.filter(|a| !a.is_gone()) else {
        return Deletion::Done;
    };
    match &answer.update_status {
        ProviderUpdate::DeleteFailed => {
            let ecs_says = answer
                .update_status_reason
                .as_deref()
                .unwrap_or("no reason given");
            let clusters = if users.is_empty() {
                String::new()
            } else {
                format!(" (EcsClusters listing it: {})", users.join(", "))
            };
            Deletion::Blocked {
                reason: Reason::InUse,
                message: format!(
                    "ECS capacity provider {name} cannot be deleted yet{clusters}: {ecs_says} \
                     Remove it from the clusters' capacityProviders; the deletion then \
                     completes by itself"
                ),
            }
        }
        ProviderUpdate::DeleteComplete => Deletion::Done,
        other => Deletion::InProgress(format!(
            "ECS capacity provider {name} is being deleted ({})",
            other.as_str()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::common::{UID_TAG, ownership_tags};

    const GROUP: &str =
        "arn:aws:autoscaling:eu-west-1:123456789012:autoScalingGroup:u-1:autoScalingGroupName/pool";

    fn me(adopt_existing: bool) -> &'static Claimant {
        Box::leak(Box::new(Claimant {
            kind: "EcsCapacityProvider",
            uid: "uid-1".into(),
            owner: "ns/pool".into(),
            adopt_existing,
        }))
    }

    fn desired(spec: &EcsCapacityProviderSpec) -> Desired<'_> {
        let mut tags = spec.tags.clone();
        tags.extend(ownership_tags("ns", "pool", "uid-1"));
        Desired {
            name: "pool".into(),
            me: me(spec.adopt_existing),
            spec,
            group_arn: GROUP.into(),
            tags,
            managed_tag_keys: &[],
            living: None,
        }
    }

    /// As real ECS reports a provider created without managedScaling: every field
    /// filled in with its default.
    fn owned() -> ObservedProvider {
        ObservedProvider {
            name: "pool".into(),
            arn: "arn:aws:ecs:eu-west-1:123456789012:capacity-provider/pool".into(),
            status: ProviderState::Active,
            update_status: ProviderUpdate::Other(String::new()),
            auto_scaling_group_arn: GROUP.into(),
            managed_scaling: ManagedScaling {
                status: Some(Toggle::Disabled),
                target_capacity: Some(100),
                minimum_scaling_step_size: Some(1),
                maximum_scaling_step_size: Some(10000),
                instance_warmup_period: Some(300),
            },
            managed_termination_protection: Some(Toggle::Disabled),
            managed_draining: Some(Toggle::Enabled),
            tags: ownership_tags("ns", "pool", "uid-1"),
            ..Default::default()
        }
    }

    fn synced(p: Plan) -> (Vec<Action>, Vec<String>) {
        match p {
            Plan::Sync {
                actions, changed, ..
            } => (actions, changed),
            Plan::Refuse(h) => panic!("refused: {h:?}"),
        }
    }

    #[test]
    fn a_missing_provider_is_created_with_the_group_arn_and_ownership_tags() {
        let spec = EcsCapacityProviderSpec {
            managed_scaling: Some(ManagedScaling {
                status: Some(Toggle::Enabled),
                target_capacity: Some(90),
                ..Default::default()
            }),
            ..Default::default()
        };
        let (actions, _) = synced(plan(&desired(&spec), None));
        let [Action::Create(new)] = actions.as_slice() else {
            panic!("{actions:?}")
        };
        assert_eq!(new.name, "pool");
        assert_eq!(new.auto_scaling_group_arn, GROUP);
        assert_eq!(new.managed_scaling, spec.managed_scaling);
        assert_eq!(new.tags.get(UID_TAG).map(String::as_str), Some("uid-1"));
        // An INACTIVE provider (deleted) is no obstacle: create again.
        let mut gone = owned();
        gone.status = ProviderState::Inactive;
        let (actions, _) = synced(plan(&desired(&spec), Some(&gone)));
        assert!(matches!(actions.as_slice(), [Action::Create(_)]));
    }

    #[test]
    fn defaults_ecs_filled_in_are_no_change() {
        // The spec says nothing of what ECS defaulted: no write at all.
        let spec = EcsCapacityProviderSpec {
            managed_scaling: Some(ManagedScaling::default()),
            ..Default::default()
        };
        let (actions, changed) = synced(plan(&desired(&spec), Some(&owned())));
        assert!(actions.is_empty(), "{actions:?} {changed:?}");
        // Nor when it repeats them.
        let spec = EcsCapacityProviderSpec {
            managed_scaling: Some(owned().managed_scaling),
            managed_draining: Some(Toggle::Enabled),
            ..Default::default()
        };
        let (actions, _) = synced(plan(&desired(&spec), Some(&owned())));
        assert!(actions.is_empty(), "{actions:?}");
    }

    #[test]
    fn a_scaling_change_sends_the_whole_managed_scaling_merged_over_ecs() {
        let spec = EcsCapacityProviderSpec {
            managed_scaling: Some(ManagedScaling {
                status: Some(Toggle::Enabled),
                target_capacity: Some(75),
                ..Default::default()
            }),
            managed_termination_protection: Some(Toggle::Enabled),
            ..Default::default()
        };
        let (actions, changed) = synced(plan(&desired(&spec), Some(&owned())));
        assert_eq!(
            changed,
            [
                "managedScaling.status",
                "managedScaling.targetCapacity",
                "managedTerminationProtection"
            ]
        );
        let [Action::Update(update)] = actions.as_slice() else {
            panic!("{actions:?}")
        };
        // The fields the spec leaves out keep ECS's values, so none resets.
        let scaling = update.managed_scaling.clone().unwrap();
        assert_eq!(scaling.target_capacity, Some(75));
        assert_eq!(scaling.instance_warmup_period, Some(300));
        assert_eq!(scaling.maximum_scaling_step_size, Some(10000));
        assert_eq!(update.managed_termination_protection, Some(Toggle::Enabled));
        assert_eq!(update.managed_draining, None);
    }

    #[test]
    fn another_group_is_refused_as_immutable() {
        let mut obs = owned();
        obs.auto_scaling_group_arn = GROUP.replace("pool", "other");
        let p = plan(&desired(&EcsCapacityProviderSpec::default()), Some(&obs));
        let Plan::Refuse(Health::Stalled { reason, message }) = p else {
            panic!("{p:?}")
        };
        assert_eq!(reason, Reason::ImmutableField);
        assert!(message.contains("autoScalingGroupName/other"), "{message}");
    }

    #[test]
    fn tags_follow_the_spec_and_leave_others_alone() {
        let spec = EcsCapacityProviderSpec {
            tags: [("team".to_string(), "gpu".to_string())].into(),
            ..Default::default()
        };
        let mut obs = owned();
        obs.tags.insert("someone-else".into(), "x".into());
        let (actions, changed) = synced(plan(&desired(&spec), Some(&obs)));
        assert_eq!(changed, ["tags[team]"]);
        assert_eq!(
            actions,
            [Action::Tag(
                [("team".to_string(), "gpu".to_string())].into()
            )]
        );
    }

    #[test]
    fn ownership_table_holds_for_capacity_providers() {
        use crate::reconcile::owned::table::{self, Expect};
        let living = table::living();
        for row in table::rows("pool") {
            let spec = EcsCapacityProviderSpec {
                adopt_existing: row.adopt_existing,
                ..Default::default()
            };
            let known = table::living_for(&row.tags, &living);
            let mut d = desired(&spec);
            d.living = known.as_ref();
            let mut obs = owned();
            obs.tags = row.tags.clone();
            let got = match plan(&d, Some(&obs)) {
                Plan::Sync { adopt: None, .. } => Expect::Ours,
                Plan::Sync {
                    adopt: Some(how),
                    actions,
                    ..
                } => {
                    let tagged = actions.iter().any(|a| {
                        matches!(a, Action::Tag(t) if t.get(UID_TAG).map(String::as_str) == Some(table::UID))
                    });
                    assert!(tagged, "{actions:?}");
                    Expect::Adopt(how)
                }
                Plan::Refuse(h) => {
                    assert_eq!(h.reason(), &Reason::NotOwned);
                    Expect::Refuse
                }
            };
            assert_eq!(got, row.expect, "{:?}", row.tags);
        }
    }

    #[test]
    fn health_follows_status_and_update_status() {
        let mut obs = owned();
        assert!(health(&obs).is_ready());
        obs.update_status = ProviderUpdate::UpdateInProgress;
        assert_eq!(health(&obs).reason(), &Reason::Updating);
        obs.update_status = ProviderUpdate::UpdateFailed;
        obs.update_status_reason = Some("the Auto Scaling group is gone".into());
        let h = health(&obs);
        assert!(matches!(&h, Health::Stalled { .. }), "{h:?}");
        assert!(h.message().contains("the Auto Scaling group is gone"));
    }

    #[test]
    fn reserved_prefixes_are_caught_in_any_case() {
        for name in ["aws-pool", "ECS_pool", "Fargate2", "ecs"] {
            assert!(reserved_name(name), "{name}");
        }
        for name in ["pool", "my-ecs", "gpu-fargate"] {
            assert!(!reserved_name(name), "{name}");
        }
    }

    #[test]
    fn deletion_policy_and_ownership_decide_cleanup() {
        let obs = owned();
        assert_eq!(
            plan_cleanup("uid-1", DeletionPolicy::Delete, Some(&obs)),
            Cleanup::Delete
        );
        assert_eq!(
            plan_cleanup("uid-1", DeletionPolicy::Orphan, Some(&obs)),
            Cleanup::Untag(owned::ownership_keys())
        );
        assert_eq!(
            plan_cleanup("uid-2", DeletionPolicy::Delete, Some(&obs)),
            Cleanup::Done(Release::NotOwned)
        );
        assert_eq!(
            plan_cleanup("uid-1", DeletionPolicy::Delete, None),
            Cleanup::Done(Release::Gone)
        );
    }

    #[test]
    fn a_delete_ecs_answers_with_delete_failed_is_blocked_naming_the_cluster() {
        let mut answer = owned();
        answer.update_status = ProviderUpdate::DeleteFailed;
        answer.update_status_reason = Some(
            "The capacity provider cannot be deleted because it is associated with cluster: \
             prod. Remove the capacity provider from the cluster and try again."
                .into(),
        );
        let Deletion::Blocked { reason, message } =
            deletion("pool", Some(&answer), &["prod".to_string()])
        else {
            panic!()
        };
        assert_eq!(reason, Reason::InUse);
        assert!(message.contains("cluster: prod"), "{message}");
        assert!(
            message.contains("EcsClusters listing it: prod"),
            "{message}"
        );
        answer.update_status = ProviderUpdate::DeleteInProgress;
        assert!(matches!(
            deletion("pool", Some(&answer), &[]),
            Deletion::InProgress(_)
        ));
        answer.status = ProviderState::Inactive;
        assert_eq!(deletion("pool", Some(&answer), &[]), Deletion::Done);
        assert_eq!(deletion("pool", None, &[]), Deletion::Done);
    }
}
