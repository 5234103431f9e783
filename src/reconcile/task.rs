//! `EcsTask`: the I/O around the pure decisions in `task_plan`.

use std::time::Duration;

use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::refs::{self, Resolved, resolve_cluster, resolve_task_definition};
use super::task_plan::{self, Decision, RunState};
use super::{Context, Managed, Note, Outcome};
use crate::api::common::{Condition, Health, Time, UID_TAG, condition, ownership_tags};
use crate::api::task::{EcsTask, EcsTaskStatus, Phase, TaskRecord};
use crate::ecs::task::{self as ecs_task, ATTEMPT_TAG};
use crate::error::Error;

/// RunTask clientToken (at most 64 characters): the same resource and attempt always
/// get the same token, so a RunTask retried after a crash starts nothing new.
pub fn run_token(uid: &str, attempt: i32) -> String {
    hex::encode(Sha256::digest(format!("{uid}/run/{attempt}").as_bytes()))[..64].to_string()
}

fn parse_time(s: Option<&str>) -> Option<Timestamp> {
    s.and_then(|s| s.parse().ok())
}

fn second(t: Timestamp) -> String {
    Timestamp::from_second(t.as_second())
        .unwrap_or(t)
        .to_string()
}

fn human(d: SignedDuration) -> String {
    let secs = d.as_secs().max(0) as u64;
    humantime::format_duration(Duration::from_secs(secs))
        .to_string()
        .replace(' ', "")
}

/// Merge freshly described tasks into the records (the newest view wins).
fn merge(records: &mut Vec<TaskRecord>, fresh: Vec<TaskRecord>) {
    for f in fresh {
        match records.iter_mut().find(|r| r.arn == f.arn) {
            Some(r) => {
                let attempt = r.attempt;
                *r = f;
                r.attempt = attempt;
            }
            None => records.push(f),
        }
    }
}

/// Attempts whose task records status keeps (older ones are dropped, so the
/// status stays small whatever backoffLimit is).
const KEPT_ATTEMPTS: i32 = 5;

/// Longest reason text kept per task or container in status.
const REASON_BYTES: usize = 256;

fn clip(s: &mut Option<String>) {
    if let Some(v) = s {
        *v = super::shorten(v, REASON_BYTES);
    }
}

fn compact(st: &mut EcsTaskStatus) {
    let oldest = st.attempts - KEPT_ATTEMPTS + 1;
    st.tasks.retain(|t| t.attempt >= oldest);
    for t in &mut st.tasks {
        clip(&mut t.stopped_reason);
        for c in &mut t.containers {
            clip(&mut c.reason);
        }
    }
    for f in &mut st.failures {
        clip(&mut f.detail);
    }
}

fn summary(st: &mut EcsTaskStatus, count: i32) {
    let current: Vec<&TaskRecord> = st
        .tasks
        .iter()
        .filter(|t| t.attempt == st.attempts)
        .collect();
    let ok = current
        .iter()
        .filter(|t| {
            t.stop_code.as_deref() == Some("EssentialContainerExited")
                && t.containers
                    .iter()
                    .filter(|c| {
                        st.essential_containers.is_empty()
                            || st.essential_containers.contains(&c.name)
                    })
                    .all(|c| c.exit_code == Some(0))
        })
        .count();
    st.completions = Some(format!("{ok}/{count}"));
    // Only once finished: a ticking value would rewrite the status on every poll.
    st.duration = None;
    if let (Some(start), Some(end)) = (
        parse_time(st.start_time.as_deref()),
        parse_time(st.completion_time.as_deref()),
    ) {
        st.duration = Some(human(end.duration_since(start)));
    }
}

/// Complete / Failed, as a Job has them, keeping transition times.
fn job_conditions(
    phase: Option<Phase>,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    previous: &[Condition],
    now: &Time,
) -> Vec<Condition> {
    match phase {
        Some(Phase::Succeeded) => vec![condition(
            "Complete", true, reason, message, generation, previous, now,
        )],
        Some(Phase::Failed) => vec![condition(
            "Failed", true, reason, message, generation, previous, now,
        )],
        _ => vec![],
    }
}

