//! `EcsCluster`: the I/O around the pure plan in `cluster_plan`.

use kube::ResourceExt;
use serde_json::Value;

use super::cluster_plan::{self, Action, Cleanup, Desired, Plan};
use super::{Context, Managed, Note, Outcome};
use crate::api::cluster::{EcsCluster, EcsClusterStatus};
use crate::api::common::{Health, ownership_tags};
use crate::api::service::EcsService;
use crate::ecs::cluster::{
    ObservedCluster, container_insights_setting, describe_one, exec_to_sdk, service_connect_to_sdk,
    strategy_to_sdk, tags_to_sdk,
};
use crate::ecs::{Category, EcsApi, set_tags};
use crate::error::Error;

fn status_body(name: &str, obs: Option<&ObservedCluster>, managed_tag_keys: Vec<String>) -> Value {
    let status = match obs {
        Some(o) => EcsClusterStatus {
            cluster_name: Some(o.name.clone()),
            arn: Some(o.arn.clone()),
            status: Some(o.status.clone()),
            registered_container_instances_count: Some(o.registered_container_instances),
            running_tasks_count: Some(o.running_tasks),
            pending_tasks_count: Some(o.pending_tasks),
            active_services_count: Some(o.active_services),
            capacity_providers: o.capacity_providers.clone(),
            managed_tag_keys,
            ..Default::default()
        },
        None => EcsClusterStatus {
            cluster_name: Some(name.to_string()),
            managed_tag_keys,
            ..Default::default()
        },
    };
    serde_json::to_value(status).unwrap_or(Value::Null)
}

async fn act(ecs: &EcsApi, name: &str, arn: Option<&str>, action: &Action) -> Result<(), Error> {
    let c = &ecs.client;
    match action {
        Action::Create {
            name,
            container_insights,
            execute_command,
            service_connect_namespace,
            capacity_providers,
            default_strategy,
            tags,
        } => {
            let mut req = c
                .create_cluster()
                .cluster_name(name)
                .set_tags(Some(tags_to_sdk(tags)));
            if let Some(ci) = container_insights {
                req = req.settings(container_insights_setting(*ci));
            }
            if let Some(e) = execute_command {
                req = req.configuration(exec_to_sdk(e));
            }
            if let Some(ns) = service_connect_namespace {
                req = req.service_connect_defaults(service_connect_to_sdk(ns));
            }
            if let Some(p) = capacity_providers {
                req = req.set_capacity_providers(Some(p.clone()));
            }
            if let Some(s) = default_strategy {
                req = req.set_default_capacity_provider_strategy(Some(strategy_to_sdk(s)?));
            }
            ecs.call("CreateCluster", Category::ClusterModify, req.send())
                .await?;
        }
        Action::Update {
            container_insights,
            execute_command,
            service_connect_namespace,
        } => {
            let mut req = c.update_cluster().cluster(name);
            if let Some(ci) = container_insights {
                req = req.settings(container_insights_setting(*ci));
            }
            if let Some(e) = execute_command {
                req = req.configuration(exec_to_sdk(e));
            }
            if let Some(ns) = service_connect_namespace {
                req = req.service_connect_defaults(service_connect_to_sdk(ns));
            }
            ecs.call("UpdateCluster", Category::ClusterModify, req.send())
                .await?;
        }
        Action::PutCapacityProviders {
            providers,
            strategy,
        } => {
            let req = c
                .put_cluster_capacity_providers()
                .cluster(name)
                .set_capacity_providers(Some(providers.clone()))
                .set_default_capacity_provider_strategy(Some(strategy_to_sdk(strategy)?));
            ecs.call(
                "PutClusterCapacityProviders",
                Category::ClusterModify,
                req.send(),
            )
            .await?;
        }
        Action::Tag(tags) => {
            let arn = arn.ok_or_else(|| Error::Config(format!("cluster {name} has no ARN")))?;
            set_tags(ecs, arn, tags, &[]).await?;
        }
        Action::Untag(keys) => {
            let arn = arn.ok_or_else(|| Error::Config(format!("cluster {name} has no ARN")))?;
            set_tags(ecs, arn, &Default::default(), keys).await?;
        }
    }
    Ok(())
}

