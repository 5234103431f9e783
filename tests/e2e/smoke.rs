//! Proof that the environment is real: the apiserver serves CRDs built from
//! Rust types (schema validation, watch, server-side-apply status), the ECS
//! endpoint keeps what it is told, and the operator binary connects to both.

use std::time::Duration;

use aws_sdk_ecs::types::{
    ClusterField, ClusterSetting, ClusterSettingName, Compatibility, ContainerDefinition,
    NetworkMode, PortMapping, Tag, TransportProtocol,
};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use kube::runtime::wait::{await_condition, conditions};
use kube::{CustomResource, CustomResourceExt, Resource};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::support::{TestContext, env};

/// A throwaway kind, only to prove the CRD machinery works end to end.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, JsonSchema)]
#[kube(
    group = "smoke.ecs.operator.dev",
    version = "v1",
    kind = "Widget",
    namespaced,
    status = "WidgetStatus"
)]
pub struct WidgetSpec {
    pub size: u32,
    pub color: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, JsonSchema)]
pub struct WidgetStatus {
    pub observed_size: u32,
    pub ready: bool,
}

fn pinned_kubernetes_version() -> String {
    let gomod = include_str!("../../hack/envtest/go.mod");
    gomod
        .lines()
        .find_map(|l| {
            let mut it = l.split_whitespace();
            match (it.next(), it.next(), it.next()) {
                (Some("require"), Some("k8s.io/kubernetes"), Some(v)) => Some(v.to_string()),
                (Some("k8s.io/kubernetes"), Some(v), _) if v.starts_with('v') => {
                    Some(v.to_string())
                }
                _ => None,
            }
        })
        .expect("hack/envtest/go.mod requires k8s.io/kubernetes")
}

#[tokio::test]
async fn apiserver_is_the_pinned_kubernetes_release() {
    let env = env();
    let client = env.kube_client().unwrap();
    let info = client.apiserver_version().await.unwrap();
    assert_eq!(info.major, "1");
    if matches!(env.kube_source, testenv::KubeSource::Started { .. })
        && std::env::var_os(testenv::ENV_ASSETS).is_none()
    {
        assert_eq!(info.git_version, pinned_kubernetes_version());
    }
    // RBAC is on: an unauthenticated identity is refused (not a permissive fake).
    let mut anon = env.kube_config.clone();
    anon.auth_info = Default::default();
    let anon = kube::Client::try_from(anon).unwrap();
    let err = Api::<k8s_openapi::api::core::v1::Namespace>::all(anon)
        .list(&Default::default())
        .await
        .expect_err("anonymous list of namespaces must be refused");
    match err {
        kube::Error::Api(s) => assert!(s.code == 401 || s.code == 403, "{s:?}"),
        other => panic!("expected an API refusal, got {other}"),
    }
}

#[tokio::test]
async fn crd_from_rust_type_validates_watches_and_takes_ssa_status() {
    let ctx = TestContext::new("crd-smoke").await;
    let crds = Api::<CustomResourceDefinition>::all(ctx.kube.clone());
    let crd = Widget::crd();
    let crd_name = crd.metadata.name.clone().unwrap();
    crds.patch(
        &crd_name,
        &PatchParams::apply("ecs-operator-e2e").force(),
        &Patch::Apply(&crd),
    )
    .await
    .unwrap();
    tokio::time::timeout(
        Duration::from_secs(30),
        await_condition(crds, &crd_name, conditions::is_crd_established()),
    )
    .await
    .expect("CRD established within 30s")
    .unwrap();

    // The schema generated from the Rust type is enforced by the apiserver.
    let dynamic = Api::<DynamicObject>::namespaced_with(
        ctx.kube.clone(),
        &ctx.namespace,
        &ApiResource::erase::<Widget>(&()),
    );
    let bad: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "smoke.ecs.operator.dev/v1", "kind": "Widget",
        "metadata": {"name": "bad"}, "spec": {"size": "big"}
    }))
    .unwrap();
    let err = dynamic
        .create(&PostParams::default(), &bad)
        .await
        .expect_err("a string where the schema says integer must be refused");
    match err {
        kube::Error::Api(s) => {
            assert_eq!(s.code, 422, "{s:?}");
            assert!(s.message.contains("spec.size"), "{}", s.message);
        }
        other => panic!("expected 422, got {other}"),
    }

    let widgets = Api::<Widget>::namespaced(ctx.kube.clone(), &ctx.namespace);
    let name = ctx.name("w");
    let created = widgets
        .create(
            &PostParams::default(),
            &Widget::new(
                &name,
                WidgetSpec {
                    size: 3,
                    color: None,
                },
            ),
        )
        .await
        .unwrap();
    assert!(created.status.is_none());
    assert_eq!(created.meta().generation, Some(1));

    // A watch sees the status written through the status subresource with SSA.
    let watch = tokio::spawn({
        let (widgets, name) = (widgets.clone(), name.clone());
        async move {
            await_condition(widgets, &name, |w: Option<&Widget>| {
                w.and_then(|w| w.status.as_ref()).is_some_and(|s| s.ready)
            })
            .await
        }
    });
    let status = json!({
        "apiVersion": "smoke.ecs.operator.dev/v1",
        "kind": "Widget",
        "status": {"observed_size": 3, "ready": true}
    });
    widgets
        .patch_status(
            &name,
            &PatchParams::apply(ecs_operator::FIELD_MANAGER),
            &Patch::Apply(&status),
        )
        .await
        .unwrap();
    let seen = tokio::time::timeout(Duration::from_secs(30), watch)
        .await
        .expect("watch saw the status within 30s")
        .unwrap()
        .unwrap()
        .expect("object exists");
    assert_eq!(seen.status.as_ref().map(|s| s.observed_size), Some(3));
    // Status writes do not bump the generation (spec untouched).
    assert_eq!(seen.meta().generation, Some(1));
    let managers: Vec<(String, Option<String>)> = seen
        .meta()
        .managed_fields
        .iter()
        .flatten()
        .map(|m| (m.manager.clone().unwrap_or_default(), m.subresource.clone()))
        .collect();
    assert!(
        managers.contains(&(
            ecs_operator::FIELD_MANAGER.to_string(),
            Some("status".to_string())
        )),
        "{managers:?}"
    );
}

