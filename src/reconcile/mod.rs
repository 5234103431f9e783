//! Reconciling: the generic driver (`driver`), what every ECS-backed kind does the
//! same way (`owned`), and one module per kind (I/O in `<kind>`, the pure plan in
//! `<kind>_plan`).

pub mod capacity_provider;
pub mod capacity_provider_plan;
pub mod cluster;
pub mod cluster_plan;
pub mod driver;
pub mod events;
pub mod owned;
pub mod refs;
pub mod schedule_plan;
pub mod scheduled_task;
pub mod service;
pub mod service_plan;
mod service_scaling;
pub mod service_scaling_plan;
pub mod shared;
pub mod task;
pub mod task_definition;
pub mod task_definition_plan;
pub mod task_plan;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::NamespaceResourceScope;
use kube::api::Api;
use kube::{Client, Resource, ResourceExt};

use crate::FIELD_MANAGER;
use crate::api::common::{Reason, Time};
use crate::ecs::EcsApi;
use crate::ecs::service::ServiceObserver;
use crate::error::Error;
use crate::telemetry::Metrics;
pub use driver::{KindCondition, Managed, Outcome, run};
use events::EventWriter;

/// Shared by all reconciles of all kinds.
pub struct Context {
    pub kube: Client,
    pub ecs: EcsApi,
    /// Batched, cached reads of ECS services shared by all EcsService reconciles.
    pub services: ServiceObserver,
    pub events: EventWriter,
    /// The UpdateNotApplied guard shared by every kind.
    pub updates: owned::UpdateGuard,
    pub metrics: Arc<Metrics>,
    /// Periodic re-check of every resource, for drift made outside Kubernetes.
    pub resync: Duration,
    /// The namespace the operator watches (None: all). Reads that must see every
    /// resource the operator manages (e.g. "is this revision in use") use this scope.
    pub namespace: Option<String>,
    /// The label selector of this shard (None: every object). It filters the
    /// objects each controller reconciles, not what references or ownership checks read.
    pub selector: Option<String>,
    /// The EcsService controller's store, for reads that cover many services at once
    /// (set when that controller starts).
    pub service_store:
        std::sync::OnceLock<kube::runtime::reflector::Store<crate::api::service::EcsService>>,
    /// The one watch of EcsClusters and of EcsTaskDefinitions: references resolve
    /// from these stores, and referrers are woken from them.
    pub clusters: shared::Shared<crate::api::cluster::EcsCluster>,
    pub task_definitions: shared::Shared<crate::api::task_definition::EcsTaskDefinition>,
    /// The one watch of EcsCapacityProviders, for EcsCluster.spec.capacityProviderRefs.
    pub capacity_providers: shared::Shared<crate::api::capacity_provider::EcsCapacityProvider>,
    /// Copies of the services' Application Auto Scaling targets (batched reads).
    pub scaling_targets: crate::ecs::scaling::TargetCache,
    failures: Mutex<HashMap<String, u32>>,
    /// The objects to wake when ECS answers again (`driver::recovery_wakes`).
    outage_failures: OutageFailures,
}

impl Context {
    pub fn new(
        kube: Client,
        ecs: EcsApi,
        metrics: Arc<Metrics>,
        resync: Duration,
        namespace: Option<String>,
    ) -> Self {
        let events = EventWriter::new(kube.clone(), FIELD_MANAGER, std::env::var("POD_NAME").ok());
        // A reconcile with nothing under way takes any copy the last resync sweep made
        // (the sweep wakes the services whose copy changed).
        let window = resync + Duration::from_secs(5);
        Context {
            kube,
            ecs,
            services: ServiceObserver::new(window),
            events,
            updates: owned::UpdateGuard::default(),
            metrics,
            resync,
            namespace,
            selector: None,
            service_store: Default::default(),
            clusters: shared::Shared::new(refs::what_referrers_read_of_cluster),
            task_definitions: shared::Shared::new(refs::what_referrers_read_of_td),
            capacity_providers: shared::Shared::new(refs::what_referrers_read_of_provider),
            scaling_targets: Default::default(),
            failures: Mutex::new(HashMap::new()),
            outage_failures: OutageFailures::default(),
        }
    }

