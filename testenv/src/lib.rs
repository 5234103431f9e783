//! A real test environment on loopback: kube-apiserver + etcd (built from the
//! official Kubernetes Go modules by `hack/envtest/build.sh`), an ECS API
//! endpoint (ministack) and an Application Auto Scaling endpoint (moto, see [`aas`]).
//!
//! Sources, in order of preference:
//! - Kubernetes: `ECS_OPERATOR_TEST_KUBECONFIG` (an existing cluster, e.g. kind),
//!   else binaries from `KUBEBUILDER_ASSETS`, else the ones `build.sh` builds.
//! - ECS: `ECS_OPERATOR_TEST_ECS_ENDPOINT` (an endpoint already running), else
//!   `ministack` from `$MINISTACK`, the Makefile's venv, or `PATH`.
//! - Application Auto Scaling: `ECS_OPERATOR_TEST_AAS_ENDPOINT` (an endpoint already
//!   running), else `testenv/strict/aas.py` when we started the ECS endpoint, else none.
//!
//! Everything this starts dies with the process that started it (see [`process`]).

pub mod aas;
pub mod faults;
pub mod pki;
pub mod process;
pub mod strict;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_ecs::config::{BehaviorVersion, Credentials, Region};
use kube::config::{KubeConfigOptions, Kubeconfig};

