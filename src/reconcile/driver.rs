//! The generic reconcile driver every kind runs on.
//!
//! Data flows one way: watch event -> the kind's `apply` (observe, pure plan, act)
//! -> typed status -> server-side apply on /status -> requeue decision. The driver
//! owns everything that is the same for all kinds: the finalizer, `observedGeneration`
//! and the kstatus conditions, Events, error classification into backoff, metrics.

use std::fmt::Debug;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::NamespaceResourceScope;
use kube::api::{Api, Patch, PatchParams};
use kube::core::object::HasStatus;
use kube::runtime::controller::{Action, Config as ControllerConfig, Controller};
use kube::runtime::finalizer::{self, Event as FinalizerEvent, finalizer};
use kube::runtime::{PredicateConfig, WatchStreamExt, reflector, watcher};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use tracing::{debug, info, warn};

use super::{Context, Note, key_of, now, scoped_api};
use crate::FIELD_MANAGER;
use crate::api::common::{
    Condition, FINALIZER, Health, KindStatus, READY, Reason, Time, condition, conditions,
    is_kstatus,
};
use crate::error::{Error, ErrorClass};

/// A condition a kind reports besides the kstatus three (e.g. EcsTask's Complete /
/// Failed, as a Job has them). The driver keeps its transition time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KindCondition {
    pub type_: String,
    pub status: bool,
    pub reason: Reason,
    pub message: String,
}

/// What one successful pass of a kind's `apply` produced.
#[derive(Debug, Clone)]
pub struct Outcome<S> {
    /// The kind's status. `observedGeneration` and `conditions` are the driver's:
    /// whatever they hold here is replaced.
    pub status: S,
    pub health: Health,
    /// Conditions of the kind's own, besides the kstatus ones derived from `health`.
    pub conditions: Vec<KindCondition>,
    /// Come back sooner than the resync interval (e.g. while a rollout runs).
    pub requeue: Option<Duration>,
    pub notes: Vec<Note>,
    /// A sweep re-reads this object's ECS side at every resync and wakes it only if
    /// that changed (see `service::sweeps`): its own requeue is a safety net, and may
    /// be up to `SWEPT_SAFETY` resync intervals.
    pub swept: bool,
}

/// How many resync intervals a swept object may go without a reconcile of its own.
pub const SWEPT_SAFETY: u32 = 12;

impl<S> Outcome<S> {
    /// An outcome with no Events, no kind conditions and the default requeue.
    pub fn new(status: S, health: Health) -> Self {
        Outcome {
            status,
            health,
            conditions: vec![],
            requeue: None,
            notes: vec![],
            swept: false,
        }
    }
    /// See `Outcome::swept`.
    pub fn swept(mut self) -> Self {
        self.swept = true;
        self
    }
    pub fn requeue(mut self, after: Duration) -> Self {
        self.requeue = Some(after);
        self
    }
    pub fn requeue_opt(mut self, after: Option<Duration>) -> Self {
        self.requeue = after;
        self
    }
    pub fn note(mut self, note: Note) -> Self {
        self.notes.push(note);
        self
    }
    pub fn notes(mut self, notes: Vec<Note>) -> Self {
        self.notes.extend(notes);
        self
    }
}

/// One kind the operator manages: observe -> plan -> act, and clean up.
pub trait Managed:
    Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + HasStatus<Status: KindStatus>
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
    fn apply(
        &self,
        ctx: &Context,
    ) -> impl Future<Output = Result<Outcome<Self::Status>, Error>> + Send;

    /// Handle the ECS side of deletion per `deletionPolicy`. `Err(DeleteBlocked)`
    /// keeps the finalizer and retries; `Err(DeleteInProgress)` checks again soon.
    fn cleanup(&self, ctx: &Context) -> impl Future<Output = Result<Vec<Note>, Error>> + Send;

    /// Extra watches: other kinds whose changes must reconcile objects of this kind
    /// (e.g. a service referencing a task definition).
    fn watch_related(
        controller: Controller<Self>,
        _ctx: &Arc<Context>,
        _namespace: Option<&str>,
    ) -> Controller<Self> {
        controller
    }
}

