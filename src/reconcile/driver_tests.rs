//! The driver's rules that only the e2e suite showed before, in-process: a fake kind,
//! a scripted apiserver (every request recorded, answered by a closure) and a mocked
//! ECS. Each test drives one `reconcile` and checks what reached the apiserver.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_ecs::config::retry::RetryConfig;
use aws_smithy_mocks::{RuleMode, mock, mock_client};
use http::{Method, Request, Response};
use http_body_util::BodyExt;
use kube::api::ObjectMeta;
use kube::client::Body;
use kube::{Client, CustomResource};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::*;
use crate::api::common::{Condition, FINALIZER, conditions};
use crate::ecs::{Category, EcsApi, Limiter};
use crate::reconcile::Context;
use crate::telemetry::Metrics;

/// A kind that does nothing but what its spec says, so the driver is what is tested.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default)]
#[kube(
    group = "test.ecs.operator.dev",
    version = "v1",
    kind = "Fake",
    namespaced,
    status = "FakeStatus",
    schema = "disabled"
)]
pub struct FakeSpec {
    /// Read ECS (mocked) in apply; its answer decides the outcome.
    pub read_ecs: bool,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FakeStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arn: Option<String>,
}

crate::kind_status!(FakeStatus);

impl Managed for Fake {
    const KIND: &'static str = "Fake";

    async fn apply(&self, ctx: &Context) -> Result<Outcome<FakeStatus>, Error> {
        if self.spec.read_ecs {
            let probe = ctx.ecs.client.list_clusters().send();
            ctx.ecs.call("ListClusters", Category::Read, probe).await?;
        }
        let status = FakeStatus {
            arn: Some("arn:fake".into()),
            ..Default::default()
        };
        Ok(Outcome::new(status, Health::ready(Reason::Active, "fine")))
    }

    async fn cleanup(&self, _ctx: &Context) -> Result<Vec<Note>, Error> {
        Err(Error::DeleteInProgress {
            reason: Reason::Draining,
            message: "the fake ECS object is draining".into(),
        })
    }
}

/// One request the scripted apiserver received.
#[derive(Debug, Clone)]
struct Seen {
    method: Method,
    path: String,
    body: Value,
}

type Answer = Box<dyn Fn(&Method, &str) -> (u16, Value) + Send + Sync>;

/// An apiserver that records every request and answers with `answer`.
fn scripted_apiserver(answer: Answer) -> (Client, Arc<Mutex<Vec<Seen>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let answer = Arc::new(answer);
    let service = tower::service_fn(move |req: Request<Body>| {
        let (log, answer) = (log.clone(), answer.clone());
        async move {
            let (parts, body) = req.into_parts();
            let bytes = body
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let path = parts.uri.path().to_string();
            let (code, reply) = answer(&parts.method, &path);
            log.lock().unwrap().push(Seen {
                method: parts.method,
                path,
                body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            });
            let response = Response::builder()
                .status(code)
                .header("content-type", "application/json")
                .body(Body::from(serde_json::to_vec(&reply).unwrap_or_default()))
                .unwrap();
            Ok::<_, Infallible>(response)
        }
    });
    (Client::new(service, "ns"), seen)
}

fn not_found() -> (u16, Value) {
    (
        404,
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 404}),
    )
}

/// Answers the Event writer (201 with the Event back) and nothing else.
fn events_only(method: &Method, path: &str) -> Option<(u16, Value)> {
    (method == Method::POST && path.contains("/events")).then(|| {
        (
            201,
            json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "e"}}),
        )
    })
}

/// ECS answers every ListClusters with a 503: a transient failure.
fn unavailable_ecs() -> EcsApi {
    let rule = mock!(aws_sdk_ecs::Client::list_clusters).then_http_response(|| {
        aws_sdk_ecs::config::http::HttpResponse::new(
            503.try_into().unwrap(),
            aws_smithy_types::body::SdkBody::from("{}"),
        )
    });
    let client = mock_client!(aws_sdk_ecs, RuleMode::MatchAny, [&rule], |c| c
        .retry_config(RetryConfig::disabled()));
    EcsApi::new(client, Limiter::default(), Arc::new(Metrics::default()))
}