pub const ENV_KUBECONFIG: &str = "ECS_OPERATOR_TEST_KUBECONFIG";
pub const ENV_ECS_ENDPOINT: &str = "ECS_OPERATOR_TEST_ECS_ENDPOINT";
pub const ENV_ASSETS: &str = "KUBEBUILDER_ASSETS";
pub const ENV_CACHE: &str = "ECS_OPERATOR_CACHE";
pub const REGION: &str = "us-east-1";
/// ministack's fixed account.
pub const ACCOUNT_ID: &str = "000000000000";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("test environment: {0}")]
    Missing(String),
    #[error("test environment: {what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("test environment: {what} did not become ready within {secs}s{log}")]
    NotReady {
        what: String,
        secs: u64,
        log: String,
    },
    #[error("test environment: {what} exited during start-up ({status}){log}")]
    Exited {
        what: String,
        status: std::process::ExitStatus,
        log: String,
    },
    #[error("test environment: certificates: {0}")]
    Pki(#[from] rcgen::Error),
    #[error("test environment: kubeconfig: {0}")]
    Kubeconfig(#[from] kube::config::KubeconfigError),
    #[error("test environment: kube client: {0}")]
    Kube(#[from] kube::Error),
}

impl Error {
    pub fn io(what: &'static str, path: &Path, source: std::io::Error) -> Self {
        Error::Io {
            what,
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Where the Kubernetes API comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KubeSource {
    /// We started kube-apiserver + etcd from this directory.
    Started { binaries: PathBuf },
    /// An existing cluster named by `ECS_OPERATOR_TEST_KUBECONFIG`.
    External,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EcsSource {
    Started,
    External,
}

/// A running environment. Dropping it stops what it started.
pub struct Environment {
    pub kubeconfig: PathBuf,
    pub kube_config: kube::Config,
    pub kube_source: KubeSource,
    /// What the operator and the tests talk to: the strict layer in front of the
    /// ECS endpoint (see [`strict`]), or the endpoint itself with the layer off.
    pub ecs_endpoint: String,
    /// The ECS endpoint behind the strict layer, for audits that must see ECS's
    /// state as it is, without the layer's delays.
    pub ecs_direct_endpoint: String,
    /// Seed of the strict layer's random delays (`ECS_STRICT_SEED` replays it);
    /// None when the layer is off.
    pub strict_seed: Option<u64>,
    /// The Application Auto Scaling endpoint (moto behind `testenv/strict/aas.py`,
    /// checking services against [`Environment::ecs_direct_endpoint`]). Empty when
    /// the ECS endpoint is external and `ECS_OPERATOR_TEST_AAS_ENDPOINT` names none.
    pub aas_endpoint: String,
    /// Extra strict proxies with some rules off, by their sorted rule list.
    strict_variants: std::sync::Mutex<Vec<(String, String, Child)>>,
    pub ecs_source: EcsSource,
    pub run_dir: PathBuf,
    /// `gitVersion` reported by the apiserver's /version.
    pub server_version: String,
    children: Vec<(String, Child)>,
    /// The kube-apiserver's command line, for `restart_apiserver`.
    apiserver_args: Vec<String>,
    restarts: u32,
}

impl std::fmt::Debug for Environment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Environment")
            .field("kubeconfig", &self.kubeconfig)
            .field("kube_source", &self.kube_source)
            .field("ecs_endpoint", &self.ecs_endpoint)
            .field("server_version", &self.server_version)
            .finish_non_exhaustive()
    }
}

/// `$ECS_OPERATOR_CACHE`, else `~/.cache/ecs-operator`.
pub fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os(ENV_CACHE).filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/tmp".into());
    PathBuf::from(home).join(".cache/ecs-operator")
}

/// The checkout holding `hack/envtest/build.sh`, found at run time: the target
/// directory is shared between checkouts (CI clones, worktrees), so a path baked
/// in at compile time may name a clone that no longer exists.
pub(crate) fn repo_root() -> PathBuf {
    let has_script = |d: &Path| d.join("hack/envtest/build.sh").is_file();
    // `cargo test` / `cargo run` set this for the package being run (the repo root).
    if let Some(d) = std::env::var_os("CARGO_MANIFEST_DIR").map(PathBuf::from)
        && has_script(&d)
    {
        return d;
    }
    if let Ok(cwd) = std::env::current_dir()
        && let Some(d) = cwd.ancestors().find(|d| has_script(d))
    {
        return d.to_path_buf();
    }
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

fn env_nonempty(key: &str) -> Option<String> {
    std::env::var(key).ok().filter(|v| !v.trim().is_empty())
}

pub(crate) fn free_port() -> Result<u16, Error> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(|e| Error::io("bind a free port on", Path::new("127.0.0.1"), e))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| Error::io("read local address of", Path::new("127.0.0.1"), e))
}

pub(crate) fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    // /dev/urandom never fails on Linux; fall back to time+pid just in case.
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .is_err()
    {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
            ^ u128::from(std::process::id());
        for (i, b) in buf.iter_mut().enumerate() {
            *b = (seed >> ((i % 16) * 8)) as u8;
        }
    }
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

pub(crate) fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    let start = all.len().saturating_sub(lines);
    if all.is_empty() {
        String::new()
    } else {
        format!(
            "\n--- last lines of {} ---\n{}",
            path.display(),
            all[start..].join("\n")
        )
    }
}

/// Finds kube-apiserver and etcd: `KUBEBUILDER_ASSETS`, else `hack/envtest/build.sh`.
pub fn kube_binaries() -> Result<PathBuf, Error> {
    if let Some(dir) = env_nonempty(ENV_ASSETS) {
        let dir = PathBuf::from(dir);
        for b in ["kube-apiserver", "etcd"] {
            if !dir.join(b).is_file() {
                return Err(Error::Missing(format!(
                    "{ENV_ASSETS}={} has no `{b}` binary",
                    dir.display()
                )));
            }
        }
        return Ok(dir);
    }
    let script = repo_root().join("hack/envtest/build.sh");
    let out = Command::new("bash")
        .arg(&script)
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| Error::io("run", &script, e))?;
    if !out.status.success() {
        return Err(Error::Missing(format!(
            "{} failed ({}); it needs Go >= 1.26 and the Go module proxy. \
             Alternatives: set {ENV_ASSETS} to a directory with kube-apiserver and etcd, \
             or {ENV_KUBECONFIG} to an existing cluster",
            script.display(),
            out.status
        )));
    }
    let dir = String::from_utf8_lossy(&out.stdout).trim().to_string();
    Ok(PathBuf::from(dir))
}

