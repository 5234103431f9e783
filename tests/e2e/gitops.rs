//! The Argo CD health script (docs/argocd/health.lua) run by lua5.4 on objects taken
//! from a real run: Healthy, Progressing, Degraded and Suspended must come out right.

use std::path::Path;

use serde_json::Value;

use crate::support::{TestContext, eventually};

/// A JSON value as a Lua table constructor.
fn lua(v: &Value) -> String {
    match v {
        Value::Null => "nil".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => format!("{s:?}"),
        Value::Array(a) => format!("{{{}}}", a.iter().map(lua).collect::<Vec<_>>().join(", ")),
        Value::Object(m) => format!(
            "{{{}}}",
            m.iter()
                .map(|(k, v)| format!("[{k:?}] = {}", lua(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Runs health.lua on `obj`; returns (status, message).
fn health_sync(obj: &Value) -> (String, String) {
    let script = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/argocd/health.lua"),
    )
    .unwrap();
    let program = format!(
        "obj = {}\nlocal function health()\n{script}\nend\nlocal hs = health()\nio.write(hs.status, '\\n', hs.message or '')\n",
        lua(obj)
    );
    let mut child = std::process::Command::new("lua5.4")
        .arg("-")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("lua5.4 is installed (make tools)");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(program.as_bytes()).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (status, message) = text.split_once('\n').unwrap_or((&text, ""));
    (status.to_string(), message.to_string())
}

async fn get(ctx: &TestContext, kind: &str, name: &str) -> Value {
    let (ok, out) = ctx.kubectl(&["get", kind, name, "-o", "json"], None).await;
    assert!(ok, "{out}");
    // kubectl may add a version-skew warning around the JSON.
    let (start, end) = (out.find('{').unwrap(), out.rfind('}').unwrap());
    serde_json::from_str(&out[start..=end]).unwrap()
}

fn cond(v: &Value, t: &str) -> Option<String> {
    v["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == t)
        .and_then(|c| c["status"].as_str().map(str::to_string))
}

#[tokio::test]
async fn argocd_health_reads_real_status_objects() {
    let ctx = TestContext::new("gitops-health").await;
    let op = ctx.start_operator(&[]).await;
    let (cl, svc, foreign) = (ctx.name("c"), ctx.name("svc"), ctx.name("taken"));
    ctx.ecs
        .create_cluster()
        .cluster_name(&foreign)
        .send()
        .await
        .unwrap();
    ctx.apply(&format!(
        "apiVersion: ecs.operator.dev/v1alpha1
kind: EcsCluster
metadata: {{name: {cl}}}
spec: {{}}
---
apiVersion: ecs.operator.dev/v1alpha1
kind: EcsCluster
metadata: {{name: {foreign}}}
spec: {{}}
---
apiVersion: ecs.operator.dev/v1alpha1
kind: EcsService
metadata: {{name: {svc}}}
spec:
  clusterRef: {{name: {cl}}}
  taskDefinitionRef: {{name: not-there-yet}}
---
apiVersion: ecs.operator.dev/v1alpha1
kind: EcsScheduledTask
metadata: {{name: {cl}}}
spec:
  schedule: '@daily'
  suspend: true
  template: {{cluster: {cl}, taskDefinition: 'x:1'}}
"
    ))
    .await;

    let ready = eventually(30, "cluster Ready", || async {
        let v = get(&ctx, "ecscluster", &cl).await;
        (cond(&v, "Ready").as_deref() == Some("True")).then_some(v)
    })
    .await;
    assert_eq!(health_sync(&ready).0, "Healthy");

    // The same object with a spec the operator has not seen yet.
    let mut stale = ready.clone();
    stale["metadata"]["generation"] =
        Value::from(ready["metadata"]["generation"].as_i64().unwrap() + 1);
    assert_eq!(health_sync(&stale).0, "Progressing");

    let taken = eventually(30, "foreign cluster Stalled", || async {
        let v = get(&ctx, "ecscluster", &foreign).await;
        (cond(&v, "Stalled").as_deref() == Some("True")).then_some(v)
    })
    .await;
    let (status, message) = health_sync(&taken);
    assert_eq!(status, "Degraded");
    assert!(message.starts_with("NotOwned: "), "{message}");

    let waiting = eventually(30, "service waiting for its reference", || async {
        let v = get(&ctx, "ecsservice", &svc).await;
        (cond(&v, "Reconciling").as_deref() == Some("True")).then_some(v)
    })
    .await;
    let (status, message) = health_sync(&waiting);
    assert_eq!(status, "Progressing");
    assert!(message.contains("WaitingForReference"), "{message}");

    let suspended = eventually(30, "schedule reconciled", || async {
        let v = get(&ctx, "ecsscheduledtask", &cl).await;
        v["status"]["observedGeneration"].is_number().then_some(v)
    })
    .await;
    assert_eq!(health_sync(&suspended).0, "Suspended");

    // Fresh from the apiserver, before the operator wrote anything.
    let mut fresh = ready.clone();
    fresh.as_object_mut().unwrap().remove("status");
    assert_eq!(health_sync(&fresh).0, "Progressing");
    op.stop().await;
}
