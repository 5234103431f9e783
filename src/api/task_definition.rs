//! `EcsTaskDefinition`: one task-definition family; each spec change registers one revision.

// Repeated `printcolumn` / `x_kube(validation)` derive attributes are intended.
#![allow(clippy::duplicated_attributes)]

use std::collections::BTreeMap;

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::common::{Condition, DeletionPolicy};

/// An Amazon ECS task-definition family managed by ecs-operator.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "ecs.operator.dev",
    version = "v1alpha1",
    kind = "EcsTaskDefinition",
    namespaced,
    status = "EcsTaskDefinitionStatus",
    shortname = "ecstd",
    category = "ecs",
    doc = "An Amazon ECS task-definition family. Every change to the spec registers exactly one new revision (re-applying the same spec registers nothing); old revisions the operator made are pruned past revisionHistoryLimit.",
    printcolumn(name = "Family", type_ = "string", json_path = ".status.family"),
    printcolumn(
        name = "Revision",
        type_ = "integer",
        json_path = ".status.latestRevision"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = Rule::new("has(self.family) == has(oldSelf.family) && (!has(self.family) || self.family == oldSelf.family)").message("family is immutable: create a new EcsTaskDefinition for another family"))]
#[x_kube(validation = Rule::new("self.containerDefinitions.all(c, self.containerDefinitions.exists_one(d, d.name == c.name))").message("container names must be unique within a task definition"))]
#[x_kube(validation = Rule::new("!has(self.requiresCompatibilities) || !('FARGATE' in self.requiresCompatibilities) || (has(self.networkMode) && self.networkMode == 'awsvpc')").message("FARGATE requires networkMode: awsvpc"))]
#[x_kube(validation = Rule::new("!has(self.requiresCompatibilities) || !('FARGATE' in self.requiresCompatibilities) || (has(self.cpu) && has(self.memory))").message("FARGATE requires task-level cpu and memory"))]
#[x_kube(validation = Rule::new("!has(self.requiresCompatibilities) || !('FARGATE' in self.requiresCompatibilities) || !has(self.cpu) || !has(self.memory) || (self.cpu == '256' && self.memory in ['512', '1024', '2048']) || (self.cpu == '512' && int(self.memory) >= 1024 && int(self.memory) <= 4096 && int(self.memory) % 1024 == 0) || (self.cpu == '1024' && int(self.memory) >= 2048 && int(self.memory) <= 8192 && int(self.memory) % 1024 == 0) || (self.cpu == '2048' && int(self.memory) >= 4096 && int(self.memory) <= 16384 && int(self.memory) % 1024 == 0) || (self.cpu == '4096' && int(self.memory) >= 8192 && int(self.memory) <= 30720 && int(self.memory) % 1024 == 0) || (self.cpu == '8192' && int(self.memory) >= 16384 && int(self.memory) <= 61440 && int(self.memory) % 4096 == 0) || (self.cpu == '16384' && int(self.memory) >= 32768 && int(self.memory) <= 122880 && int(self.memory) % 8192 == 0)").message("cpu/memory is not a valid FARGATE combination: cpu 256 takes memory 512, 1024 or 2048; 512 takes 1024-4096; 1024 takes 2048-8192; 2048 takes 4096-16384; 4096 takes 8192-30720 (steps of 1024); 8192 takes 16384-61440 (steps of 4096); 16384 takes 32768-122880 (steps of 8192), all in MiB"))]
#[serde(rename_all = "camelCase")]
pub struct EcsTaskDefinitionSpec {
    /// Task-definition family. Defaults to metadata.name. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 255), regex(pattern = r"^[a-zA-Z0-9_-]+$"))]
    pub family: Option<String>,

    /// The containers of the task (1 to 10).
    #[schemars(length(min = 1, max = 10))]
    pub container_definitions: Vec<ContainerDefinition>,

    /// Task-level CPU units as a number string ("256", "1024", ...). Required for FARGATE.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9]+$"))]
    pub cpu: Option<String>,

