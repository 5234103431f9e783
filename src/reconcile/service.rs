//! `EcsService`: the I/O around the pure plan in `service_plan`: resolve
//! references, observe (batched), act, report.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kube::runtime::controller::Controller;
use kube::{Client, ResourceExt};
use serde_json::Value;

use super::refs::{self, Resolved};
use super::service_plan::{self, Cleanup, Converge, Desired, Plan};
use super::{Context, Managed, Note, Outcome};
use crate::api::common::{
    Health, OWNER_TAG, RECONCILING, STALLED, UID_TAG, is_condition_true, ownership_tags,
};
use crate::api::service::{EcsService, EcsServiceStatus, LocalRef};
use crate::ecs::service::{self as svc, ObservedService, ServiceUpdate};
use crate::ecs::set_tags;
use crate::error::Error;

/// How soon a service waiting for a reference looks again (the watch on the
/// referenced kind normally wakes it sooner).
const REFERENCE_POLL: Duration = Duration::from_secs(30);

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

/// The status the resource had, without the driver's fields, for outcomes that
/// did not observe anything new.
fn previous_body(s: &EcsService) -> EcsServiceStatus {
    let mut st = s.status.clone().unwrap_or_default();
    st.conditions.clear();
    st.observed_generation = None;
    st
}

fn to_value(st: &EcsServiceStatus) -> Value {
    serde_json::to_value(st).unwrap_or(Value::Null)
}

fn status_from(
    base: EcsServiceStatus,
    cluster: &str,
    obs: Option<&ObservedService>,
) -> EcsServiceStatus {
    let mut st = base;
    st.cluster = Some(cluster.to_string());
    if let Some(o) = obs {
        st.service_name = Some(o.name.clone());
        st.arn = Some(o.arn.clone());
        st.status = Some(o.status.clone());
        st.desired_count = Some(o.desired_count);
        st.running_count = Some(o.running_count);
        st.pending_count = Some(o.pending_count);
        st.task_definition = o.primary().map(|p| p.task_definition.clone());
        st.rollout_state = o.primary().and_then(|p| p.rollout_state.clone());
        st.deployments = o.deployments.clone();
        st.task_sets = o.task_sets.clone();
        st.events = service_plan::status_events(&o.events);
    }
    st
}

