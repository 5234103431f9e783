//! `make bench`: how fast and how cheaply the operator converges N EcsServices.
//!
//! Brings up the test environment (kube-apiserver + etcd + ministack behind the strict
//! layer, with real ECS page sizes: the `paging` rule is off), starts the release
//! operator, applies one EcsCluster, one EcsTaskDefinition and N EcsServices
//! (desiredCount 1) with one server-side apply each, and prints: time until all are
//! Ready, ECS calls by operation while converging and during one resync at rest,
//! reconciles by kind, operator CPU seconds and peak RSS, and the quota bound for N.
//! A benchmark, not a test: it asserts nothing about time.
//!
//! Usage: bench [--services N] [--operator PATH] [--resync 60s] [-- extra operator args]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use ecs_operator::api::service::EcsService;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::wait::{await_condition, conditions};
use serde_json::json;
use testenv::Environment;

const NAMESPACE: &str = "bench";
const FIELD_MANAGER: &str = "ecs-operator-bench";

struct Args {
    services: usize,
    operator: PathBuf,
    resync: Duration,
    extra: Vec<String>,
}

fn parse_args() -> Result<Args, String> {
    let target = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into());
    let mut args = Args {
        services: 1000,
        operator: PathBuf::from(target).join("release/ecs-operator"),
        resync: Duration::from_secs(60),
        extra: vec![],
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--services" => {
                args.services = value()?.parse().map_err(|e| format!("--services: {e}"))?
            }
            "--operator" => args.operator = PathBuf::from(value()?),
            "--resync" => {
                args.resync =
                    humantime::parse_duration(&value()?).map_err(|e| format!("--resync: {e}"))?
            }
            "--" => {
                args.extra = it.collect();
                break;
            }
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok(args)
}

/// A running operator and where to read its numbers.
struct Operator {
    child: tokio::process::Child,
    metrics_addr: String,
}

impl Operator {
    async fn start(args: &Args, env: &Environment, ecs_endpoint: &str) -> Result<Operator, String> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        let metrics_addr = format!("127.0.0.1:{port}");
        let log = env.run_dir.join("bench-operator.log");
        let file = std::fs::File::create(&log).map_err(|e| e.to_string())?;
        let resync = format!("{}s", args.resync.as_secs());
        let child = tokio::process::Command::new(&args.operator)
            .args([
                "run",
                "--namespace",
                NAMESPACE,
                "--metrics-addr",
                &metrics_addr,
            ])
            .args(["--resync-interval", &resync])
            .args(&args.extra)
            .envs(testenv::operator_env(&env.kubeconfig, ecs_endpoint))
            // BENCH_OPERATOR_LOG: the operator's RUST_LOG, to see why it reconciles.
            .env(
                "RUST_LOG",
                std::env::var("BENCH_OPERATOR_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(std::process::Stdio::null())
            .stdout(file.try_clone().map_err(|e| e.to_string())?)
            .stderr(file)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("start {}: {e}", args.operator.display()))?;
        let op = Operator {
            child,
            metrics_addr,
        };
        for _ in 0..300 {
            if testenv::http_get_ok(&op.metrics_addr, "/readyz").await {
                return Ok(op);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(format!("operator not ready in 30 s; see {}", log.display()))
    }

    fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    async fn metrics(&self) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let Ok(mut s) = tokio::net::TcpStream::connect(&self.metrics_addr).await else {
            return String::new();
        };
        let request = format!(
            "GET /metrics HTTP/1.0\r\nHost: {}\r\n\r\n",
            self.metrics_addr
        );
        let mut body = String::new();
        if s.write_all(request.as_bytes()).await.is_ok() {
            let _ = s.read_to_string(&mut body).await;
        }
        body
    }
}

/// `metric{labels} value` lines of one counter, summed per value of `label`.
fn by_label(metrics: &str, metric: &str, label: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    let needle = format!("{label}=\"");
    for line in metrics.lines().filter(|l| l.starts_with(metric)) {
        let (Some(at), Some(value)) = (line.find(&needle), line.rsplit(' ').next()) else {
            continue;
        };
        let rest = &line[at + needle.len()..];
        let key = rest.split('"').next().unwrap_or_default().to_string();
        *out.entry(key).or_insert(0.0) += value.parse::<f64>().unwrap_or(0.0);
    }
    out
}

fn minus(after: &BTreeMap<String, f64>, before: &BTreeMap<String, f64>) -> BTreeMap<String, f64> {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0.0)))
        .filter(|(_, v)| *v > 0.0)
        .collect()
}