    /// Task-level memory in MiB as a number string ("512", "2048", ...). Required for FARGATE.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9]+$"))]
    pub memory: Option<String>,

    /// Docker networking mode: awsvpc (required for FARGATE), bridge, host or none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_mode: Option<NetworkMode>,

    /// Launch types the task definition is validated against.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4))]
    pub requires_compatibilities: Option<Vec<Compatibility>>,

    /// IAM role the ECS agent uses to pull images and write logs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution_role_arn: Option<String>,

    /// IAM role the containers' code runs as.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_role_arn: Option<String>,

    /// Volumes containers can mount.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20))]
    pub volumes: Vec<Volume>,

    /// Placement constraints (EC2 only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 10))]
    pub placement_constraints: Vec<PlacementConstraint>,

    /// CPU architecture and operating system.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_platform: Option<RuntimePlatform>,

    /// Ephemeral storage for FARGATE tasks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ephemeral_storage: Option<EphemeralStorage>,

    /// Process namespace: host or task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid_mode: Option<PidMode>,

    /// IPC namespace: host, task or none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipc_mode: Option<IpcMode>,

    /// Tags on every revision, besides the operator's ownership tags.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 50))]
    #[x_kube(validation = crate::api::common::tag_key_rule())]
    #[x_kube(validation = crate::api::common::tag_size_rule())]
    #[x_kube(validation = crate::api::common::tag_count_rule(2))]
    pub tags: BTreeMap<String, String>,

    /// Adopt a family that already has revisions the operator did not register. Without
    /// this, such a family is never touched and the resource reports Stalled (NotOwned).
    #[serde(default)]
    pub adopt_existing: bool,

    /// How many revisions the operator keeps registered (default 10). Older revisions
    /// it registered are deregistered and deleted, unless a service still uses them.
    #[serde(
        default = "default_history",
        skip_serializing_if = "is_default_history"
    )]
    #[schemars(range(min = 1, max = 100))]
    pub revision_history_limit: i32,

    /// On deletion of this resource: Delete (default) deregisters and deletes the
    /// revisions the operator registered; Orphan leaves them.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
}

fn default_history() -> i32 {
    10
}
fn is_default_history(v: &i32) -> bool {
    *v == 10
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    Awsvpc,
    Bridge,
    Host,
    None,
}

#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, schemars::JsonSchema,
)]
pub enum Compatibility {
    #[serde(rename = "EC2")]
    Ec2,
    #[serde(rename = "FARGATE")]
    Fargate,
    #[serde(rename = "EXTERNAL")]
    External,
    #[serde(rename = "MANAGED_INSTANCES")]
    ManagedInstances,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum PidMode {
    Host,
    Task,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum IpcMode {
    Host,
    Task,
    None,
}

/// One container of the task.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContainerDefinition {
    /// Container name, unique within the task.
    #[schemars(length(min = 1, max = 255), regex(pattern = r"^[a-zA-Z0-9_-]+$"))]
    pub name: String,
    /// Image reference, e.g. `public.ecr.aws/nginx/nginx:1.27` or an ECR URI with digest.
    #[schemars(length(min = 1, max = 2048))]
    pub image: String,
    /// CPU units reserved for the container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub cpu: Option<i32>,
    /// Hard memory limit in MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 6))]
    pub memory: Option<i32>,
    /// Soft memory limit (reservation) in MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 6))]
    pub memory_reservation: Option<i32>,
    /// If this container stops, the task stops. Defaults to true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub essential: Option<bool>,
    /// Command (overrides the image's CMD).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// Entry point (overrides the image's ENTRYPOINT).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub entry_point: Vec<String>,
    /// Working directory for the command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_directory: Option<String>,
    /// Environment variables (order does not matter).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub environment: Vec<KeyValue>,
    /// S3 objects holding environment variables.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub environment_files: Vec<EnvironmentFile>,
    /// Environment variables from Secrets Manager or SSM Parameter Store.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<Secret>,
    /// Ports the container exposes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub port_mappings: Vec<PortMapping>,
    /// Container health check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheck>,
    /// Log driver and its options.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_configuration: Option<LogConfiguration>,
    /// Volume mounts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mount_points: Vec<MountPoint>,
    /// Mount all volumes of other containers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes_from: Vec<VolumeFrom>,
    /// Start-up ordering between containers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<ContainerDependency>,
    /// Resource limits (nofile, ...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ulimits: Vec<Ulimit>,
    /// Linux-specific settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub linux_parameters: Option<LinuxParameters>,
    /// User (name, uid, uid:gid, ...) the container runs as.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Mount the root filesystem read-only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readonly_root_filesystem: Option<bool>,
    /// Seconds to wait after SIGTERM before SIGKILL (max 120).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 120))]
    pub stop_timeout: Option<i32>,
    /// Seconds to wait for dependencies to reach their condition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub start_timeout: Option<i32>,
    /// Docker labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub docker_labels: BTreeMap<String, String>,
    /// FireLens log router configuration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firelens_configuration: Option<FirelensConfiguration>,
}

#[derive(
    Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, KubeSchema,
)]
pub struct KeyValue {
    /// Variable name.
    pub name: String,
    /// Variable value.
    #[serde(default)]
    pub value: String,
}

