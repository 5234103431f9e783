//! EcsTask end to end. The emulator keeps tasks RUNNING until told otherwise, so
//! the tests stop them through the ECS API (stopCode UserInitiated, the only exit
//! the emulator can express); success paths are unit-tested in `task_plan`.

use std::time::Duration;

use aws_sdk_ecs::types::{Task, TaskField};
use ecs_operator::api::common::{UID_TAG, ownership_tags};
use ecs_operator::api::task::{EcsTask, Phase};
use ecs_operator::ecs::task::ATTEMPT_TAG;
use ecs_operator::ecs::{tags_from_sdk, tags_to_sdk};
use kube::api::{Api, DeleteParams};

use crate::support::{TestContext, ecs_cluster_and_td, eventually, sum_metric, wait_for};

/// `wait_for` typed for EcsTask.
async fn wait_task(
    ctx: &TestContext,
    name: &str,
    secs: u64,
    what: &str,
    pred: impl Fn(&EcsTask) -> bool,
) -> EcsTask {
    wait_for(ctx, name, secs, what, pred).await
}

fn manifest(name: &str, body: &str) -> String {
    format!(
        "apiVersion: ecs.operator.dev/v1alpha1\nkind: EcsTask\nmetadata:\n  name: {name}\nspec:\n{body}"
    )
}

fn phase(o: &EcsTask) -> Option<Phase> {
    o.status.as_ref()?.phase
}

/// Every task (running or stopped) started with `started_by`, read behind the strict
/// layer: an audit of what ECS holds.
async fn tasks_started_by(ctx: &TestContext, cluster: &str, started_by: &str) -> Vec<Task> {
    let arns = crate::support::started_task_arns(ctx, cluster, started_by).await;
    if arns.is_empty() {
        return vec![];
    }
    ctx.ecs_direct
        .describe_tasks()
        .cluster(cluster)
        .set_tasks(Some(arns))
        .include(TaskField::Tags)
        .send()
        .await
        .unwrap()
        .tasks()
        .to_vec()
}

async fn stop_all(ctx: &TestContext, cluster: &str, started_by: &str, reason: &str) {
    for t in tasks_started_by(ctx, cluster, started_by).await {
        if t.last_status() != Some("STOPPED") {
            ctx.ecs
                .stop_task()
                .cluster(cluster)
                .task(t.task_arn().unwrap())
                .reason(reason)
                .send()
                .await
                .unwrap();
        }
    }
}

