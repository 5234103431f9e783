//! `make bench`: how fast and how cheaply the operator converges N EcsServices.
//!
//! Brings up the test environment (kube-apiserver + etcd + ministack behind the strict
//! layer, with real ECS page sizes: the `paging` rule is off), starts the release
//! operator, applies K EcsClusters, M EcsTaskDefinitions and N EcsServices spread over
//! them (desiredCount 1) with one server-side apply each, and prints: time until all are
//! Ready, ECS calls by operation while converging and during one resync at rest,
//! reconciles by kind, operator CPU seconds and peak RSS, and the quota bound for N.
//! A benchmark, not a test: it asserts nothing about time.
//!
//! Then it restarts the operator and prints how long the new process takes to its
//! first reconcile and to have reconciled every service once, and what that costs.
//!
//! Usage: bench [--services N] [--clusters K] [--task-definitions M] [--operator PATH]
//!              [--resync 5m (the operator default)] [-- extra operator args]

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
    /// Services are spread over this many EcsClusters (ECS allows 5,000 per cluster).
    clusters: usize,
    /// ... and this many EcsTaskDefinitions.
    task_definitions: usize,
    operator: PathBuf,
    resync: Duration,
    extra: Vec<String>,
}

fn parse_args() -> Result<Args, String> {
    let target = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into());
    let mut args = Args {
        services: 1000,
        clusters: 1,
        task_definitions: 1,
        operator: PathBuf::from(target).join("release/ecs-operator"),
        resync: Duration::from_secs(300),
        extra: vec![],
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--services" => {
                args.services = value()?.parse().map_err(|e| format!("--services: {e}"))?
            }
            "--clusters" => {
                args.clusters = value()?.parse().map_err(|e| format!("--clusters: {e}"))?
            }
            "--task-definitions" => {
                args.task_definitions = value()?
                    .parse()
                    .map_err(|e| format!("--task-definitions: {e}"))?
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
    if args.clusters == 0 || args.task_definitions == 0 {
        return Err("--clusters and --task-definitions need at least 1".into());
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
        // One log per process (the restart phase starts a second one).
        static STARTS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = STARTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let log = env.run_dir.join(format!("bench-operator-{n}.log"));
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
            .envs(testenv::operator_env(
                &env.kubeconfig,
                ecs_endpoint,
                &env.aas_endpoint,
            ))
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

/// K EcsClusters, M EcsTaskDefinitions, N EcsServices over them (32 applies at a time).
async fn apply_objects(client: &kube::Client, args: &Args, run: &str) -> Result<(), String> {
    let mut objects = Vec::new();
    for c in 0..args.clusters {
        objects.push(
            json!({"apiVersion": "ecs.operator.dev/v1alpha1", "kind": "EcsCluster",
            "metadata": {"name": format!("bench-{c}")},
            "spec": {"clusterName": format!("bench-{c}-{run}")}}),
        );
    }
    for t in 0..args.task_definitions {
        objects.push(json!({"apiVersion": "ecs.operator.dev/v1alpha1", "kind": "EcsTaskDefinition",
            "metadata": {"name": format!("bench-{t}")}, "spec": {"family": format!("bench-{t}-{run}"),
            "containerDefinitions": [
            {"name": "app", "image": "public.ecr.aws/nginx/nginx:latest", "memory": 128,
             "environment": [{"name": "ECS_EMULATOR_RUN_SECONDS", "value": "86400"}]}]}}));
    }
    for i in 0..args.services {
        let name = format!("svc-{i:05}");
        objects.push(
            json!({"apiVersion": "ecs.operator.dev/v1alpha1", "kind": "EcsService",
            "metadata": {"name": name}, "spec": {"serviceName": format!("{name}-{run}"),
            "clusterRef": {"name": format!("bench-{}", i % args.clusters)},
            "taskDefinitionRef": {"name": format!("bench-{}", i % args.task_definitions)},
            "desiredCount": 1, "launchType": "EC2"}}),
        );
    }
    for chunk in objects.chunks(32) {
        let applies = chunk.iter().map(|obj| apply(client, obj.clone()));
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

/// Seconds the quota needs at the least: N CreateService calls (a burst of 50, then 5
/// per second) and, in parallel, M RegisterTaskDefinition calls (20, then 1 per second).
fn quota_bound(services: usize, task_definitions: usize) -> f64 {
    use ecs_operator::ecs::{Category, limiter::default_rate};
    let bound = |n: usize, category| {
        let rate = default_rate(category);
        (n as f64 - rate.burst).max(0.0) / rate.per_second
    };
    bound(services, Category::ServiceModify)
        .max(bound(task_definitions, Category::TaskDefinitionModify))
}

fn print_calls(title: &str, calls: &BTreeMap<String, f64>) {
    let total: f64 = calls.values().sum();
    println!("{title}: {total:.0}");
    for (op, n) in calls {
        println!("  {op:<28} {n:>8.0}");
    }
}

/// Metrics and /proc numbers at one moment.
struct Sample {
    at: Instant,
    metrics: String,
    cpu: f64,
    rss: f64,
}

impl Sample {
    async fn take(op: &Operator, pid: u32) -> Sample {
        let metrics = op.metrics().await;
        let (cpu, rss) = usage(pid);
        Sample {
            at: Instant::now(),
            metrics,
            cpu,
            rss,
        }
    }

    /// Counter `metric` summed by `label`, since `before`.
    fn since(&self, before: &Sample, metric: &str, label: &str) -> BTreeMap<String, f64> {
        minus(
            &by_label(&self.metrics, metric, label),
            &by_label(&before.metrics, metric, label),
        )
    }
}

const CALLS: &str = "ecs_operator_aws_requests_total";
const RECONCILES: &str = "ecs_operator_reconcile_total";

fn reads(calls: &BTreeMap<String, f64>) -> f64 {
    calls
        .iter()
        .filter(|(k, _)| k.starts_with("Describe") || k.starts_with("List"))
        .map(|(_, v)| v)
        .sum()
}

/// Applies everything and waits until all N are Ready: (samples at start and at Ready,
/// Ready count, how long the applies took).
async fn converge(
    args: &Args,
    client: &kube::Client,
    op: &Operator,
    pid: u32,
) -> Result<(Sample, Sample, usize, Duration), String> {
    let start = Sample::take(op, pid).await;
    let run = format!("{:x}", std::process::id());
    apply_objects(client, args, &run).await?;
    let applied = start.at.elapsed();
    let deadline = start.at + Duration::from_secs(4 * 3600);
    // A LIST of 10,000 objects every second would load the apiserver more than the
    // operator does.
    let every = Duration::from_secs(args.services.div_ceil(1000).max(1) as u64);
    let mut ready = 0;
    while ready < args.services && Instant::now() < deadline {
        tokio::time::sleep(every).await;
        ready = ready_count(client).await;
    }
    Ok((start, Sample::take(op, pid).await, ready, applied))
}

fn print_converged(args: &Args, start: &Sample, done: &Sample, ready: usize, applied: Duration) {
    let took = done.at.duration_since(start.at).as_secs_f64();
    let bound = quota_bound(args.services, args.task_definitions);
    let n = args.services.max(1) as f64;
    println!(
        "Ready: {ready}/{} in {took:.1} s (applies took {:.1} s)",
        args.services,
        applied.as_secs_f64()
    );
    println!(
        "quota bound (CreateService: burst 50, then 5/s; RegisterTaskDefinition: 20, then 1/s): {bound:.1} s; ratio {:.2}",
        took / bound.max(1.0)
    );
    let calls = done.since(start, CALLS, "operation");
    print_calls("ECS calls while converging", &calls);
    println!(
        "ECS reads per service while converging: {:.2}",
        reads(&calls) / n
    );
    let reconciles = done.since(start, RECONCILES, "kind");
    let per_service = reconciles.get("EcsService").copied().unwrap_or(0.0) / n;
    println!("reconciles while converging (per service: {per_service:.2}):");
    for (kind, count) in &reconciles {
        println!("  {kind:<28} {count:>8.0}");
    }
    println!(
        "operator CPU while converging: {:.1} s; peak RSS {:.0} MiB",
        done.cpu - start.cpu,
        done.rss
    );
}

/// One resync interval at rest after Ready.
async fn at_rest(args: &Args, op: &Operator, pid: u32, ready: &Sample) {
    tokio::time::sleep(args.resync + Duration::from_secs(5)).await;
    let rest = Sample::take(op, pid).await;
    let secs = args.resync.as_secs() + 5;
    let calls = rest.since(ready, CALLS, "operation");
    print_calls(
        &format!("ECS calls in one resync at rest ({secs} s)"),
        &calls,
    );
    println!("ceil(N/10) = {}", args.services.div_ceil(10));
    let reconciles: f64 = rest.since(ready, RECONCILES, "kind").values().sum();
    println!(
        "reconciles at rest: {reconciles:.0}; operator CPU at rest: {:.1} s; peak RSS {:.0} MiB",
        rest.cpu - ready.cpu,
        rest.rss
    );
}

/// A new operator process over the converged objects: time to its first reconcile,
/// and until every service has been reconciled once, and what that costs.
async fn restart(
    args: &Args,
    env: &Environment,
    endpoint: &str,
    old: Operator,
) -> Result<(), String> {
    drop(old);
    let begun = Instant::now();
    let op = Operator::start(args, env, endpoint).await?;
    let pid = op.pid().ok_or("operator exited")?;
    let start = Sample::take(&op, pid).await;
    let (mut first, mut all) = (None, None);
    let deadline = begun + Duration::from_secs(3600);
    while all.is_none() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let reconciles = by_label(&op.metrics().await, RECONCILES, "kind");
        let services = reconciles.get("EcsService").copied().unwrap_or(0.0);
        if first.is_none() && reconciles.values().sum::<f64>() > 0.0 {
            first = Some(begun.elapsed());
        }
        if services >= args.services as f64 {
            all = Some(begun.elapsed());
        }
    }
    let done = Sample::take(&op, pid).await;
    let secs = |d: Option<Duration>| d.map_or("-".into(), |d| format!("{:.2}", d.as_secs_f64()));
    println!(
        "restart: first reconcile {} s after the process started; every service reconciled once after {} s",
        secs(first),
        secs(all)
    );
    let calls = done.since(&start, CALLS, "operation");
    print_calls("ECS calls until then", &calls);
    println!(
        "operator CPU until then: {:.1} s; peak RSS {:.0} MiB",
        done.cpu - start.cpu,
        done.rss
    );
    Ok(())
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
    println!(
        "== ecs-operator bench: {} EcsServices, {} cluster(s), {} task definition(s)",
        args.services, args.clusters, args.task_definitions
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
    let op = Operator::start(&args, &env, &ecs_endpoint).await?;
    let pid = op.pid().ok_or("operator exited")?;
    let (start, ready, count, applied) = converge(&args, &client, &op, pid).await?;
    print_converged(&args, &start, &ready, count, applied);
    at_rest(&args, &op, pid, &ready).await;
    restart(&args, &env, &ecs_endpoint, op).await
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
