//! Application Auto Scaling: ministack does not speak it, so the environment runs
//! moto's server (PyPI `moto[server]`) through our launcher
//! `testenv/strict/aas.py`, which checks ECS services against the real ECS endpoint
//! and adds what real Application Auto Scaling does and moto does not (visibility
//! lag after CreateService, deregistration deleting policies, tags, exact error
//! codes, ...). The rules and their AWS sources are in `testenv/strict/README.md`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::{Error, log_file, repo_root};

/// `ECS_OPERATOR_TEST_AAS_ENDPOINT`: an Application Auto Scaling endpoint already
/// running (e.g. the one `make env-up` started), used as is.
pub const ENV_AAS_ENDPOINT: &str = "ECS_OPERATOR_TEST_AAS_ENDPOINT";
/// What the AWS SDK reads to send Application Auto Scaling calls to an endpoint of
/// their own (the SDK's service-specific `AWS_ENDPOINT_URL_<SERVICE>`).
pub const ENV_SDK_ENDPOINT: &str = "AWS_ENDPOINT_URL_APPLICATION_AUTO_SCALING";
/// The launcher's health check: 200 once the patched server has answered a call.
pub const HEALTH_PATH: &str = "/_aas/health";

pub(crate) fn script() -> PathBuf {
    repo_root().join("testenv/strict/aas.py")
}

/// The launcher for an Application Auto Scaling endpoint on `127.0.0.1:port` that
/// checks services against `ecs` (the ECS endpoint itself, not the strict layer:
/// the launcher models its own visibility lag). Output goes to `aas.log`.
pub(crate) fn command(run_dir: &Path, ecs: &str, port: u16) -> Result<(Command, PathBuf), Error> {
    let script = script();
    if !script.is_file() {
        return Err(Error::Missing(format!("{} not found", script.display())));
    }
    let (log, log_path) = log_file(run_dir, "aas")?;
    let mut cmd = Command::new(crate::strict::python());
    cmd.arg(&script)
        .arg("--host")
        .arg("127.0.0.1")
        .arg("--port")
        .arg(port.to_string())
        .arg("--ecs")
        .arg(ecs)
        .env("ECS_OPERATOR_TESTENV_RUN", run_dir)
        .stdin(Stdio::null())
        .stdout(
            log.try_clone()
                .map_err(|e| Error::io("dup", &log_path, e))?,
        )
        .stderr(log);
    Ok((cmd, log_path))
}
