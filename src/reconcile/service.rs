//! `EcsService`: the I/O around the pure plan in `service_plan`: resolve
//! references, observe (batched), act, report.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use futures::StreamExt;
use kube::runtime::reflector::{ObjectRef, Store};
use tracing::{debug, warn};

use kube::ResourceExt;
use kube::runtime::controller::Controller;

use super::owned::{self, Claimant, Release};
use super::refs::{self, Resolved};
use super::service_plan::{self, Cleanup, Converge, Desired, Plan};
use super::service_scaling_plan;
use super::{Context, Managed, Note, Outcome, key_of};
use crate::api::common::{Health, RECONCILING, Reason, STALLED, is_condition_true, ownership_tags};
use crate::api::service::{EcsService, EcsServiceSpec, EcsServiceStatus};
use crate::ecs::service::{self as svc, ObservedService, ServiceUpdate};
use crate::ecs::set_tags;
use crate::ecs::task_definition::td_short;
use crate::error::Error;

/// How soon a service waiting for a reference looks again. The shared watch of the
/// referenced kind wakes it when the reference changes; this is only a safety net
/// (a 30 s poll cost 60 reconciles a second with 1,800 services waiting for their
/// task definitions to register).
pub const REFERENCE_POLL: Duration = Duration::from_secs(300);

/// Time until the next multiple of `interval` since the Unix epoch. Services resync
/// on these shared boundaries, so one resync round of a cluster's services happens
/// at once and shares its batched DescribeServices calls.
pub fn until_aligned(interval: Duration, now: SystemTime) -> Duration {
    let period = interval.as_millis().max(1);
    let since = now
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    let left = period - since % period;
    // A little past the boundary, so the whole round sees it as passed.
    Duration::from_millis(u64::try_from(left).unwrap_or(0) + 50)
}

/// A poll of about `every` moved to a shared boundary (a multiple of `every` since
/// the epoch) at least half of `every` away: services polling in the same slot (all
/// those created in one 5 s window) share their DescribeServices calls, 10 a call.
pub fn poll_aligned(every: Duration, now: SystemTime) -> Duration {
    let half = every / 2;
    half + until_aligned(every, now + half)
}

/// When a steady service is reconciled without a change in ECS: `SWEPT_SAFETY`
/// resyncs away, from its own last reconcile (spread out, not all at once). It reads
/// nothing: the sweep keeps every copy at most one interval old.
fn safety_net(resync: Duration) -> Duration {
    resync * super::driver::SWEPT_SAFETY
}

/// Every resync boundary: one batched read of the ECS services of all EcsServices
/// (ceil(N/10) DescribeServices per cluster), and a reconcile only of those whose
/// ECS service changed since their last reconcile. A steady service costs a tenth
/// of a read per resync and no reconcile, no status write.
fn sweeps(
    ctx: Arc<Context>,
    store: Store<EcsService>,
) -> impl futures::Stream<Item = ObjectRef<EcsService>> + Send + 'static {
    let start = (ctx, store, true);
    futures::stream::unfold(start, |(ctx, store, first)| async move {
        if first {
            prime(&ctx, &store).await;
        }
        tokio::time::sleep(until_aligned(ctx.resync, SystemTime::now())).await;
        let changed = crate::ecs::acting_as(EcsService::KIND, sweep(&ctx, &store)).await;
        Some((futures::stream::iter(changed), (ctx, store, false)))
    })
    .flatten()
}