#[derive(
    Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, KubeSchema,
)]
pub struct EnvironmentFile {
    /// ARN of the S3 object.
    pub value: String,
    /// File type; only `s3`.
    #[serde(rename = "type", default = "s3")]
    pub type_: String,
}

fn s3() -> String {
    "s3".into()
}

#[derive(
    Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, KubeSchema,
)]
#[serde(rename_all = "camelCase")]
pub struct Secret {
    /// Environment variable name.
    pub name: String,
    /// ARN of the Secrets Manager secret or SSM parameter (optionally with a JSON key).
    pub value_from: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct PortMapping {
    /// Port the container listens on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 65535))]
    pub container_port: Option<i32>,
    /// Host port (bridge/host modes). 0 or omitted: dynamic (bridge) or equal to
    /// containerPort (awsvpc).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 65535))]
    pub host_port: Option<i32>,
    /// tcp (default) or udp.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<Protocol>,
    /// Name used by Service Connect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Application protocol for Service Connect: http, http2 or grpc.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_protocol: Option<AppProtocol>,
    /// A port range instead of a single port, e.g. "8000-8010".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_port_range: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AppProtocol {
    Http,
    Http2,
    Grpc,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct HealthCheck {
    /// e.g. ["CMD-SHELL", "curl -f http://localhost/ || exit 1"].
    #[schemars(length(min = 1))]
    pub command: Vec<String>,
    /// Seconds between checks (5-300, default 30).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 5, max = 300))]
    pub interval: Option<i32>,
    /// Seconds before a check fails (2-60, default 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 2, max = 60))]
    pub timeout: Option<i32>,
    /// Failures before unhealthy (1-10, default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10))]
    pub retries: Option<i32>,
    /// Grace period in seconds (0-300, default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 300))]
    pub start_period: Option<i32>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct LogConfiguration {
    /// awslogs, awsfirelens, fluentd, json-file, splunk, syslog, ...
    pub log_driver: String,
    /// Driver options.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub options: BTreeMap<String, String>,
    /// Driver options from secrets.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secret_options: Vec<Secret>,
}

#[derive(
    Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, KubeSchema,
)]
#[serde(rename_all = "camelCase")]
pub struct MountPoint {
    /// Name of a task volume.
    pub source_volume: String,
    /// Path inside the container.
    pub container_path: String,
    /// Mount read-only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_only: Option<bool>,
}

#[derive(
    Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, KubeSchema,
)]
#[serde(rename_all = "camelCase")]
pub struct VolumeFrom {
    /// Container whose volumes to mount.
    pub source_container: String,
    /// Mount read-only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_only: Option<bool>,
}

#[derive(
    Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, KubeSchema,
)]
#[serde(rename_all = "camelCase")]
pub struct ContainerDependency {
    /// The container depended on.
    pub container_name: String,
    /// START, COMPLETE, SUCCESS or HEALTHY.
    pub condition: DependencyCondition,
}

