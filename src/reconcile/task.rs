//! `EcsTask`: the I/O around the pure decisions in `task_plan`.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams};
use sha2::{Digest, Sha256};

use super::refs::{self, Resolved};
use super::task_plan::{self, Decision, RunState};
use super::{Context, KindCondition, Managed, Note, Outcome};
use crate::api::common::{Health, Reason, UID_TAG, ownership_tags};
use crate::api::task::{EcsTask, EcsTaskStatus, Phase, RunFailure, TaskRecord};
use crate::ecs::task::{self as ecs_task, ATTEMPT_TAG, RUN_TAG};
use crate::ecs::task_definition::td_short;
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

fn compact(status: &mut EcsTaskStatus) {
    let oldest = status.attempts - KEPT_ATTEMPTS + 1;
    status.tasks.retain(|t| t.attempt >= oldest);
    for t in &mut status.tasks {
        clip(&mut t.stopped_reason);
        for c in &mut t.containers {
            clip(&mut c.reason);
        }
    }
    for f in &mut status.failures {
        clip(&mut f.detail);
    }
}

fn summary(status: &mut EcsTaskStatus, count: i32) {
    let current: Vec<&TaskRecord> = status
        .tasks
        .iter()
        .filter(|t| t.attempt == status.attempts)
        .collect();
    let ok = current
        .iter()
        .filter(|t| {
            t.stop_code.as_deref() == Some("EssentialContainerExited")
                && t.containers
                    .iter()
                    .filter(|c| {
                        status.essential_containers.is_empty()
                            || status.essential_containers.contains(&c.name)
                    })
                    .all(|c| c.exit_code == Some(0))
        })
        .count();
    status.completions = Some(format!("{ok}/{count}"));
    // Only once finished: a ticking value would rewrite the status on every poll.
    status.duration = None;
    if let (Some(start), Some(end)) = (
        parse_time(status.start_time.as_deref()),
        parse_time(status.completion_time.as_deref()),
    ) {
        status.duration = Some(human(end.duration_since(start)));
    }
}

/// Complete / Failed, as a Job has them.
fn job_conditions(phase: Option<Phase>, health: &Health) -> Vec<KindCondition> {
    let type_ = match phase {
        Some(Phase::Succeeded) => "Complete",
        Some(Phase::Failed) => "Failed",
        _ => return vec![],
    };
    vec![KindCondition {
        type_: type_.to_string(),
        status: true,
        reason: health.reason().clone(),
        message: health.message().to_string(),
    }]
}

/// Where and what a run runs, fixed when it starts.
struct RunTarget {
    cluster: String,
    task_definition: String,
}

enum Target {
    Ready(RunTarget),
    /// Not ready to run (waiting for a reference, just recorded, invalid): report this.
    Early(Box<Outcome<EcsTaskStatus>>),
}

fn failure_text(f: &RunFailure) -> String {
    match (&f.reason, &f.detail) {
        (Some(r), Some(d)) => format!("{r} ({d})"),
        (Some(r), None) => r.clone(),
        _ => "unknown".into(),
    }
}

/// A task this EcsTask started: by its run tag, or (tasks started before that tag
/// existed) its ownership uid tag.
fn is_run_of(tags: &BTreeMap<String, String>, uid: &str) -> bool {
    match tags.get(RUN_TAG) {
        Some(run) => run == uid,
        None => tags.get(UID_TAG).is_some_and(|u| u == uid),
    }
}

impl EcsTask {
    fn outcome(
        &self,
        mut status: EcsTaskStatus,
        health: Health,
        requeue: Option<Duration>,
        notes: Vec<Note>,
    ) -> Outcome<EcsTaskStatus> {
        compact(&mut status);
        summary(&mut status, self.spec.count);
        let conditions = job_conditions(status.phase, &health);
        Outcome {
            conditions,
            ..Outcome::new(status, health)
                .requeue_opt(requeue)
                .notes(notes)
        }
    }