impl EcsTask {
    fn outcome(
        &self,
        mut st: EcsTaskStatus,
        health: Health,
        requeue: Option<Duration>,
        notes: Vec<Note>,
    ) -> Outcome {
        compact(&mut st);
        summary(&mut st, self.spec.count);
        let previous = self
            .status
            .as_ref()
            .map(|s| s.conditions.clone())
            .unwrap_or_default();
        let t = super::now();
        let (reason, message) = match &health {
            Health::Ready { reason, message }
            | Health::Stalled { reason, message }
            | Health::Progressing { reason, message } => (reason.clone(), message.clone()),
        };
        st.conditions = job_conditions(
            st.phase,
            &reason,
            &message,
            self.metadata.generation,
            &previous,
            &t,
        );
        st.observed_generation = None;
        Outcome {
            status: serde_json::to_value(&st).unwrap_or(Value::Null),
            health,
            requeue,
            notes,
        }
    }

    /// Pending on a missing or unready reference (the watches wake it when it comes).
    fn waiting(&self, mut st: EcsTaskStatus, message: String) -> Outcome {
        st.phase = Some(Phase::Pending);
        self.outcome(
            st,
            Health::progressing("WaitingForReference", message),
            Some(Duration::from_secs(30)),
            vec![],
        )
    }

    fn started_by(&self) -> String {
        self.spec
            .started_by
            .clone()
            .or_else(|| self.uid())
            .unwrap_or_default()
    }
}

impl refs::References for EcsTask {
    fn cluster_ref(&self) -> Option<&crate::api::service::LocalRef> {
        self.spec.cluster_ref.as_ref()
    }
    fn task_definition_ref(&self) -> Option<&crate::api::service::LocalRef> {
        self.spec.task_definition_ref.as_ref()
    }
    /// Only runs that have not resolved their references yet care.
    fn follows_references(&self) -> bool {
        self.status
            .as_ref()
            .is_none_or(|s| s.task_definition.is_none())
    }
}

impl Managed for EcsTask {
    const KIND: &'static str = "EcsTask";

    /// A run waiting for its cluster or task definition starts as soon as it appears.
    fn watch_related(
        controller: kube::runtime::Controller<Self>,
        client: &kube::Client,
        namespace: Option<&str>,
    ) -> kube::runtime::Controller<Self> {
        refs::watch_references(controller, client, namespace)
    }