#[derive(
    Serialize,
    Deserialize,
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    schemars::JsonSchema,
)]
pub enum DependencyCondition {
    #[default]
    #[serde(rename = "START")]
    Start,
    #[serde(rename = "COMPLETE")]
    Complete,
    #[serde(rename = "SUCCESS")]
    Success,
    #[serde(rename = "HEALTHY")]
    Healthy,
}

#[derive(
    Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, KubeSchema,
)]
#[serde(rename_all = "camelCase")]
pub struct Ulimit {
    /// e.g. nofile, nproc, memlock.
    pub name: String,
    pub soft_limit: i32,
    pub hard_limit: i32,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct LinuxParameters {
    /// Run an init process (tini) as PID 1 to reap zombies and forward signals.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_process_enabled: Option<bool>,
    /// Linux capabilities to add or drop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<Capabilities>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
pub struct Capabilities {
    /// Capabilities to add (e.g. SYS_PTRACE).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub add: Vec<String>,
    /// Capabilities to drop (e.g. ALL).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub drop: Vec<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
pub struct FirelensConfiguration {
    /// fluentd or fluentbit.
    #[serde(rename = "type")]
    pub type_: String,
    /// Router options.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub options: BTreeMap<String, String>,
}

/// A task volume.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Volume {
    /// Name referenced by mountPoints.sourceVolume.
    pub name: String,
    /// A bind mount from the host (EC2) or task storage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<HostVolume>,
    /// An Amazon EFS file system.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub efs_volume_configuration: Option<EfsVolumeConfiguration>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct HostVolume {
    /// Host path; omitted: ECS-managed storage for the task's lifetime.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_path: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct EfsVolumeConfiguration {
    /// EFS file system id (fs-...).
    pub file_system_id: String,
    /// Directory to mount (default /).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_directory: Option<String>,
    /// ENABLED or DISABLED (default DISABLED).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transit_encryption: Option<String>,
    /// Port for encrypted traffic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transit_encryption_port: Option<i32>,
    /// Access point and IAM authorisation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization_config: Option<EfsAuthorizationConfig>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct EfsAuthorizationConfig {
    /// EFS access point id (fsap-...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_point_id: Option<String>,
    /// ENABLED to use the task role for EFS IAM authorisation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iam: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlacementConstraint {
    /// memberOf.
    #[serde(rename = "type")]
    pub type_: String,
    /// Cluster query language expression.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expression: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RuntimePlatform {
    /// X86_64 or ARM64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_architecture: Option<String>,
    /// LINUX, WINDOWS_SERVER_2022_CORE, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operating_system_family: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct EphemeralStorage {
    /// Size in GiB (21-200).
    #[schemars(range(min = 21, max = 200))]
    pub size_in_gi_b: i32,
}

/// One revision the operator registered.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RevisionRecord {
    pub revision: i32,
    pub arn: String,
    /// specHash of the spec it was registered from.
    pub hash: String,
    /// When it was registered (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registered_at: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct EcsTaskDefinitionStatus {
    /// The metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Ready, Reconciling and Stalled, as kstatus (Flux, Argo CD) expects.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The family name in ECS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub family: Option<String>,
    /// Revision number of the newest revision registered from this resource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latest_revision: Option<i32>,
    /// Its ARN (what services and tasks use).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latest_arn: Option<String>,
    /// Hash of the normalised spec the latest revision was registered from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec_hash: Option<String>,
    /// Revisions the operator registered and still retains, newest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub revisions: Vec<RevisionRecord>,
    /// Tag keys from spec.tags the operator has applied, so that a key removed from the
    /// spec is removed from the current revision while tags set by others stay.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub managed_tag_keys: Vec<String>,
}

impl EcsTaskDefinition {
    /// The ECS family: spec.family, else metadata.name.
    pub fn family_name(&self) -> String {
        self.spec
            .family
            .clone()
            .or_else(|| self.metadata.name.clone())
            .unwrap_or_default()
    }
}
