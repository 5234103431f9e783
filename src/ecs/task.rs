//! ECS task calls for EcsTask: run (idempotent), find after a restart, describe
//! (100 per call), stop.

use std::collections::BTreeMap;

use aws_sdk_ecs::types::{
    ContainerOverride as SdkContainerOverride, KeyValuePair, LaunchType as SdkLaunchType,
    PropagateTags as SdkPropagateTags, Task, TaskField, TaskOverride as SdkTaskOverride,
};

use super::service::network_to_sdk;
use super::{Category, EcsApi, rfc3339};
use super::{strategy_to_sdk, tags_from_sdk, tags_to_sdk};
use crate::api::task::{
    ContainerResult, EcsTaskSpec, RunFailure, TaskOverrides, TaskPropagateTags, TaskRecord,
};
use crate::error::Error;

/// Tag with the attempt (1-based) that started a task.
pub const ATTEMPT_TAG: &str = "ecs.operator.dev/attempt";
/// Tag with the UID of the EcsTask that started a task. Not the ownership uid tag:
/// `propagateTags: TASK_DEFINITION` copies the task definition's ownership tags onto
/// the task, and a task definition never carries this key.
pub const RUN_TAG: &str = "ecs.operator.dev/run";

pub fn record_from_sdk(t: &Task) -> (TaskRecord, BTreeMap<String, String>) {
    let tags = tags_from_sdk(t.tags());
    let attempt = tags
        .get(ATTEMPT_TAG)
        .and_then(|a| a.parse().ok())
        .unwrap_or(0);
    let record = TaskRecord {
        arn: t.task_arn().unwrap_or_default().to_string(),
        attempt,
        last_status: t.last_status().map(str::to_string),
        desired_status: t.desired_status().map(str::to_string),
        stop_code: t
            .stop_code()
            .map(|c| c.as_str().to_string())
            .filter(|c| !c.is_empty()),
        stopped_reason: t
            .stopped_reason()
            .filter(|r| !r.is_empty())
            .map(str::to_string),
        containers: t
            .containers()
            .iter()
            .map(|c| ContainerResult {
                name: c.name().unwrap_or_default().to_string(),
                last_status: c.last_status().map(str::to_string),
                exit_code: c.exit_code(),
                reason: c.reason().filter(|r| !r.is_empty()).map(str::to_string),
            })
            .collect(),
        created_at: rfc3339(t.created_at()),
        started_at: rfc3339(t.started_at()),
        stopped_at: rfc3339(t.stopped_at()),
    };
    (record, tags)
}

fn overrides_to_sdk(o: &TaskOverrides) -> SdkTaskOverride {
    SdkTaskOverride::builder()
        .set_container_overrides(Some(
            o.container_overrides
                .iter()
                .map(|c| {
                    SdkContainerOverride::builder()
                        .name(&c.name)
                        .set_command(c.command.clone())
                        .set_environment(Some(
                            c.environment
                                .iter()
                                .map(|e| {
                                    KeyValuePair::builder()
                                        .name(&e.name)
                                        .value(&e.value)
                                        .build()
                                })
                                .collect(),
                        ))
                        .set_cpu(c.cpu)
                        .set_memory(c.memory)
                        .build()
                })
                .collect(),
        ))
        .set_cpu(o.cpu.clone())
        .set_memory(o.memory.clone())
        .set_task_role_arn(o.task_role_arn.clone())
        .set_execution_role_arn(o.execution_role_arn.clone())
        .build()
}

/// RunTask. `client_token` (derived from the resource and attempt) makes a retried
/// call return the tasks of the first one instead of starting more.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    ecs: &EcsApi,
    cluster: &str,
    task_definition: &str,
    spec: &EcsTaskSpec,
    started_by: &str,
    tags: &BTreeMap<String, String>,
    attempt: i32,
    client_token: &str,
) -> Result<(Vec<TaskRecord>, Vec<RunFailure>), Error> {
    let mut req = ecs
        .client
        .run_task()
        .cluster(cluster)
        .task_definition(task_definition)
        .count(spec.count)
        .started_by(started_by)
        .client_token(client_token)
        .set_group(spec.group.clone())
        .set_launch_type(
            spec.placement
                .launch_type
                .map(|l| SdkLaunchType::from(l.as_str())),
        )
        .set_platform_version(spec.placement.platform_version.clone())
        .set_enable_execute_command(spec.enable_execute_command)
        .set_propagate_tags(spec.propagate_tags.map(|p| {
            SdkPropagateTags::from(match p {
                TaskPropagateTags::TaskDefinition => "TASK_DEFINITION",
                TaskPropagateTags::None => "NONE",
            })
        }))
        .set_tags(Some(tags_to_sdk(tags)));
    if let Some(s) = &spec.placement.capacity_provider_strategy {
        req = req.set_capacity_provider_strategy(Some(strategy_to_sdk(s)?));
    }
    if let Some(n) = &spec.placement.network_configuration {
        req = req.network_configuration(network_to_sdk(&n.awsvpc_configuration)?);
    }
    if let Some(o) = &spec.overrides {
        req = req.overrides(overrides_to_sdk(o));
    }
    let resp = ecs.call("RunTask", Category::RunTask, req.send()).await?;
    let tasks = resp
        .tasks()
        .iter()
        .map(|t| {
            let (mut r, _) = record_from_sdk(t);
            r.attempt = attempt;
            r
        })
        .collect();
    let failures = resp
        .failures()
        .iter()
        .map(|f| RunFailure {
            arn: f.arn().map(str::to_string),
            reason: f.reason().map(str::to_string),
            detail: f.detail().map(str::to_string),
        })
        .collect();
    Ok((tasks, failures))
}