/// Finds the ministack executable.
pub fn ministack_binary() -> Result<PathBuf, Error> {
    if let Some(p) = env_nonempty("MINISTACK") {
        return Ok(PathBuf::from(p));
    }
    let venv = cache_dir().join("venv/bin/ministack");
    if venv.is_file() {
        return Ok(venv);
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let p = dir.join("ministack");
            if p.is_file() {
                return Ok(p);
            }
        }
    }
    Err(Error::Missing(format!(
        "ministack (the ECS endpoint) not found in $MINISTACK, {} or PATH: run `make tools` \
         (creates that venv from hack/requirements.txt), or set {ENV_ECS_ENDPOINT} to a running endpoint",
        venv.display()
    )))
}

pub(crate) fn log_file(run_dir: &Path, name: &str) -> Result<(std::fs::File, PathBuf), Error> {
    let path = run_dir.join(format!("{name}.log"));
    let f = std::fs::File::create(&path).map_err(|e| Error::io("create", &path, e))?;
    Ok((f, path))
}

impl Environment {
    /// Starts (or connects to) everything. Takes ~3-5 s when the binaries are built.
    pub async fn start() -> Result<Environment, Error> {
        let root = cache_dir().join("run");
        std::fs::create_dir_all(&root).map_err(|e| Error::io("create", &root, e))?;
        let killed = process::clean_stale(&root);
        if killed > 0 {
            eprintln!("testenv: killed {killed} process(es) left by an earlier run that died");
        }
        let run_dir = root.join(format!("{}-{}", std::process::id(), random_hex(4)));
        process::claim_run_dir(&run_dir).map_err(|e| Error::io("create", &run_dir, e))?;

        let mut env = Environment {
            kubeconfig: PathBuf::new(),
            kube_config: kube::Config::new("http://127.0.0.1:1".parse().expect("static URI")),
            kube_source: KubeSource::External,
            ecs_endpoint: String::new(),
            ecs_direct_endpoint: String::new(),
            strict_seed: None,
            aas_endpoint: String::new(),
            strict_variants: std::sync::Mutex::new(Vec::new()),
            ecs_source: EcsSource::External,
            run_dir,
            server_version: String::new(),
            children: Vec::new(),
            apiserver_args: Vec::new(),
            restarts: 0,
        };
        // On error, `env` is dropped here and stops whatever already started.
        env.start_ecs().await?;
        env.start_strict().await?;
        env.start_aas().await?;
        env.start_kube().await?;
        Ok(env)
    }

    /// Puts the strict layer in front of the ECS endpoint (unless switched off).
    async fn start_strict(&mut self) -> Result<(), Error> {
        self.ecs_direct_endpoint = self.ecs_endpoint.clone();
        if !strict::enabled() {
            return Ok(());
        }
        let seed = strict::seed();
        let (url, child) =
            strict::start(&self.run_dir, &self.ecs_direct_endpoint, seed, &[]).await?;
        self.children.push(("strict-ecs".into(), child));
        self.ecs_endpoint = url;
        self.strict_seed = Some(seed);
        Ok(())
    }

    /// Starts the Application Auto Scaling endpoint next to the ECS endpoint we
    /// started; an external ECS endpoint gets one only from `ECS_OPERATOR_TEST_AAS_ENDPOINT`.
    async fn start_aas(&mut self) -> Result<(), Error> {
        if let Some(ep) = env_nonempty(aas::ENV_AAS_ENDPOINT) {
            self.aas_endpoint = ep.trim_end_matches('/').to_string();
            return Ok(());
        }
        if self.ecs_source != EcsSource::Started {
            return Ok(());
        }
        let port = free_port()?;
        let (cmd, log_path) = aas::command(&self.run_dir, &self.ecs_direct_endpoint, port)?;
        let child = process::spawn(cmd, &self.run_dir)
            .map_err(|e| Error::io("start", &aas::script(), e))?;
        self.children.push(("aas".into(), child));
        let addr = format!("127.0.0.1:{port}");
        self.wait_ready("aas", &log_path, Duration::from_secs(60), || {
            http_get_ok(&addr, aas::HEALTH_PATH)
        })
        .await?;
        self.aas_endpoint = format!("http://{addr}");
        Ok(())
    }