    /// Pending on a missing or unready reference (the watches wake it when it comes).
    fn waiting(&self, mut status: EcsTaskStatus, message: String) -> Outcome<EcsTaskStatus> {
        status.phase = Some(Phase::Pending);
        self.outcome(
            status,
            Health::progressing(Reason::WaitingForReference, message),
            Some(super::service::REFERENCE_POLL),
            vec![],
        )
    }

    /// A finished run: keeps its outcome; deletes itself after the TTL.
    async fn finished(
        &self,
        ctx: &Context,
        status: EcsTaskStatus,
        phase: Phase,
        now: Timestamp,
    ) -> Result<Outcome<EcsTaskStatus>, Error> {
        let reason = Reason::parse(status.reason.as_deref().unwrap_or("Failed"));
        // The message the run finished with (kept in its Complete / Failed condition).
        let finished_with = self.status.as_ref().and_then(|s| {
            s.conditions
                .iter()
                .find(|c| c.type_ == "Complete" || c.type_ == "Failed")
                .map(|c| c.message.clone())
        });
        let health = match phase {
            Phase::Succeeded => Health::ready(Reason::Succeeded, finished_with.unwrap_or_default()),
            _ => Health::stalled(
                reason,
                finished_with.unwrap_or_else(|| "the run failed; see status.tasks".into()),
            ),
        };
        let (Some(ttl), Some(done)) = (
            self.spec.ttl_seconds_after_finished,
            parse_time(status.completion_time.as_deref()),
        ) else {
            return Ok(self.outcome(status, health, None, vec![]));
        };
        // A TTL too long to represent never expires.
        let expires = done
            .checked_add(SignedDuration::from_secs(ttl))
            .unwrap_or(Timestamp::MAX);
        if now < expires {
            let wait = Duration::from_secs(expires.duration_since(now).as_secs().max(1) as u64);
            return Ok(self.outcome(status, health, Some(wait), vec![]));
        }
        let api: Api<EcsTask> =
            Api::namespaced(ctx.kube.clone(), &self.namespace().unwrap_or_default());
        api.delete(&self.name_any(), &DeleteParams::background())
            .await?;
        let note = Note::normal(
            Reason::Expired,
            "Delete",
            format!("deleted {ttl}s after the run finished (ttlSecondsAfterFinished)"),
        );
        Ok(self.outcome(status, health, None, vec![note]))
    }

    /// Where and what to run: resolved once, recorded in status before the first
    /// RunTask (a retry after a crash must send the same request and client token).
    async fn resolve_target(
        &self,
        ctx: &Context,
        status: &mut EcsTaskStatus,
    ) -> Result<Target, Error> {
        let ns = self.namespace().unwrap_or_default();
        let cluster = match &status.cluster {
            Some(c) => c.clone(),
            None => match refs::cluster_of(self, ctx, &ns).await? {
                Resolved::Found(c) => c,
                Resolved::Waiting(m) => {
                    return Ok(Target::Early(Box::new(self.waiting(status.clone(), m))));
                }
            },
        };
        if let Some(td) = &status.task_definition {
            return Ok(Target::Ready(RunTarget {
                cluster,
                task_definition: td.clone(),
            }));
        }
        let td = match refs::task_definition_of(self, ctx, &ns).await? {
            Resolved::Found(t) => t,
            Resolved::Waiting(m) => {
                return Ok(Target::Early(Box::new(self.waiting(status.clone(), m))));
            }
        };
        let containers = ecs_task::containers(&ctx.ecs, &td).await?;
        let arn = containers.arn.clone();
        let deciding = match self.success_containers(&containers) {
            Ok(names) => names,
            Err(message) => {
                let health = Health::stalled(Reason::InvalidSpec, message);
                return Ok(Target::Early(Box::new(self.outcome(
                    status.clone(),
                    health,
                    None,
                    vec![],
                ))));
            }
        };
        status.essential_containers = deciding;
        status.cluster = Some(cluster.clone());
        status.task_definition = Some(arn.clone());
        status.phase = Some(Phase::Pending);
        status.reason = Some("Starting".into());
        let health = Health::progressing(
            Reason::Starting,
            format!("starting {} in {cluster}", td_short(&arn)),
        );
        let outcome = self.outcome(
            status.clone(),
            health,
            Some(Duration::from_millis(200)),
            vec![],
        );
        Ok(Target::Early(Box::new(outcome)))
    }

