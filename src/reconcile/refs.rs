//! References between kinds (`clusterRef`, `taskDefinitionRef`, same namespace):
//! resolving them to what ECS needs, and waking the referencing objects when the
//! referenced ones change.

use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::Controller;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{PredicateConfig, WatchStreamExt, watcher};

use super::{Context, Managed};
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

/// Lets a key through at most once per `every` (leading edge): the wakes of one
/// object by a crowd of related ones. What it drops, the object's own poll catches.
pub struct Throttle {
    every: std::time::Duration,
    last: std::sync::Mutex<std::collections::HashMap<String, std::time::Instant>>,
}

impl Throttle {
    pub fn new(every: std::time::Duration) -> Self {
        Throttle {
            every,
            last: Default::default(),
        }
    }

    /// Whether `key` may pass now (and if so, the window starts again).
    pub fn allow(&self, key: &str) -> bool {
        let now = std::time::Instant::now();
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        match last.get(key) {
            Some(at) if now.duration_since(*at) < self.every => false,
            _ => {
                last.insert(key.to_string(), now);
                true
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

/// What resolving a clusterRef reads (see `resolve_cluster`): the ECS name and ARN.
pub fn what_referrers_read_of_cluster(cluster: &EcsCluster) -> u64 {
    let status = cluster.status.as_ref();
    fingerprint((
        status.and_then(|s| s.cluster_name.as_ref()),
        status.and_then(|s| s.arn.as_ref()),
    ))
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
    use std::time::Duration;

    #[test]
    fn a_throttle_lets_each_key_through_once_per_window() {
        let throttle = Throttle::new(Duration::from_millis(50));
        assert!(throttle.allow("ns/a"));
        assert!(!throttle.allow("ns/a"));
        // Another object has its own window.
        assert!(throttle.allow("ns/b"));
        std::thread::sleep(Duration::from_millis(60));
        assert!(throttle.allow("ns/a"));
    }
}
