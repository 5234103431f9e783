//! Types shared by every kind: deletion policy, ownership tags, kstatus conditions.

use std::collections::BTreeMap;

pub use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::KubeSchema;

pub use super::reason::Reason;
use kube::core::{Message, Rule};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Tag on every ECS object the operator creates: `<namespace>/<name>` of the owning resource.
pub const OWNER_TAG: &str = "ecs.operator.dev/owner";
/// Tag on every ECS object the operator creates: UID of the owning resource.
pub const UID_TAG: &str = "ecs.operator.dev/uid";
/// Finalizer that keeps a resource until its ECS object is handled per `deletionPolicy`.
pub const FINALIZER: &str = "ecs.operator.dev/finalizer";

/// The references, network and capacity types several kinds share.
/// A resource of another kind in the same namespace.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct LocalRef {
    /// metadata.name of the referenced resource.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum LaunchType {
    #[serde(rename = "FARGATE")]
    Fargate,
    #[serde(rename = "EC2")]
    Ec2,
    #[serde(rename = "EXTERNAL")]
    External,
    #[serde(rename = "MANAGED_INSTANCES")]
    ManagedInstances,
}

impl LaunchType {
    pub fn as_str(&self) -> &'static str {
        match self {
            LaunchType::Fargate => "FARGATE",
            LaunchType::Ec2 => "EC2",
            LaunchType::External => "EXTERNAL",
            LaunchType::ManagedInstances => "MANAGED_INSTANCES",
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct NetworkConfiguration {
    /// Subnets and security groups of the tasks' elastic network interfaces.
    pub awsvpc_configuration: AwsVpcConfiguration,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct AwsVpcConfiguration {
    /// Subnet IDs (1-16), all in one VPC. Order does not matter.
    #[schemars(length(min = 1, max = 16))]
    pub subnets: Vec<String>,
    /// Security group IDs (up to 5). Omitted: the VPC's default security group.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 5))]
    pub security_groups: Vec<String>,
    /// Give tasks a public IP: ENABLED or DISABLED (default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assign_public_ip: Option<AssignPublicIp>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum AssignPublicIp {
    #[serde(rename = "ENABLED")]
    Enabled,
    #[serde(rename = "DISABLED")]
    Disabled,
}

impl AssignPublicIp {
    pub fn as_str(&self) -> &'static str {
        match self {
            AssignPublicIp::Enabled => "ENABLED",
            AssignPublicIp::Disabled => "DISABLED",
        }
    }
}

/// Where a kind's tasks run and what they run: the cluster, the task definition, the
/// launch type or capacity providers, the network and the platform version. One type
/// with its admission rules, flattened into EcsService and EcsTask (and so into an
/// EcsScheduledTask's template).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[x_kube(validation = Rule::new("has(self.clusterRef) != has(self.cluster)").message("set exactly one of clusterRef (an EcsCluster in this namespace) or cluster (name or ARN of an ECS cluster not managed here)"))]
#[x_kube(validation = Rule::new("has(self.taskDefinitionRef) != has(self.taskDefinition)").message("set exactly one of taskDefinitionRef (an EcsTaskDefinition in this namespace) or taskDefinition (an ARN or family:revision)"))]
#[x_kube(validation = Rule::new("!has(self.launchType) || !has(self.capacityProviderStrategy)").message("set launchType or capacityProviderStrategy, not both"))]
#[serde(rename_all = "camelCase")]
pub struct Placement {
    /// An EcsCluster in this namespace to run in; the resource waits
    /// (WaitingForReference) until it has an ECS cluster. Set this or `cluster`.
    /// Immutable on an EcsService (ECS cannot move a service).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_ref: Option<LocalRef>,

    /// Name or ARN of an ECS cluster not managed by an EcsCluster. Set this or
    /// `clusterRef`. Immutable on an EcsService.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 2048))]
    pub cluster: Option<String>,

    /// An EcsTaskDefinition in this namespace. An EcsService runs its latest revision and
    /// rolls to each new one as it is registered; an EcsTask uses the latest revision
    /// when the run starts for every attempt (recorded in status.taskDefinition). Set
    /// this or `taskDefinition`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_definition_ref: Option<LocalRef>,

    /// A task definition not managed here: its full ARN or `family:revision`.
    /// Set this or `taskDefinitionRef`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(
        pattern = r"^(arn:[a-z0-9-]+:ecs:[a-z0-9-]+:[0-9]{12}:task-definition/)?[a-zA-Z0-9_-]{1,255}:[0-9]+$"
    ))]
    pub task_definition: Option<String>,

    /// Launch type: FARGATE, EC2, EXTERNAL or MANAGED_INSTANCES. Set this or
    /// capacityProviderStrategy (neither: the cluster's default strategy). An EcsService
    /// cannot change it after creation, except by replacing it with a
    /// capacityProviderStrategy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub launch_type: Option<LaunchType>,

    /// Capacity providers to spread tasks over, e.g. FARGATE_SPOT with a FARGATE base.
    /// On an EcsService, changing it (or moving to it from a launchType) starts a new
    /// deployment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 20))]
    pub capacity_provider_strategy: Option<Vec<CapacityProviderStrategyItem>>,

    /// Fargate platform version (e.g. LATEST, 1.4.0). Omitted: ECS's default (on an
    /// EcsService: left as ECS has it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 32))]
    pub platform_version: Option<String>,

    /// Networking for tasks of awsvpc task definitions (required for FARGATE).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_configuration: Option<NetworkConfiguration>,
}