    /// spec.successContainers (each must be a container of the task definition), else
    /// the task definition's essential containers.
    fn success_containers(
        &self,
        td: &ecs_task::TaskDefinitionContainers,
    ) -> Result<Vec<String>, String> {
        let Some(names) = &self.spec.success_containers else {
            return Ok(td.essential.clone());
        };
        let unknown: Vec<&str> = names
            .iter()
            .filter(|n| !td.all.contains(n))
            .map(String::as_str)
            .collect();
        if unknown.is_empty() {
            return Ok(names.clone());
        }
        Err(format!(
            "spec.successContainers names {} but {} has only {}",
            unknown.join(", "),
            td_short(&td.arn),
            td.all.join(", ")
        ))
    }

    /// Describes the current attempt's tasks that have not stopped yet and merges
    /// what ECS reports into the records.
    async fn observe_open(
        &self,
        ctx: &Context,
        cluster: &str,
        status: &mut EcsTaskStatus,
        now: Timestamp,
    ) -> Result<(), Error> {
        let open: Vec<String> = status
            .tasks
            .iter()
            .filter(|t| t.attempt == status.attempts && t.last_status.as_deref() != Some("STOPPED"))
            .map(|t| t.arn.clone())
            .collect();
        if open.is_empty() {
            return Ok(());
        }
        let fresh: Vec<TaskRecord> = ecs_task::describe(&ctx.ecs, cluster, &open)
            .await?
            .into_iter()
            .map(|(r, _)| r)
            .collect();
        let unreported: Vec<String> = open
            .into_iter()
            .filter(|arn| !fresh.iter().any(|f| &f.arn == arn))
            .collect();
        task_plan::account_for_unreported(&mut status.tasks, &unreported, now);
        merge(&mut status.tasks, fresh);
        Ok(())
    }

    /// Starts attempt `attempt`, unless a previous operator started it and crashed
    /// before recording it.
    async fn start_attempt(
        &self,
        ctx: &Context,
        target: &RunTarget,
        mut status: EcsTaskStatus,
        attempt: i32,
        now: Timestamp,
    ) -> Result<Outcome<EcsTaskStatus>, Error> {
        let uid = self.uid().unwrap_or_default();
        let recovered = self
            .recover_attempt(ctx, target, &status, &uid, attempt)
            .await?;
        let mut notes = Vec::new();
        if recovered.is_empty() {
            let (mut tasks, failures) = ecs_task::run(
                &ctx.ecs,
                &target.cluster,
                &target.task_definition,
                &self.spec,
                &self.started_by(),
                &self.run_tags(&uid, attempt),
                attempt,
                &run_token(&uid, attempt),
            )
            .await?;
            for t in &mut tasks {
                t.created_at.get_or_insert_with(|| second(now));
            }
            notes.extend(self.run_notes(target, attempt, &tasks, &failures));
            status.failures = failures;
            merge(&mut status.tasks, tasks);
        } else {
            notes.push(Note::normal(
                Reason::Recovered,
                "ListTasks",
                format!(
                    "attempt {attempt}: found {} task(s) started before a restart; not starting more",
                    recovered.len()
                ),
            ));
            status.failures.clear();
            merge(&mut status.tasks, recovered);
        }
        status.attempts = attempt;
        status.next_attempt_time = None;
        status.start_time.get_or_insert_with(|| second(now));
        status.phase = Some(Phase::Running);
        status.reason = Some("Running".into());
        Ok(self.outcome(
            status,
            Health::progressing(Reason::Running, format!("attempt {attempt} running")),
            Some(Duration::from_secs(2)),
            notes,
        ))
    }

