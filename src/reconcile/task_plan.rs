//! Pure decisions for `EcsTask`: what an attempt's stopped tasks mean, when to
//! retry, when the deadline stops a run.

use std::time::Duration;

use k8s_openapi::jiff::{SignedDuration, Timestamp};

use crate::api::common::Reason;
use crate::api::task::{Phase, TaskRecord};

/// How soon running tasks are looked at again (ECS forgets stopped tasks after
/// about an hour, so results are recorded well before).
pub const TASK_POLL: Duration = Duration::from_secs(5);
/// First retry delay; doubles per failed attempt, capped at `RETRY_CAP`.
pub const RETRY_BASE: SignedDuration = SignedDuration::from_secs(10);
pub const RETRY_CAP: SignedDuration = SignedDuration::from_mins(10);

/// What one attempt's tasks add up to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptResult {
    Running,
    Succeeded,
    Failed {
        reason: Reason,
        message: String,
        exit_code: Option<i32>,
    },
}

fn stopped(t: &TaskRecord) -> bool {
    t.last_status.as_deref() == Some("STOPPED")
}

fn exit_text(code: Option<i32>) -> String {
    code.map(|e| e.to_string())
        .unwrap_or_else(|| "no exit code".into())
}

/// What a stopped task says about the run: None if it succeeded (it stopped because
/// an essential container exited, and every essential container exited 0).
fn task_failure(t: &TaskRecord, essential: &[String]) -> Option<AttemptResult> {
    let code = t.stop_code.as_deref().unwrap_or("");
    let essentials: Vec<_> = t
        .containers
        .iter()
        .filter(|c| essential.is_empty() || essential.contains(&c.name))
        .collect();
    let bad = essentials.iter().find(|c| c.exit_code != Some(0));
    let exited = code == "EssentialContainerExited";
    if exited && bad.is_none() {
        return None;
    }
    // The run's exit code: the failing container's, else 0 when every essential
    // container reported 0 (a task stopped by StopTask exits 0 but is no success).
    let exit_code = match bad {
        Some(c) => c.exit_code,
        None if essentials.is_empty() => None,
        None => Some(0),
    };
    let stop = format!(
        "task stopped with {}: {}",
        if code.is_empty() {
            "no stop code"
        } else {
            code
        },
        t.stopped_reason.as_deref().unwrap_or("no reason given")
    );
    let why = match bad {
        // A task stopped for another reason than its essential container exiting
        // (StopTask, a failed start): that reason comes first.
        Some(c) if !exited => {
            format!(
                "{stop}; container {} exited with {}",
                c.name,
                exit_text(c.exit_code)
            )
        }
        Some(c) => {
            let detail = c
                .reason
                .as_deref()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default();
            format!(
                "container {} exited with {}{detail}",
                c.name,
                exit_text(c.exit_code)
            )
        }
        None => stop,
    };
    let reason = match bad {
        _ if !code.is_empty() && !exited => Reason::Ecs(code.to_string()),
        Some(_) => Reason::NonZeroExit,
        None => Reason::Stopped,
    };
    let short = t.arn.rsplit('/').next().unwrap_or(&t.arn);
    Some(AttemptResult::Failed {
        reason,
        message: format!("task {short}: {why}"),
        exit_code,
    })
}

/// Success = every task stopped because an essential container exited, and every
/// essential container exited 0. `placed` short of `count` is a failure once the
/// placed tasks have stopped.
pub fn attempt_result(
    tasks: &[TaskRecord],
    count: i32,
    essential: &[String],
    placement_failures: &[String],
) -> AttemptResult {
    if tasks.is_empty() {
        let why = if placement_failures.is_empty() {
            "no tasks and no reason given".to_string()
        } else {
            placement_failures.join(", ")
        };
        return AttemptResult::Failed {
            reason: Reason::PlacementFailed,
            message: format!("ECS could not start the tasks: {why}"),
            exit_code: None,
        };
    }
    if tasks.iter().any(|t| !stopped(t)) {
        return AttemptResult::Running;
    }
    if let Some(failure) = tasks.iter().find_map(|t| task_failure(t, essential)) {
        return failure;
    }
    if (tasks.len() as i32) < count {
        return AttemptResult::Failed {
            reason: Reason::PlacementFailed,
            message: format!(
                "only {} of {count} tasks could be started: {}",
                tasks.len(),
                placement_failures.join(", ")
            ),
            exit_code: Some(0),
        };
    }
    AttemptResult::Succeeded
}

