#!/usr/bin/env python3
"""strict-ecs: an HTTP proxy that makes a permissive ECS emulator behave like real ECS.

It sits between the operator (and the tests) and ministack. ECS calls (AWS JSON 1.1,
``X-Amz-Target: AmazonEC2ContainerServiceV20141113.<Operation>``) pass through a set
of named rules, each one modelling a documented behaviour of real ECS that the
emulator lacks (eventual consistency, DRAINING services, paging, exact error codes,
tag limits, tasks that exit). Everything else is forwarded unchanged.

Each rule cites the AWS page or GitHub issue that shows real ECS behaves this way;
the same table is in README.md next to this file. Standard library only.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import http.client
import json
import os
import random
import signal
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Optional
from urllib.parse import urlsplit

ECS_TARGET_PREFIX = "AmazonEC2ContainerServiceV20141113."
# How long a RunTask clientToken keeps answering with the first call's tasks.
RUN_TOKEN_WINDOW = 24 * 3600.0
JSON_CONTENT_TYPE = "application/x-amz-json-1.1"

# Rule names are a stable interface: the Rust test environment disables them by name.
RULES: dict[str, str] = {
    "task-visibility-delay": "RunTask tasks are MISSING from DescribeTasks/ListTasks for 0.5-3 s",
    "service-visibility-delay": "new services are MISSING from DescribeServices for 0-1 s",
    "service-draining": "deleted services are DRAINING for 2-4 s, then INACTIVE",
    "create-service-idempotency": "CreateService on an ACTIVE name is idempotent only with the same clientToken",
    "list-tasks-started-by-alone": "ListTasks rejects startedBy combined with another filter",
    "strategy-change-needs-force": "UpdateService capacity provider strategy changes need forceNewDeployment",
    "paging": "List* operations return small pages with opaque nextTokens",
    "describe-batch-limits": "DescribeServices <= 10, DescribeTasks 1..100, DescribeClusters <= 100 items",
    "tag-limits": "at most 50 tags, key <= 128, value <= 256, no aws: key prefix",
    "delete-task-definitions-inactive-only": "DeleteTaskDefinitions deletes INACTIVE revisions only",
    "capacity-provider-in-use": "PutClusterCapacityProviders cannot drop a provider a service uses",
    "capacity-provider-delete-in-use": "DeleteCapacityProvider of a provider a cluster lists answers DELETE_FAILED",
    "capacity-provider-defaults": "CreateCapacityProvider fills in ECS's defaults for what the request omits",
    "container-instances": "container instances register, list and describe; DeleteCluster refuses while any is active",
    "task-lifecycle": "RunTask tasks run for ECS_EMULATOR_RUN_SECONDS and then exit",
    "run-task-idempotency": "RunTask repeated with the same clientToken returns the first call's tasks",
}

# Where each rule comes from (also the README table). Doc pages are the ECS API
# reference; issues are real ECS responses quoted by users.
RULE_SOURCES: dict[str, list[str]] = {
    "run-task-idempotency": [
        "https://docs.aws.amazon.com/AmazonECS/latest/APIReference/API_RunTask.html",
    ],
    "task-visibility-delay": [
        "https://docs.aws.amazon.com/AmazonECS/latest/APIReference/API_RunTask.html",
        "https://github.com/dask/dask-cloudprovider/issues/483",
        "https://github.com/dagster-io/dagster/pull/4448",
    ],
    "service-visibility-delay": [
        "https://docs.aws.amazon.com/AmazonECS/latest/APIReference/API_RunTask.html",
        "https://github.com/hashicorp/terraform-provider-aws/pull/11693",
    ],
    "service-draining": [
        "https://docs.aws.amazon.com/AmazonECS/latest/APIReference/API_DeleteService.html",
        "https://github.com/spinnaker/spinnaker/issues/5476",
        "https://github.com/ewilde/faas-fargate/issues/13",
        "https://github.com/aws/aws-cli/issues/1334",
    ],
    "create-service-idempotency": [
        "https://docs.aws.amazon.com/AmazonECS/latest/APIReference/API_CreateService.html",
        "https://github.com/hashicorp/terraform-provider-aws/issues/23462",
        "https://github.com/hashicorp/terraform-provider-aws/issues/2283",
    ],
    "list-tasks-started-by-alone": [
        "https://docs.aws.amazon.com/AmazonECS/latest/APIReference/API_ListTasks.html",
        "https://github.com/aws/aws-sdk-go-v2/issues/1893",
    ],
    "strategy-change-needs-force": [
        "https://github.com/pipe-cd/pipecd/pull/6385",
        "https://github.com/kayac/ecspresso/pull/481",
        "https://github.com/reproio/ecs_deploy/pull/75",
        "https://github.com/reproio/ecs_deploy/pull/74",
    ],
    "paging": [
        "https://docs.aws.amazon.com/AmazonECS/latest/APIReference/API_ListServices.html",
        "https://github.com/faiscadev/fakecloud/pull/1591",
    ],
    "describe-batch-limits": [
        "https://docs.aws.amazon.com/AmazonECS/latest/APIReference/API_DescribeClusters.html",
        "https://github.com/structurely/ecs-autoscale/issues/32",
        "https://github.com/gchq/sleeper/issues/555",
        "https://github.com/aws/copilot-cli/issues/3551",
    ],
    "tag-limits": [
        "https://docs.aws.amazon.com/AmazonECS/latest/APIReference/API_Tag.html",
        "https://docs.aws.amazon.com/AmazonECS/latest/APIReference/API_TagResource.html",
    ],
    "delete-task-definitions-inactive-only": [
        "https://docs.aws.amazon.com/AmazonECS/latest/APIReference/API_DeleteTaskDefinitions.html",
    ],
    "capacity-provider-in-use": [
        "https://github.com/pahud/cdk-fargate-patterns/issues/71",
        "https://github.com/aws/aws-cdk/issues/15366",
    ],
    "capacity-provider-delete-in-use": [
        "https://docs.aws.amazon.com/AmazonECS/latest/APIReference/API_DeleteCapacityProvider.html",
        "https://github.com/hashicorp/terraform-provider-aws/pull/48156",
        "https://github.com/ekristen/aws-nuke/pull/542",
    ],
    "capacity-provider-defaults": [
        "https://docs.aws.amazon.com/AmazonECS/latest/APIReference/API_ManagedScaling.html",
        "https://docs.aws.amazon.com/AmazonECS/latest/APIReference/API_AutoScalingGroupProvider.html",
    ],
    "container-instances": [
        "https://docs.aws.amazon.com/AmazonECS/latest/APIReference/API_RegisterContainerInstance.html",
        "https://docs.aws.amazon.com/AmazonECS/latest/APIReference/API_DescribeContainerInstances.html",
        "https://docs.aws.amazon.com/AmazonECS/latest/APIReference/API_DeleteCluster.html",
        "https://github.com/gruntwork-io/cloud-nuke/pull/1131",
    ],
    "task-lifecycle": [
        "https://docs.aws.amazon.com/AmazonECS/latest/developerguide/task-lifecycle-explanation.html",
        "https://docs.aws.amazon.com/AmazonECS/latest/APIReference/API_StopTask.html",
        "https://github.com/mapbox/ecs-watchbot/issues/108",
    ],
}

# Operations whose output pages, with the list member that pages. Derived from
# botocore/data/ecs/2014-11-13/service-2.json: every operation whose input and
# output both carry nextToken (paginators-1.json lists the List* subset).
PAGED_OPERATIONS: dict[str, str] = {
    "DescribeCapacityProviders": "capacityProviders",
    "ListAccountSettings": "settings",
    "ListAttributes": "attributes",
    "ListClusters": "clusterArns",
    "ListContainerInstances": "containerInstanceArns",
    "ListDaemonDeployments": "daemonDeployments",
    "ListDaemonTaskDefinitions": "daemonTaskDefinitions",
    "ListDaemons": "daemonSummariesList",
    "ListServiceDeployments": "serviceDeployments",
    "ListServices": "serviceArns",
    "ListServicesByNamespace": "serviceArns",
    "ListTaskDefinitionFamilies": "families",
    "ListTaskDefinitions": "taskDefinitionArns",
    "ListTasks": "taskArns",
}

# ListTasks filters that may not accompany startedBy (cluster, maxResults and
# nextToken are not filters). daemonName is the newest filter in the model.
LIST_TASKS_FILTERS = ("family", "containerInstance", "serviceName", "desiredStatus", "launchType", "daemonName")

HOP_BY_HOP = {
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization",
    "te", "trailers", "transfer-encoding", "upgrade", "content-length",
}
# Headers that carry the caller's identity: ministack derives account and region
# from the SigV4 credential scope, so the proxy's own upstream calls reuse them.
AUTH_HEADERS = ("authorization", "x-amz-date", "x-amz-security-token")
DEFAULT_AUTH = {
    "Authorization": "AWS4-HMAC-SHA256 Credential=test/20240101/us-east-1/ecs/aws4_request, "
                     "SignedHeaders=host;x-amz-date, Signature=0",
}
UPSTREAM_PAGE_LIMIT = 1000  # bound on upstream nextToken hops while collecting a list
KILLED_EXIT_CODE = 137  # 128 + SIGKILL: what ECS reports for a container killed after the stop timeout

# Error messages, one place. "confirmed" ones are quoted from real ECS responses in the cited issues.
MSG_STARTED_BY = "cannot specify startedBy with other arguments"  # confirmed: aws-sdk-go-v2#1893
MSG_DRAINING = "Unable to Start a service that is still Draining."  # confirmed: spinnaker#5476
MSG_NOT_IDEMPOTENT = "Creation of service was not idempotent."  # confirmed: terraform-provider-aws#23462
MSG_FORCE = ("When switching from launch type to capacity provider strategy on an existing service, "
             "or making a change to a capacity provider strategy on a service that is already using one, "
             "you must force a new deployment.")  # confirmed: pipecd#6385, ecspresso#481, ecs_deploy#74
MSG_CP_IN_USE = "The specified capacity provider is in use and cannot be removed."  # confirmed: cdk-fargate-patterns#71
# confirmed: terraform-provider-aws#48156, aws-nuke#542 (an answer with updateStatus DELETE_FAILED, not an error)
MSG_CP_DELETE_IN_USE = ("The capacity provider cannot be deleted because it is associated with cluster: {cluster}. "
                        "Remove the capacity provider from the cluster and try again.")
# API_ManagedScaling.html / API_AutoScalingGroupProvider.html: what ECS reports for fields a request omits.
CP_MANAGED_SCALING_DEFAULTS = {"status": "DISABLED", "targetCapacity": 100, "minimumScalingStepSize": 1,
                               "maximumScalingStepSize": 10000, "instanceWarmupPeriod": 300}
# confirmed: cloud-nuke#1131, aws-scalable-big-blue-button-example#79
MSG_CLUSTER_HAS_INSTANCES = "The Cluster cannot be deleted while Container Instances are active or draining."
MSG_INSTANCES_EMPTY = "Container Instances cannot be empty."  # NOT confirmed (moto's wording)
MSG_INSTANCES_MAX = "containerInstances can have at most 100 items."  # NOT confirmed: by analogy
CP_PROVIDER_DEFAULTS = {"managedTerminationProtection": "DISABLED", "managedDraining": "ENABLED"}
MSG_SERVICES_MAX = "service names can have at most 10 items."  # confirmed: ecs-autoscale#32, empire#468
MSG_TASKS_MAX = "taskIds can have at most 100 items."  # confirmed: sleeper#555, empire#647
MSG_TASKS_EMPTY = "Tasks cannot be empty."  # confirmed: copilot-cli#3551
MSG_CLUSTERS_MAX = "clusters can have at most 100 items."  # NOT confirmed: by analogy with the two above
MSG_BAD_TOKEN = "The nextToken is invalid."  # NOT confirmed: real wording unknown; code per fakecloud#1591
MSG_NOT_INACTIVE_REASON = "The task definition revision is not INACTIVE."  # NOT confirmed
MSG_NOT_INACTIVE_DETAIL = "Only INACTIVE task definition revisions can be deleted. Deregister it first."
MSG_ESSENTIAL_EXITED = "Essential container in task exited"  # confirmed: ecs-watchbot#108, wrapbox#2


# --------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Config:
    upstream: str
    bind: str
    port: int
    seed: int
    disabled: frozenset[str]
    page_size: int
    delay_scale: float  # hidden: shrinks every random delay (tests); default 1
    task_run_scale: float  # hidden: shrinks ECS_EMULATOR_RUN_SECONDS (tests); default 1

    def enabled(self, rule: str) -> bool:
        return rule not in self.disabled

    def enabled_rules(self) -> list[str]:
        return [r for r in RULES if r not in self.disabled]


def parse_rule_list(text: str) -> list[str]:
    return [r.strip() for r in text.split(",") if r.strip()]


def parse_args(argv: list[str]) -> Config:
    p = argparse.ArgumentParser(prog="strict_ecs.py", description=__doc__.splitlines()[0])
    p.add_argument("--upstream", required=True, help="ministack base URL, e.g. http://127.0.0.1:4566")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--bind", default="127.0.0.1")
    p.add_argument("--seed", default=None, help="RNG seed (env ECS_STRICT_SEED); random if unset")
    p.add_argument("--disable", default=None, help="comma list of rule names (env ECS_STRICT_DISABLE)")
    p.add_argument("--page-size", type=int, default=2)
    p.add_argument("--delay-scale", type=float, default=1.0, help=argparse.SUPPRESS)
    p.add_argument("--task-run-scale", type=float, default=1.0, help=argparse.SUPPRESS)
    a = p.parse_args(argv)

    seed_text = a.seed if a.seed is not None else os.environ.get("ECS_STRICT_SEED", "").strip() or None
    try:
        seed = int(seed_text) if seed_text is not None else random.SystemRandom().randrange(1, 2**32)
    except ValueError:
        p.error(f"seed must be an integer, got {seed_text!r}")
    disable_text = a.disable if a.disable is not None else os.environ.get("ECS_STRICT_DISABLE", "")
    disabled = parse_rule_list(disable_text)
    unknown = [r for r in disabled if r not in RULES]
    if unknown:
        p.error(f"unknown rule name(s): {', '.join(unknown)}; valid rules: {', '.join(RULES)}")
    if a.page_size < 1:
        p.error("--page-size must be at least 1")
    if urlsplit(a.upstream).scheme != "http" or not urlsplit(a.upstream).hostname:
        p.error("--upstream must be an http://host:port URL")
    return Config(a.upstream.rstrip("/"), a.bind, a.port, seed, frozenset(disabled),
                  a.page_size, max(a.delay_scale, 0.0), max(a.task_run_scale, 0.0))


# --------------------------------------------------------------------------------------
# HTTP plumbing
# --------------------------------------------------------------------------------------

@dataclass
class Reply:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def json(self) -> Optional[dict[str, Any]]:
        try:
            data = json.loads(self.body or b"null")
        except ValueError:
            return None
        return data if isinstance(data, dict) else None


def json_reply(payload: dict[str, Any], base: Optional[Reply] = None, status: int = 200) -> Reply:
    """A JSON reply; reuses the upstream reply's headers (request id etc.) when rewriting it."""
    if base is not None:
        # x-amz-crc32 would no longer match a rewritten body.
        headers = [(k, v) for k, v in base.headers if k.lower() not in HOP_BY_HOP | {"x-amz-crc32"}]
        status = base.status
    else:
        headers = [("Content-Type", JSON_CONTENT_TYPE), ("x-amzn-RequestId", str(uuid.uuid4()))]
    return Reply(status, headers, json.dumps(payload).encode())


