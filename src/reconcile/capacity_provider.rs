//! `EcsCapacityProvider`: the I/O around the pure plan in `capacity_provider_plan`.

use std::time::Duration;

use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;

use super::capacity_provider_plan::{self, Action, Cleanup, Deletion, Desired, Plan};
use super::owned::{self, Adoption, Claimant};
use super::{Context, Managed, Note, Outcome, key_of};
use crate::api::capacity_provider::{EcsCapacityProvider, EcsCapacityProviderStatus};
use crate::api::cluster::EcsCluster;
use crate::api::common::{Health, Reason, ownership_tags};
use crate::ecs::capacity_provider::{
    ObservedGroup, ObservedProvider, create, delete, describe_group, describe_one,
    group_name_of_arn, update,
};
use crate::ecs::set_tags;
use crate::error::Error;

/// How soon a provider waiting for its Auto Scaling group looks again.
const GROUP_POLL: Duration = Duration::from_secs(30);

fn status_of(
    name: &str,
    obs: Option<&ObservedProvider>,
    group: Option<&ObservedGroup>,
    clusters: Vec<String>,
    managed_tag_keys: Vec<String>,
) -> EcsCapacityProviderStatus {
    EcsCapacityProviderStatus {
        name: Some(name.to_string()),
        arn: obs.map(|o| o.arn.clone()),
        status: obs.map(|o| o.status.as_str().to_string()),
        update_status: obs
            .map(|o| o.update_status.as_str().to_string())
            .filter(|s| !s.is_empty()),
        update_status_reason: obs.and_then(|o| o.update_status_reason.clone()),
        auto_scaling_group_arn: obs
            .map(|o| o.auto_scaling_group_arn.clone())
            .or_else(|| group.map(|g| g.arn.clone())),
        managed_scaling: obs
            .and_then(|o| o.managed_scaling.status)
            .map(|s| s.as_str().to_string()),
        desired_capacity: group.map(|g| g.desired_capacity),
        in_service_instances: group.map(|g| g.in_service),
        clusters,
        managed_tag_keys,
        ..Default::default()
    }
}

/// True if `cluster` lists the provider: by its ECS name `name` in capacityProviders
/// or as ECS reports it, or by its metadata.name `resource` in capacityProviderRefs.
fn lists(cluster: &EcsCluster, name: &str, resource: &str) -> bool {
    let in_spec = cluster
        .spec
        .capacity_providers
        .iter()
        .flatten()
        .any(|p| p == name);
    let by_ref = cluster
        .spec
        .capacity_provider_refs
        .iter()
        .any(|r| r.name == resource);
    let in_ecs = cluster
        .status
        .iter()
        .flat_map(|s| &s.capacity_providers)
        .any(|p| p == name);
    in_spec || by_ref || in_ecs
}

/// The EcsClusters of the provider's namespace that list it: who blocks its deletion.
fn clusters_listing(ctx: &Context, provider: &EcsCapacityProvider) -> Vec<String> {
    let (name, resource) = (provider.ecs_name(), provider.name_any());
    let ns = provider.namespace().unwrap_or_default();
    let mut names: Vec<String> = ctx
        .clusters
        .all_in(&ns)
        .iter()
        .filter(|c| lists(c, &name, &resource))
        .map(|c| c.name_any())
        .collect();
    names.sort_unstable();
    names
}

/// The group's ARN and what it reports: from spec.autoScalingGroupArn (the group is
/// read for its counts only), or by spec.autoScalingGroupName (None: no such group).
async fn resolve_group(
    ctx: &Context,
    spec_arn: Option<&str>,
    spec_name: Option<&str>,
) -> Result<(Option<String>, Option<ObservedGroup>), Error> {
    let name = spec_name.or_else(|| spec_arn.and_then(group_name_of_arn));
    let group = match name {
        Some(name) => describe_group(&ctx.ecs, name).await?,
        None => None,
    };
    let group = group.filter(|g| spec_arn.is_none_or(|arn| g.arn == arn));
    let arn = spec_arn
        .map(str::to_string)
        .or_else(|| group.as_ref().map(|g| g.arn.clone()));
    Ok((arn, group))
}

async fn act(
    ecs: &crate::ecs::EcsApi,
    name: &str,
    arn: &str,
    action: &Action,
) -> Result<(), Error> {
    match action {
        Action::Create(new) => create(ecs, new).await,
        Action::Update(change) => update(ecs, name, change).await,
        Action::Tag(tags) => set_tags(ecs, arn, tags, &[]).await,
        Action::Untag(keys) => set_tags(ecs, arn, &Default::default(), keys).await,
    }
}

