//! Pure planning for `EcsCluster`: (spec, observed ECS cluster) -> actions.
//! No I/O here; every ECS rule about clusters lives in this file with a test.

use std::collections::{BTreeMap, BTreeSet};

use super::owned::{self, Adoption, Claimant, Release};
use crate::api::cluster::{
    ContainerInsights, EcsClusterSpec, EcsClusterStatus, ExecuteCommandConfiguration,
    ExecuteCommandLogConfiguration,
};
use crate::api::common::{CapacityProviderStrategyItem, Reason};
use crate::api::common::{DeletionPolicy, Health};
use crate::ecs::cluster::{ClusterState, ObservedCluster};

/// Everything the planner needs to know about the resource itself.
#[derive(Debug, Clone)]
pub struct Desired<'a> {
    pub name: String,
    pub me: &'a Claimant,
    pub spec: &'a EcsClusterSpec,
    /// spec.tags plus this resource's ownership tags.
    pub tags: BTreeMap<String, String>,
    /// spec.tags keys applied by an earlier reconcile (status.managedTagKeys).
    pub managed_tag_keys: &'a [String],
    /// Uids of the existing EcsClusters, when the observed cluster's tags name
    /// another one (see `owned::claim`).
    pub living: Option<&'a BTreeSet<String>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Create {
        name: String,
        container_insights: Option<ContainerInsights>,
        execute_command: Option<ExecuteCommandConfiguration>,
        service_connect_namespace: Option<String>,
        capacity_providers: Option<Vec<String>>,
        default_strategy: Option<Vec<CapacityProviderStrategyItem>>,
        tags: BTreeMap<String, String>,
    },
    /// UpdateCluster with only the parts that differ.
    Update {
        container_insights: Option<ContainerInsights>,
        execute_command: Option<ExecuteCommandConfiguration>,
        service_connect_namespace: Option<String>,
    },
    /// PutClusterCapacityProviders: ECS replaces providers and strategy together.
    PutCapacityProviders {
        providers: Vec<String>,
        strategy: Vec<CapacityProviderStrategyItem>,
    },
    Tag(BTreeMap<String, String>),
    Untag(Vec<String>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Create or bring the cluster in line. `changed` names the fields that differ
    /// (empty with no actions: nothing to do). `adopt`: the cluster is not ours yet.
    Sync {
        actions: Vec<Action>,
        changed: Vec<String>,
        adopt: Option<Adoption>,
    },
    /// Do not touch ECS; report this instead.
    Refuse(Health),
}

fn strategy_key(items: &[CapacityProviderStrategyItem]) -> BTreeSet<(String, i32, i32)> {
    // ECS treats omitted weight/base as 0 and the order as irrelevant.
    items
        .iter()
        .map(|i| {
            (
                i.capacity_provider.clone(),
                i.weight.unwrap_or(0),
                i.base.unwrap_or(0),
            )
        })
        .collect()
}

/// Cloud Map namespaces can be given by name or ARN; ECS reports an ARN. A name is
/// taken to match an ARN that ends with it.
fn same_namespace(desired: &str, observed: &str) -> bool {
    desired == observed
        || (!desired.starts_with("arn:") && observed.rsplit(['/', ':']).next() == Some(desired))
}

/// ECS Exec settings as ECS reports them: an encryption flag that is false reads as
/// absent, empty text as absent, and a configuration that sets nothing as none.
fn normalise_exec(e: Option<&ExecuteCommandConfiguration>) -> ExecuteCommandConfiguration {
    let text = |v: &Option<String>| v.clone().filter(|s| !s.is_empty());
    let flag = |v: Option<bool>| v.filter(|b| *b);
    let Some(e) = e else {
        return ExecuteCommandConfiguration::default();
    };
    let log = e
        .log_configuration
        .as_ref()
        .map(|l| ExecuteCommandLogConfiguration {
            cloud_watch_log_group_name: text(&l.cloud_watch_log_group_name),
            cloud_watch_encryption_enabled: flag(l.cloud_watch_encryption_enabled),
            s3_bucket_name: text(&l.s3_bucket_name),
            s3_encryption_enabled: flag(l.s3_encryption_enabled),
            s3_key_prefix: text(&l.s3_key_prefix),
        });
    ExecuteCommandConfiguration {
        kms_key_id: text(&e.kms_key_id),
        logging: e.logging,
        log_configuration: log.filter(|l| *l != ExecuteCommandLogConfiguration::default()),
    }
}

