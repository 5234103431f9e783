//! References between kinds (`clusterRef`, `taskDefinitionRef`, same namespace):
//! resolving them to what ECS needs, and waking the referencing objects when the
//! referenced ones change.

use kube::ResourceExt;
use kube::api::Api;
use std::time::{Duration, Instant};

use kube::runtime::controller::Controller;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{PredicateConfig, WatchStreamExt, watcher};

use super::{Context, Managed};
use crate::api::capacity_provider::EcsCapacityProvider;
use crate::api::cluster::EcsCluster;
use crate::api::common::{LocalRef, Placement, READY, is_condition_true};
use crate::api::task_definition::EcsTaskDefinition;
use crate::error::Error;

/// A kind whose spec may reference an EcsCluster and an EcsTaskDefinition (through
/// the shared `Placement`).
pub trait References {
    fn placement(&self) -> &Placement;
    /// Whether a change of a referenced object matters now (e.g. a run that has
    /// already resolved its references does not care any more).
    fn follows_references(&self) -> bool {
        true
    }
}

/// Objects in `store` (namespace `ns`) whose reference picked by `by_cluster` names `name`.
fn referencing<K: Managed + References>(
    store: &Store<K>,
    ns: Option<String>,
    name: &str,
    by_cluster: bool,
) -> Vec<ObjectRef<K>> {
    store
        .state()
        .iter()
        .filter(|o| o.namespace() == ns && o.follows_references())
        .filter(|o| {
            let placement = o.placement();
            let r = if by_cluster {
                placement.cluster_ref.as_ref()
            } else {
                placement.task_definition_ref.as_ref()
            };
            r.is_some_and(|r| r.name == name)
        })
        .map(|o| ObjectRef::from(o.as_ref()))
        .collect()
}

/// Reconciles the objects of kind `K` that reference a changed EcsTaskDefinition or
/// EcsCluster (from the shared watches in `Context`).
pub fn watch_references<K: Managed + References>(
    controller: Controller<K>,
    ctx: &Context,
) -> Controller<K> {
    let store = controller.store();
    let store2 = store.clone();
    controller
        .watches_shared_stream(ctx.task_definitions.subscribe(), move |td| {
            referencing(&store, td.namespace(), &td.name_any(), false)
        })
        .watches_shared_stream(ctx.clusters.subscribe(), move |c| {
            referencing(&store2, c.namespace(), &c.name_any(), true)
        })
}

/// The objects of `api` that changed in what `key` picks: an object's other changes
/// (status counts, Events of a rollout, transition times) wake nobody. Without this every
/// status write of an EcsCluster woke every service in it (N x N reconciles).
pub fn changes<K>(
    api: Api<K>,
    key: fn(&K) -> u64,
) -> impl futures::Stream<Item = Result<K, watcher::Error>> + Send + 'static
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    watcher(api, watcher::Config::default().any_semantic())
        .default_backoff()
        .applied_objects()
        .predicate_filter(move |o: &K| Some(key(o)), PredicateConfig::default())
}

/// Lets the wakes of one object by a crowd of related ones through at most once per
/// `every`: the first at once, and one more at the end of the window for everything
/// that came during it (so the last change is never lost).
pub struct Throttle {
    every: Duration,
    /// key -> (when the last pass was or the trailing one will be, trailing pending).
    state: std::sync::Mutex<std::collections::HashMap<String, (Instant, bool)>>,
}

/// What to do with one wake.
#[derive(Debug, PartialEq, Eq)]
pub enum Pass {
    Now,
    /// Once, after this long (the end of the window).
    Later(Duration),
    /// A trailing pass is already due.
    Drop,
}

impl Throttle {
    pub fn new(every: Duration) -> Self {
        Throttle {
            every,
            state: Default::default(),
        }
    }

