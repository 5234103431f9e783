//! Task-definition calls and the spec -> SDK conversion for RegisterTaskDefinition.

use std::collections::BTreeMap;

use aws_sdk_ecs::types as t;

use super::cluster::{tags_from_sdk, tags_to_sdk};
use super::{Category, EcsApi};
use crate::api::task_definition as api;
use crate::error::Error;

fn build_err(what: &str, e: impl std::fmt::Display) -> Error {
    Error::InvalidSpec(format!("{what}: {e}"))
}

fn kv(items: &[api::KeyValue]) -> Vec<t::KeyValuePair> {
    items
        .iter()
        .map(|k| {
            t::KeyValuePair::builder()
                .name(&k.name)
                .value(&k.value)
                .build()
        })
        .collect()
}

fn secrets(items: &[api::Secret]) -> Result<Vec<t::Secret>, Error> {
    items
        .iter()
        .map(|s| {
            t::Secret::builder()
                .name(&s.name)
                .value_from(&s.value_from)
                .build()
                .map_err(|e| build_err("secret", e))
        })
        .collect()
}

fn container(c: &api::ContainerDefinition) -> Result<t::ContainerDefinition, Error> {
    let mut b = t::ContainerDefinition::builder()
        .name(&c.name)
        .image(&c.image)
        .set_cpu(c.cpu)
        .set_memory(c.memory)
        .set_memory_reservation(c.memory_reservation)
        .set_essential(c.essential)
        .set_command((!c.command.is_empty()).then(|| c.command.clone()))
        .set_entry_point((!c.entry_point.is_empty()).then(|| c.entry_point.clone()))
        .set_working_directory(c.working_directory.clone())
        .set_environment((!c.environment.is_empty()).then(|| kv(&c.environment)))
        .set_user(c.user.clone())
        .set_readonly_root_filesystem(c.readonly_root_filesystem)
        .set_stop_timeout(c.stop_timeout)
        .set_start_timeout(c.start_timeout);
    if !c.docker_labels.is_empty() {
        b = b.set_docker_labels(Some(c.docker_labels.clone().into_iter().collect()));
    }
    if !c.secrets.is_empty() {
        b = b.set_secrets(Some(secrets(&c.secrets)?));
    }
    for f in &c.environment_files {
        b = b.environment_files(
            t::EnvironmentFile::builder()
                .value(&f.value)
                .r#type(t::EnvironmentFileType::from(f.type_.as_str()))
                .build()
                .map_err(|e| build_err("environmentFiles", e))?,
        );
    }
    for p in &c.port_mappings {
        b = b.port_mappings(
            t::PortMapping::builder()
                .set_container_port(p.container_port)
                .set_host_port(p.host_port)
                .set_protocol(p.protocol.map(|p| match p {
                    api::Protocol::Tcp => t::TransportProtocol::Tcp,
                    api::Protocol::Udp => t::TransportProtocol::Udp,
                }))
                .set_name(p.name.clone())
                .set_app_protocol(p.app_protocol.map(|a| match a {
                    api::AppProtocol::Http => t::ApplicationProtocol::Http,
                    api::AppProtocol::Http2 => t::ApplicationProtocol::Http2,
                    api::AppProtocol::Grpc => t::ApplicationProtocol::Grpc,
                }))
                .set_container_port_range(p.container_port_range.clone())
                .build(),
        );
    }
    if let Some(h) = &c.health_check {
        b = b.health_check(
            t::HealthCheck::builder()
                .set_command(Some(h.command.clone()))
                .set_interval(h.interval)
                .set_timeout(h.timeout)
                .set_retries(h.retries)
                .set_start_period(h.start_period)
                .build()
                .map_err(|e| build_err("healthCheck", e))?,
        );
    }
    if let Some(l) = &c.log_configuration {
        b = b.log_configuration(
            t::LogConfiguration::builder()
                .log_driver(t::LogDriver::from(l.log_driver.as_str()))
                .set_options(
                    (!l.options.is_empty()).then(|| l.options.clone().into_iter().collect()),
                )
                .set_secret_options(
                    (!l.secret_options.is_empty())
                        .then(|| secrets(&l.secret_options))
                        .transpose()?,
                )
                .build()
                .map_err(|e| build_err("logConfiguration", e))?,
        );
    }
    for m in &c.mount_points {
        b = b.mount_points(
            t::MountPoint::builder()
                .source_volume(&m.source_volume)
                .container_path(&m.container_path)
                .set_read_only(m.read_only)
                .build(),
        );
    }
    for v in &c.volumes_from {
        b = b.volumes_from(
            t::VolumeFrom::builder()
                .source_container(&v.source_container)
                .set_read_only(v.read_only)
                .build(),
        );
    }
    for d in &c.depends_on {
        let cond = match d.condition {
            api::DependencyCondition::Start => t::ContainerCondition::Start,
            api::DependencyCondition::Complete => t::ContainerCondition::Complete,
            api::DependencyCondition::Success => t::ContainerCondition::Success,
            api::DependencyCondition::Healthy => t::ContainerCondition::Healthy,
        };
        b = b.depends_on(
            t::ContainerDependency::builder()
                .container_name(&d.container_name)
                .condition(cond)
                .build()
                .map_err(|e| build_err("dependsOn", e))?,
        );
    }
    for u in &c.ulimits {
        b = b.ulimits(
            t::Ulimit::builder()
                .name(t::UlimitName::from(u.name.as_str()))
                .soft_limit(u.soft_limit)
                .hard_limit(u.hard_limit)
                .build()
                .map_err(|e| build_err("ulimits", e))?,
        );
    }
    if let Some(lp) = &c.linux_parameters {
        let mut l = t::LinuxParameters::builder().set_init_process_enabled(lp.init_process_enabled);
        if let Some(caps) = &lp.capabilities {
            l = l.capabilities(
                t::KernelCapabilities::builder()
                    .set_add((!caps.add.is_empty()).then(|| caps.add.clone()))
                    .set_drop((!caps.drop.is_empty()).then(|| caps.drop.clone()))
                    .build(),
            );
        }
        b = b.linux_parameters(l.build());
    }
    if let Some(f) = &c.firelens_configuration {
        b = b.firelens_configuration(
            t::FirelensConfiguration::builder()
                .r#type(t::FirelensConfigurationType::from(f.type_.as_str()))
                .set_options(
                    (!f.options.is_empty()).then(|| f.options.clone().into_iter().collect()),
                )
                .build()
                .map_err(|e| build_err("firelensConfiguration", e))?,
        );
    }
    Ok(b.build())
}

