//! The workload every scenario puts through its faults, and the audit of what ECS
//! holds afterwards: exactly the objects the resources describe, nothing twice,
//! nothing left of what was deleted.

use std::collections::BTreeSet;

use aws_sdk_ecs::types::{DesiredStatus, TaskDefinitionStatus};
use ecs_operator::api::service::EcsService;
use ecs_operator::api::task::{EcsTask, Phase};
use ecs_operator::api::task_definition::EcsTaskDefinition;
use kube::api::{Api, DeleteParams};

use crate::support::{TestContext, eventually};

/// One cluster, one task definition, `services` EcsServices (desiredCount 1) and
/// one EcsTask, all in the test's namespace.
pub struct Workload {
    pub cluster: String,
    pub task_definition: String,
    pub services: Vec<String>,
    pub task: String,
    /// How long the EcsTask's container runs before it exits 0.
    task_seconds: u32,
}

impl Workload {
    pub fn new(ctx: &TestContext, services: usize, task_seconds: u32) -> Workload {
        Workload {
            cluster: ctx.name("c"),
            task_definition: ctx.name("app"),
            services: (0..services).map(|i| ctx.name(&format!("s{i}"))).collect(),
            task: ctx.name("job"),
            task_seconds,
        }
    }

    /// The phase the EcsTask settles in: Succeeded, or Running for a long task.
    fn settled(&self) -> Phase {
        if self.task_seconds <= 10 {
            Phase::Succeeded
        } else {
            Phase::Running
        }
    }

    /// The cluster and task definition (image `image`).
    pub fn base(&self, image: &str) -> String {
        let (cl, td) = (&self.cluster, &self.task_definition);
        format!(
            "apiVersion: ecs.operator.dev/v1alpha1
kind: EcsCluster
metadata: {{name: {cl}}}
spec: {{}}
---
apiVersion: ecs.operator.dev/v1alpha1
kind: EcsTaskDefinition
metadata: {{name: {td}}}
spec:
  containerDefinitions:
    - name: app
      image: {image}
      memory: 64
      environment:
        - {{name: ECS_EMULATOR_RUN_SECONDS, value: '3600'}}
"
        )
    }

    /// The EcsServices named in `names`.
    pub fn services_yaml<'a>(&self, names: impl IntoIterator<Item = &'a String>) -> String {
        let (cl, td) = (&self.cluster, &self.task_definition);
        names
            .into_iter()
            .map(|name| {
                format!(
                    "---
apiVersion: ecs.operator.dev/v1alpha1
kind: EcsService
metadata: {{name: {name}}}
spec:
  clusterRef: {{name: {cl}}}
  taskDefinitionRef: {{name: {td}}}
  desiredCount: 1
  launchType: EC2
"
                )
            })
            .collect()
    }

    /// The EcsTask: one run of the task definition that exits 0 after `task_seconds`.
    pub fn task_yaml(&self) -> String {
        let (cl, td, run) = (&self.cluster, &self.task_definition, &self.task);
        let secs = self.task_seconds;
        format!(
            "---
apiVersion: ecs.operator.dev/v1alpha1
kind: EcsTask
metadata: {{name: {run}}}
spec:
  clusterRef: {{name: {cl}}}
  taskDefinitionRef: {{name: {td}}}
  overrides:
    containerOverrides:
      - name: app
        environment:
          - {{name: ECS_EMULATOR_RUN_SECONDS, value: '{secs}'}}
"
        )
    }

    /// Everything, with the task definition at `image`.
    pub fn all(&self, image: &str) -> String {
        self.base(image) + &self.services_yaml(&self.services) + &self.task_yaml()
    }

    /// Deletes the EcsServices `names` (the operator deletes their ECS services).
    pub async fn delete_services(&self, ctx: &TestContext, names: &[String]) {
        let api = Api::<EcsService>::namespaced(ctx.kube.clone(), &ctx.namespace);
        for name in names {
            api.delete(name, &DeleteParams::default()).await.unwrap();
        }
    }

    /// Waits until `kept` are Ready on the task definition's current revision, the
    /// deleted services are gone from Kubernetes, and the EcsTask has settled.
    pub async fn converged(&self, ctx: &TestContext, kept: &[String], secs: u64) {
        let tds = Api::<EcsTaskDefinition>::namespaced(ctx.kube.clone(), &ctx.namespace);
        let services = Api::<EcsService>::namespaced(ctx.kube.clone(), &ctx.namespace);
        let tasks = Api::<EcsTask>::namespaced(ctx.kube.clone(), &ctx.namespace);
        let wanted: BTreeSet<&String> = kept.iter().collect();
        let what = format!(
            "{} services Ready on the latest revision, the task {:?}",
            kept.len(),
            self.settled()
        );
        eventually(secs, &what, || async {
            // The task definition registered its current spec (not an older one).
            let td = tds.get(&self.task_definition).await.ok()?;
            let td_status = td.status?;
            let td_ready = td_status.observed_generation == td.metadata.generation
                && td_status
                    .conditions
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True");
            if !td_ready {
                return None;
            }
            let latest = td_status.latest_arn?;
            let all = services.list(&Default::default()).await.ok()?.items;
            let names: BTreeSet<&String> = all
                .iter()
                .filter_map(|s| s.metadata.name.as_ref())
                .collect();
            if names != wanted {
                return None;
            }
            let on_latest = |s: &EcsService| {
                s.status.as_ref().is_some_and(|st| {
                    st.observed_generation == s.metadata.generation
                        && st.task_definition.as_deref() == Some(latest.as_str())
                        && st
                            .conditions
                            .iter()
                            .any(|c| c.type_ == "Ready" && c.status == "True")
                })
            };
            if !all.iter().all(on_latest) {
                return None;
            }
            let task = tasks.get(&self.task).await.ok()?;
            (task.status?.phase == Some(self.settled())).then_some(())
        })
        .await;
    }

    /// What ECS holds (read behind the strict layer), against what the resources
    /// describe: `kept` services ACTIVE once each on the latest revision and nothing
    /// else ACTIVE in the cluster; exactly `revisions` revisions of the family ever
    /// registered (a lost RegisterTaskDefinition answer must not leave one more); one
    /// run of the EcsTask. Returns a one-line summary for the test's output.
    pub async fn audit(&self, ctx: &TestContext, kept: &[String], revisions: usize) -> String {
        let ecs = &ctx.ecs_direct;
        let cluster = &self.cluster;
        let described = ecs
            .describe_clusters()
            .clusters(cluster)
            .send()
            .await
            .unwrap();
        let active: Vec<_> = described
            .clusters()
            .iter()
            .filter(|c| c.status() == Some("ACTIVE"))
            .collect();
        assert_eq!(active.len(), 1, "one ACTIVE cluster {cluster}");

        let arns = service_arns(ctx, cluster).await;
        let mut running = BTreeSet::new();
        for chunk in arns.chunks(10) {
            let out = ecs
                .describe_services()
                .cluster(cluster)
                .set_services(Some(chunk.to_vec()))
                .send()
                .await
                .unwrap();
            for s in out
                .services()
                .iter()
                .filter(|s| s.status() == Some("ACTIVE"))
            {
                let name = s.service_name().unwrap_or_default().to_string();
                assert!(running.insert(name.clone()), "{name} is ACTIVE twice");
            }
        }
        let wanted: BTreeSet<String> = kept.iter().cloned().collect();
        assert_eq!(running, wanted, "ACTIVE services in {cluster}");

        let mut family = Vec::new();
        for status in [TaskDefinitionStatus::Active, TaskDefinitionStatus::Inactive] {
            let out: Vec<String> = ecs
                .list_task_definitions()
                .family_prefix(&self.task_definition)
                .status(status)
                .into_paginator()
                .items()
                .send()
                .try_collect()
                .await
                .unwrap();
            family.extend(out);
        }
        assert_eq!(
            family.len(),
            revisions,
            "revisions of {} ever registered: {family:?}",
            self.task_definition
        );

        let task = Api::<EcsTask>::namespaced(ctx.kube.clone(), &ctx.namespace)
            .get(&self.task)
            .await
            .unwrap();
        let uid = task.metadata.uid.clone().unwrap_or_default();
        let mut runs = Vec::new();
        for d in [DesiredStatus::Running, DesiredStatus::Stopped] {
            let out = ecs
                .list_tasks()
                .cluster(cluster)
                .started_by(&uid)
                .desired_status(d)
                .send()
                .await
                .unwrap();
            runs.extend(out.task_arns().iter().cloned());
        }
        assert_eq!(runs.len(), 1, "runs of the EcsTask {}: {runs:?}", self.task);
        format!(
            "audit: 1 cluster, {} services ACTIVE once each, {} revisions, 1 task run",
            running.len(),
            family.len()
        )
    }
}