#[tokio::test]
async fn task_runs_and_its_stop_details_reach_status_and_kubectl() {
    let ctx = TestContext::new("task-run").await;
    let op = ctx.start_operator(&[]).await;
    let (cluster, td) = ecs_cluster_and_td(&ctx, "batch", "job").await;
    let name = ctx.name("migrate");
    ctx.apply(&manifest(
        &name,
        &format!(
            "  cluster: {cluster}\n  taskDefinition: {td}\n  overrides:\n    containerOverrides:\n      - name: app\n        command: [sh, -c, 'echo migrate']\n        environment:\n          - {{name: STEP, value: \"1\"}}\n  tags:\n    job: migrate\n"
        ),
    ))
    .await;
    let o = wait_task(&ctx, &name, 30, "Running", |o| {
        phase(o) == Some(Phase::Running)
    })
    .await;
    let uid = o.metadata.uid.clone().unwrap();
    let st = o.status.clone().unwrap();
    assert_eq!(st.attempts, 1);
    assert_eq!(st.task_definition.as_deref(), Some(td.as_str()));
    assert_eq!(st.essential_containers, vec!["app".to_string()]);
    assert_eq!(st.tasks.len(), 1);

    // In ECS: one task, started by the resource's UID, tagged, with the overrides.
    let tasks = tasks_started_by(&ctx, &cluster, &uid).await;
    assert_eq!(tasks.len(), 1);
    let t = &tasks[0];
    let tags = tags_from_sdk(t.tags());
    assert_eq!(tags.get(UID_TAG), Some(&uid));
    assert_eq!(tags.get(ATTEMPT_TAG).map(String::as_str), Some("1"));
    assert_eq!(tags.get("job").map(String::as_str), Some("migrate"));
    let ov = t.overrides().unwrap().container_overrides();
    assert_eq!(ov[0].command(), ["sh", "-c", "echo migrate"]);
    assert_eq!(st.tasks[0].arn, t.task_arn().unwrap());

    // Stopped once it really runs (ECS reports it RUNNING): its container is killed.
    wait_task(&ctx, &name, 30, "the task seen RUNNING", |o| {
        o.status.as_ref().is_some_and(|s| {
            s.tasks
                .iter()
                .all(|t| t.last_status.as_deref() == Some("RUNNING"))
        })
    })
    .await;
    stop_all(&ctx, &cluster, &uid, "stopped by the e2e test").await;
    let o = wait_task(&ctx, &name, 30, "Failed", |o| {
        phase(o) == Some(Phase::Failed)
    })
    .await;
    let st = o.status.clone().unwrap();
    assert_eq!(st.reason.as_deref(), Some("UserInitiated"));
    // StopTask sends SIGTERM, then SIGKILL after the stop timeout: 137.
    assert_eq!(st.exit_code, Some(137));
    let rec = &st.tasks[0];
    assert_eq!(rec.last_status.as_deref(), Some("STOPPED"));
    assert_eq!(rec.stop_code.as_deref(), Some("UserInitiated"));
    assert_eq!(
        rec.stopped_reason.as_deref(),
        Some("stopped by the e2e test")
    );
    assert_eq!(rec.containers[0].exit_code, Some(137));
    assert!(st.completion_time.is_some() && st.duration.is_some());
    let failed = st.conditions.iter().find(|c| c.type_ == "Failed").unwrap();
    assert_eq!(failed.status, "True");
    assert!(
        failed.message.contains("stopped by the e2e test"),
        "{failed:?}"
    );
    assert!(
        st.conditions
            .iter()
            .any(|c| c.type_ == "Stalled" && c.status == "True")
    );

    let (_, table) = ctx
        .kubectl(&["get", "ecstask", &name, "-o", "wide"], None)
        .await;
    let header = table.lines().next().unwrap_or_default();
    for col in ["PHASE", "TASKS", "EXIT", "REASON", "AGE", "DURATION"] {
        assert!(header.contains(col), "{col}: {table}");
    }
    assert!(
        table.contains("Failed") && table.contains("UserInitiated"),
        "{table}"
    );
    // Finished: no more ECS calls for it.
    let before = op.ecs_writes().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(op.ecs_writes().await, before);
    op.stop().await;
}

#[tokio::test]
async fn restart_between_run_task_and_status_write_starts_nothing_new() {
    let ctx = TestContext::new("task-crash").await;
    crate::support::install_crds(&ctx.kube).await;
    let (cluster, td) = ecs_cluster_and_td(&ctx, "batch", "job").await;
    let name = ctx.name("once");
    ctx.apply(&manifest(
        &name,
        &format!("  cluster: {cluster}\n  taskDefinition: {td}\n  count: 2\n"),
    ))
    .await;
    let api = Api::<EcsTask>::namespaced(ctx.kube.clone(), &ctx.namespace);
    let uid = api.get(&name).await.unwrap().metadata.uid.unwrap();
    // What an operator that crashed right after RunTask leaves behind: the tasks of
    // attempt 1, and no status.
    let mut tags = ownership_tags(&ctx.namespace, &name, &uid);
    tags.insert(ATTEMPT_TAG.into(), "1".into());
    ctx.ecs
        .run_task()
        .cluster(&cluster)
        .task_definition(&td)
        .count(2)
        .started_by(&uid)
        .client_token(ecs_operator::reconcile::task::run_token(&uid, 1))
        .set_tags(Some(tags_to_sdk(&tags)))
        .send()
        .await
        .unwrap();
    // A restart takes longer than ECS's reads lag behind RunTask: by the time the new
    // operator looks, ListTasks shows the tasks (the client token covers the rest).
    eventually(10, "the tasks listed by ECS", || async {
        let listed = ctx
            .ecs
            .list_tasks()
            .cluster(&cluster)
            .started_by(&uid)
            .send()
            .await
            .ok()?;
        (listed.task_arns().len() == 2 || listed.next_token().is_some()).then_some(())
    })
    .await;

    let op = ctx.start_operator(&[]).await;
    let o = wait_task(&ctx, &name, 30, "Running with 2 tasks", |o| {
        phase(o) == Some(Phase::Running) && o.status.as_ref().is_some_and(|s| s.tasks.len() == 2)
    })
    .await;
    assert_eq!(o.status.unwrap().attempts, 1);
    assert_eq!(tasks_started_by(&ctx, &cluster, &uid).await.len(), 2);
    let metrics = op.metrics().await;
    assert_eq!(
        sum_metric(&metrics, "ecs_operator_aws_requests_total", |l| l
            .contains("operation=\"RunTask\"")),
        0,
        "the operator started tasks again"
    );
    op.stop().await;
}