/// Delay before attempt `next` (2, 3, ...): 10 s, 20 s, 40 s ... capped at 10 min.
pub fn retry_delay(next: i32) -> SignedDuration {
    let exp = u32::try_from(next.saturating_sub(2)).unwrap_or(0).min(10);
    let d = RETRY_BASE * (1i32 << exp);
    if d > RETRY_CAP { RETRY_CAP } else { d }
}

/// Everything `decide` looks at.
#[derive(Debug, Clone)]
pub struct RunState<'a> {
    pub now: Timestamp,
    pub attempts: i32,
    pub count: i32,
    pub backoff_limit: i32,
    pub active_deadline_seconds: Option<i64>,
    pub start_time: Option<Timestamp>,
    /// Tasks of the current attempt, as just observed.
    pub current: &'a [TaskRecord],
    /// RunTask failure reasons of the current attempt.
    pub placement_failures: &'a [String],
    pub essential: &'a [String],
    /// status.nextAttemptTime, once a retry was scheduled.
    pub retry_at: Option<Timestamp>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Start attempt `attempt` (RunTask, after checking for tasks of a crashed try).
    Run { attempt: i32 },
    /// Tasks are running: look again soon.
    Poll,
    /// Stop the running tasks, then finish as Failed.
    StopAll { message: String },
    /// Failed attempt, retry not yet due.
    RetryAt { at: Timestamp, message: String },
    Finish {
        phase: Phase,
        reason: Reason,
        message: String,
        exit_code: Option<i32>,
    },
}

/// activeDeadlineSeconds, if it has passed. A deadline too far away to represent
/// is no deadline.
fn past_deadline(run: &RunState<'_>) -> Option<i64> {
    let (limit, start) = (run.active_deadline_seconds?, run.start_time?);
    let at = start.checked_add(SignedDuration::from_secs(limit)).ok()?;
    (run.now >= at).then_some(limit)
}

fn deadline_message(limit: i64) -> String {
    format!("the run exceeded activeDeadlineSeconds ({limit}s)")
}

pub fn decide(run: &RunState<'_>) -> Decision {
    let past_deadline = past_deadline(run);
    if run.attempts == 0 {
        return match past_deadline {
            Some(limit) => Decision::Finish {
                phase: Phase::Failed,
                reason: Reason::DeadlineExceeded,
                message: deadline_message(limit),
                exit_code: None,
            },
            None => Decision::Run { attempt: 1 },
        };
    }
    // What the attempt did is judged first: tasks that finished in time count even
    // if the operator only sees them after the deadline.
    match attempt_result(
        run.current,
        run.count,
        run.essential,
        run.placement_failures,
    ) {
        AttemptResult::Running => match past_deadline {
            Some(limit) => Decision::StopAll {
                message: deadline_message(limit),
            },
            None => Decision::Poll,
        },
        AttemptResult::Succeeded => Decision::Finish {
            phase: Phase::Succeeded,
            reason: Reason::Succeeded,
            message: format!(
                "{} task(run) exited 0 (attempt {} of {})",
                run.current.len(),
                run.attempts,
                run.backoff_limit + 1
            ),
            exit_code: Some(0),
        },
        AttemptResult::Failed {
            reason,
            message,
            exit_code,
        } => after_failure(run, past_deadline, reason, message, exit_code),
    }
}

/// A failed attempt: finish (deadline passed, no retries left) or retry when due.
fn after_failure(
    run: &RunState<'_>,
    past_deadline: Option<i64>,
    reason: Reason,
    message: String,
    exit_code: Option<i32>,
) -> Decision {
    if let Some(limit) = past_deadline {
        return Decision::Finish {
            phase: Phase::Failed,
            reason: Reason::DeadlineExceeded,
            message: format!("{}; last attempt: {message}", deadline_message(limit)),
            exit_code,
        };
    }
    if run.attempts > run.backoff_limit {
        return Decision::Finish {
            phase: Phase::Failed,
            reason,
            message: format!(
                "{message} (attempt {} of {}, no retries left)",
                run.attempts,
                run.backoff_limit + 1
            ),
            exit_code,
        };
    }
    // Once set, the retry time stays (a failure without stop times, e.g. no task
    // placed, must not push it forward on every look).
    let at = run.retry_at.unwrap_or_else(|| {
        let ended = run
            .current
            .iter()
            .filter_map(|t| t.stopped_at.as_deref()?.parse::<Timestamp>().ok())
            .max()
            .unwrap_or(run.now);
        ended
            .checked_add(retry_delay(run.attempts + 1))
            .unwrap_or(ended)
    });
    if run.now >= at {
        return Decision::Run {
            attempt: run.attempts + 1,
        };
    }
    Decision::RetryAt {
        at,
        message: format!("attempt {} failed: {message}; retrying", run.attempts),
    }
}