fn create(desired: &Desired<'_>) -> Plan {
    let spec = desired.spec;
    Plan::Sync {
        actions: vec![Action::Create {
            name: desired.name.clone(),
            container_insights: spec.settings.as_ref().and_then(|s| s.container_insights),
            execute_command: spec
                .configuration
                .as_ref()
                .and_then(|c| c.execute_command_configuration.clone()),
            service_connect_namespace: spec
                .service_connect_defaults
                .as_ref()
                .map(|s| s.namespace.clone()),
            capacity_providers: spec.capacity_providers.clone(),
            default_strategy: spec.default_capacity_provider_strategy.clone(),
            tags: desired.tags.clone(),
        }],
        changed: vec!["cluster".into()],
        adopt: None,
    }
}

pub fn plan(desired: &Desired<'_>, observed: Option<&ObservedCluster>) -> Plan {
    let Some(obs) = observed.filter(|o| !o.is_gone()) else {
        return create(desired);
    };
    let what = format!("ECS cluster {}", desired.name);
    let adopt = match owned::adoption(&obs.tags, desired.me, desired.living, &what, "clusterName") {
        Ok(adopt) => adopt,
        Err(refusal) => return Plan::Refuse(refusal),
    };
    let mut changed = Vec::new();
    let mut actions: Vec<Action> = [
        cluster_update(desired.spec, obs, &mut changed),
        capacity_update(desired.spec, obs, &mut changed),
    ]
    .into_iter()
    .flatten()
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

/// UpdateCluster with only what the spec sets and ECS has differently (omitted = keep).
fn cluster_update(
    spec: &EcsClusterSpec,
    obs: &ObservedCluster,
    changed: &mut Vec<String>,
) -> Option<Action> {
    let mut update_ci = None;
    if let Some(ci) = spec.settings.as_ref().and_then(|s| s.container_insights)
        && obs.settings.get("containerInsights").map(String::as_str) != Some(ci.as_str())
    {
        update_ci = Some(ci);
        changed.push("settings.containerInsights".into());
    }
    let mut update_exec = None;
    if let Some(exec) = spec
        .configuration
        .as_ref()
        .and_then(|c| c.execute_command_configuration.as_ref())
        && normalise_exec(obs.execute_command.as_ref()) != normalise_exec(Some(exec))
    {
        update_exec = Some(exec.clone());
        changed.push("configuration.executeCommandConfiguration".into());
    }
    let mut update_sc = None;
    if let Some(ns) = spec.service_connect_defaults.as_ref().map(|s| &s.namespace)
        && !obs
            .service_connect_namespace
            .as_deref()
            .is_some_and(|o| same_namespace(ns, o))
    {
        update_sc = Some(ns.clone());
        changed.push("serviceConnectDefaults.namespace".into());
    }
    (update_ci.is_some() || update_exec.is_some() || update_sc.is_some()).then_some(
        Action::Update {
            container_insights: update_ci,
            execute_command: update_exec,
            service_connect_namespace: update_sc,
        },
    )
}

/// PutClusterCapacityProviders: ECS replaces the list and the default strategy
/// together, so an omitted half keeps what ECS has.
fn capacity_update(
    spec: &EcsClusterSpec,
    obs: &ObservedCluster,
    changed: &mut Vec<String>,
) -> Option<Action> {
    if spec.capacity_providers.is_none() && spec.default_capacity_provider_strategy.is_none() {
        return None;
    }
    let providers = spec
        .capacity_providers
        .clone()
        .unwrap_or_else(|| obs.capacity_providers.clone());
    let strategy = spec
        .default_capacity_provider_strategy
        .clone()
        .unwrap_or_else(|| {
            // Keep the observed strategy, minus providers that are being removed.
            obs.default_strategy
                .iter()
                .filter(|s| providers.contains(&s.capacity_provider))
                .cloned()
                .collect()
        });
    let providers_differ = providers.iter().collect::<BTreeSet<_>>()
        != obs.capacity_providers.iter().collect::<BTreeSet<_>>();
    let strategy_differs = strategy_key(&strategy) != strategy_key(&obs.default_strategy);
    if providers_differ {
        changed.push("capacityProviders".into());
    }
    if strategy_differs {
        changed.push("defaultCapacityProviderStrategy".into());
    }
    (providers_differ || strategy_differs).then_some(Action::PutCapacityProviders {
        providers,
        strategy,
    })
}

/// What deletion does with the ECS cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cleanup {
    /// Nothing to do in ECS (gone already, or never ours): drop the finalizer.
    Done(Release),
    /// Orphan: keep the cluster, remove the ownership tags.
    Untag(Vec<String>),
    Delete,
    /// Cannot delete yet; keep the finalizer and retry.
    Blocked {
        reason: Reason,
        message: String,
    },
}

