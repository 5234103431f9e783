//! Pure planning for `EcsTaskDefinition`.
//!
//! RegisterTaskDefinition always creates a new revision, even for identical input,
//! so "no change" is decided here: the spec is normalised (everything ECS treats
//! as equivalent made equal) and hashed; a revision is registered only when the
//! hash differs from the latest revision this resource registered.

use std::collections::BTreeSet;

use serde_json::Value;
use sha2::{Digest, Sha256};

use super::owned::{self, Claim, Claimant};
use crate::api::common::{DeletionPolicy, Health, Reason};
use crate::api::task_definition::{
    ContainerDefinition, EcsTaskDefinitionSpec, NetworkMode, PortMapping, Protocol,
};

/// The spec with every ECS default and ordering made explicit, so that two specs
/// ECS would treat the same compare equal. Tags, history limit, adoption and
/// deletion policy are not part of a revision and are left out.
pub fn normalise(spec: &EcsTaskDefinitionSpec) -> EcsTaskDefinitionSpec {
    let awsvpc = spec.network_mode == Some(NetworkMode::Awsvpc);
    let mut n = spec.clone();
    n.tags.clear();
    n.revision_history_limit = 10;
    n.adopt_existing = false;
    n.deletion_policy = DeletionPolicy::Delete;
    n.family = None;
    n.cpu = n.cpu.as_deref().map(canonical_number);
    n.memory = n.memory.as_deref().map(canonical_number);
    if let Some(rc) = n.requires_compatibilities.as_mut() {
        rc.sort();
        rc.dedup();
        if rc.is_empty() {
            n.requires_compatibilities = None;
        }
    }
    n.volumes.sort_by(|a, b| a.name.cmp(&b.name));
    n.placement_constraints
        .sort_by(|a, b| (&a.type_, &a.expression).cmp(&(&b.type_, &b.expression)));
    for c in n.container_definitions.iter_mut() {
        normalise_container(c, awsvpc);
    }
    n.container_definitions.sort_by(|a, b| a.name.cmp(&b.name));
    n
}

/// "0256" -> "256"; anything that is not a plain number is kept as written.
fn canonical_number(s: &str) -> String {
    s.trim()
        .parse::<u64>()
        .map(|v| v.to_string())
        .unwrap_or_else(|_| s.trim().to_string())
}

fn normalise_container(c: &mut ContainerDefinition, awsvpc: bool) {
    // essential defaults to true in ECS.
    if c.essential.is_none() {
        c.essential = Some(true);
    }
    // Later entries win in ECS for duplicate names; keep the last, sorted by name.
    c.environment = dedup_last_by(&c.environment, |kv| kv.name.clone());
    c.environment.sort();
    c.secrets = dedup_last_by(&c.secrets, |s| s.name.clone());
    c.secrets.sort();
    c.environment_files.sort();
    c.mount_points.sort();
    c.volumes_from.sort();
    c.depends_on.sort();
    c.ulimits.sort();
    for pm in c.port_mappings.iter_mut() {
        normalise_port(pm, awsvpc);
    }
    c.port_mappings.sort_by_key(|p| {
        (
            p.container_port,
            p.container_port_range.clone(),
            p.protocol.map(|p| p as u8),
        )
    });
    if let Some(hc) = c.health_check.as_mut() {
        hc.interval.get_or_insert(30);
        hc.timeout.get_or_insert(5);
        hc.retries.get_or_insert(3);
        hc.start_period.get_or_insert(0);
    }
    if let Some(lp) = c.linux_parameters.as_mut()
        && let Some(caps) = lp.capabilities.as_mut()
    {
        caps.add.sort();
        caps.add.dedup();
        caps.drop.sort();
        caps.drop.dedup();
    }
    if let Some(lp) = &c.linux_parameters
        && lp.init_process_enabled.is_none()
        && lp
            .capabilities
            .as_ref()
            .is_none_or(|c| c.add.is_empty() && c.drop.is_empty())
    {
        c.linux_parameters = None;
    }
}

