use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use ecs_operator::{api, ecs, telemetry};
use kube::Client;
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
    let client = Client::try_default().await?;
    let version = client.apiserver_version().await?;
    info!(
        kubernetes = %version.git_version,
        namespace = args.namespace.as_deref().unwrap_or("<all>"),
        "connected to Kubernetes"
    );

    let sdk = ecs::load_sdk_config().await;
    let ecs = ecs::client(&sdk);
    // One cheap read proves the endpoint, region and credentials work.
    ecs.list_clusters()
        .max_results(1)
        .send()
        .await
        .map_err(|e| ecs::sdk_error("ListClusters", e))?;
    info!(
        region = sdk.region().map(|r| r.as_ref()).unwrap_or("<none>"),
        endpoint = sdk.endpoint_url().unwrap_or("<default>"),
        "connected to ECS"
    );

    shutdown_signal().await;
    info!("shutting down");
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
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
    fn unknown_log_format_is_rejected() {
        assert!(Cli::try_parse_from(["ecs-operator", "run", "--log-format", "xml"]).is_err());
    }
}
