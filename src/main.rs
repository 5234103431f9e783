use std::process::ExitCode;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use std::future::Future;
use std::pin::Pin;

use clap::{Args, Parser, Subcommand};
use ecs_operator::ecs::limiter::{self, Limiter, Rate};
use ecs_operator::kinds::{self, Shutdown};
use ecs_operator::reconcile::Context;
use ecs_operator::{api, ecs, telemetry};
use kube::Client;
use tokio::sync::watch;
use tracing::{error, info, warn};

/// Kubernetes operator that makes Amazon ECS declarative.
#[derive(Parser, Debug)]
#[command(name = "ecs-operator", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the operator against the current kubeconfig / in-cluster config and
    /// the standard AWS credential chain.
    Run(RunArgs),
    /// Print the CustomResourceDefinitions as YAML (what `crds/` holds).
    Crd,
    /// Print the version and the API it serves.
    Version,
}

#[derive(Args, Debug)]
struct RunArgs {
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "ECS_OPERATOR_NAMESPACE")]
    namespace: Option<String>,

    /// Reconcile only objects whose labels match this label selector (e.g.
    /// "ecs.operator.dev/shard=a"): one shard of several operator deployments, each
    /// with its own Lease (--leader-election-id) and share of the quota
    /// (--ecs-rate-fraction). Referenced objects are read whatever their labels.
    #[arg(long, env = "ECS_OPERATOR_SELECTOR")]
    selector: Option<String>,

    /// Log output format; the level comes from RUST_LOG (default info).
    #[arg(long, env = "ECS_OPERATOR_LOG_FORMAT", value_enum, default_value_t = telemetry::LogFormat::Text)]
    log_format: telemetry::LogFormat,

    /// Re-check every resource this often, to find and correct drift made outside
    /// Kubernetes (e.g. "5m", "30s", "1h").
    #[arg(long, env = "ECS_OPERATOR_RESYNC_INTERVAL", default_value = "5m", value_parser = parse_duration)]
    resync_interval: Duration,

    /// Address for /metrics, /healthz and /readyz.
    #[arg(
        long,
        env = "ECS_OPERATOR_METRICS_ADDR",
        default_value = "0.0.0.0:8080"
    )]
    metrics_addr: SocketAddr,

    /// Objects of one kind reconciled at the same time.
    #[arg(long, env = "ECS_OPERATOR_CONCURRENCY", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    concurrency: u16,

    /// Run only while holding a Lease, so several replicas can run and one reconciles
    /// (the others wait and take over when the leader goes away).
    #[arg(long, env = "ECS_OPERATOR_LEADER_ELECT", default_value_t = false)]
    leader_elect: bool,

    /// Namespace of the Lease (default: POD_NAMESPACE, else --namespace, else "default").
    #[arg(long, env = "ECS_OPERATOR_LEADER_ELECTION_NAMESPACE")]
    leader_election_namespace: Option<String>,

    /// Name of the Lease.
    #[arg(
        long,
        env = "ECS_OPERATOR_LEADER_ELECTION_ID",
        default_value = "ecs-operator"
    )]
    leader_election_id: String,

    /// How long a leader's Lease stays valid without renewal: the longest a standby
    /// waits after the leader died (e.g. "15s").
    #[arg(long, env = "ECS_OPERATOR_LEADER_ELECTION_LEASE_DURATION", default_value = "15s", value_parser = parse_lease)]
    leader_election_lease_duration: Duration,

    /// Share of each ECS API rate quota (per account and region) this operator may use:
    /// 1.0 is the full documented rate and burst, below 1 leaves the rest to other tools
    /// (or to other shards of the operator), above 1 (up to 1000) is for accounts with
    /// raised quotas and for emulators.
    #[arg(long, env = "ECS_OPERATOR_ECS_RATE_FRACTION", default_value_t = 1.0, value_parser = parse_fraction)]
    ecs_rate_fraction: f64,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| e.to_string())?;
    if d < Duration::from_secs(1) {
        return Err("must be at least 1s".into());
    }
    Ok(d)
}

fn parse_lease(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| e.to_string())?;
    if d < Duration::from_secs(3) {
        return Err("must be at least 3s".into());
    }
    Ok(d)
}

/// Raised quotas are a few times the default; this only stops typos (1e9).
const MAX_RATE_FRACTION: f64 = 1000.0;

