//! Test support: one real environment per test binary, one namespace and
//! name prefix per test.
//!
//! The environment (kube-apiserver + etcd + ECS endpoint, see the `testenv`
//! crate) is started on first use and stopped when the test binary exits;
//! set `ECS_OPERATOR_TEST_KUBECONFIG` / `ECS_OPERATOR_TEST_ECS_ENDPOINT` to
//! reuse a running one (`make env-up` prints both).

use std::io::Write;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, ObjectMeta, PostParams};
use testenv::Environment;

static ENV: OnceLock<Result<Environment, String>> = OnceLock::new();

/// The shared environment. Panics with the start-up error (which names what
/// is missing) if it cannot be started.
pub fn env() -> &'static Environment {
    let res = ENV.get_or_init(|| {
        // Start on a dedicated runtime/thread: the environment outlives the
        // test (and the test's runtime) that happens to ask first.
        std::thread::spawn(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            let env = rt
                .block_on(Environment::start())
                .map_err(|e| e.to_string())?;
            // Bypasses the test harness's output capture on purpose: the run
            // log should say what the tests ran against.
            let _ = writeln!(
                std::io::stderr(),
                "e2e environment: kube-apiserver {} ({:?}), ECS endpoint {} ({:?}) behind the strict layer {} (replay with ECS_STRICT_SEED={}), Application Auto Scaling {}",
                env.server_version,
                env.kube_source,
                env.ecs_direct_endpoint,
                env.ecs_source,
                env.ecs_endpoint,
                env.strict_seed.map(|s| s.to_string()).unwrap_or_else(|| "<off>".into()),
                if env.aas_endpoint.is_empty() { "<none>" } else { env.aas_endpoint.as_str() }
            );
            Ok(env)
        })
        .join()
        .unwrap_or_else(|_| Err("test environment start-up panicked".to_string()))
    });
    match res {
        Ok(env) => env,
        Err(e) => panic!("{e}"),
    }
}

/// What one test gets: its own namespace, a unique prefix for ECS names, and
/// clients bound to the test's runtime.
pub struct TestContext {
    pub namespace: String,
    /// Unique per test and run; prefix every ECS name with it.
    pub prefix: String,
    pub kube: kube::Client,
    /// ECS through the strict layer, as the operator sees it.
    pub ecs: aws_sdk_ecs::Client,
    /// ECS behind the strict layer: audits of what ECS holds, without its delays.
    pub ecs_direct: aws_sdk_ecs::Client,
    /// What kubectl and operators started by this context talk to, and where their
    /// logs go.
    kubeconfig: PathBuf,
    run_dir: PathBuf,
    operator_env: Vec<(&'static str, std::ffi::OsString)>,
    /// In an environment of the test's own (not the binary's shared one).
    isolated: bool,
}

impl TestContext {
    /// A context in the binary's shared environment.
    pub async fn new(test_name: &str) -> TestContext {
        Self::in_env(test_name, env(), false).await
    }

    /// A context in `env`, an environment the test started for itself (one whose
    /// apiserver it restarts, say); `isolated` installs the CRDs there too.
    pub async fn in_env(test_name: &str, env: &Environment, isolated: bool) -> TestContext {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let kube = env.kube_client().expect("kube client");
        let seq = SEQ.fetch_add(1, Ordering::Relaxed);
        let mut slug: String = test_name
            .to_ascii_lowercase()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        slug.truncate(40);
        let slug = slug.trim_matches('-');
        // pid + sequence keep names unique across concurrent tests and across
        // runs that share one environment (ECS names outlive namespaces).
        let prefix = format!("{slug}-{:x}{seq}", std::process::id() & 0xffff);
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(prefix.clone()),
                labels: Some([("ecs.operator.dev/e2e".to_string(), "true".to_string())].into()),
                ..Default::default()
            },
            ..Default::default()
        };
        Api::<Namespace>::all(kube.clone())
            .create(&PostParams::default(), &ns)
            .await
            .unwrap_or_else(|e| panic!("create namespace {prefix}: {e}"));
        TestContext {
            namespace: prefix.clone(),
            prefix,
            kube,
            ecs: env.ecs_client(),
            ecs_direct: env.ecs_direct_client(),
            kubeconfig: env.kubeconfig.clone(),
            run_dir: env.run_dir.clone(),
            operator_env: testenv::operator_env(
                &env.kubeconfig,
                &env.ecs_endpoint,
                &env.aas_endpoint,
            ),
            isolated,
        }
    }

    /// `<prefix>-<suffix>`, for ECS and Kubernetes object names.
    pub fn name(&self, suffix: &str) -> String {
        format!("{}-{suffix}", self.prefix)
    }
}

use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Patch, PatchParams};
use kube::runtime::wait::{await_condition, conditions};
use tokio::sync::OnceCell;

/// Installs the operator's CRDs (server-side apply, like `kubectl apply --server-side -f crds/`)
/// once per test binary and waits until they are served.
pub async fn install_crds(client: &kube::Client) {
    static DONE: OnceCell<()> = OnceCell::const_new();
    DONE.get_or_init(|| install_crds_into(client)).await;
}