fn normalise_port(pm: &mut PortMapping, awsvpc: bool) {
    if pm.protocol.is_none() {
        pm.protocol = Some(Protocol::Tcp);
    }
    // awsvpc: the host port is always the container port. Elsewhere 0 means dynamic.
    if awsvpc {
        if pm.host_port.is_none_or(|h| h == 0) {
            pm.host_port = pm.container_port;
        }
    } else if pm.host_port.is_none() && pm.container_port.is_some() {
        pm.host_port = Some(0);
    }
}

fn dedup_last_by<T: Clone, K: Ord>(items: &[T], key: impl Fn(&T) -> K) -> Vec<T> {
    let mut seen = BTreeSet::new();
    let mut out: Vec<T> = items
        .iter()
        .rev()
        .filter(|i| seen.insert(key(i)))
        .cloned()
        .collect();
    out.reverse();
    out
}

/// Short, stable hash of the normalised spec (first 16 hex chars of SHA-256).
pub fn spec_hash(spec: &EcsTaskDefinitionSpec) -> String {
    let v: Value = serde_json::to_value(normalise(spec)).unwrap_or(Value::Null);
    // serde_json maps are ordered, so this text is canonical for a given value.
    let text = v.to_string();
    hex::encode(Sha256::digest(text.as_bytes()))[..16].to_string()
}

/// A revision of the family as ECS shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedRevision {
    pub revision: i32,
    pub arn: String,
    /// ACTIVE, INACTIVE or DELETE_IN_PROGRESS.
    pub status: String,
    /// The spec-hash tag, if the operator registered it.
    pub hash: Option<String>,
    /// Registered by this resource (uid tag matches).
    pub ours: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Register a new revision (with this hash), then prune.
    Register {
        hash: String,
        prune: Vec<ObservedRevision>,
    },
    /// Latest revision is current; prune what is past the limit.
    UpToDate {
        latest: ObservedRevision,
        prune: Vec<ObservedRevision>,
    },
    Refuse(Health),
}

/// ECS's limit on a task definition: "The maximum size (in JSON format) of a task
/// definition is 64 KiB" (ECS service quotas). Checked before registering, so the
/// condition names the limit instead of relaying a rejection.
pub const MAX_TASK_DEFINITION_BYTES: usize = 64 * 1024;

fn too_large(spec: &EcsTaskDefinitionSpec) -> Option<Health> {
    let size = serde_json::to_vec(spec).map(|v| v.len()).unwrap_or(0);
    (size > MAX_TASK_DEFINITION_BYTES).then(|| {
        Health::stalled(
            Reason::TooLarge,
            format!(
                "the task definition is {size} bytes as JSON; ECS accepts at most \
                 {MAX_TASK_DEFINITION_BYTES} bytes (64 KiB). Move large values (e.g. long \
                 environment variables) to secrets or files"
            ),
        )
    })
}

/// The task-definition family as observed.
#[derive(Debug, Clone)]
pub struct Family<'a> {
    pub name: &'a str,
    pub me: &'a Claimant,
    /// The revisions this resource registered that are still ACTIVE, newest first.
    pub ours: &'a [ObservedRevision],
    /// The family's ACTIVE revisions when none is ours.
    pub foreign: Option<Foreign>,
}

/// ACTIVE revisions of the family that are not this resource's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Foreign {
    pub active: usize,
    /// The claim on the family, judged by its newest revision's tags.
    pub claim: Claim,
}