#[tokio::test]
async fn failed_attempt_is_retried_then_the_finished_task_expires() {
    let ctx = TestContext::new("task-retry").await;
    let op = ctx.start_operator(&[]).await;
    let (cluster, td) = ecs_cluster_and_td(&ctx, "batch", "job").await;
    let name = ctx.name("retry");
    ctx.apply(&manifest(
        &name,
        &format!(
            "  cluster: {cluster}\n  taskDefinition: {td}\n  backoffLimit: 1\n  ttlSecondsAfterFinished: 20\n"
        ),
    ))
    .await;
    let o = wait_task(&ctx, &name, 30, "Running", |o| {
        phase(o) == Some(Phase::Running)
    })
    .await;
    let uid = o.metadata.uid.unwrap();
    stop_all(&ctx, &cluster, &uid, "first try fails").await;
    let o = wait_task(&ctx, &name, 30, "waiting to retry", |o| {
        o.status
            .as_ref()
            .is_some_and(|s| s.reason.as_deref() == Some("BackoffWaiting"))
    })
    .await;
    assert_eq!(phase(&o), Some(Phase::Pending));
    assert!(o.status.unwrap().next_attempt_time.is_some());
    let o = wait_task(&ctx, &name, 40, "attempt 2 running", |o| {
        phase(o) == Some(Phase::Running) && o.status.as_ref().is_some_and(|s| s.attempts == 2)
    })
    .await;
    assert_eq!(o.status.unwrap().tasks.len(), 2);
    stop_all(&ctx, &cluster, &uid, "second try fails too").await;
    wait_task(&ctx, &name, 30, "Failed", |o| {
        phase(o) == Some(Phase::Failed)
    })
    .await;
    // ttlSecondsAfterFinished: 20 -> the resource goes away.
    let api = Api::<EcsTask>::namespaced(ctx.kube.clone(), &ctx.namespace);
    eventually(30, "EcsTask deleted after its TTL", || async {
        api.get_opt(&name).await.ok()?.is_none().then_some(())
    })
    .await;
    assert_eq!(tasks_started_by(&ctx, &cluster, &uid).await.len(), 2);
    op.stop().await;
}