/// What the operator changed, one Event per ECS action. A new revision from the
/// referenced task definition is a rollout, not drift.
fn change_notes(
    name: &str,
    c: &Converge,
    drift: bool,
    rollout_to: Option<(&str, &str)>,
) -> Vec<Note> {
    let reason = if drift { "DriftCorrected" } else { "Updated" };
    let mut notes = Vec::new();
    let (tags, mut fields): (Vec<&String>, Vec<&String>) =
        c.changed.iter().partition(|f| f.starts_with("tags["));
    if let Some((from, to)) = rollout_to {
        fields.retain(|f| f.as_str() != "taskDefinition");
        notes.push(Note::normal(
            "RolloutStarted",
            "UpdateService",
            format!(
                "ECS service {name}: deploying {} (was {})",
                service_plan::td_short(to),
                service_plan::td_short(from)
            ),
        ));
    }
    if !fields.is_empty() {
        let list: Vec<&str> = fields.iter().map(|s| s.as_str()).collect();
        notes.push(Note::normal(
            reason,
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

impl refs::References for EcsService {
    fn cluster_name(&self) -> Option<&String> {
        self.spec.cluster.as_ref()
    }
    fn task_definition_name(&self) -> Option<&String> {
        self.spec.task_definition.as_ref()
    }
    fn cluster_ref(&self) -> Option<&LocalRef> {
        self.spec.cluster_ref.as_ref()
    }
    fn task_definition_ref(&self) -> Option<&LocalRef> {
        self.spec.task_definition_ref.as_ref()
    }
}

impl EcsService {
    /// True if `observed` is under this resource's owner tag with the uid of an
    /// EcsService that is gone (the apiserver is asked only in that case).
    async fn own_history(
        &self,
        ctx: &Context,
        ns: &str,
        uid: &str,
        observed: Option<&ObservedService>,
    ) -> Result<bool, Error> {
        let owner = crate::api::common::owner_tag_value(ns, &self.name_any());
        match observed {
            Some(o) => super::is_own_history::<EcsService>(ctx, &o.tags, &owner, uid).await,
            None => Ok(false),
        }
    }
}

impl Managed for EcsService {
    const KIND: &'static str = "EcsService";

    fn watch_related(
        controller: Controller<Self>,
        client: &Client,
        namespace: Option<&str>,
    ) -> Controller<Self> {
        refs::watch_references(controller, client, namespace)
    }

    async fn apply(&self, ctx: &Context) -> Result<Outcome, Error> {
        let ns = self.namespace().unwrap_or_default();
        let name = self.ecs_name();
        let uid = self
            .uid()
            .ok_or_else(|| Error::Config(format!("EcsService {ns}/{name} has no uid")))?;
        let prev = self.status.clone().unwrap_or_default();

        let waiting = |message: String| Outcome {
            status: to_value(&previous_body(self)),
            health: Health::progressing("WaitingForReference", message),
            requeue: Some(REFERENCE_POLL),
            notes: vec![],
        };
        let cluster = match refs::cluster_of(self, &ctx.kube, &ns).await? {
            Resolved::Found(c) => c,
            Resolved::Waiting(m) => return Ok(waiting(m)),
        };
        let task_definition = match refs::task_definition_of(self, &ctx.kube, &ns).await? {
            Resolved::Found(t) => t,
            Resolved::Waiting(m) => return Ok(waiting(m)),
        };

        // A spec change or work in progress (a rollout, an update just sent) needs the
        // service as it is now; anything else (Ready, or Stalled waiting for a person)
        // shares a batched read with the other services of the cluster.
        let in_progress = prev.observed_generation != self.metadata.generation
            || is_condition_true(&prev.conditions, RECONCILING);
        let max_age = if in_progress {
            Duration::ZERO
        } else {
            ctx.services.window()
        };
        let observed = ctx
            .services
            .observe(&ctx.ecs, &cluster, &name, max_age)
            .await?;

        let mut tags = self.spec.tags.clone();
        tags.extend(ownership_tags(&ns, &self.name_any(), &uid));
        let desired = Desired {
            name: &name,
            uid: &uid,
            spec: &self.spec,
            task_definition: &task_definition,
            tags: tags.clone(),
            managed_tag_keys: &prev.managed_tag_keys,
            applied_task_definition: prev.applied_task_definition.as_deref(),
            applied_redeploy_token: prev.applied_redeploy_token.as_deref(),
            rolled_back_task_definition: prev.rolled_back_task_definition.as_deref(),
            replaced_task_definition: prev.replaced_task_definition.as_deref(),
            recently_created: service_plan::recently_created(
                prev.last_create_time.as_deref(),
                k8s_openapi::jiff::Timestamp::now(),
            ),
            own_history: self.own_history(ctx, &ns, &uid, observed.as_ref()).await?,
        };
        let managed_tag_keys: Vec<String> = self.spec.tags.keys().cloned().collect();
        let aligned = until_aligned(ctx.resync, SystemTime::now());

        match service_plan::plan(&desired, observed.as_ref()) {
            Plan::Refuse(health) => {
                let note = Note::warning(
                    match &health {
                        Health::Stalled { reason, .. } if reason == "NotOwned" => "NotOwned",
                        _ => "ImmutableField",
                    },
                    "Reconcile",
                    health.message().to_string(),
                );
                Ok(Outcome {
                    status: to_value(&status_from(previous_body(self), &cluster, None)),
                    health,
                    requeue: Some(aligned),
                    notes: vec![note],
                })
            }
            Plan::Wait(health) => Ok(Outcome {
                status: to_value(&status_from(previous_body(self), &cluster, None)),
                health,
                requeue: Some(service_plan::DRAIN_POLL),
                notes: vec![],
            }),
            Plan::Create => {
                let token =
                    service_plan::client_token(&uid, self.metadata.generation, prev.creations);
                let created = svc::create(
                    &ctx.ecs,
                    &cluster,
                    &name,
                    &task_definition,
                    &self.spec,
                    &tags,
                    &token,
                )
                .await;
                ctx.services.invalidate(&cluster, &name);
                let created = match created {
                    Ok(c) => c,
                    Err(e) => return Err(service_plan::classify_create_error(&name, e)),
                };
                let mut st = status_from(previous_body(self), &cluster, Some(&created));
                st.applied_task_definition = Some(task_definition.clone());
                st.applied_redeploy_token = self.spec.redeploy_token.clone();
                st.managed_tag_keys = managed_tag_keys;
                st.creations = prev.creations.saturating_add(1);
                st.rolled_back_task_definition = None;
                st.replaced_task_definition = None;
                st.last_create_time = Some(super::now().0.to_string());
                Ok(Outcome {
                    status: to_value(&st),
                    health: Health::progressing(
                        "Created",
                        format!(
                            "created ECS service {name} running {}",
                            service_plan::td_short(&task_definition)
                        ),
                    ),
                    requeue: Some(service_plan::ROLLOUT_POLL),
                    notes: vec![Note::normal(
                        "Created",
                        "CreateService",
                        format!(
                            "created ECS service {name} in cluster {cluster} with {}",
                            service_plan::td_short(&task_definition)
                        ),
                    )],
                })
            }
            Plan::Converge(c) => {
                let Some(obs) = observed else {
                    return Err(Error::Config("converge planned without a service".into()));
                };
                let mut notes = Vec::new();
                if c.adopt {
                    let how = if desired.own_history {
                        "left by an earlier EcsService of this name that was deleted"
                    } else {
                        "(adoptExisting)"
                    };
                    notes.push(Note::normal(
                        "Adopted",
                        "TagResource",
                        format!("adopted existing ECS service {name} {how}"),
                    ));
                }
                // The same update again and again means ECS does not take it (or
                // reports it differently): say so instead of calling it forever.
                if let Err(health) = ctx.updates.check(
                    &super::key_of(self),
                    c.writes()
                        .then(|| format!("{:?}{:?}{:?}", c.update, c.tag, c.untag)),
                    &format!("ECS service {name}"),
                    &c.changed,
                ) {
                    let st = status_from(previous_body(self), &cluster, Some(&obs));
                    let note = Note::warning("UpdateNotApplied", "UpdateService", health.message());
                    return Ok(Outcome {
                        status: to_value(&st),
                        health,
                        requeue: Some(aligned),
                        notes: vec![note],
                    });
                }
                if c.writes() {
                    let drift = prev.observed_generation == self.metadata.generation;
                    set_tags(&ctx.ecs, &obs.arn, &c.tag, &c.untag).await?;
                    if !c.update.is_empty() {
                        svc::update(&ctx.ecs, &cluster, &name, &c.update, Some(&obs)).await?;
                    }
                    ctx.services.invalidate(&cluster, &name);
                    // The reference moved on to a revision never applied: a rollout.
                    let rollout_to = c
                        .update
                        .task_definition
                        .as_deref()
                        .filter(|td| prev.applied_task_definition.as_deref() != Some(*td))
                        .map(|td| (obs.task_definition.as_str(), td));
                    notes.extend(change_notes(&name, &c, drift && !c.adopt, rollout_to));
                }
                let mut st = status_from(previous_body(self), &cluster, Some(&obs));
                if c.update.task_definition.is_some() {
                    st.replaced_task_definition = Some(obs.task_definition.clone());
                }
                if c.update.task_definition.is_some()
                    || service_plan::same_task_definition(&task_definition, &obs.task_definition)
                {
                    st.applied_task_definition = Some(task_definition.clone());
                }
                st.applied_redeploy_token = self.spec.redeploy_token.clone();
                st.managed_tag_keys = managed_tag_keys;
                st.rolled_back_task_definition = if c.rolled_back {
                    Some(task_definition.clone())
                } else if c.update.task_definition.is_some() || c.update.force_new_deployment {
                    None
                } else {
                    prev.rolled_back_task_definition.clone()
                };
                let (health, requeue) = if is_rollout(&c.update) {
                    (
                        Health::progressing(
                            "RolloutStarted",
                            format!(
                                "asked ECS to deploy {}",
                                service_plan::td_short(&task_definition)
                            ),
                        ),
                        Some(service_plan::ROLLOUT_POLL),
                    )
                } else if !c.update.is_empty() {
                    // Report the effect once ECS has it, shortly.
                    (
                        Health::progressing(
                            "Updating",
                            format!("updating ECS service {name}: {}", c.changed.join(", ")),
                        ),
                        Some(Duration::from_secs(2)),
                    )
                } else {
                    service_plan::health(&obs, &task_definition, c.rolled_back)
                };
                let already_reported = prev
                    .conditions
                    .iter()
                    .any(|x| x.type_ == STALLED && x.status == "True" && x.reason == "RolledBack");
                if c.rolled_back && !already_reported {
                    notes.push(Note::warning(
                        "RolledBack",
                        "Rollout",
                        health.message().to_string(),
                    ));
                }
                Ok(Outcome {
                    status: to_value(&st),
                    health,
                    requeue: Some(requeue.unwrap_or(aligned)),
                    notes,
                })
            }
        }
    }

    async fn cleanup(&self, ctx: &Context) -> Result<Vec<Note>, Error> {
        let ns = self.namespace().unwrap_or_default();
        let name = self.ecs_name();
        let uid = self.uid().unwrap_or_default();
        let prev = self.status.clone().unwrap_or_default();
        let cluster = match &prev.cluster {
            Some(c) => c.clone(),
            None => match refs::cluster_of(self, &ctx.kube, &ns).await {
                Ok(Resolved::Found(c)) => c,
                // No status and no cluster to look in: never created.
                Ok(Resolved::Waiting(_)) => return Ok(vec![]),
                Err(e) => return Err(e),
            },
        };
        let observed = ctx
            .services
            .observe(&ctx.ecs, &cluster, &name, Duration::ZERO)
            .await;
        let observed = match observed {
            Ok(o) => o,
            Err(Error::Ecs { code: Some(c), .. }) if c == "ClusterNotFoundException" => None,
            Err(e) => return Err(e),
        };
        match service_plan::plan_cleanup(&uid, self.spec.deletion_policy, observed.as_ref()) {
            Cleanup::Done { reason } => {
                ctx.services.forget(&cluster, &name);
                Ok(match reason {
                    "NotOwned" => vec![Note::normal(
                        "Released",
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
                        &[OWNER_TAG.to_string(), UID_TAG.to_string()],
                    )
                    .await?;
                }
                ctx.services.forget(&cluster, &name);
                Ok(vec![Note::normal(
                    "Orphaned",
                    "UntagResource",
                    format!(
                        "ECS service {name} kept running (deletionPolicy: Orphan); ownership tags removed"
                    ),
                )])
            }
            Cleanup::Draining => Err(Error::DeleteInProgress {
                reason: "Draining".into(),
                message: format!("ECS service {name} is DRAINING; waiting until it is INACTIVE"),
            }),
            Cleanup::Delete { scale_down } => {
                if scale_down {
                    let u = ServiceUpdate {
                        desired_count: Some(0),
                        ..Default::default()
                    };
                    svc::update(&ctx.ecs, &cluster, &name, &u, None).await?;
                }
                svc::delete(&ctx.ecs, &cluster, &name).await?;
                ctx.services.invalidate(&cluster, &name);
                super::publish(
                    ctx,
                    self,
                    &[Note::normal(
                        "Deleting",
                        "DeleteService",
                        format!(
                            "scaled ECS service {name} to 0 and deleted it; waiting until INACTIVE"
                        ),
                    )],
                )
                .await;
                Err(Error::DeleteInProgress {
                    reason: "Draining".into(),
                    message: format!("ECS service {name} deleted; waiting until it is INACTIVE"),
                })
            }
        }
    }
}

fn is_rollout(u: &ServiceUpdate) -> bool {
    u.task_definition.is_some()
        || u.force_new_deployment
        || u.network.is_some()
        || u.capacity_provider_strategy.is_some()
        || u.platform_version.is_some()
        || u.load_balancers.is_some()
        || u.service_registries.is_some()
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
}