/// Makes the planned writes and reads the provider back (nothing to write: what
/// was observed).
async fn write(
    ecs: &crate::ecs::EcsApi,
    name: &str,
    observed: Option<ObservedProvider>,
    actions: &[Action],
) -> Result<Option<ObservedProvider>, Error> {
    if actions.is_empty() {
        return Ok(observed);
    }
    let arn = observed.map(|o| o.arn).unwrap_or_default();
    for action in actions {
        act(ecs, name, &arn, action).await?;
    }
    describe_one(ecs, name).await
}

/// The Events for the writes a pass made.
fn change_notes(
    name: &str,
    actions: &[Action],
    changed: &[String],
    adopt: Option<Adoption>,
    drift: bool,
) -> Vec<Note> {
    let what = format!("ECS capacity provider {name}");
    if matches!(actions.first(), Some(Action::Create(_))) {
        let message = format!("created {what}");
        return vec![Note::normal(
            Reason::Created,
            "CreateCapacityProvider",
            message,
        )];
    }
    if let Some(how) = adopt {
        let kind = EcsCapacityProvider::KIND;
        return vec![owned::adopted_changes_note(&what, how, kind, changed)];
    }
    let (reason, verb) = owned::update_wording(drift);
    let action = match actions.first() {
        Some(Action::Update(_)) => "UpdateCapacityProvider",
        _ => "TagResource",
    };
    let message = format!("{what} {verb}: {}", changed.join(", "));
    vec![Note::normal(reason, action, message)]
}

/// The Auto Scaling group's ARN and what it reports; Err: the outcome to report
/// instead while the ECS name is reserved or no group has the spec's name.
async fn group_or_wait(
    ctx: &Context,
    provider: &EcsCapacityProvider,
    name: &str,
    clusters: &[String],
) -> Result<Result<(String, Option<ObservedGroup>), Outcome<EcsCapacityProviderStatus>>, Error> {
    let keys = provider
        .status
        .as_ref()
        .map(|s| s.managed_tag_keys.clone())
        .unwrap_or_default();
    let status = status_of(name, None, None, clusters.to_vec(), keys);
    if capacity_provider_plan::reserved_name(name) {
        let message = format!(
            "the ECS name {name} (metadata.name) starts with a prefix ECS reserves (aws, ecs, \
             fargate): set spec.name to another name"
        );
        let health = Health::stalled(Reason::InvalidSpec, message);
        return Ok(Err(Outcome::new(status, health)));
    }
    let spec = &provider.spec;
    let (arn, group) = resolve_group(
        ctx,
        spec.auto_scaling_group_arn.as_deref(),
        spec.auto_scaling_group_name.as_deref(),
    )
    .await?;
    match arn {
        Some(arn) => Ok(Ok((arn, group))),
        None => {
            let group_name = spec.auto_scaling_group_name.as_deref().unwrap_or_default();
            let message = format!(
                "no EC2 Auto Scaling group named {group_name} in this region; waiting for it"
            );
            let health = Health::progressing(Reason::WaitingForReference, message);
            Ok(Err(Outcome::new(status, health).requeue(GROUP_POLL)))
        }
    }
}

impl Managed for EcsCapacityProvider {
    const KIND: &'static str = "EcsCapacityProvider";

    /// A cluster that starts or stops listing a provider changes the provider's
    /// status (its users) and unblocks its deletion: look again then.
    fn watch_related(
        controller: kube::runtime::Controller<Self>,
        ctx: &std::sync::Arc<Context>,
        _namespace: Option<&str>,
    ) -> kube::runtime::Controller<Self> {
        let store = controller.store();
        controller.watches_shared_stream(ctx.clusters.subscribe(), move |cluster| {
            let ns = cluster.namespace();
            let cluster_name = cluster.name_any();
            store
                .state()
                .iter()
                .filter(|p| p.namespace() == ns)
                .filter(|p| {
                    let was_user = p.status.iter().any(|s| s.clusters.contains(&cluster_name));
                    was_user || lists(&cluster, &p.ecs_name(), &p.name_any())
                })
                .map(|p| ObjectRef::from(p.as_ref()))
                .collect::<Vec<_>>()
        })
    }

