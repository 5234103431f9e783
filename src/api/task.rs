//! `EcsTask`: one run of a task definition to completion, the Job of ECS.

// Repeated `printcolumn` / `x_kube(validation)` derive attributes are intended.
#![allow(clippy::duplicated_attributes)]

use std::collections::BTreeMap;

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::common::{Condition, Placement};

/// A run of an ECS task definition to completion, managed by ecs-operator.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "ecs.operator.dev",
    version = "v1alpha1",
    kind = "EcsTask",
    namespaced,
    status = "EcsTaskStatus",
    shortname = "ecstask",
    category = "ecs",
    doc = "One run of an ECS task definition to completion (like a Kubernetes Job): the operator starts `count` tasks with RunTask (idempotently), follows them until they stop, retries failed runs up to backoffLimit, and records exit codes and stop reasons in status. Success means every task stopped because its essential container exited, with exit code 0 from every essential container.",
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Tasks", type_ = "string", json_path = ".status.completions"),
    printcolumn(name = "Exit", type_ = "integer", json_path = ".status.exitCode"),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.reason",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    printcolumn(name = "Duration", type_ = "string", json_path = ".status.duration"),
    validation = Rule::new("self.spec == oldSelf.spec").message("the spec of an EcsTask is immutable (like a Job's): create a new EcsTask to run something else")
)]
#[serde(rename_all = "camelCase")]
pub struct EcsTaskSpec {
    /// Cluster, task definition, launch type or capacity providers, network.
    #[serde(flatten)]
    pub placement: Placement,

    /// Tasks started per attempt (1-10, default 1). The run succeeds when all succeed.
    #[serde(default = "default_count", skip_serializing_if = "is_default_count")]
    #[schemars(range(min = 1, max = 10))]
    pub count: i32,

    /// Changes to the task definition for this run: command, environment, sizes, roles.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overrides: Option<TaskOverrides>,

    /// Task group name (default: ECS's `family:<family>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 255))]
    pub group: Option<String>,

    /// startedBy on the tasks (up to 36 characters). Default: this resource's UID, which
    /// the operator also uses to find its tasks after a restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 36), regex(pattern = r"^[a-zA-Z0-9_-]+$"))]
    pub started_by: Option<String>,

    /// Copy tags to the tasks from the TASK_DEFINITION, or NONE.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub propagate_tags: Option<TaskPropagateTags>,

    /// Tags on the tasks, besides the operator's ownership tags.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 50))]
    #[x_kube(validation = crate::api::common::tag_key_rule())]
    #[x_kube(validation = crate::api::common::tag_size_rule())]
    #[x_kube(validation = crate::api::common::tag_count_rule(4))]
    pub tags: BTreeMap<String, String>,

    /// Allow `aws ecs execute-command` into the tasks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_execute_command: Option<bool>,

    /// Delete this EcsTask this many seconds after it finished (Succeeded or Failed).
    /// Omitted: kept until deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 315360000))]
    pub ttl_seconds_after_finished: Option<i64>,

    /// Stop the tasks and fail the run when it has been running this long (seconds,
    /// counted from the first attempt's start). No retries after that.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 315360000))]
    pub active_deadline_seconds: Option<i64>,

    /// Containers whose exit codes decide success (default: every essential container
    /// of the task definition). Name only the job's own containers when the task has
    /// sidecars: once an essential container exits, ECS stops the others, and they
    /// usually report 137 or 143, which would otherwise fail the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 10), extend("x-kubernetes-list-type" = "set"))]
    pub success_containers: Option<Vec<String>>,
    /// Failed attempts to retry (default 0: a failed run is not repeated, which is the
    /// safe choice for jobs such as migrations). Retries wait 10 s, 20 s, 40 s, ...
    #[serde(default, skip_serializing_if = "is_zero")]
    #[schemars(range(min = 0, max = 20))]
    pub backoff_limit: i32,
}

fn default_count() -> i32 {
    1
}
fn is_default_count(v: &i32) -> bool {
    *v == 1
}
fn is_zero(v: &i32) -> bool {
    *v == 0
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum TaskPropagateTags {
    #[serde(rename = "TASK_DEFINITION")]
    TaskDefinition,
    #[serde(rename = "NONE")]
    None,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct TaskOverrides {
    /// Per-container changes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 10))]
    pub container_overrides: Vec<ContainerOverride>,
    /// Task-level CPU units ("256", "1024", ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<String>,
    /// Task-level memory in MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
    /// IAM role the containers run as for this run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_role_arn: Option<String>,
    /// IAM role the ECS agent uses for this run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution_role_arn: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContainerOverride {
    /// Container name from the task definition.
    #[schemars(length(min = 1, max = 255))]
    pub name: String,
    /// Replaces the container's command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// Added to (or replacing same-name) environment variables.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub environment: Vec<EnvVar>,
    /// CPU units for the container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<i32>,
    /// Hard memory limit in MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<i32>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
pub struct EnvVar {
    pub name: String,
    #[serde(default)]
    pub value: String,
}

/// Where a run is.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum Phase {
    /// Not started yet, or waiting to retry / for a reference.
    Pending,
    /// Tasks of the current attempt are running.
    Running,
    /// Every task succeeded.
    Succeeded,
    /// The last attempt failed and no retries are left (or the deadline passed).
    Failed,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct EcsTaskStatus {
    /// The metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Complete or Failed once finished, plus Ready / Reconciling / Stalled (kstatus).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Pending, Running, Succeeded or Failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// Why the run is in its phase (e.g. EssentialContainerExited, DeadlineExceeded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// RunTask calls made so far (attempts).
    #[serde(default)]
    pub attempts: i32,
    /// The ECS cluster the tasks run in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// Task definition ARN (or family:revision) every attempt runs, fixed at the start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_definition: Option<String>,
    /// Containers whose exit codes decide success: spec.successContainers, else the
    /// essential containers of the task definition. Success needs exit 0 from each.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub essential_containers: Vec<String>,
    /// When the first attempt started (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,
    /// When the run finished (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<String>,
    /// When the next attempt may start (RFC 3339), while waiting to retry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_time: Option<String>,
    /// "<succeeded>/<count>" for the current attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completions: Option<String>,
    /// Exit code of the run: the first non-zero essential exit code, else 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Start to finish (or to now), e.g. "1m12s".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<String>,
    /// The tasks of every attempt, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tasks: Vec<TaskRecord>,
    /// Tasks ECS could not place in the last RunTask (e.g. RESOURCE:MEMORY).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failures: Vec<RunFailure>,
}

/// One ECS task of a run, as last seen.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct TaskRecord {
    pub arn: String,
    /// The attempt (1-based) that started it.
    pub attempt: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired_status: Option<String>,
    /// Why ECS stopped it: EssentialContainerExited, TaskFailedToStart, UserInitiated, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub containers: Vec<ContainerResult>,
    /// When RunTask created it (RFC 3339). ECS reads lag behind RunTask: until a
    /// grace period after this, a task DescribeTasks does not report is "not seen
    /// yet", never "gone".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_at: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContainerResult {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A task RunTask could not start.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunFailure {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arn: Option<String>,
    /// e.g. RESOURCE:MEMORY, AGENT, MISSING.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}