/// The status the driver writes: the kind's status with `observedGeneration` and
/// the conditions (the kind's own first, then kstatus's), transition times kept
/// from `previous`.
pub fn compose_status<S: KindStatus>(
    mut status: S,
    health: &Health,
    own: &[KindCondition],
    generation: Option<i64>,
    previous: &[Condition],
    now: &Time,
) -> S {
    let mut all: Vec<Condition> = own
        .iter()
        .map(|c| {
            let (type_, reason, message) = (&c.type_, c.reason.as_str(), &c.message);
            condition(type_, c.status, reason, message, generation, previous, now)
        })
        .collect();
    all.extend(conditions(health, generation, previous, now));
    status.set_driver_fields(generation, all);
    status
}

/// The kind's own conditions in `previous`, to carry them through a failed pass.
fn kind_conditions(previous: &[Condition]) -> Vec<KindCondition> {
    previous
        .iter()
        .filter(|c| !is_kstatus(&c.type_))
        .map(|c| KindCondition {
            type_: c.type_.clone(),
            status: c.status == "True",
            reason: Reason::parse(&c.reason),
            message: c.message.clone(),
        })
        .collect()
}

/// Patches status unless it already equals what the object has.
async fn write_status<K: Managed>(api: &Api<K>, obj: &K, status: K::Status) -> Result<(), Error> {
    if obj.status() == Some(&status) {
        return Ok(());
    }
    let body = serde_json::to_value(&status).map_err(|e| Error::Serialization {
        what: "status",
        message: e.to_string(),
    })?;
    let patch = json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": body,
    });
    api.patch_status(
        &obj.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    Ok(())
}

