//! The generic reconcile driver every kind runs on, and one module per kind.
//!
//! Data flows one way: watch event -> observe ECS -> pure plan -> ECS writes ->
//! status patch (server-side apply on /status) -> requeue decision. The driver
//! owns everything that is the same for all kinds: the finalizer, kstatus
//! conditions, Events, error classification into backoff, metrics.

pub mod cluster;
pub mod cluster_plan;
pub mod events;
pub mod refs;
pub mod schedule_plan;
pub mod scheduled_task;
pub mod service;
pub mod service_plan;
pub mod task;
pub mod task_definition;
pub mod task_definition_plan;
pub mod task_plan;

use std::collections::HashMap;
use std::fmt::Debug;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::NamespaceResourceScope;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Config as ControllerConfig, Controller};
use kube::runtime::finalizer::{self, Event as FinalizerEvent, finalizer};
use kube::runtime::{PredicateConfig, WatchStreamExt, reflector, watcher};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tracing::{debug, info, warn};

use crate::FIELD_MANAGER;
use crate::api::common::{Condition, FINALIZER, Health, READY, Time, conditions};
use crate::ecs::EcsApi;
use crate::ecs::service::ServiceObserver;
use crate::error::{Error, ErrorClass};
use crate::telemetry::Metrics;
use events::EventWriter;

/// Shared by all reconciles of all kinds.
pub struct Context {
    pub kube: Client,
    pub ecs: EcsApi,
    /// Batched, cached reads of ECS services shared by all EcsService reconciles.
    pub services: ServiceObserver,
    pub events: EventWriter,
    /// The UpdateNotApplied guard shared by every kind.
    pub updates: UpdateGuard,
    pub metrics: Arc<Metrics>,
    /// Periodic re-check of every resource, for drift made outside Kubernetes.
    pub resync: Duration,
    /// The namespace the operator watches (None: all). Reads that must see every
    /// resource the operator manages (e.g. "is this revision in use") use this scope.
    pub namespace: Option<String>,
    failures: Mutex<HashMap<String, u32>>,
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
        // Copies older than half the resync interval are re-read (capped so the
        // status stays reasonably fresh with long intervals).
        let window = (resync / 2).min(Duration::from_secs(60));
        Context {
            kube,
            ecs,
            services: ServiceObserver::new(window),
            events,
            updates: UpdateGuard::default(),
            metrics,
            resync,
            namespace,
            failures: Mutex::new(HashMap::new()),
        }
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

/// Identical updates in a row before the operator stops repeating one ECS ignores.
pub const MAX_SAME_UPDATE: u32 = 3;

/// Remembers the last ECS write planned for each object, so that the same write
/// planned again and again (ECS does not take it, or reports it differently from
/// how it was sent) ends as `Stalled UpdateNotApplied` instead of a write per pass.
/// One mechanism for every kind.
#[derive(Default)]
pub struct UpdateGuard {
    /// object key -> (fingerprint of the last write planned, times in a row).
    updates: Mutex<HashMap<String, (String, u32)>>,
}

impl UpdateGuard {
    /// Notes the write planned now (`None`: nothing to write, which resets the count).
    /// Err with the Stalled health once the same write is due more than
    /// `MAX_SAME_UPDATE` times in a row.
    pub fn check(
        &self,
        key: &str,
        fingerprint: Option<String>,
        what: &str,
        changed: &[String],
    ) -> Result<(), Health> {
        let mut all = self.updates.lock().unwrap_or_else(|e| e.into_inner());
        let Some(f) = fingerprint else {
            all.remove(key);
            return Ok(());
        };
        let entry = all.entry(key.to_string()).or_insert((f.clone(), 0));
        if entry.0 != f {
            *entry = (f, 0);
        }
        entry.1 = entry.1.saturating_add(1);
        if entry.1 <= MAX_SAME_UPDATE {
            return Ok(());
        }
        Err(Health::stalled(
            "UpdateNotApplied",
            format!(
                "{what} still differs from the spec after {MAX_SAME_UPDATE} identical updates \
                 ({}); not retrying until the spec or the ECS object changes",
                changed.join(", ")
            ),
        ))
    }

