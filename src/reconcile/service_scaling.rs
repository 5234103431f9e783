//! `EcsService.spec.autoScaling`: the I/O around `service_scaling_plan`: read the
//! scalable target (batched), its policies and scheduled actions, send the writes,
//! report.

use std::time::Duration;

use kube::ResourceExt;

use super::service_plan;
use super::service_scaling_plan::{self as scaling_plan, ScalingDesired, ScalingPlan};
use super::{Context, Note, key_of};
use crate::api::common::{Health, ownership_tags};
use crate::api::reason::Reason;
use crate::api::service::EcsService;
use crate::api::service_scaling::{AutoScalingStatus, CountOwner};
use crate::ecs::scaling::{self, ObservedScaling, ScalingWrite};
use crate::error::Error;

/// How soon to try again while Application Auto Scaling does not see a service ECS
/// has just created.
pub const VISIBILITY_POLL: Duration = Duration::from_secs(5);

/// How soon to look again for a CloudWatch alarm a step policy names.
pub const ALARM_POLL: Duration = Duration::from_secs(30);

/// The writes of one pass, and the ARNs of the policies they name (from the read,
/// and from each put).
struct Sent {
    writes: Vec<ScalingWrite>,
    changed: Vec<String>,
    arns: std::collections::BTreeMap<String, String>,
}

/// What one scaling pass found and did.
#[derive(Debug, Default)]
pub struct Scaled {
    pub status: Option<AutoScalingStatus>,
    /// A target registered outside this resource holds the count.
    pub external: bool,
    /// Health that overrides the service's (Stalled, or waiting for visibility).
    pub health: Option<(Health, Duration)>,
    /// Look again this soon (after a deregistration: spec.desiredCount, if set, is
    /// applied by the next pass).
    pub poll: Option<Duration>,
    pub notes: Vec<Note>,
}

impl EcsService {
    /// Whether this pass must not write desiredCount: the spec's scaler owns it, or
    /// autoScaling was just removed and the target is not deregistered yet.
    pub(super) fn scaler_holds_count(&self) -> bool {
        self.spec.auto_scaling.is_some() || self.managed_target()
    }

    fn managed_target(&self) -> bool {
        let status = self.status.as_ref();
        status
            .and_then(|s| s.auto_scaling.as_ref())
            .is_some_and(|a| a.managed)
    }

    /// Whether a scalable target registered outside this resource exists for its
    /// service (asked only before a desiredCount write, from a shared copy). An
    /// operator that may not read Application Auto Scaling (no autoScaling used, IAM
    /// without it) still applies desiredCount: the failed look is logged, not fatal.
    pub(super) async fn external_target(&self, ctx: &Context, cluster: &str) -> bool {
        let id = scaling::resource_id(cluster, &self.ecs_name());
        let target = ctx
            .scaling_targets
            .observe(&ctx.ecs, &id, ctx.services.window(), Vec::new)
            .await;
        match target {
            Ok(target) => target.is_some(),
            Err(e) => {
                tracing::warn!(target = %id, error = %e, "cannot read Application Auto Scaling; applying desiredCount");
                false
            }
        }
    }

    /// The resource IDs of the other autoscaled EcsServices in `cluster`: read with
    /// this one's target in one DescribeScalableTargets.
    fn scaled_peers(ctx: &Context, cluster: &str) -> Vec<String> {
        let Some(store) = ctx.service_store.get() else {
            return vec![];
        };
        store
            .state()
            .iter()
            .filter(|s| s.spec.auto_scaling.is_some())
            .filter(|s| s.status.as_ref().and_then(|st| st.cluster.as_deref()) == Some(cluster))
            .map(|s| scaling::resource_id(cluster, &s.ecs_name()))
            .collect()
    }

    async fn observe_scaling(
        &self,
        ctx: &Context,
        cluster: &str,
        id: &str,
        max_age: Duration,
    ) -> Result<ObservedScaling, Error> {
        let peers = || Self::scaled_peers(ctx, cluster);
        let target = ctx
            .scaling_targets
            .observe(&ctx.ecs, id, max_age, peers)
            .await?;
        let mut observed = match target {
            Some(t) => scaling::describe_attached(&ctx.ecs, t).await?,
            None => ObservedScaling::default(),
        };
        let previous = self.status.as_ref().and_then(|s| s.auto_scaling.as_ref());
        let alarms = scaling_plan::alarms_to_read(self.spec.auto_scaling.as_ref(), previous);
        observed.alarm_actions = crate::ecs::alarms::actions_of(&ctx.ecs, &alarms).await?;
        Ok(observed)
    }