def error_reply(code: str, message: str) -> Reply:
    """An AWS JSON 1.1 error: botocore reads __type from the body, the Rust SDK the
    x-amzn-ErrorType header first; both read "message"."""
    headers = [("Content-Type", JSON_CONTENT_TYPE), ("x-amzn-ErrorType", code),
               ("x-amzn-RequestId", str(uuid.uuid4()))]
    return Reply(400, headers, json.dumps({"__type": code, "message": message}).encode())


class Upstream:
    """ministack, reached with one http.client connection per request, one request at a time.

    ministack's ECS handlers walk its task and service dicts without a lock while other
    dispatch threads insert into them. Under concurrent calls CreateService then fails
    with ``InternalError: dictionary changed size during iteration`` after it has stored
    the service but before it starts its tasks: a half-applied write that leaves a
    service with no task forever (4 of 3,000 creates from 8 threads; 80 of 10,000 in
    the benchmark). Real ECS calls are atomic, so the proxy lets one call reach
    ministack at a time; ministack is bound by one interpreter lock anyway, so this
    costs little throughput.
    """

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.one_at_a_time = threading.Lock()

    def send(self, method: str, path: str, headers: list[tuple[str, str]], body: bytes) -> Reply:
        with self.one_at_a_time:
            return self.send_now(method, path, headers, body)

    def send_now(self, method: str, path: str, headers: list[tuple[str, str]], body: bytes) -> Reply:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=120)
        try:
            # Expect: 100-continue was already answered to the client by the server side.
            clean = [(k, v) for k, v in headers if k.lower() not in HOP_BY_HOP | {"expect"}]
            conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
            if not any(k.lower() == "host" for k, _ in clean):
                conn.putheader("Host", f"{self.host}:{self.port}")
            for k, v in clean:
                conn.putheader(k, v)
            if body or method not in ("GET", "HEAD", "DELETE", "OPTIONS"):
                conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body or None)
            resp = conn.getresponse()
            data = resp.read()
            return Reply(resp.status, list(resp.getheaders()), data)
        finally:
            conn.close()

    def ecs(self, operation: str, payload: dict[str, Any], auth: dict[str, str]) -> Reply:
        headers = [("X-Amz-Target", ECS_TARGET_PREFIX + operation), ("Content-Type", JSON_CONTENT_TYPE)]
        headers += list(auth.items())
        return self.send("POST", "/", headers, json.dumps(payload).encode())