    pub fn pass(&self, key: &str, now: Instant) -> Pass {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match state.get(key).copied() {
            Some((last, trailing)) if now < last + self.every => {
                if trailing && now < last {
                    return Pass::Drop;
                }
                let at = last + self.every;
                state.insert(key.to_string(), (at, true));
                Pass::Later(at - now)
            }
            _ => {
                state.insert(key.to_string(), (now, false));
                Pass::Now
            }
        }
    }
}

/// A hash of what a key function picks.
pub fn fingerprint(value: impl std::hash::Hash) -> u64 {
    use std::hash::Hasher;
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    value.hash(&mut hasher);
    hasher.finish()
}

/// What resolving a clusterRef reads (see `resolve_cluster`): the ECS name and ARN;
/// and the capacity providers the cluster lists, which EcsCapacityProviders follow.
pub fn what_referrers_read_of_cluster(cluster: &EcsCluster) -> u64 {
    let status = cluster.status.as_ref();
    fingerprint((
        status.and_then(|s| s.cluster_name.as_ref()),
        status.and_then(|s| s.arn.as_ref()),
        // EcsCapacityProviders follow the clusters that list them.
        &cluster.spec.capacity_providers,
        cluster
            .spec
            .capacity_provider_refs
            .iter()
            .map(|r| &r.name)
            .collect::<Vec<_>>(),
        status.map(|s| &s.capacity_providers),
    ))
}

/// What resolving a capacityProviderRef reads (see `cluster::with_providers_resolved`): the
/// provider's ECS name and whether it is Ready for its current spec.
pub fn what_referrers_read_of_provider(provider: &EcsCapacityProvider) -> u64 {
    fingerprint(provider_if_ready(provider))
}

/// The ECS name of a provider that is Ready for its current spec.
pub fn provider_if_ready(provider: &EcsCapacityProvider) -> Option<&str> {
    let status = provider.status.as_ref()?;
    let ready = is_condition_true(&status.conditions, READY)
        && status.observed_generation == provider.metadata.generation;
    ready.then_some(status.name.as_deref()).flatten()
}

/// What resolving a taskDefinitionRef reads (see `resolve_task_definition`): the latest
/// ARN, whether it is Ready, and whether its status is for the current spec.
pub fn what_referrers_read_of_td(td: &EcsTaskDefinition) -> u64 {
    let status = td.status.as_ref();
    fingerprint((
        status.and_then(|s| s.latest_arn.as_ref()),
        status.is_some_and(|s| is_condition_true(&s.conditions, READY)),
        status.and_then(|s| s.observed_generation) == td.metadata.generation,
    ))
}

/// A reference resolved to what ECS needs, or why not yet.
pub enum Resolved {
    Found(String),
    Waiting(String),
}

/// `cluster` as given, or the ECS name of the Ready EcsCluster `cluster_ref` names.
pub async fn resolve_cluster(
    ctx: &Context,
    ns: &str,
    cluster: Option<&String>,
    cluster_ref: Option<&LocalRef>,
) -> Result<Resolved, Error> {
    if let Some(c) = cluster {
        return Ok(Resolved::Found(c.clone()));
    }
    let Some(r) = cluster_ref else {
        return Err(Error::InvalidSpec(
            "neither cluster nor clusterRef is set".into(),
        ));
    };
    let Some(cl) = ctx.clusters.get(&ctx.kube, ns, &r.name).await? else {
        return Ok(Resolved::Waiting(format!(
            "EcsCluster {} does not exist in namespace {ns}",
            r.name
        )));
    };
    let status = cl.status.clone().unwrap_or_default();
    // The ECS cluster existing is what matters; a transient problem on the EcsCluster
    // (e.g. a tag update failing) must not take its services down with it.
    match (&status.cluster_name, &status.arn) {
        (Some(name), Some(_)) => Ok(Resolved::Found(name.clone())),
        _ => Ok(Resolved::Waiting(format!(
            "EcsCluster {} has no ECS cluster yet{}",
            r.name,
            ready_message(&status.conditions)
        ))),
    }
}