impl Workload {
    /// What ECS still holds of the workload after its resources were deleted: an
    /// ACTIVE cluster, ACTIVE services or running tasks in it, ACTIVE revisions.
    pub async fn leftovers(&self, ctx: &TestContext) -> Vec<String> {
        let ecs = &ctx.ecs_direct;
        let mut left = Vec::new();
        let described = ecs
            .describe_clusters()
            .clusters(&self.cluster)
            .send()
            .await
            .unwrap();
        if described
            .clusters()
            .iter()
            .any(|c| c.status() == Some("ACTIVE"))
        {
            left.push(format!("cluster {}", self.cluster));
            let services = ecs
                .list_services()
                .cluster(&self.cluster)
                .send()
                .await
                .unwrap();
            for chunk in services.service_arns().chunks(10) {
                let out = ecs
                    .describe_services()
                    .cluster(&self.cluster)
                    .set_services(Some(chunk.to_vec()))
                    .send()
                    .await
                    .unwrap();
                for s in out
                    .services()
                    .iter()
                    .filter(|s| s.status() == Some("ACTIVE"))
                {
                    left.push(format!("service {}", s.service_name().unwrap_or_default()));
                }
            }
            let tasks = ecs
                .list_tasks()
                .cluster(&self.cluster)
                .desired_status(DesiredStatus::Running)
                .send()
                .await
                .unwrap();
            left.extend(tasks.task_arns().iter().map(|t| format!("task {t}")));
        }
        let revisions = ecs
            .list_task_definitions()
            .family_prefix(&self.task_definition)
            .status(TaskDefinitionStatus::Active)
            .send()
            .await
            .unwrap();
        left.extend(
            revisions
                .task_definition_arns()
                .iter()
                .map(|r| format!("revision {r}")),
        );
        left
    }
}

/// Every service ECS lists in `cluster` (ACTIVE and DRAINING), behind the strict layer.
pub async fn service_arns(ctx: &TestContext, cluster: &str) -> Vec<String> {
    ctx.ecs_direct
        .list_services()
        .cluster(cluster)
        .into_paginator()
        .items()
        .send()
        .try_collect()
        .await
        .unwrap()
}

/// Total ECS requests the operator made (every operation and outcome).
pub fn ecs_calls(metrics: &str) -> u64 {
    crate::support::sum_metric(metrics, "ecs_operator_aws_requests_total", |_| true)
}