/// Registers one revision of `family` from `spec`, tagged with `tags`.
pub async fn register(
    ecs: &EcsApi,
    family: &str,
    spec: &api::EcsTaskDefinitionSpec,
    tags: &BTreeMap<String, String>,
) -> Result<(i32, String), Error> {
    let mut req = ecs
        .client
        .register_task_definition()
        .family(family)
        .set_cpu(spec.cpu.clone())
        .set_memory(spec.memory.clone())
        .set_execution_role_arn(spec.execution_role_arn.clone())
        .set_task_role_arn(spec.task_role_arn.clone())
        .set_tags(Some(tags_to_sdk(tags)));
    if let Some(m) = spec.network_mode {
        req = req.network_mode(match m {
            api::NetworkMode::Awsvpc => t::NetworkMode::Awsvpc,
            api::NetworkMode::Bridge => t::NetworkMode::Bridge,
            api::NetworkMode::Host => t::NetworkMode::Host,
            api::NetworkMode::None => t::NetworkMode::None,
        });
    }
    for c in spec.requires_compatibilities.iter().flatten() {
        req = req.requires_compatibilities(match c {
            api::Compatibility::Ec2 => t::Compatibility::Ec2,
            api::Compatibility::Fargate => t::Compatibility::Fargate,
            api::Compatibility::External => t::Compatibility::External,
            api::Compatibility::ManagedInstances => t::Compatibility::from("MANAGED_INSTANCES"),
        });
    }
    for c in &spec.container_definitions {
        req = req.container_definitions(container(c)?);
    }
    for v in &spec.volumes {
        let mut vb = t::Volume::builder().name(&v.name);
        if let Some(h) = &v.host {
            vb = vb.host(
                t::HostVolumeProperties::builder()
                    .set_source_path(h.source_path.clone())
                    .build(),
            );
        }
        if let Some(e) = &v.efs_volume_configuration {
            let mut eb = t::EfsVolumeConfiguration::builder()
                .file_system_id(&e.file_system_id)
                .set_root_directory(e.root_directory.clone())
                .set_transit_encryption(
                    e.transit_encryption
                        .as_deref()
                        .map(t::EfsTransitEncryption::from),
                )
                .set_transit_encryption_port(e.transit_encryption_port);
            if let Some(a) = &e.authorization_config {
                eb = eb.authorization_config(
                    t::EfsAuthorizationConfig::builder()
                        .set_access_point_id(a.access_point_id.clone())
                        .set_iam(a.iam.as_deref().map(t::EfsAuthorizationConfigIam::from))
                        .build(),
                );
            }
            vb = vb.efs_volume_configuration(
                eb.build()
                    .map_err(|e| build_err("efsVolumeConfiguration", e))?,
            );
        }
        req = req.volumes(vb.build());
    }
    for p in &spec.placement_constraints {
        req = req.placement_constraints(
            t::TaskDefinitionPlacementConstraint::builder()
                .r#type(t::TaskDefinitionPlacementConstraintType::from(
                    p.type_.as_str(),
                ))
                .set_expression(p.expression.clone())
                .build(),
        );
    }
    if let Some(r) = &spec.runtime_platform {
        req = req.runtime_platform(
            t::RuntimePlatform::builder()
                .set_cpu_architecture(r.cpu_architecture.as_deref().map(t::CpuArchitecture::from))
                .set_operating_system_family(
                    r.operating_system_family.as_deref().map(t::OsFamily::from),
                )
                .build(),
        );
    }
    if let Some(e) = &spec.ephemeral_storage {
        req = req.ephemeral_storage(
            t::EphemeralStorage::builder()
                .size_in_gib(e.size_in_gi_b)
                .build(),
        );
    }
    if let Some(p) = spec.pid_mode {
        req = req.pid_mode(match p {
            api::PidMode::Host => t::PidMode::Host,
            api::PidMode::Task => t::PidMode::Task,
        });
    }
    if let Some(i) = spec.ipc_mode {
        req = req.ipc_mode(match i {
            api::IpcMode::Host => t::IpcMode::Host,
            api::IpcMode::Task => t::IpcMode::Task,
            api::IpcMode::None => t::IpcMode::None,
        });
    }
    let out = ecs
        .call(
            "RegisterTaskDefinition",
            Category::TaskDefinitionModify,
            req.send(),
        )
        .await?;
    let td = out.task_definition().ok_or_else(|| {
        build_err(
            "RegisterTaskDefinition",
            "response without a task definition",
        )
    })?;
    Ok((
        td.revision(),
        td.task_definition_arn().unwrap_or_default().to_string(),
    ))
}

