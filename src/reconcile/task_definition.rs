//! `EcsTaskDefinition`: the I/O around the pure plan in `task_definition_plan`.

use std::collections::{BTreeMap, BTreeSet};

use aws_sdk_ecs::types::TaskDefinitionStatus;
use kube::ResourceExt;
use kube::api::{Api, ListParams};

use super::task_definition_plan::{self, ObservedRevision, Plan};
use super::{Context, Managed, Note, Outcome};
use crate::api::common::{DeletionPolicy, Health, UID_TAG, ownership_tags};
use crate::api::scheduled_task::EcsScheduledTask;
use crate::api::service::EcsService;
use crate::api::task::{EcsTask, Phase};
use crate::api::task_definition::{EcsTaskDefinition, EcsTaskDefinitionStatus, RevisionRecord};
use crate::ecs::task_definition as td;
use crate::ecs::{EcsApi, set_tags};
use crate::error::Error;

/// Tag with the spec hash a revision was registered from.
pub const HASH_TAG: &str = "ecs.operator.dev/spec-hash";

struct Observed {
    ours: Vec<ObservedRevision>,
    foreign_active: usize,
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

/// `owner` is this resource's owner tag value: a newest revision under it whose uid
/// belongs to no living EcsTaskDefinition is this resource's own history.
async fn observe(
    ctx: &Context,
    family: &str,
    uid: &str,
    records: &[RevisionRecord],
    owner: &str,
) -> Result<Observed, Error> {
    let ecs = &ctx.ecs;
    // Known revisions: verify the newest one only (1 read per resync).
    if let Some(latest) = records.first() {
        if let Some((status, tags)) = td::describe(ecs, &latest.arn).await?
            && status == "ACTIVE"
            && tags.get(UID_TAG).is_some_and(|u| u == uid)
        {
            return Ok(Observed {
                ours: records.iter().map(record_to_observed).collect(),
                foreign_active: 0,
                latest_tags: tags,
            });
        }
        // Deregistered behind our back: the rest of our records are still ours.
        let rest: Vec<ObservedRevision> = records[1..].iter().map(record_to_observed).collect();
        if !rest.is_empty() {
            return Ok(Observed {
                ours: rest,
                foreign_active: 0,
                latest_tags: BTreeMap::new(),
            });
        }
    }
    // No usable records (first reconcile, or status lost): look at the family.
    let active = td::list_family(ecs, family, TaskDefinitionStatus::Active).await?;
    let Some(newest) = active.first() else {
        return Ok(Observed {
            ours: vec![],
            foreign_active: 0,
            latest_tags: BTreeMap::new(),
        });
    };
    let (_, tags) = td::describe(ecs, newest).await?.unwrap_or_default();
    if tags.get(UID_TAG).is_some_and(|u| u == uid)
        || super::is_own_history::<EcsTaskDefinition>(ctx, &tags, owner, uid).await?
    {
        let rev = ObservedRevision {
            revision: td::arn_revision(newest).unwrap_or_default(),
            arn: newest.clone(),
            status: "ACTIVE".into(),
            hash: tags.get(HASH_TAG).cloned(),
            ours: true,
        };
        return Ok(Observed {
            ours: vec![rev],
            foreign_active: 0,
            latest_tags: tags,
        });
    }
    Ok(Observed {
        ours: vec![],
        foreign_active: active.len(),
        latest_tags: BTreeMap::new(),
    })
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
            "Pruned",
            "DeleteTaskDefinitions",
            format!("deregistered and deleted old revisions {deleted:?} of {family}"),
        ));
    }
    for (arn, why) in failures {
        notes.push(Note::warning(
            "PruneFailed",
            "DeleteTaskDefinitions",
            format!(
                "ECS did not delete {}: {why}; kept and tried again later",
                super::service_plan::td_short(arn)
            ),
        ));
    }
    notes
}

/// Who refers to which task definition (an ARN or `family:revision`), across every
/// namespace the operator watches: ECS services of ours as last read, EcsServices (what they run, roll to, or ran in
/// a deployment still listed), unfinished EcsTasks (recorded or pinned in the spec:
/// a retry needs its revision), EcsScheduledTasks (the template's pinned revision).
/// Objects being deleted never count: they are going away with their revisions.
async fn references(ctx: &Context) -> Result<Vec<(String, String)>, Error> {
    let scope = ctx.namespace.as_deref();
    let key = |kind: &str, m: &kube::api::ObjectMeta| {
        format!(
            "{kind} {}/{}",
            m.namespace.as_deref().unwrap_or_default(),
            m.name.as_deref().unwrap_or_default()
        )
    };
    // What ECS last reported the services of the operator's EcsServices running.
    let mut refs = ctx.services.task_definitions_in_use();
    let services: Api<EcsService> = super::scoped_api(&ctx.kube, scope);
    for svc in services.list(&ListParams::default()).await?.items {
        if svc.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let who = key("EcsService", &svc.metadata);
        let st = svc.status.unwrap_or_default();
        let tds = st
            .task_definition
            .into_iter()
            .chain(st.applied_task_definition)
            .chain(st.deployments.into_iter().map(|d| d.task_definition))
            .chain(svc.spec.task_definition);
        refs.extend(tds.map(|td| (td, who.clone())));
    }
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
            .chain(task.spec.task_definition);
        refs.extend(tds.map(|td| (td, who.clone())));
    }
    let schedules: Api<EcsScheduledTask> = super::scoped_api(&ctx.kube, scope);
    for sched in schedules.list(&ListParams::default()).await?.items {
        if sched.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let who = key("EcsScheduledTask", &sched.metadata);
        refs.extend(sched.spec.template.task_definition.map(|td| (td, who)));
    }
    Ok(refs)
}