#[tokio::test]
async fn deadline_and_deletion_stop_running_tasks() {
    let ctx = TestContext::new("task-stop").await;
    let op = ctx.start_operator(&[]).await;
    let (cluster, td) = ecs_cluster_and_td(&ctx, "batch", "job").await;
    let (slow, doomed) = (ctx.name("slow"), ctx.name("doomed"));
    ctx.apply(&manifest(
        &slow,
        &format!("  cluster: {cluster}\n  taskDefinition: {td}\n  activeDeadlineSeconds: 3\n"),
    ))
    .await;
    ctx.apply(&manifest(
        &doomed,
        &format!("  cluster: {cluster}\n  taskDefinition: {td}\n"),
    ))
    .await;
    let o = wait_task(&ctx, &slow, 30, "Failed by deadline", |o| {
        phase(o) == Some(Phase::Failed)
    })
    .await;
    let st = o.status.unwrap();
    assert_eq!(st.reason.as_deref(), Some("DeadlineExceeded"));
    let uid = o.metadata.uid.unwrap();
    let t = &tasks_started_by(&ctx, &cluster, &uid).await[0];
    assert_eq!(t.last_status(), Some("STOPPED"));
    assert!(
        t.stopped_reason()
            .unwrap_or("")
            .contains("activeDeadlineSeconds"),
        "{:?}",
        t.stopped_reason()
    );

    let o = wait_task(&ctx, &doomed, 30, "Running", |o| {
        phase(o) == Some(Phase::Running)
    })
    .await;
    let uid = o.metadata.uid.unwrap();
    let api = Api::<EcsTask>::namespaced(ctx.kube.clone(), &ctx.namespace);
    api.delete(&doomed, &DeleteParams::default()).await.unwrap();
    eventually(30, "deleted", || async {
        api.get_opt(&doomed).await.ok()?.is_none().then_some(())
    })
    .await;
    let t = &tasks_started_by(&ctx, &cluster, &uid).await[0];
    assert_eq!(t.last_status(), Some("STOPPED"));
    assert!(
        t.stopped_reason().unwrap_or("").contains("was deleted"),
        "{:?}",
        t.stopped_reason()
    );
    op.stop().await;
}

#[tokio::test]
async fn task_specs_are_validated_and_immutable() {
    let ctx = TestContext::new("task-admission").await;
    crate::support::install_crds(&ctx.kube).await;
    let name = ctx.name("bad");
    for (body, want) in [
        ("  taskDefinition: f:1\n", "set exactly one of clusterRef"),
        (
            "  cluster: c\n  taskDefinition: f:1\n  count: 11\n",
            "count",
        ),
        (
            "  cluster: c\n  taskDefinition: f:1\n  launchType: FARGATE\n  capacityProviderStrategy:\n    - capacityProvider: FARGATE\n",
            "not both",
        ),
    ] {
        let (ok, out) = ctx
            .kubectl(&["apply", "-f", "-"], Some(&manifest(&name, body)))
            .await;
        assert!(!ok, "accepted: {body}");
        assert!(out.contains(want), "want {want:?}: {out}");
    }
    let good = "  cluster: c\n  taskDefinition: f:1\n";
    ctx.apply(&manifest(&name, good)).await;
    let (ok, out) = ctx
        .kubectl(
            &["apply", "-f", "-"],
            Some(&manifest(&name, &format!("{good}  count: 2\n"))),
        )
        .await;
    assert!(!ok);
    assert!(out.contains("the spec of an EcsTask is immutable"), "{out}");
}

#[tokio::test]
async fn a_run_waiting_for_its_task_definition_starts_when_it_appears() {
    let ctx = TestContext::new("task-waiting").await;
    let op = ctx.start_operator(&[]).await;
    let (cluster, _) = ecs_cluster_and_td(&ctx, "batch", "job").await;
    let (name, td) = (ctx.name("later"), ctx.name("later-td"));
    ctx.apply(&manifest(
        &name,
        &format!("  cluster: {cluster}\n  taskDefinitionRef:\n    name: {td}\n"),
    ))
    .await;
    let o = wait_task(&ctx, &name, 30, "waiting for the reference", |o| {
        o.status
            .as_ref()
            .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
            .is_some_and(|c| c.reason == "WaitingForReference")
    })
    .await;
    assert_eq!(phase(&o), Some(Phase::Pending));
    ctx.apply(&format!(
        "apiVersion: ecs.operator.dev/v1alpha1\nkind: EcsTaskDefinition\nmetadata:\n  name: {td}\nspec:\n  containerDefinitions:\n    - name: app\n      image: busybox:1\n      memory: 64\n"
    ))
    .await;
    // Its own poll is 30 s; the watch on EcsTaskDefinition starts it sooner.
    wait_task(&ctx, &name, 15, "Running", |o| {
        phase(o) == Some(Phase::Running)
    })
    .await;
    op.stop().await;
}