/// Makes every service a peer of the first reads after a start, so a restart over
/// N services reads 10 a call. The store fills all at once when its first list is
/// done, so the first object seen means the list is in. (Not `wait_until_ready`: its
/// one-waker channel wakes only the last of several waiters, here the controller.)
async fn prime(ctx: &Context, store: &Store<EcsService>) {
    for _ in 0..600 {
        if !store.is_empty() {
            for (cluster, members) in by_cluster(store) {
                let names: Vec<String> = members.into_iter().map(|(n, _)| n).collect();
                ctx.services.know(&cluster, &names);
            }
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Whether this EcsService never had an ECS service (no ARN seen, no create sent).
fn never_created(status: &EcsServiceStatus) -> bool {
    status.arn.is_none() && status.last_create_time.is_none()
}

/// The ECS names of the EcsServices in `cluster` that never had an ECS service
/// (their first reads are batched, see `ServiceObserver::observe_new`).
fn never_created_in(ctx: &Context, cluster: &str) -> Vec<String> {
    let Some(store) = ctx.service_store.get() else {
        return vec![];
    };
    let cluster = svc::cluster_name(cluster);
    let in_cluster = |s: &EcsService| {
        let placement = &s.spec.placement;
        let named = match (&placement.cluster, &placement.cluster_ref) {
            (Some(name), _) => Some(name.clone()),
            (None, Some(r)) => {
                let ns = s.namespace().unwrap_or_default();
                let found = ctx.clusters.cached(&ns, &r.name);
                found.and_then(|c| c.status.as_ref()?.cluster_name.clone())
            }
            (None, None) => None,
        };
        named.is_some_and(|n| svc::cluster_name(&n) == cluster)
    };
    store
        .state()
        .iter()
        .filter(|s| s.metadata.deletion_timestamp.is_none())
        .filter(|s| s.status.as_ref().is_none_or(never_created))
        .filter(|s| in_cluster(s))
        .map(|s| s.ecs_name())
        .collect()
}

/// The EcsServices whose ECS service exists and is not being deleted, by cluster.
fn by_cluster(store: &Store<EcsService>) -> BTreeMap<String, Vec<(String, ObjectRef<EcsService>)>> {
    let mut by_cluster: BTreeMap<String, Vec<(String, ObjectRef<EcsService>)>> = BTreeMap::new();
    for svc in store.state() {
        let status = svc.previous();
        let (Some(cluster), Some(_)) = (status.cluster, status.arn) else {
            continue;
        };
        if svc.metadata.deletion_timestamp.is_none() {
            let member = (svc.ecs_name(), ObjectRef::from(svc.as_ref()));
            by_cluster.entry(cluster).or_default().push(member);
        }
    }
    by_cluster
}

/// One sweep: per cluster, the services ECS has and no deletion is under way for.
async fn sweep(ctx: &Context, store: &Store<EcsService>) -> Vec<ObjectRef<EcsService>> {
    let mut wake = Vec::new();
    for (cluster, members) in by_cluster(store) {
        let names: Vec<String> = members.iter().map(|(n, _)| n.clone()).collect();
        // Copies younger than half an interval are from the services' own reads.
        let older_than = ctx.resync / 2;
        match ctx
            .services
            .sweep(&ctx.ecs, &cluster, &names, older_than)
            .await
        {
            Ok(changed) => {
                let changed: BTreeSet<String> = changed.into_iter().collect();
                wake.extend(
                    members
                        .into_iter()
                        .filter(|(n, _)| changed.contains(n))
                        .map(|(_, o)| o),
                );
            }
            // ECS is unavailable: nothing is known to have changed; the next sweep
            // (or a reconcile's own read) tries again.
            Err(e) => warn!(cluster = %cluster, error = %e, "resync sweep failed"),
        }
    }
    debug!(woken = wake.len(), "resync sweep");
    ctx.metrics.sweeps_total.inc();
    ctx.metrics.sweep_changed_total.inc_by(wake.len() as u64);
    wake
}

/// What the operator changed, one Event per ECS action. A new revision from the
/// referenced task definition is a rollout, not drift.
fn change_notes(
    name: &str,
    converge: &Converge,
    drift: bool,
    rollout_to: Option<(&str, &str)>,
) -> Vec<Note> {
    let reason = if drift {
        Reason::DriftCorrected
    } else {
        Reason::Updated
    };
    let mut notes = Vec::new();
    let (tags, mut fields): (Vec<&String>, Vec<&String>) = converge
        .changed
        .iter()
        .partition(|f| f.starts_with("tags["));
    if let Some((from, to)) = rollout_to {
        fields.retain(|f| f.as_str() != "taskDefinition");
        notes.push(Note::normal(
            Reason::RolloutStarted,
            "UpdateService",
            format!(
                "ECS service {name}: deploying {} (was {})",
                td_short(to),
                td_short(from)
            ),
        ));
    }
    if !fields.is_empty() {
        let list: Vec<&str> = fields.iter().map(|s| s.as_str()).collect();
        notes.push(Note::normal(
            reason.clone(),
            "UpdateService",
            format!("ECS service {name}: updated {}", list.join(", ")),
        ));
    }
    if !tags.is_empty() {
        let list: Vec<&str> = tags.iter().map(|s| s.as_str()).collect();
        notes.push(Note::normal(
            reason,
            "TagResource",
            format!("ECS service {name}: set {}", list.join(", ")),
        ));
    }
    notes
}

/// Whether the plan writes ECS's desiredCount.
fn writes_count(plan: &Plan) -> bool {
    matches!(plan, Plan::Converge(c) if c.update.desired_count.is_some())
}

impl refs::References for EcsService {
    fn placement(&self) -> &crate::api::common::Placement {
        &self.spec.placement
    }
}

/// Where the service goes: its cluster and resolved task definition.
struct Target {
    cluster: String,
    task_definition: String,
}

impl EcsService {
    fn previous(&self) -> EcsServiceStatus {
        self.status.clone().unwrap_or_default()
    }

    /// The cluster and task definition, or the outcome of waiting for them.
    async fn resolve(
        &self,
        ctx: &Context,
    ) -> Result<Result<Target, Outcome<EcsServiceStatus>>, Error> {
        let ns = self.namespace().unwrap_or_default();
        let waiting = |message: String| {
            let health = Health::progressing(Reason::WaitingForReference, message);
            Outcome::new(self.previous(), health).requeue(REFERENCE_POLL)
        };
        let cluster = match refs::cluster_of(self, ctx, &ns).await? {
            Resolved::Found(c) => c,
            Resolved::Waiting(m) => return Ok(Err(waiting(m))),
        };
        let task_definition = match refs::task_definition_of(self, ctx, &ns).await? {
            Resolved::Found(t) => t,
            Resolved::Waiting(m) => return Ok(Err(waiting(m))),
        };
        Ok(Ok(Target {
            cluster,
            task_definition,
        }))
    }

    /// The service as ECS has it. A spec change or work in progress (a rollout, an
    /// update just sent) needs it as it is now; anything else (Ready, or Stalled
    /// waiting for a person) shares a batched read with the cluster's other services.
    async fn observe(
        &self,
        ctx: &Context,
        cluster: &str,
    ) -> Result<Option<ObservedService>, Error> {
        let previous = self.previous();
        let in_progress = previous.observed_generation != self.metadata.generation
            || is_condition_true(&previous.conditions, RECONCILING);
        let name = self.ecs_name();
        if never_created(&previous) {
            let pending = || never_created_in(ctx, cluster);
            return ctx
                .services
                .observe_new(&ctx.ecs, cluster, &name, pending)
                .await;
        }
        let max_age = if in_progress {
            crate::ecs::service::FRESH
        } else {
            ctx.services.window()
        };
        ctx.services
            .observe(&ctx.ecs, cluster, &name, max_age)
            .await
    }

    /// `spec` is this resource's spec as ECS should see it
    /// (`service_scaling_plan::spec_for_ecs`).
    #[allow(clippy::too_many_arguments)]
    fn desired<'a>(
        &'a self,
        me: &'a Claimant,
        previous: &'a EcsServiceStatus,
        name: &'a str,
        target: &'a Target,
        living: Option<&'a BTreeSet<String>>,
        spec: &'a EcsServiceSpec,
    ) -> Desired<'a> {
        let ns = self.namespace().unwrap_or_default();
        let mut tags = self.spec.tags.clone();
        tags.extend(ownership_tags(&ns, &self.name_any(), &me.uid));
        Desired {
            name,
            me,
            spec,
            task_definition: &target.task_definition,
            tags,
            managed_tag_keys: &previous.managed_tag_keys,
            applied_task_definition: previous.applied_task_definition.as_deref(),
            applied_redeploy_token: previous.applied_redeploy_token.as_deref(),
            rolled_back_task_definition: previous.rolled_back_task_definition.as_deref(),
            replaced_task_definition: previous.replaced_task_definition.as_deref(),
            recently_created: service_plan::recently_created(
                previous.last_create_time.as_deref(),
                k8s_openapi::jiff::Timestamp::now(),
            ),
            living,
        }
    }

    async fn create(
        &self,
        ctx: &Context,
        desired: &Desired<'_>,
        target: &Target,
    ) -> Result<Outcome<EcsServiceStatus>, Error> {
        let (name, cluster, td) = (desired.name, &target.cluster, &target.task_definition);
        let previous = self.previous();
        let token = service_plan::client_token(
            &desired.me.uid,
            self.metadata.generation,
            previous.creations,
        );
        let created = svc::create(
            &ctx.ecs,
            cluster,
            name,
            td,
            desired.spec,
            &desired.tags,
            &token,
        )
        .await;
        ctx.services.invalidate(cluster, name);
        let created = created.map_err(|e| service_plan::classify_create_error(name, e))?;
        let observed = service_plan::observed_status(previous, cluster, Some(&created));
        let now = super::now().0.to_string();
        let mut status = service_plan::created_status(observed, desired.spec, td, &now);
        status.count_owner = Some(service_scaling_plan::count_owner(&self.spec, false));
        let short = td_short(td);
        let health = Health::progressing(
            Reason::Created,
            format!("created ECS service {name} running {short}"),
        );
        let message = format!("created ECS service {name} in cluster {cluster} with {short}");
        let poll = poll_aligned(service_plan::ROLLOUT_POLL, SystemTime::now());
        ctx.services.expect(cluster, name, poll);
        Ok(Outcome::new(status, health)
            .requeue(poll)
            .note(Note::normal(Reason::Created, "CreateService", message)))
    }

    /// Sends the converge's writes; the Events that say what changed.
    async fn write(
        &self,
        ctx: &Context,
        cluster: &str,
        obs: &ObservedService,
        converge: &Converge,
    ) -> Result<Vec<Note>, Error> {
        let name = self.ecs_name();
        let previous = self.previous();
        let drift = previous.observed_generation == self.metadata.generation;
        set_tags(&ctx.ecs, &obs.arn, &converge.tag, &converge.untag).await?;
        if !converge.update.is_empty() {
            svc::update(&ctx.ecs, cluster, &name, &converge.update, Some(obs)).await?;
        }
        ctx.services.invalidate(cluster, &name);
        // The reference moved on to a revision never applied: a rollout.
        let rollout_to = converge
            .update
            .task_definition
            .as_deref()
            .filter(|td| previous.applied_task_definition.as_deref() != Some(*td))
            .map(|td| (obs.task_definition.as_str(), td));
        Ok(change_notes(
            &name,
            converge,
            drift && converge.adopt.is_none(),
            rollout_to,
        ))
    }

    async fn converge(
        &self,
        ctx: &Context,
        target: &Target,
        obs: ObservedService,
        converge: Converge,
        aligned: Duration,
        external: bool,
    ) -> Result<Outcome<EcsServiceStatus>, Error> {
        let name = self.ecs_name();
        let what = format!("ECS service {name}");
        let mut notes: Vec<Note> = converge
            .adopt
            .map(|how| owned::adopted_note(&what, how, Self::KIND))
            .into_iter()
            .collect();
        let observed = service_plan::observed_status(self.previous(), &target.cluster, Some(&obs));
        // The same update again and again means ECS does not take it (or reports it
        // differently): say so instead of calling it forever.
        let fingerprint = converge.writes().then(|| {
            format!(
                "{:?}{:?}{:?}",
                converge.update, converge.tag, converge.untag
            )
        });
        if let Err(health) = ctx
            .updates
            .check(&key_of(self), fingerprint, &what, &converge.changed)
        {
            let note = owned::not_applied_note(&health, "UpdateService");
            return Ok(Outcome::new(observed, health).requeue(aligned).note(note));
        }
        if converge.writes() {
            notes.extend(self.write(ctx, &target.cluster, &obs, &converge).await?);
        }
        let td = &target.task_definition;
        let mut status = service_plan::converged_status(observed, &self.spec, td, &obs, &converge);
        let (mut health, mut requeue) = service_plan::converge_health(&name, td, &obs, &converge);
        let scaled = self.scale(ctx, &target.cluster).await?;
        let external = external || scaled.external;
        status.count_owner = Some(service_scaling_plan::count_owner(&self.spec, external));
        status.auto_scaling = scaled.status;
        notes.extend(scaled.notes);
        notes.extend(self.count_note(obs.desired_count, external));
        if let Some((scaling_health, poll)) = scaled.health {
            health = scaling_health;
            requeue = Some(poll);
        }
        if let Some(poll) = scaled.poll {
            requeue = Some(requeue.map_or(poll, |r| r.min(poll)));
        }
        let already_reported = self
            .previous()
            .conditions
            .iter()
            .any(|x| x.type_ == STALLED && x.status == "True" && x.reason == "RolledBack");
        if converge.rolled_back && !already_reported {
            notes.push(Note::warning(
                Reason::RolledBack,
                "Rollout",
                health.message().to_string(),
            ));
        }
        let outcome = Outcome::new(status, health).notes(notes);
        Ok(match requeue {
            Some(every) => {
                let poll = poll_aligned(every, SystemTime::now());
                ctx.services.expect(&target.cluster, &name, poll);
                outcome.requeue(poll)
            }
            // Application Auto Scaling is not in the sweep: an autoscaled service looks
            // at its target, policies and actions at every resync boundary.
            None if self.scaler_holds_count() => outcome.requeue(aligned),
            // Nothing under way: the sweep looks at every resync; this is its safety net.
            None => outcome.requeue(safety_net(ctx.resync)).swept(),
        })
    }

    /// The cluster this resource's service lives in, for deletion: as recorded, or
    /// resolved (None: never created).
    async fn cluster_for_cleanup(&self, ctx: &Context) -> Result<Option<String>, Error> {
        if let Some(c) = &self.previous().cluster {
            return Ok(Some(c.clone()));
        }
        let ns = self.namespace().unwrap_or_default();
        match refs::cluster_of(self, ctx, &ns).await? {
            Resolved::Found(c) => Ok(Some(c)),
            Resolved::Waiting(_) => Ok(None),
        }
    }

    async fn delete(
        &self,
        ctx: &Context,
        cluster: &str,
        scale_down: bool,
    ) -> Result<Vec<Note>, Error> {
        let name = self.ecs_name();
        if scale_down {
            let zero = ServiceUpdate {
                desired_count: Some(0),
                ..Default::default()
            };
            svc::update(&ctx.ecs, cluster, &name, &zero, None).await?;
        }
        svc::delete(&ctx.ecs, cluster, &name).await?;
        ctx.services.invalidate(cluster, &name);
        let message =
            format!("scaled ECS service {name} to 0 and deleted it; waiting until INACTIVE");
        super::driver::publish(
            ctx,
            self,
            &[Note::normal(Reason::Deleting, "DeleteService", message)],
        )
        .await;
        Err(Error::DeleteInProgress {
            reason: Reason::Draining,
            message: format!("ECS service {name} deleted; waiting until it is INACTIVE"),
        })
    }
}

impl Managed for EcsService {
    const KIND: &'static str = "EcsService";

    fn watch_related(
        controller: Controller<Self>,
        ctx: &std::sync::Arc<Context>,
        _namespace: Option<&str>,
    ) -> Controller<Self> {
        let _ = ctx.service_store.set(controller.store());
        let sweeps = sweeps(ctx.clone(), controller.store());
        refs::watch_references(controller, ctx).reconcile_on(sweeps)
    }

    async fn apply(&self, ctx: &Context) -> Result<Outcome<EcsServiceStatus>, Error> {
        let me = Claimant::of(self, self.spec.adopt_existing)?;
        let target = match self.resolve(ctx).await? {
            Ok(target) => target,
            Err(waiting) => return Ok(waiting),
        };
        let observed = self.observe(ctx, &target.cluster).await?;
        let living =
            owned::living_for::<Self>(ctx, observed.as_ref().map(|o| &o.tags), &me.uid).await?;
        let previous = self.previous();
        let name = self.ecs_name();
        let held = self.scaler_holds_count();
        let mut spec = service_scaling_plan::spec_for_ecs(&self.spec, observed.is_none(), held);
        let plan_for = |spec: &EcsServiceSpec| {
            let desired = self.desired(&me, &previous, &name, &target, living.as_ref(), spec);
            service_plan::plan(&desired, observed.as_ref())
        };
        let mut plan = plan_for(&spec);
        // A desiredCount write waits for a look at Application Auto Scaling: a target
        // registered elsewhere owns the count.
        let mut external = false;
        if !held && writes_count(&plan) && self.external_target(ctx, &target.cluster).await {
            external = true;
            spec = service_scaling_plan::spec_for_ecs(&self.spec, false, true);
            plan = plan_for(&spec);
        }
        let desired = self.desired(&me, &previous, &name, &target, living.as_ref(), &spec);
        let aligned = until_aligned(ctx.resync, SystemTime::now());
        let unobserved = || service_plan::observed_status(self.previous(), &target.cluster, None);
        match (plan, observed) {
            (Plan::Refuse(health), _) => {
                // The Event says what the condition says (NotOwned, ImmutableField,
                // DeployedElsewhere).
                let note = Note::warning(health.reason().clone(), "Reconcile", health.message());
                Ok(Outcome::new(unobserved(), health)
                    .requeue(aligned)
                    .note(note))
            }
            (Plan::Wait(health), _) => {
                Ok(Outcome::new(unobserved(), health).requeue(service_plan::DRAIN_POLL))
            }
            (Plan::Create, _) => self.create(ctx, &desired, &target).await,
            (Plan::Converge(c), Some(obs)) => {
                self.converge(ctx, &target, obs, *c, aligned, external)
                    .await
            }
            (Plan::Converge(_), None) => {
                Err(Error::Internal("converge planned without a service".into()))
            }
        }
    }

    async fn cleanup(&self, ctx: &Context) -> Result<Vec<Note>, Error> {
        let name = self.ecs_name();
        let uid = self.uid().unwrap_or_default();
        let Some(cluster) = self.cluster_for_cleanup(ctx).await? else {
            return Ok(vec![]);
        };
        let observed = ctx
            .services
            .observe(&ctx.ecs, &cluster, &name, Duration::ZERO)
            .await;
        // No cluster, no service: not one that is merely not visible yet.
        let (observed, cluster_gone) = match observed {
            Ok(o) => (o, false),
            Err(Error::Ecs { code: Some(c), .. }) if c == "ClusterNotFoundException" => {
                (None, true)
            }
            Err(e) => return Err(e),
        };
        let created = self
            .status
            .as_ref()
            .and_then(|s| s.last_create_time.as_deref());
        let recently_created = !cluster_gone
            && service_plan::recently_created(created, k8s_openapi::jiff::Timestamp::now());
        let policy = self.spec.deletion_policy;
        match service_plan::plan_cleanup(&uid, policy, observed.as_ref(), recently_created) {
            Cleanup::Done(why) => {
                ctx.services.forget(&cluster, &name);
                Ok(match why {
                    Release::NotOwned => vec![Note::normal(
                        Reason::Released,
                        "Delete",
                        format!("ECS service {name} is not owned by this resource; left untouched"),
                    )],
                    _ => vec![],
                })
            }
            Cleanup::Untag => {
                if let Some(o) = &observed {
                    set_tags(
                        &ctx.ecs,
                        &o.arn,
                        &Default::default(),
                        &owned::ownership_keys(),
                    )
                    .await?;
                }
                ctx.services.forget(&cluster, &name);
                Ok(vec![Note::normal(
                    Reason::Orphaned,
                    "UntagResource",
                    format!(
                        "ECS service {name} kept running (deletionPolicy: Orphan); ownership tags removed"
                    ),
                )])
            }
            Cleanup::NotSeenYet => Err(Error::DeleteInProgress {
                reason: Reason::WaitingForVisibility,
                message: format!(
                    "created ECS service {name} moments ago; waiting for DescribeServices to report it before deleting it"
                ),
            }),
            Cleanup::Draining => Err(Error::DeleteInProgress {
                reason: Reason::Draining,
                message: format!("ECS service {name} is DRAINING; waiting until it is INACTIVE"),
            }),
            Cleanup::Delete { scale_down } => {
                // The target first: a scaler left registered would scale the draining
                // service back up.
                self.deregister_for_delete(ctx, &cluster).await?;
                self.delete(ctx, &cluster, scale_down).await
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resyncs_land_just_after_shared_boundaries() {
        let at = |ms: u64| UNIX_EPOCH + Duration::from_millis(ms);
        let i = Duration::from_secs(60);
        assert_eq!(until_aligned(i, at(0)), Duration::from_millis(60_050));
        assert_eq!(until_aligned(i, at(59_000)), Duration::from_millis(1_050));
        assert_eq!(
            until_aligned(i, at(60_001)),
            Duration::from_millis(59_999 + 50)
        );
        // Two services reconciled at different times in a round resync together.
        let a = at(120_500) + until_aligned(i, at(120_500));
        let b = at(150_000) + until_aligned(i, at(150_000));
        assert_eq!(a, b);
    }

    #[test]
    fn polls_share_a_boundary_at_least_half_a_poll_away() {
        let at = |ms: u64| UNIX_EPOCH + Duration::from_millis(ms);
        let every = Duration::from_secs(5);
        // Created 1 s into a slot: the next boundary (4 s away) is far enough.
        assert_eq!(
            poll_aligned(every, at(101_000)),
            Duration::from_millis(4_050)
        );
        // Created 4 s into it: 1 s is too soon for ECS to have moved; the one after.
        assert_eq!(
            poll_aligned(every, at(104_000)),
            Duration::from_millis(6_050)
        );
        // Everything created between 2.5 s into one slot and 2.5 s into the next polls
        // at the same instant.
        let when = |ms| at(ms) + poll_aligned(every, at(ms));
        assert_eq!(when(102_600), when(107_400));
        assert!(poll_aligned(every, at(102_500)) >= every / 2);
    }
}
