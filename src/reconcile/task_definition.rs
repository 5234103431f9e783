//! `EcsTaskDefinition`: the I/O around the pure plan in `task_definition_plan`.

use std::collections::{BTreeMap, BTreeSet};

use aws_sdk_ecs::types::TaskDefinitionStatus;
use kube::ResourceExt;
use kube::api::{Api, ListParams};

use super::owned::{self, Adoption, Claim, Claimant};
use super::task_definition_plan::{self, Family, Foreign, ObservedRevision, Plan};
use super::{Context, Managed, Note, Outcome, key_of};
use crate::api::common::{DeletionPolicy, Health, Reason, UID_TAG, ownership_tags};
use crate::api::scheduled_task::EcsScheduledTask;
use crate::api::service::EcsService;
use crate::api::task::{EcsTask, Phase};
use crate::api::task_definition::{EcsTaskDefinition, EcsTaskDefinitionStatus, RevisionRecord};
use crate::ecs::service::ServiceObserver;
use crate::ecs::task_definition::{self as td, td_short};
use crate::ecs::{EcsApi, set_tags};
use crate::error::Error;

/// Tag with the spec hash a revision was registered from.
pub const HASH_TAG: &str = "ecs.operator.dev/spec-hash";

struct Observed {
    ours: Vec<ObservedRevision>,
    foreign: Option<Foreign>,
    /// Tags on the latest revision of ours.
    latest_tags: BTreeMap<String, String>,
}

fn record_to_observed(r: &RevisionRecord) -> ObservedRevision {
    ObservedRevision {
        revision: r.revision,
        arn: r.arn.clone(),
        status: "ACTIVE".into(),
        hash: Some(r.hash.clone()),
        ours: true,
    }
}

/// The family's revisions of this resource: those recorded (the newest verified),
/// or on a first look the family's newest revision if it is ours or our own history.
async fn observe(
    ctx: &Context,
    family: &str,
    me: &Claimant,
    records: &[RevisionRecord],
) -> Result<Observed, Error> {
    let uid = me.uid.as_str();
    let ecs = &ctx.ecs;
    // Known revisions: verify the newest one only (1 read per resync).
    if let Some(latest) = records.first() {
        if let Some((status, tags)) = td::describe(ecs, &latest.arn).await?
            && status == "ACTIVE"
            && tags.get(UID_TAG).is_some_and(|u| u == uid)
        {
            return Ok(Observed {
                ours: records.iter().map(record_to_observed).collect(),
                foreign: None,
                latest_tags: tags,
            });
        }
        // Deregistered behind our back: the rest of our records are still ours.
        let rest: Vec<ObservedRevision> = records[1..].iter().map(record_to_observed).collect();
        if !rest.is_empty() {
            return Ok(Observed {
                ours: rest,
                foreign: None,
                latest_tags: BTreeMap::new(),
            });
        }
    }
    // No usable records (first reconcile, or status lost): look at the family.
    let active = td::list_family(ecs, family, TaskDefinitionStatus::Active).await?;
    let Some(newest) = active.first() else {
        return Ok(Observed {
            ours: vec![],
            foreign: None,
            latest_tags: BTreeMap::new(),
        });
    };
    let (_, tags) = td::describe(ecs, newest).await?.unwrap_or_default();
    let living = owned::living_for::<EcsTaskDefinition>(ctx, Some(&tags), uid).await?;
    match owned::claim(&tags, me, living.as_ref()) {
        Claim::Ours | Claim::Adopt(Adoption::OwnHistory) => {
            let rev = ObservedRevision {
                revision: td::arn_revision(newest).unwrap_or_default(),
                arn: newest.clone(),
                status: "ACTIVE".into(),
                hash: tags.get(HASH_TAG).cloned(),
                ours: true,
            };
            Ok(Observed {
                ours: vec![rev],
                foreign: None,
                latest_tags: tags,
            })
        }
        claim => Ok(Observed {
            ours: vec![],
            foreign: Some(Foreign {
                active: active.len(),
                claim,
            }),
            latest_tags: BTreeMap::new(),
        }),
    }
}

fn to_record(
    r: &ObservedRevision,
    registered_at: Option<String>,
    old: &[RevisionRecord],
) -> RevisionRecord {
    RevisionRecord {
        revision: r.revision,
        arn: r.arn.clone(),
        hash: r.hash.clone().unwrap_or_default(),
        registered_at: registered_at.or_else(|| {
            old.iter()
                .find(|o| o.arn == r.arn)
                .and_then(|o| o.registered_at.clone())
        }),
    }
}