pub fn plan_cleanup(
    name: &str,
    uid: &str,
    policy: DeletionPolicy,
    observed: Option<&ObservedCluster>,
) -> Cleanup {
    let obs = observed.filter(|o| !o.is_gone());
    match owned::release(obs.map(|o| &o.tags), uid, policy) {
        Release::Gone => Cleanup::Done(Release::Gone),
        Release::NotOwned => Cleanup::Done(Release::NotOwned),
        Release::Orphan => Cleanup::Untag(owned::ownership_keys()),
        Release::Delete => match obs {
            Some(o) if o.active_services > 0 => Cleanup::Blocked {
                reason: Reason::ServicesRemain,
                message: format!(
                    "ECS cluster {name} still has {} active service(s); the operator never \
                     deletes services it does not manage. Delete them (or their EcsService \
                     resources) first",
                    o.active_services
                ),
            },
            _ => Cleanup::Delete,
        },
    }
}

/// Health of a cluster that needs no more writes, from its ECS status.
pub fn health(obs: &ObservedCluster) -> Health {
    match &obs.status {
        ClusterState::Active => Health::ready(
            Reason::Active,
            format!("ECS cluster {} is ACTIVE", obs.name),
        ),
        ClusterState::Provisioning => Health::progressing(
            Reason::Provisioning,
            format!("ECS cluster {} is PROVISIONING", obs.name),
        ),
        ClusterState::Failed => Health::stalled(
            Reason::ClusterFailed,
            format!(
                "ECS cluster {} is FAILED (capacity provider resources could not be created)",
                obs.name
            ),
        ),
        other => Health::progressing(
            Reason::Waiting,
            format!("ECS cluster {} is {}", obs.name, other.as_str()),
        ),
    }
}

/// How soon a cluster whose counts are moving (services and tasks starting or
/// stopping) reads them again. Its services do not wake it as they come up: the
/// counts follow from one DescribeClusters per interval, however many services move.
pub const COUNTS_POLL: std::time::Duration = std::time::Duration::from_secs(10);

