//! `EcsCluster`: the I/O around the pure plan in `cluster_plan`.

use kube::ResourceExt;

use super::cluster_plan::{self, Action, Cleanup, Desired, Plan};
use super::owned::{self, Adoption, Claimant};
use super::{Context, Managed, Note, Outcome, key_of};
use crate::api::cluster::{EcsCluster, EcsClusterSpec, EcsClusterStatus};
use crate::api::common::{Health, READY, Reason, is_condition_true, ownership_tags};
use crate::api::service::EcsService;
use crate::ecs::cluster::{
    ObservedCluster, container_insights_setting, container_instances, describe_one, exec_to_sdk,
    service_connect_to_sdk,
};
use crate::ecs::{Category, EcsApi, set_tags, strategy_to_sdk, tags_to_sdk};
use crate::error::Error;

fn status_of(
    name: &str,
    obs: Option<&ObservedCluster>,
    managed_tag_keys: Vec<String>,
) -> EcsClusterStatus {
    match obs {
        Some(o) => EcsClusterStatus {
            cluster_name: Some(o.name.clone()),
            arn: Some(o.arn.clone()),
            status: Some(o.status.as_str().to_string()),
            registered_container_instances_count: Some(o.registered_container_instances),
            running_tasks_count: Some(o.running_tasks),
            pending_tasks_count: Some(o.pending_tasks),
            active_services_count: Some(o.active_services),
            capacity_providers: o.capacity_providers.clone(),
            managed_tag_keys,
            ..Default::default()
        },
        None => EcsClusterStatus {
            cluster_name: Some(name.to_string()),
            managed_tag_keys,
            ..Default::default()
        },
    }
}

fn health_of(name: &str, obs: Option<&ObservedCluster>) -> Health {
    obs.map(cluster_plan::health).unwrap_or_else(|| {
        Health::progressing(Reason::Creating, format!("creating ECS cluster {name}"))
    })
}

/// Sets the settings CreateCluster and UpdateCluster share (same setter names) on
/// either request: one mapping for both.
macro_rules! with_settings {
    ($request:expr, $insights:expr, $exec:expr, $namespace:expr) => {
        $request
            .set_settings($insights.map(|ci| vec![container_insights_setting(ci)]))
            .set_configuration($exec.as_ref().map(exec_to_sdk))
            .set_service_connect_defaults($namespace.as_deref().map(service_connect_to_sdk))
    };
}

/// The CreateCluster request for an `Action::Create`.
fn create_request(
    ecs: &EcsApi,
    action: &Action,
) -> Result<aws_sdk_ecs::operation::create_cluster::builders::CreateClusterFluentBuilder, Error> {
    let Action::Create {
        name,
        container_insights,
        execute_command,
        service_connect_namespace,
        capacity_providers,
        default_strategy,
        tags,
    } = action
    else {
        return Err(Error::Internal(
            "create_request needs Action::Create".into(),
        ));
    };
    let req = ecs
        .client
        .create_cluster()
        .cluster_name(name)
        .set_tags(Some(tags_to_sdk(tags)));
    let mut req = with_settings!(
        req,
        container_insights,
        execute_command,
        service_connect_namespace
    );
    if let Some(p) = capacity_providers {
        req = req.set_capacity_providers(Some(p.clone()));
    }
    if let Some(s) = default_strategy {
        req = req.set_default_capacity_provider_strategy(Some(strategy_to_sdk(s)?));
    }
    Ok(req)
}