/// DeregisterTaskDefinition on a revision that is INACTIVE already.
fn is_already_inactive(err: &Error) -> bool {
    matches!(err, Error::Ecs { code: Some(c), message, .. }
        if c == "ClientException" && message.to_ascii_lowercase().contains("inactive"))
}

/// ACTIVE revisions of the family newer than `newer_than` that carry this
/// resource's uid (at most a few: one per lost status write).
async fn leaked_revisions(
    ecs: &EcsApi,
    family: &str,
    uid: &str,
    newer_than: i32,
) -> Result<Vec<ObservedRevision>, Error> {
    let mut found = Vec::new();
    for arn in td::list_family(ecs, family, TaskDefinitionStatus::Active).await? {
        let revision = td::arn_revision(&arn).unwrap_or_default();
        if revision <= newer_than {
            // Newest first: the rest are older.
            break;
        }
        if let Some((_, tags)) = td::describe(ecs, &arn).await?
            && tags.get(UID_TAG).is_some_and(|u| u == uid)
        {
            found.push(ObservedRevision {
                revision,
                arn,
                status: "ACTIVE".into(),
                hash: tags.get(HASH_TAG).cloned(),
                ours: true,
            });
        }
    }
    Ok(found)
}

/// Deregisters and deletes `revisions`; returns the ones ECS refused to delete,
/// with its reason.
async fn prune(
    ecs: &EcsApi,
    revisions: &[ObservedRevision],
) -> Result<Vec<(String, String)>, Error> {
    if revisions.is_empty() {
        return Ok(vec![]);
    }
    for r in revisions {
        match td::deregister(ecs, &r.arn).await {
            Ok(()) => {}
            // Already INACTIVE or gone: nothing left to deregister.
            Err(e) if crate::ecs::is_not_found(&e) || is_already_inactive(&e) => {}
            Err(e) => return Err(e),
        }
    }
    let arns: Vec<String> = revisions.iter().map(|r| r.arn.clone()).collect();
    td::delete(ecs, &arns).await
}

/// Events for a pruning pass: what was deleted, and what ECS refused (kept in the
/// history and tried again at the next pass).
fn prune_notes(
    family: &str,
    pruned: &[ObservedRevision],
    failures: &[(String, String)],
) -> Vec<Note> {
    let mut notes = Vec::new();
    let deleted: Vec<i32> = pruned
        .iter()
        .filter(|r| !failures.iter().any(|(arn, _)| *arn == r.arn))
        .map(|r| r.revision)
        .collect();
    if !deleted.is_empty() {
        notes.push(Note::normal(
            Reason::Pruned,
            "DeleteTaskDefinitions",
            format!("deregistered and deleted old revisions {deleted:?} of {family}"),
        ));
    }
    for (arn, why) in failures {
        notes.push(Note::warning(
            Reason::PruneFailed,
            "DeleteTaskDefinitions",
            format!(
                "ECS did not delete {}: {why}; kept and tried again later",
                td_short(arn)
            ),
        ));
    }
    notes
}

/// How long a deleted EcsTaskDefinition waits for the services and tasks still
/// using its revisions to be deleted as well, before it keeps those revisions.
const USERS_GRACE: std::time::Duration = std::time::Duration::from_secs(30);