/// `task_definition` as given, or the latest revision of the Ready EcsTaskDefinition
/// `task_definition_ref` names.
pub async fn resolve_task_definition(
    ctx: &Context,
    ns: &str,
    task_definition: Option<&String>,
    task_definition_ref: Option<&LocalRef>,
) -> Result<Resolved, Error> {
    if let Some(td) = task_definition {
        return Ok(Resolved::Found(td.clone()));
    }
    let Some(r) = task_definition_ref else {
        return Err(Error::InvalidSpec(
            "neither taskDefinition nor taskDefinitionRef is set".into(),
        ));
    };
    let Some(td) = ctx.task_definitions.get(&ctx.kube, ns, &r.name).await? else {
        return Ok(Resolved::Waiting(format!(
            "EcsTaskDefinition {} does not exist in namespace {ns}",
            r.name
        )));
    };
    let status = td.status.clone().unwrap_or_default();
    // A spec change not yet registered: rolling out the previous revision now would
    // only cost an extra deployment.
    if status.observed_generation != td.metadata.generation {
        return Ok(Resolved::Waiting(format!(
            "EcsTaskDefinition {} is registering its latest spec",
            r.name
        )));
    }
    match (
        &status.latest_arn,
        is_condition_true(&status.conditions, READY),
    ) {
        (Some(arn), true) => Ok(Resolved::Found(arn.clone())),
        _ => Ok(Resolved::Waiting(format!(
            "EcsTaskDefinition {} is not Ready yet{}",
            r.name,
            ready_message(&status.conditions)
        ))),
    }
}

fn ready_message(conditions: &[crate::api::common::Condition]) -> String {
    conditions
        .iter()
        .find(|c| c.type_ == READY && !c.message.is_empty())
        .map(|c| format!(" ({}: {})", c.reason, c.message))
        .unwrap_or_default()
}

/// The cluster `obj` names (`cluster`, or the EcsCluster of `clusterRef` in `ns`).
pub async fn cluster_of<K: References>(
    obj: &K,
    ctx: &Context,
    ns: &str,
) -> Result<Resolved, Error> {
    let placement = obj.placement();
    let (name, reference) = (placement.cluster.as_ref(), placement.cluster_ref.as_ref());
    resolve_cluster(ctx, ns, name, reference).await
}

/// The task definition `obj` names (`taskDefinition`, or the latest revision of the
/// EcsTaskDefinition of `taskDefinitionRef` in `ns`).
pub async fn task_definition_of<K: References>(
    obj: &K,
    ctx: &Context,
    ns: &str,
) -> Result<Resolved, Error> {
    let placement = obj.placement();
    let name = placement.task_definition.as_ref();
    resolve_task_definition(ctx, ns, name, placement.task_definition_ref.as_ref()).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_throttle_passes_the_first_at_once_and_the_rest_once_at_the_window_end() {
        let throttle = Throttle::new(Duration::from_secs(10));
        let t0 = Instant::now();
        let at = |secs: u64| t0 + Duration::from_secs(secs);
        assert_eq!(throttle.pass("ns/a", at(0)), Pass::Now);
        // During the window: one trailing pass at its end, the rest dropped.
        assert_eq!(
            throttle.pass("ns/a", at(3)),
            Pass::Later(Duration::from_secs(7))
        );
        assert_eq!(throttle.pass("ns/a", at(5)), Pass::Drop);
        // Another object has its own window.
        assert_eq!(throttle.pass("ns/b", at(5)), Pass::Now);
        // After the trailing pass (at 10), a new change waits for the end of its window.
        assert_eq!(
            throttle.pass("ns/a", at(12)),
            Pass::Later(Duration::from_secs(8))
        );
        // Quiet for a whole window: at once again.
        assert_eq!(throttle.pass("ns/a", at(31)), Pass::Now);
    }
}