/// ARNs of the family's revisions with `status` (ACTIVE/INACTIVE), newest first, all pages.
pub async fn list_family(
    ecs: &EcsApi,
    family: &str,
    status: t::TaskDefinitionStatus,
) -> Result<Vec<String>, Error> {
    let mut arns = Vec::new();
    let mut token = None;
    loop {
        let out = ecs
            .call(
                "ListTaskDefinitions",
                Category::Read,
                ecs.client
                    .list_task_definitions()
                    .family_prefix(family)
                    .status(status.clone())
                    .sort(t::SortOrder::Desc)
                    .set_next_token(token.take())
                    .send(),
            )
            .await?;
        // familyPrefix matches prefixes: keep this family only.
        arns.extend(
            out.task_definition_arns()
                .iter()
                .filter(|a| arn_family(a) == Some(family))
                .cloned(),
        );
        match out.next_token() {
            Some(t) if !t.is_empty() => token = Some(t.to_string()),
            _ => break,
        }
    }
    Ok(arns)
}

/// `arn:...:task-definition/web:3` -> `web`.
pub fn arn_family(arn: &str) -> Option<&str> {
    arn.rsplit_once('/')?.1.rsplit_once(':').map(|(f, _)| f)
}

/// `arn:...:task-definition/web:3` -> 3.
pub fn arn_revision(arn: &str) -> Option<i32> {
    arn.rsplit_once(':')?.1.parse().ok()
}