/// Who refers to which task definition (an ARN or `family:revision`), across every
/// namespace the operator watches: ECS services of ours as last read, EcsServices
/// (what they run, roll to, or ran in a deployment still listed), unfinished EcsTasks
/// (recorded or pinned in the spec: a retry needs its revision), EcsScheduledTasks
/// (the template's pinned revision). Objects being deleted never count, nor the ECS
/// services of EcsServices being deleted: they are going away with their revisions
/// (`kubectl delete -f app.yaml` leaves no revision behind).
async fn references(ctx: &Context) -> Result<Vec<(String, String)>, Error> {
    let scope = ctx.namespace.as_deref();
    let key = |kind: &str, m: &kube::api::ObjectMeta| {
        format!(
            "{kind} {}/{}",
            m.namespace.as_deref().unwrap_or_default(),
            m.name.as_deref().unwrap_or_default()
        )
    };
    // What ECS last reported the services of the operator's EcsServices running
    // (but not of those being deleted: their services go too).
    let mut refs = Vec::new();
    let mut leaving = BTreeSet::new();
    let services: Api<EcsService> = super::scoped_api(&ctx.kube, scope);
    for svc in services.list(&ListParams::default()).await?.items {
        if svc.metadata.deletion_timestamp.is_some() {
            if let Some(cluster) = svc.status.as_ref().and_then(|s| s.cluster.as_deref()) {
                leaving.insert(ServiceObserver::user(cluster, &svc.ecs_name()));
            }
            continue;
        }
        let who = key("EcsService", &svc.metadata);
        let st = svc.status.unwrap_or_default();
        let tds = st
            .task_definition
            .into_iter()
            .chain(st.applied_task_definition)
            .chain(st.deployments.into_iter().map(|d| d.task_definition))
            .chain(svc.spec.placement.task_definition);
        refs.extend(tds.map(|td| (td, who.clone())));
    }
    let cached = ctx.services.task_definitions_in_use();
    refs.extend(cached.into_iter().filter(|(_, who)| !leaving.contains(who)));
    let tasks: Api<EcsTask> = super::scoped_api(&ctx.kube, scope);
    for task in tasks.list(&ListParams::default()).await?.items {
        let st = task.status.unwrap_or_default();
        if task.metadata.deletion_timestamp.is_some()
            || matches!(st.phase, Some(Phase::Succeeded | Phase::Failed))
        {
            continue;
        }
        let who = key("EcsTask", &task.metadata);
        let tds = st
            .task_definition
            .into_iter()
            .chain(task.spec.placement.task_definition);
        refs.extend(tds.map(|td| (td, who.clone())));
    }
    let schedules: Api<EcsScheduledTask> = super::scoped_api(&ctx.kube, scope);
    for sched in schedules.list(&ListParams::default()).await?.items {
        if sched.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let who = key("EcsScheduledTask", &sched.metadata);
        refs.extend(
            sched
                .spec
                .template
                .placement
                .task_definition
                .map(|td| (td, who)),
        );
    }
    Ok(refs)
}

/// The revisions (of `ours`) something refers to, with who does.
fn users_of(ours: &[ObservedRevision], refs: &[(String, String)]) -> BTreeMap<String, Vec<String>> {
    let mut users: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for r in ours {
        for (td, who) in refs {
            if crate::ecs::task_definition::same_task_definition(td, &r.arn) {
                let list = users.entry(r.arn.clone()).or_default();
                if !list.contains(who) {
                    list.push(who.clone());
                }
            }
        }
    }
    users
}

/// The revision a pass settled on, and when it was registered (None: earlier).
struct Current {
    latest: ObservedRevision,
    registered_at: Option<String>,
}

/// Now, to the second (as the apiserver keeps times).
fn now_rfc3339() -> Option<String> {
    let now = k8s_openapi::jiff::Timestamp::now().as_second();
    k8s_openapi::jiff::Timestamp::from_second(now)
        .map(|t| t.to_string())
        .ok()
}

/// The revision history to keep in status: the current revision first, then the
/// rest of ours that were not pruned, newest first.
fn history(
    current: &Current,
    ours: &[ObservedRevision],
    pruned: &BTreeSet<&str>,
    old: &[RevisionRecord],
) -> Vec<RevisionRecord> {
    let latest = &current.latest;
    let mut revisions = vec![to_record(latest, current.registered_at.clone(), old)];
    revisions.extend(
        ours.iter()
            .filter(|r| r.arn != latest.arn && !pruned.contains(r.arn.as_str()))
            .map(|r| to_record(r, None, old)),
    );
    revisions.sort_by_key(|r| std::cmp::Reverse(r.revision));
    revisions
}

impl EcsTaskDefinition {
    fn tags(&self, me: &Claimant) -> BTreeMap<String, String> {
        let mut tags = self.spec.tags.clone();
        let ns = self.namespace().unwrap_or_default();
        tags.extend(ownership_tags(&ns, &self.name_any(), &me.uid));
        tags
    }

    /// Revisions something still runs (never pruned). Finding them costs Kubernetes
    /// reads, so only when the plan would prune something.
    async fn in_use(&self, ctx: &Context, family: &Family<'_>) -> Result<BTreeSet<String>, Error> {
        let would_prune = match task_definition_plan::plan(family, &self.spec, &BTreeSet::new()) {
            Plan::UpToDate { prune, .. } | Plan::Register { prune, .. } => !prune.is_empty(),
            Plan::Refuse(_) => false,
        };
        if !would_prune {
            return Ok(BTreeSet::new());
        }
        Ok(users_of(family.ours, &references(ctx).await?)
            .into_keys()
            .collect())
    }

