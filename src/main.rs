use std::process::ExitCode;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use ecs_operator::api::cluster::EcsCluster;
use ecs_operator::api::scheduled_task::EcsScheduledTask;
use ecs_operator::api::service::EcsService;
use ecs_operator::api::task::EcsTask;
use ecs_operator::api::task_definition::EcsTaskDefinition;
use ecs_operator::ecs::limiter::{self, Limiter, Rate};
use ecs_operator::reconcile::{self, Context};
use ecs_operator::{api, ecs, telemetry};
use kube::Client;
use tokio::sync::watch;
use tracing::{error, info};

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

    /// Share of each ECS API rate quota (per account and region) this operator may use,
    /// leaving the rest to other tools: 1.0 uses the full documented rate and burst.
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

fn parse_fraction(s: &str) -> Result<f64, String> {
    let f: f64 = s.parse().map_err(|_| format!("not a number: {s}"))?;
    if f > 0.0 && f <= 1.0 {
        Ok(f)
    } else {
        Err("must be greater than 0 and at most 1".into())
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
    let client = Client::try_default().await?;
    let version = client.apiserver_version().await?;
    info!(
        kubernetes = %version.git_version,
        namespace = args.namespace.as_deref().unwrap_or("<all>"),
        "connected to Kubernetes"
    );

    let metrics = Arc::new(telemetry::Metrics::default());
    let sdk = ecs::load_sdk_config().await;
    let fraction = args.ecs_rate_fraction;
    let limiter = Limiter::new(|c| {
        let r = limiter::default_rate(c);
        Rate {
            per_second: r.per_second * fraction,
            burst: (r.burst * fraction).max(1.0),
        }
    });
    let ecs = ecs::EcsApi::new(ecs::client(&sdk), limiter, metrics.clone());
    // One cheap read proves the endpoint, region and credentials work.
    ecs.call(
        "ListClusters",
        ecs::Category::Read,
        ecs.client.list_clusters().max_results(1).send(),
    )
    .await?;
    info!(
        region = sdk.region().map(|r| r.as_ref()).unwrap_or("<none>"),
        endpoint = sdk.endpoint_url().unwrap_or("<default>"),
        "connected to ECS"
    );

    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let ready = Arc::new(AtomicBool::new(false));
    let server = tokio::spawn(telemetry::serve(
        args.metrics_addr,
        metrics.clone(),
        ready.clone(),
        stopped(),
    ));

    let ctx = Arc::new(Context::new(client, ecs, metrics, args.resync_interval));
    let ns = args.namespace.clone();
    let c = args.concurrency;
    let controllers = vec![
        tokio::spawn({
            let (ctx, stop, ns) = (ctx.clone(), stopped(), ns.clone());
            async move { reconcile::run::<EcsCluster>(ctx, ns.as_deref(), c, stop).await }
        }),
        tokio::spawn({
            let (ctx, stop, ns) = (ctx.clone(), stopped(), ns.clone());
            async move { reconcile::run::<EcsTaskDefinition>(ctx, ns.as_deref(), c, stop).await }
        }),
        tokio::spawn({
            let (ctx, stop, ns) = (ctx.clone(), stopped(), ns.clone());
            async move { reconcile::run::<EcsService>(ctx, ns.as_deref(), c, stop).await }
        }),
        tokio::spawn({
            let (ctx, stop, ns) = (ctx.clone(), stopped(), ns.clone());
            async move { reconcile::run::<EcsTask>(ctx, ns.as_deref(), c, stop).await }
        }),
        tokio::spawn({
            let (ctx, stop, ns) = (ctx.clone(), stopped(), ns.clone());
            async move { reconcile::run::<EcsScheduledTask>(ctx, ns.as_deref(), c, stop).await }
        }),
    ];
    ready.store(true, Ordering::Relaxed);

    shutdown.await;
    info!("shutting down: finishing in-flight reconciles");
    let _ = stop_tx.send(true);
    // In-flight reconciles get a bounded time to finish; a watcher stuck in
    // backoff must not keep the pod from terminating.
    let drain = async {
        for c in controllers {
            let _ = c.await;
        }
        match server.await {
            Ok(Err(e)) => error!(error = %e, "metrics server failed"),
            Err(e) => error!(error = %e, "metrics server task failed"),
            Ok(Ok(())) => {}
        }
    };
    if tokio::time::timeout(Duration::from_secs(20), drain)
        .await
        .is_err()
    {
        info!("shutdown grace period (20s) over; exiting");
    }
    Ok(())
}

fn shutdown_signal() -> Result<impl std::future::Future<Output = ()>, ecs_operator::Error> {
    use tokio::signal::unix::{SignalKind, signal};
    let err = |e: std::io::Error| ecs_operator::Error::Config(format!("cannot watch signals: {e}"));
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
        assert!(parse_fraction("1.5").is_err());
    }

    #[test]
    fn unknown_log_format_is_rejected() {
        assert!(Cli::try_parse_from(["ecs-operator", "run", "--log-format", "xml"]).is_err());
    }
}
