//! The shipped manifests on the real apiserver: `config/` builds with kustomize and is
//! accepted by a server-side dry run, and the operator reconciles the samples with
//! nothing but the RBAC of `config/rbac`, as its ServiceAccount (TokenRequest).

use std::path::{Path, PathBuf};

use ecs_operator::api::cluster::EcsCluster;
use ecs_operator::api::service::EcsService;
use kube::api::Api;

use crate::support::{TestContext, env, eventually};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

#[tokio::test]
async fn kustomize_default_builds_and_the_server_accepts_it() {
    let ctx = TestContext::new("deploy-kustomize").await;
    crate::support::install_crds(&ctx.kube).await;
    let dir = repo().join("config/default");
    let (ok, built) = ctx
        .kubectl(&["kustomize", dir.to_str().unwrap()], None)
        .await;
    assert!(ok, "{built}");
    for kind in [
        "kind: CustomResourceDefinition",
        "kind: Deployment",
        "kind: ClusterRole",
        "kind: ServiceAccount",
        "kind: Namespace",
    ] {
        assert!(built.contains(kind), "{kind} missing");
    }
    // The namespace must exist for a dry run of what goes in it.
    let _ = ctx
        .kubectl(&["create", "namespace", "ecs-operator-system"], None)
        .await;
    let (ok, out) = ctx
        .kubectl(
            &[
                "apply",
                "--server-side",
                "--force-conflicts",
                "--field-manager=e2e-dry-run",
                "--dry-run=server",
                // (the last --namespace wins over the test's own)
                "--namespace=ecs-operator-system",
                "-f",
                "-",
            ],
            Some(&built),
        )
        .await;
    assert!(ok, "{out}");
    assert!(
        out.contains("deployment.apps/ecs-operator serverside-applied (server dry run)"),
        "{out}"
    );

    let samples = repo().join("config/samples");
    let (ok, built) = ctx
        .kubectl(&["kustomize", samples.to_str().unwrap()], None)
        .await;
    assert!(ok, "{built}");
    let (ok, out) = ctx
        .kubectl(&["apply", "--dry-run=server", "-f", "-"], Some(&built))
        .await;
    assert!(ok, "samples refused: {out}");
    // The sample left out of the kustomization (it needs an Auto Scaling group).
    let gpu = std::fs::read_to_string(samples.join("gpu-capacity.yaml")).unwrap();
    let (ok, out) = ctx
        .kubectl(&["apply", "--dry-run=server", "-f", "-"], Some(&gpu))
        .await;
    assert!(ok, "gpu-capacity.yaml refused: {out}");
}

/// `kubectl auth can-i` as the ServiceAccount: what it needs, yes; anything else, no.
async fn assert_least_privilege(ctx: &TestContext, sa: &str) {
    let can = |verb: &'static str, what: &'static str| async move {
        let (_, out) = ctx
            .kubectl(&["auth", "can-i", verb, what, "--as", sa], None)
            .await;
        out.trim().starts_with("yes")
    };
    for (verb, what) in [
        ("patch", "ecsservices.ecs.operator.dev"),
        ("patch", "ecsservices.ecs.operator.dev/status"),
        ("create", "ecstasks.ecs.operator.dev"),
        ("delete", "ecstasks.ecs.operator.dev"),
        ("create", "events.events.k8s.io"),
        ("patch", "leases.coordination.k8s.io"),
    ] {
        assert!(can(verb, what).await, "{sa} cannot {verb} {what}");
    }
    for (verb, what) in [
        ("get", "secrets"),
        ("list", "configmaps"),
        ("list", "pods"),
        ("create", "deployments.apps"),
        ("delete", "ecsservices.ecs.operator.dev"),
        ("create", "ecsclusters.ecs.operator.dev"),
        ("update", "customresourcedefinitions.apiextensions.k8s.io"),
        ("update", "ecsservices.ecs.operator.dev"),
    ] {
        assert!(!can(verb, what).await, "{sa} may {verb} {what}");
    }
}

