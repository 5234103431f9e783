//! `EcsScheduledTask`: the I/O around `schedule_plan`. Runs are EcsTask objects
//! owned by the schedule (ownerReferences: Kubernetes' garbage collector removes
//! them with it), named after their slot.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, PostParams};
use kube::runtime::controller::Controller;
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};

use super::schedule_plan::{self, Concurrency, Due, Schedule, TOO_MANY_MISSED};
use super::{Context, Managed, Note, Outcome};
use crate::api::common::{Health, Reason};
use crate::api::scheduled_task::{EcsScheduledTask, EcsScheduledTaskStatus};
use crate::api::task::{EcsTask, Phase};
use crate::error::Error;

/// Label on every run: the name of its EcsScheduledTask.
pub const SCHEDULE_LABEL: &str = "ecs.operator.dev/scheduled-task";
/// Annotation on every run: the slot it was started for.
pub const SLOT_ANNOTATION: &str = "ecs.operator.dev/scheduled-at";

fn rfc3339(t: Timestamp) -> String {
    t.to_string()
}

fn parse(t: Option<&str>) -> Option<Timestamp> {
    t.and_then(|s| s.parse().ok())
}

fn until(t: Timestamp, now: Timestamp) -> Duration {
    let secs = t.duration_since(now).as_secs().max(0) as u64;
    Duration::from_secs(secs) + Duration::from_millis(500)
}

impl EcsScheduledTask {
    /// The run for `slot`: labelled as this schedule's (and with the labels a shard
    /// selector tests, so the run lands in the schedule's shard), owned by it.
    fn run_object(
        &self,
        ctx: &Context,
        ns: &str,
        name: &str,
        slot: Timestamp,
    ) -> Result<EcsTask, Error> {
        let owner = self
            .controller_owner_ref(&())
            .ok_or_else(|| Error::Internal("EcsScheduledTask without uid".into()))?;
        let mut labels = ctx.shard_labels(self.labels());
        labels.insert(SCHEDULE_LABEL.to_string(), name.to_string());
        Ok(EcsTask {
            metadata: ObjectMeta {
                name: Some(schedule_plan::run_name(name, slot)),
                namespace: Some(ns.to_string()),
                labels: Some(labels),
                annotations: Some(BTreeMap::from([(
                    SLOT_ANNOTATION.to_string(),
                    rfc3339(slot),
                )])),
                owner_references: Some(vec![owner]),
                ..Default::default()
            },
            spec: self.spec.template.clone(),
            status: None,
        })
    }
}

/// The schedule's runs as they are now.
struct Runs {
    /// Finished runs: (name, succeeded, slot).
    finished: Vec<(String, bool, Timestamp)>,
    /// Names of unfinished runs, sorted.
    active: Vec<String>,
    last_successful: Option<Timestamp>,
}

fn phase_of(run: &EcsTask) -> Option<Phase> {
    run.status.as_ref().and_then(|s| s.phase)
}

/// A run of the schedule with `uid`: labels can be copied, owner references name the
/// one schedule (a same-name schedule created later must not take an older one's runs).
fn is_run_of(run: &EcsTask, uid: &str) -> bool {
    run.owner_references().iter().any(|o| o.uid == uid)
}

fn is_finished(run: &EcsTask) -> bool {
    matches!(phase_of(run), Some(Phase::Succeeded | Phase::Failed))
}