/// Decides what to do. `in_use` are ARNs something still runs, never pruned.
pub fn plan(family: &Family<'_>, spec: &EcsTaskDefinitionSpec, in_use: &BTreeSet<String>) -> Plan {
    let ours = family.ours;
    if let Some(Foreign {
        active,
        claim: Claim::Refuse(holder),
    }) = &family.foreign
        && ours.is_empty()
    {
        let what = format!(
            "task-definition family {} ({active} ACTIVE revision(s) not registered by this resource)",
            family.name
        );
        return Plan::Refuse(owned::refusal(holder, family.me, &what, "family"));
    }
    let hash = spec_hash(spec);
    let current_matches = ours
        .iter()
        .max_by_key(|r| r.revision)
        .is_some_and(|r| r.hash.as_deref() == Some(&hash));
    if !current_matches && let Some(refusal) = too_large(spec) {
        return Plan::Refuse(refusal);
    }
    let mut ours: Vec<ObservedRevision> = ours.to_vec();
    ours.sort_by_key(|r| std::cmp::Reverse(r.revision));
    let limit = usize::try_from(spec.revision_history_limit.max(1)).unwrap_or(1);
    let current = ours
        .first()
        .filter(|r| r.hash.as_deref() == Some(&hash))
        .cloned();
    // After a registration the new revision takes one of the `limit` places.
    let keep = if current.is_some() { limit } else { limit - 1 };
    let prune = ours
        .iter()
        .skip(keep)
        .filter(|r| !in_use.contains(&r.arn))
        .cloned()
        .collect();
    match current {
        Some(latest) => Plan::UpToDate { latest, prune },
        None => Plan::Register { hash, prune },
    }
}