fn context(kube: Client) -> Arc<Context> {
    let metrics = Arc::new(Metrics::default());
    Arc::new(Context::new(
        kube,
        unavailable_ecs(),
        metrics,
        Duration::from_secs(300),
        None,
    ))
}

fn fake(read_ecs: bool, finalizers: &[&str]) -> Fake {
    Fake {
        metadata: ObjectMeta {
            name: Some("thing".into()),
            namespace: Some("ns".into()),
            uid: Some("uid-1".into()),
            generation: Some(2),
            resource_version: Some("7".into()),
            finalizers: Some(finalizers.iter().map(|f| f.to_string()).collect()),
            ..Default::default()
        },
        spec: FakeSpec { read_ecs },
        status: None,
    }
}

fn ready_status(generation: i64) -> FakeStatus {
    let at = Time(k8s_openapi::jiff::Timestamp::from_second(100).unwrap());
    FakeStatus {
        observed_generation: Some(generation),
        conditions: conditions(
            &Health::ready(Reason::Active, "fine"),
            Some(generation),
            &[],
            &at,
        ),
        arn: Some("arn:fake".into()),
    }
}

fn status_patches(seen: &[Seen]) -> Vec<&Seen> {
    seen.iter()
        .filter(|s| s.method == Method::PATCH && s.path.ends_with("/status"))
        .collect()
}