/// An "ECS endpoint" that answers every request with an HTML 500 page carrying a
/// fresh Date header (what a broken load balancer in front of an endpoint sends).
/// Returns its URL and the count of requests it answered.
async fn html_500_endpoint() -> (String, std::sync::Arc<std::sync::atomic::AtomicU32>) {
    use std::sync::atomic::Ordering;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let count = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let seen = count.clone();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                // Read the whole request (headers, then Content-Length bytes of body)
                // before answering, so the client never sees a reset instead of the 500.
                let mut request = Vec::new();
                let mut buf = [0u8; 8192];
                loop {
                    let n = conn.read(&mut buf).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    request.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&request).to_string();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let length = text[..end]
                            .lines()
                            .find_map(|l| {
                                let (k, v) = l.split_once(':')?;
                                k.eq_ignore_ascii_case("content-length")
                                    .then(|| v.trim().parse::<usize>().ok())?
                            })
                            .unwrap_or(0);
                        if request.len() >= end + 4 + length {
                            break;
                        }
                    }
                }
                let n = seen.fetch_add(1, Ordering::Relaxed);
                let body = format!(
                    "<html><body><h1>500 Internal Server Error</h1>request {n}</body></html>"
                );
                let reply = format!(
                    "HTTP/1.1 500 Internal Server Error\r\nContent-Type: text/html\r\nDate: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .unwrap()
                        .as_nanos(),
                    body.len()
                );
                let _ = conn.write_all(reply.as_bytes()).await;
                let _ = conn.shutdown().await;
            });
        }
    });
    (url, count)
}

/// "Backoff defeated by changing messages" (issue 10, item 15): against an endpoint
/// answering HTML 500s, the condition message stays short and the same, the status
/// write does not wake the resource, and the calls follow the retry backoff
/// (2 s, 4 s, 8 s, 16 s, 32 s: at most 6 passes in 50 s; the hot loop made one every
/// few seconds, 48 RunTask calls in 240 s).
#[tokio::test]
async fn an_endpoint_answering_html_500s_gets_backoff_not_a_hot_loop() {
    let ctx = TestContext::new("task-hotloop").await;
    let (url, requests) = html_500_endpoint().await;
    let op = ctx
        .start_operator_env(&[], &[("AWS_ENDPOINT_URL", url.as_str())])
        .await;
    let name = ctx.name("broken");
    ctx.apply(&manifest(&name, "  cluster: c\n  taskDefinition: f:1\n"))
        .await;
    let reconciling = |o: &EcsTask| {
        o.status
            .as_ref()?
            .conditions
            .iter()
            .find(|c| c.type_ == "Reconciling" && c.status == "True")
            .map(|c| c.message.clone())
    };
    let o = wait_task(&ctx, &name, 30, "the failure reported", |o| {
        reconciling(o).is_some()
    })
    .await;
    let first = reconciling(&o).unwrap();
    tokio::time::sleep(Duration::from_secs(50)).await;
    let api = Api::<EcsTask>::namespaced(ctx.kube.clone(), &ctx.namespace);
    let later = reconciling(&api.get(&name).await.unwrap()).unwrap_or_default();
    assert_eq!(first, later, "the message changed between failures");
    assert!(first.len() <= 400 && !first.contains("Date"), "{first}");
    let passes = op.reconciles("EcsTask").await;
    // The resource's own calls; the process adds one probe every 10 s while ECS
    // does not answer (kind="operator"), however many resources wait.
    let calls = sum_metric(
        &op.metrics().await,
        "ecs_operator_aws_requests_total",
        |l| l.contains("kind=\"EcsTask\""),
    );
    let http = requests.load(std::sync::atomic::Ordering::Relaxed);
    eprintln!(
        "hot-loop guard: {passes} reconciles, {calls} ECS calls, {http} HTTP requests in ~55 s"
    );
    assert!(passes <= 7, "{passes} reconciles: backoff not respected");
    assert!(calls <= 7, "{calls} ECS calls: backoff not respected");
    op.stop().await;
}
