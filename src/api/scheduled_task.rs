//! `EcsScheduledTask`: EcsTask runs on a cron schedule, the CronJob of ECS.

// Repeated `printcolumn` / `x_kube(validation)` derive attributes are intended.
#![allow(clippy::duplicated_attributes)]

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::common::Condition;
use super::task::EcsTaskSpec;

/// ECS task runs on a schedule, managed by ecs-operator.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "ecs.operator.dev",
    version = "v1alpha1",
    kind = "EcsScheduledTask",
    namespaced,
    status = "EcsScheduledTaskStatus",
    shortname = "ecssched",
    category = "ecs",
    doc = "Runs an EcsTask on a cron schedule (like a Kubernetes CronJob). Each run is an EcsTask owned by this resource and named after its scheduled minute, so a restart never runs the same slot twice. Missed slots follow CronJob rules: only the most recent one runs.",
    printcolumn(name = "Schedule", type_ = "string", json_path = ".spec.schedule"),
    printcolumn(
        name = "Time Zone",
        type_ = "string",
        json_path = ".spec.timeZone",
        priority = 1
    ),
    printcolumn(name = "Suspend", type_ = "boolean", json_path = ".spec.suspend"),
    printcolumn(name = "Active", type_ = "integer", json_path = ".status.activeCount"),
    printcolumn(
        name = "Last Schedule",
        type_ = "date",
        json_path = ".status.lastScheduleTime"
    ),
    printcolumn(
        name = "Next",
        type_ = "string",
        json_path = ".status.nextScheduleTime",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    validation = Rule::new("self.metadata.name.size() <= 52").message("the name of an EcsScheduledTask may have at most 52 characters: it is used in a label on every run and, with the slot, in the runs' names")
)]
#[serde(rename_all = "camelCase")]
pub struct EcsScheduledTaskSpec {
    /// Cron schedule: five fields (minute hour day-of-month month day-of-week, e.g.
    /// "30 2 * * *") or a macro: @yearly, @annually, @monthly, @weekly, @daily,
    /// @midnight, @hourly. Evaluated in timeZone.
    #[x_kube(validation = Rule::new("self.matches('^\\\\s*(@(yearly|annually|monthly|weekly|daily|midnight|hourly)|[^\\\\s]+\\\\s+[^\\\\s]+\\\\s+[^\\\\s]+\\\\s+[^\\\\s]+\\\\s+[^\\\\s]+)\\\\s*$')").message("schedule must be five cron fields (minute hour day-of-month month day-of-week, e.g. '30 2 * * *') or one of @yearly, @annually, @monthly, @weekly, @daily, @midnight, @hourly"))]
    #[schemars(length(min = 1, max = 256))]
    pub schedule: String,

    /// IANA time zone the schedule is read in, e.g. Europe/Berlin (default UTC).
    /// Slots that a daylight-saving change skips or repeats run once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 64),
        regex(pattern = r"^[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+)*$")
    )]
    pub time_zone: Option<String>,

    /// What to do when a run is due while an earlier one is still active: Allow
    /// (default; runs overlap), Forbid (skip the new run) or Replace (stop the active
    /// run, then start the new one).
    #[serde(default)]
    pub concurrency_policy: ConcurrencyPolicy,

    /// Stop scheduling new runs (active runs continue).
    #[serde(default)]
    pub suspend: bool,

    /// A run that could not start within this many seconds of its slot (operator down,
    /// Forbid) is skipped. Omitted: late runs still start (only the latest missed one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 315360000))]
    pub starting_deadline_seconds: Option<i64>,

    /// Finished successful runs (EcsTask objects) to keep (default 3).
    #[serde(default = "default_success_history")]
    #[schemars(range(min = 0, max = 100))]
    pub successful_runs_history_limit: i32,

    /// Finished failed runs to keep (default 1).
    #[serde(default = "default_failed_history")]
    #[schemars(range(min = 0, max = 100))]
    pub failed_runs_history_limit: i32,

    /// The EcsTask spec each run gets.
    pub template: EcsTaskSpec,
}

fn default_success_history() -> i32 {
    3
}
fn default_failed_history() -> i32 {
    1
}

#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema,
)]
pub enum ConcurrencyPolicy {
    #[default]
    Allow,
    Forbid,
    Replace,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct EcsScheduledTaskStatus {
    /// The metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Ready (schedule valid and being followed), Reconciling, Stalled (e.g. an invalid
    /// time zone).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The slot of the latest run started (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_schedule_time: Option<String>,
    /// When the latest successful run finished (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_successful_time: Option<String>,
    /// The next slot (RFC 3339), unless suspended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_schedule_time: Option<String>,
    /// Names of the runs (EcsTasks) not finished yet.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub active: Vec<String>,
    /// Number of active runs.
    #[serde(default)]
    pub active_count: i32,
}