    /// Tag changes apply to the current revision; they need no new one.
    async fn retag(
        &self,
        ctx: &Context,
        me: &Claimant,
        latest: &ObservedRevision,
        latest_tags: &BTreeMap<String, String>,
    ) -> Result<Vec<Note>, Error> {
        let mut want = self.tags(me);
        want.insert(HASH_TAG.into(), latest.hash.clone().unwrap_or_default());
        let managed = self
            .status
            .as_ref()
            .map(|s| s.managed_tag_keys.as_slice())
            .unwrap_or_default();
        let changes = owned::tag_changes(&want, latest_tags, managed);
        if changes.is_empty() {
            return Ok(vec![]);
        }
        set_tags(&ctx.ecs, &latest.arn, &changes.tag, &changes.untag).await?;
        let message = format!(
            "tags on {}:{} changed: {}",
            self.family_name(),
            latest.revision,
            changes.changed.join(", ")
        );
        Ok(vec![Note::normal(
            Reason::TagsUpdated,
            "TagResource",
            message,
        )])
    }

    /// How long ago this resource was deleted (zero if it is not).
    fn deleted_for(&self) -> std::time::Duration {
        let since = |t: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time| {
            let elapsed = k8s_openapi::jiff::Timestamp::now().duration_since(t.0);
            std::time::Duration::try_from(elapsed).ok()
        };
        let deleted = self.metadata.deletion_timestamp.as_ref();
        deleted.and_then(since).unwrap_or_default()
    }

    /// Registers a revision with `hash`, unless one whose status write was lost is
    /// there already (RegisterTaskDefinition has no client token): that one is taken
    /// into the history, and used if it is this very spec.
    async fn register(
        &self,
        ctx: &Context,
        me: &Claimant,
        ours: &mut Vec<ObservedRevision>,
        hash: String,
    ) -> Result<(Current, Note), Error> {
        let family = self.family_name();
        let newest = ours.first().map(|r| r.revision).unwrap_or(0);
        let leaked = leaked_revisions(&ctx.ecs, &family, &me.uid, newest).await?;
        if let Some(same) = leaked
            .iter()
            .find(|r| r.hash.as_deref() == Some(&hash))
            .cloned()
        {
            ours.extend(leaked.into_iter().filter(|r| r.arn != same.arn));
            let message = format!(
                "found {family}:{} registered before a lost status write; not registering again",
                same.revision
            );
            let note = Note::normal(Reason::Recovered, "ListTaskDefinitions", message);
            let current = Current {
                latest: same,
                registered_at: None,
            };
            return Ok((current, note));
        }
        ours.extend(leaked);
        let mut tags = self.tags(me);
        tags.insert(HASH_TAG.into(), hash.clone());
        let (revision, arn) = td::register(&ctx.ecs, &family, &self.spec, &tags).await?;
        let message = format!("registered {family}:{revision} (spec hash {hash})");
        let note = Note::normal(Reason::Registered, "RegisterTaskDefinition", message);
        let latest = ObservedRevision {
            revision,
            arn,
            status: "ACTIVE".into(),
            hash: Some(hash),
            ours: true,
        };
        Ok((
            Current {
                latest,
                registered_at: now_rfc3339(),
            },
            note,
        ))
    }

    /// Prunes what the plan let go and reports the result.
    async fn settle(
        &self,
        ctx: &Context,
        current: Current,
        ours: &[ObservedRevision],
        prune_list: &[ObservedRevision],
        mut notes: Vec<Note>,
    ) -> Result<Outcome<EcsTaskDefinitionStatus>, Error> {
        let family = self.family_name();
        let failures = prune(&ctx.ecs, prune_list).await?;
        notes.extend(prune_notes(&family, prune_list, &failures));
        let pruned: BTreeSet<&str> = prune_list
            .iter()
            .map(|r| r.arn.as_str())
            .filter(|arn| !failures.iter().any(|(f, _)| f == arn))
            .collect();
        let old = self
            .status
            .as_ref()
            .map(|s| s.revisions.as_slice())
            .unwrap_or_default();
        let latest = &current.latest;
        let status = EcsTaskDefinitionStatus {
            family: Some(family.clone()),
            latest_revision: Some(latest.revision),
            latest_arn: Some(latest.arn.clone()),
            spec_hash: latest.hash.clone(),
            revisions: history(&current, ours, &pruned, old),
            managed_tag_keys: self.spec.tags.keys().cloned().collect(),
            ..Default::default()
        };
        let message = format!("{family}:{} is the current revision", latest.revision);
        Ok(Outcome::new(status, Health::ready(Reason::Registered, message)).notes(notes))
    }
}

impl Managed for EcsTaskDefinition {
    const KIND: &'static str = "EcsTaskDefinition";