    /// Forget an object (it is gone).
    pub fn forget(&self, key: &str) {
        self.updates
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }
}

/// Something worth a Kubernetes Event (`kubectl describe`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub warning: bool,
    /// PascalCase reason, e.g. `Created`, `DriftCorrected`.
    pub reason: &'static str,
    /// PascalCase action, e.g. `CreateCluster`.
    pub action: &'static str,
    pub message: String,
}

impl Note {
    pub fn normal(reason: &'static str, action: &'static str, message: impl Into<String>) -> Self {
        Note {
            warning: false,
            reason,
            action,
            message: message.into(),
        }
    }
    pub fn warning(reason: &'static str, action: &'static str, message: impl Into<String>) -> Self {
        Note {
            warning: true,
            reason,
            action,
            message: message.into(),
        }
    }
}

/// What one successful pass of a kind's `apply` produced.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The kind's status fields, except `observedGeneration` and `conditions` (the driver adds them).
    pub status: Value,
    pub health: Health,
    /// Come back sooner than the resync interval (e.g. while a rollout runs).
    pub requeue: Option<Duration>,
    pub notes: Vec<Note>,
}

/// One kind the operator manages: observe -> plan -> act, and clean up.
pub trait Managed:
    Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + Clone
    + Serialize
    + DeserializeOwned
    + Debug
    + Send
    + Sync
    + 'static
{
    const KIND: &'static str;

    /// Bring ECS in line with the spec and describe the result.
    fn apply(&self, ctx: &Context) -> impl Future<Output = Result<Outcome, Error>> + Send;

    /// Handle the ECS side of deletion per `deletionPolicy`. `Err(DeleteBlocked)`
    /// keeps the finalizer and retries; `Err(DeleteInProgress)` checks again soon.
    fn cleanup(&self, ctx: &Context) -> impl Future<Output = Result<Vec<Note>, Error>> + Send;

    /// Extra watches: other kinds whose changes must reconcile objects of this kind
    /// (e.g. a service referencing a task definition).
    fn watch_related(
        controller: Controller<Self>,
        _client: &Client,
        _namespace: Option<&str>,
    ) -> Controller<Self> {
        controller
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

fn current_status<K: Managed>(obj: &K) -> Value {
    serde_json::to_value(obj)
        .ok()
        .and_then(|mut v| v.get_mut("status").map(Value::take))
        .unwrap_or(Value::Null)
}

fn previous_conditions(status: &Value) -> Vec<Condition> {
    status
        .get("conditions")
        .cloned()
        .and_then(|c| serde_json::from_value(c).ok())
        .unwrap_or_default()
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

/// The status the driver writes: the kind's fields plus observedGeneration and conditions.
pub fn compose_status(
    body: Value,
    health: &Health,
    generation: Option<i64>,
    previous: &[Condition],
    now: &Time,
) -> Value {
    let mut status = match body {
        Value::Object(m) => m,
        _ => serde_json::Map::new(),
    };
    status.insert("observedGeneration".into(), json!(generation));
    // A kind may bring conditions of its own (e.g. Complete / Failed); kstatus's follow.
    let mut all: Vec<Condition> = status
        .remove("conditions")
        .and_then(|c| serde_json::from_value(c).ok())
        .unwrap_or_default();
    all.extend(conditions(health, generation, previous, now));
    status.insert(
        "conditions".into(),
        serde_json::to_value(all).unwrap_or(Value::Null),
    );
    Value::Object(status)
}

/// Patches status unless it already equals `current` (the object's status as read).
async fn write_status<K: Managed>(
    api: &Api<K>,
    obj: &K,
    current: &Value,
    status: Value,
) -> Result<(), Error> {
    if *current == status {
        return Ok(());
    }
    let patch = json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    api.patch_status(
        &obj.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    Ok(())
}

async fn publish<K: Managed>(ctx: &Context, obj: &K, notes: &[Note]) {
    let reference = obj.object_ref(&());
    for n in notes {
        if let Err(e) = ctx.events.publish(n, &reference).await {
            warn!(error = %e, reason = n.reason, "cannot publish Event");
        }
    }
}

/// How often a deletion that is under way in ECS is checked.
pub const DELETE_POLL: Duration = Duration::from_secs(3);

/// How long to wait before retrying after `failures` consecutive failures.
pub fn backoff(failures: u32, class: ErrorClass) -> Duration {
    let (base, cap) = match class {
        ErrorClass::Retryable => (2u64, 300u64),
        // Terminal errors wait for a spec change (which triggers a reconcile at
        // once) but are re-checked slowly in case the cause was outside the spec.
        ErrorClass::Terminal => (30, 900),
    };
    let exp = failures.saturating_sub(1).min(16);
    Duration::from_secs(base.saturating_mul(1u64 << exp).min(cap))
}

async fn apply_and_report<K: Managed>(
    api: &Api<K>,
    obj: &K,
    ctx: &Context,
) -> Result<Action, Error> {
    let outcome = obj.apply(ctx).await?;
    let prev = current_status(obj);
    let status = compose_status(
        outcome.status,
        &outcome.health,
        obj.meta().generation,
        &previous_conditions(&prev),
        &now(),
    );
    write_status(api, obj, &prev, status).await?;
    publish(ctx, obj, &outcome.notes).await;
    ctx.metrics
        .set_ready(K::KIND, &key_of(obj), Some(outcome.health.is_ready()));
    Ok(Action::requeue(
        outcome.requeue.unwrap_or(ctx.resync).min(ctx.resync),
    ))
}

async fn report_error<K: Managed>(
    api: &Api<K>,
    obj: &K,
    ctx: &Context,
    err: &Error,
    failures: u32,
) -> Result<(), Error> {
    let current = current_status(obj);
    let prev_conditions = previous_conditions(&current);
    let generation = obj.meta().generation;
    let was_ready_for_this_spec = current.get("observedGeneration").and_then(Value::as_i64)
        == generation
        && prev_conditions
            .iter()
            .any(|c| c.type_ == READY && c.status == "True");
    let health = match (err, err.class()) {
        (Error::DeleteBlocked { reason, message }, _) => Health::stalled(reason, message.clone()),
        (Error::DeleteInProgress { reason, message }, _) => {
            Health::progressing(reason, message.clone())
        }
        (_, ErrorClass::Terminal) => Health::stalled(&err.reason(), err.to_string()),
        // A transient failure on a resource that was fine: keep its conditions
        // (no flapping); logs, metrics and the Event tell the story.
        (_, ErrorClass::Retryable) if was_ready_for_this_spec => {
            return Ok(());
        }
        (_, ErrorClass::Retryable) => Health::progressing(&err.reason(), err.to_string()),
    };
    let body = match current.clone() {
        Value::Object(mut m) => {
            m.remove("conditions");
            m.remove("observedGeneration");
            Value::Object(m)
        }
        _ => json!({}),
    };
    let status = compose_status(body, &health, generation, &prev_conditions, &now());
    write_status(api, obj, &current, status).await?;
    let reason = match err {
        Error::DeleteBlocked { .. } => "DeleteBlocked",
        Error::DeleteInProgress { .. } => "",
        _ if failures == 1 || err.class() == ErrorClass::Terminal => "ReconcileFailed",
        _ => "",
    };
    if !reason.is_empty() {
        publish(
            ctx,
            obj,
            &[Note::warning(reason, "Reconcile", err.to_string())],
        )
        .await;
    }
    ctx.metrics.set_ready(K::KIND, &key_of(obj), Some(false));
    Ok(())
}

/// One reconcile of one object of kind `K`.
pub async fn reconcile<K: Managed>(obj: Arc<K>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let key = key_of(obj.as_ref());
    let Some(ns) = obj.namespace() else {
        return Err(Error::Config(format!("{key} has no namespace")));
    };
    let api: Api<K> = Api::namespaced(ctx.kube.clone(), &ns);
    let result = finalizer(&api, FINALIZER, obj.clone(), |event| async {
        match event {
            FinalizerEvent::Apply(o) => apply_and_report(&api, o.as_ref(), &ctx).await,
            FinalizerEvent::Cleanup(o) => {
                let notes = o.cleanup(&ctx).await?;
                publish(&ctx, o.as_ref(), &notes).await;
                ctx.metrics.set_ready(K::KIND, &key, None);
                ctx.updates.forget(&key);
                Ok(Action::await_change())
            }
        }
    })
    .await;
    let elapsed = started.elapsed().as_secs_f64();
    match result {
        Ok(action) => {
            ctx.clear_failures(&key);
            ctx.metrics.reconciled(K::KIND, "success", elapsed);
            debug!(object = %key, ?action, "reconciled");
            Ok(action)
        }
        Err(finalizer::Error::CleanupFailed(err @ Error::DeleteInProgress { .. })) => {
            // Progress, not failure: no backoff, no warning.
            ctx.clear_failures(&key);
            ctx.metrics.reconciled(K::KIND, err.kind(), elapsed);
            if let Err(e) = report_error(&api, obj.as_ref(), &ctx, &err, 0).await {
                warn!(object = %key, error = %e, "cannot write status");
            }
            debug!(object = %key, %err, "deletion in progress");
            Ok(Action::requeue(DELETE_POLL))
        }
        Err(finalizer::Error::ApplyFailed(err)) | Err(finalizer::Error::CleanupFailed(err)) => {
            let n = ctx.record_failure(&key);
            ctx.metrics.reconciled(K::KIND, err.kind(), elapsed);
            let wait = backoff(n, err.class());
            if let Err(e) = report_error(&api, obj.as_ref(), &ctx, &err, n).await {
                warn!(object = %key, error = %e, "cannot write error status");
            }
            match err.class() {
                ErrorClass::Terminal => {
                    warn!(object = %key, error = %err, retry_in = ?wait, "reconcile failed")
                }
                ErrorClass::Retryable => {
                    info!(object = %key, error = %err, retry_in = ?wait, "reconcile will be retried")
                }
            }
            Ok(Action::requeue(wait))
        }
        // The finalizer helper's JSON patch tests the finalizer list first; it fails
        // (422 / 409) when our copy is older than the apiserver's (e.g. a reconcile
        // woken by a related object right after the finalizer was added). That is
        // not a failure: look again in a moment.
        Err(finalizer::Error::AddFinalizer(kube::Error::Api(e)))
        | Err(finalizer::Error::RemoveFinalizer(kube::Error::Api(e)))
            if e.code == 422 || e.code == 409 =>
        {
            ctx.metrics.reconciled(K::KIND, "conflict", elapsed);
            debug!(object = %key, "finalizer patch raced a newer version; retrying");
            Ok(Action::requeue(Duration::from_millis(500)))
        }
        Err(other) => {
            ctx.metrics.reconciled(K::KIND, "finalizer", elapsed);
            Err(match other {
                finalizer::Error::AddFinalizer(e) | finalizer::Error::RemoveFinalizer(e) => {
                    Error::Kube(e)
                }
                e => Error::Config(e.to_string()),
            })
        }
    }
}

/// Errors that reach here are Kubernetes API failures around the finalizer.
pub fn error_policy<K: Managed>(obj: Arc<K>, err: &Error, ctx: Arc<Context>) -> Action {
    let n = ctx.record_failure(&key_of(obj.as_ref()));
    let wait = backoff(n, err.class());
    warn!(object = %key_of(obj.as_ref()), error = %err, retry_in = ?wait, "reconcile error");
    Action::requeue(wait)
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

/// True if an ECS object with `tags` is the own history of the resource of kind `K`
/// with `uid` and owner tag value `owner` (see `api::common::own_history`). The
/// apiserver is asked only for a candidate: this owner, another uid.
pub async fn is_own_history<K: Managed>(
    ctx: &Context,
    tags: &std::collections::BTreeMap<String, String>,
    owner: &str,
    uid: &str,
) -> Result<bool, Error> {
    let candidate = tags.get(crate::api::common::OWNER_TAG).map(String::as_str) == Some(owner)
        && tags
            .get(crate::api::common::UID_TAG)
            .is_some_and(|u| u != uid);
    if !candidate {
        return Ok(false);
    }
    let living = living_uids::<K>(ctx).await?;
    Ok(crate::api::common::own_history(tags, owner, &living))
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

/// What an object asks of its controller: spec (generation), deletion, finalizers,
/// labels and annotations. Status is left out on purpose (kube's
/// `predicates::generation` alone would miss finalizer and deletion changes).
fn intent<K: Resource>(obj: &K) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let meta = obj.meta();
    let mut h = std::collections::hash_map::DefaultHasher::new();
    meta.generation.hash(&mut h);
    meta.deletion_timestamp
        .as_ref()
        .map(|t| t.0.as_second())
        .hash(&mut h);
    meta.finalizers.hash(&mut h);
    meta.labels.hash(&mut h);
    meta.annotations.hash(&mut h);
    Some(h.finish())
}

/// Runs the controller for kind `K` until `shutdown` resolves.
pub async fn run<K: Managed>(
    ctx: Arc<Context>,
    namespace: Option<&str>,
    concurrency: u16,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let api: Api<K> = scoped_api(&ctx.kube, namespace);
    info!(
        kind = K::KIND,
        namespace = namespace.unwrap_or("<all>"),
        "starting controller"
    );
    // The object's own changes wake it only when something it is asked to do changed:
    // its own status writes must not (a failing reconcile would otherwise retry at
    // once instead of after its backoff).
    let (reader, writer) = reflector::store();
    let trigger = watcher(api, watcher::Config::default().any_semantic())
        .default_backoff()
        .reflect(writer)
        .applied_objects()
        .predicate_filter(intent, PredicateConfig::default());
    let controller = Controller::for_stream(trigger, reader)
        .with_config(ControllerConfig::default().concurrency(concurrency));
    K::watch_related(controller, &ctx.kube, namespace)
        .graceful_shutdown_on(shutdown)
        .run(reconcile::<K>, error_policy::<K>, ctx)
        .for_each(|res| async move {
            if let Err(e) = res {
                debug!(error = %e, "controller event");
            }
        })
        .await;
    info!(kind = K::KIND, "controller stopped");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_update_stops_after_a_few_tries_and_resets_on_change() {
        let guard = UpdateGuard::default();
        let f = || Some("UpdateCluster{x}".to_string());
        for _ in 0..MAX_SAME_UPDATE {
            assert!(guard.check("k", f(), "ECS cluster c", &[]).is_ok());
        }
        let stalled = guard.check("k", f(), "ECS cluster c", &["settings".into()]);
        assert!(
            matches!(&stalled, Err(Health::Stalled { reason, .. }) if reason == "UpdateNotApplied")
        );
        // Another write, or nothing to write, starts the count again.
        assert!(guard.check("k", Some("other".into()), "c", &[]).is_ok());
        assert!(guard.check("k", None, "c", &[]).is_ok());
        for _ in 0..MAX_SAME_UPDATE {
            assert!(guard.check("k", f(), "c", &[]).is_ok());
        }
        // Objects do not share counts.
        assert!(guard.check("other", f(), "c", &[]).is_ok());
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        assert_eq!(backoff(1, ErrorClass::Retryable), Duration::from_secs(2));
        assert_eq!(backoff(2, ErrorClass::Retryable), Duration::from_secs(4));
        assert_eq!(backoff(30, ErrorClass::Retryable), Duration::from_secs(300));
        assert_eq!(backoff(1, ErrorClass::Terminal), Duration::from_secs(30));
        assert_eq!(backoff(100, ErrorClass::Terminal), Duration::from_secs(900));
    }

    #[test]
    fn composed_status_has_generation_and_conditions_and_keeps_fields() {
        let t = Time(k8s_openapi::jiff::Timestamp::from_second(100).unwrap());
        let s = compose_status(
            json!({"arn": "a"}),
            &Health::ready("Active", "ok"),
            Some(4),
            &[],
            &t,
        );
        assert_eq!(s["arn"], "a");
        assert_eq!(s["observedGeneration"], 4);
        assert_eq!(s["conditions"][0]["type"], "Ready");
        assert_eq!(s["conditions"][0]["status"], "True");
        assert_eq!(
            s["conditions"][0]["lastTransitionTime"],
            "1970-01-01T00:01:40Z"
        );
    }

    #[test]
    fn recomposing_an_unchanged_status_is_identical() {
        // Same input, later clock: must be byte-identical so no write happens.
        let t1 = Time(k8s_openapi::jiff::Timestamp::from_second(100).unwrap());
        let t2 = Time(k8s_openapi::jiff::Timestamp::from_second(200).unwrap());
        let h = Health::ready("Active", "ok");
        let first = compose_status(json!({"arn": "a"}), &h, Some(1), &[], &t1);
        let prev = previous_conditions(&first);
        let second = compose_status(json!({"arn": "a"}), &h, Some(1), &prev, &t2);
        assert_eq!(first, second);
    }
}