    /// Reconcile only the objects `selector` matches (a shard).
    pub fn with_selector(mut self, selector: Option<String>) -> Self {
        self.selector = selector.filter(|s| !s.trim().is_empty());
        self
    }

    /// The watch configuration of a controller's own objects: this shard's.
    pub fn own_objects(&self) -> kube::runtime::watcher::Config {
        let config = kube::runtime::watcher::Config::default().any_semantic();
        match &self.selector {
            Some(selector) => config.labels(selector),
            None => config,
        }
    }

    /// The labels of `labels` this shard's selector tests (see `shard_labels`).
    pub fn shard_labels(&self, labels: &BTreeMap<String, String>) -> BTreeMap<String, String> {
        shard_labels(self.selector.as_deref(), labels)
    }

    /// Starts the shared watches (before the controllers that subscribe to them).
    pub fn start_shared_watches(&self) {
        let namespace = self.namespace.as_deref();
        self.clusters.start(&self.kube, namespace);
        self.task_definitions.start(&self.kube, namespace);
        self.capacity_providers.start(&self.kube, namespace);
    }

    fn record_failure(&self, key: &str) -> u32 {
        let mut f = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let n = f.entry(key.to_string()).or_insert(0);
        *n = n.saturating_add(1);
        *n
    }

    fn clear_failures(&self, key: &str) {
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }
}