@dataclass
class Call:
    """One ECS request as the client sent it."""
    op: str
    body: dict[str, Any]
    raw: bytes
    headers: list[tuple[str, str]]
    auth: dict[str, str]


# --------------------------------------------------------------------------------------
# Names and ARNs
# --------------------------------------------------------------------------------------

def cluster_name(ref: Optional[str]) -> str:
    """Short cluster name from a name or ARN; ECS assumes "default" when none is given."""
    if not ref:
        return "default"
    return ref.split("cluster/", 1)[1] if ref.startswith("arn:") and "cluster/" in ref else ref


def service_key(cluster_ref: Optional[str], service_ref: str) -> tuple[str, str]:
    """(cluster, service) from a service name or ARN (long form service/cluster/name or short service/name)."""
    if service_ref.startswith("arn:") and "service/" in service_ref:
        tail = service_ref.split("service/", 1)[1]
        if "/" in tail:
            c, name = tail.split("/", 1)
            return c, name
        return cluster_name(cluster_ref), tail
    return cluster_name(cluster_ref), service_ref


def key_of_service(svc: dict[str, Any]) -> tuple[str, str]:
    return cluster_name(svc.get("clusterArn")), str(svc.get("serviceName", ""))


def normalize_strategy(items: Optional[list[dict[str, Any]]]) -> frozenset[tuple[str, int, int]]:
    """Order-insensitive strategy; ECS treats an omitted weight or base as 0."""
    return frozenset((str(i.get("capacityProvider")), int(i.get("weight") or 0), int(i.get("base") or 0))
                     for i in items or [])


def epoch(t: float) -> float:
    # Timestamps go out as epoch seconds with milliseconds, as real ECS sends them.
    return round(t, 3)


# --------------------------------------------------------------------------------------
# State
# --------------------------------------------------------------------------------------

@dataclass
class ContainerPlan:
    name: str
    essential: bool
    run_seconds: float
    exit_code: int


@dataclass
class TaskPlan:
    """How a RunTask task behaves, decided once from its task definition and overrides."""
    containers: list[ContainerPlan]
    start_failure: Optional[str]
    stop_at: float

    def container(self, name: str) -> Optional[ContainerPlan]:
        return next((c for c in self.containers if c.name == name), None)

    @property
    def stop_code(self) -> str:
        return "TaskFailedToStart" if self.start_failure else "EssentialContainerExited"

    @property
    def stop_reason(self) -> str:
        return self.start_failure or MSG_ESSENTIAL_EXITED


@dataclass
class UserStop:
    at: float
    reason: str


@dataclass
class TrackedTask:
    arn: str
    cluster: str
    visible_at: float
    auth: dict[str, str]
    plan: Optional[TaskPlan] = None
    user_stop: Optional[UserStop] = None
    finalized: bool = False  # the natural end was pushed upstream with StopTask


@dataclass
class TrackedService:
    cluster: str
    name: str
    visible_at: float = 0.0
    client_token: Optional[str] = None
    deleted_at: Optional[float] = None
    inactive_at: Optional[float] = None
    snapshot: dict[str, Any] = field(default_factory=dict)

    def draining(self, now: float) -> bool:
        return self.deleted_at is not None and self.inactive_at is not None and now < self.inactive_at

    def inactive(self, now: float) -> bool:
        return self.inactive_at is not None and now >= self.inactive_at


class State:
    """Everything the proxy remembers, behind one lock."""

    def __init__(self, seed: int, scale: float) -> None:
        # Reentrant: a rule may draw a delay while it holds the lock to update a record.
        self.lock = threading.RLock()
        self.seed = seed
        self.scale = scale
        self.rng = random.Random(seed)
        self.draws: list[tuple[str, float]] = []
        self.tasks: dict[str, TrackedTask] = {}
        self.services: dict[tuple[str, str], TrackedService] = {}
        self.task_definitions: dict[str, dict[str, Any]] = {}
        # run-task-idempotency: clientToken -> (when, the first call's answer).
        self.run_tokens: dict[str, tuple[float, dict[str, Any]]] = {}
        # container-instances: cluster name -> instance ARN -> the instance as ECS describes it.
        self.instances: dict[str, dict[str, dict[str, Any]]] = {}

    def draw(self, kind: str, low: float, high: float) -> float:
        """A delay from the seeded RNG; recorded so a run can be compared and replayed."""
        with self.lock:
            value = self.rng.uniform(low, high) * self.scale
            self.draws.append((kind, round(value, 6)))
            return value

    def clear(self, reseed: bool) -> None:
        with self.lock:
            self.tasks.clear()
            self.services.clear()
            self.task_definitions.clear()
            self.run_tokens.clear()
            self.instances.clear()
            if reseed:
                self.rng = random.Random(self.seed)
                self.draws.clear()

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {
                "seed": self.seed,
                "draws": [list(d) for d in self.draws],
                "tasks": {a: {"visible_at": t.visible_at,
                              "stop_at": t.plan.stop_at if t.plan else None,
                              "user_stop": t.user_stop.at if t.user_stop else None,
                              "finalized": t.finalized} for a, t in self.tasks.items()},
                "services": {f"{c}/{n}": {"visible_at": s.visible_at, "deleted_at": s.deleted_at,
                                          "inactive_at": s.inactive_at}
                             for (c, n), s in self.services.items()},
                "now": time.time(),
            }


# --------------------------------------------------------------------------------------
# Task lifecycle helpers (pure)
# --------------------------------------------------------------------------------------

def env_of(items: Optional[list[dict[str, Any]]]) -> dict[str, str]:
    return {str(e.get("name")): str(e.get("value", "")) for e in items or [] if e.get("name")}


def parse_float(text: Optional[str], default: float) -> float:
    try:
        return max(float(text), 0.0) if text not in (None, "") else default
    except ValueError:
        return default


def parse_int(text: Optional[str], default: int) -> int:
    try:
        return int(text) if text not in (None, "") else default
    except ValueError:
        return default


def build_plan(container_defs: list[dict[str, Any]], overrides: list[dict[str, Any]],
               visible_at: float, run_scale: float) -> TaskPlan:
    """Read ECS_EMULATOR_* from each container's environment, the RunTask override winning."""
    by_name = {str(o.get("name")): env_of(o.get("environment")) for o in overrides or []}
    containers: list[ContainerPlan] = []
    start_failure: Optional[str] = None
    for cdef in container_defs:
        name = str(cdef.get("name", ""))
        env = {**env_of(cdef.get("environment")), **by_name.get(name, {})}
        if env.get("ECS_EMULATOR_START_FAILURE") and start_failure is None:
            start_failure = env["ECS_EMULATOR_START_FAILURE"]
        containers.append(ContainerPlan(
            name=name,
            essential=bool(cdef.get("essential", True)),  # ECS: essential defaults to true
            run_seconds=parse_float(env.get("ECS_EMULATOR_RUN_SECONDS"), 3.0) * run_scale,
            exit_code=parse_int(env.get("ECS_EMULATOR_EXIT_CODE"), 0),
        ))
    if start_failure is not None:
        return TaskPlan(containers, start_failure, visible_at)
    essentials = [c for c in containers if c.essential] or containers
    stop_at = visible_at + min((c.run_seconds for c in essentials), default=0.0)
    return TaskPlan(containers, None, stop_at)


def clear_stop_fields(task: dict[str, Any]) -> None:
    for k in ("stoppedAt", "stoppingAt", "executionStoppedAt"):
        task.pop(k, None)
    # ministack sends "" for these while a task runs; real ECS omits them.
    for k in ("stopCode", "stoppedReason"):
        if not task.get(k):
            task.pop(k, None)