    async fn apply(&self, ctx: &Context) -> Result<Outcome, Error> {
        let ns = self.namespace().unwrap_or_default();
        let name = self.name_any();
        let uid = self
            .uid()
            .ok_or_else(|| Error::Config(format!("EcsTask {ns}/{name} has no uid")))?;
        let mut st = self.status.clone().unwrap_or_default();
        st.conditions.clear();
        let now = Timestamp::now();

        // Finished: nothing more in ECS; only the TTL is left.
        if let Some(phase @ (Phase::Succeeded | Phase::Failed)) = st.phase {
            let health = match phase {
                Phase::Succeeded => {
                    Health::ready("Succeeded", st.reason.clone().unwrap_or_default())
                }
                _ => Health::stalled(
                    st.reason.as_deref().unwrap_or("Failed"),
                    "the run failed; see status.tasks",
                ),
            };
            let health = match (
                &health,
                self.status.as_ref().and_then(|s| {
                    s.conditions
                        .iter()
                        .find(|c| c.type_ == "Complete" || c.type_ == "Failed")
                }),
            ) {
                (Health::Stalled { reason, .. }, Some(c)) => {
                    Health::stalled(reason, c.message.clone())
                }
                (Health::Ready { reason, .. }, Some(c)) => Health::ready(reason, c.message.clone()),
                _ => health,
            };
            let mut requeue = None;
            if let (Some(ttl), Some(done)) = (
                self.spec.ttl_seconds_after_finished,
                parse_time(st.completion_time.as_deref()),
            ) {
                // A TTL too long to represent never expires.
                let expires = done
                    .checked_add(SignedDuration::from_secs(ttl))
                    .unwrap_or(Timestamp::MAX);
                if now >= expires {
                    let api: Api<EcsTask> = Api::namespaced(ctx.kube.clone(), &ns);
                    api.delete(&name, &DeleteParams::background()).await?;
                    return Ok(self.outcome(
                        st,
                        health,
                        None,
                        vec![Note::normal(
                            "Expired",
                            "Delete",
                            format!(
                                "deleted {ttl}s after the run finished (ttlSecondsAfterFinished)"
                            ),
                        )],
                    ));
                }
                requeue = Some(Duration::from_secs(
                    expires.duration_since(now).as_secs().max(1) as u64,
                ));
            }
            return Ok(self.outcome(st, health, requeue, vec![]));
        }

        // Where and what to run: fixed at the start, recorded in status.
        let cluster = match &st.cluster {
            Some(c) => c.clone(),
            None => match resolve_cluster(
                &ctx.kube,
                &ns,
                self.spec.cluster.as_ref(),
                self.spec.cluster_ref.as_ref(),
            )
            .await?
            {
                Resolved::Found(c) => c,
                Resolved::Waiting(m) => return Ok(self.waiting(st, m)),
            },
        };
        let task_definition = match &st.task_definition {
            Some(t) => t.clone(),
            None => match resolve_task_definition(
                &ctx.kube,
                &ns,
                self.spec.task_definition.as_ref(),
                self.spec.task_definition_ref.as_ref(),
            )
            .await?
            {
                Resolved::Found(t) => {
                    let (arn, essential) = ecs_task::essential_containers(&ctx.ecs, &t).await?;
                    st.essential_containers = essential;
                    arn
                }
                Resolved::Waiting(m) => return Ok(self.waiting(st, m)),
            },
        };
        let newly_resolved = st.task_definition.is_none();
        st.cluster = Some(cluster.clone());
        st.task_definition = Some(task_definition.clone());
        if newly_resolved {
            // Record where and what before the first RunTask: a retry after a crash
            // must send the same request with the same client token.
            st.phase = Some(Phase::Pending);
            st.reason = Some("Starting".into());
            return Ok(self.outcome(
                st,
                Health::progressing(
                    "Starting",
                    format!(
                        "starting {} in {cluster}",
                        crate::reconcile::service_plan::td_short(&task_definition)
                    ),
                ),
                Some(Duration::from_millis(200)),
                vec![],
            ));
        }

        // Observe the current attempt's tasks that have not stopped yet.
        let open: Vec<String> = st
            .tasks
            .iter()
            .filter(|t| t.attempt == st.attempts && t.last_status.as_deref() != Some("STOPPED"))
            .map(|t| t.arn.clone())
            .collect();
        if !open.is_empty() {
            let fresh: Vec<TaskRecord> = ecs_task::describe(&ctx.ecs, &cluster, &open)
                .await?
                .into_iter()
                .map(|(r, _)| r)
                .collect();
            // ECS keeps stopped tasks for about an hour; one it no longer reports
            // (operator down for longer) counts as stopped, outcome unknown.
            for arn in &open {
                if !fresh.iter().any(|f| &f.arn == arn)
                    && let Some(r) = st.tasks.iter_mut().find(|t| &t.arn == arn)
                {
                    r.last_status = Some("STOPPED".into());
                    r.stop_code = Some("TaskNotFound".into());
                    r.stopped_reason = Some(
                        "ECS no longer reports this task (stopped tasks are kept for about an hour); its result is unknown".into(),
                    );
                }
            }
            merge(&mut st.tasks, fresh);
        }
        let current: Vec<TaskRecord> = st
            .tasks
            .iter()
            .filter(|t| t.attempt == st.attempts)
            .cloned()
            .collect();
        let placement: Vec<String> = st
            .failures
            .iter()
            .map(|f| match (&f.reason, &f.detail) {
                (Some(r), Some(d)) => format!("{r} ({d})"),
                (Some(r), None) => r.clone(),
                _ => "unknown".into(),
            })
            .collect();
        let decision = task_plan::decide(&RunState {
            now,
            attempts: st.attempts,
            count: self.spec.count,
            backoff_limit: self.spec.backoff_limit,
            active_deadline_seconds: self.spec.active_deadline_seconds,
            start_time: parse_time(st.start_time.as_deref()),
            current: &current,
            placement_failures: &placement,
            retry_at: parse_time(st.next_attempt_time.as_deref()),
            essential: &st.essential_containers,
        });

        match decision {
            Decision::Run { attempt } => {
                // A previous operator may have started this attempt and crashed before
                // recording it: find its tasks by startedBy and the attempt tag.
                let started_by = self.started_by();
                let found = ecs_task::find(&ctx.ecs, &cluster, &started_by).await?;
                let known: Vec<&str> = st.tasks.iter().map(|t| t.arn.as_str()).collect();
                let unknown: Vec<String> = found
                    .into_iter()
                    .filter(|a| !known.contains(&a.as_str()))
                    .collect();
                let mut adopted = Vec::new();
                if !unknown.is_empty() {
                    for (mut r, tags) in ecs_task::describe(&ctx.ecs, &cluster, &unknown).await? {
                        if tags.get(UID_TAG) == Some(&uid)
                            && tags.get(ATTEMPT_TAG) == Some(&attempt.to_string())
                        {
                            r.attempt = attempt;
                            adopted.push(r);
                        }
                    }
                }
                let mut notes = Vec::new();
                if adopted.is_empty() {
                    let mut tags = self.spec.tags.clone();
                    tags.extend(ownership_tags(&ns, &name, &uid));
                    tags.insert(ATTEMPT_TAG.into(), attempt.to_string());
                    let (tasks, failures) = ecs_task::run(
                        &ctx.ecs,
                        &cluster,
                        &task_definition,
                        &self.spec,
                        &started_by,
                        &tags,
                        attempt,
                        &run_token(&uid, attempt),
                    )
                    .await?;
                    let arns: Vec<&str> = tasks
                        .iter()
                        .map(|t| t.arn.rsplit('/').next().unwrap_or(&t.arn))
                        .collect();
                    notes.push(Note::normal(
                        "Started",
                        "RunTask",
                        format!(
                            "attempt {attempt}: started {} task(s) of {} in {cluster}: {}",
                            tasks.len(),
                            crate::reconcile::service_plan::td_short(&task_definition),
                            arns.join(", ")
                        ),
                    ));
                    if !failures.is_empty() {
                        let why: Vec<String> = failures
                            .iter()
                            .map(|f| f.reason.clone().unwrap_or_default())
                            .collect();
                        notes.push(Note::warning(
                            "PlacementFailed",
                            "RunTask",
                            format!(
                                "attempt {attempt}: ECS could not start {} task(s): {}",
                                failures.len(),
                                why.join(", ")
                            ),
                        ));
                    }
                    st.failures = failures;
                    merge(&mut st.tasks, tasks);
                } else {
                    notes.push(Note::normal("Recovered", "ListTasks", format!("attempt {attempt}: found {} task(s) started before a restart; not starting more", adopted.len())));
                    st.failures.clear();
                    merge(&mut st.tasks, adopted);
                }
                st.attempts = attempt;
                st.next_attempt_time = None;
                st.start_time.get_or_insert_with(|| second(now));
                st.phase = Some(Phase::Running);
                st.reason = Some("Running".into());
                Ok(self.outcome(
                    st,
                    Health::progressing("Running", format!("attempt {attempt} running")),
                    Some(Duration::from_secs(2)),
                    notes,
                ))
            }
            Decision::Poll => {
                st.phase = Some(Phase::Running);
                st.reason = Some("Running".into());
                let running = current
                    .iter()
                    .filter(|t| t.last_status.as_deref() != Some("STOPPED"))
                    .count();
                Ok(self.outcome(
                    st,
                    Health::progressing(
                        "Running",
                        format!(
                            "attempt {}: {running} task(s) still running",
                            self.status.as_ref().map(|s| s.attempts).unwrap_or(0)
                        ),
                    ),
                    Some(task_plan::poll_interval(
                        parse_time(self.status.as_ref().and_then(|s| s.start_time.as_deref()))
                            .map(|t| now.duration_since(t))
                            .unwrap_or_default(),
                    )),
                    vec![],
                ))
            }
            Decision::StopAll { message } => {
                // Stop what ECS is not already stopping; Fargate can take a while.
                let to_stop: Vec<&TaskRecord> = current
                    .iter()
                    .filter(|t| t.last_status.as_deref() != Some("STOPPED"))
                    .filter(|t| t.desired_status.as_deref() != Some("STOPPED"))
                    .collect();
                for t in &to_stop {
                    ecs_task::stop(&ctx.ecs, &cluster, &t.arn, &message).await?;
                }
                let notes = if to_stop.is_empty() {
                    vec![]
                } else {
                    vec![Note::warning(
                        "DeadlineExceeded",
                        "StopTask",
                        message.clone(),
                    )]
                };
                // Record the stopped state on a later pass, then finish.
                Ok(self.outcome(
                    st,
                    Health::progressing("DeadlineExceeded", message),
                    Some(if to_stop.is_empty() {
                        task_plan::TASK_POLL
                    } else {
                        Duration::from_secs(1)
                    }),
                    notes,
                ))
            }
            Decision::RetryAt { at, message } => {
                st.phase = Some(Phase::Pending);
                st.reason = Some("BackoffWaiting".into());
                st.next_attempt_time = Some(second(at));
                let wait = Duration::from_secs(at.duration_since(now).as_secs().max(1) as u64);
                let first = self
                    .status
                    .as_ref()
                    .and_then(|s| s.next_attempt_time.clone())
                    .is_none();
                let notes = if first {
                    vec![Note::warning("AttemptFailed", "Retry", message.clone())]
                } else {
                    vec![]
                };
                Ok(self.outcome(
                    st,
                    Health::progressing("BackoffWaiting", message),
                    Some(wait),
                    notes,
                ))
            }
            Decision::Finish {
                phase,
                reason,
                message,
                exit_code,
            } => {
                st.phase = Some(phase);
                st.reason = Some(reason.clone());
                st.exit_code = exit_code;
                st.next_attempt_time = None;
                let end = current
                    .iter()
                    .filter_map(|t| parse_time(t.stopped_at.as_deref()))
                    .max()
                    .unwrap_or(now);
                st.completion_time = Some(second(end));
                let (health, note) = match phase {
                    Phase::Succeeded => (
                        Health::ready("Succeeded", message.clone()),
                        Note::normal("Succeeded", "Complete", message),
                    ),
                    _ => (
                        Health::stalled(&reason, message.clone()),
                        Note::warning("Failed", "Complete", message),
                    ),
                };
                let requeue = self
                    .spec
                    .ttl_seconds_after_finished
                    .map(|t| Duration::from_secs(t.max(1) as u64));
                Ok(self.outcome(st, health, requeue, vec![note]))
            }
        }
    }