    /// An endpoint like [`Environment::ecs_endpoint`] with the named strict rules
    /// off, for a test that needs them off (started once per rule set, same seed).
    pub async fn ecs_endpoint_without(&self, rules: &[&str]) -> Result<String, Error> {
        let Some(seed) = self.strict_seed else {
            return Ok(self.ecs_endpoint.clone());
        };
        let mut sorted: Vec<&str> = rules.to_vec();
        sorted.sort_unstable();
        let key = sorted.join(",");
        if let Some((_, url, _)) = self.variants().iter().find(|(k, _, _)| *k == key) {
            return Ok(url.clone());
        }
        let (url, child) =
            strict::start(&self.run_dir, &self.ecs_direct_endpoint, seed, &sorted).await?;
        self.variants().push((key, url.clone(), child));
        Ok(url)
    }

    fn variants(&self) -> std::sync::MutexGuard<'_, Vec<(String, String, Child)>> {
        self.strict_variants
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    async fn start_ecs(&mut self) -> Result<(), Error> {
        if let Some(ep) = env_nonempty(ENV_ECS_ENDPOINT) {
            self.ecs_endpoint = ep.trim_end_matches('/').to_string();
            self.ecs_source = EcsSource::External;
            return Ok(());
        }
        let bin = ministack_binary()?;
        let port = free_port()?;
        let dir = self.run_dir.join("ministack");
        std::fs::create_dir_all(&dir).map_err(|e| Error::io("create", &dir, e))?;
        let (log, log_path) = log_file(&self.run_dir, "ministack")?;
        let mut cmd = Command::new(&bin);
        cmd.current_dir(&dir)
            .env("BIND_HOST", "127.0.0.1")
            .env("GATEWAY_PORT", port.to_string())
            .env("IOT_MTLS_ENABLED", "0")
            .env("SFTP_ENABLED", "0")
            .env("ECS_OPERATOR_TESTENV_RUN", &self.run_dir)
            // testenv/ministack/sitecustomize.py: cluster counts recounted once per
            // answer instead of on every call (same answers, faster at 10,000 services).
            .env("PYTHONPATH", repo_root().join("testenv/ministack"))
            .stdin(Stdio::null())
            .stdout(
                log.try_clone()
                    .map_err(|e| Error::io("dup", &log_path, e))?,
            )
            .stderr(log);
        let child = process::spawn(cmd, &self.run_dir).map_err(|e| Error::io("start", &bin, e))?;
        self.children.push(("ministack".into(), child));
        self.ecs_endpoint = format!("http://127.0.0.1:{port}");
        self.ecs_source = EcsSource::Started;
        let addr = format!("127.0.0.1:{port}");
        self.wait_ready("ministack", &log_path, Duration::from_secs(60), || {
            http_get_ok(&addr, "/_ministack/health")
        })
        .await
    }

    async fn start_kube(&mut self) -> Result<(), Error> {
        if let Some(path) = env_nonempty(ENV_KUBECONFIG) {
            self.kubeconfig = PathBuf::from(path);
            self.kube_source = KubeSource::External;
        } else {
            let bins = kube_binaries()?;
            self.start_apiserver(&bins).await?;
            self.kube_source = KubeSource::Started { binaries: bins };
        }
        let kc = Kubeconfig::read_from(&self.kubeconfig)?;
        self.kube_config =
            kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?;
        let client = kube::Client::try_from(self.kube_config.clone())?;
        if self.kube_source != KubeSource::External {
            let log = self.run_dir.join("kube-apiserver.log");
            let c = client.clone();
            self.wait_ready("kube-apiserver", &log, Duration::from_secs(90), move || {
                apiserver_ready(c.clone())
            })
            .await?;
        }
        self.server_version = client.apiserver_version().await?.git_version;
        Ok(())
    }

