//! The fault proxy: [microburst](https://pypi.org/project/microburst/) (pip-installed
//! into the venv) in front of an ECS endpoint, for the resilience tests. It speaks
//! ECS's JSON protocol, so a rule names an ECS operation and the fault arrives as
//! the SDK would see it from real ECS: a `ThrottlingException` envelope, a 5xx, a
//! reset connection, a truncated body, or a reply cut after ECS acted on the request.
//!
//! microburst draws its probabilities from Python's `random`; the launcher seeds it,
//! so a run's faults replay with the same seed (the test prints it).

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use crate::{Error, cache_dir, free_port, log_file, process};

const CONTROL: &str = "/_microburst";

/// A running fault proxy; stopped on drop.
pub struct FaultProxy {
    /// What clients talk to instead of the upstream.
    pub url: String,
    addr: String,
    child: Child,
}

fn launcher() -> PathBuf {
    cache_dir().join("venv/bin/python3")
}

/// Seeds `random` and runs microburst's own command line.
const SEEDED_MAIN: &str = "import random, sys\n\
random.seed(int(sys.argv[1]))\n\
sys.argv = ['microburst'] + sys.argv[2:]\n\
from microburst.cli import main\n\
sys.exit(main())\n";

impl FaultProxy {
    /// Starts a proxy to `upstream` with no rules (everything passes through).
    pub async fn start(run_dir: &Path, upstream: &str, seed: u64) -> Result<FaultProxy, Error> {
        let python = launcher();
        if !python.is_file() {
            return Err(Error::Missing(format!(
                "{} not found: run `make tools` (microburst is in hack/requirements.txt)",
                python.display()
            )));
        }
        let port = free_port()?;
        let (log, log_path) = log_file(run_dir, &format!("microburst-{port}"))?;
        let mut cmd = std::process::Command::new(&python);
        cmd.args(["-c", SEEDED_MAIN, &seed.to_string()])
            .args(["--upstream", upstream, "--host", "127.0.0.1"])
            .args(["--port", &port.to_string(), "--no-resign"])
            .stdin(Stdio::null())
            .stdout(
                log.try_clone()
                    .map_err(|e| Error::io("dup", &log_path, e))?,
            )
            .stderr(log);
        let child = process::spawn(cmd, run_dir).map_err(|e| Error::io("start", &python, e))?;
        let addr = format!("127.0.0.1:{port}");
        let mut proxy = FaultProxy {
            url: format!("http://{addr}"),
            addr,
            child,
        };
        for _ in 0..200 {
            if crate::http_get_ok(&proxy.addr, &format!("{CONTROL}/health")).await {
                return Ok(proxy);
            }
            if let Ok(Some(status)) = proxy.child.try_wait() {
                return Err(Error::Exited {
                    what: "microburst".into(),
                    status,
                    log: crate::tail(&log_path, 30),
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(Error::NotReady {
            what: "microburst".into(),
            secs: 20,
            log: crate::tail(&log_path, 30),
        })
    }

    /// Replaces every rule (microburst's rule list, see its README).
    pub async fn set_rules(&self, rules: &serde_json::Value) -> Result<(), String> {
        self.control("POST", "/rules", Some(rules)).await.map(drop)
    }

    /// Removes every rule: from now on everything passes through.
    pub async fn clear(&self) -> Result<(), String> {
        self.set_rules(&serde_json::json!([])).await
    }

    /// microburst's aggregates: `requests.total`, `requests.faulted`, per-rule hits.
    pub async fn stats(&self) -> Result<serde_json::Value, String> {
        self.control("GET", "/stats", None).await
    }

    /// The faults that fired, oldest first (`operation`, `action`, ...).
    pub async fn fired(&self) -> Result<Vec<serde_json::Value>, String> {
        let all = self.control("GET", "/fired?limit=100000", None).await?;
        Ok(all.as_array().cloned().unwrap_or_default())
    }

    async fn control(
        &self,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<serde_json::Value, String> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let request = format!(
            "{method} {CONTROL}{path} HTTP/1.0\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
             Content-Length: {len}\r\nConnection: close\r\n\r\n{body}",
            addr = self.addr,
            len = body.len()
        );
        let exchange = async {
            let mut stream = tokio::net::TcpStream::connect(&self.addr).await?;
            stream.write_all(request.as_bytes()).await?;
            let mut answer = String::new();
            stream.read_to_string(&mut answer).await?;
            Ok::<String, std::io::Error>(answer)
        };
        let answer = tokio::time::timeout(Duration::from_secs(10), exchange)
            .await
            .map_err(|_| format!("microburst {method} {path}: no answer in 10 s"))?
            .map_err(|e| format!("microburst {method} {path}: {e}"))?;
        let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
        if !head.lines().next().is_some_and(|l| l.contains(" 20")) {
            return Err(format!("microburst {method} {path}: {head}"));
        }
        if body.trim().is_empty() {
            return Ok(serde_json::Value::Null);
        }
        serde_json::from_str(body).map_err(|e| format!("microburst {method} {path}: {e}: {body}"))
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        process::stop(&mut self.child);
    }
}