fn parse_fraction(s: &str) -> Result<f64, String> {
    let f: f64 = s.parse().map_err(|_| format!("not a number: {s}"))?;
    if f > 0.0 && f <= MAX_RATE_FRACTION {
        Ok(f)
    } else {
        Err(format!(
            "must be greater than 0 and at most {MAX_RATE_FRACTION}"
        ))
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Crd => match api::crds_yaml() {
            Ok(yaml) => {
                print!("{yaml}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Version => {
            println!(
                "ecs-operator {} (API {}/{})",
                env!("CARGO_PKG_VERSION"),
                api::GROUP,
                api::VERSION
            );
            ExitCode::SUCCESS
        }
        Command::Run(args) => {
            telemetry::init(args.log_format);
            let rt = match tokio::runtime::Runtime::new() {
                Ok(rt) => rt,
                Err(e) => {
                    error!(error = %e, "cannot start the async runtime");
                    return ExitCode::FAILURE;
                }
            };
            match rt.block_on(run(args)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    error!(error = %e, "ecs-operator stopped");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

async fn run(args: RunArgs) -> Result<(), ecs_operator::Error> {
    // Register the handlers before anything slow, so a SIGTERM during start-up
    // is a clean shutdown rather than the default (kill).
    let shutdown = shutdown_signal()?;
    tokio::pin!(shutdown);
    let client = Client::try_default().await?;
    let version = client.apiserver_version().await?;
    info!(
        kubernetes = %version.git_version,
        namespace = args.namespace.as_deref().unwrap_or("<all>"),
        "connected to Kubernetes"
    );
    let metrics = Arc::new(telemetry::Metrics::default());
    let ecs = connect_ecs(args.ecs_rate_fraction, metrics.clone()).await?;

    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = move || -> Shutdown {
        let mut rx = stop_rx.clone();
        Box::pin(async move {
            let _ = rx.wait_for(|s| *s).await;
        })
    };
    let ready = Arc::new(AtomicBool::new(false));
    let server = tokio::spawn(telemetry::serve(
        args.metrics_addr,
        metrics.clone(),
        ready.clone(),
        stopped(),
    ));
    // Ready means "up and connected"; a standby waiting for the Lease is ready too,
    // or a rolling update of several replicas would never finish.
    ready.store(true, Ordering::Relaxed);
    let mut leadership = match lead(&client, &args, &mut shutdown).await? {
        Lead::Alone => None,
        Lead::Leader(l) => Some(l),
        Lead::Stopped => {
            let _ = stop_tx.send(true);
            return Ok(());
        }
    };

    let ctx = Arc::new(
        Context::new(
            client,
            ecs,
            metrics,
            args.resync_interval,
            args.namespace.clone(),
        )
        .with_selector(args.selector.clone()),
    );
    ctx.start_shared_watches();
    let prober = tokio::spawn(ctx.ecs.clone().probe_while_down());
    let controllers: Vec<_> = kinds::all()
        .iter()
        .map(|k| {
            let ns = args.namespace.clone();
            tokio::spawn(k.controller(ctx.clone(), ns, args.concurrency, stopped()))
        })
        .collect();

    let lost = until_stopped(&mut shutdown, leadership.as_mut()).await;
    if lost {
        // Someone else may reconcile now: no draining, stop at once and let the pod
        // restart as a standby.
        error!("lost the leader Lease; stopping");
        controllers.iter().for_each(|c| c.abort());
    }
    info!("shutting down: finishing in-flight reconciles");
    let _ = stop_tx.send(true);
    prober.abort();
    drain(controllers, server).await;
    if let Some(leader) = leadership {
        leader.release().await;
    }
    if lost {
        return Err(ecs_operator::Error::Startup("lost the leader Lease".into()));
    }
    Ok(())
}

/// The ECS client, with its share of the quota. One cheap read proves the endpoint,
/// region and credentials work: a refusal (credentials, permissions, region) or no
/// endpoint at all stops the process with the reason; an endpoint that answers with
/// server errors does not (the resources report it, with backoff, and recover).
async fn connect_ecs(
    fraction: f64,
    metrics: Arc<telemetry::Metrics>,
) -> Result<ecs::EcsApi, ecs_operator::Error> {
    let sdk = ecs::load_sdk_config().await;
    let limiter = Limiter::new(|c| {
        let r = limiter::default_rate(c);
        Rate {
            per_second: r.per_second * fraction,
            burst: (r.burst * fraction).max(1.0),
        }
    });
    let ecs = ecs::EcsApi::new(ecs::client(&sdk), limiter, metrics)
        .with_autoscaling(ecs::autoscaling_client(&sdk))
        .with_scaling(ecs::scaling_client(&sdk))
        .with_cloudwatch(ecs::cloudwatch_client(&sdk));
    let region = sdk.region().map(|r| r.as_ref()).unwrap_or("<none>");
    let endpoint = sdk.endpoint_url().unwrap_or("<default>");
    let probe = ecs.client.list_clusters().max_results(1).send();
    match ecs.call("ListClusters", ecs::Category::Read, probe).await {
        Ok(_) => info!(region, endpoint, "connected to ECS"),
        Err(e) if e.is_retryable() && !ecs::is_unreachable(&e) => {
            warn!(region, endpoint, error = %e, "ECS is not answering yet; starting anyway")
        }
        Err(e) => return Err(e),
    }
    Ok(ecs)
}

/// Whether this process may reconcile.
enum Lead {
    /// No leader election: always.
    Alone,
    /// Holds the Lease (watched by a watchdog).
    Leader(Leader),
    /// Shut down before it became the leader.
    Stopped,
}

struct Leader {
    holder: watch::Receiver<bool>,
    task: LeaseTask,
    watchdog: tokio::task::JoinHandle<()>,
}

impl Leader {
    /// Closing the channel releases the Lease (a standby takes it at its next try).
    async fn release(self) {
        self.watchdog.abort();
        drop(self.holder);
        let _ = tokio::time::timeout(Duration::from_secs(5), self.task).await;
        info!("released the leader Lease");
    }
}

/// With --leader-elect, waits until this process holds the Lease.
async fn lead(
    client: &Client,
    args: &RunArgs,
    shutdown: &mut Pin<&mut impl Future<Output = ()>>,
) -> Result<Lead, ecs_operator::Error> {
    if !args.leader_elect {
        return Ok(Lead::Alone);
    }
    let Leadership {
        holder: mut rx,
        task,
        namespace,
        identity,
    } = leader_election(client, args).await?;
    info!(lease = %args.leader_election_id, "waiting to become the leader");
    let became = tokio::select! {
        res = rx.wait_for(|leader| *leader) => Some(res.is_ok()),
        _ = shutdown.as_mut() => None,
    };
    match became {
        Some(true) => {}
        Some(false) => {
            return Err(ecs_operator::Error::Startup(
                "leader election stopped (see the log above)".into(),
            ));
        }
        None => {
            info!("stopped before becoming the leader");
            drop(rx);
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
            return Ok(Lead::Stopped);
        }
    }
    info!(lease = %args.leader_election_id, "became the leader");
    let watchdog = tokio::spawn(lease_lost(
        client.clone(),
        namespace,
        args.leader_election_id.clone(),
        identity,
        args.leader_election_lease_duration,
    ));
    Ok(Lead::Leader(Leader {
        holder: rx,
        task,
        watchdog,
    }))
}

/// Waits for a shutdown signal, or (leader) for the Lease to be lost: true then.
async fn until_stopped(
    shutdown: &mut Pin<&mut impl Future<Output = ()>>,
    leader: Option<&mut Leader>,
) -> bool {
    let Some(leader) = leader else {
        shutdown.as_mut().await;
        return false;
    };
    tokio::select! {
        _ = shutdown.as_mut() => false,
        _ = leader.holder.wait_for(|leader| !*leader) => true,
        _ = &mut leader.watchdog => true,
    }
}

/// In-flight reconciles get a bounded time to finish; a watcher stuck in backoff
/// must not keep the pod from terminating.
async fn drain(
    controllers: Vec<tokio::task::JoinHandle<()>>,
    server: tokio::task::JoinHandle<Result<(), std::io::Error>>,
) {
    let all = async {
        for c in controllers {
            let _ = c.await;
        }
        match server.await {
            Ok(Err(e)) => error!(error = %e, "metrics server failed"),
            Err(e) => error!(error = %e, "metrics server task failed"),
            Ok(Ok(())) => {}
        }
    };
    if tokio::time::timeout(Duration::from_secs(20), all)
        .await
        .is_err()
    {
        info!("shutdown grace period (20s) over; exiting");
    }
}

type LeaseTask = tokio::task::JoinHandle<
    Result<kube_lease_manager::LeaseManager, kube_lease_manager::LeaseManagerError>,
>;

struct Leadership {
    holder: watch::Receiver<bool>,
    task: LeaseTask,
    namespace: String,
    identity: String,
}

/// Starts competing for the Lease; the receiver says whether we hold it.
async fn leader_election(
    client: &Client,
    args: &RunArgs,
) -> Result<Leadership, ecs_operator::Error> {
    let namespace = args
        .leader_election_namespace
        .clone()
        .or_else(|| std::env::var("POD_NAMESPACE").ok())
        .or_else(|| args.namespace.clone())
        .unwrap_or_else(|| "default".into());
    let identity = std::env::var("POD_NAME").unwrap_or_else(|_| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        format!("{}-{}", host.trim(), std::process::id())
    });
    let duration = args.leader_election_lease_duration.as_secs();
    let manager =
        kube_lease_manager::LeaseManagerBuilder::new(client.clone(), &args.leader_election_id)
            .with_namespace(&namespace)
            .with_identity(&identity)
            .with_duration(duration)
            // Renew at half the duration, leaving the watchdog (`lease_lost`) room to
            // stop a leader whose renewals fail before the Lease can expire.
            .with_grace((duration / 2).max(1))
            .build()
            .await
            .map_err(|e| ecs_operator::Error::Startup(format!("leader election: {e}")))?;
    info!(%namespace, %identity, lease = %args.leader_election_id, "leader election enabled");
    let (holder, task) = manager.watch().await;
    Ok(Leadership {
        holder,
        task,
        namespace,
        identity,
    })
}

/// Resolves when this process can no longer be sure it holds the Lease. The lease
/// crate keeps retrying renewals quietly while the apiserver is unreachable; a
/// leader must stop before its Lease could have expired and a standby taken over.
async fn lease_lost(
    client: Client,
    namespace: String,
    name: String,
    identity: String,
    duration: Duration,
) {
    use k8s_openapi::api::coordination::v1::Lease;
    let api: kube::Api<Lease> = kube::Api::namespaced(client, &namespace);
    // Renewals come every half duration; stop once the last renewal seen is three
    // quarters old, still before the Lease expires for the standbys. The deadline
    // counts from the renewal, not from when we read it: while the apiserver is
    // unreachable the Lease runs out from its last renewTime.
    let limit = duration * 3 / 4;
    let mut deadline = std::time::Instant::now() + limit;
    loop {
        // Looked at every 1/16 of the duration (a read that hangs gives up as soon),
        // so the stop comes at most 1/8 after the deadline: before the expiry.
        tokio::time::sleep(duration / 16).await;
        let read = match tokio::time::timeout(duration / 16, api.get(&name)).await {
            Ok(answer) => answer.map_err(|e| e.to_string()),
            Err(_) => Err("no answer in time".to_string()),
        };
        match read {
            Ok(lease) => {
                let spec = lease.spec.unwrap_or_default();
                if spec.holder_identity.as_deref() != Some(identity.as_str()) {
                    return;
                }
                // renewTime is written by the holder (us), so our clock reads it.
                let age = spec
                    .renew_time
                    .map(|t| k8s_openapi::jiff::Timestamp::now().duration_since(t.0))
                    .and_then(|d| Duration::try_from(d).ok())
                    .unwrap_or_default();
                if age > limit {
                    return;
                }
                deadline = std::time::Instant::now() + (limit - age);
            }
            Err(error) => {
                if std::time::Instant::now() > deadline {
                    error!(%error, "cannot confirm the leader Lease");
                    return;
                }
            }
        }
    }
}

fn shutdown_signal() -> Result<impl std::future::Future<Output = ()>, ecs_operator::Error> {
    use tokio::signal::unix::{SignalKind, signal};
    let err =
        |e: std::io::Error| ecs_operator::Error::Startup(format!("cannot watch signals: {e}"));
    let mut term = signal(SignalKind::terminate()).map_err(err)?;
    let mut int = signal(SignalKind::interrupt()).map_err(err)?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn run_flags_parse() {
        let cli = Cli::try_parse_from([
            "ecs-operator",
            "run",
            "--namespace",
            "team-a",
            "--log-format",
            "json",
        ])
        .expect("valid flags");
        let Command::Run(args) = cli.command else {
            panic!("expected run");
        };
        assert_eq!(args.namespace.as_deref(), Some("team-a"));
        assert_eq!(args.log_format, telemetry::LogFormat::Json);
    }

    #[test]
    fn durations_and_fractions_are_validated() {
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert!(parse_duration("10ms").is_err());
        assert!(parse_fraction("0.5").is_ok());
        assert!(parse_fraction("0").is_err());
        assert!(parse_fraction("1.5").is_ok());
        assert!(parse_fraction("100").is_ok());
        assert!(parse_fraction("1001").is_err());
        assert!(parse_fraction("-1").is_err());
    }

    #[test]
    fn unknown_log_format_is_rejected() {
        assert!(Cli::try_parse_from(["ecs-operator", "run", "--log-format", "xml"]).is_err());
    }
}
