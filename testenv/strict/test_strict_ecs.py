"""Tests for strict_ecs.py against a real ministack.

Run from the repository root with the venv's python:

    ~/.cache/ecs-operator/venv/bin/python -m unittest -v testenv/strict/test_strict_ecs.py

setUpClass starts ministack and one proxy (all rules on, short hidden time scales);
some tests start further proxies. Every process is stopped by its PID.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import unittest
import uuid
from pathlib import Path
from typing import Any, Callable, Optional

import botocore.session
from botocore.config import Config as BotoConfig
from botocore.exceptions import ClientError

HERE = Path(__file__).resolve().parent
SCRIPT = HERE / "strict_ecs.py"
sys.path.insert(0, str(HERE))
sys.dont_write_bytecode = True  # keep the source tree clean (no __pycache__ next to the proxy)
import strict_ecs  # noqa: E402  (for the rule names and messages)

PY = sys.executable
MINISTACK = Path(sys.executable).parent / "ministack"
if not MINISTACK.exists():
    MINISTACK = Path.home() / ".cache/ecs-operator/venv/bin/ministack"

# The main proxy runs 2x faster delays and 4x faster containers than the defaults.
DELAY_SCALE = 0.5
RUN_SCALE = 0.25
MAIN_SEED = 4242


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_request(port: int, method: str, path: str, body: bytes = b"",
                 headers: Optional[dict[str, str]] = None) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, path, body=body or None, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def poll(fn: Callable[[], Any], timeout: float, interval: float = 0.05) -> Any:
    """fn() until it returns something truthy; bounded by `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)


def wait_healthy(port: int, path: str, proc: subprocess.Popen, timeout: float = 30) -> None:
    def up() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"process exited with {proc.returncode} before {path} answered")
        try:
            return http_request(port, "GET", path)[0] == 200
        except OSError:
            return False
    poll(up, timeout, 0.1)


class Proc:
    """A child process with its stderr in a temp file; stopped by PID."""

    def __init__(self, args: list[str], env: Optional[dict[str, str]] = None, cwd: Optional[str] = None) -> None:
        self.log = tempfile.NamedTemporaryFile(prefix="strict-ecs-test-", suffix=".log", delete=False)
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=self.log, stdin=subprocess.DEVNULL,
                                     env=env, cwd=cwd)

    def text(self) -> str:
        return Path(self.log.name).read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, 15)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, 9)
                self.proc.wait(timeout=10)
        self.log.close()
        os.unlink(self.log.name)


def start_proxy(upstream_port: int, *extra: str, env: Optional[dict[str, str]] = None) -> tuple[Proc, int]:
    port = free_port()
    args = [PY, str(SCRIPT), "--upstream", f"http://127.0.0.1:{upstream_port}", "--port", str(port), *extra]
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("ECS_STRICT_")}
    full_env.update(env or {})
    proc = Proc(args, env=full_env)
    wait_healthy(port, "/_strict/health", proc.proc, timeout=15)
    return proc, port


def client(service: str, port: int) -> Any:
    return botocore.session.get_session().create_client(
        service, region_name="us-east-1", endpoint_url=f"http://127.0.0.1:{port}",
        aws_access_key_id="test", aws_secret_access_key="test",
        config=BotoConfig(retries={"total_max_attempts": 1}, parameter_validation=False))


def uid() -> str:
    return uuid.uuid4().hex[:8]


def container(name: str, essential: bool = True, **env: str) -> dict[str, Any]:
    return {"name": name, "image": "busybox", "essential": essential,
            "environment": [{"name": k, "value": v} for k, v in env.items()]}


def tearDownModule() -> None:
    """unittest compiled this file on import; drop that cache so the tree stays as checked in."""
    cache = HERE / "__pycache__"
    for pyc in cache.glob("*strict_ecs*.pyc"):
        pyc.unlink()
    if cache.is_dir() and not any(cache.iterdir()):
        cache.rmdir()


class StrictEcsTest(unittest.TestCase):
    ministack: Proc
    proxy: Proc
    ms_port: int
    px_port: int

    @classmethod
    def setUpClass(cls) -> None:
        cls.ms_port = free_port()
        env = dict(os.environ, BIND_HOST="127.0.0.1", GATEWAY_PORT=str(cls.ms_port),
                   IOT_MTLS_ENABLED="0", SFTP_ENABLED="0")
        cls.workdir = tempfile.TemporaryDirectory(prefix="strict-ecs-ministack-")
        cls.ministack = Proc([str(MINISTACK)], env=env, cwd=cls.workdir.name)
        try:
            wait_healthy(cls.ms_port, "/_ministack/health", cls.ministack.proc, timeout=40)
            cls.proxy, cls.px_port = start_proxy(cls.ms_port, "--seed", str(MAIN_SEED),
                                                 "--delay-scale", str(DELAY_SCALE),
                                                 "--task-run-scale", str(RUN_SCALE))
        except BaseException:
            cls.ministack.stop()
            raise
        cls.ecs = client("ecs", cls.px_port)
        cls.direct = client("ecs", cls.ms_port)

    @classmethod
    def tearDownClass(cls) -> None:
        cls.proxy.stop()
        cls.ministack.stop()
        cls.workdir.cleanup()

    # ---- helpers --------------------------------------------------------------------

    def extra_proxy(self, *args: str, env: Optional[dict[str, str]] = None) -> tuple[Proc, int]:
        proc, port = start_proxy(self.ms_port, *args, env=env)
        self.addCleanup(proc.stop)
        return proc, port

    def assert_error(self, code: str, message: Optional[str], fn: Callable[..., Any], **kwargs: Any) -> None:
        with self.assertRaises(ClientError) as ctx:
            fn(**kwargs)
        err = ctx.exception.response["Error"]
        self.assertEqual(err["Code"], code, err)
        if message is not None:
            self.assertEqual(err["Message"], message)

    def cluster(self, prefix: str) -> str:
        name = f"{prefix}-{uid()}"
        self.ecs.create_cluster(clusterName=name)
        return name

    def task_def(self, *containers: dict[str, Any]) -> str:
        family = f"td-{uid()}"
        out = self.ecs.register_task_definition(family=family, containerDefinitions=list(containers))
        return out["taskDefinition"]["taskDefinitionArn"]

    def describe_task(self, cluster: str, arn: str) -> Optional[dict[str, Any]]:
        tasks = self.ecs.describe_tasks(cluster=cluster, tasks=[arn])["tasks"]
        return tasks[0] if tasks else None

    def list_all(self, ecs: Any, op: str, key: str, **kwargs: Any) -> list[str]:
        items: list[str] = []
        for _ in range(200):
            out = getattr(ecs, op)(**kwargs)
            items += out[key]
            if not out.get("nextToken"):
                return items
            kwargs["nextToken"] = out["nextToken"]
        raise AssertionError("paging did not end")

    def strict_state(self, port: Optional[int] = None) -> dict[str, Any]:
        return json.loads(http_request(port or self.px_port, "GET", "/_strict/state")[2])

    # ---- start-up and control -------------------------------------------------------

    def test_startup_line_rules_and_health(self) -> None:
        line = poll(lambda: next((l for l in self.proxy.text().splitlines() if "listening on" in l), None), 5)
        m = re.fullmatch(r"strict-ecs: listening on http://127\.0\.0\.1:(\d+) upstream=(\S+) seed=(\d+) rules=(\S+)",
                         line)
        self.assertIsNotNone(m, line)
        assert m is not None
        self.assertEqual(int(m.group(1)), self.px_port)
        self.assertEqual(m.group(2), f"http://127.0.0.1:{self.ms_port}")
        self.assertEqual(int(m.group(3)), MAIN_SEED)
        self.assertEqual(m.group(4).split(","), list(strict_ecs.RULES))
        status, _, body = http_request(self.px_port, "GET", "/_strict/health")
        self.assertEqual((status, body), (200, b"ok"))
        rules = json.loads(http_request(self.px_port, "GET", "/_strict/rules")[2])
        self.assertEqual(rules, {"seed": MAIN_SEED, "enabled": list(strict_ecs.RULES), "disabled": []})

    def test_unknown_rule_name_exits_2(self) -> None:
        for args, env in ((["--disable", "paging,no-such-rule"], {}), ([], {"ECS_STRICT_DISABLE": "bogus"})):
            run = subprocess.run([PY, str(SCRIPT), "--upstream", f"http://127.0.0.1:{self.ms_port}",
                                  "--port", str(free_port()), *args],
                                 env={**os.environ, **env}, capture_output=True, text=True, timeout=20)
            self.assertEqual(run.returncode, 2, run.stderr)
            self.assertIn("unknown rule name", run.stderr)
            for rule in strict_ecs.RULES:
                self.assertIn(rule, run.stderr)  # the message lists the valid names

    def test_env_vars_and_flags_win(self) -> None:
        _, port = self.extra_proxy(env={"ECS_STRICT_SEED": "555", "ECS_STRICT_DISABLE": "paging"})
        rules = json.loads(http_request(port, "GET", "/_strict/rules")[2])
        self.assertEqual((rules["seed"], rules["disabled"]), (555, ["paging"]))
        _, port = self.extra_proxy("--seed", "556", "--disable", "tag-limits",
                                   env={"ECS_STRICT_SEED": "555", "ECS_STRICT_DISABLE": "paging"})
        rules = json.loads(http_request(port, "GET", "/_strict/rules")[2])
        self.assertEqual((rules["seed"], rules["disabled"]), (556, ["tag-limits"]))

    def test_seed_is_printed_and_replays_the_same_delays(self) -> None:
        td = self.task_def(container("main", ECS_EMULATOR_RUN_SECONDS="600"))

        def drive(*args: str) -> tuple[list[Any], str]:
            proc, port = self.extra_proxy(*args)
            ecs = client("ecs", port)
            cluster = f"seed-{uid()}"
            ecs.create_cluster(clusterName=cluster)
            ecs.run_task(cluster=cluster, taskDefinition=td, count=3)
            ecs.create_service(cluster=cluster, serviceName="s", taskDefinition=td, desiredCount=0)
            ecs.delete_service(cluster=cluster, service="s", force=True)
            return self.strict_state(port)["draws"], proc.text()

        a, log_a = drive("--seed", "99")
        b, _ = drive("--seed", "99")
        c, _ = drive("--seed", "100")
        d, log_d = drive()
        self.assertIn(" seed=99 ", log_a)
        self.assertEqual([k for k, _ in a], ["task-visibility"] * 3 + ["service-visibility", "service-draining"])
        self.assertEqual(a, b)
        self.assertNotEqual(a, c)
        printed = int(re.search(r" seed=(\d+) ", log_d).group(1))  # type: ignore[union-attr]
        self.assertGreater(printed, 0)  # no seed given: a random one, printed for replay
        for kind, value in a:
            low, high = {"task-visibility": (0.5, 3), "service-visibility": (0, 1), "service-draining": (2, 4)}[kind]
            self.assertTrue(low <= value <= high, (kind, value))

    def test_strict_reset_clears_only_proxy_state(self) -> None:
        _, port = self.extra_proxy("--seed", "5")
        ecs = client("ecs", port)
        cluster = f"reset-{uid()}"
        ecs.create_cluster(clusterName=cluster)
        ecs.create_service(cluster=cluster, serviceName="s", taskDefinition=self.task_def(container("m")),
                           desiredCount=0)
        first = self.strict_state(port)["draws"]
        self.assertEqual(len(first), 1)
        status, _, _ = http_request(port, "POST", "/_strict/reset")
        self.assertEqual(status, 200)
        state = self.strict_state(port)
        self.assertEqual((state["draws"], state["services"]), ([], {}))
        # upstream untouched
        self.assertEqual(len(self.direct.describe_services(cluster=cluster, services=["s"])["services"]), 1)

    # ---- rules ----------------------------------------------------------------------

    def test_task_visibility_delay(self) -> None:
        cluster = self.cluster("vis")
        td = self.task_def(container("main", ECS_EMULATOR_RUN_SECONDS="600"))
        task = self.ecs.run_task(cluster=cluster, taskDefinition=td)["tasks"][0]
        arn = task["taskArn"]
        self.assertEqual(task["lastStatus"], "PROVISIONING")
        out = self.ecs.describe_tasks(cluster=cluster, tasks=[arn])
        self.assertEqual(out["tasks"], [])
        self.assertEqual(out["failures"], [{"arn": arn, "reason": "MISSING"}])
        self.assertNotIn(arn, self.list_all(self.ecs, "list_tasks", "taskArns", cluster=cluster))
        # ministack itself shows the task at once
        self.assertEqual(self.direct.describe_tasks(cluster=cluster, tasks=[arn])["tasks"][0]["taskArn"], arn)
        seen = poll(lambda: self.describe_task(cluster, arn), 5)
        self.assertEqual(seen["lastStatus"], "RUNNING")
        self.assertIn(arn, self.list_all(self.ecs, "list_tasks", "taskArns", cluster=cluster))

    def test_run_task_idempotency(self) -> None:
        cluster = self.cluster("idem")
        td = self.task_def(container("main", ECS_EMULATOR_RUN_SECONDS="600"))
        first = self.ecs.run_task(cluster=cluster, taskDefinition=td, count=2, clientToken="tok-run-1")
        again = self.ecs.run_task(cluster=cluster, taskDefinition=td, count=2, clientToken="tok-run-1")
        arns = sorted(t["taskArn"] for t in first["tasks"])
        self.assertEqual(sorted(t["taskArn"] for t in again["tasks"]), arns)
        # ministack alone starts two more for the same token.
        direct = self.direct.run_task(cluster=cluster, taskDefinition=td, count=2, clientToken="tok-run-1")
        self.assertFalse(set(t["taskArn"] for t in direct["tasks"]) & set(arns))
        other = self.ecs.run_task(cluster=cluster, taskDefinition=td, clientToken="tok-run-2")
        self.assertNotIn(other["tasks"][0]["taskArn"], arns)

    def test_service_visibility_delay(self) -> None:
        cluster = self.cluster("svis")
        td = self.task_def(container("main"))
        for attempt in range(6):
            name = f"s{attempt}"
            self.ecs.create_service(cluster=cluster, serviceName=name, taskDefinition=td, desiredCount=0)
            out = self.ecs.describe_services(cluster=cluster, services=[name])
            remaining = self.strict_state()["services"][f"{cluster}/{name}"]["visible_at"] - time.time()
            if remaining < 0.05:
                continue  # this draw was too short to observe; try another service
            self.assertEqual(out["services"], [])
            self.assertEqual(out["failures"][0]["reason"], "MISSING")
            self.assertTrue(out["failures"][0]["arn"].endswith(f"service/{cluster}/{name}"))
            self.assertEqual(len(self.direct.describe_services(cluster=cluster, services=[name])["services"]), 1)
            seen = poll(lambda: self.ecs.describe_services(cluster=cluster, services=[name])["services"], 3)
            self.assertEqual(seen[0]["status"], "ACTIVE")
            return
        self.fail("every drawn service delay was too short to observe")

    def test_service_draining(self) -> None:
        cluster = self.cluster("drain")
        td = self.task_def(container("main"))
        self.ecs.create_service(cluster=cluster, serviceName="web", taskDefinition=td, desiredCount=0)
        deleted = self.ecs.delete_service(cluster=cluster, service="web", force=True)["service"]
        self.assertEqual((deleted["status"], deleted["desiredCount"], deleted["runningCount"]), ("DRAINING", 0, 0))
        described = self.ecs.describe_services(cluster=cluster, services=["web"])["services"][0]
        self.assertEqual(described["status"], "DRAINING")
        self.assertNotIn(deleted["serviceArn"], self.list_all(self.ecs, "list_services", "serviceArns",
                                                              cluster=cluster))
        again = self.ecs.delete_service(cluster=cluster, service="web", force=True)["service"]
        self.assertEqual(again["status"], "DRAINING")
        self.assert_error("InvalidParameterException", strict_ecs.MSG_DRAINING, self.ecs.create_service,
                          cluster=cluster, serviceName="web", taskDefinition=td, desiredCount=0)
        poll(lambda: self.ecs.describe_services(cluster=cluster, services=["web"])["services"][0]["status"]
             == "INACTIVE", 5)
        time.sleep(0.1)
        self.assertEqual(self.ecs.describe_services(cluster=cluster, services=["web"])["services"][0]["status"],
                         "INACTIVE")  # and it stays INACTIVE
        created = self.ecs.create_service(cluster=cluster, serviceName="web", taskDefinition=td, desiredCount=0)
        self.assertEqual(created["service"]["status"], "ACTIVE")
        seen = poll(lambda: self.ecs.describe_services(cluster=cluster, services=["web"])["services"], 3)
        self.assertEqual(seen[0]["status"], "ACTIVE")
        # ministack alone goes straight to INACTIVE
        self.direct.create_service(cluster=cluster, serviceName="raw", taskDefinition=td, desiredCount=0)
        self.assertEqual(self.direct.delete_service(cluster=cluster, service="raw", force=True)["service"]["status"],
                         "INACTIVE")

    def test_create_service_idempotency(self) -> None:
        cluster = self.cluster("idem")
        td = self.task_def(container("main"))
        first = self.ecs.create_service(cluster=cluster, serviceName="api", taskDefinition=td, desiredCount=0,
                                        clientToken="tok-1")["service"]
        retry = self.ecs.create_service(cluster=cluster, serviceName="api", taskDefinition=td, desiredCount=0,
                                        clientToken="tok-1")["service"]
        self.assertEqual(retry["serviceArn"], first["serviceArn"])
        for token in ("tok-2", None):
            kwargs: dict[str, Any] = {"cluster": cluster, "serviceName": "api", "taskDefinition": td,
                                      "desiredCount": 0}
            if token:
                kwargs["clientToken"] = token
            self.assert_error("InvalidParameterException", strict_ecs.MSG_NOT_IDEMPOTENT,
                              self.ecs.create_service, **kwargs)
        # ministack uses another code, and ignores the token
        self.assert_error("ClientException", None, self.direct.create_service, cluster=cluster,
                          serviceName="api", taskDefinition=td, desiredCount=0, clientToken="tok-1")

    def test_list_tasks_started_by_alone(self) -> None:
        cluster = self.cluster("sb")
        for extra in ({"desiredStatus": "RUNNING"}, {"family": "x"}, {"launchType": "FARGATE"},
                      {"serviceName": "x"}, {"containerInstance": "x"}):
            self.assert_error("InvalidParameterException", strict_ecs.MSG_STARTED_BY, self.ecs.list_tasks,
                              cluster=cluster, startedBy="me", **extra)
        self.assertEqual(self.ecs.list_tasks(cluster=cluster, startedBy="me", maxResults=5)["taskArns"], [])
        self.direct.list_tasks(cluster=cluster, startedBy="me", desiredStatus="RUNNING")  # ministack accepts it

    def test_strategy_change_needs_force(self) -> None:
        cluster = self.cluster("cps")
        self.ecs.put_cluster_capacity_providers(cluster=cluster, capacityProviders=["FARGATE", "FARGATE_SPOT"],
                                                defaultCapacityProviderStrategy=[])
        td = self.task_def(container("main"))
        for name in ("a", "b"):
            self.ecs.create_service(cluster=cluster, serviceName=name, taskDefinition=td, desiredCount=0,
                                    launchType="FARGATE")
        spot = [{"capacityProvider": "FARGATE_SPOT", "weight": 1}]
        self.assert_error("InvalidParameterException", strict_ecs.MSG_FORCE, self.ecs.update_service,
                          cluster=cluster, service="a", capacityProviderStrategy=spot)
        self.direct.update_service(cluster=cluster, service="b", capacityProviderStrategy=spot)  # ministack: fine
        self.ecs.update_service(cluster=cluster, service="a", capacityProviderStrategy=spot, forceNewDeployment=True)
        # the same strategy again (explicit default base) is no change
        self.ecs.update_service(cluster=cluster, service="a",
                                capacityProviderStrategy=[{"capacityProvider": "FARGATE_SPOT", "weight": 1,
                                                           "base": 0}])
        self.assert_error("InvalidParameterException", strict_ecs.MSG_FORCE, self.ecs.update_service,
                          cluster=cluster, service="a",
                          capacityProviderStrategy=[{"capacityProvider": "FARGATE", "weight": 1}])
        self.ecs.update_service(cluster=cluster, service="a", desiredCount=0)  # no strategy: not checked

    def test_paging(self) -> None:
        prefix = f"pg-{uid()}"
        for i in range(5):
            self.ecs.create_cluster(clusterName=f"{prefix}-{i}")
        direct = self.direct.list_clusters()
        self.assertNotIn("nextToken", direct)  # ministack returns everything at once
        page = self.ecs.list_clusters()
        self.assertEqual(len(page["clusterArns"]), 2)
        self.assertIn("nextToken", page)
        paged = self.list_all(self.ecs, "list_clusters", "clusterArns")
        self.assertEqual(len(paged), len(set(paged)))
        self.assertEqual(set(paged), set(direct["clusterArns"]))
        self.assertEqual(len(self.ecs.list_clusters(maxResults=1)["clusterArns"]), 1)
        self.assert_error("InvalidParameterException", strict_ecs.MSG_BAD_TOKEN, self.ecs.list_clusters,
                          nextToken="not-a-token")
        # a token belongs to the request it came from
        self.assert_error("InvalidParameterException", strict_ecs.MSG_BAD_TOKEN, self.ecs.list_services,
                          cluster=f"{prefix}-0", nextToken=page["nextToken"])
        families = [f"{prefix}-fam{i}" for i in range(3)]
        for fam in families:
            self.ecs.register_task_definition(family=fam, containerDefinitions=[container("m")])
        got = self.list_all(self.ecs, "list_task_definition_families", "families", familyPrefix=prefix)
        self.assertEqual(sorted(got), families)
        first = self.ecs.list_task_definition_families(familyPrefix=prefix)
        self.assertEqual(len(first["families"]), 2)

    def test_describe_batch_limits(self) -> None:
        cluster = self.cluster("lim")
        names = [f"s{i}" for i in range(11)]
        self.assert_error("InvalidParameterException", strict_ecs.MSG_SERVICES_MAX, self.ecs.describe_services,
                          cluster=cluster, services=names)
        self.assertEqual(len(self.direct.describe_services(cluster=cluster, services=names)["failures"]), 11)
        self.assertEqual(len(self.ecs.describe_services(cluster=cluster, services=names[:10])["failures"]), 10)
        tasks = [f"{i:032x}" for i in range(101)]
        self.assert_error("InvalidParameterException", strict_ecs.MSG_TASKS_MAX, self.ecs.describe_tasks,
                          cluster=cluster, tasks=tasks)
        self.assert_error("InvalidParameterException", strict_ecs.MSG_TASKS_EMPTY, self.ecs.describe_tasks,
                          cluster=cluster, tasks=[])
        self.direct.describe_tasks(cluster=cluster, tasks=tasks)  # ministack accepts it
        self.assert_error("InvalidParameterException", strict_ecs.MSG_CLUSTERS_MAX, self.ecs.describe_clusters,
                          clusters=[f"c{i}" for i in range(101)])

    def test_tag_limits(self) -> None:
        many = [{"key": f"k{i}", "value": "v"} for i in range(51)]
        bad_sets = [many, [{"key": "k" * 129, "value": "v"}], [{"key": "k", "value": "v" * 257}],
                    [{"key": "AWS:owner", "value": "me"}]]
        for tags in bad_sets:
            self.assert_error("InvalidParameterException", None, self.ecs.create_cluster,
                              clusterName=f"tag-{uid()}", tags=tags)
        self.direct.create_cluster(clusterName=f"tag-{uid()}", tags=many)  # ministack takes 51 tags
        self.assert_error("InvalidParameterException", None, self.ecs.register_task_definition,
                          family=f"tag-{uid()}", containerDefinitions=[container("m")],
                          tags=[{"key": "aws:x", "value": "y"}])
        arn = self.ecs.create_cluster(clusterName=f"tag-{uid()}", tags=many[:49])["cluster"]["clusterArn"]
        self.assert_error("InvalidParameterException", None, self.ecs.tag_resource, resourceArn=arn,
                          tags=[{"key": "n1", "value": "v"}, {"key": "n2", "value": "v"}])
        # replacing an existing key does not add a tag: 49 + 1 new = 50
        self.ecs.tag_resource(resourceArn=arn, tags=[{"key": "k0", "value": "new"}, {"key": "n1", "value": "v"}])
        self.assertEqual(len(self.ecs.list_tags_for_resource(resourceArn=arn)["tags"]), 50)
        cluster = self.cluster("tagrun")
        self.assert_error("InvalidParameterException", None, self.ecs.run_task, cluster=cluster,
                          taskDefinition=self.task_def(container("m")), tags=many)

    def test_delete_task_definitions_inactive_only(self) -> None:
        family = f"del-{uid()}"
        revs = [self.ecs.register_task_definition(family=family, containerDefinitions=[container("m")])
                ["taskDefinition"]["taskDefinitionArn"] for _ in range(3)]
        self.ecs.deregister_task_definition(taskDefinition=revs[0])
        out = self.ecs.delete_task_definitions(taskDefinitions=revs[:2])
        self.assertEqual([(t["taskDefinitionArn"], t["status"]) for t in out["taskDefinitions"]],
                         [(revs[0], "DELETE_IN_PROGRESS")])
        self.assertEqual(out["failures"], [{"arn": revs[1], "reason": strict_ecs.MSG_NOT_INACTIVE_REASON,
                                            "detail": strict_ecs.MSG_NOT_INACTIVE_DETAIL}])
        self.assertEqual(self.ecs.describe_task_definition(taskDefinition=revs[1])["taskDefinition"]["status"],
                         "ACTIVE")
        # ministack deletes an ACTIVE revision
        raw = self.direct.delete_task_definitions(taskDefinitions=[revs[2]])
        self.assertEqual(raw["taskDefinitions"][0]["status"], "DELETE_IN_PROGRESS")

    def test_capacity_provider_in_use(self) -> None:
        def setup(ecs: Any) -> str:
            cluster = f"cpu-{uid()}"
            ecs.create_cluster(clusterName=cluster)
            ecs.put_cluster_capacity_providers(cluster=cluster, capacityProviders=["FARGATE", "FARGATE_SPOT"],
                                               defaultCapacityProviderStrategy=[])
            ecs.create_service(cluster=cluster, serviceName="spot", taskDefinition=self.task_def(container("m")),
                               desiredCount=0,
                               capacityProviderStrategy=[{"capacityProvider": "FARGATE_SPOT", "weight": 1}])
            return cluster
        cluster = setup(self.ecs)
        self.assert_error("ResourceInUseException", strict_ecs.MSG_CP_IN_USE,
                          self.ecs.put_cluster_capacity_providers, cluster=cluster,
                          capacityProviders=["FARGATE"], defaultCapacityProviderStrategy=[])
        self.ecs.put_cluster_capacity_providers(cluster=cluster, capacityProviders=["FARGATE_SPOT"],
                                                defaultCapacityProviderStrategy=[])  # FARGATE is unused
        raw = setup(self.direct)
        self.direct.put_cluster_capacity_providers(cluster=raw, capacityProviders=["FARGATE"],
                                                   defaultCapacityProviderStrategy=[])  # ministack: fine

    def test_capacity_provider_defaults_and_delete_in_use(self) -> None:
        group = "arn:aws:autoscaling:us-east-1:000000000000:autoScalingGroup:u:autoScalingGroupName/g"
        name = f"cp{uid()}"
        made = self.ecs.create_capacity_provider(name=name, autoScalingGroupProvider={
            "autoScalingGroupArn": group, "managedScaling": {"status": "ENABLED", "targetCapacity": 80}})
        asg = made["capacityProvider"]["autoScalingGroupProvider"]
        self.assertEqual(asg["managedScaling"], {"status": "ENABLED", "targetCapacity": 80, "minimumScalingStepSize": 1,
                                                 "maximumScalingStepSize": 10000, "instanceWarmupPeriod": 300})
        self.assertEqual((asg["managedTerminationProtection"], asg["managedDraining"]), ("DISABLED", "ENABLED"))
        seen = self.ecs.describe_capacity_providers(capacityProviders=[name])["capacityProviders"][0]
        self.assertEqual(seen["autoScalingGroupProvider"]["managedDraining"], "ENABLED")
        self.assertEqual(seen["autoScalingGroupProvider"]["managedScaling"]["instanceWarmupPeriod"], 300)
        cluster = self.cluster("cpdel")
        self.ecs.put_cluster_capacity_providers(cluster=cluster, capacityProviders=[name],
                                                defaultCapacityProviderStrategy=[])
        answer = self.ecs.delete_capacity_provider(capacityProvider=name)["capacityProvider"]
        self.assertEqual((answer["status"], answer["updateStatus"]), ("ACTIVE", "DELETE_FAILED"))
        self.assertEqual(answer["updateStatusReason"], strict_ecs.MSG_CP_DELETE_IN_USE.format(cluster=cluster))
        self.assertEqual(len(self.ecs.describe_capacity_providers(capacityProviders=[name])["capacityProviders"]), 1)
        self.ecs.put_cluster_capacity_providers(cluster=cluster, capacityProviders=[],
                                                defaultCapacityProviderStrategy=[])
        gone = self.ecs.delete_capacity_provider(capacityProvider=name)["capacityProvider"]
        self.assertEqual(gone["status"], "INACTIVE")
        # ministack alone deletes a provider a cluster lists, and keeps only what was sent.
        raw = f"cp{uid()}"
        kept = self.direct.create_capacity_provider(name=raw, autoScalingGroupProvider={
            "autoScalingGroupArn": group + "2", "managedScaling": {"status": "ENABLED"}})
        self.assertNotIn("managedDraining", kept["capacityProvider"]["autoScalingGroupProvider"])
        self.direct.put_cluster_capacity_providers(cluster=cluster, capacityProviders=[raw],
                                                   defaultCapacityProviderStrategy=[])
        self.assertEqual(self.direct.delete_capacity_provider(capacityProvider=raw)["capacityProvider"]["status"],
                         "INACTIVE")

    def test_container_instances(self) -> None:
        cluster = self.cluster("ci")
        arns = [self.ecs.register_container_instance(
            cluster=cluster, instanceIdentityDocument=json.dumps({"instanceId": f"i-{n}"}),
            totalResources=[{"name": "CPU", "type": "INTEGER", "integerValue": 1024},
                            {"name": "MEMORY", "type": "INTEGER", "integerValue": 2000}],
        )["containerInstance"]["containerInstanceArn"] for n in range(3)]
        listed = self.ecs.list_container_instances(cluster=cluster)["containerInstanceArns"]
        self.assertEqual(sorted(listed + self.ecs.list_container_instances(
            cluster=cluster, nextToken="2")["containerInstanceArns"]), sorted(arns))  # paging: 2 a page
        described = self.ecs.describe_container_instances(cluster=cluster, containerInstances=arns[:1] + ["nope"])
        self.assertEqual(described["containerInstances"][0]["ec2InstanceId"], "i-0")
        self.assertEqual(described["failures"], [{"arn": "nope", "reason": "MISSING"}])
        self.assertEqual(self.ecs.describe_clusters(clusters=[cluster])["clusters"][0]
                         ["registeredContainerInstancesCount"], 3)
        self.assert_error("ClusterContainsContainerInstancesException", strict_ecs.MSG_CLUSTER_HAS_INSTANCES,
                          self.ecs.delete_cluster, cluster=cluster)
        for arn in arns:
            self.ecs.deregister_container_instance(cluster=cluster, containerInstance=arn, force=True)
        self.assertEqual(self.ecs.list_container_instances(cluster=cluster)["containerInstanceArns"], [])
        self.ecs.delete_cluster(cluster=cluster)
        # ministack alone: nothing to list, and no RegisterContainerInstance.
        self.assertEqual(self.direct.list_container_instances(cluster=cluster)["containerInstanceArns"], [])

    def test_task_lifecycle_essential_exit(self) -> None:
        cluster = self.cluster("life")
        td = self.task_def(container("main", ECS_EMULATOR_RUN_SECONDS="4", ECS_EMULATOR_EXIT_CODE="3"),
                           container("side", essential=False, ECS_EMULATOR_RUN_SECONDS="600"))
        arn = self.ecs.run_task(cluster=cluster, taskDefinition=td, startedBy="job-1")["tasks"][0]["taskArn"]
        statuses: list[str] = []

        def stopped() -> Optional[dict[str, Any]]:
            task = self.describe_task(cluster, arn)
            if task:
                statuses.append(task["lastStatus"])
                if task["lastStatus"] == "RUNNING":
                    self.assertEqual({c["lastStatus"] for c in task["containers"]}, {"RUNNING"})
            return task if task and task["lastStatus"] == "STOPPED" else None

        task = poll(stopped, 8)
        self.assertEqual(statuses[0], "RUNNING")  # MISSING, then RUNNING, then STOPPED
        self.assertEqual((task["desiredStatus"], task["stopCode"], task["stoppedReason"]),
                         ("STOPPED", "EssentialContainerExited", "Essential container in task exited"))
        for k in ("stoppedAt", "stoppingAt", "executionStoppedAt", "startedAt"):
            self.assertIn(k, task)
        codes = {c["name"]: (c["lastStatus"], c.get("exitCode")) for c in task["containers"]}
        self.assertEqual(codes, {"main": ("STOPPED", 3), "side": ("STOPPED", 137)})
        self.assertNotIn(arn, self.list_all(self.ecs, "list_tasks", "taskArns", cluster=cluster))
        self.assertIn(arn, self.list_all(self.ecs, "list_tasks", "taskArns", cluster=cluster,
                                         desiredStatus="STOPPED"))
        # startedBy alone also lists RUNNING tasks only
        self.assertNotIn(arn, self.list_all(self.ecs, "list_tasks", "taskArns", cluster=cluster, startedBy="job-1"))
        # ministack on its own never ends a task
        raw = self.direct.run_task(cluster=cluster, taskDefinition=td)["tasks"][0]
        time.sleep(1.2)
        self.assertEqual(self.direct.describe_tasks(cluster=cluster, tasks=[raw["taskArn"]])["tasks"][0]
                         ["lastStatus"], "RUNNING")

    def test_task_lifecycle_start_failure(self) -> None:
        cluster = self.cluster("fail")
        reason = "CannotPullContainerError: pull access denied for nope"
        td = self.task_def(container("main", ECS_EMULATOR_START_FAILURE=reason))
        arn = self.ecs.run_task(cluster=cluster, taskDefinition=td)["tasks"][0]["taskArn"]
        task = poll(lambda: self.describe_task(cluster, arn), 5)
        self.assertEqual((task["lastStatus"], task["stopCode"], task["stoppedReason"]),
                         ("STOPPED", "TaskFailedToStart", reason))
        self.assertNotIn("exitCode", task["containers"][0])
        self.assertNotIn("startedAt", task)

    def test_task_lifecycle_overrides(self) -> None:
        cluster = self.cluster("ovr")
        td = self.task_def(container("main", ECS_EMULATOR_RUN_SECONDS="600"))
        overrides = {"containerOverrides": [{"name": "main", "environment": [
            {"name": "ECS_EMULATOR_RUN_SECONDS", "value": "2"}, {"name": "ECS_EMULATOR_EXIT_CODE", "value": "7"}]}]}
        arn = self.ecs.run_task(cluster=cluster, taskDefinition=td, overrides=overrides)["tasks"][0]["taskArn"]
        task = poll(lambda: (t := self.describe_task(cluster, arn)) and t["lastStatus"] == "STOPPED" and t, 6)
        self.assertEqual(task["containers"][0]["exitCode"], 7)

    def test_task_lifecycle_user_stop_wins(self) -> None:
        cluster = self.cluster("stop")
        td = self.task_def(container("main", ECS_EMULATOR_RUN_SECONDS="600"),
                           container("side", essential=False, ECS_EMULATOR_RUN_SECONDS="2",
                                     ECS_EMULATOR_EXIT_CODE="5"))
        arn = self.ecs.run_task(cluster=cluster, taskDefinition=td)["tasks"][0]["taskArn"]

        def side_done() -> Optional[dict[str, Any]]:
            task = self.describe_task(cluster, arn)
            side = task and next(c for c in task["containers"] if c["name"] == "side")
            return task if side and side["lastStatus"] == "STOPPED" else None

        running = poll(side_done, 6)
        self.assertEqual(running["lastStatus"], "RUNNING")  # a non-essential exit leaves the task running
        stopped = self.ecs.stop_task(cluster=cluster, task=arn, reason="bye")["task"]
        for task in (stopped, self.describe_task(cluster, arn)):
            assert task is not None
            self.assertEqual((task["lastStatus"], task["stopCode"], task["stoppedReason"]),
                             ("STOPPED", "UserInitiated", "bye"))
            self.assertEqual({c["name"]: c["exitCode"] for c in task["containers"]}, {"main": 137, "side": 5})
        # what ministack itself recorded
        raw = self.direct.describe_tasks(cluster=cluster, tasks=[arn])["tasks"][0]
        self.assertEqual(next(c for c in raw["containers"] if c["name"] == "main").get("exitCode"), 0)

    # ---- pass-through ---------------------------------------------------------------

    def test_disabled_rules_pass_through(self) -> None:
        disabled = ["paging", "describe-batch-limits", "task-visibility-delay", "service-draining"]
        _, port = self.extra_proxy("--disable", ",".join(disabled))
        rules = json.loads(http_request(port, "GET", "/_strict/rules")[2])
        self.assertEqual(rules["disabled"], [r for r in strict_ecs.RULES if r in disabled])  # in rule order
        self.assertEqual(rules["enabled"], [r for r in strict_ecs.RULES if r not in disabled])
        ecs = client("ecs", port)
        for i in range(3):
            ecs.create_cluster(clusterName=f"pt-{uid()}-{i}")
        out = ecs.list_clusters()
        self.assertNotIn("nextToken", out)
        self.assertEqual(set(out["clusterArns"]), set(self.direct.list_clusters()["clusterArns"]))
        cluster = f"pt-{uid()}"
        ecs.create_cluster(clusterName=cluster)
        ecs.describe_services(cluster=cluster, services=[f"s{i}" for i in range(11)])
        td = self.task_def(container("main", ECS_EMULATOR_RUN_SECONDS="600"))
        arn = ecs.run_task(cluster=cluster, taskDefinition=td)["tasks"][0]["taskArn"]
        self.assertEqual(ecs.describe_tasks(cluster=cluster, tasks=[arn])["tasks"][0]["lastStatus"], "RUNNING")
        ecs.create_service(cluster=cluster, serviceName="s", taskDefinition=td, desiredCount=0)
        self.assertEqual(ecs.delete_service(cluster=cluster, service="s", force=True)["service"]["status"],
                         "INACTIVE")
        self.assert_error("InvalidParameterException", strict_ecs.MSG_STARTED_BY, ecs.list_tasks,
                          cluster=cluster, startedBy="x", family="y")  # still on

    def test_non_ecs_traffic_forwarded_unchanged(self) -> None:
        s1, _, b1 = http_request(self.px_port, "GET", "/_ministack/health")
        s2, _, b2 = http_request(self.ms_port, "GET", "/_ministack/health")
        self.assertEqual((s1, json.loads(b1)["services"]), (s2, json.loads(b2)["services"]))
        sqs = client("sqs", self.px_port)
        name = f"q-{uid()}"
        url = sqs.create_queue(QueueName=name)["QueueUrl"]
        self.assertIn(name, url)
        self.assertIn(url.rsplit("/", 1)[-1], " ".join(client("sqs", self.ms_port).list_queues()["QueueUrls"]))
        headers = {"X-Amz-Target": "AmazonSQS.ListQueues", "Content-Type": "application/x-amz-json-1.0",
                   "Authorization": strict_ecs.DEFAULT_AUTH["Authorization"].replace("/ecs/", "/sqs/")}
        # The Host header is forwarded as the client sent it, so ministack builds URLs that
        # point back at the proxy; the port is the only difference.
        via = http_request(self.px_port, "POST", "/", b"{}", headers)
        raw = http_request(self.ms_port, "POST", "/", b"{}", headers)
        self.assertEqual(via[0], raw[0])
        self.assertEqual(via[2].replace(f":{self.px_port}/".encode(), f":{self.ms_port}/".encode()), raw[2])
        # an ECS operation the layer has no rule for goes through as is
        headers = {"X-Amz-Target": strict_ecs.ECS_TARGET_PREFIX + "NoSuchOperation",
                   "Content-Type": "application/x-amz-json-1.1", **strict_ecs.DEFAULT_AUTH}
        via = http_request(self.px_port, "POST", "/", b"{}", headers)
        raw = http_request(self.ms_port, "POST", "/", b"{}", headers)
        self.assertEqual((via[0], via[2]), (raw[0], raw[2]))


if __name__ == "__main__":
    unittest.main()