/// One capacity provider in a strategy.
#[derive(
    Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, KubeSchema,
)]
#[serde(rename_all = "camelCase")]
pub struct CapacityProviderStrategyItem {
    /// Name of the capacity provider.
    #[schemars(length(min = 1, max = 255))]
    pub capacity_provider: String,
    /// Relative share of tasks placed on this provider (0-1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1000))]
    pub weight: Option<i32>,
    /// Minimum number of tasks on this provider (0-100000). Only one provider may set it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100000))]
    pub base: Option<i32>,
}

/// What happens to the ECS object when this resource is deleted.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum DeletionPolicy {
    /// Delete the ECS object (only one this operator created or adopted).
    #[default]
    Delete,
    /// Leave the ECS object in place and remove the operator's ownership tags.
    Orphan,
}

/// ECS's tag limits (Tag data type, ECS API reference): 50 tags per resource, keys up
/// to 128 and values up to 256 characters; the `aws:` prefix is reserved in any case.
pub const MAX_TAGS: usize = 50;
pub const MAX_TAG_VALUE: usize = 256;

/// The ownership tags for a resource. The owner value is for people (`kubectl`-style
/// `<namespace>/<name>`); identity is the uid tag, so a name too long for a tag value
/// is cut, with a hash of the whole name to keep it distinct.
pub fn ownership_tags(namespace: &str, name: &str, uid: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (OWNER_TAG.to_string(), owner_value(namespace, name)),
        (UID_TAG.to_string(), uid.to_string()),
    ])
}

fn owner_value(namespace: &str, name: &str) -> String {
    use sha2::{Digest, Sha256};
    let full = format!("{namespace}/{name}");
    if full.len() <= MAX_TAG_VALUE {
        return full;
    }
    let hash = &hex::encode(Sha256::digest(full.as_bytes()))[..8];
    // Kubernetes names are ASCII, so any byte index is a character boundary.
    format!("{}-{hash}", &full[..MAX_TAG_VALUE - 9])
}

/// CEL rules for a `tags` map, shared by every kind. `ours` is how many tags the
/// operator adds itself, so users learn the real limit at admission, with the count.
pub fn tag_key_rule() -> Rule {
    Rule::new("self.all(k, !k.lowerAscii().startsWith('aws:') && !k.startsWith('ecs.operator.dev/'))")
        .message("tag keys may not start with 'aws:' (reserved by AWS, in any case) or 'ecs.operator.dev/' (reserved for the operator's own tags)")
}

pub fn tag_size_rule() -> Rule {
    Rule::new("self.all(k, k.size() >= 1 && k.size() <= 128 && self[k].size() <= 256)").message(
        "ECS allows tag keys of 1 to 128 characters and tag values of up to 256 characters",
    )
}