/// CPU seconds (user + system) and peak RSS (MiB) of a process, from /proc.
fn usage(pid: u32) -> (f64, f64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start after ')'.
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|i| fields.get(*i)?.parse::<f64>().ok())
        .sum();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let hwm_kib: f64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0.0);
    // USER_HZ is 100 on Linux.
    (ticks / 100.0, hwm_kib / 1024.0)
}

async fn install_crds(client: &kube::Client) -> Result<(), String> {
    let api = Api::<CustomResourceDefinition>::all(client.clone());
    for crd in ecs_operator::api::crds() {
        let name = crd.metadata.name.clone().unwrap_or_default();
        api.patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&crd),
        )
        .await
        .map_err(|e| format!("install CRD {name}: {e}"))?;
        let established = await_condition(api.clone(), &name, conditions::is_crd_established());
        tokio::time::timeout(Duration::from_secs(30), established)
            .await
            .map_err(|_| format!("CRD {name} not established"))?
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

async fn apply(client: &kube::Client, obj: serde_json::Value) -> Result<(), String> {
    let kind = obj["kind"].as_str().unwrap_or_default().to_string();
    let name = obj["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let plural = format!("{}s", kind.to_ascii_lowercase());
    let resource = kube::api::ApiResource {
        group: "ecs.operator.dev".into(),
        version: "v1alpha1".into(),
        api_version: "ecs.operator.dev/v1alpha1".into(),
        kind: kind.clone(),
        plural,
    };
    let api: Api<kube::api::DynamicObject> =
        Api::namespaced_with(client.clone(), NAMESPACE, &resource);
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER),
        &Patch::Apply(&obj),
    )
    .await
    .map(|_| ())
    .map_err(|e| format!("apply {kind} {name}: {e}"))
}

/// One EcsCluster, one EcsTaskDefinition, N EcsServices (applied 32 at a time).
async fn apply_objects(client: &kube::Client, services: usize, run: &str) -> Result<(), String> {
    let cluster = format!("bench-{run}");
    let td = format!("bench-{run}");
    apply(
        client,
        json!({"apiVersion": "ecs.operator.dev/v1alpha1", "kind": "EcsCluster",
        "metadata": {"name": "bench"}, "spec": {"clusterName": cluster}}),
    )
    .await?;
    apply(
        client,
        json!({"apiVersion": "ecs.operator.dev/v1alpha1", "kind": "EcsTaskDefinition",
        "metadata": {"name": "bench"}, "spec": {"family": td, "containerDefinitions": [
            {"name": "app", "image": "public.ecr.aws/nginx/nginx:latest", "memory": 128,
             "environment": [{"name": "ECS_EMULATOR_RUN_SECONDS", "value": "86400"}]}]}}),
    )
    .await?;
    let names: Vec<String> = (0..services).map(|i| format!("svc-{i:05}")).collect();
    for chunk in names.chunks(32) {
        let applies = chunk.iter().map(|name| {
            apply(
                client,
                json!({"apiVersion": "ecs.operator.dev/v1alpha1", "kind": "EcsService",
                "metadata": {"name": name}, "spec": {"serviceName": format!("{name}-{run}"),
                "clusterRef": {"name": "bench"}, "taskDefinitionRef": {"name": "bench"},
                "desiredCount": 1, "launchType": "EC2"}}),
            )
        });
        for result in futures::future::join_all(applies).await {
            result?;
        }
    }
    Ok(())
}

async fn ready_count(client: &kube::Client) -> usize {
    let api: Api<EcsService> = Api::namespaced(client.clone(), NAMESPACE);
    let Ok(list) = api.list(&ListParams::default()).await else {
        return 0;
    };
    list.items
        .iter()
        .filter(|s| {
            s.status.as_ref().is_some_and(|st| {
                st.observed_generation == s.metadata.generation
                    && ecs_operator::api::common::is_condition_true(&st.conditions, "Ready")
            })
        })
        .count()
}

/// Seconds the quota needs for N CreateService calls: a burst of 50, then 5 per second.
fn quota_bound(services: usize) -> f64 {
    let rate = ecs_operator::ecs::limiter::default_rate(ecs_operator::ecs::Category::ServiceModify);
    (services as f64 - rate.burst).max(0.0) / rate.per_second
}