    async fn cleanup(&self, ctx: &Context) -> Result<Vec<Note>, Error> {
        let Some(st) = &self.status else {
            return Ok(vec![]);
        };
        let Some(cluster) = &st.cluster else {
            return Ok(vec![]);
        };
        let uid = self.uid().unwrap_or_default();
        let mut running: Vec<String> = st
            .tasks
            .iter()
            .filter(|t| t.last_status.as_deref() != Some("STOPPED"))
            .map(|t| t.arn.clone())
            .collect();
        // Also tasks started but never recorded (a crash right after RunTask).
        if st
            .phase
            .is_some_and(|p| p == Phase::Running || p == Phase::Pending)
        {
            let found = match ecs_task::find(&ctx.ecs, cluster, &self.started_by()).await {
                Ok(f) => f,
                Err(Error::Ecs { code: Some(c), .. }) if c == "ClusterNotFoundException" => {
                    return Ok(vec![]);
                }
                Err(e) => return Err(e),
            };
            let unknown: Vec<String> = found.into_iter().filter(|a| !running.contains(a)).collect();
            if !unknown.is_empty() {
                for (r, tags) in ecs_task::describe(&ctx.ecs, cluster, &unknown).await? {
                    if tags.get(UID_TAG) == Some(&uid)
                        && r.last_status.as_deref() != Some("STOPPED")
                    {
                        running.push(r.arn);
                    }
                }
            }
        }
        if running.is_empty() {
            return Ok(vec![]);
        }
        // StopTask takes at most 255 characters of reason.
        let mut reason = format!(
            "EcsTask {}/{} was deleted",
            self.namespace().unwrap_or_default(),
            self.name_any()
        );
        if reason.len() > 255 {
            reason = "its EcsTask was deleted".to_string();
        }
        for arn in &running {
            match ecs_task::stop(&ctx.ecs, cluster, arn, &reason).await {
                Ok(()) => {}
                // The cluster is gone, and its tasks with it.
                Err(Error::Ecs { code: Some(c), .. }) if c == "ClusterNotFoundException" => {
                    return Ok(vec![]);
                }
                Err(e) => return Err(e),
            }
        }
        Ok(vec![Note::normal(
            "Stopped",
            "StopTask",
            format!("stopped {} running task(s): {reason}", running.len()),
        )])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_tokens_are_stable_per_attempt_and_fit_ecs() {
        let a = run_token("uid", 1);
        assert_eq!(a, run_token("uid", 1));
        assert_ne!(a, run_token("uid", 2));
        assert_eq!(a.len(), 64);
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(human(SignedDuration::from_secs(72)), "1m12s");
        assert_eq!(human(SignedDuration::from_secs(-3)), "0s");
    }
}
