//! The strict layer: a proxy of ours (`testenv/strict/strict_ecs.py`) in front of
//! the ECS endpoint that adds what real ECS does and the emulator does not
//! (eventual consistency, DRAINING, paging, exact error codes, tag limits, task
//! exits). Each rule has a name and can be switched off for one test; the rules and
//! their AWS sources are listed in `testenv/strict/README.md`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::{Error, cache_dir, free_port, log_file, process, repo_root};

/// `ECS_STRICT_SEED`: replay the random delays of an earlier run (its log and the
/// test output print the seed).
pub const ENV_SEED: &str = "ECS_STRICT_SEED";
/// `ECS_OPERATOR_TEST_ECS_STRICT=off`: talk to the endpoint directly (not for CI).
pub const ENV_STRICT: &str = "ECS_OPERATOR_TEST_ECS_STRICT";

/// The seed for this run: `ECS_STRICT_SEED`, else a fresh one.
pub fn seed() -> u64 {
    std::env::var(ENV_SEED)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| {
            let hex = crate::random_hex(4);
            u64::from_str_radix(&hex, 16).unwrap_or(1)
        })
}

pub fn enabled() -> bool {
    !matches!(
        std::env::var(ENV_STRICT).ok().as_deref().map(str::trim),
        Some("off" | "0" | "false")
    )
}

/// The venv's python (it has the strict layer's and the launchers' packages), else `python3`.
pub(crate) fn python() -> PathBuf {
    let venv = cache_dir().join("venv/bin/python3");
    if venv.is_file() {
        venv
    } else {
        PathBuf::from("python3")
    }
}

fn script() -> PathBuf {
    repo_root().join("testenv/strict/strict_ecs.py")
}

/// Starts one proxy to `upstream` with the `disabled` rules off. Returns its URL
/// and process (stopped by the caller).
pub async fn start(
    run_dir: &Path,
    upstream: &str,
    seed: u64,
    disabled: &[&str],
) -> Result<(String, Child), Error> {
    let script = script();
    if !script.is_file() {
        return Err(Error::Missing(format!("{} not found", script.display())));
    }
    let port = free_port()?;
    let name = if disabled.is_empty() {
        "strict-ecs".to_string()
    } else {
        format!("strict-ecs-without-{}", disabled.join("+"))
    };
    let (log, log_path) = log_file(run_dir, &name)?;
    let mut cmd = Command::new(python());
    cmd.arg(&script)
        .arg("--upstream")
        .arg(upstream)
        .arg("--bind")
        .arg("127.0.0.1")
        .arg("--port")
        .arg(port.to_string())
        .arg("--seed")
        .arg(seed.to_string())
        .env("ECS_OPERATOR_TESTENV_RUN", run_dir)
        .env_remove(ENV_SEED)
        .env_remove("ECS_STRICT_DISABLE")
        .stdin(Stdio::null())
        .stdout(
            log.try_clone()
                .map_err(|e| Error::io("dup", &log_path, e))?,
        )
        .stderr(log);
    if !disabled.is_empty() {
        cmd.arg("--disable").arg(disabled.join(","));
    }
    let mut child = process::spawn(cmd, run_dir).map_err(|e| Error::io("start", &script, e))?;
    let addr = format!("127.0.0.1:{port}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        if crate::http_get_ok(&addr, "/_strict/health").await {
            return Ok((format!("http://{addr}"), child));
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(Error::Exited {
                what: name,
                status,
                log: crate::tail(&log_path, 30),
            });
        }
        if std::time::Instant::now() > deadline {
            process::stop(&mut child);
            return Err(Error::NotReady {
                what: name,
                secs: 20,
                log: crate::tail(&log_path, 30),
            });
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