fn warnings(seen: &[Seen]) -> Vec<String> {
    seen.iter()
        .filter(|s| s.method == Method::POST && s.path.contains("/events"))
        .filter(|s| s.body["type"] == "Warning")
        .map(|s| s.body["reason"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[tokio::test]
async fn a_transient_ecs_failure_keeps_a_ready_resource_ready() {
    let (kube, seen) =
        scripted_apiserver(Box::new(|m, p| events_only(m, p).unwrap_or_else(not_found)));
    let ctx = context(kube);
    let mut obj = fake(true, &[FINALIZER]);
    obj.status = Some(ready_status(2));
    let action = reconcile(Arc::new(obj.clone()), ctx.clone()).await.unwrap();
    assert_eq!(action, Action::requeue(backoff(1, ErrorClass::Retryable)));
    let seen = seen.lock().unwrap().clone();
    assert!(
        status_patches(&seen).is_empty(),
        "Ready must not flap: {seen:?}"
    );
    assert_eq!(warnings(&seen), vec!["ReconcileFailed".to_string()]);

    // The same failure again: longer backoff, no second Warning, still no status write.
    let again = reconcile(Arc::new(obj), ctx).await.unwrap();
    assert_eq!(again, Action::requeue(backoff(2, ErrorClass::Retryable)));
}

#[tokio::test]
async fn a_transient_failure_before_ready_reports_progressing() {
    let answer = |m: &Method, p: &str| {
        if let Some(event) = events_only(m, p) {
            return event;
        }
        match *m {
            // The status patch: echo an object back.
            Method::PATCH => (200, serde_json::to_value(fake(true, &[FINALIZER])).unwrap()),
            _ => not_found(),
        }
    };
    let (kube, seen) = scripted_apiserver(Box::new(answer));
    let mut obj = fake(true, &[FINALIZER]);
    // Ready, but for an older generation: the new spec has not been shown to work.
    obj.status = Some(ready_status(1));
    reconcile(Arc::new(obj), context(kube)).await.unwrap();
    let seen = seen.lock().unwrap().clone();
    let patches = status_patches(&seen);
    assert_eq!(patches.len(), 1, "{seen:?}");
    let status = &patches[0].body["status"];
    assert_eq!(status["observedGeneration"], 2);
    let ready = status["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(ready["status"], "False");
    assert_eq!(ready["reason"], "EcsUnavailable");
    // The kind's own fields survive the failed pass.
    assert_eq!(status["arn"], "arn:fake");
}

#[tokio::test]
async fn a_finalizer_patch_that_races_a_newer_version_is_retried_soon() {
    let answer = |m: &Method, p: &str| match *m {
        // The finalizer helper's JSON patch tests the list first: a newer version fails it.
        Method::PATCH if !p.ends_with("/status") => (
            422,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 422,
                   "reason": "Invalid", "message": "the test operation failed"}),
        ),
        _ => events_only(m, p).unwrap_or_else(not_found),
    };
    let (kube, seen) = scripted_apiserver(Box::new(answer));
    let action = reconcile(Arc::new(fake(false, &[])), context(kube))
        .await
        .unwrap();
    assert_eq!(action, Action::requeue(FINALIZER_RACE_RETRY));
    let seen = seen.lock().unwrap().clone();
    assert!(warnings(&seen).is_empty(), "a race is no failure: {seen:?}");
    assert!(status_patches(&seen).is_empty());
}

#[tokio::test]
async fn a_deletion_in_progress_keeps_the_finalizer_and_looks_again_soon() {
    let answer = |m: &Method, p: &str| match *m {
        Method::PATCH if p.ends_with("/status") => (
            200,
            serde_json::to_value(fake(false, &[FINALIZER])).unwrap(),
        ),
        _ => events_only(m, p).unwrap_or_else(not_found),
    };
    let (kube, seen) = scripted_apiserver(Box::new(answer));
    let mut obj = fake(false, &[FINALIZER]);
    obj.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        k8s_openapi::jiff::Timestamp::from_second(1_000).unwrap(),
    ));
    obj.status = Some(ready_status(2));
    let action = reconcile(Arc::new(obj), context(kube)).await.unwrap();
    assert_eq!(action, Action::requeue(DELETE_POLL));
    let seen = seen.lock().unwrap().clone();
    // Only the status moved; the finalizer was not touched.
    assert!(
        seen.iter()
            .all(|s| s.method != Method::PATCH || s.path.ends_with("/status")),
        "{seen:?}"
    );
    let patches = status_patches(&seen);
    assert_eq!(patches.len(), 1, "{seen:?}");
    let conditions = patches[0].body["status"]["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let reconciling = conditions
        .iter()
        .find(|c| c["type"] == "Reconciling")
        .unwrap();
    assert_eq!(reconciling["status"], "True");
    assert_eq!(reconciling["reason"], "Draining");
    assert!(
        warnings(&seen).is_empty(),
        "progress is no failure: {seen:?}"
    );
}

#[tokio::test]
async fn a_new_object_gets_the_finalizer_and_its_status_in_one_pass() {
    let answer = |m: &Method, p: &str| {
        if let Some(event) = events_only(m, p) {
            return event;
        }
        match *m {
            Method::PATCH => (
                200,
                serde_json::to_value(fake(false, &[FINALIZER])).unwrap(),
            ),
            _ => not_found(),
        }
    };
    let (kube, seen) = scripted_apiserver(Box::new(answer));
    let action = reconcile(Arc::new(fake(false, &[])), context(kube))
        .await
        .unwrap();
    let seen = seen.lock().unwrap().clone();
    let patches: Vec<&Seen> = seen.iter().filter(|s| s.method == Method::PATCH).collect();
    assert_eq!(patches.len(), 2, "{seen:?}");
    // Test-and-add, so a finalizer another writer adds meanwhile is not lost.
    assert_eq!(patches[0].body[0]["op"], "test", "{seen:?}");
    assert_eq!(patches[0].body[1]["value"], json!([FINALIZER]));
    assert!(patches[1].path.ends_with("/status"), "{seen:?}");
    assert_eq!(patches[1].body["status"]["observedGeneration"], 2);
    // Not "wait for the finalizer's own watch event": the pass did the work.
    assert_ne!(action, Action::await_change());
}