/// (namespace, name) by kind of the objects whose last pass failed because ECS did
/// not answer, and whether their wake for the end of the outage was spent: once per
/// run of such failures (with one operation broken and the others answering, a wake
/// per answer would be a hot loop).
#[derive(Default)]
struct OutageFailures(Mutex<HashMap<&'static str, BTreeMap<NamespacedName, bool>>>);

/// (namespace, name).
type NamespacedName = (String, String);

impl OutageFailures {
    /// Notes whether the last pass of `kind` `ns`/`name` failed because ECS did not
    /// answer (any other outcome ends its run of such failures).
    fn note(&self, kind: &'static str, ns: &str, name: &str, failed: bool) {
        let mut all = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let of_kind = all.entry(kind).or_default();
        let id = (ns.to_string(), name.to_string());
        if failed {
            of_kind.entry(id).or_insert(false);
        } else {
            of_kind.remove(&id);
        }
    }

    /// The objects of `kind` that failed because ECS did not answer and were not
    /// woken for it yet; each is woken once until a pass of it ends otherwise.
    fn take(&self, kind: &'static str) -> Vec<NamespacedName> {
        let mut all = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let Some(of_kind) = all.get_mut(kind) else {
            return vec![];
        };
        of_kind
            .iter_mut()
            .filter(|(_, woken)| !**woken)
            .map(|(id, woken)| {
                *woken = true;
                id.clone()
            })
            .collect()
    }
}

/// The labels of `labels` a shard selector tests: copied onto objects the operator
/// creates for an object (a schedule's runs), so they land in its shard. Only those:
/// other labels (e.g. Argo CD's instance label) would make the runs look like part of
/// someone's Git state.
pub fn shard_labels(
    selector: Option<&str>,
    labels: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let keys = selector.map(selector_keys).unwrap_or_default();
    labels
        .iter()
        .filter(|(k, _)| keys.contains(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// The label keys a label selector tests: `a=b, c in (d,e), !f` -> a, c, f.
pub fn selector_keys(selector: &str) -> Vec<String> {
    let mut terms = vec![String::new()];
    let mut depth = 0;
    for ch in selector.chars() {
        match ch {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                terms.push(String::new());
                continue;
            }
            _ => {}
        }
        if let Some(term) = terms.last_mut() {
            term.push(ch);
        }
    }
    terms
        .iter()
        .map(|t| t.trim().trim_start_matches('!'))
        .map(|t| {
            t.split(|c: char| "=!<>(".contains(c) || c.is_whitespace())
                .next()
        })
        .filter_map(|key| key.filter(|k| !k.is_empty()).map(str::to_string))
        .collect()
}

/// Something worth a Kubernetes Event (`kubectl describe`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub warning: bool,
    /// e.g. `Created`, `DriftCorrected`.
    pub reason: Reason,
    /// PascalCase action, e.g. `CreateCluster`.
    pub action: &'static str,
    pub message: String,
}

impl Note {
    pub fn normal(reason: Reason, action: &'static str, message: impl Into<String>) -> Self {
        Note {
            warning: false,
            reason,
            action,
            message: message.into(),
        }
    }
    pub fn warning(reason: Reason, action: &'static str, message: impl Into<String>) -> Self {
        Note {
            warning: true,
            reason,
            action,
            message: message.into(),
        }
    }
}

pub fn key_of<K: Managed>(obj: &K) -> String {
    format!(
        "{}/{}/{}",
        K::KIND,
        obj.namespace().unwrap_or_default(),
        obj.name_any()
    )
}

pub(super) fn now() -> Time {
    // The apiserver stores condition times with second precision; match it so an
    // unchanged status compares equal and costs no write.
    let secs = k8s_openapi::jiff::Timestamp::now().as_second();
    Time(k8s_openapi::jiff::Timestamp::from_second(secs).unwrap_or_default())
}

/// `s` cut to at most `max_bytes` bytes on a character boundary, marked with '…' when
/// cut (API limits are in bytes: Event notes, reasons kept in status).
pub fn shorten(s: &str, max_bytes: usize) -> String {
    if s.len() <= max_bytes {
        return s.to_string();
    }
    let mut end = max_bytes.saturating_sub('…'.len_utf8());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// UIDs of the resources of kind `K` that exist in the watched scope: what tells an
/// earlier, deleted resource's ECS object (own history) from a living stranger's.
pub async fn living_uids<K: Managed>(
    ctx: &Context,
) -> Result<std::collections::BTreeSet<String>, Error> {
    let api: Api<K> = scoped_api(&ctx.kube, ctx.namespace.as_deref());
    Ok(api
        .list(&kube::api::ListParams::default())
        .await?
        .items
        .into_iter()
        .filter_map(|o| o.meta().uid.clone())
        .collect())
}

/// An Api for a namespaced kind: in `namespace`, or across all namespaces.
pub fn scoped_api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shard_selector_names_the_label_keys_it_tests() {
        let keys = selector_keys("ecs.operator.dev/shard=a, tier in (web,api),!legacy,env!=dev");
        assert_eq!(keys, ["ecs.operator.dev/shard", "tier", "legacy", "env"]);
        assert_eq!(
            selector_keys("team notin (a, b), exists"),
            ["team", "exists"]
        );
        assert!(selector_keys("").is_empty());
    }

    #[test]
    fn a_schedules_runs_carry_only_its_shard_labels() {
        let labels = BTreeMap::from([
            ("ecs.operator.dev/shard".to_string(), "a".to_string()),
            (
                "app.kubernetes.io/instance".to_string(),
                "argo-app".to_string(),
            ),
        ]);
        let copied = shard_labels(Some("ecs.operator.dev/shard=a"), &labels);
        assert_eq!(copied.len(), 1);
        assert_eq!(copied["ecs.operator.dev/shard"], "a");
        assert!(shard_labels(None, &labels).is_empty());
    }

    #[test]
    fn an_outage_failure_is_woken_once_per_run_of_failures() {
        let failures = OutageFailures::default();
        failures.note("EcsService", "ns", "a", true);
        failures.note("EcsService", "ns", "b", true);
        failures.note("EcsTask", "ns", "a", true);
        let id = |n: &str| ("ns".to_string(), n.to_string());
        assert_eq!(failures.take("EcsService"), [id("a"), id("b")]);
        // Failing again in the same run: no second wake (one broken operation
        // with the others answering must not wake it at every answer).
        failures.note("EcsService", "ns", "a", true);
        assert!(failures.take("EcsService").is_empty());
        // A pass that ends otherwise ends the run; the next outage wakes it again.
        failures.note("EcsService", "ns", "a", false);
        failures.note("EcsService", "ns", "a", true);
        assert_eq!(failures.take("EcsService"), [id("a")]);
        assert_eq!(failures.take("EcsTask"), [id("a")]);
        assert!(failures.take("EcsCluster").is_empty());
    }
}