/// How long after RunTask a task that DescribeTasks does not report is taken as "not
/// seen yet": RunTask is eventually consistent (its API reference says to poll
/// DescribeTasks with backoff; tasks answer MISSING for a while, see
/// dask-cloudprovider 483, dagster 4448). Minutes, not seconds.
pub const NOT_SEEN_GRACE: SignedDuration = SignedDuration::from_mins(5);

/// The open tasks of a run that ECS did not report: within `NOT_SEEN_GRACE` of their
/// RunTask they are left as they are (the run keeps waiting; no second attempt can
/// start while one may exist); later, ECS has forgotten them (stopped tasks are kept
/// for about an hour) and they count as stopped with an unknown outcome.
pub fn account_for_unreported(records: &mut [TaskRecord], unreported: &[String], now: Timestamp) {
    for r in records.iter_mut().filter(|r| unreported.contains(&r.arn)) {
        let created = r
            .created_at
            .as_deref()
            .and_then(|t| t.parse::<Timestamp>().ok());
        let maybe_not_visible_yet = created.is_some_and(|c| now.duration_since(c) < NOT_SEEN_GRACE);
        if maybe_not_visible_yet {
            continue;
        }
        r.last_status = Some("STOPPED".into());
        r.stop_code = Some("TaskNotFound".into());
        r.stopped_reason = Some(
            "ECS no longer reports this task (stopped tasks are kept for about an hour); \
             its result is unknown"
                .into(),
        );
    }
}

