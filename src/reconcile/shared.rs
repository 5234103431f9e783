//! One watch per referenced kind (EcsCluster, EcsTaskDefinition), shared by every
//! kind that references it: a reflector store to resolve references from (no GET
//! per reconcile) and a fan-out of the changes that matter to each referring
//! controller (no watch per referrer).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::channel::mpsc;
use futures::{StreamExt, TryStreamExt};
use kube::api::Api;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tracing::debug;

use super::scoped_api;
use crate::error::Error;

/// A watched kind: its store, and the subscribers its changes go to.
pub struct Shared<K: Resource<DynamicType = ()> + Clone + 'static> {
    store: Store<K>,
    /// Taken by `start`; until then objects are read with a GET (unit tests).
    writer: Mutex<Option<reflector::store::Writer<K>>>,
    subscribers: Arc<Mutex<Vec<mpsc::UnboundedSender<Arc<K>>>>>,
    /// What subscribers act on: only changes of this key are passed on.
    key: fn(&K) -> u64,
    /// Set by `start`: true once the first list is in the store. (Not the store's own
    /// `wait_until_ready`: its one-waker channel wakes only the last of many waiters.)
    listed: std::sync::OnceLock<tokio::sync::watch::Receiver<bool>>,
}

/// Which watch events subscribers hear: an object whose `key` changed (or that is new),
/// and every deletion (a referrer must notice that what it waited for, or what held
/// it up, is gone).
#[derive(Default)]
struct Changed {
    /// uid -> the key last passed on.
    keys: HashMap<String, u64>,
}

impl Changed {
    fn pass<K: Resource>(&mut self, event: watcher::Event<K>, key: fn(&K) -> u64) -> Option<K> {
        match event {
            watcher::Event::Apply(obj) | watcher::Event::InitApply(obj) => {
                let uid = obj.meta().uid.clone().unwrap_or_default();
                let now = key(&obj);
                (self.keys.insert(uid, now) != Some(now)).then_some(obj)
            }
            watcher::Event::Delete(obj) => {
                self.keys
                    .remove(obj.meta().uid.as_deref().unwrap_or_default());
                Some(obj)
            }
            watcher::Event::Init | watcher::Event::InitDone => None,
        }
    }
}

impl<K> Shared<K>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    pub fn new(key: fn(&K) -> u64) -> Self {
        let (store, writer) = reflector::store();
        Shared {
            store,
            writer: Mutex::new(Some(writer)),
            subscribers: Default::default(),
            key,
            listed: Default::default(),
        }
    }

    /// Starts the one watch (scoped like the controllers); changes of `key` go to
    /// every subscriber.
    pub fn start(&self, client: &Client, namespace: Option<&str>) {
        let Some(writer) = self.writer.lock().unwrap_or_else(|e| e.into_inner()).take() else {
            return;
        };
        let api: Api<K> = scoped_api(client, namespace);
        let subscribers = self.subscribers.clone();
        let key = self.key;
        let (listed, listed_rx) = tokio::sync::watch::channel(false);
        let _ = self.listed.set(listed_rx);
        let mut changed = Changed::default();
        let changes = watcher(api, watcher::Config::default().any_semantic())
            .default_backoff()
            .modify(|obj| obj.managed_fields_mut().clear())
            .reflect(writer)
            .inspect_ok(move |event| {
                if matches!(event, watcher::Event::InitDone) {
                    listed.send_replace(true);
                }
            })
            .try_filter_map(move |event| futures::future::ready(Ok(changed.pass(event, key))));
        tokio::spawn(changes.for_each(move |change| {
            let subscribers = subscribers.clone();
            async move {
                match change {
                    Ok(obj) => {
                        let obj = Arc::new(obj);
                        let mut all = subscribers.lock().unwrap_or_else(|e| e.into_inner());
                        all.retain(|s| s.unbounded_send(obj.clone()).is_ok());
                    }
                    Err(e) => debug!(error = %e, "shared watch"),
                }
            }
        }));
    }

    /// The changes that matter (see `key`) from now on, deletions included.
    pub fn subscribe(&self) -> mpsc::UnboundedReceiver<Arc<K>> {
        let (tx, rx) = mpsc::unbounded();
        self.subscribers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(tx);
        rx
    }

    /// The object `name` in `ns` as the store has it now (None before `start`).
    pub fn cached(&self, ns: &str, name: &str) -> Option<Arc<K>> {
        self.store.get(&ObjectRef::new(name).within(ns))
    }

    /// Every object of `ns` the store has now (none before `start`).
    pub fn all_in(&self, ns: &str) -> Vec<Arc<K>> {
        self.store
            .state()
            .into_iter()
            .filter(|o| o.namespace().as_deref() == Some(ns))
            .collect()
    }

    /// The object `name` in `ns`: from the store once it has listed everything.
    pub async fn get(
        &self,
        client: &Client,
        ns: &str,
        name: &str,
    ) -> Result<Option<Arc<K>>, Error> {
        let Some(listed) = self.listed.get() else {
            let api: Api<K> = Api::namespaced(client.clone(), ns);
            return Ok(api.get_opt(name).await?.map(Arc::new));
        };
        listed
            .clone()
            .wait_for(|listed| *listed)
            .await
            .map_err(|_| Error::Internal("the shared watch stopped".into()))?;
        Ok(self.cached(ns, name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::cluster::{EcsCluster, EcsClusterStatus};

    fn cluster(uid: &str, arn: &str, running: i32) -> EcsCluster {
        let mut c = EcsCluster::new("prod", Default::default());
        c.metadata.uid = Some(uid.into());
        c.status = Some(EcsClusterStatus {
            arn: Some(arn.into()),
            running_tasks_count: Some(running),
            ..Default::default()
        });
        c
    }

    #[test]
    fn only_key_changes_and_deletions_pass() {
        let key = crate::reconcile::refs::what_referrers_read_of_cluster;
        let mut changed = Changed::default();
        let pass = |changed: &mut Changed, event| changed.pass(event, key).is_some();
        assert!(pass(
            &mut changed,
            watcher::Event::InitApply(cluster("u", "a", 0))
        ));
        // A count referrers do not read: nobody hears of it.
        assert!(!pass(
            &mut changed,
            watcher::Event::Apply(cluster("u", "a", 5))
        ));
        assert!(pass(
            &mut changed,
            watcher::Event::Apply(cluster("u", "b", 5))
        ));
        // A relist of what is known passes nothing; a deletion always passes.
        assert!(!pass(
            &mut changed,
            watcher::Event::InitApply(cluster("u", "b", 5))
        ));
        assert!(pass(
            &mut changed,
            watcher::Event::Delete(cluster("u", "b", 5))
        ));
        assert!(!pass(&mut changed, watcher::Event::InitDone));
        // Re-created under the same name: a new object.
        assert!(pass(
            &mut changed,
            watcher::Event::Apply(cluster("u2", "b", 5))
        ));
    }
}