pub fn tag_count_rule(ours: usize) -> Rule {
    let max = MAX_TAGS - ours;
    // A messageExpression with the actual count is priced far over the CEL budget
    // for an unbounded map; the limit itself is what a person needs.
    Rule::new(format!("self.size() <= {max}")).message(Message::Message(format!(
        "too many tags: ECS allows {MAX_TAGS} tags per resource and the operator adds {ours} of its own, so spec.tags may have at most {max}"
    )))
}

/// The owner tag value of a resource (see [`ownership_tags`]).
pub fn owner_tag_value(namespace: &str, name: &str) -> String {
    owner_value(namespace, name)
}

/// The part of every kind's status the reconcile driver owns: the generation the
/// status describes and the conditions. Each kind's status type implements it
/// through [`kind_status!`]; everything else in the status is the kind's.
pub trait KindStatus:
    Serialize
    + serde::de::DeserializeOwned
    + Default
    + Clone
    + PartialEq
    + std::fmt::Debug
    + Send
    + Sync
    + 'static
{
    fn observed_generation(&self) -> Option<i64>;
    fn conditions(&self) -> &[Condition];
    /// Set by the driver only.
    fn set_driver_fields(&mut self, generation: Option<i64>, conditions: Vec<Condition>);
}

/// Implements [`KindStatus`] for status structs with `observed_generation` and
/// `conditions` fields.
#[macro_export]
macro_rules! kind_status {
    ($($status:ty),+ $(,)?) => {$(
        impl $crate::api::common::KindStatus for $status {
            fn observed_generation(&self) -> Option<i64> {
                self.observed_generation
            }
            fn conditions(&self) -> &[$crate::api::common::Condition] {
                &self.conditions
            }
            fn set_driver_fields(
                &mut self,
                generation: Option<i64>,
                conditions: Vec<$crate::api::common::Condition>,
            ) {
                self.observed_generation = generation;
                self.conditions = conditions;
            }
        }
    )+};
}

pub const READY: &str = "Ready";
pub const RECONCILING: &str = "Reconciling";
pub const STALLED: &str = "Stalled";

/// What one reconcile concluded, mapped onto kstatus conditions
/// (`Ready`, `Reconciling`, `Stalled`) so Flux, Argo CD and `kubectl wait` read health.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// The ECS object matches the spec.
    Ready { reason: Reason, message: String },
    /// Work is under way (or waiting for something that will come): Ready=False, Reconciling=True.
    Progressing { reason: Reason, message: String },
    /// Cannot make progress without a change from a person: Ready=False, Stalled=True.
    Stalled { reason: Reason, message: String },
}

impl Health {
    pub fn ready(reason: Reason, message: impl Into<String>) -> Self {
        Health::Ready {
            reason,
            message: message.into(),
        }
    }
    pub fn progressing(reason: Reason, message: impl Into<String>) -> Self {
        Health::Progressing {
            reason,
            message: message.into(),
        }
    }
    pub fn stalled(reason: Reason, message: impl Into<String>) -> Self {
        Health::Stalled {
            reason,
            message: message.into(),
        }
    }
    pub fn reason(&self) -> &Reason {
        match self {
            Health::Ready { reason, .. }
            | Health::Progressing { reason, .. }
            | Health::Stalled { reason, .. } => reason,
        }
    }
    pub fn message(&self) -> &str {
        match self {
            Health::Ready { message, .. }
            | Health::Progressing { message, .. }
            | Health::Stalled { message, .. } => message,
        }
    }
    pub fn is_ready(&self) -> bool {
        matches!(self, Health::Ready { .. })
    }
}

/// One condition, keeping lastTransitionTime from `previous` while the status is unchanged.
pub fn condition(
    type_: &str,
    status: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    previous: &[Condition],
    now: &Time,
) -> Condition {
    let status = if status { "True" } else { "False" };
    // lastTransitionTime moves only when the status flips, as metav1.Condition requires.
    let last_transition_time = previous
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| now.clone());
    Condition {
        type_: type_.to_string(),
        status: status.to_string(),
        reason: reason.to_string(),
        message: message.to_string(),
        last_transition_time,
        observed_generation: generation,
    }
}