/// `Some(COUNTS_POLL)` while the cluster's counts move: they differ from the last
/// status, or tasks are pending. `None`: the resync interval is soon enough.
pub fn counts_poll(
    previous: &EcsClusterStatus,
    now: &EcsClusterStatus,
) -> Option<std::time::Duration> {
    let counts = |s: &EcsClusterStatus| {
        (
            s.registered_container_instances_count,
            s.running_tasks_count,
            s.pending_tasks_count,
            s.active_services_count,
        )
    };
    let moving = counts(previous) != counts(now) || now.pending_tasks_count.unwrap_or(0) > 0;
    moving.then_some(COUNTS_POLL)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::cluster::{
        ClusterConfiguration, ClusterSettings, ExecuteCommandLogging, ServiceConnectDefaults,
    };
    use crate::api::common::{OWNER_TAG, UID_TAG, ownership_tags};

    fn me(adopt_existing: bool) -> &'static Claimant {
        Box::leak(Box::new(Claimant {
            kind: "EcsCluster",
            uid: "uid-1".into(),
            owner: "ns/prod".into(),
            adopt_existing,
        }))
    }

    fn desired(spec: &EcsClusterSpec) -> Desired<'_> {
        let mut tags = spec.tags.clone();
        tags.extend(ownership_tags("ns", "prod", "uid-1"));
        Desired {
            name: "prod".into(),
            me: me(spec.adopt_existing),
            spec,
            tags,
            managed_tag_keys: &[],
            living: None,
        }
    }

    fn owned() -> ObservedCluster {
        ObservedCluster {
            name: "prod".into(),
            arn: "arn:aws:ecs:us-east-1:000000000000:cluster/prod".into(),
            status: "ACTIVE".into(),
            tags: ownership_tags("ns", "prod", "uid-1"),
            ..Default::default()
        }
    }

    fn actions(p: Plan) -> Vec<Action> {
        match p {
            Plan::Sync { actions, .. } => actions,
            Plan::Refuse(h) => panic!("refused: {h:?}"),
        }
    }

    fn changed(p: &Plan) -> Vec<String> {
        match p {
            Plan::Sync { changed, .. } => changed.clone(),
            Plan::Refuse(h) => panic!("refused: {h:?}"),
        }
    }

    #[test]
    fn missing_cluster_is_created_with_everything_and_ownership_tags() {
        let spec = EcsClusterSpec {
            settings: Some(ClusterSettings {
                container_insights: Some(ContainerInsights::Enabled),
            }),
            tags: [("team".to_string(), "a".to_string())].into(),
            capacity_providers: Some(vec!["FARGATE".into()]),
            ..Default::default()
        };
        let a = actions(plan(&desired(&spec), None));
        let [
            Action::Create {
                name,
                container_insights,
                tags,
                capacity_providers,
                ..
            },
        ] = a.as_slice()
        else {
            panic!("{a:?}")
        };
        assert_eq!(name, "prod");
        assert_eq!(*container_insights, Some(ContainerInsights::Enabled));
        assert_eq!(
            capacity_providers.as_deref(),
            Some(&["FARGATE".to_string()][..])
        );
        assert_eq!(tags.get("team").map(String::as_str), Some("a"));
        assert_eq!(tags.get(UID_TAG).map(String::as_str), Some("uid-1"));
        assert_eq!(tags.get(OWNER_TAG).map(String::as_str), Some("ns/prod"));
    }

    #[test]
    fn inactive_cluster_counts_as_missing() {
        let mut obs = owned();
        obs.status = "INACTIVE".into();
        assert!(matches!(
            actions(plan(&desired(&EcsClusterSpec::default()), Some(&obs)))[0],
            Action::Create { .. }
        ));
    }

    #[test]
    fn in_sync_cluster_needs_no_writes() {
        let spec = EcsClusterSpec {
            settings: Some(ClusterSettings {
                container_insights: Some(ContainerInsights::Disabled),
            }),
            tags: [("team".to_string(), "a".to_string())].into(),
            capacity_providers: Some(vec!["FARGATE_SPOT".into(), "FARGATE".into()]),
            default_capacity_provider_strategy: Some(vec![CapacityProviderStrategyItem {
                capacity_provider: "FARGATE".into(),
                weight: Some(1),
                base: None,
            }]),
            ..Default::default()
        };
        let mut obs = owned();
        obs.settings
            .insert("containerInsights".into(), "disabled".into());
        obs.tags.insert("team".into(), "a".into());
        // Another tool's tag is none of our business.
        obs.tags.insert("cost-center".into(), "42".into());
        obs.capacity_providers = vec!["FARGATE".into(), "FARGATE_SPOT".into()];
        obs.default_strategy = vec![CapacityProviderStrategyItem {
            capacity_provider: "FARGATE".into(),
            weight: Some(1),
            base: Some(0),
        }];
        let p = plan(&desired(&spec), Some(&obs));
        assert_eq!(
            p,
            Plan::Sync {
                actions: vec![],
                changed: vec![],
                adopt: None
            }
        );
    }

    #[test]
    fn omitted_fields_leave_ecs_alone() {
        let mut obs = owned();
        obs.settings
            .insert("containerInsights".into(), "enabled".into());
        obs.capacity_providers = vec!["FARGATE".into()];
        obs.service_connect_namespace = Some("arn:aws:servicediscovery:x:namespace/ns-1".into());
        assert!(actions(plan(&desired(&EcsClusterSpec::default()), Some(&obs))).is_empty());
    }

    #[test]
    fn container_insights_drift_is_corrected_by_update_cluster() {
        let spec = EcsClusterSpec {
            settings: Some(ClusterSettings {
                container_insights: Some(ContainerInsights::Enhanced),
            }),
            ..Default::default()
        };
        let mut obs = owned();
        obs.settings
            .insert("containerInsights".into(), "disabled".into());
        let p = plan(&desired(&spec), Some(&obs));
        assert_eq!(changed(&p), vec!["settings.containerInsights"]);
        assert_eq!(
            actions(p),
            vec![Action::Update {
                container_insights: Some(ContainerInsights::Enhanced),
                execute_command: None,
                service_connect_namespace: None
            }]
        );
    }

    #[test]
    fn execute_command_configuration_is_compared_structurally() {
        let exec = ExecuteCommandConfiguration {
            logging: Some(ExecuteCommandLogging::Default),
            ..Default::default()
        };
        let spec = EcsClusterSpec {
            configuration: Some(ClusterConfiguration {
                execute_command_configuration: Some(exec.clone()),
            }),
            ..Default::default()
        };
        let mut obs = owned();
        obs.execute_command = Some(exec);
        assert!(actions(plan(&desired(&spec), Some(&obs))).is_empty());
        obs.execute_command = None;
        assert_eq!(
            changed(&plan(&desired(&spec), Some(&obs))),
            vec!["configuration.executeCommandConfiguration"]
        );
    }

    #[test]
    fn false_encryption_flags_match_what_ecs_reports() {
        // ECS reports cloudWatchEncryptionEnabled / s3EncryptionEnabled false as
        // absent; the cluster must not be rewritten at every resync for that.
        let want = ExecuteCommandConfiguration {
            logging: Some(ExecuteCommandLogging::Override),
            log_configuration: Some(ExecuteCommandLogConfiguration {
                cloud_watch_log_group_name: Some("/ecs/exec".into()),
                cloud_watch_encryption_enabled: Some(false),
                s3_encryption_enabled: Some(false),
                ..Default::default()
            }),
            ..Default::default()
        };
        let spec = EcsClusterSpec {
            configuration: Some(ClusterConfiguration {
                execute_command_configuration: Some(want),
            }),
            ..Default::default()
        };
        let mut obs = owned();
        obs.execute_command = Some(ExecuteCommandConfiguration {
            logging: Some(ExecuteCommandLogging::Override),
            log_configuration: Some(ExecuteCommandLogConfiguration {
                cloud_watch_log_group_name: Some("/ecs/exec".into()),
                ..Default::default()
            }),
            ..Default::default()
        });
        assert!(actions(plan(&desired(&spec), Some(&obs))).is_empty());
        // A real difference still counts.
        obs.execute_command = Some(ExecuteCommandConfiguration {
            logging: Some(ExecuteCommandLogging::Override),
            ..Default::default()
        });
        assert_eq!(
            changed(&plan(&desired(&spec), Some(&obs))),
            vec!["configuration.executeCommandConfiguration"]
        );
    }

    #[test]
    fn service_connect_namespace_name_matches_its_arn() {
        assert!(same_namespace(
            "internal",
            "arn:aws:servicediscovery:us-east-1:1:namespace/internal"
        ));
        assert!(same_namespace("internal", "internal"));
        assert!(!same_namespace(
            "internal",
            "arn:aws:servicediscovery:us-east-1:1:namespace/other"
        ));
        let spec = EcsClusterSpec {
            service_connect_defaults: Some(ServiceConnectDefaults {
                namespace: "internal".into(),
            }),
            ..Default::default()
        };
        let mut obs = owned();
        obs.service_connect_namespace = Some("other".into());
        assert_eq!(
            changed(&plan(&desired(&spec), Some(&obs))),
            vec!["serviceConnectDefaults.namespace"]
        );
    }

    #[test]
    fn capacity_providers_are_put_as_a_whole_and_omitted_strategy_is_kept() {
        let spec = EcsClusterSpec {
            capacity_providers: Some(vec!["FARGATE".into(), "FARGATE_SPOT".into()]),
            ..Default::default()
        };
        let mut obs = owned();
        obs.capacity_providers = vec!["FARGATE".into()];
        obs.default_strategy = vec![CapacityProviderStrategyItem {
            capacity_provider: "FARGATE".into(),
            weight: Some(1),
            base: Some(0),
        }];
        let p = plan(&desired(&spec), Some(&obs));
        assert_eq!(changed(&p), vec!["capacityProviders"]);
        assert_eq!(
            actions(p),
            vec![Action::PutCapacityProviders {
                providers: vec!["FARGATE".into(), "FARGATE_SPOT".into()],
                strategy: obs.default_strategy.clone(),
            }]
        );
    }

    #[test]
    fn removing_a_provider_drops_it_from_the_kept_strategy() {
        let spec = EcsClusterSpec {
            capacity_providers: Some(vec!["FARGATE".into()]),
            ..Default::default()
        };
        let mut obs = owned();
        obs.capacity_providers = vec!["FARGATE".into(), "FARGATE_SPOT".into()];
        obs.default_strategy = vec![CapacityProviderStrategyItem {
            capacity_provider: "FARGATE_SPOT".into(),
            weight: Some(1),
            base: Some(0),
        }];
        let a = actions(plan(&desired(&spec), Some(&obs)));
        assert_eq!(
            a,
            vec![Action::PutCapacityProviders {
                providers: vec!["FARGATE".into()],
                strategy: vec![],
            }]
        );
    }

    #[test]
    fn empty_provider_list_clears_them() {
        let spec = EcsClusterSpec {
            capacity_providers: Some(vec![]),
            default_capacity_provider_strategy: Some(vec![]),
            ..Default::default()
        };
        let mut obs = owned();
        obs.capacity_providers = vec!["FARGATE".into()];
        assert_eq!(
            actions(plan(&desired(&spec), Some(&obs))),
            vec![Action::PutCapacityProviders {
                providers: vec![],
                strategy: vec![]
            }]
        );
    }

    #[test]
    fn tag_drift_sets_values_and_removes_only_keys_we_applied() {
        let spec = EcsClusterSpec {
            tags: [("team".to_string(), "a".to_string())].into(),
            ..Default::default()
        };
        let mut d = desired(&spec);
        let managed = ["team".to_string(), "old".to_string()];
        d.managed_tag_keys = &managed;
        let mut obs = owned();
        obs.tags.insert("team".into(), "b".into());
        obs.tags.insert("old".into(), "x".into());
        obs.tags.insert("foreign".into(), "y".into());
        let p = plan(&d, Some(&obs));
        assert_eq!(changed(&p), vec!["tags[team]", "tags[old]"]);
        assert_eq!(
            actions(p),
            vec![
                Action::Tag([("team".to_string(), "a".to_string())].into()),
                Action::Untag(vec!["old".into()])
            ]
        );
    }

    #[test]
    fn foreign_cluster_is_refused_without_adopt_existing() {
        let mut obs = owned();
        obs.tags.clear();
        match plan(&desired(&EcsClusterSpec::default()), Some(&obs)) {
            Plan::Refuse(Health::Stalled { reason, message }) => {
                assert_eq!(reason, "NotOwned");
                assert!(message.contains("adoptExisting"), "{message}");
            }
            p => panic!("{p:?}"),
        }
        // Tagged by another resource (e.g. same name in another namespace).
        obs.tags = ownership_tags("other", "prod", "uid-9");
        let living = BTreeSet::from(["uid-9".to_string()]);
        let default_spec = EcsClusterSpec::default();
        let mut d = desired(&default_spec);
        d.living = Some(&living);
        match plan(&d, Some(&obs)) {
            Plan::Refuse(Health::Stalled { message, .. }) => {
                assert!(message.contains("other/prod"), "{message}")
            }
            p => panic!("{p:?}"),
        }
    }

    /// The shared ownership table, seen through the cluster plan: adoptExisting
    /// never takes a cluster another existing EcsCluster holds (it used to).
    #[test]
    fn ownership_table_holds_for_clusters() {
        use crate::reconcile::owned::table::{self, Expect};
        let living = table::living();
        for row in table::rows("prod") {
            let spec = EcsClusterSpec {
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
                    // Taking over means tagging it as ours.
                    let tagged = actions.iter().any(|a| {
                        matches!(a, Action::Tag(t) if t.get(UID_TAG).map(String::as_str) == Some(table::UID))
                    });
                    assert!(tagged, "{actions:?}");
                    Expect::Adopt(how)
                }
                Plan::Refuse(h) => {
                    assert!(matches!(&h, Health::Stalled { reason, .. } if reason == "NotOwned"));
                    Expect::Refuse
                }
            };
            assert_eq!(
                got, row.expect,
                "{:?} adoptExisting={}",
                row.tags, row.adopt_existing
            );
        }
    }

    #[test]
    fn adopt_existing_tags_the_cluster_as_ours() {
        let spec = EcsClusterSpec {
            adopt_existing: true,
            ..Default::default()
        };
        let mut obs = owned();
        obs.tags = [("preexisting".to_string(), "1".to_string())].into();
        let p = plan(&desired(&spec), Some(&obs));
        let Plan::Sync { actions, adopt, .. } = p else {
            panic!()
        };
        assert_eq!(adopt, Some(Adoption::Requested));
        assert_eq!(
            actions,
            vec![Action::Tag(ownership_tags("ns", "prod", "uid-1"))]
        );
    }

    #[test]
    fn cleanup_follows_policy_and_never_touches_foreign_clusters() {
        let obs = owned();
        assert_eq!(
            plan_cleanup("prod", "uid-1", DeletionPolicy::Delete, Some(&obs)),
            Cleanup::Delete
        );
        assert_eq!(
            plan_cleanup("prod", "uid-1", DeletionPolicy::Orphan, Some(&obs)),
            Cleanup::Untag(vec![crate::api::common::OWNER_TAG.into(), UID_TAG.into()])
        );
        assert_eq!(
            plan_cleanup("prod", "uid-2", DeletionPolicy::Delete, Some(&obs)),
            Cleanup::Done(Release::NotOwned)
        );
        assert_eq!(
            plan_cleanup("prod", "uid-1", DeletionPolicy::Delete, None),
            Cleanup::Done(Release::Gone)
        );
        let mut inactive = obs.clone();
        inactive.status = "INACTIVE".into();
        assert_eq!(
            plan_cleanup("prod", "uid-1", DeletionPolicy::Delete, Some(&inactive)),
            Cleanup::Done(Release::Gone)
        );
    }

    #[test]
    fn cleanup_is_blocked_while_services_remain() {
        let mut obs = owned();
        obs.active_services = 2;
        match plan_cleanup("prod", "uid-1", DeletionPolicy::Delete, Some(&obs)) {
            Cleanup::Blocked { reason, message } => {
                assert_eq!(reason, "ServicesRemain");
                assert!(message.contains("2 active service"), "{message}");
            }
            c => panic!("{c:?}"),
        }
        // Orphaning is fine with services running.
        assert!(matches!(
            plan_cleanup("prod", "uid-1", DeletionPolicy::Orphan, Some(&obs)),
            Cleanup::Untag(_)
        ));
    }

    #[test]
    fn health_follows_ecs_status() {
        let mut obs = owned();
        assert!(health(&obs).is_ready());
        obs.status = "PROVISIONING".into();
        assert!(matches!(health(&obs), Health::Progressing { .. }));
        obs.status = "FAILED".into();
        assert!(matches!(health(&obs), Health::Stalled { .. }));
    }

    #[test]
    fn counts_are_read_again_soon_only_while_they_move() {
        let counts = |running, pending, services| EcsClusterStatus {
            running_tasks_count: Some(running),
            pending_tasks_count: Some(pending),
            active_services_count: Some(services),
            ..Default::default()
        };
        let settled = counts(10, 0, 10);
        assert_eq!(counts_poll(&settled, &settled), None);
        assert_eq!(counts_poll(&settled, &counts(11, 0, 11)), Some(COUNTS_POLL));
        assert_eq!(
            counts_poll(&counts(10, 2, 12), &counts(10, 2, 12)),
            Some(COUNTS_POLL)
        );
        // A cluster just created reports its counts for the first time.
        assert_eq!(
            counts_poll(&EcsClusterStatus::default(), &settled),
            Some(COUNTS_POLL)
        );
    }
}