async fn act(ecs: &EcsApi, name: &str, arn: Option<&str>, action: &Action) -> Result<(), Error> {
    let c = &ecs.client;
    match action {
        Action::Create { .. } => {
            let req = create_request(ecs, action)?;
            ecs.call("CreateCluster", Category::ClusterModify, req.send())
                .await?;
        }
        Action::Update {
            container_insights,
            execute_command,
            service_connect_namespace,
        } => {
            let req = c.update_cluster().cluster(name);
            let req = with_settings!(
                req,
                container_insights,
                execute_command,
                service_connect_namespace
            );
            ecs.call("UpdateCluster", Category::ClusterModify, req.send())
                .await?;
        }
        Action::PutCapacityProviders {
            providers,
            strategy,
        } => {
            let req = c
                .put_cluster_capacity_providers()
                .cluster(name)
                .set_capacity_providers(Some(providers.clone()))
                .set_default_capacity_provider_strategy(Some(strategy_to_sdk(strategy)?));
            ecs.call(
                "PutClusterCapacityProviders",
                Category::ClusterModify,
                req.send(),
            )
            .await?;
        }
        Action::Tag(tags) => {
            let arn =
                arn.ok_or_else(|| Error::Internal(format!("ECS cluster {name} has no ARN")))?;
            set_tags(ecs, arn, tags, &[]).await?;
        }
        Action::Untag(keys) => {
            let arn =
                arn.ok_or_else(|| Error::Internal(format!("ECS cluster {name} has no ARN")))?;
            set_tags(ecs, arn, &Default::default(), keys).await?;
        }
    }
    Ok(())
}