/// Describes tasks, 100 per call (the ECS maximum). Tasks ECS no longer knows
/// (stopped more than about an hour ago) are absent.
pub async fn describe(
    ecs: &EcsApi,
    cluster: &str,
    arns: &[String],
) -> Result<Vec<(TaskRecord, BTreeMap<String, String>)>, Error> {
    let mut out = Vec::new();
    for chunk in arns.chunks(100) {
        let resp = ecs
            .call(
                "DescribeTasks",
                Category::Read,
                ecs.client
                    .describe_tasks()
                    .cluster(cluster)
                    .set_tasks(Some(chunk.to_vec()))
                    .include(TaskField::Tags)
                    .send(),
            )
            .await?;
        out.extend(resp.tasks().iter().map(record_from_sdk));
    }
    Ok(out)
}

/// ARNs of the RUNNING tasks started with this `startedBy`. `startedBy` must be the
/// only filter: real ECS refuses it with any other ("cannot specify startedBy with
/// other arguments", ListTasks API reference; aws-sdk-go-v2 issue 1893), and with no
/// desiredStatus it lists RUNNING tasks only. Stopped tasks of a run are found by the
/// RunTask clientToken instead (a repeated RunTask returns the first call's tasks).
pub async fn find_running(
    ecs: &EcsApi,
    cluster: &str,
    started_by: &str,
) -> Result<Vec<String>, Error> {
    let mut arns = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let resp = ecs
            .call(
                "ListTasks",
                Category::Read,
                ecs.client
                    .list_tasks()
                    .cluster(cluster)
                    .started_by(started_by)
                    .set_next_token(token.take())
                    .send(),
            )
            .await?;
        arns.extend(resp.task_arns().iter().cloned());
        match resp.next_token() {
            Some(t) if !t.is_empty() => token = Some(t.to_string()),
            _ => break,
        }
    }
    arns.sort();
    arns.dedup();
    Ok(arns)
}

pub async fn stop(ecs: &EcsApi, cluster: &str, arn: &str, reason: &str) -> Result<(), Error> {
    let res = ecs
        .call(
            "StopTask",
            Category::RunTask,
            ecs.client
                .stop_task()
                .cluster(cluster)
                .task(arn)
                .reason(reason)
                .send(),
        )
        .await;
    match res {
        Ok(_) => Ok(()),
        // Already gone: nothing left to stop (only that; other invalid input is an error).
        Err(e) if super::is_not_found(&e) => Ok(()),
        Err(e) => Err(e),
    }
}

/// A task definition's ARN and container names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskDefinitionContainers {
    pub arn: String,
    /// Containers with `essential` true (the default).
    pub essential: Vec<String>,
    pub all: Vec<String>,
}

/// The task definition's ARN and its containers.
pub async fn containers(
    ecs: &EcsApi,
    task_definition: &str,
) -> Result<TaskDefinitionContainers, Error> {
    let resp = ecs
        .call(
            "DescribeTaskDefinition",
            Category::Read,
            ecs.client
                .describe_task_definition()
                .task_definition(task_definition)
                .send(),
        )
        .await?;
    let td = resp.task_definition();
    let defs = td.map(|t| t.container_definitions()).unwrap_or_default();
    let names = |essential_only: bool| {
        defs.iter()
            .filter(|c| !essential_only || c.essential() != Some(false))
            .filter_map(|c| c.name().map(str::to_string))
            .collect()
    };
    Ok(TaskDefinitionContainers {
        arn: td
            .and_then(|t| t.task_definition_arn())
            .unwrap_or(task_definition)
            .to_string(),
        essential: names(true),
        all: names(false),
    })
}