fn print_calls(title: &str, calls: &BTreeMap<String, f64>) {
    let total: f64 = calls.values().sum();
    println!("{title}: {total:.0}");
    for (op, n) in calls {
        println!("  {op:<28} {n:>8.0}");
    }
}

async fn run(args: Args) -> Result<(), String> {
    let env = Environment::start().await.map_err(|e| e.to_string())?;
    let ecs_endpoint = env
        .ecs_endpoint_without(&["paging"])
        .await
        .map_err(|e| e.to_string())?;
    let rules =
        testenv::http_get_body(ecs_endpoint.trim_start_matches("http://"), "/_strict/rules")
            .await
            .unwrap_or_else(|| "(strict layer off)".into());
    let client = env.kube_client().map_err(|e| e.to_string())?;
    install_crds(&client).await?;
    let ns = Namespace {
        metadata: kube::api::ObjectMeta {
            name: Some(NAMESPACE.into()),
            ..Default::default()
        },
        ..Default::default()
    };
    let _ = Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await;

    let op = Operator::start(&args, &env, &ecs_endpoint).await?;
    let pid = op.pid().ok_or("operator exited")?;
    let start_metrics = op.metrics().await;
    let run = format!("{:x}", std::process::id());
    let started = Instant::now();
    apply_objects(&client, args.services, &run).await?;
    let applied = started.elapsed();
    let deadline = started + Duration::from_secs(3600);
    let mut ready = 0;
    while ready < args.services && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_secs(1)).await;
        ready = ready_count(&client).await;
    }
    let converged = started.elapsed();
    let at_ready = op.metrics().await;
    let (cpu, rss) = usage(pid);

    // At rest: one full resync interval after Ready.
    tokio::time::sleep(args.resync + Duration::from_secs(5)).await;
    let at_rest = op.metrics().await;
    let (cpu_rest, rss_rest) = usage(pid);

    let ops = "ecs_operator_aws_requests_total";
    let converging_calls = minus(
        &by_label(&at_ready, ops, "operation"),
        &by_label(&start_metrics, ops, "operation"),
    );
    let rest_calls = minus(
        &by_label(&at_rest, ops, "operation"),
        &by_label(&at_ready, ops, "operation"),
    );
    let rec = "ecs_operator_reconcile_total";
    let reconciles = minus(
        &by_label(&at_ready, rec, "kind"),
        &by_label(&start_metrics, rec, "kind"),
    );
    let bound = quota_bound(args.services);
    let reads: f64 = converging_calls
        .iter()
        .filter(|(k, _)| k.starts_with("Describe") || k.starts_with("List"))
        .map(|(_, v)| v)
        .sum();

    println!(
        "== ecs-operator bench: {} EcsServices, 1 cluster, 1 task definition",
        args.services
    );
    println!(
        "strict rules on (paging off: real page sizes): {}",
        rules.trim()
    );
    println!(
        "operator flags: --resync-interval {}s {}",
        args.resync.as_secs(),
        args.extra.join(" ")
    );
    println!(
        "Ready: {ready}/{} in {:.1} s (applies took {:.1} s)",
        args.services,
        converged.as_secs_f64(),
        applied.as_secs_f64()
    );
    println!(
        "quota bound (CreateService: burst 50, then 5/s): {bound:.1} s; ratio {:.2}",
        converged.as_secs_f64() / bound.max(1.0)
    );
    print_calls("ECS calls while converging", &converging_calls);
    println!(
        "ECS reads per service while converging: {:.2}",
        reads / args.services.max(1) as f64
    );
    println!(
        "reconciles while converging (per service: {:.2}):",
        reconciles.get("EcsService").copied().unwrap_or(0.0) / args.services.max(1) as f64
    );
    for (kind, n) in &reconciles {
        println!("  {kind:<28} {n:>8.0}");
    }
    println!("operator CPU while converging: {cpu:.1} s; peak RSS {rss:.0} MiB");
    print_calls(
        &format!(
            "ECS calls in one resync at rest ({} s)",
            args.resync.as_secs() + 5
        ),
        &rest_calls,
    );
    println!("ceil(N/10) = {}", args.services.div_ceil(10));
    println!(
        "operator CPU at rest: {:.1} s; peak RSS {rss_rest:.0} MiB",
        cpu_rest - cpu
    );
    drop(op);
    Ok(())
}

fn main() -> std::process::ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("bench: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bench: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