/// Installs the CRDs through `client` (every time) and waits until they are served.
pub async fn install_crds_into(client: &kube::Client) {
    let api = Api::<CustomResourceDefinition>::all(client.clone());
    for crd in ecs_operator::api::crds() {
        let name = crd.metadata.name.clone().expect("CRD name");
        api.patch(
            &name,
            &PatchParams::apply("ecs-operator-e2e").force(),
            &Patch::Apply(&crd),
        )
        .await
        .unwrap_or_else(|e| panic!("install CRD {name}: {e}"));
        tokio::time::timeout(
            Duration::from_secs(30),
            await_condition(api.clone(), &name, conditions::is_crd_established()),
        )
        .await
        .unwrap_or_else(|_| panic!("CRD {name} not established in 30s"))
        .unwrap();
    }
}

/// A running `ecs-operator run` process watching one namespace; killed on drop.
pub struct Operator {
    child: tokio::process::Child,
    pub metrics_addr: String,
    pub log: PathBuf,
}

impl Operator {
    /// Fetches /metrics.
    pub async fn metrics(&self) -> String {
        let mut s = tokio::net::TcpStream::connect(&self.metrics_addr)
            .await
            .expect("connect to metrics");
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        s.write_all(
            format!(
                "GET /metrics HTTP/1.0\r\nHost: {}\r\n\r\n",
                self.metrics_addr
            )
            .as_bytes(),
        )
        .await
        .unwrap();
        let mut body = String::new();
        s.read_to_string(&mut body).await.unwrap();
        body
    }

    /// Sum of `ecs_operator_aws_requests_total` over operations that write to ECS.
    pub async fn ecs_writes(&self) -> u64 {
        sum_metric(
            &self.metrics().await,
            "ecs_operator_aws_requests_total",
            |labels| {
                !(labels.contains("operation=\"Describe") || labels.contains("operation=\"List"))
            },
        )
    }

    /// Sum of `ecs_operator_reconcile_total` for one kind.
    pub async fn reconciles(&self, kind: &str) -> u64 {
        let needle = format!("kind=\"{kind}\"");
        sum_metric(&self.metrics().await, "ecs_operator_reconcile_total", |l| {
            l.contains(&needle)
        })
    }

    /// Resync sweeps of EcsServices so far.
    pub async fn sweeps(&self) -> u64 {
        sum_metric(
            &self.metrics().await,
            "ecs_operator_service_sweeps_total",
            |_| true,
        )
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }

    /// The exit status, if the process has exited.
    #[allow(dead_code)] // for tests/resilience, which shares this file
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Sends SIGTERM, as the kubelet does, and waits for the process to exit (at
    /// most 60 s).
    #[allow(dead_code)] // for tests/resilience, which shares this file
    pub async fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().expect("the operator is running");
        let sent = tokio::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .await
            .expect("run kill");
        assert!(sent.success(), "kill -TERM {pid}");
        tokio::time::timeout(Duration::from_secs(60), self.child.wait())
            .await
            .expect("the operator exits within 60 s of SIGTERM")
            .expect("wait for the operator")
    }
}