/// Runs the operator with a TokenRequest token of `service_account` (nothing else) and
/// waits until the samples' cluster and worker service are Ready.
async fn reconcile_samples_as(ctx: &TestContext, service_account: &str, extra_args: &[&str]) {
    let ns = ctx.namespace.clone();
    let (ok, token) = ctx
        .kubectl(&["create", "token", service_account, "--duration=1h"], None)
        .await;
    assert!(ok, "{token}");
    let admin = std::fs::read_to_string(&env().kubeconfig).unwrap();
    let mut kubeconfig = String::new();
    for line in admin.lines() {
        if line.trim_start().starts_with("token:") {
            kubeconfig.push_str(&format!("    token: {}\n", token.trim()));
        } else {
            kubeconfig.push_str(line);
            kubeconfig.push('\n');
        }
    }
    let path = env()
        .run_dir
        .join(format!("kubeconfig-{ns}-{service_account}"));
    std::fs::write(&path, kubeconfig).unwrap();
    let op = ctx
        .start_operator_env(extra_args, &[("KUBECONFIG", path.to_str().unwrap())])
        .await;

    // The samples' cluster and worker service, renamed for this test's ECS names.
    let (cl, td, svc) = (ctx.name("shop"), ctx.name("worker"), ctx.name("worker"));
    let yaml = read("config/samples/cluster.yaml").replace("name: shop", &format!("name: {cl}"))
        + "---\n"
        + &read("config/samples/worker.yaml")
            .replace("name: shop", &format!("name: {cl}"))
            .replace("name: worker", &format!("name: {td}"));
    ctx.apply(&yaml).await;
    let clusters = Api::<EcsCluster>::namespaced(ctx.kube.clone(), &ns);
    let services = Api::<EcsService>::namespaced(ctx.kube.clone(), &ns);
    eventually(60, "sample cluster and worker Ready", || async {
        let c = clusters.get(&cl).await.ok()?;
        let s = services.get(&svc).await.ok()?;
        let ready = |conds: &[ecs_operator::api::common::Condition]| {
            ecs_operator::api::common::is_condition_true(conds, "Ready")
        };
        (ready(&c.status?.conditions) && ready(&s.status?.conditions)).then_some(())
    })
    .await;
    let log = op.log_text();
    assert!(!log.contains("forbidden"), "RBAC denials:\n{log}");
    op.stop().await;
}

#[tokio::test]
async fn operator_runs_on_its_service_account_with_least_privilege() {
    let ctx = TestContext::new("deploy-rbac").await;
    crate::support::install_crds(&ctx.kube).await;
    let ns = ctx.namespace.clone();
    // config/rbac, bound in this test's namespace.
    let dir = repo().join("config/rbac");
    let (ok, rbac) = ctx
        .kubectl(&["kustomize", dir.to_str().unwrap()], None)
        .await;
    assert!(ok, "{rbac}");
    // Bind to the ServiceAccount in this namespace (kubectl puts the namespaced
    // objects here).
    let rbac = rbac.replace(
        "namespace: ecs-operator-system",
        &format!("namespace: {ns}"),
    );
    let (ok, out) = ctx.kubectl(&["apply", "-f", "-"], Some(&rbac)).await;
    assert!(ok, "{out}");
    assert_least_privilege(&ctx, &format!("system:serviceaccount:{ns}:ecs-operator")).await;
    reconcile_samples_as(
        &ctx,
        "ecs-operator",
        &["--leader-elect", "--leader-election-namespace", &ns],
    )
    .await;
}

