"""Tests for aas.py (moto's Application Auto Scaling, patched) against a real ministack.

Run from the repository root with the venv's python:

    ~/.cache/ecs-operator/venv/bin/python -m unittest -v testenv/strict/test_aas.py

setUpClass starts ministack and one aas.py (all rules on, default 2 s visibility lag,
page size 2) and creates the ECS services the tests use, old enough to be visible;
a few tests start a second aas.py. Every process is stopped by its PID.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
import unittest
import uuid
from pathlib import Path
from typing import Any, Callable, Optional

from botocore.exceptions import ClientError

HERE = Path(__file__).resolve().parent
SCRIPT = HERE / "aas.py"
sys.path.insert(0, str(HERE))
sys.dont_write_bytecode = True  # keep the source tree clean (no __pycache__ next to the scripts)
import aas  # noqa: E402  (rule names and messages)
from test_strict_ecs import MINISTACK, PY, Proc, client, free_port, http_request, wait_healthy  # noqa: E402

DIM = "ecs:service:DesiredCount"
LAG = 2.0
CPU_POLICY = {"TargetValue": 50.0,
              "PredefinedMetricSpecification": {"PredefinedMetricType": "ECSServiceAverageCPUUtilization"}}
STEP_POLICY = {"AdjustmentType": "ChangeInCapacity", "Cooldown": 60,
               "StepAdjustments": [{"MetricIntervalLowerBound": 0.0, "ScalingAdjustment": 1}]}


def start_aas(ecs_port: int, *extra: str) -> tuple[Proc, int]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "ECS_AAS_DISABLE"}
    proc = Proc([PY, str(SCRIPT), "--host", "127.0.0.1", "--port", str(port),
                 "--ecs", f"http://127.0.0.1:{ecs_port}", *extra], env=env)
    try:
        wait_healthy(port, "/_aas/health", proc.proc, timeout=30)
    except BaseException:
        print(proc.text(), file=sys.stderr)
        proc.stop()
        raise
    return proc, port


def tearDownModule() -> None:
    """unittest compiled these files on import; drop that cache so the tree stays as checked in."""
    cache = HERE / "__pycache__"
    for pyc in list(cache.glob("*aas*.pyc")) + list(cache.glob("*strict_ecs*.pyc")):
        pyc.unlink()
    if cache.is_dir() and not any(cache.iterdir()):
        cache.rmdir()


class AasTest(unittest.TestCase):
    ministack: Proc
    server: Proc
    ms_port: int
    aas_port: int
    cluster: str
    pool: list[str]

    @classmethod
    def setUpClass(cls) -> None:
        cls.ms_port = free_port()
        env = dict(os.environ, BIND_HOST="127.0.0.1", GATEWAY_PORT=str(cls.ms_port),
                   IOT_MTLS_ENABLED="0", SFTP_ENABLED="0")
        cls.workdir = tempfile.TemporaryDirectory(prefix="aas-ministack-")
        cls.ministack = Proc([str(MINISTACK)], env=env, cwd=cls.workdir.name)
        try:
            wait_healthy(cls.ms_port, "/_ministack/health", cls.ministack.proc, timeout=40)
            cls.server, cls.aas_port = start_aas(cls.ms_port)
        except BaseException:
            cls.ministack.stop()
            raise
        cls.ecs = client("ecs", cls.ms_port)
        cls.aas = client("application-autoscaling", cls.aas_port)
        cls.cloudwatch = client("cloudwatch", cls.aas_port)
        cls.cluster = f"aas-{uuid.uuid4().hex[:6]}"
        cls.ecs.create_cluster(clusterName=cls.cluster)
        cls.ecs.register_task_definition(family="aas-web", containerDefinitions=[
            {"name": "app", "image": "busybox", "essential": True}])
        # Services for the tests, created now so they are past the visibility lag.
        cls.pool = []
        for i in range(20):
            name = f"svc-{i}"
            cls.ecs.create_service(cluster=cls.cluster, serviceName=name, taskDefinition="aas-web", desiredCount=1)
            cls.pool.append(name)
        cls.pool_ready_at = time.time() + LAG + 0.1

    @classmethod
    def tearDownClass(cls) -> None:
        cls.server.stop()
        cls.ministack.stop()
        cls.workdir.cleanup()

    # ---- helpers --------------------------------------------------------------------

    def service(self, desired: Optional[int] = None) -> str:
        """A visible service of the pool (waits out the lag once); its resource ID."""
        delay = self.pool_ready_at - time.time()
        if delay > 0:
            time.sleep(delay)
        name = self.pool.pop()
        if desired is not None:
            self.ecs.update_service(cluster=self.cluster, service=name, desiredCount=desired)
        return f"service/{self.cluster}/{name}"

    def new_service(self, name: Optional[str] = None) -> str:
        name = name or f"new-{uuid.uuid4().hex[:6]}"
        self.ecs.create_service(cluster=self.cluster, serviceName=name, taskDefinition="aas-web", desiredCount=1)
        return f"service/{self.cluster}/{name}"

    def register(self, rid: str, api: Any = None, **kw: Any) -> dict[str, Any]:
        api = api or self.aas
        return api.register_scalable_target(ServiceNamespace="ecs", ResourceId=rid, ScalableDimension=DIM, **kw)

    def target(self, rid: str) -> list[dict[str, Any]]:
        return self.aas.describe_scalable_targets(ServiceNamespace="ecs", ResourceIds=[rid])["ScalableTargets"]

    def assert_error(self, code: str, message: Optional[str], fn: Callable[..., Any], **kwargs: Any) -> None:
        with self.assertRaises(ClientError) as ctx:
            fn(**kwargs)
        err = ctx.exception.response["Error"]
        self.assertEqual(err["Code"], code, err)
        if message is not None:
            self.assertEqual(err["Message"], message)

    def desired_count(self, rid: str) -> int:
        _, cluster, name = rid.split("/")
        return self.ecs.describe_services(cluster=cluster, services=[name])["services"][0]["desiredCount"]

    # ---- ecs-service-existence --------------------------------------------------------

    def test_register_for_a_missing_service_fails(self) -> None:
        for rid in (f"service/{self.cluster}/no-such-service", "service/no-such-cluster/web"):
            self.assert_error("ValidationException", f"ECS service doesn't exist: {rid}",
                              self.register, rid=rid, MinCapacity=1, MaxCapacity=2)

    def test_register_for_a_deleted_service_fails(self) -> None:
        rid = self.service()
        self.ecs.delete_service(cluster=self.cluster, service=rid.split("/")[2], force=True)
        self.assert_error("ValidationException", f"ECS service doesn't exist: {rid}",
                          self.register, rid=rid, MinCapacity=1, MaxCapacity=2)

    def test_register_for_a_service_past_the_lag_succeeds_with_aws_defaults(self) -> None:
        rid = self.service()
        arn = self.register(rid, MinCapacity=1, MaxCapacity=3)["ScalableTargetARN"]
        self.assertRegex(arn, r"^arn:aws:application-autoscaling:us-east-1:000000000000:scalable-target/")
        [t] = self.target(rid)
        self.assertEqual((t["MinCapacity"], t["MaxCapacity"], t["ScalableTargetARN"]), (1, 3, arn))
        # target-defaults: the ECS service-linked role, and every suspension off.
        self.assertEqual(t["RoleARN"], aas.ecs_service_linked_role("000000000000"))
        self.assertEqual(t["SuspendedState"], {"DynamicScalingInSuspended": False,
                                               "DynamicScalingOutSuspended": False,
                                               "ScheduledScalingSuspended": False})
        # Updating keeps the ARN and what was not sent.
        self.assertEqual(self.register(rid, MaxCapacity=4)["ScalableTargetARN"], arn)
        [t] = self.target(rid)
        self.assertEqual((t["MinCapacity"], t["MaxCapacity"]), (1, 4))

    # ---- ecs-service-visibility-lag ------------------------------------------------------

    def test_a_new_service_is_not_visible_until_the_lag_has_passed(self) -> None:
        rid = self.new_service()
        created = time.time()
        self.assert_error("ValidationException", f"ECS service doesn't exist: {rid}",
                          self.register, rid=rid, MinCapacity=1, MaxCapacity=2)
        while True:
            try:
                self.register(rid, MinCapacity=1, MaxCapacity=2)
                break
            except ClientError as e:
                self.assertEqual(e.response["Error"]["Code"], "ValidationException")
                self.assertLess(time.time() - created, LAG + 1, "still refused well after the lag")
                time.sleep(0.1)
        # ministack's createdAt has whole seconds: the refusal lasts between LAG-1 and LAG s.
        self.assertGreaterEqual(time.time() - created, LAG - 1.05)
        self.assertEqual(len(self.target(rid)), 1)

    # ---- register-capacity ------------------------------------------------------------

    def test_a_new_target_needs_min_and_max_and_min_le_max(self) -> None:
        rid = self.service()
        self.assert_error("ValidationException", aas.MSG_CAPACITY_REQUIRED, self.register, rid=rid)
        self.assert_error("ValidationException", aas.MSG_CAPACITY_REQUIRED, self.register, rid=rid, MinCapacity=1)
        self.assert_error("ValidationException", aas.MSG_MIN_GT_MAX, self.register, rid=rid,
                          MinCapacity=3, MaxCapacity=2)
        self.assertEqual(self.target(rid), [])
        self.register(rid, MinCapacity=1, MaxCapacity=2)
        # An update may omit either; the result must still have min <= max.
        self.register(rid, MaxCapacity=5)
        self.assert_error("ValidationException", aas.MSG_MIN_GT_MAX, self.register, rid=rid, MinCapacity=6)
        [t] = self.target(rid)
        self.assertEqual((t["MinCapacity"], t["MaxCapacity"]), (1, 5))

    # ---- register-clamps-desired-count --------------------------------------------------

    def test_register_moves_desired_count_into_the_range_and_records_an_activity(self) -> None:
        rid = self.service(desired=1)
        self.register(rid, MinCapacity=2, MaxCapacity=4)
        self.assertEqual(self.desired_count(rid), 2)
        self.register(rid, MinCapacity=1, MaxCapacity=4)  # in range: untouched
        self.assertEqual(self.desired_count(rid), 2)
        self.register(rid, MinCapacity=0, MaxCapacity=1)
        self.assertEqual(self.desired_count(rid), 1)
        acts = self.aas.describe_scaling_activities(ServiceNamespace="ecs", ResourceId=rid,
                                                    ScalableDimension=DIM)["ScalingActivities"]
        self.assertEqual([a["Description"] for a in acts],
                         ["Setting desired count to 1.", "Setting desired count to 2."])  # newest first
        self.assertEqual({a["StatusCode"] for a in acts}, {"Successful"})

    # ---- deregister-removes-policies -------------------------------------------------

    def test_deregister_deletes_the_targets_policies_alarms_and_scheduled_actions(self) -> None:
        rid, other = self.service(), self.service()
        for r in (rid, other):
            self.register(r, MinCapacity=1, MaxCapacity=3)
            self.aas.put_scaling_policy(PolicyName="cpu", ServiceNamespace="ecs", ResourceId=r,
                                        ScalableDimension=DIM, PolicyType="TargetTrackingScaling",
                                        TargetTrackingScalingPolicyConfiguration=CPU_POLICY)
            self.aas.put_scaling_policy(PolicyName="step", ServiceNamespace="ecs", ResourceId=r,
                                        ScalableDimension=DIM, PolicyType="StepScaling",
                                        StepScalingPolicyConfiguration=STEP_POLICY)
            self.aas.put_scheduled_action(ScheduledActionName="night", ServiceNamespace="ecs", ResourceId=r,
                                          ScalableDimension=DIM, Schedule="cron(0 22 * * ? *)",
                                          ScalableTargetAction={"MinCapacity": 0, "MaxCapacity": 1})
        alarms = [a["AlarmName"] for a in self.cloudwatch.describe_alarms()["MetricAlarms"] if rid in a["AlarmName"]]
        self.assertEqual(len(alarms), 2)
        self.aas.deregister_scalable_target(ServiceNamespace="ecs", ResourceId=rid, ScalableDimension=DIM)
        self.assertEqual(self.aas.describe_scaling_policies(ServiceNamespace="ecs", ResourceId=rid)["ScalingPolicies"], [])
        self.assertEqual(self.aas.describe_scheduled_actions(ServiceNamespace="ecs", ResourceId=rid)["ScheduledActions"], [])
        left = [a["AlarmName"] for a in self.cloudwatch.describe_alarms()["MetricAlarms"]]
        self.assertFalse(set(alarms) & set(left))
        # The other target keeps its own.
        names = [p["PolicyName"] for p in self.aas.describe_scaling_policies(
            ServiceNamespace="ecs", ResourceId=other)["ScalingPolicies"]]
        self.assertEqual(sorted(names), ["cpu", "step"])
        self.assertEqual(len(self.aas.describe_scheduled_actions(
            ServiceNamespace="ecs", ResourceId=other)["ScheduledActions"]), 1)

    # ---- policy-arn-stable ------------------------------------------------------------

    def test_updating_a_policy_keeps_its_arn_and_replaces_its_alarms(self) -> None:
        rid = self.service()
        self.register(rid, MinCapacity=1, MaxCapacity=3)

        def put(target: float) -> str:
            config = dict(CPU_POLICY, TargetValue=target)
            return self.aas.put_scaling_policy(PolicyName="cpu", ServiceNamespace="ecs", ResourceId=rid,
                                               ScalableDimension=DIM, PolicyType="TargetTrackingScaling",
                                               TargetTrackingScalingPolicyConfiguration=config)["PolicyARN"]

        def alarms() -> list[str]:
            return [a["AlarmName"] for a in self.cloudwatch.describe_alarms()["MetricAlarms"] if rid in a["AlarmName"]]

        first = put(60.0)
        before = alarms()
        second = put(70.0)
        self.assertEqual(first, second)
        self.assertEqual(len(alarms()), len(before), "the old policy's alarms do not linger")
        policies = self.aas.describe_scaling_policies(ServiceNamespace="ecs", ResourceId=rid)["ScalingPolicies"]
        self.assertEqual([p["PolicyARN"] for p in policies], [first])
        self.assertEqual(policies[0]["TargetTrackingScalingPolicyConfiguration"]["TargetValue"], 70.0)

    # ---- service-deletion-deregisters ------------------------------------------------

    def test_deleting_the_service_deregisters_its_target(self) -> None:
        rid = self.service()
        self.register(rid, MinCapacity=1, MaxCapacity=2)
        self.aas.put_scaling_policy(PolicyName="cpu", ServiceNamespace="ecs", ResourceId=rid,
                                    ScalableDimension=DIM, PolicyType="TargetTrackingScaling",
                                    TargetTrackingScalingPolicyConfiguration=CPU_POLICY)
        self.ecs.delete_service(cluster=self.cluster, service=rid.split("/")[2], force=True)
        self.assertEqual(self.target(rid), [])
        self.assertEqual(self.aas.describe_scaling_policies(ServiceNamespace="ecs", ResourceId=rid)["ScalingPolicies"], [])
        self.assert_error("ObjectNotFoundException", aas.MSG_NO_TARGET.format(ns="ecs", rid=rid, dim=DIM),
                          self.aas.deregister_scalable_target, ServiceNamespace="ecs", ResourceId=rid,
                          ScalableDimension=DIM)

    # ---- scalable-target-tags --------------------------------------------------------

    def test_tags(self) -> None:
        rid = self.service()
        arn = self.register(rid, MinCapacity=1, MaxCapacity=2, Tags={"team": "shop", "env": "test"})["ScalableTargetARN"]
        self.assertEqual(self.aas.list_tags_for_resource(ResourceARN=arn)["Tags"], {"team": "shop", "env": "test"})
        self.aas.tag_resource(ResourceARN=arn, Tags={"env": "prod", "owner": "me"})
        self.aas.untag_resource(ResourceARN=arn, TagKeys=["team"])
        self.assertEqual(self.aas.list_tags_for_resource(ResourceARN=arn)["Tags"], {"env": "prod", "owner": "me"})
        # Confirmed AWS answer: Tags are for creation only; updates use TagResource.
        self.assert_error("ValidationException", aas.MSG_TAG_EXISTING, self.register, rid=rid,
                          MinCapacity=1, MaxCapacity=2, Tags={"team": "shop"})
        self.register(rid, MaxCapacity=3)  # no Tags: fine
        self.assert_error("TooManyTagsException", None, self.aas.tag_resource, ResourceARN=arn,
                          Tags={f"k{i}": "v" for i in range(49)})
        self.assert_error("ValidationException", None, self.aas.tag_resource, ResourceARN=arn, Tags={"aws:x": "v"})
        self.aas.deregister_scalable_target(ServiceNamespace="ecs", ResourceId=rid, ScalableDimension=DIM)
        self.assert_error("ResourceNotFoundException", None, self.aas.list_tags_for_resource, ResourceARN=arn)
        # A target registered again is a new one, with a new ARN and no tags.
        arn2 = self.register(rid, MinCapacity=1, MaxCapacity=2)["ScalableTargetARN"]
        self.assertNotEqual(arn2, arn)
        self.assertEqual(self.aas.list_tags_for_resource(ResourceARN=arn2)["Tags"], {})

    # ---- needs-registered-target / object-not-found -----------------------------------

    def test_policies_and_actions_need_a_registered_target(self) -> None:
        rid = self.service()
        msg = aas.MSG_NOT_REGISTERED.format(ns="ecs", rid=rid, dim=DIM)
        self.assert_error("ObjectNotFoundException", msg, self.aas.put_scaling_policy, PolicyName="cpu",
                          ServiceNamespace="ecs", ResourceId=rid, ScalableDimension=DIM,
                          PolicyType="TargetTrackingScaling", TargetTrackingScalingPolicyConfiguration=CPU_POLICY)
        self.assert_error("ObjectNotFoundException", msg, self.aas.put_scheduled_action, ScheduledActionName="n",
                          ServiceNamespace="ecs", ResourceId=rid, ScalableDimension=DIM,
                          Schedule="cron(0 22 * * ? *)", ScalableTargetAction={"MinCapacity": 0})

    def test_deleting_what_does_not_exist_is_object_not_found(self) -> None:
        rid = self.service()
        self.assert_error("ObjectNotFoundException", aas.MSG_NO_TARGET.format(ns="ecs", rid=rid, dim=DIM),
                          self.aas.deregister_scalable_target, ServiceNamespace="ecs", ResourceId=rid,
                          ScalableDimension=DIM)
        self.register(rid, MinCapacity=1, MaxCapacity=2)
        self.assert_error("ObjectNotFoundException",
                          aas.MSG_NO_POLICY.format(ns="ecs", rid=rid, dim=DIM, name="nope"),
                          self.aas.delete_scaling_policy, PolicyName="nope", ServiceNamespace="ecs",
                          ResourceId=rid, ScalableDimension=DIM)
        self.assert_error("ObjectNotFoundException",
                          aas.MSG_NO_ACTION.format(ns="ecs", rid=rid, dim=DIM, name="nope"),
                          self.aas.delete_scheduled_action, ScheduledActionName="nope", ServiceNamespace="ecs",
                          ResourceId=rid, ScalableDimension=DIM)

    # ---- describe-filters / describe-paging ------------------------------------------

    def test_describe_filters_match_exactly(self) -> None:
        name = f"web-{uuid.uuid4().hex[:4]}"
        short = self.new_service(name)
        long = self.new_service(name + "-2")
        time.sleep(LAG + 0.1)  # past the visibility lag of the two new services
        for r in (short, long):
            self.register(r, MinCapacity=1, MaxCapacity=2)
        for p in ("cpu", "mem"):
            self.aas.put_scaling_policy(PolicyName=p, ServiceNamespace="ecs", ResourceId=short, ScalableDimension=DIM,
                                        PolicyType="TargetTrackingScaling",
                                        TargetTrackingScalingPolicyConfiguration=CPU_POLICY)
        # moto alone matches ResourceId as a substring: web-2's filter would return web's policies.
        self.assertEqual(self.aas.describe_scaling_policies(ServiceNamespace="ecs", ResourceId=long)["ScalingPolicies"], [])
        got = self.aas.describe_scaling_policies(ServiceNamespace="ecs", ResourceId=short, PolicyNames=["mem"])
        self.assertEqual([p["PolicyName"] for p in got["ScalingPolicies"]], ["mem"])  # moto alone ignores PolicyNames
        self.assert_error("ValidationException", None, self.aas.describe_scalable_targets, ServiceNamespace="ecs",
                          ResourceIds=[f"service/{self.cluster}/s{i}" for i in range(51)])
        for fn in (self.aas.describe_scaling_policies, self.aas.describe_scheduled_actions,
                   self.aas.describe_scaling_activities, self.aas.describe_scalable_targets):
            self.assert_error("ValidationException", aas.MSG_DIMENSION_NEEDS_ID, fn, ServiceNamespace="ecs",
                              ScalableDimension=DIM)

    def test_describe_pages_with_opaque_tokens(self) -> None:
        rids = [self.service() for _ in range(3)]
        for r in rids:
            self.register(r, MinCapacity=1, MaxCapacity=2)
        first = self.aas.describe_scalable_targets(ServiceNamespace="ecs", ResourceIds=rids)
        self.assertEqual(len(first["ScalableTargets"]), 2)
        second = self.aas.describe_scalable_targets(ServiceNamespace="ecs", ResourceIds=rids,
                                                    NextToken=first["NextToken"])
        self.assertEqual(len(second["ScalableTargets"]), 1)
        self.assertNotIn("NextToken", second)
        seen = [t["ResourceId"] for t in first["ScalableTargets"] + second["ScalableTargets"]]
        self.assertEqual(sorted(seen), sorted(rids))
        one = self.aas.describe_scalable_targets(ServiceNamespace="ecs", ResourceIds=rids, MaxResults=1)
        self.assertEqual(len(one["ScalableTargets"]), 1)
        pages = self.aas.get_paginator("describe_scalable_targets").paginate(ServiceNamespace="ecs", ResourceIds=rids)
        self.assertEqual(sorted(t["ResourceId"] for pg in pages for t in pg["ScalableTargets"]), sorted(rids))
        self.assert_error("InvalidNextTokenException", None, self.aas.describe_scalable_targets,
                          ServiceNamespace="ecs", ResourceIds=rids[:2], NextToken=first["NextToken"])
        self.assert_error("InvalidNextTokenException", None, self.aas.describe_scalable_targets,
                          ServiceNamespace="ecs", NextToken="garbage")
        self.assert_error("ValidationException", None, self.aas.describe_scalable_targets,
                          ServiceNamespace="ecs", MaxResults=51)
        for i in range(3):
            self.aas.put_scaling_policy(PolicyName=f"p{i}", ServiceNamespace="ecs", ResourceId=rids[0],
                                        ScalableDimension=DIM, PolicyType="StepScaling",
                                        StepScalingPolicyConfiguration=STEP_POLICY)
        pages = list(self.aas.get_paginator("describe_scaling_policies").paginate(
            ServiceNamespace="ecs", ResourceId=rids[0]))
        self.assertEqual([len(pg["ScalingPolicies"]) for pg in pages], [2, 1])

    # ---- flags and control endpoints ------------------------------------------------

    def test_rules_endpoint_and_disable(self) -> None:
        status, _, body = http_request(self.aas_port, "GET", "/_aas/rules")
        self.assertEqual(status, 200)
        self.assertIn(b'"ecs-service-existence"', body)
        proc, port = start_aas(self.ms_port, "--disable", "ecs-service-existence,object-not-found")
        self.addCleanup(proc.stop)
        loose = client("application-autoscaling", port)
        rid = f"service/{self.cluster}/no-such-service"
        self.register(rid, api=loose, MinCapacity=1, MaxCapacity=2)  # accepted without the ECS check
        # moto's own answer for a missing target: ValidationException.
        with self.assertRaises(ClientError) as ctx:
            loose.deregister_scalable_target(ServiceNamespace="ecs", ResourceId="service/x/y", ScalableDimension=DIM)
        self.assertEqual(ctx.exception.response["Error"]["Code"], "ValidationException")
        started = [line for line in proc.text().splitlines() if line.startswith("aas: listening")]
        self.assertEqual(len(started), 1, proc.text())
        self.assertNotIn("ecs-service-existence", started[0])
        self.assertIn("ecs-service-visibility-lag", started[0])

    def test_unknown_rule_name_exits_2(self) -> None:
        out = subprocess.run([PY, str(SCRIPT), "--port", "1", "--ecs", "http://127.0.0.1:1", "--disable", "nope"],
                             capture_output=True, text=True, timeout=30)
        self.assertEqual(out.returncode, 2)
        self.assertIn("ecs-service-existence", out.stderr)


if __name__ == "__main__":
    unittest.main()