/// The full condition set for `health`, keeping transition times from `previous`.
pub fn conditions(
    health: &Health,
    generation: Option<i64>,
    previous: &[Condition],
    now: &Time,
) -> Vec<Condition> {
    let c = |t, s, r: &Reason, m: &str| condition(t, s, r.as_str(), m, generation, previous, now);
    match health {
        Health::Ready { reason, message } => vec![
            c(READY, true, reason, message),
            c(RECONCILING, false, reason, ""),
            c(STALLED, false, reason, ""),
        ],
        Health::Progressing { reason, message } => vec![
            c(READY, false, reason, message),
            c(RECONCILING, true, reason, message),
            c(STALLED, false, reason, ""),
        ],
        Health::Stalled { reason, message } => vec![
            c(READY, false, reason, message),
            c(RECONCILING, false, reason, ""),
            c(STALLED, true, reason, message),
        ],
    }
}

/// True for the three condition types the driver derives from [`Health`].
pub fn is_kstatus(type_: &str) -> bool {
    [READY, RECONCILING, STALLED].contains(&type_)
}

/// True if the condition of this type is present with status "True".
pub fn is_condition_true(conditions: &[Condition], type_: &str) -> bool {
    conditions
        .iter()
        .any(|c| c.type_ == type_ && c.status == "True")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(secs).unwrap())
    }

    fn get<'a>(cs: &'a [Condition], t: &str) -> &'a Condition {
        cs.iter().find(|c| c.type_ == t).unwrap()
    }

    #[test]
    fn ready_sets_all_three_kstatus_conditions() {
        let cs = conditions(&Health::ready(Reason::Active, "ok"), Some(3), &[], &at(10));
        assert_eq!(get(&cs, READY).status, "True");
        assert_eq!(get(&cs, RECONCILING).status, "False");
        assert_eq!(get(&cs, STALLED).status, "False");
        assert!(cs.iter().all(|c| c.observed_generation == Some(3)));
        assert!(cs.iter().all(|c| !c.reason.is_empty()));
    }

    #[test]
    fn stalled_carries_reason_and_message() {
        let cs = conditions(
            &Health::stalled(Reason::NotOwned, "cluster x belongs to y"),
            Some(1),
            &[],
            &at(10),
        );
        assert_eq!(get(&cs, READY).status, "False");
        assert_eq!(get(&cs, STALLED).status, "True");
        assert_eq!(get(&cs, STALLED).reason, "NotOwned");
        assert_eq!(get(&cs, STALLED).message, "cluster x belongs to y");
        assert_eq!(get(&cs, RECONCILING).status, "False");
    }

    #[test]
    fn transition_time_is_kept_while_status_is_unchanged() {
        let first = conditions(
            &Health::progressing(Reason::Creating, "a"),
            Some(1),
            &[],
            &at(10),
        );
        let second = conditions(
            &Health::progressing(Reason::Creating, "b"),
            Some(2),
            &first,
            &at(20),
        );
        assert_eq!(get(&second, READY).last_transition_time, at(10));
        assert_eq!(get(&second, RECONCILING).last_transition_time, at(10));
        let third = conditions(
            &Health::ready(Reason::Active, ""),
            Some(2),
            &second,
            &at(30),
        );
        assert_eq!(get(&third, READY).last_transition_time, at(30));
        assert_eq!(get(&third, RECONCILING).last_transition_time, at(30));
        // Stalled stayed False throughout.
        assert_eq!(get(&third, STALLED).last_transition_time, at(10));
    }

    #[test]
    fn owner_tags_fit_ecs_limits_for_the_longest_names() {
        let ns = "n".repeat(63);
        let name = "x".repeat(253);
        let tags = ownership_tags(&ns, &name, "uid-1");
        let owner = &tags[OWNER_TAG];
        assert_eq!(owner.len(), MAX_TAG_VALUE);
        assert!(owner.starts_with(&format!("{ns}/xxx")));
        // Distinct names stay distinct after the cut.
        let other = ownership_tags(&ns, &format!("{}y", "x".repeat(252)), "uid-2");
        assert_ne!(owner, &other[OWNER_TAG]);
        assert_eq!(ownership_tags("ns", "a", "u")[OWNER_TAG], "ns/a");
    }
}