/// Deletes runs by name; one already gone is fine.
async fn delete_runs(api: &Api<EcsTask>, names: &[String]) -> Result<(), Error> {
    for name in names {
        match api.delete(name, &DeleteParams::background()).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// The Events for a slot's run: missed slots before it.
fn missed_notes(missed: usize, slot: Timestamp) -> Vec<Note> {
    if missed > TOO_MANY_MISSED {
        let message = format!(
            "more than {TOO_MANY_MISSED} slots were missed (operator down or schedule suspended); \
             ran only the latest, {}",
            rfc3339(slot)
        );
        return vec![Note::warning(
            Reason::TooManyMissedSlots,
            "Schedule",
            message,
        )];
    }
    if missed > 0 {
        let message = format!(
            "{missed} slot(s) were missed; ran only the latest, {}",
            rfc3339(slot)
        );
        return vec![Note::normal(Reason::MissedSlots, "Schedule", message)];
    }
    vec![]
}

impl EcsScheduledTask {
    fn runs_api(&self, ctx: &Context) -> Api<EcsTask> {
        Api::namespaced(ctx.kube.clone(), &self.namespace().unwrap_or_default())
    }

    /// Runs, from the labels, confirmed by owner UID (see `is_run_of`).
    async fn runs(&self, ctx: &Context, now: Timestamp) -> Result<Runs, Error> {
        let uid = self.uid().unwrap_or_default();
        let selector = format!("{SCHEDULE_LABEL}={}", self.name_any());
        let runs: Vec<EcsTask> = self
            .runs_api(ctx)
            .list(&ListParams::default().labels(&selector))
            .await?
            .items
            .into_iter()
            .filter(|r| is_run_of(r, &uid))
            .filter(|r| r.metadata.deletion_timestamp.is_none())
            .collect();
        let slot_of = |r: &EcsTask| {
            r.annotations()
                .get(SLOT_ANNOTATION)
                .and_then(|s| s.parse().ok())
                .or_else(|| r.metadata.creation_timestamp.as_ref().map(|t| t.0))
                .unwrap_or(now)
        };
        let finished = runs
            .iter()
            .filter(|r| is_finished(r))
            .map(|r| {
                (
                    r.name_any(),
                    phase_of(r) == Some(Phase::Succeeded),
                    slot_of(r),
                )
            })
            .collect();
        let mut active: Vec<String> = runs
            .iter()
            .filter(|r| !is_finished(r))
            .map(|r| r.name_any())
            .collect();
        active.sort();
        let previous = self
            .status
            .as_ref()
            .and_then(|s| s.last_successful_time.as_deref());
        let last_successful = runs
            .iter()
            .filter(|r| phase_of(r) == Some(Phase::Succeeded))
            .filter_map(|r| parse(r.status.as_ref()?.completion_time.as_deref()))
            .max()
            .or_else(|| parse(previous));
        Ok(Runs {
            finished,
            active,
            last_successful,
        })
    }

    /// Deletes finished runs past the history limits.
    async fn prune(&self, ctx: &Context, runs: &Runs) -> Result<Vec<Note>, Error> {
        let doomed = schedule_plan::prune_history(
            &runs.finished,
            self.spec.successful_runs_history_limit,
            self.spec.failed_runs_history_limit,
        );
        if doomed.is_empty() {
            return Ok(vec![]);
        }
        delete_runs(&self.runs_api(ctx), &doomed).await?;
        let message = format!(
            "deleted finished runs past the history limits: {}",
            doomed.join(", ")
        );
        Ok(vec![Note::normal(Reason::Pruned, "Delete", message)])
    }

    /// Starts the run for `slot` (after making room under concurrencyPolicy), or
    /// says why not: the health message, and whether the slot is taken care of (a
    /// slot skipped under Forbid is not: it may still run once the active one ends).
    async fn start_slot(
        &self,
        ctx: &Context,
        slot: Timestamp,
        missed: usize,
        active: &mut Vec<String>,
        notes: &mut Vec<Note>,
    ) -> Result<(String, bool), Error> {
        let name = self.name_any();
        let run = schedule_plan::run_name(&name, slot);
        if active.contains(&run) {
            // Already started (e.g. status write lost); just record it.
            return Ok((format!("run {run} is active"), true));
        }
        let api = self.runs_api(ctx);
        match schedule_plan::concurrency(self.spec.concurrency_policy, active) {
            Concurrency::Skip => {
                let message = format!(
                    "run for {} not started: {} still active (concurrencyPolicy: Forbid)",
                    rfc3339(slot),
                    active.join(", ")
                );
                // The active run finishing wakes us (owns() watch).
                notes.push(Note::normal(Reason::Skipped, "Schedule", message.clone()));
                return Ok((message, false));
            }
            Concurrency::ReplaceThen(old) => {
                delete_runs(&api, &old).await?;
                let message = format!(
                    "deleted active run(s) {} to start the next (concurrencyPolicy: Replace)",
                    old.join(", ")
                );
                notes.push(Note::normal(Reason::Replaced, "Delete", message));
                active.retain(|a| !old.contains(a));
            }
            Concurrency::Start => {}
        }
        let obj = self.run_object(ctx, &self.namespace().unwrap_or_default(), &name, slot)?;
        match api.create(&PostParams::default(), &obj).await {
            Ok(_) => {
                let message = format!("started run {run} for {}", rfc3339(slot));
                notes.push(Note::normal(Reason::Started, "Create", message));
            }
            // Created before (a restart between create and status write): the slot
            // has its run already.
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
        notes.extend(missed_notes(missed, slot));
        active.push(run.clone());
        active.sort();
        Ok((format!("started {run}"), true))
    }
}

impl Managed for EcsScheduledTask {
    const KIND: &'static str = "EcsScheduledTask";

    fn watch_related(
        controller: Controller<Self>,
        ctx: &std::sync::Arc<Context>,
        namespace: Option<&str>,
    ) -> Controller<Self> {
        let runs: Api<EcsTask> = super::scoped_api(&ctx.kube, namespace);
        // A run finishing matters for Forbid, history and lastSuccessfulTime.
        let runs_of_this_shard = match &ctx.selector {
            Some(selector) => format!("{SCHEDULE_LABEL},{selector}"),
            None => SCHEDULE_LABEL.to_string(),
        };
        controller.owns(runs, watcher::Config::default().labels(&runs_of_this_shard))
    }

    async fn apply(&self, ctx: &Context) -> Result<Outcome<EcsScheduledTaskStatus>, Error> {
        let now = Timestamp::now();
        let previous = self.status.clone().unwrap_or_default();
        let mut runs = self.runs(ctx, now).await?;
        let mut notes = self.prune(ctx, &runs).await?;
        let mut status = EcsScheduledTaskStatus {
            last_schedule_time: previous.last_schedule_time.clone(),
            last_successful_time: runs.last_successful.map(rfc3339),
            ..Default::default()
        };
        let (health, requeue) =
            match Schedule::parse(&self.spec.schedule, self.spec.time_zone.as_deref()) {
                Err(message) => (Health::stalled(Reason::InvalidSchedule, message), None),
                Ok(_) if self.spec.suspend => (
                    Health::ready(Reason::Suspended, "suspended: no new runs are started"),
                    None,
                ),
                Ok(schedule) => {
                    let created = self
                        .metadata
                        .creation_timestamp
                        .as_ref()
                        .map(|t| t.0)
                        .unwrap_or(now);
                    let last = parse(previous.last_schedule_time.as_deref());
                    let deadline = self.spec.starting_deadline_seconds;
                    let (next, message) =
                        match schedule_plan::due(&schedule, last, created, now, deadline) {
                            Due::Wait { next } => {
                                let message = match next {
                                    Some(n) => format!("next run at {}", rfc3339(n)),
                                    None => "the schedule has no future slot".to_string(),
                                };
                                (next, message)
                            }
                            Due::Run { slot, missed, next } => {
                                let active = &mut runs.active;
                                let (done, recorded) = self
                                    .start_slot(ctx, slot, missed, active, &mut notes)
                                    .await?;
                                if recorded {
                                    status.last_schedule_time = Some(rfc3339(slot));
                                }
                                let message = match next {
                                    Some(n) if done.starts_with("started") => {
                                        format!("{done}; next run at {}", rfc3339(n))
                                    }
                                    _ => done,
                                };
                                (next, message)
                            }
                        };
                    status.next_schedule_time = next.map(rfc3339);
                    (
                        Health::ready(Reason::Scheduled, message),
                        next.map(|n| until(n, now)),
                    )
                }
            };
        status.active_count = i32::try_from(runs.active.len()).unwrap_or(i32::MAX);
        status.active = runs.active;
        Ok(Outcome::new(status, health)
            .requeue_opt(requeue)
            .notes(notes))
    }

    async fn cleanup(&self, _ctx: &Context) -> Result<Vec<Note>, Error> {
        // Runs carry ownerReferences: the garbage collector deletes them, and each
        // EcsTask's own finalizer stops its ECS tasks.
        Ok(vec![])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

    fn run_owned_by(uid: &str) -> EcsTask {
        let owner = OwnerReference {
            api_version: "ecs.operator.dev/v1alpha1".into(),
            kind: "EcsScheduledTask".into(),
            name: "nightly".into(),
            uid: uid.into(),
            controller: Some(true),
            ..Default::default()
        };
        EcsTask {
            metadata: ObjectMeta {
                name: Some("nightly-29000000".into()),
                labels: Some(BTreeMap::from([(
                    SCHEDULE_LABEL.to_string(),
                    "nightly".to_string(),
                )])),
                owner_references: Some(vec![owner]),
                ..Default::default()
            },
            spec: Default::default(),
            status: None,
        }
    }

    /// The ownership rule for schedules: the owner reference, never the label alone.
    #[test]
    fn a_schedule_takes_only_its_own_runs() {
        assert!(is_run_of(&run_owned_by("uid-1"), "uid-1"));
        // Same name and label, an earlier schedule's run: not this one's.
        assert!(!is_run_of(&run_owned_by("uid-gone"), "uid-1"));
        let mut orphan = run_owned_by("uid-1");
        orphan.metadata.owner_references = None;
        assert!(!is_run_of(&orphan, "uid-1"));
    }
}