/// The revisions (of `ours`) something refers to, with who does.
fn users_of(ours: &[ObservedRevision], refs: &[(String, String)]) -> BTreeMap<String, Vec<String>> {
    let mut users: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for r in ours {
        for (td, who) in refs {
            if crate::reconcile::service_plan::same_task_definition(td, &r.arn) {
                let list = users.entry(r.arn.clone()).or_default();
                if !list.contains(who) {
                    list.push(who.clone());
                }
            }
        }
    }
    users
}

impl Managed for EcsTaskDefinition {
    const KIND: &'static str = "EcsTaskDefinition";

    async fn apply(&self, ctx: &Context) -> Result<Outcome, Error> {
        let ns = self.namespace().unwrap_or_default();
        let name = self.name_any();
        let uid = self
            .uid()
            .ok_or_else(|| Error::Config(format!("EcsTaskDefinition {ns}/{name} has no uid")))?;
        let family = self.family_name();
        let status = self.status.clone().unwrap_or_default();
        let owner = crate::api::common::owner_tag_value(&ns, &name);
        let mut observed = observe(ctx, &family, &uid, &status.revisions, &owner).await?;
        // Revisions EcsServices run are never pruned. Listing them costs a
        // Kubernetes read, so only when something would be pruned.
        let would_prune = match task_definition_plan::plan(
            &family,
            &self.spec,
            &observed.ours,
            observed.foreign_active,
            &BTreeSet::new(),
        ) {
            Plan::UpToDate { prune, .. } | Plan::Register { prune, .. } => !prune.is_empty(),
            Plan::Refuse(_) => false,
        };
        let users = if would_prune {
            users_of(&observed.ours, &references(ctx).await?)
        } else {
            BTreeMap::new()
        };
        let in_use: BTreeSet<String> = users.keys().cloned().collect();

        let mut tags = self.spec.tags.clone();
        tags.extend(ownership_tags(&ns, &name, &uid));

        let plan = task_definition_plan::plan(
            &family,
            &self.spec,
            &observed.ours,
            observed.foreign_active,
            &in_use,
        );
        // A registration that never shows up as the current revision is the same
        // write again and again: stop after a few, as for every kind.
        let fingerprint = match &plan {
            Plan::Register { hash, .. } => Some(format!("register {hash}")),
            _ => None,
        };
        if let Err(health) = ctx.updates.check(
            &super::key_of(self),
            fingerprint,
            &format!("task-definition family {family}"),
            &["containerDefinitions".to_string()],
        ) {
            let note = Note::warning(
                "UpdateNotApplied",
                "RegisterTaskDefinition",
                health.message(),
            );
            let mut body = status.clone();
            body.conditions.clear();
            body.observed_generation = None;
            return Ok(Outcome {
                status: serde_json::to_value(&body).unwrap_or_default(),
                health,
                requeue: None,
                notes: vec![note],
            });
        }
        let mut notes = Vec::new();
        let (latest, prune_list, registered_at) = match plan {
            Plan::Refuse(health) => {
                let message = health.message().to_string();
                let body = EcsTaskDefinitionStatus {
                    family: Some(family),
                    ..Default::default()
                };
                return Ok(Outcome {
                    status: serde_json::to_value(body).unwrap_or_default(),
                    health,
                    requeue: None,
                    notes: vec![Note::warning("NotOwned", "RegisterTaskDefinition", message)],
                });
            }
            Plan::UpToDate { latest, prune } => {
                // Tag changes apply to the current revision; they need no new one.
                let mut want = tags.clone();
                want.insert(HASH_TAG.into(), latest.hash.clone().unwrap_or_default());
                let differ: BTreeMap<String, String> = want
                    .into_iter()
                    .filter(|(k, v)| observed.latest_tags.get(k) != Some(v))
                    .collect();
                // Keys this resource set before and the spec no longer has.
                let removed: Vec<String> = status
                    .managed_tag_keys
                    .iter()
                    .filter(|k| !tags.contains_key(*k) && observed.latest_tags.contains_key(*k))
                    .cloned()
                    .collect();
                if !differ.is_empty() || !removed.is_empty() {
                    set_tags(&ctx.ecs, &latest.arn, &differ, &removed).await?;
                    let keys: Vec<&String> = differ.keys().chain(removed.iter()).collect();
                    notes.push(Note::normal(
                        "TagsUpdated",
                        "TagResource",
                        format!("tags on {}:{} changed: {keys:?}", family, latest.revision),
                    ));
                }
                (latest, prune, None)
            }
            Plan::Register { hash, prune } => {
                // A registration whose status write was lost left a revision status
                // does not list (RegisterTaskDefinition has no client token): take it
                // into the history, and use it if it is this very spec.
                let newest = observed.ours.first().map(|r| r.revision).unwrap_or(0);
                let leaked = leaked_revisions(&ctx.ecs, &family, &uid, newest).await?;
                if let Some(same) = leaked.iter().find(|r| r.hash.as_deref() == Some(&hash)) {
                    let same = same.clone();
                    observed
                        .ours
                        .extend(leaked.iter().filter(|r| r.arn != same.arn).cloned());
                    notes.push(Note::normal(
                        "Recovered",
                        "ListTaskDefinitions",
                        format!("found {family}:{} registered before a lost status write; not registering again", same.revision),
                    ));
                    (same, prune, None)
                } else {
                    observed.ours.extend(leaked);
                    let mut t = tags.clone();
                    t.insert(HASH_TAG.into(), hash.clone());
                    let (revision, arn) = td::register(&ctx.ecs, &family, &self.spec, &t).await?;
                    notes.push(Note::normal(
                        "Registered",
                        "RegisterTaskDefinition",
                        format!("registered {family}:{revision} (spec hash {hash})"),
                    ));
                    let now = k8s_openapi::jiff::Timestamp::now().as_second();
                    let at = k8s_openapi::jiff::Timestamp::from_second(now)
                        .map(|t| t.to_string())
                        .ok();
                    (
                        ObservedRevision {
                            revision,
                            arn,
                            status: "ACTIVE".into(),
                            hash: Some(hash),
                            ours: true,
                        },
                        prune,
                        at,
                    )
                }
            }
        };

        let failures = prune(&ctx.ecs, &prune_list).await?;
        notes.extend(prune_notes(&family, &prune_list, &failures));
        let pruned: BTreeSet<&str> = prune_list
            .iter()
            .map(|r| r.arn.as_str())
            .filter(|arn| !failures.iter().any(|(f, _)| f == arn))
            .collect();
        let mut revisions = vec![to_record(&latest, registered_at, &status.revisions)];
        revisions.extend(
            observed
                .ours
                .iter()
                .filter(|r| r.arn != latest.arn && !pruned.contains(r.arn.as_str()))
                .map(|r| to_record(r, None, &status.revisions)),
        );
        revisions.sort_by_key(|r| std::cmp::Reverse(r.revision));
        let body = EcsTaskDefinitionStatus {
            family: Some(family.clone()),
            latest_revision: Some(latest.revision),
            latest_arn: Some(latest.arn.clone()),
            spec_hash: latest.hash.clone(),
            revisions,
            managed_tag_keys: self.spec.tags.keys().cloned().collect(),
            ..Default::default()
        };
        Ok(Outcome {
            status: serde_json::to_value(body).unwrap_or_default(),
            health: Health::ready(
                "Registered",
                format!("{family}:{} is the current revision", latest.revision),
            ),
            requeue: None,
            notes,
        })
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
        let who: Vec<&str> = who.into_iter().map(String::as_str).collect();
        let kept_note = || {
            Note::normal(
                "Kept",
                "DeregisterTaskDefinition",
                format!(
                    "revisions {kept:?} of {family} left registered: still used by {}",
                    who.join(", ")
                ),
            )
        };
        if doomed.is_empty() {
            return Ok(vec![
                if kept.is_empty() || self.spec.deletion_policy == DeletionPolicy::Orphan {
                    Note::normal(
                        "Released",
                        "Delete",
                        format!("revisions of {family} left in place"),
                    )
                } else {
                    kept_note()
                },
            ]);
        }
        let failures = prune(&ctx.ecs, &doomed).await?;
        if !failures.is_empty() {
            // Keep the finalizer: the history must not be lost while ECS still has it.
            let (arn, why) = &failures[0];
            return Err(Error::DeleteBlocked {
                reason: "PruneFailed".into(),
                message: format!(
                    "ECS did not delete {} ({} revision(s) refused): {why}",
                    super::service_plan::td_short(arn),
                    failures.len()
                ),
            });
        }
        let revs: Vec<i32> = doomed.iter().map(|r| r.revision).collect();
        let mut notes = vec![Note::normal(
            "Deleted",
            "DeleteTaskDefinitions",
            format!("deregistered and deleted revisions {revs:?} of {family}"),
        )];
        if !kept.is_empty() {
            notes.push(kept_note());
        }
        Ok(notes)
    }
}
