//! Task-definition calls and the spec -> SDK conversion for RegisterTaskDefinition.

use std::collections::BTreeMap;

use aws_sdk_ecs::types as t;

use super::{Category, EcsApi};
use super::{tags_from_sdk, tags_to_sdk};
use crate::api::task_definition as api;
use crate::error::Error;

/// `family:revision` from a task definition ARN (or the input).
pub fn td_short(td: &str) -> &str {
    td.rsplit_once("task-definition/")
        .map(|(_, s)| s)
        .unwrap_or(td)
}

/// True if `observed` (an ARN from ECS) is the task definition `desired` names
/// (an ARN or `family:revision`).
pub fn same_task_definition(desired: &str, observed: &str) -> bool {
    if desired.starts_with("arn:") {
        desired == observed
    } else {
        observed == desired || observed.ends_with(&format!("task-definition/{desired}"))
    }
}

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

fn secret(s: &api::Secret) -> Result<t::Secret, Error> {
    t::Secret::builder()
        .name(&s.name)
        .value_from(&s.value_from)
        .build()
        .map_err(|e| build_err("secret", e))
}

/// `items` converted one by one; None when there are none (the field is left out
/// of the request, as ECS reports it).
fn each<A, B>(items: &[A], f: impl Fn(&A) -> Result<B, Error>) -> Result<Option<Vec<B>>, Error> {
    if items.is_empty() {
        return Ok(None);
    }
    items.iter().map(f).collect::<Result<Vec<_>, _>>().map(Some)
}

fn non_empty_map(
    m: &BTreeMap<String, String>,
) -> Option<std::collections::HashMap<String, String>> {
    (!m.is_empty()).then(|| m.clone().into_iter().collect())
}

fn environment_file(f: &api::EnvironmentFile) -> Result<t::EnvironmentFile, Error> {
    t::EnvironmentFile::builder()
        .value(&f.value)
        .r#type(t::EnvironmentFileType::from(f.type_.as_str()))
        .build()
        .map_err(|e| build_err("environmentFiles", e))
}

fn port_mapping(p: &api::PortMapping) -> Result<t::PortMapping, Error> {
    Ok(t::PortMapping::builder()
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
        .build())
}

fn health_check(h: &api::HealthCheck) -> Result<t::HealthCheck, Error> {
    t::HealthCheck::builder()
        .set_command(Some(h.command.clone()))
        .set_interval(h.interval)
        .set_timeout(h.timeout)
        .set_retries(h.retries)
        .set_start_period(h.start_period)
        .build()
        .map_err(|e| build_err("healthCheck", e))
}

fn log_configuration(l: &api::LogConfiguration) -> Result<t::LogConfiguration, Error> {
    t::LogConfiguration::builder()
        .log_driver(t::LogDriver::from(l.log_driver.as_str()))
        .set_options(non_empty_map(&l.options))
        .set_secret_options(each(&l.secret_options, secret)?)
        .build()
        .map_err(|e| build_err("logConfiguration", e))
}

fn mount_point(m: &api::MountPoint) -> Result<t::MountPoint, Error> {
    Ok(t::MountPoint::builder()
        .source_volume(&m.source_volume)
        .container_path(&m.container_path)
        .set_read_only(m.read_only)
        .build())
}

fn volume_from(v: &api::VolumeFrom) -> Result<t::VolumeFrom, Error> {
    Ok(t::VolumeFrom::builder()
        .source_container(&v.source_container)
        .set_read_only(v.read_only)
        .build())
}

fn dependency(d: &api::ContainerDependency) -> Result<t::ContainerDependency, Error> {
    let condition = match d.condition {
        api::DependencyCondition::Start => t::ContainerCondition::Start,
        api::DependencyCondition::Complete => t::ContainerCondition::Complete,
        api::DependencyCondition::Success => t::ContainerCondition::Success,
        api::DependencyCondition::Healthy => t::ContainerCondition::Healthy,
    };
    t::ContainerDependency::builder()
        .container_name(&d.container_name)
        .condition(condition)
        .build()
        .map_err(|e| build_err("dependsOn", e))
}