    /// Whether the target is this resource's: status says so, or (a crash between
    /// RegisterScalableTarget and the status write) its tags name this resource.
    async fn owns_target(&self, ctx: &Context, observed: &ObservedScaling) -> Result<bool, Error> {
        if self.managed_target() {
            return Ok(true);
        }
        let Some(arn) = observed.target.as_ref().and_then(|t| t.arn.as_deref()) else {
            return Ok(false);
        };
        let uid = self.uid().unwrap_or_default();
        let tags = scaling::target_tags(&ctx.ecs, arn).await?;
        Ok(tags.get(crate::api::common::UID_TAG) == Some(&uid))
    }

    /// One pass over the service's Application Auto Scaling: skipped (no calls) for a
    /// service with neither autoScaling nor a target the operator made.
    pub(super) async fn scale(&self, ctx: &Context, cluster: &str) -> Result<Scaled, Error> {
        if !self.scaler_holds_count() {
            return Ok(Scaled::default());
        }
        let name = self.ecs_name();
        let id = scaling::resource_id(cluster, &name);
        let observed = self
            .observe_scaling(ctx, cluster, &id, ctx.services.window())
            .await?;
        let ns = self.namespace().unwrap_or_default();
        let tags = ownership_tags(&ns, &self.name_any(), &self.uid().unwrap_or_default());
        let desired = ScalingDesired {
            spec: self.spec.auto_scaling.as_ref(),
            adopt: self.spec.adopt_existing,
            target_owned: self.owns_target(ctx, &observed).await?,
            tags: &tags,
            previous: self.status.as_ref().and_then(|s| s.auto_scaling.as_ref()),
        };
        match scaling_plan::plan(&desired, &observed) {
            ScalingPlan::Unscaled => Ok(Scaled::default()),
            ScalingPlan::External => Ok(Scaled {
                status: scaling_plan::status(&desired, &id, &observed),
                external: true,
                ..Default::default()
            }),
            ScalingPlan::Refuse(health) => {
                let note = Note::warning(health.reason().clone(), "Reconcile", health.message());
                Ok(Scaled {
                    status: scaling_plan::status(&desired, &id, &observed),
                    health: Some((health, ctx.resync)),
                    notes: vec![note],
                    ..Default::default()
                })
            }
            ScalingPlan::Apply { writes, changed } if writes.is_empty() => {
                // In sync: the guard's count of identical writes starts over.
                let what = format!("ECS service {name}");
                let _ = ctx
                    .updates
                    .check(&self.scaling_guard_key(), None, &what, &changed);
                Ok(Scaled {
                    status: scaling_plan::status(&desired, &id, &observed),
                    ..Default::default()
                })
            }
            ScalingPlan::Apply { writes, changed } => {
                let arns = observed
                    .policies
                    .iter()
                    .map(|p| (p.name.clone(), p.arn.clone()))
                    .collect();
                let sent = Sent {
                    writes,
                    changed,
                    arns,
                };
                self.apply_scaling(ctx, cluster, &id, &desired, sent).await
            }
        }
        .map(|scaled| self.waiting_for_alarms(scaled, &observed))
    }

    /// A step policy whose CloudWatch alarm does not exist yet: the service says so
    /// and looks again (the rest of the scaling is applied meanwhile).
    fn waiting_for_alarms(&self, mut scaled: Scaled, observed: &ObservedScaling) -> Scaled {
        let missing = scaling_plan::missing_alarms(self.spec.auto_scaling.as_ref(), observed);
        if missing.is_empty() || scaled.health.is_some() {
            return scaled;
        }
        let health = Health::progressing(
            Reason::WaitingForReference,
            format!(
                "CloudWatch alarm {} (autoScaling.stepScaling alarmName) does not exist; \
                 its step policy runs once the alarm does",
                missing.join(", ")
            ),
        );
        scaled.health = Some((health, ALARM_POLL));
        scaled
    }