    async fn apply(&self, ctx: &Context) -> Result<Outcome<EcsTaskDefinitionStatus>, Error> {
        let me = Claimant::of(self, self.spec.adopt_existing)?;
        let name = self.family_name();
        let previous = self.status.clone().unwrap_or_default();
        let mut observed = observe(ctx, &name, &me, &previous.revisions).await?;
        let family = Family {
            name: &name,
            me: &me,
            ours: &observed.ours,
            foreign: observed.foreign.clone(),
        };
        let in_use = self.in_use(ctx, &family).await?;
        let plan = task_definition_plan::plan(&family, &self.spec, &in_use);
        // A registration that never shows up as the current revision is the same
        // write again and again: stop after a few, as for every kind.
        let fingerprint = match &plan {
            Plan::Register { hash, .. } => Some(format!("register {hash}")),
            _ => None,
        };
        let what = format!("task-definition family {name}");
        let fields = ["containerDefinitions".to_string()];
        if let Err(health) = ctx
            .updates
            .check(&key_of(self), fingerprint, &what, &fields)
        {
            let note = owned::not_applied_note(&health, "RegisterTaskDefinition");
            return Ok(Outcome::new(previous, health).note(note));
        }
        match plan {
            Plan::Refuse(health) => {
                let status = EcsTaskDefinitionStatus {
                    family: Some(name),
                    ..Default::default()
                };
                // The Event says what the condition says (NotOwned, TooLarge).
                let note = Note::warning(
                    health.reason().clone(),
                    "RegisterTaskDefinition",
                    health.message(),
                );
                Ok(Outcome::new(status, health).note(note))
            }
            Plan::UpToDate { latest, prune } => {
                let notes = self.retag(ctx, &me, &latest, &observed.latest_tags).await?;
                let current = Current {
                    latest,
                    registered_at: None,
                };
                self.settle(ctx, current, &observed.ours, &prune, notes)
                    .await
            }
            Plan::Register { hash, prune } => {
                let (current, note) = self.register(ctx, &me, &mut observed.ours, hash).await?;
                self.settle(ctx, current, &observed.ours, &prune, vec![note])
                    .await
            }
        }
    }

    async fn cleanup(&self, ctx: &Context) -> Result<Vec<Note>, Error> {
        let family = self.family_name();
        let ours: Vec<ObservedRevision> = self
            .status
            .as_ref()
            .map(|s| s.revisions.iter().map(record_to_observed).collect())
            .unwrap_or_default();
        let users = if ours.is_empty() {
            BTreeMap::new()
        } else {
            users_of(&ours, &references(ctx).await?)
        };
        let in_use: BTreeSet<String> = users.keys().cloned().collect();
        let doomed = task_definition_plan::plan_cleanup(self.spec.deletion_policy, &ours, &in_use);
        let kept: Vec<i32> = ours
            .iter()
            .filter(|r| in_use.contains(&r.arn))
            .map(|r| r.revision)
            .collect();
        let who: BTreeSet<&String> = users.values().flatten().collect();
        let who = who
            .into_iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join(", ");
        let kept_note = || {
            let message =
                format!("revisions {kept:?} of {family} left registered: still used by {who}");
            Note::normal(Reason::Kept, "DeregisterTaskDefinition", message)
        };
        let deleting = self.spec.deletion_policy == DeletionPolicy::Delete;
        if !kept.is_empty() && deleting && self.deleted_for() < USERS_GRACE {
            // `kubectl delete -f app.yaml` deletes the task definition a moment before
            // the services and tasks that use it: give them time to be deleted too
            // (then they no longer count) before keeping the revisions for good.
            return Err(Error::DeleteInProgress {
                reason: Reason::Deleting,
                message: format!(
                    "revisions {kept:?} of {family} are still used by {who}; waiting up to {} s for them to be deleted too",
                    USERS_GRACE.as_secs()
                ),
            });
        }
        if doomed.is_empty() {
            return Ok(vec![if kept.is_empty() || !deleting {
                let message = format!("revisions of {family} left in place");
                Note::normal(Reason::Released, "Delete", message)
            } else {
                kept_note()
            }]);
        }
        let failures = prune(&ctx.ecs, &doomed).await?;
        if !failures.is_empty() {
            // Keep the finalizer: the history must not be lost while ECS still has it.
            let (arn, why) = &failures[0];
            return Err(Error::DeleteBlocked {
                reason: Reason::PruneFailed,
                message: format!(
                    "ECS did not delete {} ({} revision(s) refused): {why}",
                    td_short(arn),
                    failures.len()
                ),
            });
        }
        let revs: Vec<i32> = doomed.iter().map(|r| r.revision).collect();
        let mut notes = vec![Note::normal(
            Reason::Deleted,
            "DeleteTaskDefinitions",
            format!("deregistered and deleted revisions {revs:?} of {family}"),
        )];
        if !kept.is_empty() {
            notes.push(kept_note());
        }
        Ok(notes)
    }
}