    /// The running tasks of `attempt` that status does not list yet. (Stopped ones
    /// are not listed by ListTasks; the repeated RunTask's client token returns them.)
    async fn recover_attempt(
        &self,
        ctx: &Context,
        target: &RunTarget,
        status: &EcsTaskStatus,
        uid: &str,
        attempt: i32,
    ) -> Result<Vec<TaskRecord>, Error> {
        let found = ecs_task::find_running(&ctx.ecs, &target.cluster, &self.started_by()).await?;
        let unknown: Vec<String> = found
            .into_iter()
            .filter(|a| !status.tasks.iter().any(|t| &t.arn == a))
            .collect();
        if unknown.is_empty() {
            return Ok(vec![]);
        }
        let attempt_text = attempt.to_string();
        Ok(ecs_task::describe(&ctx.ecs, &target.cluster, &unknown)
            .await?
            .into_iter()
            .filter(|(_, tags)| {
                is_run_of(tags, uid) && tags.get(ATTEMPT_TAG) == Some(&attempt_text)
            })
            .map(|(mut r, _)| {
                r.attempt = attempt;
                r
            })
            .collect())
    }

    /// spec.tags, ownership tags, and the run / attempt tags recovery relies on.
    fn run_tags(&self, uid: &str, attempt: i32) -> BTreeMap<String, String> {
        let mut tags = self.spec.tags.clone();
        tags.extend(ownership_tags(
            &self.namespace().unwrap_or_default(),
            &self.name_any(),
            uid,
        ));
        tags.insert(RUN_TAG.into(), uid.to_string());
        tags.insert(ATTEMPT_TAG.into(), attempt.to_string());
        tags
    }

    fn run_notes(
        &self,
        target: &RunTarget,
        attempt: i32,
        tasks: &[TaskRecord],
        failures: &[RunFailure],
    ) -> Vec<Note> {
        let ids: Vec<&str> = tasks
            .iter()
            .map(|t| t.arn.rsplit('/').next().unwrap_or(&t.arn))
            .collect();
        let mut notes = vec![Note::normal(
            Reason::Started,
            "RunTask",
            format!(
                "attempt {attempt}: started {} task(s) of {} in {}: {}",
                tasks.len(),
                td_short(&target.task_definition),
                target.cluster,
                ids.join(", ")
            ),
        )];
        if !failures.is_empty() {
            let why: Vec<String> = failures
                .iter()
                .map(|f| f.reason.clone().unwrap_or_default())
                .collect();
            notes.push(Note::warning(
                Reason::PlacementFailed,
                "RunTask",
                format!(
                    "attempt {attempt}: ECS could not start {} task(s): {}",
                    failures.len(),
                    why.join(", ")
                ),
            ));
        }
        notes
    }

    fn polling(
        &self,
        mut status: EcsTaskStatus,
        current: &[TaskRecord],
        now: Timestamp,
    ) -> Outcome<EcsTaskStatus> {
        status.phase = Some(Phase::Running);
        status.reason = Some("Running".into());
        let running = current
            .iter()
            .filter(|t| t.last_status.as_deref() != Some("STOPPED"))
            .count();
        let message = format!(
            "attempt {}: {running} task(s) still running",
            status.attempts
        );
        let running_for = parse_time(status.start_time.as_deref())
            .map(|t| now.duration_since(t))
            .unwrap_or_default();
        self.outcome(
            status,
            Health::progressing(Reason::Running, message),
            Some(task_plan::poll_interval(running_for)),
            vec![],
        )
    }