/// One revision with its tags (None if ECS does not know it).
pub async fn describe(
    ecs: &EcsApi,
    arn: &str,
) -> Result<Option<(String, BTreeMap<String, String>)>, Error> {
    let res = ecs
        .call(
            "DescribeTaskDefinition",
            Category::Read,
            ecs.client
                .describe_task_definition()
                .task_definition(arn)
                .include(t::TaskDefinitionField::Tags)
                .send(),
        )
        .await;
    match res {
        Ok(out) => Ok(out.task_definition().map(|td| {
            (
                td.status()
                    .map(|s| s.as_str().to_string())
                    .unwrap_or_default(),
                tags_from_sdk(out.tags()),
            )
        })),
        Err(e) if super::is_not_found(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

pub async fn deregister(ecs: &EcsApi, arn: &str) -> Result<(), Error> {
    ecs.call(
        "DeregisterTaskDefinition",
        Category::TaskDefinitionModify,
        ecs.client
            .deregister_task_definition()
            .task_definition(arn)
            .send(),
    )
    .await?;
    Ok(())
}

/// DeleteTaskDefinitions, 10 per call (the ECS maximum); only INACTIVE revisions.
/// DeleteTaskDefinitions, 10 per call. ECS deletes only INACTIVE revisions and
/// answers per revision: the ones it refused come back as (ARN, reason) so they are
/// reported and tried again, never dropped from the history.
pub async fn delete(ecs: &EcsApi, arns: &[String]) -> Result<Vec<(String, String)>, Error> {
    let mut failures = Vec::new();
    for chunk in arns.chunks(10) {
        let out = ecs
            .call(
                "DeleteTaskDefinitions",
                Category::TaskDefinitionModify,
                ecs.client
                    .delete_task_definitions()
                    .set_task_definitions(Some(chunk.to_vec()))
                    .send(),
            )
            .await?;
        failures.extend(out.failures().iter().map(|f| {
            let why = [f.reason(), f.detail()]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(": ");
            (f.arn().unwrap_or_default().to_string(), why)
        }));
    }
    Ok(failures)
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::Arc;

    use aws_sdk_ecs::Client;
    use aws_sdk_ecs::operation::list_task_definitions::ListTaskDefinitionsOutput;
    use aws_smithy_mocks::{RuleMode, mock, mock_client};

    use crate::ecs::Limiter;
    use crate::error::ErrorClass;
    use crate::telemetry::Metrics;

    fn arn(f: &str, r: i32) -> String {
        format!("arn:aws:ecs:us-east-1:0:task-definition/{f}:{r}")
    }

    // ministack never paginates; real ECS does (100 per page).
    #[tokio::test]
    async fn list_family_follows_every_page_and_drops_other_families() {
        let page1 = mock!(Client::list_task_definitions)
            .match_requests(|r| r.next_token().is_none() && r.family_prefix() == Some("web"))
            .then_output(|| {
                ListTaskDefinitionsOutput::builder()
                    .task_definition_arns(arn("web", 3))
                    .task_definition_arns(arn("web-worker", 9))
                    .next_token("page-2")
                    .build()
            });
        let page2 = mock!(Client::list_task_definitions)
            .match_requests(|r| r.next_token() == Some("page-2"))
            .then_output(|| {
                ListTaskDefinitionsOutput::builder()
                    .task_definition_arns(arn("web", 2))
                    .build()
            });
        let client = mock_client!(aws_sdk_ecs, RuleMode::Sequential, [&page1, &page2]);
        let metrics = Arc::new(Metrics::default());
        let ecs = EcsApi::new(client, Limiter::default(), metrics.clone());
        let arns = list_family(&ecs, "web", t::TaskDefinitionStatus::Active)
            .await
            .unwrap();
        assert_eq!(arns, vec![arn("web", 3), arn("web", 2)]);
        assert_eq!(page1.num_calls(), 1);
        assert_eq!(page2.num_calls(), 1);
        assert!(metrics.encode().contains(
            r#"ecs_operator_aws_requests_total{operation="ListTaskDefinitions",outcome="success"} 2"#
        ));
    }

    // ministack never throttles; ThrottlingException is not in ECS's model.
    #[tokio::test]
    async fn throttling_is_classified_retryable_and_counted_by_code() {
        let throttled = mock!(Client::deregister_task_definition)
            .sequence()
            .http_status(
                400,
                Some(r#"{"__type":"ThrottlingException","message":"Rate exceeded"}"#.into()),
            )
            .repeatedly()
            .build();
        let client = mock_client!(aws_sdk_ecs, RuleMode::MatchAny, [&throttled]);
        let metrics = Arc::new(Metrics::default());
        let ecs = EcsApi::new(client, Limiter::default(), metrics.clone());
        let err = deregister(&ecs, &arn("web", 1)).await.unwrap_err();
        match &err {
            Error::Ecs { code, message, .. } => {
                assert_eq!(code.as_deref(), Some("ThrottlingException"));
                assert_eq!(message, "Rate exceeded");
            }
            e => panic!("{e:?}"),
        }
        assert_eq!(err.class(), ErrorClass::Retryable);
        assert_eq!(err.reason(), "Throttled");
        assert!(
            metrics
                .encode()
                .contains(r#"operation="DeregisterTaskDefinition",outcome="ThrottlingException""#)
        );
    }

    #[test]
    fn arns_split_into_family_and_revision() {
        let a = "arn:aws:ecs:us-east-1:000000000000:task-definition/web-app:12";
        assert_eq!(arn_family(a), Some("web-app"));
        assert_eq!(arn_revision(a), Some(12));
        assert_eq!(arn_family("nonsense"), None);
    }
}
