//! The reasons of conditions and Events: one list, so every layer names a state the
//! same way and nothing matches on strings. `kubectl describe` and the README's
//! troubleshooting table show them as written here.

macro_rules! reasons {
    ($($(#[$doc:meta])* $name:ident),+ $(,)?) => {
        /// Why a resource is in its state (PascalCase, stable: alerts and scripts match on it).
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        pub enum Reason {
            $($(#[$doc])* $name,)+
            /// A reason ECS gave, passed through as ECS spells it (e.g. a task's stop code
            /// such as `TaskFailedToStart`).
            Ecs(String),
        }

        impl Reason {
            /// Every fixed reason.
            pub const ALL: &'static [Reason] = &[$(Reason::$name),+];

            /// A reason as written in a status (an ECS code if it is none of ours).
            pub fn parse(text: &str) -> Reason {
                Reason::ALL
                    .iter()
                    .find(|r| r.as_str() == text)
                    .cloned()
                    .unwrap_or_else(|| Reason::Ecs(text.to_string()))
            }

            pub fn as_str(&self) -> &str {
                match self {
                    $(Reason::$name => stringify!($name),)+
                    Reason::Ecs(code) => code,
                }
            }
        }
    };
}

reasons! {
    // Ready.
    /// The ECS cluster is ACTIVE.
    Active,
    /// The ECS service runs the desired revision with every task.
    Available,
    /// The current task-definition revision matches the spec.
    Registered,
    /// The schedule waits for its next slot.
    Scheduled,
    /// The schedule is suspended.
    Suspended,
    /// The run finished with exit code 0 everywhere.
    Succeeded,

    // Progressing.
    Creating,
    Created,
    Provisioning,
    Waiting,
    Deploying,
    RolloutStarted,
    RolloutPending,
    RollingOut,
    Updating,
    WaitingForReference,
    WaitingForDrain,
    WaitingForVisibility,
    WaitingForTaskSet,
    Starting,
    Running,
    BackoffWaiting,
    Draining,

    // Stalled: a person has to act.
    NotOwned,
    ImmutableField,
    DeployedElsewhere,
    UpdateNotApplied,
    RolledBack,
    RolloutFailed,
    ClusterFailed,
    TooLarge,
    InvalidSchedule,
    InvalidSpec,
    DeadlineExceeded,
    PlacementFailed,
    NonZeroExit,
    Stopped,
    ServicesRemain,
    ClusterNotEmpty,
    /// A capacity provider to delete is still listed by a cluster.
    InUse,
    /// A cluster to delete still has registered container instances.
    InstancesRemain,
    PruneFailed,

    // From errors (see `Error::reason`).
    EcsRejected,
    Throttled,
    EcsUnavailable,
    KubernetesApiError,
    InternalError,

    // Events only.
    Adopted,
    Updated,
    DriftCorrected,
    TagsUpdated,
    Recovered,
    Started,
    Failed,
    AttemptFailed,
    Expired,
    Deleting,
    Deleted,
    Released,
    Orphaned,
    Kept,
    Pruned,
    Replaced,
    Skipped,
    MissedSlots,
    TooManyMissedSlots,
    ReconcileFailed,
    DeleteBlocked,
    /// spec.desiredCount is not applied: a scaler owns the task count.
    CountOwnedElsewhere,
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Reasons read back from the API (conditions are strings there) compare with ours.
impl PartialEq<str> for Reason {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Reason {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_distinct_pascal_case_words() {
        let mut seen = std::collections::BTreeSet::new();
        for r in Reason::ALL {
            let s = r.as_str();
            assert!(seen.insert(s), "{s} twice");
            assert!(
                s.chars().next().is_some_and(|c| c.is_ascii_uppercase()),
                "{s}"
            );
            assert!(s.chars().all(|c| c.is_ascii_alphanumeric()), "{s}");
        }
        assert_eq!(Reason::Ecs("TaskFailedToStart".into()), "TaskFailedToStart");
    }

    /// Every reason that leaves a resource Stalled is explained in the README.
    #[test]
    fn stalled_reasons_are_in_the_troubleshooting_table() {
        let readme = include_str!("../../README.md");
        let stalled = [
            Reason::NotOwned,
            Reason::ImmutableField,
            Reason::DeployedElsewhere,
            Reason::UpdateNotApplied,
            Reason::RolledBack,
            Reason::RolloutFailed,
            Reason::ClusterFailed,
            Reason::TooLarge,
            Reason::InvalidSchedule,
            Reason::InvalidSpec,
            Reason::EcsRejected,
            Reason::ServicesRemain,
            Reason::ClusterNotEmpty,
            Reason::InUse,
            Reason::InstancesRemain,
            Reason::PruneFailed,
        ];
        for r in stalled {
            assert!(
                readme.contains(&format!("`{r}`")),
                "README.md: explain reason {r} in the troubleshooting table"
            );
        }
    }
}