def show_provisioning(task: dict[str, Any]) -> None:
    """RunTask's own answer: real ECS has not started anything yet (task-lifecycle page)."""
    task["lastStatus"] = "PROVISIONING"
    task["desiredStatus"] = "RUNNING"
    for k in ("startedAt", "pullStartedAt", "pullStoppedAt"):
        task.pop(k, None)
    clear_stop_fields(task)
    for c in task.get("containers") or []:
        c["lastStatus"] = "PENDING"
        c.pop("exitCode", None)


def show_running(task: dict[str, Any], tracked: TrackedTask, now: float) -> None:
    plan = tracked.plan
    assert plan is not None
    task["lastStatus"] = "RUNNING"
    task["desiredStatus"] = "RUNNING"
    task["startedAt"] = epoch(tracked.visible_at)
    clear_stop_fields(task)
    for c in task.get("containers") or []:
        cp = plan.container(str(c.get("name")))
        # A non-essential container may finish early without taking the task down.
        if cp and not cp.essential and tracked.visible_at + cp.run_seconds <= now:
            c["lastStatus"] = "STOPPED"
            c["exitCode"] = cp.exit_code
        else:
            c["lastStatus"] = "RUNNING"
            c.pop("exitCode", None)


def set_stopped(task: dict[str, Any], at: float, code: str, reason: str) -> None:
    task["lastStatus"] = "STOPPED"
    task["desiredStatus"] = "STOPPED"
    task["stopCode"] = code
    task["stoppedReason"] = reason
    task["stoppingAt"] = task["executionStoppedAt"] = task["stoppedAt"] = epoch(at)


def exit_codes_at(task: dict[str, Any], tracked: TrackedTask, at: float) -> None:
    """Containers that ended by `at` keep their own code; the rest were killed (SIGKILL, 137)."""
    plan = tracked.plan
    for c in task.get("containers") or []:
        c["lastStatus"] = "STOPPED"
        cp = plan.container(str(c.get("name"))) if plan else None
        if plan is None or plan.start_failure or at < tracked.visible_at:
            c.pop("exitCode", None)  # it never ran
        elif cp and tracked.visible_at + cp.run_seconds <= at:
            c["exitCode"] = cp.exit_code
        else:
            c["exitCode"] = KILLED_EXIT_CODE


def show_natural_stop(task: dict[str, Any], tracked: TrackedTask) -> None:
    plan = tracked.plan
    assert plan is not None
    set_stopped(task, plan.stop_at, plan.stop_code, plan.stop_reason)
    if plan.start_failure:
        task.pop("startedAt", None)
    else:
        task["startedAt"] = epoch(tracked.visible_at)
    exit_codes_at(task, tracked, plan.stop_at)


def show_user_stop(task: dict[str, Any], tracked: TrackedTask) -> None:
    stop = tracked.user_stop
    assert stop is not None
    set_stopped(task, stop.at, "UserInitiated", stop.reason)
    exit_codes_at(task, tracked, stop.at)


def apply_lifecycle(task: dict[str, Any], tracked: TrackedTask, now: float) -> None:
    if tracked.user_stop is not None:
        show_user_stop(task, tracked)
    elif tracked.plan is not None and now >= tracked.plan.stop_at:
        show_natural_stop(task, tracked)
    elif tracked.plan is not None:
        show_running(task, tracked, now)


# --------------------------------------------------------------------------------------
# Paging tokens
# --------------------------------------------------------------------------------------