fn ulimit(u: &api::Ulimit) -> Result<t::Ulimit, Error> {
    t::Ulimit::builder()
        .name(t::UlimitName::from(u.name.as_str()))
        .soft_limit(u.soft_limit)
        .hard_limit(u.hard_limit)
        .build()
        .map_err(|e| build_err("ulimits", e))
}

fn linux_parameters(lp: &api::LinuxParameters) -> t::LinuxParameters {
    let capabilities = lp.capabilities.as_ref().map(|caps| {
        t::KernelCapabilities::builder()
            .set_add((!caps.add.is_empty()).then(|| caps.add.clone()))
            .set_drop((!caps.drop.is_empty()).then(|| caps.drop.clone()))
            .build()
    });
    t::LinuxParameters::builder()
        .set_init_process_enabled(lp.init_process_enabled)
        .set_capabilities(capabilities)
        .build()
}

fn firelens(f: &api::FirelensConfiguration) -> Result<t::FirelensConfiguration, Error> {
    t::FirelensConfiguration::builder()
        .r#type(t::FirelensConfigurationType::from(f.type_.as_str()))
        .set_options(non_empty_map(&f.options))
        .build()
        .map_err(|e| build_err("firelensConfiguration", e))
}

fn container(c: &api::ContainerDefinition) -> Result<t::ContainerDefinition, Error> {
    let non_empty = |v: &Vec<String>| (!v.is_empty()).then(|| v.clone());
    Ok(t::ContainerDefinition::builder()
        .name(&c.name)
        .image(&c.image)
        .set_cpu(c.cpu)
        .set_memory(c.memory)
        .set_memory_reservation(c.memory_reservation)
        .set_essential(c.essential)
        .set_command(non_empty(&c.command))
        .set_entry_point(non_empty(&c.entry_point))
        .set_working_directory(c.working_directory.clone())
        .set_environment((!c.environment.is_empty()).then(|| kv(&c.environment)))
        .set_user(c.user.clone())
        .set_readonly_root_filesystem(c.readonly_root_filesystem)
        .set_stop_timeout(c.stop_timeout)
        .set_start_timeout(c.start_timeout)
        .set_docker_labels(non_empty_map(&c.docker_labels))
        .set_secrets(each(&c.secrets, secret)?)
        .set_environment_files(each(&c.environment_files, environment_file)?)
        .set_port_mappings(each(&c.port_mappings, port_mapping)?)
        .set_health_check(c.health_check.as_ref().map(health_check).transpose()?)
        .set_log_configuration(
            c.log_configuration
                .as_ref()
                .map(log_configuration)
                .transpose()?,
        )
        .set_mount_points(each(&c.mount_points, mount_point)?)
        .set_volumes_from(each(&c.volumes_from, volume_from)?)
        .set_depends_on(each(&c.depends_on, dependency)?)
        .set_ulimits(each(&c.ulimits, ulimit)?)
        .set_linux_parameters(c.linux_parameters.as_ref().map(linux_parameters))
        .set_firelens_configuration(
            c.firelens_configuration
                .as_ref()
                .map(firelens)
                .transpose()?,
        )
        .build())
}

fn efs_volume(e: &api::EfsVolumeConfiguration) -> Result<t::EfsVolumeConfiguration, Error> {
    let authorization = e.authorization_config.as_ref().map(|a| {
        t::EfsAuthorizationConfig::builder()
            .set_access_point_id(a.access_point_id.clone())
            .set_iam(a.iam.as_deref().map(t::EfsAuthorizationConfigIam::from))
            .build()
    });
    t::EfsVolumeConfiguration::builder()
        .file_system_id(&e.file_system_id)
        .set_root_directory(e.root_directory.clone())
        .set_transit_encryption(
            e.transit_encryption
                .as_deref()
                .map(t::EfsTransitEncryption::from),
        )
        .set_transit_encryption_port(e.transit_encryption_port)
        .set_authorization_config(authorization)
        .build()
        .map_err(|e| build_err("efsVolumeConfiguration", e))
}

fn volume(v: &api::Volume) -> Result<t::Volume, Error> {
    let host = v.host.as_ref().map(|h| {
        t::HostVolumeProperties::builder()
            .set_source_path(h.source_path.clone())
            .build()
    });
    Ok(t::Volume::builder()
        .name(&v.name)
        .set_host(host)
        .set_efs_volume_configuration(
            v.efs_volume_configuration
                .as_ref()
                .map(efs_volume)
                .transpose()?,
        )
        .build())
}