#[tokio::test]
async fn ecs_endpoint_keeps_clusters_and_task_definitions() {
    let ctx = TestContext::new("ecs-smoke").await;
    let ecs = &ctx.ecs;
    let cluster = ctx.name("cluster");
    let owner = format!("{}/{}", ctx.namespace, cluster);

    ecs.create_cluster()
        .cluster_name(&cluster)
        .settings(
            ClusterSetting::builder()
                .name(ClusterSettingName::ContainerInsights)
                .value("enabled")
                .build(),
        )
        .tags(
            Tag::builder()
                .key("ecs.operator.dev/owner")
                .value(&owner)
                .build(),
        )
        .send()
        .await
        .unwrap();
    let described = ecs
        .describe_clusters()
        .clusters(&cluster)
        .include(ClusterField::Tags)
        .include(ClusterField::Settings)
        .send()
        .await
        .unwrap();
    let c = &described.clusters()[0];
    assert_eq!(c.cluster_name(), Some(cluster.as_str()));
    assert_eq!(c.status(), Some("ACTIVE"));
    assert!(
        c.cluster_arn()
            .is_some_and(|a| a.contains(testenv::ACCOUNT_ID) && a.ends_with(&cluster)),
        "{:?}",
        c.cluster_arn()
    );
    assert!(
        c.tags()
            .iter()
            .any(|t| t.key() == Some("ecs.operator.dev/owner") && t.value() == Some(&owner)),
        "{:?}",
        c.tags()
    );

    let family = ctx.name("web");
    let register = || {
        ecs.register_task_definition()
            .family(&family)
            .requires_compatibilities(Compatibility::Fargate)
            .network_mode(NetworkMode::Awsvpc)
            .cpu("256")
            .memory("512")
            .container_definitions(
                ContainerDefinition::builder()
                    .name("web")
                    .image("public.ecr.aws/nginx/nginx:1.27")
                    .essential(true)
                    .port_mappings(
                        PortMapping::builder()
                            .container_port(80)
                            .protocol(TransportProtocol::Tcp)
                            .build(),
                    )
                    .build(),
            )
            .send()
    };
    let first = register().await.unwrap();
    let td = first.task_definition().unwrap();
    assert_eq!(td.revision(), 1);
    let read = ecs
        .describe_task_definition()
        .task_definition(format!("{family}:1"))
        .send()
        .await
        .unwrap();
    let td = read.task_definition().unwrap();
    assert_eq!(td.cpu(), Some("256"));
    assert_eq!(
        td.container_definitions()[0].image(),
        Some("public.ecr.aws/nginx/nginx:1.27")
    );
    assert_eq!(
        td.container_definitions()[0].port_mappings()[0].container_port(),
        Some(80)
    );
    // The ECS rule the planner is built around: identical input, new revision.
    let second = register().await.unwrap();
    assert_eq!(second.task_definition().unwrap().revision(), 2);

    for rev in [1, 2] {
        ecs.deregister_task_definition()
            .task_definition(format!("{family}:{rev}"))
            .send()
            .await
            .unwrap();
    }
    ecs.delete_cluster().cluster(&cluster).send().await.unwrap();
    let gone = ecs
        .describe_clusters()
        .clusters(&cluster)
        .send()
        .await
        .unwrap();
    assert!(
        gone.clusters()
            .iter()
            .all(|c| c.status() == Some("INACTIVE")),
        "{:?}",
        gone.clusters()
    );
}

fn operator_command(kubeconfig: &std::path::Path, endpoint: &str) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_ecs-operator"));
    cmd.args(["run", "--metrics-addr", "127.0.0.1:0"])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", std::env::temp_dir())
        .envs(testenv::operator_env(
            kubeconfig,
            endpoint,
            &env().aas_endpoint,
        ))
        .env("RUST_LOG", "info")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    cmd
}

#[tokio::test]
async fn operator_binary_connects_to_both_and_stops_on_sigterm() {
    let env = env();
    let mut child = operator_command(&env.kubeconfig, &env.ecs_endpoint)
        .spawn()
        .expect("start ecs-operator");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut log = Vec::new();
    let connected = tokio::time::timeout(Duration::from_secs(60), async {
        while let Ok(Some(line)) = lines.next_line().await {
            log.push(line.clone());
            if line.contains("connected to ECS") {
                return true;
            }
        }
        false
    })
    .await;
    assert!(
        matches!(connected, Ok(true)),
        "operator did not connect; log:\n{}",
        log.join("\n")
    );
    assert!(
        log.iter()
            .any(|l| l.contains("connected to Kubernetes") && l.contains(&env.server_version)),
        "{log:?}"
    );
    let pid = child.id().expect("running").to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("exits within 30s of SIGTERM")
        .unwrap();
    assert!(status.success(), "{status}");
}

#[tokio::test]
async fn operator_binary_names_an_unreachable_ecs_endpoint() {
    let env = env();
    // A port nothing listens on: bind, read the port, release.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = tokio::time::timeout(
        Duration::from_secs(120),
        operator_command(&env.kubeconfig, &format!("http://127.0.0.1:{port}")).output(),
    )
    .await
    .expect("gives up within 120s")
    .unwrap();
    assert!(!out.status.success());
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("ECS ListClusters failed"), "{text}");
}