def request_digest(op: str, body: dict[str, Any]) -> str:
    """Ties a token to the request it came from (everything except the paging fields)."""
    rest = {k: v for k, v in body.items() if k not in ("nextToken", "maxResults")}
    canon = json.dumps(rest, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(f"{op}\n{canon}".encode()).hexdigest()[:20]


def make_token(offset: int, digest: str) -> str:
    raw = json.dumps({"o": offset, "h": digest}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def read_token(token: Any, digest: str) -> Optional[int]:
    """The offset in a token this proxy issued for this very request, else None."""
    if not isinstance(token, str) or not token:
        return None
    try:
        data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (ValueError, TypeError):
        return None
    if not isinstance(data, dict) or data.get("h") != digest:
        return None
    offset = data.get("o")
    return offset if isinstance(offset, int) and offset >= 0 else None


# --------------------------------------------------------------------------------------
# Tag validation
# --------------------------------------------------------------------------------------

def tag_item_error(tags: list[dict[str, Any]]) -> Optional[str]:
    """Per-tag limits of the Tag data type (API_Tag.html). Messages are ours (not confirmed)."""
    for t in tags:
        key, value = str(t.get("key", "")), str(t.get("value", "") or "")
        if key.lower().startswith("aws:"):
            return f"Tag keys starting with 'aws:' are reserved for AWS use: {key}"
        if len(key) > 128:
            return f"Tag key exceeds the maximum length of 128 characters: {key[:32]}..."
        if len(value) > 256:
            return f"Tag value exceeds the maximum length of 256 characters for key: {key}"
    return None


def counted_tags(keys: list[str]) -> int:
    # aws:-prefixed tags (ECS managed tags) do not count against the limit.
    return sum(1 for k in keys if not k.lower().startswith("aws:"))


def tag_count_error(count: int) -> Optional[str]:
    if count > 50:
        return f"The maximum number of tags per resource is 50; the request would leave {count}."
    return None


# --------------------------------------------------------------------------------------
# The rules
# --------------------------------------------------------------------------------------

class StrictEcs:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.upstream = Upstream(config.upstream)
        self.state = State(config.seed, config.delay_scale)
        self.tick_lock = threading.Lock()
        self.handlers: dict[str, Callable[[Call], Reply]] = {
            "RunTask": self.run_task,
            "DescribeTasks": self.describe_tasks,
            "StopTask": self.stop_task,
            "ListTasks": self.list_tasks,
            "CreateService": self.create_service,
            "DeleteService": self.delete_service,
            "DescribeServices": self.describe_services,
            "UpdateService": self.update_service,
            "DescribeClusters": self.describe_clusters,
            "DeleteTaskDefinitions": self.delete_task_definitions,
            "PutClusterCapacityProviders": self.put_cluster_capacity_providers,
            "TagResource": self.tag_resource,
            "CreateCluster": self.with_tag_check,
            "RegisterTaskDefinition": self.with_tag_check,
            "CreateCapacityProvider": self.create_capacity_provider,
            "DeleteCapacityProvider": self.delete_capacity_provider,
            "RegisterContainerInstance": self.register_container_instance,
            "DeregisterContainerInstance": self.deregister_container_instance,
            "ListContainerInstances": self.list_container_instances,
            "DescribeContainerInstances": self.describe_container_instances,
            "DeleteCluster": self.delete_cluster,
        }

    def on(self, rule: str) -> bool:
        return self.config.enabled(rule)

    def log(self, rule: str, text: str) -> None:
        # One line per rule action, so a failing test run shows what the layer did.
        print(f"strict-ecs: [{rule}] {text}", file=sys.stderr, flush=True)

    def reject(self, rule: str, op: str, code: str, message: str) -> Reply:
        self.log(rule, f"{op} -> {code}: {message}")
        return error_reply(code, message)

    # ---- dispatch --------------------------------------------------------------------

    def handle(self, call: Call) -> Reply:
        handler = self.handlers.get(call.op)
        if handler is None and call.op in PAGED_OPERATIONS:
            return self.list_op(call)
        return handler(call) if handler else self.forward(call)

    def forward(self, call: Call, body: Optional[dict[str, Any]] = None) -> Reply:
        raw = call.raw if body is None else json.dumps(body).encode()
        return self.upstream.send("POST", "/", call.headers, raw)

    def upstream_json(self, op: str, payload: dict[str, Any], auth: dict[str, str]) -> Optional[dict[str, Any]]:
        reply = self.upstream.ecs(op, payload, auth)
        return reply.json() if reply.status == 200 else None

    # ---- task-lifecycle: lazy stop -----------------------------------------------------

    def tick(self) -> None:
        """Push tasks whose time is up to upstream with StopTask.

        Runs at the start of every request. The tick lock makes a request wait for a
        tick already in progress, so once any request is past this point every task
        due by then is stopped upstream (ListTasks filters by desiredStatus upstream).
        """
        # task-lifecycle: task-lifecycle-explanation.html, API_StopTask.html (SIGTERM, 30 s, SIGKILL), ecs-watchbot#108.
        if not self.on("task-lifecycle"):
            return
        with self.tick_lock:
            now = time.time()
            with self.state.lock:
                due = [t for t in self.state.tasks.values()
                       if t.plan and not t.finalized and t.user_stop is None and now >= t.plan.stop_at]
                for t in due:
                    t.finalized = True
            for t in due:
                assert t.plan is not None
                self.log("task-lifecycle", f"{t.arn} exits: {t.plan.stop_code}")
                self.upstream.ecs("StopTask", {"cluster": t.cluster, "task": t.arn,
                                               "reason": t.plan.stop_reason}, t.auth)

    # ---- tasks -------------------------------------------------------------------------

    def task_definition(self, arn: str, auth: dict[str, str]) -> Optional[dict[str, Any]]:
        with self.state.lock:
            cached = self.state.task_definitions.get(arn)
        if cached is not None:
            return cached
        data = self.upstream_json("DescribeTaskDefinition", {"taskDefinition": arn}, auth)
        td = (data or {}).get("taskDefinition")
        if isinstance(td, dict):
            with self.state.lock:
                self.state.task_definitions[arn] = td
        return td if isinstance(td, dict) else None

    def track_task(self, task: dict[str, Any], call: Call, now: float) -> None:
        arn = str(task.get("taskArn"))
        visible_at = now
        # task-visibility-delay: API_RunTask.html (eventual consistency), dask-cloudprovider#483, dagster#4448.
        if self.on("task-visibility-delay"):
            visible_at = now + self.state.draw("task-visibility", 0.5, 3.0)
        tracked = TrackedTask(arn, cluster_name(task.get("clusterArn") or call.body.get("cluster")),
                              visible_at, dict(call.auth))
        if self.on("task-lifecycle"):
            td = self.task_definition(str(task.get("taskDefinitionArn")), call.auth)
            overrides = ((call.body.get("overrides") or {}).get("containerOverrides")) or []
            if td is not None:
                tracked.plan = build_plan(td.get("containerDefinitions") or [], overrides,
                                          visible_at, self.config.task_run_scale)
        with self.state.lock:
            self.state.tasks[arn] = tracked

    def run_task(self, call: Call) -> Reply:
        if err := self.create_tags_error(call):
            return err
        token = call.body.get("clientToken")
        now = time.time()
        # run-task-idempotency: API_RunTask.html, clientToken "to ensure the idempotency of
        # the request"; ministack ignores it and starts new tasks on every retry.
        if self.on("run-task-idempotency") and isinstance(token, str):
            with self.state.lock:
                first = self.state.run_tokens.get(token)
            if first is not None and now - first[0] < RUN_TOKEN_WINDOW:
                self.log("run-task-idempotency", f"clientToken {token[:12]}...: the first call's tasks")
                return json_reply(json.loads(json.dumps(first[1])))
        reply = self.forward(call)
        data = reply.json()
        if reply.status != 200 or data is None or not data.get("tasks"):
            return reply
        for task in data["tasks"]:
            self.track_task(task, call, now)
            if self.on("task-lifecycle"):
                show_provisioning(task)
        if isinstance(token, str):
            with self.state.lock:
                self.state.run_tokens[token] = (now, json.loads(json.dumps(data)))
        return json_reply(data, reply)

    def tracked_task(self, arn: Any) -> Optional[TrackedTask]:
        with self.state.lock:
            return self.state.tasks.get(str(arn))

    def hidden(self, tracked: Optional[TrackedTask], now: float) -> bool:
        return tracked is not None and self.on("task-visibility-delay") and now < tracked.visible_at

    def describe_tasks(self, call: Call) -> Reply:
        refs = call.body.get("tasks")
        # describe-batch-limits: "taskIds can have at most 100 items." (sleeper#555), "Tasks cannot be empty." (copilot-cli#3551).
        if self.on("describe-batch-limits"):
            # RunTask reference: DescribeTasks takes "up to 100 task IDs or full ARN entries".
            if not refs:
                return self.reject("describe-batch-limits", call.op, "InvalidParameterException", MSG_TASKS_EMPTY)
            if isinstance(refs, list) and len(refs) > 100:
                return self.reject("describe-batch-limits", call.op, "InvalidParameterException", MSG_TASKS_MAX)
        reply = self.forward(call)
        data = reply.json()
        if reply.status != 200 or data is None:
            return reply
        now = time.time()
        kept, failures = [], list(data.get("failures") or [])
        for task in data.get("tasks") or []:
            tracked = self.tracked_task(task.get("taskArn"))
            if self.hidden(tracked, now):
                # RunTask reference: eventual consistency; a fresh task is reported MISSING.
                failures.append({"arn": task.get("taskArn"), "reason": "MISSING"})
                continue
            if tracked is not None and self.on("task-lifecycle"):
                apply_lifecycle(task, tracked, now)
            kept.append(task)
        data["tasks"], data["failures"] = kept, failures
        return json_reply(data, reply)

    def stop_task(self, call: Call) -> Reply:
        reply = self.forward(call)
        data = reply.json()
        if reply.status != 200 or data is None or not isinstance(data.get("task"), dict):
            return reply
        task = data["task"]
        tracked = self.tracked_task(task.get("taskArn"))
        if tracked is None or not self.on("task-lifecycle"):
            return reply
        now = time.time()
        with self.state.lock:
            natural = tracked.plan is not None and now >= tracked.plan.stop_at
            if tracked.user_stop is None and not natural:
                # The client's StopTask came first: ECS sends SIGTERM, then SIGKILL after the
                # stop timeout (StopTask reference), so running containers report 137.
                reason = str(call.body.get("reason") or task.get("stoppedReason") or "Task stopped by user")
                tracked.user_stop = UserStop(now, reason)
        apply_lifecycle(task, tracked, now)
        return json_reply(data, reply)

    def list_tasks(self, call: Call) -> Reply:
        # list-tasks-started-by-alone: API_ListTasks.html ("it must be the only filter"), aws-sdk-go-v2#1893.
        if self.on("list-tasks-started-by-alone") and call.body.get("startedBy") is not None:
            extra = [f for f in LIST_TASKS_FILTERS if call.body.get(f) is not None]
            if extra:
                return self.reject("list-tasks-started-by-alone", call.op,
                                   "InvalidParameterException", MSG_STARTED_BY)
        return self.list_op(call, self.visible_task_arns)

    def visible_task_arns(self, arns: list[Any]) -> list[Any]:
        now = time.time()
        return [a for a in arns if not self.hidden(self.tracked_task(a), now)]

    # ---- paging ------------------------------------------------------------------------

    def collect(self, call: Call, key: str) -> tuple[Optional[Reply], dict[str, Any]]:
        """The complete list from upstream, following its own nextTokens (bounded)."""
        body = {k: v for k, v in call.body.items() if k not in ("nextToken", "maxResults")}
        merged: dict[str, Any] = {key: []}
        first: Optional[Reply] = None
        for _ in range(UPSTREAM_PAGE_LIMIT):
            reply = self.forward(call, body)
            data = reply.json()
            if reply.status != 200 or data is None:
                return reply, {}
            first = first or reply
            merged[key].extend(data.get(key) or [])
            if "failures" in data:
                merged.setdefault("failures", []).extend(data.get("failures") or [])
            token = data.get("nextToken")
            if not token:
                break
            body["nextToken"] = token
        merged["_reply"] = first
        return None, merged

    def list_op(self, call: Call, keep: Optional[Callable[[list[Any]], list[Any]]] = None) -> Reply:
        key = PAGED_OPERATIONS[call.op]
        # paging: API_ListServices.html (opaque nextToken, maxResults caps a page); botocore paginators-1.json.
        if not self.on("paging"):
            reply = self.forward(call)
            data = reply.json()
            if keep is None or reply.status != 200 or data is None:
                return reply
            data[key] = keep(data.get(key) or [])
            return json_reply(data, reply)
        digest = request_digest(call.op, call.body)
        offset = 0
        if call.body.get("nextToken") is not None:
            parsed = read_token(call.body.get("nextToken"), digest)
            if parsed is None:
                return self.reject("paging", call.op, "InvalidParameterException", MSG_BAD_TOKEN)
            offset = parsed
        err, merged = self.collect(call, key)
        if err is not None:
            return err
        base: Reply = merged.pop("_reply")
        items = merged[key] if keep is None else keep(merged[key])
        size = self.config.page_size
        max_results = call.body.get("maxResults")
        if isinstance(max_results, int) and max_results >= 1:
            size = min(size, max_results)
        out: dict[str, Any] = {key: items[offset:offset + size]}
        if "failures" in merged:
            out["failures"] = merged["failures"] if offset == 0 else []
        if offset + size < len(items):
            out["nextToken"] = make_token(offset + size, digest)
        return json_reply(out, base)

    # ---- services ----------------------------------------------------------------------

    def tracked_service(self, key: tuple[str, str]) -> Optional[TrackedService]:
        with self.state.lock:
            return self.state.services.get(key)

    def create_service(self, call: Call) -> Reply:
        if err := self.create_tags_error(call):
            return err
        key = service_key(call.body.get("cluster"), str(call.body.get("serviceName", "")))
        now = time.time()
        svc = self.tracked_service(key)
        # service-draining: spinnaker#5476, faas-fargate#13 quote the CreateService error for a DRAINING name.
        if self.on("service-draining") and svc is not None and svc.draining(now):
            return self.reject("service-draining", call.op, "InvalidParameterException", MSG_DRAINING)
        reply = self.forward(call)
        if reply.status == 200:
            self.record_created_service(key, call, now)
            return reply
        data = reply.json() or {}
        # create-service-idempotency: API_CreateService.html (clientToken), terraform-provider-aws#23462/#2283.
        if self.on("create-service-idempotency") and data.get("message") == MSG_NOT_IDEMPOTENT:
            return self.idempotent_retry(call, key, svc)
        return reply

    def record_created_service(self, key: tuple[str, str], call: Call, now: float) -> None:
        visible_at = now
        # service-visibility-delay: ECS API eventual consistency (API_RunTask.html), terraform-provider-aws#11693.
        if self.on("service-visibility-delay"):
            visible_at = now + self.state.draw("service-visibility", 0.0, 1.0)
        token = call.body.get("clientToken")
        with self.state.lock:
            self.state.services[key] = TrackedService(key[0], key[1], visible_at,
                                                      str(token) if token else None)

    def idempotent_retry(self, call: Call, key: tuple[str, str], svc: Optional[TrackedService]) -> Reply:
        """ministack answers a duplicate name with ClientException whatever the token; real ECS
        returns the existing service for a retry with the same clientToken (CreateService
        reference) and InvalidParameterException otherwise (terraform-provider-aws#23462)."""
        token = call.body.get("clientToken")
        if token and svc is not None and svc.deleted_at is None and svc.client_token == token:
            data = self.upstream_json("DescribeServices", {"cluster": key[0], "services": [key[1]]}, call.auth)
            services = (data or {}).get("services") or []
            if services:
                self.log("create-service-idempotency", f"{key[0]}/{key[1]}: same clientToken, existing service")
                return json_reply({"service": services[0]})
        return self.reject("create-service-idempotency", call.op, "InvalidParameterException", MSG_NOT_IDEMPOTENT)

    def delete_service(self, call: Call) -> Reply:
        reply = self.forward(call)
        data = reply.json()
        # service-draining: API_DeleteService.html (DRAINING, then INACTIVE; both still describable), aws-cli#1334.
        if not self.on("service-draining") or reply.status != 200 or data is None:
            return reply
        svc_doc = data.get("service")
        if not isinstance(svc_doc, dict):
            return reply
        key = key_of_service(svc_doc)
        now = time.time()
        with self.state.lock:
            svc = self.state.services.get(key)
            if svc is not None and svc.inactive(now):
                return reply  # already INACTIVE: ministack's INACTIVE answer is right
            if svc is None:
                svc = self.state.services[key] = TrackedService(key[0], key[1])
            if svc.deleted_at is None:  # a repeated DeleteService keeps the first deadline
                duration = self.state.draw("service-draining", 2.0, 4.0)
                svc.deleted_at, svc.inactive_at = now, now + duration
                self.log("service-draining", f"{key[0]}/{key[1]} DRAINING for {duration:.2f}s")
            svc.snapshot = dict(svc_doc)  # its strategy still counts for capacity-provider-in-use
        show_draining(svc_doc)
        return json_reply(data, reply)

    def describe_services(self, call: Call) -> Reply:
        refs = call.body.get("services") or []
        # describe-batch-limits: "service names can have at most 10 items." (ecs-autoscale#32, empire#468).
        if self.on("describe-batch-limits") and isinstance(refs, list) and len(refs) > 10:
            return self.reject("describe-batch-limits", call.op, "InvalidParameterException", MSG_SERVICES_MAX)
        reply = self.forward(call)
        data = reply.json()
        if reply.status != 200 or data is None:
            return reply
        now = time.time()
        kept, failures = [], list(data.get("failures") or [])
        for svc_doc in data.get("services") or []:
            svc = self.tracked_service(key_of_service(svc_doc))
            if svc is not None and self.on("service-visibility-delay") and svc.deleted_at is None \
                    and now < svc.visible_at:
                failures.append({"arn": svc_doc.get("serviceArn"), "reason": "MISSING"})
                continue
            if svc is not None and self.on("service-draining") and svc.deleted_at is not None:
                if svc.draining(now):
                    show_draining(svc_doc)
                else:
                    svc_doc["status"] = "INACTIVE"
            kept.append(svc_doc)
        data["services"], data["failures"] = kept, failures
        return json_reply(data, reply)

    def update_service(self, call: Call) -> Reply:
        # strategy-change-needs-force: pipecd#6385, ecspresso#481, ecs_deploy#75 quote the error.
        if self.on("strategy-change-needs-force") and "capacityProviderStrategy" in call.body \
                and call.body.get("forceNewDeployment") is not True:
            current = self.describe_one_service(call.body.get("cluster"), str(call.body.get("service", "")),
                                                call.auth)
            if current is not None and strategy_change_needs_force(current, call.body["capacityProviderStrategy"]):
                return self.reject("strategy-change-needs-force", call.op, "InvalidParameterException", MSG_FORCE)
        return self.forward(call)

    def describe_one_service(self, cluster: Optional[str], ref: str, auth: dict[str, str]) -> Optional[dict[str, Any]]:
        c, name = service_key(cluster, ref)
        data = self.upstream_json("DescribeServices", {"cluster": c, "services": [name]}, auth)
        services = (data or {}).get("services") or []
        return services[0] if services else None

    # ---- clusters, task definitions, capacity providers, tags ---------------------------

    def describe_clusters(self, call: Call) -> Reply:
        refs = call.body.get("clusters") or []
        # describe-batch-limits: API_DescribeClusters.html ("A list of up to 100 cluster names"); message not confirmed.
        if self.on("describe-batch-limits") and isinstance(refs, list) and len(refs) > 100:
            return self.reject("describe-batch-limits", call.op, "InvalidParameterException", MSG_CLUSTERS_MAX)
        reply = self.forward(call)
        with self.state.lock:
            registered = {name: sum(1 for i in found.values() if i["status"] != "INACTIVE")
                          for name, found in self.state.instances.items()}
        if not self.on("container-instances") or not registered or reply.status != 200:
            return reply
        data = reply.json() or {}
        for cluster in data.get("clusters") or []:
            if cluster.get("clusterName") in registered:
                cluster["registeredContainerInstancesCount"] = registered[cluster["clusterName"]]
        return json_reply(data, reply)

    # ---- container-instances: the EC2 side ministack does not have --------------------
    # API_RegisterContainerInstance.html, API_DescribeContainerInstances.html, API_DeleteCluster.html.
    # ministack answers List/Describe with nothing and has no RegisterContainerInstance; the
    # layer keeps the instances itself (an EC2 instance's agent would register them).

    def register_container_instance(self, call: Call) -> Reply:
        if not self.on("container-instances"):
            return self.forward(call)
        cluster = cluster_name(call.body.get("cluster"))
        data = self.upstream_json("DescribeClusters", {"clusters": [cluster]}, call.auth) or {}
        found = [c for c in data.get("clusters") or [] if c.get("status") == "ACTIVE"]
        if not found:
            return self.reject("container-instances", call.op, "ClusterNotFoundException", "Cluster not found.")
        try:
            identity = json.loads(call.body.get("instanceIdentityDocument") or "{}")
        except ValueError:
            identity = {}
        resources = call.body.get("totalResources") or [
            {"name": "CPU", "type": "INTEGER", "integerValue": 2048},
            {"name": "MEMORY", "type": "INTEGER", "integerValue": 3800}]
        prefix = str(found[0]["clusterArn"]).split(":cluster/", 1)[0]
        arn = f"{prefix}:container-instance/{cluster}/{uuid.uuid4().hex}"
        instance = {"containerInstanceArn": arn, "ec2InstanceId": identity.get("instanceId", "i-" + uuid.uuid4().hex[:17]),
                    "status": "ACTIVE", "agentConnected": True, "registeredResources": resources,
                    "remainingResources": [dict(r) for r in resources], "runningTasksCount": 0,
                    "pendingTasksCount": 0, "registeredAt": time.time(), "attributes": call.body.get("attributes") or []}
        if call.body.get("capacityProviderName"):
            instance["capacityProviderName"] = call.body["capacityProviderName"]
        with self.state.lock:
            self.state.instances.setdefault(cluster, {})[arn] = instance
        self.log("container-instances", f"{cluster}: registered {arn}")
        return json_reply({"containerInstance": instance})

    def find_instance(self, cluster: str, ref: str) -> Optional[dict[str, Any]]:
        with self.state.lock:
            found = self.state.instances.get(cluster, {})
            return next((i for arn, i in found.items() if arn == ref or arn.rsplit("/", 1)[-1] == ref), None)

    def deregister_container_instance(self, call: Call) -> Reply:
        if not self.on("container-instances"):
            return self.forward(call)
        cluster = cluster_name(call.body.get("cluster"))
        instance = self.find_instance(cluster, str(call.body.get("containerInstance") or ""))
        if instance is None:
            return self.reject("container-instances", call.op, "InvalidParameterException",
                               "The referenced container instance was not found.")
        with self.state.lock:
            instance["status"] = "INACTIVE"
            instance["agentConnected"] = False
        self.log("container-instances", f"{cluster}: deregistered {instance['containerInstanceArn']}")
        return json_reply({"containerInstance": instance})

    def list_container_instances(self, call: Call) -> Reply:
        if not self.on("container-instances"):
            return self.list_op(call)
        cluster = cluster_name(call.body.get("cluster"))
        wanted = call.body.get("status")
        with self.state.lock:
            # Without a status filter ECS lists every instance that is not INACTIVE.
            arns = [arn for arn, i in self.state.instances.get(cluster, {}).items()
                    if (i["status"] == wanted if wanted else i["status"] != "INACTIVE")]
        size = min(int(call.body.get("maxResults") or 100), 100, self.config.page_size if self.on("paging") else 100)
        try:
            start = int(call.body.get("nextToken") or 0)
        except ValueError:
            return self.reject("container-instances", call.op, "InvalidParameterException", MSG_BAD_TOKEN)
        page: dict[str, Any] = {"containerInstanceArns": arns[start:start + size]}
        if start + size < len(arns):
            page["nextToken"] = str(start + size)
        return json_reply(page)

    def describe_container_instances(self, call: Call) -> Reply:
        if not self.on("container-instances"):
            return self.forward(call)
        refs = call.body.get("containerInstances") or []
        if not refs:
            return self.reject("container-instances", call.op, "ClientException", MSG_INSTANCES_EMPTY)
        if len(refs) > 100:
            return self.reject("container-instances", call.op, "InvalidParameterException", MSG_INSTANCES_MAX)
        cluster = cluster_name(call.body.get("cluster"))
        found, failures = [], []
        for ref in refs:
            instance = self.find_instance(cluster, str(ref))
            if instance is None:
                failures.append({"arn": str(ref), "reason": "MISSING"})
            else:
                found.append(dict(instance))
        return json_reply({"containerInstances": found, "failures": failures})

    def delete_cluster(self, call: Call) -> Reply:
        # container-instances: API_DeleteCluster.html ("You can't delete a cluster that has registered
        # container instances"); wording confirmed by cloud-nuke#1131. ministack deletes it.
        if self.on("container-instances"):
            cluster = cluster_name(call.body.get("cluster"))
            with self.state.lock:
                active = [arn for arn, i in self.state.instances.get(cluster, {}).items()
                          if i["status"] in ("ACTIVE", "DRAINING")]
            if active:
                return self.reject("container-instances", call.op, "ClusterContainsContainerInstancesException",
                                   MSG_CLUSTER_HAS_INSTANCES)
        return self.forward(call)

    def delete_task_definitions(self, call: Call) -> Reply:
        # delete-task-definitions-inactive-only: API_DeleteTaskDefinitions.html ("You must deregister ... before you delete it").
        if not self.on("delete-task-definitions-inactive-only"):
            return self.forward(call)
        keep: list[Any] = []
        refused: list[dict[str, Any]] = []
        for ref in call.body.get("taskDefinitions") or []:
            data = self.upstream_json("DescribeTaskDefinition", {"taskDefinition": ref}, call.auth)
            td = (data or {}).get("taskDefinition")
            if isinstance(td, dict) and td.get("status") != "INACTIVE":
                # DeleteTaskDefinitions reference: "You must deregister a task definition revision before you delete it."
                self.log("delete-task-definitions-inactive-only", f"{ref} is {td.get('status')}: not deleted")
                refused.append({"arn": td.get("taskDefinitionArn", ref), "reason": MSG_NOT_INACTIVE_REASON,
                                "detail": MSG_NOT_INACTIVE_DETAIL})
            else:
                keep.append(ref)  # INACTIVE, or unknown: upstream reports its own failure
        if not keep:
            return json_reply({"taskDefinitions": [], "failures": refused})
        reply = self.forward(call, {**call.body, "taskDefinitions": keep})
        data = reply.json()
        if reply.status != 200 or data is None:
            return reply
        data["failures"] = refused + list(data.get("failures") or [])
        return json_reply(data, reply)

    def put_cluster_capacity_providers(self, call: Call) -> Reply:
        # capacity-provider-in-use: cdk-fargate-patterns#71, aws-cdk#15366 quote the ResourceInUseException.
        if self.on("capacity-provider-in-use"):
            cluster = cluster_name(call.body.get("cluster"))
            data = self.upstream_json("DescribeClusters", {"clusters": [cluster]}, call.auth)
            clusters = (data or {}).get("clusters") or []
            if clusters:
                dropped = set(clusters[0].get("capacityProviders") or []) - set(call.body.get("capacityProviders") or [])
                users = self.services_using(cluster, dropped, call.auth) if dropped else []
                if users:
                    self.log("capacity-provider-in-use", f"{sorted(dropped)} used by {users}")
                    return self.reject("capacity-provider-in-use", call.op, "ResourceInUseException", MSG_CP_IN_USE)
        return self.forward(call)

    def services_using(self, cluster: str, providers: set[str], auth: dict[str, str]) -> list[str]:
        """Names of the cluster's services (ACTIVE upstream, or DRAINING here) whose strategy uses a provider."""
        arns: list[str] = []
        body: dict[str, Any] = {"cluster": cluster}
        for _ in range(UPSTREAM_PAGE_LIMIT):
            data = self.upstream_json("ListServices", body, auth) or {}
            arns.extend(data.get("serviceArns") or [])
            if not data.get("nextToken"):
                break
            body["nextToken"] = data["nextToken"]
        docs: list[dict[str, Any]] = []
        for i in range(0, len(arns), 10):
            data = self.upstream_json("DescribeServices", {"cluster": cluster, "services": arns[i:i + 10]}, auth)
            docs.extend((data or {}).get("services") or [])
        now = time.time()
        with self.state.lock:
            docs += [s.snapshot for s in self.state.services.values() if s.cluster == cluster and s.draining(now)]
        return [str(d.get("serviceName")) for d in docs
                if providers & {i.get("capacityProvider") for i in d.get("capacityProviderStrategy") or []}]

    def create_tags_error(self, call: Call) -> Optional[Reply]:
        """tag-limits on a create call: the request's tags are all the resource will have."""
        # tag-limits: API_Tag.html / API_TagResource.html list the limits; the wording of our messages is not confirmed.
        if not self.on("tag-limits"):
            return None
        tags = call.body.get("tags") or []
        message = tag_item_error(tags) or tag_count_error(counted_tags([str(t.get("key", "")) for t in tags]))
        return self.reject("tag-limits", call.op, "InvalidParameterException", message) if message else None

    def with_tag_check(self, call: Call) -> Reply:
        return self.create_tags_error(call) or self.forward(call)

    def create_capacity_provider(self, call: Call) -> Reply:
        error = self.create_tags_error(call)
        if error:
            return error
        # capacity-provider-defaults: API_ManagedScaling.html, API_AutoScalingGroupProvider.html.
        # ECS reports every managedScaling field and both switches, defaulted; ministack
        # keeps only what was sent (and drops managedDraining), which hides false diffs.
        group = call.body.get("autoScalingGroupProvider")
        if not self.on("capacity-provider-defaults") or not isinstance(group, dict):
            return self.forward(call)
        filled = {**CP_PROVIDER_DEFAULTS, **group,
                  "managedScaling": {**CP_MANAGED_SCALING_DEFAULTS, **(group.get("managedScaling") or {})}}
        reply = self.forward(call, {**call.body, "autoScalingGroupProvider": filled})
        data = reply.json()
        provider = (data or {}).get("capacityProvider")
        if reply.status != 200 or not isinstance(provider, dict):
            return reply
        # ministack drops managedDraining at create: put it back into its record and the answer.
        self.upstream_json("UpdateCapacityProvider", {"name": provider.get("name"), "autoScalingGroupProvider": {
            "managedScaling": filled["managedScaling"], "managedDraining": filled["managedDraining"]}}, call.auth)
        provider["autoScalingGroupProvider"] = {**(provider.get("autoScalingGroupProvider") or {}),
                                                "managedDraining": filled["managedDraining"]}
        self.log("capacity-provider-defaults", f"{provider.get('name')}: defaults filled in")
        return json_reply(data, reply)

    def delete_capacity_provider(self, call: Call) -> Reply:
        # capacity-provider-delete-in-use: API_DeleteCapacityProvider.html ("Only capacity providers
        # that aren't associated with a cluster can be deleted"); real ECS answers 200 with
        # updateStatus DELETE_FAILED (terraform-provider-aws#48156, aws-nuke#542). ministack deletes.
        if not self.on("capacity-provider-delete-in-use"):
            return self.forward(call)
        ref = str(call.body.get("capacityProvider") or "")
        name = ref.rsplit("/", 1)[-1]
        users = self.clusters_listing(name, call.auth)
        if not users:
            return self.forward(call)
        data = self.upstream_json("DescribeCapacityProviders", {"capacityProviders": [name], "include": ["TAGS"]},
                                  call.auth) or {}
        found = [p for p in data.get("capacityProviders") or [] if p.get("name") == name]
        if not found:
            return self.forward(call)
        provider = {**found[0], "status": "ACTIVE", "updateStatus": "DELETE_FAILED",
                    "updateStatusReason": MSG_CP_DELETE_IN_USE.format(cluster=users[0])}
        self.log("capacity-provider-delete-in-use", f"{name} is listed by {users}: DELETE_FAILED")
        return json_reply({"capacityProvider": provider})

    def clusters_listing(self, provider: str, auth: dict[str, str]) -> list[str]:
        """Names of the ACTIVE clusters whose capacityProviders include `provider`."""
        arns: list[str] = []
        body: dict[str, Any] = {}
        for _ in range(UPSTREAM_PAGE_LIMIT):
            data = self.upstream_json("ListClusters", body, auth) or {}
            arns.extend(data.get("clusterArns") or [])
            if not data.get("nextToken"):
                break
            body["nextToken"] = data["nextToken"]
        names: list[str] = []
        for i in range(0, len(arns), 100):
            data = self.upstream_json("DescribeClusters", {"clusters": arns[i:i + 100]}, auth) or {}
            names += [str(c.get("clusterName")) for c in data.get("clusters") or []
                      if c.get("status") == "ACTIVE" and provider in (c.get("capacityProviders") or [])]
        return sorted(names)

    def tag_resource(self, call: Call) -> Reply:
        # tag-limits: API_TagResource.html (existing tags count; a known key is replaced).
        if self.on("tag-limits"):
            new = call.body.get("tags") or []
            message = tag_item_error(new)
            if message is None:
                data = self.upstream_json("ListTagsForResource", {"resourceArn": call.body.get("resourceArn")},
                                          call.auth) or {}
                # TagResource replaces the value of an existing key rather than adding a tag.
                keys = {str(t.get("key", "")) for t in data.get("tags") or []} | {str(t.get("key", "")) for t in new}
                message = tag_count_error(counted_tags(sorted(keys)))
            if message:
                return self.reject("tag-limits", call.op, "InvalidParameterException", message)
        return self.forward(call)


def show_draining(svc_doc: dict[str, Any]) -> None:
    """DeleteService reference: the service moves to DRAINING with no desired or running tasks."""
    svc_doc["status"] = "DRAINING"
    svc_doc["desiredCount"] = 0
    svc_doc["runningCount"] = 0
    svc_doc["pendingCount"] = 0


def strategy_change_needs_force(current: dict[str, Any], new: Optional[list[dict[str, Any]]]) -> bool:
    """Switching launch type -> strategy, or changing an existing strategy, needs a new deployment."""
    cur_strategy = current.get("capacityProviderStrategy") or []
    if current.get("launchType") and not cur_strategy:
        return bool(new)
    return bool(cur_strategy) and normalize_strategy(cur_strategy) != normalize_strategy(new)


# --------------------------------------------------------------------------------------
# HTTP server
# --------------------------------------------------------------------------------------

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive for SDK clients; every reply has Content-Length
    server_version = "strict-ecs"
    strict: StrictEcs  # set on the subclass built in serve()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass  # per-request logs would drown the rule lines

    def do_GET(self) -> None: self.dispatch()
    def do_POST(self) -> None: self.dispatch()
    def do_PUT(self) -> None: self.dispatch()
    def do_DELETE(self) -> None: self.dispatch()
    def do_PATCH(self) -> None: self.dispatch()
    def do_HEAD(self) -> None: self.dispatch()
    def do_OPTIONS(self) -> None: self.dispatch()

    def read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def dispatch(self) -> None:
        try:
            body = self.read_body()
            reply = self.route(body)
        except Exception as exc:  # the proxy must answer, not hang the client
            print(f"strict-ecs: internal error on {self.command} {self.path}: {exc!r}", file=sys.stderr, flush=True)
            reply = Reply(500, [("Content-Type", JSON_CONTENT_TYPE)],
                          json.dumps({"__type": "ServerException", "message": f"strict-ecs: {exc}"}).encode())
        self.send(reply)

    def route(self, body: bytes) -> Reply:
        strict = self.strict
        path = self.path.split("?", 1)[0]
        if path.startswith("/_strict/"):
            return self.control(path)
        strict.tick()
        target = self.headers.get("X-Amz-Target") or ""
        headers = list(self.headers.items())
        if self.command == "POST" and target.startswith(ECS_TARGET_PREFIX):
            try:
                payload = json.loads(body or b"{}")
            except ValueError:
                payload = None
            if isinstance(payload, dict):
                auth = {k: v for k, v in headers if k.lower() in AUTH_HEADERS} or dict(DEFAULT_AUTH)
                return strict.handle(Call(target[len(ECS_TARGET_PREFIX):], payload, body, headers, auth))
        if self.command == "POST" and path == "/_ministack/reset":
            strict.state.clear(reseed=False)  # upstream forgets everything; so must we
        return strict.upstream.send(self.command, self.path, headers, body)

    def control(self, path: str) -> Reply:
        strict = self.strict
        if path == "/_strict/health" and self.command in ("GET", "HEAD"):
            return Reply(200, [("Content-Type", "text/plain")], b"ok")
        if path == "/_strict/rules" and self.command == "GET":
            rules = {"seed": strict.config.seed, "enabled": strict.config.enabled_rules(),
                     "disabled": [r for r in RULES if r in strict.config.disabled]}
            return json_reply(rules)
        if path == "/_strict/reset" and self.command == "POST":
            strict.state.clear(reseed=True)
            return json_reply({"reset": True})
        if path == "/_strict/state" and self.command == "GET":
            return json_reply(strict.state.snapshot())  # debugging and the replay test
        return Reply(404, [("Content-Type", "text/plain")], b"unknown strict-ecs endpoint")

    def send(self, reply: Reply) -> None:
        self.send_response_only(reply.status)
        for k, v in reply.headers:
            if k.lower() not in HOP_BY_HOP and k.lower() not in ("date", "server"):
                self.send_header(k, v)
        self.send_header("Date", self.date_time_string())
        self.send_header("Content-Length", str(len(reply.body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(reply.body)
        self.wfile.flush()


def serve(config: Config) -> None:
    strict = StrictEcs(config)
    handler = type("BoundHandler", (Handler,), {"strict": strict})
    server = ThreadingHTTPServer((config.bind, config.port), handler)
    server.daemon_threads = True
    port = server.server_address[1]
    print(f"strict-ecs: listening on http://{config.bind}:{port} upstream={config.upstream} "
          f"seed={config.seed} rules={','.join(config.enabled_rules())}", file=sys.stderr, flush=True)

    def stop(_signum: int, _frame: Any) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()


def main(argv: Optional[list[str]] = None) -> int:
    serve(parse_args(sys.argv[1:] if argv is None else argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