fn placement_constraint(
    p: &api::PlacementConstraint,
) -> Result<t::TaskDefinitionPlacementConstraint, Error> {
    Ok(t::TaskDefinitionPlacementConstraint::builder()
        .r#type(t::TaskDefinitionPlacementConstraintType::from(
            p.type_.as_str(),
        ))
        .set_expression(p.expression.clone())
        .build())
}

fn compatibility(c: &api::Compatibility) -> Result<t::Compatibility, Error> {
    Ok(match c {
        api::Compatibility::Ec2 => t::Compatibility::Ec2,
        api::Compatibility::Fargate => t::Compatibility::Fargate,
        api::Compatibility::External => t::Compatibility::External,
        api::Compatibility::ManagedInstances => t::Compatibility::from("MANAGED_INSTANCES"),
    })
}

fn network_mode(m: api::NetworkMode) -> t::NetworkMode {
    match m {
        api::NetworkMode::Awsvpc => t::NetworkMode::Awsvpc,
        api::NetworkMode::Bridge => t::NetworkMode::Bridge,
        api::NetworkMode::Host => t::NetworkMode::Host,
        api::NetworkMode::None => t::NetworkMode::None,
    }
}

fn runtime_platform(r: &api::RuntimePlatform) -> t::RuntimePlatform {
    t::RuntimePlatform::builder()
        .set_cpu_architecture(r.cpu_architecture.as_deref().map(t::CpuArchitecture::from))
        .set_operating_system_family(r.operating_system_family.as_deref().map(t::OsFamily::from))
        .build()
}

/// Registers one revision of `family` from `spec`, tagged with `tags`.
pub async fn register(
    ecs: &EcsApi,
    family: &str,
    spec: &api::EcsTaskDefinitionSpec,
    tags: &BTreeMap<String, String>,
) -> Result<(i32, String), Error> {
    let compatibilities = spec.requires_compatibilities.as_deref().unwrap_or_default();
    let ephemeral = spec.ephemeral_storage.as_ref().map(|e| {
        t::EphemeralStorage::builder()
            .size_in_gib(e.size_in_gi_b)
            .build()
    });
    let req = ecs
        .client
        .register_task_definition()
        .family(family)
        .set_cpu(spec.cpu.clone())
        .set_memory(spec.memory.clone())
        .set_execution_role_arn(spec.execution_role_arn.clone())
        .set_task_role_arn(spec.task_role_arn.clone())
        .set_tags(Some(tags_to_sdk(tags)))
        .set_network_mode(spec.network_mode.map(network_mode))
        .set_requires_compatibilities(each(compatibilities, compatibility)?)
        .set_container_definitions(each(&spec.container_definitions, container)?)
        .set_volumes(each(&spec.volumes, volume)?)
        .set_placement_constraints(each(&spec.placement_constraints, placement_constraint)?)
        .set_runtime_platform(spec.runtime_platform.as_ref().map(runtime_platform))
        .set_ephemeral_storage(ephemeral)
        .set_pid_mode(spec.pid_mode.map(|p| match p {
            api::PidMode::Host => t::PidMode::Host,
            api::PidMode::Task => t::PidMode::Task,
        }))
        .set_ipc_mode(spec.ipc_mode.map(|i| match i {
            api::IpcMode::Host => t::IpcMode::Host,
            api::IpcMode::Task => t::IpcMode::Task,
            api::IpcMode::None => t::IpcMode::None,
        }));
    let out = ecs
        .call(
            "RegisterTaskDefinition",
            Category::TaskDefinitionModify,
            // Not retried by the SDK: RegisterTaskDefinition has no client token, so
            // resending after a lost answer registers a second revision. The
            // reconcile's retry first looks for the revision the lost call made
            // (see `reconcile::task_definition::register`).
            req.customize()
                .config_override(
                    aws_sdk_ecs::config::Builder::default()
                        .retry_config(aws_sdk_ecs::config::retry::RetryConfig::disabled()),
                )
                .send(),
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
            r#"ecs_operator_aws_requests_total{kind="operator",operation="ListTaskDefinitions",outcome="success"} 2"#
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
