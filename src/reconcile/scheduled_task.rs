//! `EcsScheduledTask`: the I/O around `schedule_plan`. Runs are EcsTask objects
//! owned by the schedule (ownerReferences: Kubernetes' garbage collector removes
//! them with it), named after their slot.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, PostParams};
use kube::runtime::controller::Controller;
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde_json::Value;

use super::schedule_plan::{self, Concurrency, Due, Schedule, TOO_MANY_MISSED};
use super::{Context, Managed, Note, Outcome};
use crate::api::common::Health;
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
    fn run_object(&self, ns: &str, name: &str, slot: Timestamp) -> Result<EcsTask, Error> {
        let owner = self
            .controller_owner_ref(&())
            .ok_or_else(|| Error::Config("EcsScheduledTask without uid".into()))?;
        Ok(EcsTask {
            metadata: ObjectMeta {
                name: Some(schedule_plan::run_name(name, slot)),
                namespace: Some(ns.to_string()),
                labels: Some(BTreeMap::from([(
                    SCHEDULE_LABEL.to_string(),
                    name.to_string(),
                )])),
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

impl Managed for EcsScheduledTask {
    const KIND: &'static str = "EcsScheduledTask";

    fn watch_related(
        controller: Controller<Self>,
        client: &Client,
        namespace: Option<&str>,
    ) -> Controller<Self> {
        let runs: Api<EcsTask> = super::scoped_api(client, namespace);
        // A run finishing matters for Forbid, history and lastSuccessfulTime.
        controller.owns(runs, watcher::Config::default().labels(SCHEDULE_LABEL))
    }

    async fn apply(&self, ctx: &Context) -> Result<Outcome, Error> {
        let ns = self.namespace().unwrap_or_default();
        let name = self.name_any();
        let uid = self.uid().unwrap_or_default();
        let now = Timestamp::now();
        let prev = self.status.clone().unwrap_or_default();
        let api: Api<EcsTask> = Api::namespaced(ctx.kube.clone(), &ns);
        let mut notes = Vec::new();

        // Runs, from the labels, confirmed by owner UID (a same-name schedule
        // created later must not adopt an older one's runs).
        let runs: Vec<EcsTask> = api
            .list(&ListParams::default().labels(&format!("{SCHEDULE_LABEL}={name}")))
            .await?
            .items
            .into_iter()
            .filter(|r| r.owner_references().iter().any(|o| o.uid == uid))
            .filter(|r| r.metadata.deletion_timestamp.is_none())
            .collect();
        let phase = |r: &EcsTask| r.status.as_ref().and_then(|s| s.phase);
        let finished: Vec<(String, bool, Timestamp)> = runs
            .iter()
            .filter(|r| matches!(phase(r), Some(Phase::Succeeded | Phase::Failed)))
            .map(|r| {
                let when = r
                    .annotations()
                    .get(SLOT_ANNOTATION)
                    .and_then(|s| s.parse().ok())
                    .or_else(|| r.metadata.creation_timestamp.as_ref().map(|t| t.0))
                    .unwrap_or(now);
                (r.name_any(), phase(r) == Some(Phase::Succeeded), when)
            })
            .collect();
        let mut active: Vec<String> = runs
            .iter()
            .filter(|r| !matches!(phase(r), Some(Phase::Succeeded | Phase::Failed)))
            .map(|r| r.name_any())
            .collect();
        active.sort();

        let last_successful = runs
            .iter()
            .filter(|r| phase(r) == Some(Phase::Succeeded))
            .filter_map(|r| parse(r.status.as_ref()?.completion_time.as_deref()))
            .max()
            .or_else(|| parse(prev.last_successful_time.as_deref()));

        let doomed = schedule_plan::prune_history(
            &finished,
            self.spec.successful_runs_history_limit,
            self.spec.failed_runs_history_limit,
        );
        for d in &doomed {
            match api.delete(d, &DeleteParams::background()).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
        }
        if !doomed.is_empty() {
            notes.push(Note::normal(
                "Pruned",
                "Delete",
                format!(
                    "deleted finished runs past the history limits: {}",
                    doomed.join(", ")
                ),
            ));
        }

        let mut st = EcsScheduledTaskStatus {
            last_schedule_time: prev.last_schedule_time.clone(),
            last_successful_time: last_successful.map(rfc3339),
            ..Default::default()
        };
        let finish = |mut st: EcsScheduledTaskStatus,
                      active: Vec<String>,
                      health: Health,
                      requeue: Option<Duration>,
                      notes: Vec<Note>| {
            st.active_count = i32::try_from(active.len()).unwrap_or(i32::MAX);
            st.active = active;
            Outcome {
                status: serde_json::to_value(&st).unwrap_or(Value::Null),
                health,
                requeue,
                notes,
            }
        };

        let schedule = match Schedule::parse(&self.spec.schedule, self.spec.time_zone.as_deref()) {
            Ok(s) => s,
            Err(message) => {
                return Ok(finish(
                    st,
                    active,
                    Health::stalled("InvalidSchedule", message),
                    None,
                    notes,
                ));
            }
        };
        if self.spec.suspend {
            return Ok(finish(
                st,
                active,
                Health::ready("Suspended", "suspended: no new runs are started"),
                None,
                notes,
            ));
        }
        let created = self
            .metadata
            .creation_timestamp
            .as_ref()
            .map(|t| t.0)
            .unwrap_or(now);
        let last = parse(prev.last_schedule_time.as_deref());
        match schedule_plan::due(
            &schedule,
            last,
            created,
            now,
            self.spec.starting_deadline_seconds,
        ) {
            Due::Wait { next } => {
                st.next_schedule_time = next.map(rfc3339);
                let msg = match next {
                    Some(n) => format!("next run at {}", rfc3339(n)),
                    None => "the schedule has no future slot".to_string(),
                };
                Ok(finish(
                    st,
                    active,
                    Health::ready("Scheduled", msg),
                    next.map(|n| until(n, now)),
                    notes,
                ))
            }
            Due::Run { slot, missed, next } => {
                st.next_schedule_time = next.map(rfc3339);
                let run = schedule_plan::run_name(&name, slot);
                if active.contains(&run) {
                    // Already started (e.g. status write lost); just record it.
                    st.last_schedule_time = Some(rfc3339(slot));
                    return Ok(finish(
                        st,
                        active,
                        Health::ready("Scheduled", format!("run {run} is active")),
                        next.map(|n| until(n, now)),
                        notes,
                    ));
                }
                match schedule_plan::concurrency(self.spec.concurrency_policy, &active) {
                    Concurrency::Skip => {
                        let msg = format!(
                            "run for {} not started: {} still active (concurrencyPolicy: Forbid)",
                            rfc3339(slot),
                            active.join(", ")
                        );
                        notes.push(Note::normal("Skipped", "Schedule", msg.clone()));
                        // The active run finishing wakes us (owns() watch); until
                        // then only the next slot matters.
                        return Ok(finish(
                            st,
                            active,
                            Health::ready("Scheduled", msg),
                            next.map(|n| until(n, now)),
                            notes,
                        ));
                    }
                    Concurrency::ReplaceThen(old) => {
                        for o in &old {
                            match api.delete(o, &DeleteParams::background()).await {
                                Ok(_) => {}
                                Err(kube::Error::Api(e)) if e.code == 404 => {}
                                Err(e) => return Err(e.into()),
                            }
                        }
                        notes.push(Note::normal(
                            "Replaced",
                            "Delete",
                            format!("deleted active run(s) {} to start the next (concurrencyPolicy: Replace)", old.join(", ")),
                        ));
                        active.retain(|a| !old.contains(a));
                    }
                    Concurrency::Start => {}
                }
                let obj = self.run_object(&ns, &name, slot)?;
                match api.create(&PostParams::default(), &obj).await {
                    Ok(_) => notes.push(Note::normal(
                        "Started",
                        "Create",
                        format!("started run {run} for {}", rfc3339(slot)),
                    )),
                    // Created before (a restart between create and status write):
                    // the slot has its run already.
                    Err(kube::Error::Api(e)) if e.code == 409 => {}
                    Err(e) => return Err(e.into()),
                }
                if missed > TOO_MANY_MISSED {
                    notes.push(Note::warning(
                        "TooManyMissedSlots",
                        "Schedule",
                        format!("more than {TOO_MANY_MISSED} slots were missed (operator down or schedule suspended); ran only the latest, {}", rfc3339(slot)),
                    ));
                } else if missed > 0 {
                    notes.push(Note::normal(
                        "MissedSlots",
                        "Schedule",
                        format!(
                            "{missed} slot(s) were missed; ran only the latest, {}",
                            rfc3339(slot)
                        ),
                    ));
                }
                st.last_schedule_time = Some(rfc3339(slot));
                active.push(run.clone());
                active.sort();
                let msg = match next {
                    Some(n) => format!("started {run}; next run at {}", rfc3339(n)),
                    None => format!("started {run}"),
                };
                Ok(finish(
                    st,
                    active,
                    Health::ready("Scheduled", msg),
                    next.map(|n| until(n, now)),
                    notes,
                ))
            }
        }
    }

    async fn cleanup(&self, _ctx: &Context) -> Result<Vec<Note>, Error> {
        // Runs carry ownerReferences: the garbage collector deletes them, and each
        // EcsTask's own finalizer stops its ECS tasks.
        Ok(vec![])
    }
}
