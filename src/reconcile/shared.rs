//! One watch per referenced kind (EcsCluster, EcsTaskDefinition), shared by every
//! kind that references it: a reflector store to resolve references from (no GET
//! per reconcile) and a fan-out of the changes that matter to each referring
//! controller (no watch per referrer).

use std::sync::{Arc, Mutex};

use futures::channel::mpsc;
use futures::{StreamExt, TryStreamExt};
use kube::api::Api;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{PredicateConfig, WatchStreamExt, watcher};
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
        let changes = watcher(api, watcher::Config::default().any_semantic())
            .default_backoff()
            .modify(|obj| obj.managed_fields_mut().clear())
            .reflect(writer)
            .inspect_ok(move |event| {
                if matches!(event, watcher::Event::InitDone) {
                    listed.send_replace(true);
                }
            })
            .applied_objects()
            .predicate_filter(move |o: &K| Some(key(o)), PredicateConfig::default());
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

    /// The changes that matter (see `key`) from now on.
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