/// How often running tasks are described: often at first, less for long runs (ECS
/// keeps a stopped task for about an hour, so results are still recorded).
pub fn poll_interval(running_for: SignedDuration) -> Duration {
    if running_for < SignedDuration::from_mins(5) {
        TASK_POLL
    } else {
        Duration::from_secs(30)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::task::ContainerResult;

    fn unseen(created_secs_ago: Option<i64>) -> TaskRecord {
        let now = Timestamp::from_second(10_000).unwrap();
        TaskRecord {
            arn: "t1".into(),
            attempt: 1,
            last_status: Some("PROVISIONING".into()),
            created_at: created_secs_ago.map(|s| {
                now.checked_sub(SignedDuration::from_secs(s))
                    .unwrap()
                    .to_string()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_task_not_reported_right_after_run_task_is_not_seen_yet() {
        let now = Timestamp::from_second(10_000).unwrap();
        let mut records = vec![unseen(Some(1))];
        account_for_unreported(&mut records, &["t1".into()], now);
        assert_eq!(records[0].last_status.as_deref(), Some("PROVISIONING"));
        assert_eq!(records[0].stop_code, None);
        // ... and so the run keeps polling: no retry, no second copy.
        let d = decide(&RunState {
            now,
            attempts: 1,
            count: 1,
            backoff_limit: 3,
            active_deadline_seconds: None,
            start_time: Some(now),
            current: &records,
            placement_failures: &[],
            essential: &[],
            retry_at: None,
        });
        assert_eq!(d, Decision::Poll);
        // Still within the grace period after four minutes.
        let mut records = vec![unseen(Some(240))];
        account_for_unreported(&mut records, &["t1".into()], now);
        assert_eq!(records[0].stop_code, None);
    }

    #[test]
    fn a_task_unreported_long_after_run_task_was_forgotten_by_ecs() {
        let now = Timestamp::from_second(10_000).unwrap();
        for created in [Some(301), None] {
            let mut records = vec![unseen(created)];
            account_for_unreported(&mut records, &["t1".into()], now);
            assert_eq!(records[0].last_status.as_deref(), Some("STOPPED"));
            assert_eq!(records[0].stop_code.as_deref(), Some("TaskNotFound"));
        }
        // Reported tasks are left alone.
        let mut records = vec![unseen(Some(4000))];
        account_for_unreported(&mut records, &[], now);
        assert_eq!(records[0].stop_code, None);
    }

    fn task(stop_code: Option<&str>, exits: &[(&str, Option<i32>)]) -> TaskRecord {
        TaskRecord {
            arn: "arn:aws:ecs:us-east-1:0:task/c/abc".into(),
            attempt: 1,
            last_status: Some(
                if stop_code.is_some() {
                    "STOPPED"
                } else {
                    "RUNNING"
                }
                .into(),
            ),
            stop_code: stop_code.map(str::to_string),
            stopped_reason: stop_code.map(|_| "Essential container in task exited".into()),
            stopped_at: stop_code.map(|_| "2026-01-01T00:00:00Z".into()),
            containers: exits
                .iter()
                .map(|(n, e)| ContainerResult {
                    name: n.to_string(),
                    exit_code: *e,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    const OK: &str = "EssentialContainerExited";

    #[test]
    fn sidecars_killed_after_the_job_exits_do_not_fail_a_run_that_names_its_containers() {
        // The job container exits 0; ECS then stops the envoy sidecar, which reports 137.
        let t = task(
            Some("EssentialContainerExited"),
            &[("app", Some(0)), ("envoy", Some(137))],
        );
        let success = ["app".to_string()];
        assert_eq!(
            attempt_result(std::slice::from_ref(&t), 1, &success, &[]),
            AttemptResult::Succeeded
        );
        // Judged on every essential container, the same task fails with 137.
        let both = ["app".to_string(), "envoy".to_string()];
        assert!(matches!(
            attempt_result(&[t], 1, &both, &[]),
            AttemptResult::Failed {
                exit_code: Some(137),
                ..
            }
        ));
    }

    #[test]
    fn attempt_results_table() {
        let essential = vec!["app".to_string()];
        let cases: Vec<(Vec<TaskRecord>, i32, AttemptResult)> = vec![
            (
                vec![task(None, &[("app", None)])],
                1,
                AttemptResult::Running,
            ),
            (
                vec![
                    task(Some(OK), &[("app", Some(0))]),
                    task(None, &[("app", None)]),
                ],
                2,
                AttemptResult::Running,
            ),
            (
                vec![task(Some(OK), &[("app", Some(0))])],
                1,
                AttemptResult::Succeeded,
            ),
            // A non-essential sidecar's exit code does not matter.
            (
                vec![task(Some(OK), &[("app", Some(0)), ("sidecar", Some(137))])],
                1,
                AttemptResult::Succeeded,
            ),
        ];
        for (tasks, count, want) in cases {
            assert_eq!(
                attempt_result(&tasks, count, &essential, &[]),
                want,
                "{tasks:?}"
            );
        }
    }

    fn failed_reason(r: AttemptResult) -> (Reason, String, Option<i32>) {
        match r {
            AttemptResult::Failed {
                reason,
                message,
                exit_code,
            } => (reason, message, exit_code),
            other => panic!("expected Failed, got {other:?}"),
        }
    }

    #[test]
    fn failures_say_why() {
        let essential = vec!["app".to_string()];
        let (r, m, e) = failed_reason(attempt_result(
            &[task(Some(OK), &[("app", Some(3))])],
            1,
            &essential,
            &[],
        ));
        assert_eq!((r.as_str(), e), ("NonZeroExit", Some(3)));
        assert!(m.contains("container app exited with 3"), "{m}");

        let (r, m, _) = failed_reason(attempt_result(
            &[task(Some("TaskFailedToStart"), &[("app", None)])],
            1,
            &essential,
            &[],
        ));
        assert_eq!(r, "TaskFailedToStart");
        assert!(m.contains("no exit code"), "{m}");

        // Stopped by someone (StopTask): exit 0 but not a success.
        let (r, m, _) = failed_reason(attempt_result(
            &[task(Some("UserInitiated"), &[("app", Some(0))])],
            1,
            &essential,
            &[],
        ));
        assert_eq!(r, "UserInitiated");
        assert!(m.contains("task stopped with UserInitiated"), "{m}");
        assert_eq!(
            failed_reason(attempt_result(
                &[task(Some("UserInitiated"), &[("app", Some(0))])],
                1,
                &essential,
                &[]
            ))
            .2,
            Some(0)
        );

        // Forgotten by ECS while nobody watched: not a success.
        let (r, _, _) = failed_reason(attempt_result(
            &[task(Some("TaskNotFound"), &[("app", None)])],
            1,
            &essential,
            &[],
        ));
        assert_eq!(r, "TaskNotFound");

        let (r, m, _) = failed_reason(attempt_result(
            &[],
            1,
            &essential,
            &["RESOURCE:MEMORY".into()],
        ));
        assert_eq!(r, "PlacementFailed");
        assert!(m.contains("RESOURCE:MEMORY"), "{m}");

        let (r, _, _) = failed_reason(attempt_result(
            &[task(Some(OK), &[("app", Some(0))])],
            2,
            &essential,
            &["RESOURCE:CPU".into()],
        ));
        assert_eq!(r, "PlacementFailed");
    }

    #[test]
    fn retry_delays_double_and_are_capped() {
        assert_eq!(retry_delay(2), SignedDuration::from_secs(10));
        assert_eq!(retry_delay(3), SignedDuration::from_secs(20));
        assert_eq!(retry_delay(4), SignedDuration::from_secs(40));
        assert_eq!(retry_delay(30), RETRY_CAP);
    }

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn state<'a>(
        now: &str,
        attempts: i32,
        current: &'a [TaskRecord],
        essential: &'a [String],
    ) -> RunState<'a> {
        RunState {
            now: at(now),
            attempts,
            count: 1,
            backoff_limit: 1,
            active_deadline_seconds: None,
            start_time: Some(at("2026-01-01T00:00:00Z")),
            current,
            placement_failures: &[],
            essential,
            retry_at: None,
        }
    }

    #[test]
    fn decisions_follow_job_semantics() {
        let essential = vec!["app".to_string()];
        let none: Vec<TaskRecord> = vec![];
        assert_eq!(
            decide(&state("2026-01-01T00:00:00Z", 0, &none, &essential)),
            Decision::Run { attempt: 1 }
        );
        let running = vec![task(None, &[("app", None)])];
        assert_eq!(
            decide(&state("2026-01-01T00:00:05Z", 1, &running, &essential)),
            Decision::Poll
        );
        let ok = vec![task(Some(OK), &[("app", Some(0))])];
        assert!(matches!(
            decide(&state("2026-01-01T00:00:05Z", 1, &ok, &essential)),
            Decision::Finish {
                phase: Phase::Succeeded,
                ..
            }
        ));
        // First failure with backoffLimit 1: retry after 10 s from the stop.
        let bad = vec![task(Some(OK), &[("app", Some(1))])];
        assert!(matches!(
            decide(&state("2026-01-01T00:00:05Z", 1, &bad, &essential)),
            Decision::RetryAt { .. }
        ));
        assert_eq!(
            decide(&state("2026-01-01T00:00:10Z", 1, &bad, &essential)),
            Decision::Run { attempt: 2 }
        );
        // Second failure: no retries left.
        match decide(&state("2026-01-01T00:00:30Z", 2, &bad, &essential)) {
            Decision::Finish {
                phase: Phase::Failed,
                reason,
                exit_code,
                ..
            } => {
                assert_eq!(reason, "NonZeroExit");
                assert_eq!(exit_code, Some(1));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_success_seen_after_the_deadline_is_still_a_success() {
        let essential = vec!["app".to_string()];
        let ok = vec![task(Some(OK), &[("app", Some(0))])];
        let mut s = state("2026-01-01T00:01:00Z", 1, &ok, &essential);
        s.active_deadline_seconds = Some(30);
        assert!(matches!(
            decide(&s),
            Decision::Finish {
                phase: Phase::Succeeded,
                ..
            }
        ));
        // Absurd deadlines do not overflow.
        s.active_deadline_seconds = Some(i64::MAX);
        assert!(matches!(decide(&s), Decision::Finish { .. }));
    }

    #[test]
    fn an_unplaced_attempt_retries_at_a_fixed_time() {
        let essential = vec!["app".to_string()];
        let none: Vec<TaskRecord> = vec![];
        let failures = vec!["RESOURCE:MEMORY".to_string()];
        let mut s = state("2026-01-01T00:00:05Z", 1, &none, &essential);
        s.placement_failures = &failures;
        let Decision::RetryAt { at, .. } = decide(&s) else {
            panic!("expected RetryAt");
        };
        // Later looks keep that time, and reach it.
        s.retry_at = Some(at);
        s.now = at;
        assert_eq!(decide(&s), Decision::Run { attempt: 2 });
    }

    #[test]
    fn deadline_stops_running_tasks_then_fails() {
        let essential = vec!["app".to_string()];
        let running = vec![task(None, &[("app", None)])];
        let mut s = state("2026-01-01T00:01:00Z", 1, &running, &essential);
        s.active_deadline_seconds = Some(30);
        assert!(matches!(decide(&s), Decision::StopAll { .. }));
        let stopped = vec![task(Some("UserInitiated"), &[("app", Some(0))])];
        let mut s = state("2026-01-01T00:01:00Z", 1, &stopped, &essential);
        s.active_deadline_seconds = Some(30);
        assert!(matches!(
            decide(&s),
            Decision::Finish { phase: Phase::Failed, ref reason, .. } if reason == "DeadlineExceeded"
        ));
        // Within the deadline nothing changes.
        let mut s = state("2026-01-01T00:00:10Z", 1, &running, &essential);
        s.active_deadline_seconds = Some(30);
        assert_eq!(decide(&s), Decision::Poll);
    }
}
