//! `EcsTaskDefinition`: the I/O around the pure plan in `task_definition_plan`.

use std::collections::{BTreeMap, BTreeSet};

use aws_sdk_ecs::types::TaskDefinitionStatus;
use kube::ResourceExt;
use kube::api::{Api, ListParams};

use super::task_definition_plan::{self, ObservedRevision, Plan};
use super::{Context, Managed, Note, Outcome};
use crate::api::common::{DeletionPolicy, Health, UID_TAG, ownership_tags};
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

async fn observe(
    ecs: &EcsApi,
    family: &str,
    uid: &str,
    records: &[RevisionRecord],
) -> Result<Observed, Error> {
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
    if tags.get(UID_TAG).is_some_and(|u| u == uid) {
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

async fn prune(ecs: &EcsApi, revisions: &[ObservedRevision]) -> Result<(), Error> {
    if revisions.is_empty() {
        return Ok(());
    }
    for r in revisions {
        match td::deregister(ecs, &r.arn).await {
            Ok(()) => {}
            // Already INACTIVE or gone: nothing left to deregister.
            Err(Error::Ecs { code: Some(c), .. }) if c == "ClientException" => {}
            Err(e) => return Err(e),
        }
    }
    let arns: Vec<String> = revisions.iter().map(|r| r.arn.clone()).collect();
    td::delete(ecs, &arns).await
}

/// Task-definition ARNs that EcsServices in the namespace run or roll to, and that
/// unfinished EcsTasks run (a retry needs its revision still registered).
async fn in_use_by_services(ctx: &Context, ns: &str) -> Result<BTreeSet<String>, Error> {
    let api: Api<EcsService> = Api::namespaced(ctx.kube.clone(), ns);
    let services = api.list(&ListParams::default()).await?;
    let mut in_use: BTreeSet<String> = services
        .items
        .iter()
        // A service being deleted is going away with its revisions.
        .filter(|s| s.metadata.deletion_timestamp.is_none())
        .filter_map(|s| s.status.as_ref())
        .flat_map(|st| {
            st.task_definition
                .iter()
                .chain(st.applied_task_definition.iter())
                .chain(st.deployments.iter().map(|d| &d.task_definition))
                .cloned()
                .collect::<Vec<_>>()
        })
        .collect();
    let tasks: Api<EcsTask> = Api::namespaced(ctx.kube.clone(), ns);
    in_use.extend(
        tasks
            .list(&ListParams::default())
            .await?
            .items
            .into_iter()
            .filter_map(|t| t.status)
            .filter(|st| !matches!(st.phase, Some(Phase::Succeeded | Phase::Failed)))
            .filter_map(|st| st.task_definition),
    );
    Ok(in_use)
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
        let observed = observe(&ctx.ecs, &family, &uid, &status.revisions).await?;
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
        let in_use = if would_prune {
            in_use_by_services(ctx, &ns).await?
        } else {
            BTreeSet::new()
        };

        let mut tags = self.spec.tags.clone();
        tags.extend(ownership_tags(&ns, &name, &uid));

        let mut notes = Vec::new();
        let (latest, prune_list, registered_at) = match task_definition_plan::plan(
            &family,
            &self.spec,
            &observed.ours,
            observed.foreign_active,
            &in_use,
        ) {
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
                if !differ.is_empty() {
                    set_tags(&ctx.ecs, &latest.arn, &differ, &[]).await?;
                    let keys: Vec<&String> = differ.keys().collect();
                    notes.push(Note::normal(
                        "TagsUpdated",
                        "TagResource",
                        format!("tags on {}:{} set: {keys:?}", family, latest.revision),
                    ));
                }
                (latest, prune, None)
            }
            Plan::Register { hash, prune } => {
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
        };

        prune(&ctx.ecs, &prune_list).await?;
        if !prune_list.is_empty() {
            let revs: Vec<i32> = prune_list.iter().map(|r| r.revision).collect();
            notes.push(Note::normal(
                "Pruned",
                "DeleteTaskDefinitions",
                format!("deregistered and deleted old revisions {revs:?} of {family}"),
            ));
        }
        let pruned: BTreeSet<&str> = prune_list.iter().map(|r| r.arn.as_str()).collect();
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
        let ns = self.namespace().unwrap_or_default();
        let in_use = if ours.is_empty() {
            BTreeSet::new()
        } else {
            in_use_by_services(ctx, &ns).await?
        };
        let doomed = task_definition_plan::plan_cleanup(self.spec.deletion_policy, &ours, &in_use);
        let kept: Vec<i32> = ours
            .iter()
            .filter(|r| in_use.contains(&r.arn))
            .map(|r| r.revision)
            .collect();
        let kept_note = || {
            Note::normal(
                "Kept",
                "DeregisterTaskDefinition",
                format!(
                    "revisions {kept:?} of {family} left registered: EcsServices still run them"
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
        prune(&ctx.ecs, &doomed).await?;
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