/// Revisions to deregister and delete when the resource goes (policy Delete).
pub fn plan_cleanup(
    policy: DeletionPolicy,
    ours: &[ObservedRevision],
    in_use: &BTreeSet<String>,
) -> Vec<ObservedRevision> {
    match policy {
        DeletionPolicy::Orphan => vec![],
        DeletionPolicy::Delete => ours
            .iter()
            .filter(|r| !in_use.contains(&r.arn))
            .cloned()
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::task_definition::{
        Capabilities, Compatibility, HealthCheck, KeyValue, LinuxParameters, Secret,
    };
    use std::collections::BTreeMap;

    type Edit = Box<dyn Fn(&mut EcsTaskDefinitionSpec)>;

    fn container(name: &str) -> ContainerDefinition {
        ContainerDefinition {
            name: name.into(),
            image: "nginx:1.27".into(),
            ..Default::default()
        }
    }

    fn spec(containers: Vec<ContainerDefinition>) -> EcsTaskDefinitionSpec {
        EcsTaskDefinitionSpec {
            container_definitions: containers,
            network_mode: Some(NetworkMode::Awsvpc),
            cpu: Some("256".into()),
            memory: Some("512".into()),
            revision_history_limit: 10,
            ..Default::default()
        }
    }

    fn env(pairs: &[(&str, &str)]) -> Vec<KeyValue> {
        pairs
            .iter()
            .map(|(n, v)| KeyValue {
                name: n.to_string(),
                value: v.to_string(),
            })
            .collect()
    }

    /// Each row: a spec change that ECS treats as no change -> same hash.
    #[test]
    fn a_task_definition_over_64_kib_is_refused_with_the_limit_named() {
        let mut s = spec(vec![container("app")]);
        s.container_definitions[0].environment = vec![KeyValue {
            name: "BIG".into(),
            value: "x".repeat(70 * 1024),
        }];
        match plan(&family(&[], None), &s, &BTreeSet::new()) {
            Plan::Refuse(Health::Stalled { reason, message }) => {
                assert_eq!(reason, "TooLarge");
                assert!(message.contains("65536"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        // A normal one registers.
        assert!(matches!(
            plan(
                &family(&[], None),
                &spec(vec![container("app")]),
                &BTreeSet::new()
            ),
            Plan::Register { .. }
        ));
    }

    #[test]
    fn equivalent_specs_hash_the_same() {
        let base = spec(vec![container("web"), container("sidecar")]);
        let h = spec_hash(&base);
        let same: Vec<(&str, Edit)> = vec![
            (
                "containers reordered",
                Box::new(|s| s.container_definitions.reverse()),
            ),
            (
                "essential: true is the default",
                Box::new(|s| s.container_definitions[0].essential = Some(true)),
            ),
            (
                "tags are not part of a revision",
                Box::new(|s| {
                    s.tags.insert("team".into(), "a".into());
                }),
            ),
            ("history limit", Box::new(|s| s.revision_history_limit = 3)),
            (
                "deletion policy",
                Box::new(|s| s.deletion_policy = DeletionPolicy::Orphan),
            ),
            (
                "leading zeros in cpu",
                Box::new(|s| s.cpu = Some("0256".into())),
            ),
            (
                "empty linuxParameters",
                Box::new(|s| {
                    s.container_definitions[0].linux_parameters = Some(LinuxParameters::default())
                }),
            ),
        ];
        for (what, change) in same {
            let mut s = base.clone();
            change(&mut s);
            assert_eq!(spec_hash(&s), h, "{what}");
        }
    }

    #[test]
    fn env_and_secret_order_does_not_matter_but_values_do() {
        let mut a = spec(vec![container("web")]);
        a.container_definitions[0].environment = env(&[("A", "1"), ("B", "2")]);
        a.container_definitions[0].secrets = vec![
            Secret {
                name: "X".into(),
                value_from: "arn:x".into(),
            },
            Secret {
                name: "W".into(),
                value_from: "arn:w".into(),
            },
        ];
        let mut b = a.clone();
        b.container_definitions[0].environment.reverse();
        b.container_definitions[0].secrets.reverse();
        assert_eq!(spec_hash(&a), spec_hash(&b));
        b.container_definitions[0].environment = env(&[("A", "1"), ("B", "3")]);
        assert_ne!(spec_hash(&a), spec_hash(&b));
    }

    #[test]
    fn duplicate_env_names_keep_the_last_value_like_ecs() {
        let mut a = spec(vec![container("web")]);
        a.container_definitions[0].environment = env(&[("A", "1"), ("A", "2")]);
        let mut b = spec(vec![container("web")]);
        b.container_definitions[0].environment = env(&[("A", "2")]);
        assert_eq!(spec_hash(&a), spec_hash(&b));
    }

    #[test]
    fn port_defaults_protocol_tcp_and_awsvpc_host_port() {
        let mut a = spec(vec![container("web")]);
        a.container_definitions[0].port_mappings = vec![PortMapping {
            container_port: Some(80),
            ..Default::default()
        }];
        let mut b = a.clone();
        b.container_definitions[0].port_mappings = vec![PortMapping {
            container_port: Some(80),
            host_port: Some(80),
            protocol: Some(Protocol::Tcp),
            ..Default::default()
        }];
        assert_eq!(spec_hash(&a), spec_hash(&b));
        let mut c = a.clone();
        c.container_definitions[0].port_mappings[0].host_port = Some(0);
        assert_eq!(
            spec_hash(&a),
            spec_hash(&c),
            "awsvpc: 0 means containerPort"
        );
        c.container_definitions[0].port_mappings[0].protocol = Some(Protocol::Udp);
        assert_ne!(spec_hash(&a), spec_hash(&c));
    }

    #[test]
    fn bridge_host_port_zero_is_the_default() {
        let mut a = spec(vec![container("web")]);
        a.network_mode = Some(NetworkMode::Bridge);
        a.container_definitions[0].port_mappings = vec![PortMapping {
            container_port: Some(8080),
            ..Default::default()
        }];
        let mut b = a.clone();
        b.container_definitions[0].port_mappings[0].host_port = Some(0);
        assert_eq!(spec_hash(&a), spec_hash(&b));
        b.container_definitions[0].port_mappings[0].host_port = Some(8080);
        assert_ne!(spec_hash(&a), spec_hash(&b));
    }

    #[test]
    fn health_check_defaults_are_filled() {
        let mut a = spec(vec![container("web")]);
        a.container_definitions[0].health_check = Some(HealthCheck {
            command: vec!["CMD-SHELL".into(), "true".into()],
            ..Default::default()
        });
        let mut b = a.clone();
        b.container_definitions[0].health_check = Some(HealthCheck {
            command: vec!["CMD-SHELL".into(), "true".into()],
            interval: Some(30),
            timeout: Some(5),
            retries: Some(3),
            start_period: Some(0),
        });
        assert_eq!(spec_hash(&a), spec_hash(&b));
    }

    #[test]
    fn capabilities_and_compatibilities_are_sets() {
        let mut a = spec(vec![container("web")]);
        a.requires_compatibilities = Some(vec![Compatibility::Fargate, Compatibility::Ec2]);
        a.container_definitions[0].linux_parameters = Some(LinuxParameters {
            init_process_enabled: Some(true),
            capabilities: Some(Capabilities {
                add: vec!["SYS_PTRACE".into(), "NET_ADMIN".into()],
                drop: vec![],
            }),
        });
        let mut b = a.clone();
        b.requires_compatibilities = Some(vec![Compatibility::Ec2, Compatibility::Fargate]);
        b.container_definitions[0]
            .linux_parameters
            .as_mut()
            .unwrap()
            .capabilities
            .as_mut()
            .unwrap()
            .add
            .reverse();
        assert_eq!(spec_hash(&a), spec_hash(&b));
    }

    #[test]
    fn real_changes_change_the_hash() {
        let base = spec(vec![container("web")]);
        let h = spec_hash(&base);
        let changes: Vec<(&str, Edit)> = vec![
            (
                "image",
                Box::new(|s| s.container_definitions[0].image = "nginx:1.28".into()),
            ),
            (
                "essential false",
                Box::new(|s| s.container_definitions[0].essential = Some(false)),
            ),
            ("memory", Box::new(|s| s.memory = Some("1024".into()))),
            (
                "command",
                Box::new(|s| s.container_definitions[0].command = vec!["run".into()]),
            ),
            (
                "task role",
                Box::new(|s| s.task_role_arn = Some("arn:aws:iam::1:role/x".into())),
            ),
        ];
        for (what, change) in changes {
            let mut s = base.clone();
            change(&mut s);
            assert_ne!(spec_hash(&s), h, "{what}");
        }
    }

    fn me(adopt_existing: bool) -> &'static Claimant {
        Box::leak(Box::new(Claimant {
            kind: "EcsTaskDefinition",
            uid: "uid-1".into(),
            owner: "ns/web".into(),
            adopt_existing,
        }))
    }

    fn family(ours: &[ObservedRevision], foreign: Option<Foreign>) -> Family<'_> {
        Family {
            name: "web",
            me: me(false),
            ours,
            foreign,
        }
    }

    fn foreign(active: usize, claim: Claim) -> Foreign {
        Foreign { active, claim }
    }

    fn rev(n: i32, hash: &str) -> ObservedRevision {
        ObservedRevision {
            revision: n,
            arn: format!("arn:aws:ecs:us-east-1:0:task-definition/web:{n}"),
            status: "ACTIVE".into(),
            hash: Some(hash.into()),
            ours: true,
        }
    }

    #[test]
    fn first_reconcile_registers() {
        let s = spec(vec![container("web")]);
        assert_eq!(
            plan(&family(&[], None), &s, &BTreeSet::new()),
            Plan::Register {
                hash: spec_hash(&s),
                prune: vec![]
            }
        );
    }

    #[test]
    fn unchanged_spec_registers_nothing() {
        let s = spec(vec![container("web")]);
        let h = spec_hash(&s);
        let ours = vec![rev(3, &h), rev(2, "old")];
        assert_eq!(
            plan(&family(&ours, None), &s, &BTreeSet::new()),
            Plan::UpToDate {
                latest: rev(3, &h),
                prune: vec![]
            }
        );
    }

    #[test]
    fn history_beyond_the_limit_is_pruned_except_in_use() {
        let mut s = spec(vec![container("web")]);
        s.revision_history_limit = 2;
        let ours: Vec<_> = (1..=4).rev().map(|n| rev(n, "old")).collect();
        let in_use = BTreeSet::from([rev(1, "old").arn]);
        match plan(&family(&ours, None), &s, &in_use) {
            Plan::Register { prune, .. } => {
                // New revision + newest old one are kept; 3 and 2 go; 1 is in use.
                let revs: Vec<i32> = prune.iter().map(|r| r.revision).collect();
                assert_eq!(revs, vec![3, 2]);
            }
            p => panic!("{p:?}"),
        }
        let h = spec_hash(&s);
        let ours = vec![rev(5, &h), rev(4, "a"), rev(3, "b")];
        match plan(&family(&ours, None), &s, &BTreeSet::new()) {
            Plan::UpToDate { prune, .. } => assert_eq!(prune, vec![rev(3, "b")]),
            p => panic!("{p:?}"),
        }
    }

    #[test]
    fn foreign_family_is_refused_unless_adopted() {
        let s = spec(vec![container("web")]);
        let untagged = BTreeMap::new();
        let refused = owned::claim(&untagged, me(false), None);
        match plan(
            &family(&[], Some(foreign(2, refused))),
            &s,
            &BTreeSet::new(),
        ) {
            Plan::Refuse(Health::Stalled { reason, message }) => {
                assert_eq!(reason, "NotOwned");
                assert!(message.contains("adoptExisting"));
                assert!(message.contains("2 ACTIVE revision(s)"), "{message}");
            }
            p => panic!("{p:?}"),
        }
        let adopted = owned::claim(&untagged, me(true), None);
        assert!(matches!(
            plan(
                &family(&[], Some(foreign(2, adopted))),
                &s,
                &BTreeSet::new()
            ),
            Plan::Register { .. }
        ));
    }

    /// The shared ownership table, seen through the task-definition plan: a family
    /// whose newest revision another existing EcsTaskDefinition registered is not
    /// added to, adoptExisting or not (it used to be). The family's newest revision
    /// plays the existing object; one that is ours (or our own history) is filed
    /// under `ours` by the I/O layer, so the plan then sees no foreign family.
    #[test]
    fn ownership_table_holds_for_task_definition_families() {
        use crate::reconcile::owned::table::{self, Expect};
        let s = spec(vec![container("web")]);
        let living = table::living();
        for row in table::rows("web") {
            let known = table::living_for(&row.tags, &living);
            let claim = owned::claim(&row.tags, me(row.adopt_existing), known.as_ref());
            let got = match claim {
                Claim::Ours => Expect::Ours,
                Claim::Adopt(owned::Adoption::OwnHistory) => {
                    Expect::Adopt(owned::Adoption::OwnHistory)
                }
                claim => match plan(&family(&[], Some(foreign(1, claim))), &s, &BTreeSet::new()) {
                    Plan::Register { .. } => Expect::Adopt(owned::Adoption::Requested),
                    Plan::Refuse(h) => {
                        assert!(
                            matches!(&h, Health::Stalled { reason, .. } if reason == "NotOwned")
                        );
                        Expect::Refuse
                    }
                    p => panic!("{p:?}"),
                },
            };
            assert_eq!(
                got, row.expect,
                "{:?} adoptExisting={}",
                row.tags, row.adopt_existing
            );
        }
    }

    #[test]
    fn cleanup_respects_policy_and_use() {
        let ours = vec![rev(2, "a"), rev(1, "b")];
        assert!(plan_cleanup(DeletionPolicy::Orphan, &ours, &BTreeSet::new()).is_empty());
        let in_use = BTreeSet::from([rev(2, "a").arn]);
        assert_eq!(
            plan_cleanup(DeletionPolicy::Delete, &ours, &in_use),
            vec![rev(1, "b")]
        );
    }
}