/// Changed fields grouped by the ECS action that sets them.
fn group_by_action(changed: &[String]) -> Vec<(&'static str, Vec<String>)> {
    let mut groups: Vec<(&'static str, Vec<String>)> = Vec::new();
    for f in changed {
        let action = if f.starts_with("tags[") {
            "TagResource"
        } else if f.starts_with("capacityProviders") || f.starts_with("defaultCapacityProvider") {
            "PutClusterCapacityProviders"
        } else {
            "UpdateCluster"
        };
        match groups.iter_mut().find(|(a, _)| *a == action) {
            Some((_, fs)) => fs.push(f.clone()),
            None => groups.push((action, vec![f.clone()])),
        }
    }
    groups
}

fn identity(obj: &EcsCluster) -> Result<(String, String, String), Error> {
    let ns = obj.namespace().unwrap_or_default();
    let uid = obj
        .uid()
        .ok_or_else(|| Error::Config(format!("EcsCluster {ns}/{} has no uid", obj.name_any())))?;
    Ok((ns, obj.name_any(), uid))
}

impl Managed for EcsCluster {
    const KIND: &'static str = "EcsCluster";

    /// Services coming and going change what the cluster reports (services, running
    /// tasks): look again then, not only at the next resync.
    fn watch_related(
        controller: kube::runtime::Controller<Self>,
        client: &kube::Client,
        namespace: Option<&str>,
    ) -> kube::runtime::Controller<Self> {
        let services: kube::Api<EcsService> = super::scoped_api(client, namespace);
        controller.watches(
            services,
            kube::runtime::watcher::Config::default(),
            |s: EcsService| {
                let ns = s.namespace();
                s.spec.cluster_ref.map(|r| {
                    let o = kube::runtime::reflector::ObjectRef::<EcsCluster>::new(&r.name);
                    match ns {
                        Some(ns) => o.within(&ns),
                        None => o,
                    }
                })
            },
        )
    }

    async fn apply(&self, ctx: &Context) -> Result<Outcome, Error> {
        let (ns, name, uid) = identity(self)?;
        let ecs_name = self.ecs_name();
        let status = self.status.clone().unwrap_or_default();
        let desired = Desired {
            name: ecs_name.clone(),
            uid: uid.clone(),
            spec: &self.spec,
            ownership_tags: ownership_tags(&ns, &name, &uid),
            previously_managed_tag_keys: status.managed_tag_keys.clone(),
        };
        let managed_keys: Vec<String> = self.spec.tags.keys().cloned().collect();
        let observed = describe_one(&ctx.ecs, &ecs_name).await?;

        let (actions, changed, adopting) = match cluster_plan::plan(&desired, observed.as_ref()) {
            Plan::Refuse(health) => {
                let message = health.message().to_string();
                return Ok(Outcome {
                    // Report nothing about a cluster that is not ours beyond its name.
                    status: status_body(&ecs_name, None, status.managed_tag_keys),
                    health,
                    requeue: None,
                    notes: vec![Note::warning("NotOwned", "Adopt", message)],
                });
            }
            Plan::Sync {
                actions,
                changed,
                adopting,
            } => (actions, changed, adopting),
        };

        let fingerprint = (!actions.is_empty()).then(|| format!("{actions:?}"));
        if let Err(health) = ctx.updates.check(
            &super::key_of(self),
            fingerprint,
            &format!("ECS cluster {ecs_name}"),
            &changed,
        ) {
            let note = Note::warning("UpdateNotApplied", "UpdateCluster", health.message());
            return Ok(Outcome {
                status: status_body(&ecs_name, observed.as_ref(), managed_keys),
                health,
                requeue: None,
                notes: vec![note],
            });
        }
        if actions.is_empty() {
            let obs = observed.as_ref();
            return Ok(Outcome {
                status: status_body(&ecs_name, obs, managed_keys),
                health: obs.map(cluster_plan::health).unwrap_or_else(|| {
                    Health::progressing("Creating", format!("creating ECS cluster {ecs_name}"))
                }),
                requeue: None,
                notes: vec![],
            });
        }

        let arn = observed.as_ref().map(|o| o.arn.clone());
        for action in &actions {
            act(&ctx.ecs, &ecs_name, arn.as_deref(), action).await?;
        }

        let mut notes = Vec::new();
        let fields = changed.join(", ");
        let spec_seen_before = status.observed_generation == self.metadata.generation;
        if matches!(actions.first(), Some(Action::Create { .. })) {
            notes.push(Note::normal(
                "Created",
                "CreateCluster",
                format!("created ECS cluster {ecs_name}"),
            ));
        } else if adopting {
            notes.push(Note::normal(
                "Adopted",
                "TagResource",
                format!("adopted existing ECS cluster {ecs_name}; changed: {fields}"),
            ));
        } else {
            // One Event per ECS action, so `kubectl describe` says which call
            // changed which fields.
            let (reason, verb) = if spec_seen_before {
                ("DriftCorrected", "had drifted from the spec; corrected")
            } else {
                ("Updated", "updated")
            };
            for (action, fields) in group_by_action(&changed) {
                notes.push(Note::normal(
                    reason,
                    action,
                    format!("ECS cluster {ecs_name} {verb}: {}", fields.join(", ")),
                ));
            }
        }

        let after = describe_one(&ctx.ecs, &ecs_name).await?;
        Ok(Outcome {
            status: status_body(&ecs_name, after.as_ref(), managed_keys),
            health: after.as_ref().map(cluster_plan::health).unwrap_or_else(|| {
                Health::progressing("Creating", format!("creating ECS cluster {ecs_name}"))
            }),
            requeue: None,
            notes,
        })
    }

    async fn cleanup(&self, ctx: &Context) -> Result<Vec<Note>, Error> {
        let (_, _, uid) = identity(self)?;
        let ecs_name = self.ecs_name();
        let observed = describe_one(&ctx.ecs, &ecs_name).await?;
        match cluster_plan::plan_cleanup(
            &ecs_name,
            &uid,
            self.spec.deletion_policy,
            observed.as_ref(),
        ) {
            Cleanup::Done { reason } => Ok(vec![Note::normal(
                "Released",
                "Delete",
                format!("ECS cluster {ecs_name} left untouched ({reason})"),
            )]),
            Cleanup::Untag(keys) => {
                let arn = observed.as_ref().map(|o| o.arn.as_str());
                act(&ctx.ecs, &ecs_name, arn, &Action::Untag(keys)).await?;
                Ok(vec![Note::normal(
                    "Orphaned",
                    "UntagResource",
                    format!(
                        "ECS cluster {ecs_name} kept (deletionPolicy: Orphan); ownership tags removed"
                    ),
                )])
            }
            Cleanup::Blocked { reason, message } => {
                // Name what blocks the deletion, so nobody has to go looking.
                let names = crate::ecs::service::list(&ctx.ecs, &ecs_name)
                    .await
                    .unwrap_or_default();
                let mut names: Vec<&str> = names
                    .iter()
                    .map(|a| a.rsplit('/').next().unwrap_or(a))
                    .collect();
                names.sort_unstable();
                let message = if names.is_empty() {
                    message
                } else {
                    let more = names.len().saturating_sub(5);
                    names.truncate(5);
                    let tail = if more > 0 {
                        format!(" and {more} more")
                    } else {
                        String::new()
                    };
                    format!("{message} (services: {}{tail})", names.join(", "))
                };
                Err(Error::DeleteBlocked { reason, message })
            }
            Cleanup::Delete => {
                let res = ctx
                    .ecs
                    .call(
                        "DeleteCluster",
                        Category::ClusterModify,
                        ctx.ecs.client.delete_cluster().cluster(&ecs_name).send(),
                    )
                    .await;
                match res {
                    Ok(_) => Ok(vec![Note::normal(
                        "Deleted",
                        "DeleteCluster",
                        format!("deleted ECS cluster {ecs_name}"),
                    )]),
                    Err(Error::Ecs {
                        code: Some(code),
                        message,
                        ..
                    }) if code.starts_with("ClusterContains") => Err(Error::DeleteBlocked {
                        reason: "ClusterNotEmpty".into(),
                        message: format!("ECS refused to delete cluster {ecs_name}: {message}"),
                    }),
                    Err(Error::Ecs {
                        code: Some(code), ..
                    }) if code == "ClusterNotFoundException" => Ok(vec![]),
                    Err(e) => Err(e),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changed_fields_are_grouped_per_ecs_action() {
        let changed: Vec<String> = [
            "settings.containerInsights",
            "tags[env]",
            "capacityProviders",
            "tags[team]",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(
            group_by_action(&changed),
            vec![
                (
                    "UpdateCluster",
                    vec!["settings.containerInsights".to_string()]
                ),
                (
                    "TagResource",
                    vec!["tags[env]".to_string(), "tags[team]".to_string()]
                ),
                (
                    "PutClusterCapacityProviders",
                    vec!["capacityProviders".to_string()]
                ),
            ]
        );
    }
}