    async fn apply_scaling(
        &self,
        ctx: &Context,
        cluster: &str,
        id: &str,
        desired: &ScalingDesired<'_>,
        sent: Sent,
    ) -> Result<Scaled, Error> {
        let Sent {
            writes,
            changed,
            mut arns,
        } = sent;
        let what = format!(
            "Application Auto Scaling of ECS service {}",
            self.ecs_name()
        );
        let fingerprint = Some(format!("{writes:?}"));
        let guard_key = self.scaling_guard_key();
        if let Err(health) = ctx.updates.check(&guard_key, fingerprint, &what, &changed) {
            let note = super::owned::not_applied_note(&health, "PutScalingPolicy");
            return Ok(Scaled {
                health: Some((health, ctx.resync)),
                notes: vec![note],
                ..Default::default()
            });
        }
        for write in &writes {
            let policy = match write {
                ScalingWrite::AttachAlarm { policy, .. }
                | ScalingWrite::DetachAlarm { policy, .. } => arns.get(policy).map(String::as_str),
                _ => None,
            };
            let sent = scaling::write(&ctx.ecs, id, write, policy).await;
            ctx.scaling_targets.invalidate(id);
            match sent {
                Ok(Some(arn)) => {
                    if let ScalingWrite::PutPolicy(p) = write {
                        arns.insert(p.name.clone(), arn);
                    } else if let ScalingWrite::PutStepPolicy(p) = write {
                        arns.insert(p.name.clone(), arn);
                    }
                }
                Ok(None) => {}
                Err(e) if scaling::is_service_not_visible(&e) && self.recently_created() => {
                    let health = Health::progressing(
                        Reason::WaitingForVisibility,
                        format!(
                            "Application Auto Scaling does not see ECS service {} yet; \
                             registering the scalable target again shortly",
                            self.ecs_name()
                        ),
                    );
                    return Ok(Scaled {
                        health: Some((health, VISIBILITY_POLL)),
                        ..Default::default()
                    });
                }
                Err(e) => return Err(e),
            }
        }
        let observed = self
            .observe_scaling(ctx, cluster, id, Duration::ZERO)
            .await?;
        let deregistered = writes.contains(&ScalingWrite::Deregister);
        let notes = vec![self.scaling_note(&changed, deregistered, &observed)];
        // A target registered just now is this resource's.
        let mut after = desired.clone();
        after.target_owned |= writes
            .iter()
            .any(|w| matches!(w, ScalingWrite::Register { .. }));
        Ok(Scaled {
            status: scaling_plan::status(&after, id, &observed),
            notes,
            poll: deregistered.then_some(service_plan::UPDATE_POLL),
            ..Default::default()
        })
    }

    /// The update guard's key for this service's scaling writes (its own, beside the
    /// service's UpdateService guard).
    fn scaling_guard_key(&self) -> String {
        format!("{}#autoScaling", key_of(self))
    }

    fn recently_created(&self) -> bool {
        let created = self
            .status
            .as_ref()
            .and_then(|s| s.last_create_time.as_deref());
        service_plan::recently_created(created, k8s_openapi::jiff::Timestamp::now())
    }

    /// The Event for a scaling pass that wrote: what changed, and after a
    /// deregistration who owns the count from now on.
    fn scaling_note(
        &self,
        changed: &[String],
        deregistered: bool,
        after: &ObservedScaling,
    ) -> Note {
        let name = self.ecs_name();
        if deregistered {
            let owner = match self.spec.desired_count {
                Some(n) => format!("spec.desiredCount ({n}) owns the task count again"),
                None => "ECS keeps the task count it has (spec.desiredCount is not set)".into(),
            };
            return Note::normal(
                Reason::Updated,
                "DeregisterScalableTarget",
                format!(
                    "ECS service {name}: autoScaling removed, scalable target deregistered; {owner}"
                ),
            );
        }
        let drift = self.status.as_ref().is_some_and(|s| {
            s.observed_generation == self.metadata.generation && after.target.is_some()
        });
        let reason = if drift {
            Reason::DriftCorrected
        } else {
            Reason::Updated
        };
        Note::normal(
            reason,
            "PutScalingPolicy",
            format!(
                "ECS service {name}: Application Auto Scaling set {}",
                changed.join(", ")
            ),
        )
    }

    /// Deregisters the target the operator made before the service is deleted
    /// (deletionPolicy Delete); nothing for a target it does not own.
    pub(super) async fn deregister_for_delete(
        &self,
        ctx: &Context,
        cluster: &str,
    ) -> Result<(), Error> {
        if !self.managed_target() {
            return Ok(());
        }
        let id = scaling::resource_id(cluster, &self.ecs_name());
        match scaling::write(&ctx.ecs, &id, &ScalingWrite::Deregister, None).await {
            Ok(_) => Ok(()),
            // Already gone: ObjectNotFoundException (ValidationException from older
            // endpoints) "No scalable target found for service namespace ...".
            Err(Error::Ecs { message, .. }) if message.contains("No scalable target") => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The Event when a changed spec.desiredCount is not applied because a scaler
    /// owns the count (a `kubectl scale` on an autoscaled service).
    pub(super) fn count_note(&self, ecs_count: i32, external: bool) -> Option<Note> {
        let wanted = self.spec.desired_count?;
        let previous = self.status.as_ref()?;
        let spec_changed = previous.observed_generation != self.metadata.generation;
        let newly_external = external && previous.count_owner != Some(CountOwner::External);
        if wanted == ecs_count || !(spec_changed || newly_external) {
            return None;
        }
        let why = match &self.spec.auto_scaling {
            Some(a) => format!(
                "Application Auto Scaling owns the count (minCapacity {}, maxCapacity {}); \
                 change spec.autoScaling to move it",
                a.min_capacity, a.max_capacity
            ),
            None => "a scalable target registered outside this resource owns the count; \
                     deregister it (or add spec.autoScaling with adoptExisting) to change it"
                .into(),
        };
        Some(Note::warning(
            Reason::CountOwnedElsewhere,
            "UpdateService",
            format!(
                "spec.desiredCount {wanted} not applied to ECS service {} (ECS has {ecs_count}): {why}",
                self.ecs_name()
            ),
        ))
    }
}