pub(super) async fn publish<K: Managed>(ctx: &Context, obj: &K, notes: &[Note]) {
    let reference = obj.object_ref(&());
    for n in notes {
        if let Err(e) = ctx.events.publish(n, &reference).await {
            warn!(error = %e, reason = %n.reason, "cannot publish Event");
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
    let previous = obj.status().map(KindStatus::conditions).unwrap_or_default();
    let status = compose_status(
        outcome.status,
        &outcome.health,
        &outcome.conditions,
        obj.meta().generation,
        previous,
        &now(),
    );
    write_status(api, obj, status).await?;
    publish(ctx, obj, &outcome.notes).await;
    ctx.metrics
        .set_ready(K::KIND, &key_of(obj), Some(outcome.health.is_ready()));
    let longest = if outcome.swept {
        ctx.resync * SWEPT_SAFETY
    } else {
        ctx.resync
    };
    Ok(Action::requeue(
        outcome.requeue.unwrap_or(longest).min(longest),
    ))
}

/// The health a failed pass reports; None keeps the conditions as they are.
fn error_health(err: &Error, was_ready_for_this_spec: bool) -> Option<Health> {
    Some(match (err, err.class()) {
        (Error::DeleteBlocked { reason, message }, _) => {
            Health::stalled(reason.clone(), message.clone())
        }
        (Error::DeleteInProgress { reason, message }, _) => {
            Health::progressing(reason.clone(), message.clone())
        }
        (_, ErrorClass::Terminal) => Health::stalled(err.reason(), err.to_string()),
        // A transient failure on a resource that was fine: keep its conditions
        // (no flapping); logs, metrics and the Event tell the story.
        (_, ErrorClass::Retryable) if was_ready_for_this_spec => return None,
        (_, ErrorClass::Retryable) => Health::progressing(err.reason(), err.to_string()),
    })
}

/// The Warning Event reason for a failed pass (None: no Event, e.g. a repeat of a
/// retryable failure already reported).
fn error_event_reason(err: &Error, failures: u32) -> Option<Reason> {
    match err {
        Error::DeleteBlocked { .. } => Some(Reason::DeleteBlocked),
        Error::DeleteInProgress { .. } => None,
        _ if failures == 1 || err.class() == ErrorClass::Terminal => Some(Reason::ReconcileFailed),
        _ => None,
    }
}

async fn report_error<K: Managed>(
    api: &Api<K>,
    obj: &K,
    ctx: &Context,
    err: &Error,
    failures: u32,
) -> Result<(), Error> {
    let current = obj.status().cloned().unwrap_or_default();
    let generation = obj.meta().generation;
    let was_ready_for_this_spec = current.observed_generation() == generation
        && current
            .conditions()
            .iter()
            .any(|c| c.type_ == READY && c.status == "True");
    if let Some(health) = error_health(err, was_ready_for_this_spec) {
        let previous = current.conditions().to_vec();
        let own = kind_conditions(&previous);
        let status = compose_status(current, &health, &own, generation, &previous, &now());
        write_status(api, obj, status).await?;
    }
    if let Some(reason) = error_event_reason(err, failures) {
        let note = Note::warning(reason, "Reconcile", err.to_string());
        publish(ctx, obj, &[note]).await;
    }
    ctx.metrics.set_ready(K::KIND, &key_of(obj), Some(false));
    Ok(())
}

/// One reconcile of one object of kind `K`.
pub async fn reconcile<K: Managed>(obj: Arc<K>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let key = key_of(obj.as_ref());
    let Some(ns) = obj.namespace() else {
        return Err(Error::Internal(format!("{key} has no namespace")));
    };
    let api: Api<K> = Api::namespaced(ctx.kube.clone(), &ns);
    let pass = async {
        match add_finalizer(&api, obj.clone()).await {
            Ok(obj) => {
                finalizer(&api, FINALIZER, obj, |event| async {
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
                .await
            }
            Err(e) => Err(finalizer::Error::AddFinalizer(e)),
        }
    };
    let result = crate::ecs::acting_as(K::KIND, pass).await;
    let elapsed = started.elapsed().as_secs_f64();
    settle(&api, obj.as_ref(), &ctx, &key, elapsed, result).await
}

/// `obj` with our finalizer, added now if it lacks it (and is not being deleted).
///
/// kube's finalizer helper adds it and ends the pass, counting on the watch event
/// of its own patch for the real work: one more reconcile per new object. Here the
/// pass goes on with the patched object, and `intent` ignores finalizer changes.
/// The patch tests the list first, as kube's does, so a concurrent writer's
/// finalizer is never lost.
async fn add_finalizer<K: Managed>(api: &Api<K>, obj: Arc<K>) -> Result<Arc<K>, kube::Error> {
    let finalizers = obj.finalizers();
    if obj.meta().deletion_timestamp.is_some() || finalizers.iter().any(|f| f == FINALIZER) {
        return Ok(obj);
    }
    let operations = if finalizers.is_empty() {
        json!([
            {"op": "test", "path": "/metadata/finalizers", "value": null},
            {"op": "add", "path": "/metadata/finalizers", "value": [FINALIZER]},
        ])
    } else {
        json!([
            {"op": "test", "path": "/metadata/finalizers", "value": finalizers},
            {"op": "add", "path": "/metadata/finalizers/-", "value": FINALIZER},
        ])
    };
    let patch: json_patch::Patch =
        serde_json::from_value(operations).map_err(kube::Error::SerdeError)?;
    let patched = api
        .patch(
            &obj.name_any(),
            &PatchParams::default(),
            &Patch::Json::<()>(patch),
        )
        .await?;
    Ok(Arc::new(patched))
}

/// What a reconcile's result means for the object: metrics, status, next look.
async fn settle<K: Managed>(
    api: &Api<K>,
    obj: &K,
    ctx: &Context,
    key: &str,
    elapsed: f64,
    result: Result<Action, finalizer::Error<Error>>,
) -> Result<Action, Error> {
    let (ns, name) = (obj.namespace().unwrap_or_default(), obj.name_any());
    let outage = match &result {
        Err(finalizer::Error::ApplyFailed(err)) | Err(finalizer::Error::CleanupFailed(err)) => {
            crate::ecs::reachability::is_outage(err)
        }
        _ => false,
    };
    ctx.outage_failures.note(K::KIND, &ns, &name, outage);
    match result {
        Ok(action) => {
            ctx.clear_failures(key);
            ctx.metrics.reconciled(K::KIND, "success", elapsed);
            debug!(object = %key, ?action, "reconciled");
            Ok(action)
        }
        Err(finalizer::Error::CleanupFailed(err @ Error::DeleteInProgress { .. })) => {
            // Progress, not failure: no backoff, no warning.
            ctx.clear_failures(key);
            ctx.metrics.reconciled(K::KIND, err.kind(), elapsed);
            if let Err(e) = report_error(api, obj, ctx, &err, 0).await {
                warn!(object = %key, error = %e, "cannot write status");
            }
            debug!(object = %key, %err, "deletion in progress");
            Ok(Action::requeue(DELETE_POLL))
        }
        Err(finalizer::Error::ApplyFailed(err)) | Err(finalizer::Error::CleanupFailed(err)) => {
            let n = ctx.record_failure(key);
            ctx.metrics.reconciled(K::KIND, err.kind(), elapsed);
            let wait = backoff(n, err.class());
            if let Err(e) = report_error(api, obj, ctx, &err, n).await {
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
            Ok(Action::requeue(FINALIZER_RACE_RETRY))
        }
        Err(other) => {
            ctx.metrics.reconciled(K::KIND, "finalizer", elapsed);
            Err(match other {
                finalizer::Error::AddFinalizer(e) | finalizer::Error::RemoveFinalizer(e) => {
                    Error::Kube(e)
                }
                e => Error::Internal(e.to_string()),
            })
        }
    }
}

/// How soon a reconcile whose finalizer patch raced a newer version looks again.
pub const FINALIZER_RACE_RETRY: Duration = Duration::from_millis(500);

/// Errors that reach here are Kubernetes API failures around the finalizer.
pub fn error_policy<K: Managed>(obj: Arc<K>, err: &Error, ctx: Arc<Context>) -> Action {
    let n = ctx.record_failure(&key_of(obj.as_ref()));
    let wait = backoff(n, err.class());
    warn!(object = %key_of(obj.as_ref()), error = %err, retry_in = ?wait, "reconcile error");
    Action::requeue(wait)
}

/// What an object asks of its controller: spec (generation), deletion, labels and
/// annotations. Status is left out on purpose, and so are finalizers: the operator
/// adds its own in the pass that goes on to apply (see `add_finalizer`), and a
/// finalizer removed by hand is added back at the next resync.
fn intent<K: Resource>(obj: &K) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let meta = obj.meta();
    let mut h = std::collections::hash_map::DefaultHasher::new();
    meta.generation.hash(&mut h);
    meta.deletion_timestamp
        .as_ref()
        .map(|t| t.0.as_second())
        .hash(&mut h);
    meta.labels.hash(&mut h);
    meta.annotations.hash(&mut h);
    Some(h.finish())
}

/// The objects of `K` whose last pass failed because ECS did not answer, each time
/// an outage ends: they run at once instead of at the end of their backoff.
fn recovery_wakes<K: Managed>(
    ctx: Arc<Context>,
) -> impl futures::Stream<Item = reflector::ObjectRef<K>> + Send + 'static {
    let recoveries = ctx.ecs.reach.recoveries();
    futures::stream::unfold((ctx, recoveries), |(ctx, mut recoveries)| async move {
        recoveries.changed().await.ok()?;
        let woken: Vec<reflector::ObjectRef<K>> = ctx
            .outage_failures
            .take(K::KIND)
            .into_iter()
            .map(|(ns, name)| reflector::ObjectRef::new(&name).within(&ns))
            .collect();
        if !woken.is_empty() {
            info!(
                kind = K::KIND,
                objects = woken.len(),
                "ECS answers again: retrying now"
            );
        }
        Some((futures::stream::iter(woken), (ctx, recoveries)))
    })
    .flatten()
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
    let trigger = watcher(api, ctx.own_objects())
        .default_backoff()
        // managedFields are most of a server-side-applied object and nothing here
        // reads them: not keeping them halves the store (10,000 services).
        .modify(|obj| obj.managed_fields_mut().clear())
        .reflect(writer)
        .applied_objects()
        .predicate_filter(intent, PredicateConfig::default());
    let controller = Controller::for_stream(trigger, reader)
        .with_config(ControllerConfig::default().concurrency(concurrency))
        .reconcile_on(recovery_wakes::<K>(ctx.clone()));
    K::watch_related(controller, &ctx, namespace)
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
#[path = "driver_tests.rs"]
mod in_process;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::cluster::EcsClusterStatus;

    fn at(secs: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(secs).unwrap())
    }

    fn body() -> EcsClusterStatus {
        EcsClusterStatus {
            arn: Some("a".into()),
            ..Default::default()
        }
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
        let health = Health::ready(Reason::Active, "ok");
        let s = compose_status(body(), &health, &[], Some(4), &[], &at(100));
        assert_eq!(s.arn.as_deref(), Some("a"));
        assert_eq!(s.observed_generation, Some(4));
        assert_eq!(s.conditions[0].type_, "Ready");
        assert_eq!(s.conditions[0].status, "True");
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(
            json["conditions"][0]["lastTransitionTime"],
            "1970-01-01T00:01:40Z"
        );
    }

    #[test]
    fn whatever_a_kind_puts_in_the_driver_fields_is_replaced() {
        let mut stale = body();
        stale.observed_generation = Some(1);
        stale.conditions = conditions(
            &Health::stalled(Reason::Ecs("Old".into()), "x"),
            Some(1),
            &[],
            &at(1),
        );
        let s = compose_status(
            stale,
            &Health::ready(Reason::Active, ""),
            &[],
            Some(2),
            &[],
            &at(5),
        );
        assert_eq!(s.observed_generation, Some(2));
        assert_eq!(s.conditions.len(), 3);
        assert!(s.conditions.iter().all(|c| c.reason == "Active"));
    }

    #[test]
    fn recomposing_an_unchanged_status_is_identical() {
        // Same input, later clock: must be equal so no write happens.
        let h = Health::ready(Reason::Active, "ok");
        let first = compose_status(body(), &h, &[], Some(1), &[], &at(100));
        let second = compose_status(body(), &h, &[], Some(1), &first.conditions, &at(200));
        assert_eq!(first, second);
    }

    #[test]
    fn kind_conditions_come_first_and_survive_a_failed_pass() {
        let complete = KindCondition {
            type_: "Complete".into(),
            status: true,
            reason: Reason::Succeeded,
            message: "1/1".into(),
        };
        let health = Health::ready(Reason::Succeeded, "1/1");
        let s = compose_status(
            body(),
            &health,
            std::slice::from_ref(&complete),
            Some(1),
            &[],
            &at(10),
        );
        assert_eq!(s.conditions[0].type_, "Complete");
        assert_eq!(s.conditions.len(), 4);
        // A later failure recomposes from what was there: Complete stays, same time.
        let carried = kind_conditions(&s.conditions);
        assert_eq!(carried, vec![complete]);
        let failed = Health::progressing(Reason::EcsUnavailable, "x");
        let again = compose_status(
            s.clone(),
            &failed,
            &carried,
            Some(1),
            &s.conditions,
            &at(20),
        );
        assert_eq!(again.conditions[0], s.conditions[0]);
    }

    #[test]
    fn a_transient_failure_keeps_a_ready_resource_ready() {
        let err = Error::Ecs {
            operation: "DescribeClusters",
            code: None,
            message: "timeout".into(),
            class: ErrorClass::Retryable,
        };
        assert_eq!(error_health(&err, true), None);
        assert!(matches!(
            error_health(&err, false),
            Some(Health::Progressing { .. })
        ));
        assert_eq!(error_event_reason(&err, 1), Some(Reason::ReconcileFailed));
        assert_eq!(error_event_reason(&err, 2), None);
        let terminal = Error::InvalidSpec("bad".into());
        assert!(matches!(
            error_health(&terminal, true),
            Some(Health::Stalled { .. })
        ));
        assert_eq!(
            error_event_reason(&terminal, 7),
            Some(Reason::ReconcileFailed)
        );
    }
}