    /// Stops what ECS is not already stopping (Fargate can take a while), then the
    /// run finishes as Failed on a later pass.
    async fn stop_for_deadline(
        &self,
        ctx: &Context,
        cluster: &str,
        status: EcsTaskStatus,
        current: &[TaskRecord],
        message: String,
    ) -> Result<Outcome<EcsTaskStatus>, Error> {
        let to_stop: Vec<&TaskRecord> = current
            .iter()
            .filter(|t| t.last_status.as_deref() != Some("STOPPED"))
            .filter(|t| t.desired_status.as_deref() != Some("STOPPED"))
            .collect();
        for t in &to_stop {
            ecs_task::stop(&ctx.ecs, cluster, &t.arn, &message).await?;
        }
        let (notes, requeue) = if to_stop.is_empty() {
            (vec![], task_plan::TASK_POLL)
        } else {
            let note = Note::warning(Reason::DeadlineExceeded, "StopTask", message.clone());
            (vec![note], Duration::from_secs(1))
        };
        Ok(self.outcome(
            status,
            Health::progressing(Reason::DeadlineExceeded, message),
            Some(requeue),
            notes,
        ))
    }

    fn waiting_to_retry(
        &self,
        mut status: EcsTaskStatus,
        at: Timestamp,
        message: String,
        now: Timestamp,
    ) -> Outcome<EcsTaskStatus> {
        let first = status.next_attempt_time.is_none();
        status.phase = Some(Phase::Pending);
        status.reason = Some("BackoffWaiting".into());
        status.next_attempt_time = Some(second(at));
        let wait = Duration::from_secs(at.duration_since(now).as_secs().max(1) as u64);
        let notes = if first {
            vec![Note::warning(
                Reason::AttemptFailed,
                "Retry",
                message.clone(),
            )]
        } else {
            vec![]
        };
        self.outcome(
            status,
            Health::progressing(Reason::BackoffWaiting, message),
            Some(wait),
            notes,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn finish(
        &self,
        mut status: EcsTaskStatus,
        current: &[TaskRecord],
        phase: Phase,
        reason: Reason,
        message: String,
        exit_code: Option<i32>,
        now: Timestamp,
    ) -> Outcome<EcsTaskStatus> {
        status.phase = Some(phase);
        status.reason = Some(reason.as_str().to_string());
        status.exit_code = exit_code;
        status.next_attempt_time = None;
        let end = current
            .iter()
            .filter_map(|t| parse_time(t.stopped_at.as_deref()))
            .max()
            .unwrap_or(now);
        status.completion_time = Some(second(end));
        let (health, note) = match phase {
            Phase::Succeeded => (
                Health::ready(Reason::Succeeded, message.clone()),
                Note::normal(Reason::Succeeded, "Complete", message),
            ),
            _ => (
                Health::stalled(reason, message.clone()),
                Note::warning(Reason::Failed, "Complete", message),
            ),
        };
        let requeue = self
            .spec
            .ttl_seconds_after_finished
            .map(|t| Duration::from_secs(t.max(1) as u64));
        self.outcome(status, health, requeue, vec![note])
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
    fn placement(&self) -> &crate::api::common::Placement {
        &self.spec.placement
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
        ctx: &std::sync::Arc<Context>,
        _namespace: Option<&str>,
    ) -> kube::runtime::Controller<Self> {
        refs::watch_references(controller, ctx)
    }

    async fn apply(&self, ctx: &Context) -> Result<Outcome<EcsTaskStatus>, Error> {
        let mut status = self.status.clone().unwrap_or_default();
        let now = Timestamp::now();
        // Finished: nothing more in ECS; only the TTL is left.
        if let Some(phase @ (Phase::Succeeded | Phase::Failed)) = status.phase {
            return self.finished(ctx, status, phase, now).await;
        }
        let target = match self.resolve_target(ctx, &mut status).await? {
            Target::Ready(t) => t,
            Target::Early(outcome) => return Ok(*outcome),
        };
        self.observe_open(ctx, &target.cluster, &mut status, now)
            .await?;
        let current: Vec<TaskRecord> = status
            .tasks
            .iter()
            .filter(|t| t.attempt == status.attempts)
            .cloned()
            .collect();
        let placement: Vec<String> = status.failures.iter().map(failure_text).collect();
        let decision = task_plan::decide(&RunState {
            now,
            attempts: status.attempts,
            count: self.spec.count,
            backoff_limit: self.spec.backoff_limit,
            active_deadline_seconds: self.spec.active_deadline_seconds,
            start_time: parse_time(status.start_time.as_deref()),
            current: &current,
            placement_failures: &placement,
            retry_at: parse_time(status.next_attempt_time.as_deref()),
            essential: &status.essential_containers,
        });
        match decision {
            Decision::Run { attempt } => {
                self.start_attempt(ctx, &target, status, attempt, now).await
            }
            Decision::Poll => Ok(self.polling(status, &current, now)),
            Decision::StopAll { message } => {
                self.stop_for_deadline(ctx, &target.cluster, status, &current, message)
                    .await
            }
            Decision::RetryAt { at, message } => {
                Ok(self.waiting_to_retry(status, at, message, now))
            }
            Decision::Finish {
                phase,
                reason,
                message,
                exit_code,
            } => Ok(self.finish(status, &current, phase, reason, message, exit_code, now)),
        }
    }

    async fn cleanup(&self, ctx: &Context) -> Result<Vec<Note>, Error> {
        let Some(status) = &self.status else {
            return Ok(vec![]);
        };
        let Some(cluster) = &status.cluster else {
            return Ok(vec![]);
        };
        let uid = self.uid().unwrap_or_default();
        let mut running: Vec<String> = status
            .tasks
            .iter()
            .filter(|t| t.last_status.as_deref() != Some("STOPPED"))
            .map(|t| t.arn.clone())
            .collect();
        // Also tasks started but never recorded (a crash right after RunTask).
        if status
            .phase
            .is_some_and(|p| p == Phase::Running || p == Phase::Pending)
        {
            let found = match ecs_task::find_running(&ctx.ecs, cluster, &self.started_by()).await {
                Ok(f) => f,
                Err(Error::Ecs { code: Some(c), .. }) if c == "ClusterNotFoundException" => {
                    return Ok(vec![]);
                }
                Err(e) => return Err(e),
            };
            let unknown: Vec<String> = found.into_iter().filter(|a| !running.contains(a)).collect();
            if !unknown.is_empty() {
                for (r, tags) in ecs_task::describe(&ctx.ecs, cluster, &unknown).await? {
                    if is_run_of(&tags, &uid) && r.last_status.as_deref() != Some("STOPPED") {
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
            Reason::Stopped,
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
    fn runs_are_recognised_by_their_run_tag_even_when_propagation_overrode_ownership() {
        // propagateTags: TASK_DEFINITION copied the task definition's ownership tags
        // over the task's: the uid tag names the EcsTaskDefinition now.
        let mut tags = ownership_tags("ns", "migrate-td", "td-uid");
        tags.insert(RUN_TAG.into(), "task-uid".into());
        tags.insert(ATTEMPT_TAG.into(), "1".into());
        assert!(is_run_of(&tags, "task-uid"));
        assert!(!is_run_of(&tags, "td-uid"));
        // Tasks started before the run tag existed: the uid tag.
        let old = ownership_tags("ns", "migrate", "task-uid");
        assert!(is_run_of(&old, "task-uid"));
        assert!(!is_run_of(&old, "other"));
    }

    /// The shared ownership table, seen by EcsTask: a run only ever follows tasks it
    /// started itself. Nothing is adopted, not even its own history (a task of an
    /// earlier EcsTask of this name is that run's, not this one's).
    #[test]
    fn ownership_table_holds_for_runs() {
        use crate::reconcile::owned::table::{self, Expect};
        for row in table::rows("migrate") {
            let want = row.expect == Expect::Ours;
            assert_eq!(is_run_of(&row.tags, table::UID), want, "{:?}", row.tags);
        }
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(human(SignedDuration::from_secs(72)), "1m12s");
        assert_eq!(human(SignedDuration::from_secs(-3)), "0s");
    }
}