pub fn sum_metric(text: &str, name: &str, filter: impl Fn(&str) -> bool) -> u64 {
    text.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let labels = series.strip_prefix(name)?;
            // A counter without labels has none to filter on.
            if !(labels.is_empty() || labels.starts_with('{')) || !filter(labels) {
                return None;
            }
            value.parse::<f64>().ok().map(|v| v as u64)
        })
        .sum()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl TestContext {
    /// Starts the real operator binary against this test's namespace.
    pub async fn start_operator(&self, extra_args: &[&str]) -> Operator {
        self.start_operator_env(extra_args, &[]).await
    }

    /// Same, with extra environment (e.g. another KUBECONFIG).
    pub async fn start_operator_env(&self, extra_args: &[&str], envs: &[(&str, &str)]) -> Operator {
        if self.isolated {
            install_crds_into(&self.kube).await;
        } else {
            install_crds(&self.kube).await;
        }
        let port = free_port();
        let metrics_addr = format!("127.0.0.1:{port}");
        // One log per process: a test may run several operators in one namespace.
        static OPERATORS: AtomicU32 = AtomicU32::new(0);
        let n = OPERATORS.fetch_add(1, Ordering::Relaxed);
        let log = self
            .run_dir
            .join(format!("operator-{}-{n}.log", self.namespace));
        let file = std::fs::File::create(&log).unwrap();
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_ecs-operator"));
        cmd.arg("run")
            .arg("--namespace")
            .arg(&self.namespace)
            .arg("--metrics-addr")
            .arg(&metrics_addr)
            .args(extra_args)
            .envs(self.operator_env.iter().cloned())
            .env("RUST_LOG", "info,ecs_operator=debug")
            .envs(envs.iter().copied())
            .stdin(std::process::Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .kill_on_drop(true);
        let child = cmd.spawn().expect("start ecs-operator");
        let op = Operator {
            child,
            metrics_addr,
            log,
        };
        // Ready when /metrics answers.
        for _ in 0..300 {
            if testenv::http_get_ok(&op.metrics_addr, "/readyz").await {
                return op;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("operator not ready in 30s; log:\n{}", op.log_text());
    }

    /// Runs kubectl against the environment; returns (success, stdout+stderr).
    pub async fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> (bool, String) {
        use tokio::io::AsyncWriteExt;
        let mut cmd = tokio::process::Command::new("kubectl");
        cmd.args(["--namespace", &self.namespace])
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = cmd.spawn().expect("kubectl is installed");
        if let Some(input) = stdin {
            let mut si = child.stdin.take().unwrap();
            si.write_all(input.as_bytes()).await.unwrap();
        }
        drop(child.stdin.take());
        let out = child.wait_with_output().await.unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.success(), text)
    }

    /// `kubectl apply -f -` that must succeed.
    pub async fn apply(&self, yaml: &str) {
        let (ok, out) = self.kubectl(&["apply", "-f", "-"], Some(yaml)).await;
        assert!(ok, "kubectl apply failed: {out}\n---\n{yaml}");
    }
}

/// Polls `f` until it returns Some, or panics with `what` after `secs`.
pub async fn eventually<T, F, Fut>(secs: u64, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {secs}s waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Polls the object `name` of kind `K` in the test's namespace until `pred` holds, or
/// panics after `secs` with `what` and the object as it was last seen.
pub async fn wait_for<K>(
    ctx: &TestContext,
    name: &str,
    secs: u64,
    what: &str,
    pred: impl Fn(&K) -> bool,
) -> K
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
{
    let api = Api::<K>::namespaced(ctx.kube.clone(), &ctx.namespace);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let o = api.get_opt(name).await.ok().flatten();
        if let Some(o) = &o
            && pred(o)
        {
            return o.clone();
        }
        if tokio::time::Instant::now() > deadline {
            let status = o
                .and_then(|o| serde_json::to_value(&o).ok())
                .map(|v| v["status"].clone());
            panic!("timed out after {secs}s waiting for {name}: {what}; status now: {status:#?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Deletes the object `name` of kind `K` in the test's namespace and waits up to
/// `secs` until it is gone (its finalizer done).
pub async fn delete_and_wait_gone<K>(ctx: &TestContext, name: &str, secs: u64)
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let api = Api::<K>::namespaced(ctx.kube.clone(), &ctx.namespace);
    api.delete(name, &Default::default()).await.unwrap();
    eventually(secs, &format!("{name} gone"), || async {
        api.get_opt(name).await.ok()?.is_none().then_some(())
    })
    .await;
}

/// An ECS cluster and a one-container task definition made directly in ECS (not
/// managed by the operator): (cluster name, task definition ARN). Its tasks run
/// until stopped (the strict layer's task lifecycle would end them after 3 s).
pub async fn ecs_cluster_and_td(
    ctx: &TestContext,
    cluster: &str,
    family: &str,
) -> (String, String) {
    let cluster = ctx.name(cluster);
    ctx.ecs
        .create_cluster()
        .cluster_name(&cluster)
        .send()
        .await
        .unwrap();
    let td = ctx
        .ecs
        .register_task_definition()
        .family(ctx.name(family))
        .container_definitions(
            aws_sdk_ecs::types::ContainerDefinition::builder()
                .name("app")
                .image("busybox:1")
                .memory(64)
                .environment(
                    aws_sdk_ecs::types::KeyValuePair::builder()
                        .name("ECS_EMULATOR_RUN_SECONDS")
                        .value("3600")
                        .build(),
                )
                .build(),
        )
        .send()
        .await
        .unwrap()
        .task_definition()
        .and_then(|t| t.task_definition_arn())
        .unwrap()
        .to_string();
    (cluster, td)
}

/// The Events about an object, as "REASON NOTE" lines.
pub async fn events_for(ctx: &TestContext, name: &str) -> String {
    ctx.kubectl(
        &[
            "get",
            "events.events.k8s.io",
            "--field-selector",
            &format!("regarding.name={name}"),
            "-o",
            "custom-columns=REASON:.reason,NOTE:.note",
        ],
        None,
    )
    .await
    .1
}

/// ARNs of every task (running or stopped) started with `started_by`, read behind the
/// strict layer: an audit of what ECS holds.
pub async fn started_task_arns(ctx: &TestContext, cluster: &str, started_by: &str) -> Vec<String> {
    let mut arns = Vec::new();
    for d in [
        aws_sdk_ecs::types::DesiredStatus::Running,
        aws_sdk_ecs::types::DesiredStatus::Stopped,
    ] {
        let out = ctx
            .ecs_direct
            .list_tasks()
            .cluster(cluster)
            .started_by(started_by)
            .desired_status(d)
            .send()
            .await
            .unwrap();
        arns.extend(out.task_arns().iter().cloned());
    }
    arns
}