fn helm() -> String {
    let out = std::process::Command::new(repo().join("hack/helm.sh"))
        .output()
        .expect("hack/helm.sh");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

async fn run_helm(args: &[&str]) -> (bool, String) {
    let out = tokio::process::Command::new(helm())
        .args(args)
        .env("KUBECONFIG", &env().kubeconfig)
        .output()
        .await
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[tokio::test]
async fn helm_chart_lints_renders_installs_and_its_rbac_suffices() {
    let ctx = TestContext::new("deploy-helm").await;
    crate::support::install_crds(&ctx.kube).await;
    let ns = ctx.namespace.clone();
    let chart = repo().join("charts/ecs-operator");
    let chart = chart.to_str().unwrap();

    let (ok, out) = run_helm(&["lint", "--strict", chart]).await;
    assert!(ok, "{out}");
    let (ok, out) = run_helm(&[
        "lint",
        "--strict",
        chart,
        "--set",
        "replicaCount=3",
        "--set",
        "watchNamespace=team-a",
    ])
    .await;
    assert!(ok, "{out}");
    // values.schema.json refuses nonsense.
    let (ok, out) = run_helm(&[
        "template",
        "x",
        chart,
        "--kube-version",
        "1.37.1",
        "--set",
        "concurrency=0",
    ])
    .await;
    assert!(!ok && out.contains("concurrency"), "{out}");

    // Rendered (all modes) and accepted by the apiserver.
    let own_ns = format!("watchNamespace={ns}");
    for extra in [
        vec![],
        vec![
            "--set",
            "replicaCount=2",
            "--set",
            "metrics.serviceMonitor.enabled=false",
        ],
        vec!["--set", own_ns.as_str()],
        vec!["--set", "selector=ecs.operator.dev/shard=a"],
    ] {
        // (helm template assumes an old Kubernetes unless told)
        let mut args = vec![
            "template",
            "rel",
            chart,
            "--namespace",
            ns.as_str(),
            "--kube-version",
            "1.37.1",
        ];
        args.extend(extra.iter().copied());
        let (ok, rendered) = run_helm(&args).await;
        assert!(ok, "{rendered}");
        // A shard's release passes its selector (quoted: selectors hold spaces, commas).
        let shard = rendered.contains(r#"- "--selector=ecs.operator.dev/shard=a""#);
        assert_eq!(
            shard,
            extra.contains(&"selector=ecs.operator.dev/shard=a"),
            "{rendered}"
        );
        let (ok, out) = ctx
            .kubectl(&["apply", "--dry-run=server", "-f", "-"], Some(&rendered))
            .await;
        assert!(ok, "{extra:?}: {out}");
    }

    // Installed for real, single-namespace mode with leader election (2 replicas).
    let (ok, out) = run_helm(&[
        "install",
        "ecs",
        chart,
        "--namespace",
        &ns,
        "--set",
        &format!("watchNamespace={ns}"),
        "--set",
        "replicaCount=2",
    ])
    .await;
    assert!(ok, "{out}");
    assert!(out.contains("STATUS: deployed"), "{out}");
    let (ok, out) = ctx
        .kubectl(
            &["get", "deployment,serviceaccount,role,rolebinding,service"],
            None,
        )
        .await;
    assert!(ok, "{out}");
    for want in [
        "deployment.apps/ecs-ecs-operator",
        "serviceaccount/ecs-ecs-operator",
        "role.rbac.authorization.k8s.io/ecs-ecs-operator-leader-election",
    ] {
        assert!(out.contains(want), "{want} missing: {out}");
    }
    let sa = format!("system:serviceaccount:{ns}:ecs-ecs-operator");
    assert_least_privilege(&ctx, &sa).await;
    // Namespace mode: nothing outside this namespace.
    let (_, out) = ctx
        .kubectl(
            &[
                "auth",
                "can-i",
                "list",
                "ecsservices.ecs.operator.dev",
                "--as",
                &sa,
                "--namespace",
                "default",
            ],
            None,
        )
        .await;
    assert!(out.trim().starts_with("no"), "{out}");
    reconcile_samples_as(
        &ctx,
        "ecs-ecs-operator",
        &["--leader-elect", "--leader-election-id", "ecs-ecs-operator"],
    )
    .await;
}