/// Changed fields grouped by the ECS action that sets them.
fn group_by_action(changed: &[String]) -> Vec<(&'static str, Vec<String>)> {
    let mut groups: Vec<(&'static str, Vec<String>)> = Vec::new();
    for f in changed {
        let action = if f.starts_with("tags[") {
            "TagResource"
        } else if f.starts_with("capacityProviders") || f.starts_with("defaultCapacityProvider") {
            "PutClusterCapacityProviders"
        } else {
            "UpdateCluster"
        };
        match groups.iter_mut().find(|(a, _)| *a == action) {
            Some((_, fs)) => fs.push(f.clone()),
            None => groups.push((action, vec![f.clone()])),
        }
    }
    groups
}

/// The Events for the writes a pass made: one per ECS action, so `kubectl describe`
/// says which call changed which fields.
fn change_notes(
    name: &str,
    actions: &[Action],
    changed: &[String],
    adopt: Option<Adoption>,
    drift: bool,
) -> Vec<Note> {
    if matches!(actions.first(), Some(Action::Create { .. })) {
        let message = format!("created ECS cluster {name}");
        return vec![Note::normal(Reason::Created, "CreateCluster", message)];
    }
    if let Some(how) = adopt {
        let what = format!("ECS cluster {name}");
        return vec![owned::adopted_changes_note(
            &what,
            how,
            EcsCluster::KIND,
            changed,
        )];
    }
    let (reason, verb) = owned::update_wording(drift);
    group_by_action(changed)
        .into_iter()
        .map(|(action, fields)| {
            let message = format!("ECS cluster {name} {verb}: {}", fields.join(", "));
            Note::normal(reason.clone(), action, message)
        })
        .collect()
}

/// The names of up to five services in `cluster`, for a blocked deletion's message.
async fn blocking_services(ecs: &EcsApi, cluster: &str, message: String) -> String {
    let arns = crate::ecs::service::list(ecs, cluster)
        .await
        .unwrap_or_default();
    let mut names: Vec<&str> = arns
        .iter()
        .map(|a| a.rsplit('/').next().unwrap_or(a))
        .collect();
    if names.is_empty() {
        return message;
    }
    names.sort_unstable();
    let more = names.len().saturating_sub(5);
    names.truncate(5);
    let tail = if more > 0 {
        format!(" and {more} more")
    } else {
        String::new()
    };
    format!("{message} (services: {}{tail})", names.join(", "))
}

async fn delete(ecs: &EcsApi, name: &str) -> Result<Vec<Note>, Error> {
    let req = ecs.client.delete_cluster().cluster(name).send();
    match ecs
        .call("DeleteCluster", Category::ClusterModify, req)
        .await
    {
        Ok(_) => {
            let message = format!("deleted ECS cluster {name}");
            Ok(vec![Note::normal(
                Reason::Deleted,
                "DeleteCluster",
                message,
            )])
        }
        Err(Error::Ecs {
            code: Some(code),
            message,
            ..
        }) if code.starts_with("ClusterContains") => Err(Error::DeleteBlocked {
            reason: if code == "ClusterContainsContainerInstancesException" {
                Reason::InstancesRemain
            } else {
                Reason::ClusterNotEmpty
            },
            message: format!("ECS refused to delete cluster {name}: {message}"),
        }),
        Err(e) if crate::ecs::is_not_found(&e) => Ok(vec![]),
        Err(e) => Err(e),
    }
}

/// Most services a refused PutClusterCapacityProviders names, and most
/// DescribeServices calls spent finding them.
const USERS_NAMED: usize = 5;
const USERS_READS: usize = 50;

/// The services of `cluster` whose strategy uses one of `providers`, for the message
/// of a refused PutClusterCapacityProviders (best effort: a failed read names none).
async fn services_using(ecs: &EcsApi, cluster: &str, providers: &[&String]) -> Vec<String> {
    let arns = crate::ecs::service::list(ecs, cluster)
        .await
        .unwrap_or_default();
    let names: Vec<String> = arns
        .iter()
        .map(|a| a.rsplit('/').next().unwrap_or(a).to_string())
        .collect();
    let mut users = Vec::new();
    let batches = names.chunks(crate::ecs::service::DESCRIBE_BATCH);
    for batch in batches.take(USERS_READS) {
        let Ok(found) = crate::ecs::service::describe(ecs, cluster, batch).await else {
            break;
        };
        users.extend(
            found
                .into_values()
                .filter(|s| {
                    let strategy = &s.capacity_provider_strategy;
                    strategy
                        .iter()
                        .any(|i| providers.contains(&&i.capacity_provider))
                })
                .map(|s| s.name),
        );
        if users.len() >= USERS_NAMED {
            break;
        }
    }
    users.sort_unstable();
    users.truncate(USERS_NAMED);
    users
}

/// ECS refuses to drop a capacity provider that a service's strategy uses
/// (`ResourceInUseException: The specified capacity provider is in use and cannot be
/// removed.`) without saying which: the message gains the services.
async fn name_the_users(
    ecs: &EcsApi,
    observed: Option<&ObservedCluster>,
    action: &Action,
    err: Error,
) -> Error {
    let (
        Error::Ecs {
            code: Some(code),
            operation,
            message,
            class,
        },
        Action::PutCapacityProviders { providers, .. },
        Some(obs),
    ) = (&err, action, observed)
    else {
        return err;
    };
    if code != "ResourceInUseException" {
        return err;
    }
    let dropped: Vec<&String> = obs
        .capacity_providers
        .iter()
        .filter(|p| !providers.contains(p))
        .collect();
    let users = services_using(ecs, &obs.name, &dropped).await;
    let dropped = dropped
        .iter()
        .map(|p| p.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    let who = if users.is_empty() {
        format!("a service of cluster {} uses {dropped}", obs.name)
    } else {
        format!("services using {dropped}: {}", users.join(", "))
    };
    Error::Ecs {
        operation,
        code: Some(code.clone()),
        message: format!(
            "{message} ({who}); move them to another capacity provider strategy first"
        ),
        class: *class,
    }
}

/// What to do about the container instances that keep a cluster from being deleted,
/// naming the Auto Scaling groups behind its capacity providers (as the
/// EcsCapacityProviders of the namespace report them).
fn instances_advice(ctx: &Context, ns: &str, obs: Option<&ObservedCluster>) -> String {
    let listed = obs
        .map(|o| o.capacity_providers.as_slice())
        .unwrap_or_default();
    let mut groups: Vec<String> = ctx
        .capacity_providers
        .all_in(ns)
        .iter()
        .filter_map(|p| {
            let status = p.status.as_ref()?;
            let provider = status
                .name
                .as_deref()
                .filter(|n| listed.iter().any(|l| l == n))?;
            let arn = status.auto_scaling_group_arn.as_deref()?;
            let group = crate::ecs::capacity_provider::group_name_of_arn(arn)?;
            Some(format!("{group} (capacity provider {provider})"))
        })
        .collect();
    groups.sort_unstable();
    let scale = if groups.is_empty() {
        "their Auto Scaling group".to_string()
    } else {
        format!("Auto Scaling group {}", groups.join(", "))
    };
    format!("Scale {scale} to 0 or deregister the instances; the deletion then completes by itself")
}

/// The status with the container-instance summary, read only for a cluster that has
/// instances (Fargate-only clusters cost no call).
async fn with_instances(
    ecs: &EcsApi,
    mut status: EcsClusterStatus,
    obs: Option<&ObservedCluster>,
) -> Result<EcsClusterStatus, Error> {
    if let Some(o) = obs.filter(|o| o.registered_container_instances > 0) {
        status.container_instances = Some(container_instances(ecs, &o.name).await?);
    }
    Ok(status)
}

/// The spec with capacityProviderRefs resolved: their ECS names added to
/// capacityProviders, and strategy items that name a ref by metadata.name renamed to
/// its ECS name. `Err(health)` while a referenced provider is missing or not Ready.
async fn with_providers_resolved(
    ctx: &Context,
    ns: &str,
    spec: &EcsClusterSpec,
) -> Result<Result<EcsClusterSpec, Health>, Error> {
    let mut resolved = spec.clone();
    if spec.capacity_provider_refs.is_empty() {
        return Ok(Ok(resolved));
    }
    let mut names = spec.capacity_providers.clone().unwrap_or_default();
    for r in &spec.capacity_provider_refs {
        let provider = ctx.capacity_providers.get(&ctx.kube, ns, &r.name).await?;
        let Some(ecs_name) = provider.as_deref().and_then(super::refs::provider_if_ready) else {
            let deleting = provider.is_some_and(|p| p.metadata.deletion_timestamp.is_some());
            let message = if deleting {
                format!(
                    "EcsCapacityProvider {} is being deleted: remove it from capacityProviderRefs",
                    r.name
                )
            } else {
                format!("waiting for EcsCapacityProvider {} to be Ready", r.name)
            };
            return Ok(Err(Health::progressing(
                Reason::WaitingForReference,
                message,
            )));
        };
        if !names.iter().any(|n| n == ecs_name) {
            names.push(ecs_name.to_string());
        }
        let strategy = resolved
            .default_capacity_provider_strategy
            .iter_mut()
            .flatten();
        for item in strategy.filter(|i| i.capacity_provider == r.name) {
            item.capacity_provider = ecs_name.to_string();
        }
    }
    resolved.capacity_providers = Some(names);
    Ok(Ok(resolved))
}

/// The EcsClusters of `store` whose capacityProviderRefs name `provider`.
fn referring_clusters(
    store: &kube::runtime::reflector::Store<EcsCluster>,
    provider: &crate::api::capacity_provider::EcsCapacityProvider,
) -> Vec<kube::runtime::reflector::ObjectRef<EcsCluster>> {
    let name = provider.name_any();
    store
        .state()
        .iter()
        .filter(|c| c.namespace() == provider.namespace())
        .filter(|c| c.spec.capacity_provider_refs.iter().any(|r| r.name == name))
        .map(|c| kube::runtime::reflector::ObjectRef::from(c.as_ref()))
        .collect()
}

/// The changes of an EcsService that change what its cluster reports: its ECS service
/// appearing (ARN), becoming Ready or not (its tasks run), its deletion starting, its
/// clusterRef. Its other status writes (rollout progress) do not wake the cluster.
fn what_a_cluster_reads_of_a_service(service: &EcsService) -> u64 {
    let status = service.status.as_ref();
    super::refs::fingerprint((
        status.and_then(|s| s.arn.as_ref()),
        status.is_some_and(|s| is_condition_true(&s.conditions, READY)),
        service.metadata.deletion_timestamp.is_some(),
        service.spec.placement.cluster_ref.as_ref().map(|r| &r.name),
    ))
}

impl Managed for EcsCluster {
    const KIND: &'static str = "EcsCluster";

    /// Services coming and going change what the cluster reports (services, running
    /// tasks): look again then, not only at the next resync. At most twice per
    /// `COUNTS_POLL` however many services move (1,000 services coming up cost a
    /// DescribeClusters per 10 s, not one each).
    fn watch_related(
        controller: kube::runtime::Controller<Self>,
        ctx: &std::sync::Arc<Context>,
        namespace: Option<&str>,
    ) -> kube::runtime::Controller<Self> {
        let services: kube::Api<EcsService> = super::scoped_api(&ctx.kube, namespace);
        let throttle = super::refs::Throttle::new(cluster_plan::COUNTS_POLL);
        let (later, trailing) = futures::channel::mpsc::unbounded();
        let store = controller.store();
        controller
            .watches_shared_stream(ctx.capacity_providers.subscribe(), move |provider| {
                referring_clusters(&store, &provider)
            })
            .watches_stream(
                super::refs::changes(services, what_a_cluster_reads_of_a_service),
                move |s: EcsService| {
                    let ns = s.namespace();
                    let r = s.spec.placement.cluster_ref?;
                    let o = kube::runtime::reflector::ObjectRef::<EcsCluster>::new(&r.name);
                    let cluster = match ns {
                        Some(ns) => o.within(&ns),
                        None => o,
                    };
                    let now = std::time::Instant::now();
                    match throttle.pass(&cluster.to_string(), now) {
                        super::refs::Pass::Now => Some(cluster),
                        super::refs::Pass::Later(after) => {
                            let later = later.clone();
                            tokio::spawn(async move {
                                tokio::time::sleep(after).await;
                                let _ = later.unbounded_send(cluster);
                            });
                            None
                        }
                        super::refs::Pass::Drop => None,
                    }
                },
            )
            .reconcile_on(trailing)
    }

    async fn apply(&self, ctx: &Context) -> Result<Outcome<EcsClusterStatus>, Error> {
        let me = Claimant::of(self, self.spec.adopt_existing)?;
        let ns = self.namespace().unwrap_or_default();
        let ecs_name = self.ecs_name();
        let previous = self.status.clone().unwrap_or_default();
        let observed = describe_one(&ctx.ecs, &ecs_name).await?;
        let spec = match with_providers_resolved(ctx, &ns, &self.spec).await? {
            Ok(spec) => spec,
            Err(waiting) => {
                let status = status_of(&ecs_name, observed.as_ref(), previous.managed_tag_keys);
                return Ok(Outcome::new(status, waiting));
            }
        };
        let living =
            owned::living_for::<Self>(ctx, observed.as_ref().map(|o| &o.tags), &me.uid).await?;
        let mut tags = self.spec.tags.clone();
        tags.extend(ownership_tags(&ns, &self.name_any(), &me.uid));
        let desired = Desired {
            name: ecs_name.clone(),
            me: &me,
            spec: &spec,
            tags,
            managed_tag_keys: &previous.managed_tag_keys,
            living: living.as_ref(),
        };
        let managed_keys: Vec<String> = self.spec.tags.keys().cloned().collect();
        let (actions, changed, adopt) = match cluster_plan::plan(&desired, observed.as_ref()) {
            Plan::Refuse(health) => {
                // Report nothing about a cluster that is not ours beyond its name.
                let status = status_of(&ecs_name, None, previous.managed_tag_keys.clone());
                let note = owned::not_owned_note(&health, "Adopt");
                return Ok(Outcome::new(status, health).note(note));
            }
            Plan::Sync {
                actions,
                changed,
                adopt,
            } => (actions, changed, adopt),
        };
        let what = format!("ECS cluster {ecs_name}");
        let key = key_of(self);
        let checked = ctx
            .updates
            .check_actions(&key, &actions, &what, &changed, "UpdateCluster");
        if let Err(stopped) = checked {
            let (health, note) = *stopped;
            let status = status_of(&ecs_name, observed.as_ref(), managed_keys);
            return Ok(Outcome::new(status, health).note(note));
        }
        if actions.is_empty() {
            let obs = observed.as_ref();
            let status =
                with_instances(&ctx.ecs, status_of(&ecs_name, obs, managed_keys), obs).await?;
            let poll = cluster_plan::counts_poll(&previous, &status);
            return Ok(Outcome::new(status, health_of(&ecs_name, obs)).requeue_opt(poll));
        }
        let arn = observed.as_ref().map(|o| o.arn.clone());
        for action in &actions {
            if let Err(e) = act(&ctx.ecs, &ecs_name, arn.as_deref(), action).await {
                return Err(name_the_users(&ctx.ecs, observed.as_ref(), action, e).await);
            }
        }
        let drift = previous.observed_generation == self.metadata.generation;
        let notes = change_notes(&ecs_name, &actions, &changed, adopt, drift);
        let after = describe_one(&ctx.ecs, &ecs_name).await?;
        let status = status_of(&ecs_name, after.as_ref(), managed_keys);
        let status = with_instances(&ctx.ecs, status, after.as_ref()).await?;
        Ok(Outcome::new(status, health_of(&ecs_name, after.as_ref())).notes(notes))
    }

    async fn cleanup(&self, ctx: &Context) -> Result<Vec<Note>, Error> {
        let uid = self.uid().unwrap_or_default();
        let ecs_name = self.ecs_name();
        let observed = describe_one(&ctx.ecs, &ecs_name).await?;
        let policy = self.spec.deletion_policy;
        match cluster_plan::plan_cleanup(&ecs_name, &uid, policy, observed.as_ref()) {
            Cleanup::Done(why) => Ok(vec![Note::normal(
                Reason::Released,
                "Delete",
                format!("ECS cluster {ecs_name} left untouched ({})", why.describe()),
            )]),
            Cleanup::Untag(keys) => {
                let arn = observed.as_ref().map(|o| o.arn.as_str());
                act(&ctx.ecs, &ecs_name, arn, &Action::Untag(keys)).await?;
                Ok(vec![Note::normal(
                    Reason::Orphaned,
                    "UntagResource",
                    format!(
                        "ECS cluster {ecs_name} kept (deletionPolicy: Orphan); ownership tags removed"
                    ),
                )])
            }
            Cleanup::Blocked { reason, message } => {
                // Name what blocks the deletion, so nobody has to go looking.
                let message = blocking_services(&ctx.ecs, &ecs_name, message).await;
                Err(Error::DeleteBlocked { reason, message })
            }
            Cleanup::Delete => match delete(&ctx.ecs, &ecs_name).await {
                Err(Error::DeleteBlocked {
                    reason: Reason::InstancesRemain,
                    message,
                }) => {
                    let ns = self.namespace().unwrap_or_default();
                    let advice = instances_advice(ctx, &ns, observed.as_ref());
                    Err(Error::DeleteBlocked {
                        reason: Reason::InstancesRemain,
                        message: format!("{message} {advice}"),
                    })
                }
                other => other,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changed_fields_are_grouped_per_ecs_action() {
        let changed: Vec<String> = [
            "settings.containerInsights",
            "tags[env]",
            "capacityProviders",
            "tags[team]",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(
            group_by_action(&changed),
            vec![
                (
                    "UpdateCluster",
                    vec!["settings.containerInsights".to_string()]
                ),
                (
                    "TagResource",
                    vec!["tags[env]".to_string(), "tags[team]".to_string()]
                ),
                (
                    "PutClusterCapacityProviders",
                    vec!["capacityProviders".to_string()]
                ),
            ]
        );
    }
}
