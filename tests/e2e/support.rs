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
                "e2e environment: kube-apiserver {} ({:?}), ECS endpoint {} ({:?})",
                env.server_version,
                env.kube_source,
                env.ecs_endpoint,
                env.ecs_source
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
    pub ecs: aws_sdk_ecs::Client,
}

impl TestContext {
    pub async fn new(test_name: &str) -> TestContext {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let env = env();
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
        }
    }

    /// `<prefix>-<suffix>`, for ECS and Kubernetes object names.
    pub fn name(&self, suffix: &str) -> String {
        format!("{}-{suffix}", self.prefix)
    }
}