    async fn apply(&self, ctx: &Context) -> Result<Outcome<EcsCapacityProviderStatus>, Error> {
        let me = Claimant::of(self, self.spec.adopt_existing)?;
        let ns = self.namespace().unwrap_or_default();
        let name = self.ecs_name();
        let previous = self.status.clone().unwrap_or_default();
        let clusters = clusters_listing(ctx, self);
        let (group_arn, group) = match group_or_wait(ctx, self, &name, &clusters).await? {
            Ok(found) => found,
            Err(waiting) => return Ok(waiting),
        };
        let spec = &self.spec;
        let observed = describe_one(&ctx.ecs, &name).await?;
        let living =
            owned::living_for::<Self>(ctx, observed.as_ref().map(|o| &o.tags), &me.uid).await?;
        let mut tags = spec.tags.clone();
        tags.extend(ownership_tags(&ns, &self.name_any(), &me.uid));
        let desired = Desired {
            name: name.clone(),
            me: &me,
            spec,
            group_arn,
            tags,
            managed_tag_keys: &previous.managed_tag_keys,
            living: living.as_ref(),
        };
        let managed_keys: Vec<String> = spec.tags.keys().cloned().collect();
        let report = |obs: Option<&ObservedProvider>, keys: Vec<String>| {
            status_of(&name, obs, group.as_ref(), clusters.clone(), keys)
        };
        let (actions, changed, adopt) =
            match capacity_provider_plan::plan(&desired, observed.as_ref()) {
                Plan::Refuse(health) => {
                    // Report nothing about a provider that is not ours beyond its name.
                    let status = report(None, previous.managed_tag_keys.clone());
                    let note = owned::not_owned_note(&health, "Adopt");
                    return Ok(Outcome::new(status, health).note(note));
                }
                Plan::Sync {
                    actions,
                    changed,
                    adopt,
                } => (actions, changed, adopt),
            };
        let what = format!("ECS capacity provider {name}");
        let key = key_of(self);
        let checked =
            ctx.updates
                .check_actions(&key, &actions, &what, &changed, "UpdateCapacityProvider");
        if let Err(stopped) = checked {
            let (health, note) = *stopped;
            let status = report(observed.as_ref(), managed_keys);
            return Ok(Outcome::new(status, health).note(note));
        }
        let after = write(&ctx.ecs, &name, observed, &actions).await?;
        let drift = previous.observed_generation == self.metadata.generation;
        let notes = if actions.is_empty() {
            vec![]
        } else {
            change_notes(&name, &actions, &changed, adopt, drift)
        };
        let health = after
            .as_ref()
            .map(capacity_provider_plan::health)
            .unwrap_or_else(|| Health::progressing(Reason::Creating, format!("creating {what}")));
        let status = report(after.as_ref(), managed_keys);
        Ok(Outcome::new(status, health).notes(notes))
    }

    async fn cleanup(&self, ctx: &Context) -> Result<Vec<Note>, Error> {
        let uid = self.uid().unwrap_or_default();
        let name = self.ecs_name();
        let what = format!("ECS capacity provider {name}");
        let observed = describe_one(&ctx.ecs, &name).await?;
        match capacity_provider_plan::plan_cleanup(
            &uid,
            self.spec.deletion_policy,
            observed.as_ref(),
        ) {
            Cleanup::Done(why) => Ok(vec![Note::normal(
                Reason::Released,
                "Delete",
                format!("{what} left untouched ({})", why.describe()),
            )]),
            Cleanup::Untag(keys) => {
                let arn = observed
                    .as_ref()
                    .map(|o| o.arn.as_str())
                    .unwrap_or_default();
                set_tags(&ctx.ecs, arn, &Default::default(), &keys).await?;
                Ok(vec![Note::normal(
                    Reason::Orphaned,
                    "UntagResource",
                    format!("{what} kept (deletionPolicy: Orphan); ownership tags removed"),
                )])
            }
            Cleanup::Delete => {
                let answer = delete(&ctx.ecs, &name).await?;
                let users = clusters_listing(ctx, self);
                match capacity_provider_plan::deletion(&name, answer.as_ref(), &users) {
                    Deletion::Done => Ok(vec![Note::normal(
                        Reason::Deleted,
                        "DeleteCapacityProvider",
                        format!("deleted {what}"),
                    )]),
                    Deletion::InProgress(message) => Err(Error::DeleteInProgress {
                        reason: Reason::Deleting,
                        message,
                    }),
                    Deletion::Blocked { reason, message } => {
                        Err(Error::DeleteBlocked { reason, message })
                    }
                }
            }
        }
    }
}