    async fn start_apiserver(&mut self, bins: &Path) -> Result<(), Error> {
        let etcd_port = free_port()?;
        let etcd_peer = free_port()?;
        let etcd_url = format!("http://127.0.0.1:{etcd_port}");
        let (log, log_path) = log_file(&self.run_dir, "etcd")?;
        let mut etcd = Command::new(bins.join("etcd"));
        etcd.arg(format!(
            "--data-dir={}",
            self.run_dir.join("etcd").display()
        ))
        .arg(format!("--listen-client-urls={etcd_url}"))
        .arg(format!("--advertise-client-urls={etcd_url}"))
        .arg(format!("--listen-peer-urls=http://127.0.0.1:{etcd_peer}"))
        .arg("--unsafe-no-fsync")
        .env("ECS_OPERATOR_TESTENV_RUN", &self.run_dir)
        .stdin(Stdio::null())
        .stdout(
            log.try_clone()
                .map_err(|e| Error::io("dup", &log_path, e))?,
        )
        .stderr(log);
        let child = process::spawn(etcd, &self.run_dir).map_err(|e| Error::io("start", bins, e))?;
        self.children.push(("etcd".into(), child));
        let addr = format!("127.0.0.1:{etcd_port}");
        self.wait_ready("etcd", &log_path, Duration::from_secs(60), || {
            http_get_ok(&addr, "/health")
        })
        .await?;

        let pki = pki::write(&self.run_dir.join("pki"))?;
        let token = random_hex(24);
        let tokens = self.run_dir.join("pki/tokens.csv");
        std::fs::write(&tokens, format!("{token},admin,admin-uid,system:masters\n"))
            .map_err(|e| Error::io("write", &tokens, e))?;

        let port = free_port()?;
        let args = vec![
            format!("--etcd-servers={etcd_url}"),
            "--bind-address=127.0.0.1".into(),
            "--advertise-address=127.0.0.1".into(),
            format!("--secure-port={port}"),
            format!("--cert-dir={}", self.run_dir.join("pki").display()),
            format!("--tls-cert-file={}", pki.serving_cert.display()),
            format!("--tls-private-key-file={}", pki.serving_key.display()),
            "--service-cluster-ip-range=10.0.0.0/24".into(),
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
            format!(
                "--service-account-key-file={}",
                pki.service_account_pub.display()
            ),
            format!(
                "--service-account-signing-key-file={}",
                pki.service_account_key.display()
            ),
            format!("--token-auth-file={}", tokens.display()),
            "--authorization-mode=RBAC".into(),
            "--endpoint-reconciler-type=none".into(),
            "--disable-admission-plugins=ServiceAccount".into(),
            "--allow-privileged=true".into(),
        ];
        self.apiserver_args = args;
        let child = self.spawn_apiserver(bins, "kube-apiserver")?;
        self.children.push(("kube-apiserver".into(), child));

        let kubeconfig = self.run_dir.join("kubeconfig");
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: testenv\n  cluster:\n    server: https://127.0.0.1:{port}\n    certificate-authority: {ca}\nusers:\n- name: admin\n  user:\n    token: {token}\ncontexts:\n- name: testenv\n  context:\n    cluster: testenv\n    user: admin\n    namespace: default\ncurrent-context: testenv\n",
            ca = pki.ca_cert.display()
        );
        std::fs::write(&kubeconfig, text).map_err(|e| Error::io("write", &kubeconfig, e))?;
        self.kubeconfig = kubeconfig;
        Ok(())
    }

    fn spawn_apiserver(&self, bins: &Path, log_name: &str) -> Result<Child, Error> {
        let (log, log_path) = log_file(&self.run_dir, log_name)?;
        let mut api = Command::new(bins.join("kube-apiserver"));
        api.args(&self.apiserver_args)
            .env("ECS_OPERATOR_TESTENV_RUN", &self.run_dir)
            .stdin(Stdio::null())
            .stdout(
                log.try_clone()
                    .map_err(|e| Error::io("dup", &log_path, e))?,
            )
            .stderr(log);
        process::spawn(api, &self.run_dir).map_err(|e| Error::io("start", bins, e))
    }

    /// Stops the kube-apiserver this environment started, waits `down_for`, and
    /// starts it again on the same port and etcd (its data kept): an apiserver
    /// restart, or an outage of `down_for`. Returns once it is ready again.
    pub async fn restart_apiserver(&mut self, down_for: Duration) -> Result<(), Error> {
        let KubeSource::Started { binaries } = &self.kube_source else {
            return Err(Error::Missing(
                "restart_apiserver needs an apiserver this environment started".into(),
            ));
        };
        let bins = binaries.clone();
        let at = self
            .children
            .iter()
            .position(|(name, _)| name == "kube-apiserver")
            .ok_or_else(|| Error::Missing("no kube-apiserver child".into()))?;
        process::stop(&mut self.children[at].1);
        tokio::time::sleep(down_for).await;
        self.restarts += 1;
        let log_name = format!("kube-apiserver-{}", self.restarts);
        self.children[at].1 = self.spawn_apiserver(&bins, &log_name)?;
        let client = kube::Client::try_from(self.kube_config.clone())?;
        let log = self.run_dir.join(format!("{log_name}.log"));
        self.wait_ready("kube-apiserver", &log, Duration::from_secs(90), move || {
            apiserver_ready(client.clone())
        })
        .await
    }

    /// Polls `check` until it passes; fails early, with the log, if the process exited.
    async fn wait_ready<F, Fut>(
        &mut self,
        what: &str,
        log: &Path,
        limit: Duration,
        mut check: F,
    ) -> Result<(), Error>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let started = Instant::now();
        loop {
            if check().await {
                return Ok(());
            }
            if let Some((_, child)) = self.children.iter_mut().find(|(n, _)| n == what)
                && let Ok(Some(status)) = child.try_wait()
            {
                return Err(Error::Exited {
                    what: what.to_string(),
                    status,
                    log: tail(log, 30),
                });
            }
            if started.elapsed() > limit {
                return Err(Error::NotReady {
                    what: what.to_string(),
                    secs: limit.as_secs(),
                    log: tail(log, 30),
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A new client for the calling runtime (kube clients are tied to the
    /// tokio runtime that created them, and each test has its own).
    pub fn kube_client(&self) -> Result<kube::Client, Error> {
        Ok(kube::Client::try_from(self.kube_config.clone())?)
    }

    /// An ECS client through the strict layer, with the emulator's dummy credentials.
    pub fn ecs_client(&self) -> aws_sdk_ecs::Client {
        Self::ecs_client_for(&self.ecs_endpoint)
    }

    /// An ECS client that bypasses the strict layer (audits of what ECS holds).
    pub fn ecs_direct_client(&self) -> aws_sdk_ecs::Client {
        Self::ecs_client_for(&self.ecs_direct_endpoint)
    }

    pub fn ecs_client_for(endpoint: &str) -> aws_sdk_ecs::Client {
        let conf = aws_sdk_ecs::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(REGION))
            .endpoint_url(endpoint)
            .credentials_provider(Credentials::new("test", "test", None, None, "testenv"))
            .build();
        aws_sdk_ecs::Client::from_conf(conf)
    }

    /// Shell `export` lines that point tools (kubectl, the operator, the AWS
    /// SDK, and later test runs) at this environment. Tools get the strict layer;
    /// a later test run gets the endpoint behind it and starts its own layer.
    pub fn exports(&self) -> String {
        let kc = self.kubeconfig.display();
        let ep = &self.ecs_endpoint;
        let mut out = format!(
            "export KUBECONFIG={kc}\n\
             export AWS_ENDPOINT_URL={ep}\n\
             export AWS_REGION={REGION}\n\
             export AWS_ACCESS_KEY_ID=test\n\
             export AWS_SECRET_ACCESS_KEY=test\n\
             export {ENV_KUBECONFIG}={kc}\n\
             export {ENV_ECS_ENDPOINT}={direct}\n",
            direct = self.ecs_direct_endpoint
        );
        if !self.aas_endpoint.is_empty() {
            let url = &self.aas_endpoint;
            out.push_str(&format!(
                "export {sdk}={url}\n\
                 export {reuse}={url}\n",
                sdk = aas::ENV_SDK_ENDPOINT,
                reuse = aas::ENV_AAS_ENDPOINT
            ));
        }
        out
    }

    /// Stops what this environment started and removes its run directory.
    pub fn stop(&mut self) {
        for (_, _, mut child) in self.variants().drain(..) {
            process::stop(&mut child);
        }
        // Reverse start order: the apiserver before its etcd.
        while let Some((_, mut child)) = self.children.pop() {
            process::stop(&mut child);
        }
        process::release_run_dir(&self.run_dir);
    }
}

impl Drop for Environment {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Whether the apiserver behind `client` answers `/readyz` with `ok`.
async fn apiserver_ready(client: kube::Client) -> bool {
    match http::Request::get("/readyz").body(Vec::new()) {
        Ok(req) => client
            .request_text(req)
            .await
            .is_ok_and(|b| b.trim() == "ok"),
        Err(_) => false,
    }
}

/// What an operator process needs to reach a test environment: the kubeconfig, the
/// ECS `endpoint`, the Application Auto Scaling endpoint `aas_endpoint` (as
/// `AWS_ENDPOINT_URL_APPLICATION_AUTO_SCALING`; left out when empty) and static test
/// credentials (never a real AWS account).
pub fn operator_env(
    kubeconfig: &Path,
    endpoint: &str,
    aas_endpoint: &str,
) -> Vec<(&'static str, std::ffi::OsString)> {
    let mut vars = vec![
        ("KUBECONFIG", kubeconfig.into()),
        ("AWS_ENDPOINT_URL", endpoint.into()),
        ("AWS_REGION", REGION.into()),
        ("AWS_ACCESS_KEY_ID", "test".into()),
        ("AWS_SECRET_ACCESS_KEY", "test".into()),
        ("AWS_EC2_METADATA_DISABLED", "true".into()),
    ];
    if !aas_endpoint.is_empty() {
        vars.push((aas::ENV_SDK_ENDPOINT, aas_endpoint.into()));
    }
    vars
}

/// The body of a 200 answer to `GET path` on `addr` (None: no such answer in 2 s).
pub async fn http_get_body(addr: &str, path: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let attempt = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
        let req = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.ok()?;
        let mut text = String::new();
        s.read_to_string(&mut text).await.ok()?;
        let (head, body) = text.split_once("\r\n\r\n")?;
        head.contains(" 200 ").then(|| body.to_string())
    };
    tokio::time::timeout(Duration::from_secs(2), attempt)
        .await
        .ok()
        .flatten()
}

/// True if `GET path` on `addr` answers 200 (plain HTTP on loopback).
pub async fn http_get_ok(addr: &str, path: &str) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let attempt = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
        let req = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.ok()?;
        let mut head = [0u8; 16];
        let n = s.read(&mut head).await.ok()?;
        let line = String::from_utf8_lossy(&head[..n]).to_string();
        Some(line.starts_with("HTTP/1.0 200") || line.starts_with("HTTP/1.1 200"))
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(2), attempt).await,
        Ok(Some(true))
    )
}
