#!/usr/bin/env python3
"""aas: an Application Auto Scaling endpoint (moto's server) that behaves like real AWS next to ministack.

ministack does not speak Application Auto Scaling; moto's server does, but on its own
it checks ECS services against moto's own (empty) ECS store and is more permissive
than AWS in ways that would let an operator bug pass. This launcher imports moto,
applies named rules (patches), each citing the AWS page that shows real Application
Auto Scaling behaves this way (the same list is in README.md next to this file), and
runs moto's server on loopback:

    python aas.py --host 127.0.0.1 --port 4570 --ecs http://127.0.0.1:4566 \\
        [--visibility-lag 2.0] [--page-size 2] [--disable rule-a,rule-b]

Only Application Auto Scaling (X-Amz-Target ``AnyScaleFrontendService.*``) is meant
to be sent here; ECS stays on ministack. Control endpoints: ``GET /_aas/health``
(200 once the patched server has answered its first call), ``GET /_aas/rules``;
moto's own ``POST /moto-api/reset`` clears every target, policy, action, tag and
activity.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import http.client
import json
import logging
import os
import signal
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Optional
from urllib.parse import urlsplit

# ministack's fixed account, so ARNs here name the same account as the ECS ones.
# Must be set before moto is imported.
os.environ.setdefault("MOTO_ACCOUNT_ID", "000000000000")

ECS_TARGET_PREFIX = "AmazonEC2ContainerServiceV20141113."
AAS_TARGET_PREFIX = "AnyScaleFrontendService."
JSON_CONTENT_TYPE = "application/x-amz-json-1.1"
ECS_NAMESPACE = "ecs"
# Application Auto Scaling's MaxResults limit (and default) for the Describe* calls.
AWS_MAX_RESULTS = 50
# Tag limits (TagResource, Application Auto Scaling API Reference).
MAX_TAGS = 50

# Rule names are a stable interface: --disable and ECS_AAS_DISABLE take them.
RULES: dict[str, str] = {
    "ecs-service-existence": "RegisterScalableTarget for ECS needs an ACTIVE service in the real ECS endpoint",
    "ecs-service-visibility-lag": "a service younger than --visibility-lag seconds is not yet visible to RegisterScalableTarget",
    "service-deletion-deregisters": "deleting an ECS service deregisters its scalable targets, policies and actions",
    "deregister-removes-policies": "DeregisterScalableTarget deletes the target's scaling policies and scheduled actions",
    "scalable-target-tags": "Tags on RegisterScalableTarget; TagResource / UntagResource / ListTagsForResource",
    "register-capacity": "a new target needs MinCapacity and MaxCapacity; MinCapacity <= MaxCapacity",
    "register-clamps-desired-count": "RegisterScalableTarget moves the service's desiredCount into [min, max]",
    "target-defaults": "RoleARN defaults to the ECS service-linked role, SuspendedState to all false",
    "needs-registered-target": "PutScalingPolicy / PutScheduledAction need a registered target (ObjectNotFoundException)",
    "object-not-found": "deregistering or deleting what does not exist is ObjectNotFoundException",
    "describe-filters": "Describe* filters match exactly; PolicyNames filters; a dimension needs a resource ID",
    "describe-paging": "Describe* return pages of at most --page-size items with opaque NextTokens",
    "policy-arn-stable": "PutScalingPolicy on an existing policy updates it in place: same ARN, its alarms replaced",
}

API = "https://docs.aws.amazon.com/autoscaling/application/APIReference"
RULE_SOURCES: dict[str, list[str]] = {
    "ecs-service-existence": [
        f"{API}/API_RegisterScalableTarget.html",
        "moto 5.2.5 applicationautoscaling/models.py (the same message, for its own ECS store)",
    ],
    "ecs-service-visibility-lag": [
        f"{API}/API_RegisterScalableTarget.html (eventual consistency note)",
    ],
    "service-deletion-deregisters": [
        "https://github.com/eagletmt/hako/pull/69",
    ],
    "deregister-removes-policies": [
        f"{API}/API_DeregisterScalableTarget.html",
    ],
    "scalable-target-tags": [
        f"{API}/API_RegisterScalableTarget.html (Tags)",
        f"{API}/API_TagResource.html",
        f"{API}/API_ListTagsForResource.html",
        "https://github.com/terraform-aws-modules/terraform-aws-rds-aurora/pull/420",
    ],
    "register-capacity": [
        f"{API}/API_RegisterScalableTarget.html (MinCapacity, MaxCapacity)",
    ],
    "register-clamps-desired-count": [
        f"{API}/API_RegisterScalableTarget.html",
        f"{API}/API_DescribeScalingActivities.html",
    ],
    "target-defaults": [
        f"{API}/API_RegisterScalableTarget.html (RoleARN)",
        f"{API}/API_SuspendedState.html",
        "https://docs.aws.amazon.com/autoscaling/application/userguide/application-auto-scaling-service-linked-roles.html",
    ],
    "needs-registered-target": [
        f"{API}/API_PutScalingPolicy.html",
        f"{API}/API_PutScheduledAction.html",
        "https://github.com/ansible/ansible/pull/35632",
        "https://github.com/cloudposse/terraform-aws-ecs-cloudwatch-autoscaling/pull/36",
    ],
    "object-not-found": [
        f"{API}/API_DeregisterScalableTarget.html",
        f"{API}/API_DeleteScalingPolicy.html",
        f"{API}/API_DeleteScheduledAction.html",
        "https://github.com/eagletmt/hako/pull/69",
    ],
    "describe-filters": [
        f"{API}/API_DescribeScalableTargets.html",
        f"{API}/API_DescribeScalingPolicies.html",
        f"{API}/API_DescribeScheduledActions.html",
    ],
    "describe-paging": [
        f"{API}/API_DescribeScalableTargets.html (MaxResults, NextToken)",
    ],
    "policy-arn-stable": [
        f"{API}/API_PutScalingPolicy.html (\"Creates or updates a scaling policy\"; the ARN a CloudWatch alarm action names stays valid)",
    ],
}

# Messages. "confirmed" = quoted from a real AWS answer in the cited source.
MSG_NO_SERVICE = "ECS service doesn't exist: {rid}"  # AWS's wording as moto has it; seen in real Terraform output
MSG_NOT_REGISTERED = ("No scalable target registered for service namespace: {ns}, resource ID: {rid}, "
                      "scalable dimension: {dim}")  # confirmed: ansible#35632, cloudposse#36
MSG_NO_TARGET = "No scalable target found for service namespace: {ns}, resource ID: {rid}, scalable dimension: {dim}"
MSG_NO_POLICY = ("No scaling policy found for service namespace: {ns}, resource ID: {rid}, scalable dimension: {dim}, "
                 "policy name: {name}")
MSG_NO_ACTION = ("No scheduled action found for service namespace: {ns}, resource ID: {rid}, scalable dimension: {dim}, "
                 "scheduled action name: {name}")
MSG_TAG_EXISTING = ("The scalable target that you tried to tag already exists. To update tags on an existing "
                    "scalable target, use the TagResource API.")  # confirmed: terraform-aws-rds-aurora#420
MSG_CAPACITY_REQUIRED = "MinCapacity and MaxCapacity are required when registering a new scalable target."
MSG_MIN_GT_MAX = "Minimum capacity cannot be greater than maximum capacity"
MSG_DIMENSION_NEEDS_ID = "If you specify a scalable dimension, you must also specify a resource ID."
MSG_BAD_TOKEN = "Invalid NextToken"


def ecs_service_linked_role(account: str) -> str:
    return (f"arn:aws:iam::{account}:role/aws-service-role/ecs.application-autoscaling.amazonaws.com/"
            "AWSServiceRoleForApplicationAutoScaling_ECSService")


# --------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Config:
    host: str
    port: int
    ecs: str
    visibility_lag: float
    page_size: int
    disabled: frozenset[str]

    def enabled(self, rule: str) -> bool:
        return rule not in self.disabled

    def enabled_rules(self) -> list[str]:
        return [r for r in RULES if r not in self.disabled]


def parse_args(argv: list[str]) -> Config:
    p = argparse.ArgumentParser(prog="aas.py", description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--ecs", required=True, help="the real ECS endpoint (ministack), e.g. http://127.0.0.1:4566")
    p.add_argument("--visibility-lag", type=float, default=2.0,
                   help="seconds after CreateService during which the service is not yet visible (default 2.0)")
    p.add_argument("--page-size", type=int, default=2, help="largest Describe* page (default 2; AWS allows 50)")
    p.add_argument("--disable", default=None, help="comma list of rule names (env ECS_AAS_DISABLE)")
    a = p.parse_args(argv)
    text = a.disable if a.disable is not None else os.environ.get("ECS_AAS_DISABLE", "")
    disabled = [r.strip() for r in text.split(",") if r.strip()]
    unknown = [r for r in disabled if r not in RULES]
    if unknown:
        p.error(f"unknown rule name(s): {', '.join(unknown)}; valid rules: {', '.join(RULES)}")
    if a.page_size < 1:
        p.error("--page-size must be at least 1")
    if a.visibility_lag < 0:
        p.error("--visibility-lag must not be negative")
    parts = urlsplit(a.ecs)
    if parts.scheme != "http" or not parts.hostname:
        p.error("--ecs must be an http://host:port URL")
    return Config(a.host, a.port, a.ecs.rstrip("/"), a.visibility_lag, min(a.page_size, AWS_MAX_RESULTS),
                  frozenset(disabled))


def log(rule: str, text: str) -> None:
    print(f"aas: [{rule}] {text}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------
# The real ECS endpoint
# --------------------------------------------------------------------------------------

class EcsError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class Ecs:
    """ministack, called with AWS JSON 1.1 (ministack does not check signatures; the
    Authorization header only names the service and region, as a signed call would)."""

    def __init__(self, base: str) -> None:
        parts = urlsplit(base)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80

    def call(self, operation: str, body: dict[str, Any], region: str = "us-east-1") -> dict[str, Any]:
        now = time.gmtime()
        amz_date = time.strftime("%Y%m%dT%H%M%SZ", now)
        headers = {
            "Content-Type": JSON_CONTENT_TYPE,
            "X-Amz-Target": ECS_TARGET_PREFIX + operation,
            "X-Amz-Date": amz_date,
            "Authorization": (f"AWS4-HMAC-SHA256 Credential=test/{amz_date[:8]}/{region}/ecs/aws4_request, "
                              "SignedHeaders=content-type;host;x-amz-date;x-amz-target, Signature=" + "0" * 64),
        }
        conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
        try:
            conn.request("POST", "/", body=json.dumps(body).encode(), headers=headers)
            resp = conn.getresponse()
            raw = resp.read()
            status = resp.status
        except OSError as e:
            raise EcsError("ConnectionError", f"ECS endpoint {self.host}:{self.port}: {e}") from e
        finally:
            conn.close()
        try:
            data = json.loads(raw or b"{}")
        except ValueError:
            data = {}
        if status != 200:
            code = str(data.get("__type") or f"HTTP{status}").split("#")[-1]
            raise EcsError(code, str(data.get("message") or data.get("Message") or raw[:200]))
        return data if isinstance(data, dict) else {}

    def services(self, cluster: str, names: list[str]) -> dict[str, Optional[dict[str, Any]]]:
        """name -> the service as DescribeServices shows it, or None (MISSING, no cluster)."""
        out: dict[str, Optional[dict[str, Any]]] = {n: None for n in names}
        for i in range(0, len(names), 10):  # DescribeServices takes at most 10
            batch = names[i:i + 10]
            try:
                data = self.call("DescribeServices", {"cluster": cluster, "services": batch})
            except EcsError as e:
                if e.code in ("ClusterNotFoundException", "InvalidParameterException"):
                    continue
                raise
            for svc in data.get("services") or []:
                name = svc.get("serviceName")
                if name in out:
                    out[name] = svc
        return out


def split_ecs_resource_id(rid: Any) -> Optional[tuple[str, str]]:
    """`service/<cluster>/<service>` -> (cluster, service); None if it is not that shape."""
    if not isinstance(rid, str):
        return None
    parts = rid.split("/")
    if len(parts) != 3 or parts[0] != "service" or not parts[1] or not parts[2]:
        return None
    return parts[1], parts[2]


def created_at_seconds(value: Any) -> Optional[float]:
    """DescribeServices `createdAt`: epoch seconds (ministack: an int or float)."""
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


# --------------------------------------------------------------------------------------
# The patches
# --------------------------------------------------------------------------------------

def install(config: Config) -> Callable[..., Any]:
    """Imports moto, applies the enabled rules, returns moto's WSGI application."""
    from moto.applicationautoscaling import models as aas_models
    from moto.applicationautoscaling import responses as aas_responses
    from moto.applicationautoscaling.exceptions import AWSValidationException
    from moto.core.exceptions import JsonRESTError
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

    Backend = aas_models.ApplicationAutoscalingBackend
    Response = aas_responses.ApplicationAutoScalingResponse
    ecs = Ecs(config.ecs)
    on = config.enabled
    # The service the last ECS existence check found (every call runs under one lock).
    last_service: dict[str, Any] = {}

    class AasError(JsonRESTError):
        def __init__(self, code: str, message: str, status: int = 400, **extra: Any) -> None:
            super().__init__(code, message)
            self.code = status
            if extra:
                self.description = json.dumps({"__type": code, "message": message, **extra})

    def not_found(message: str) -> AasError:
        return AasError("ObjectNotFoundException", message)

    def params(resp: Any) -> dict[str, Any]:
        try:
            data = json.loads(resp.body or "{}")
        except (TypeError, ValueError):
            data = {}
        return data if isinstance(data, dict) else {}

    def tags_of(backend: Any) -> dict[str, dict[str, str]]:
        # Kept on the backend so moto's /moto-api/reset clears it with everything else.
        if not hasattr(backend, "_aas_tags"):
            backend._aas_tags = {}
        return backend._aas_tags

    def activities_of(backend: Any) -> list[dict[str, Any]]:
        if not hasattr(backend, "_aas_activities"):
            backend._aas_activities = []
        return backend._aas_activities

    def find_target(backend: Any, ns: Any, rid: Any, dim: Any) -> Any:
        t = backend.targets.get(dim, {}).get(rid)
        return t if t is not None and t.service_namespace == ns else None

    def all_targets(backend: Any) -> list[Any]:
        return [t for by_id in backend.targets.values() for t in by_id.values()]

    def remove_policies_and_actions(backend: Any, ns: str, rid: str, dim: str) -> tuple[int, int]:
        policies = [k for k, p in backend.policies.items()
                    if p.service_namespace == ns and p.resource_id == rid and p.scalable_dimension == dim]
        for key in policies:
            # What moto's delete_scaling_policy does: the policy's CloudWatch alarms go too.
            backend.policies[key].delete_alarms(backend.account_id, backend.region_name)
            del backend.policies[key]
        before = len(backend.scheduled_actions)
        backend.scheduled_actions = [
            a for a in backend.scheduled_actions
            if not (a.service_namespace == ns and a.resource_id == rid and a.scalable_dimension == dim)]
        return len(policies), before - len(backend.scheduled_actions)

    def drop_target(backend: Any, target: Any) -> tuple[int, int]:
        del backend.targets[target.scalable_dimension][target.resource_id]
        tags_of(backend).pop(target.arn, None)
        return remove_policies_and_actions(backend, target.service_namespace, target.resource_id,
                                           target.scalable_dimension)

    def internal(e: EcsError) -> AasError:
        return AasError("InternalServiceException", f"could not reach the ECS endpoint: {e}", status=500)

    # ---- service-deletion-deregisters ------------------------------------------------

    def sweep(backend: Any, resource_ids: Optional[list[str]] = None) -> None:
        """Drops the ECS targets (of `resource_ids`, or all) whose service is no longer ACTIVE."""
        if not on("service-deletion-deregisters"):
            return
        targets = [t for t in all_targets(backend) if t.service_namespace == ECS_NAMESPACE
                   and (resource_ids is None or t.resource_id in resource_ids)]
        by_cluster: dict[str, list[Any]] = {}
        for t in targets:
            cs = split_ecs_resource_id(t.resource_id)
            if cs:
                by_cluster.setdefault(cs[0], []).append(t)
        for cluster, ts in by_cluster.items():
            names = sorted({split_ecs_resource_id(t.resource_id)[1] for t in ts})  # type: ignore[index]
            try:
                found = ecs.services(cluster, names)
            except EcsError as e:
                raise internal(e)
            for t in ts:
                svc = found.get(split_ecs_resource_id(t.resource_id)[1])  # type: ignore[index]
                if svc is None or svc.get("status") != "ACTIVE":
                    n_pol, n_act = drop_target(backend, t)
                    state = "gone" if svc is None else svc.get("status")
                    log("service-deletion-deregisters",
                        f"{t.resource_id} {t.scalable_dimension}: ECS service is {state}; deregistered the target "
                        f"({n_pol} policies, {n_act} scheduled actions)")

    # ---- ecs-service-existence + ecs-service-visibility-lag --------------------------

    def ecs_service_exists_for_target(self: Any, r_id: str) -> bool:
        last_service.clear()
        if not on("ecs-service-existence"):
            return True  # moto alone would look in its own, empty, ECS store and refuse everything
        cs = split_ecs_resource_id(r_id)
        if cs is None:
            raise AWSValidationException(MSG_NO_SERVICE.format(rid=r_id))
        try:
            svc = ecs.services(cs[0], [cs[1]]).get(cs[1])
        except EcsError as e:
            raise internal(e)
        if svc is None or svc.get("status") != "ACTIVE":
            state = "missing" if svc is None else svc.get("status")
            log("ecs-service-existence", f"refused {r_id}: the ECS service is {state}")
            raise AWSValidationException(MSG_NO_SERVICE.format(rid=r_id))
        if on("ecs-service-visibility-lag") and config.visibility_lag > 0:
            created = created_at_seconds(svc.get("createdAt"))
            if created is not None:
                age = time.time() - created
                if age < config.visibility_lag:
                    log("ecs-service-visibility-lag",
                        f"refused {r_id}: the service was created {age:.2f}s ago (< {config.visibility_lag}s)")
                    raise AWSValidationException(MSG_NO_SERVICE.format(rid=r_id))
        last_service.update(svc)
        return True

    Backend._ecs_service_exists_for_target = ecs_service_exists_for_target

    # ---- deregister-removes-policies + object-not-found ------------------------------

    def deregister_scalable_target(self: Any, namespace: str, r_id: str, dimension: str) -> None:
        target = find_target(self, namespace, r_id, dimension)
        if target is None:
            message = MSG_NO_TARGET.format(ns=namespace, rid=r_id, dim=dimension)
            if on("object-not-found"):
                raise not_found(message)
            raise AWSValidationException(message)  # moto's own answer
        del self.targets[dimension][r_id]
        tags_of(self).pop(target.arn, None)
        if on("deregister-removes-policies"):
            n_pol, n_act = remove_policies_and_actions(self, namespace, r_id, dimension)
            if n_pol or n_act:
                log("deregister-removes-policies",
                    f"{r_id} {dimension}: deleted {n_pol} scaling policies and {n_act} scheduled actions")

    Backend.deregister_scalable_target = deregister_scalable_target

    # ---- policy-arn-stable ----------------------------------------------------------
    # moto makes a new policy object (new ARN, new target-tracking alarms, the old ones
    # left behind) on every PutScalingPolicy; AWS updates the policy in place, so an
    # alarm action naming a step policy's ARN keeps working.

    orig_put_policy = Backend.put_scaling_policy

    def put_scaling_policy(self: Any, policy_name: str, service_namespace: str, resource_id: str,
                           scalable_dimension: str, policy_body: dict[str, Any], policy_type: Optional[str]) -> Any:
        key = aas_models.FakeApplicationAutoscalingPolicy.formulate_key(
            service_namespace, resource_id, scalable_dimension, policy_name)
        old = self.policies.get(key)
        policy = orig_put_policy(self, policy_name, service_namespace, resource_id, scalable_dimension,
                                 policy_body, policy_type)
        if on("policy-arn-stable") and old is not None and old is not policy:
            old.delete_alarms(self.account_id, self.region_name)
            policy._guid = old._guid
            policy.policy_arn = old.policy_arn
            policy.creation_time = old.creation_time
            log("policy-arn-stable", f"{resource_id} {policy_name}: updated in place ({policy.policy_arn})")
        return policy

    Backend.put_scaling_policy = put_scaling_policy

    orig_delete_policy = Backend.delete_scaling_policy

    def delete_scaling_policy(self: Any, policy_name: str, service_namespace: str, resource_id: str,
                              scalable_dimension: str) -> None:
        key = aas_models.FakeApplicationAutoscalingPolicy.formulate_key(
            service_namespace, resource_id, scalable_dimension, policy_name)
        if key not in self.policies and on("object-not-found"):
            raise not_found(MSG_NO_POLICY.format(ns=service_namespace, rid=resource_id, dim=scalable_dimension,
                                                 name=policy_name))
        orig_delete_policy(self, policy_name, service_namespace, resource_id, scalable_dimension)

    Backend.delete_scaling_policy = delete_scaling_policy

    orig_delete_action = Backend.delete_scheduled_action

    def delete_scheduled_action(self: Any, service_namespace: str, scheduled_action_name: str, resource_id: str,
                                scalable_dimension: str) -> None:
        exists = any(a.service_namespace == service_namespace and a.scheduled_action_name == scheduled_action_name
                     and a.resource_id == resource_id and a.scalable_dimension == scalable_dimension
                     for a in self.scheduled_actions)
        if not exists and on("object-not-found"):
            raise not_found(MSG_NO_ACTION.format(ns=service_namespace, rid=resource_id, dim=scalable_dimension,
                                                 name=scheduled_action_name))
        orig_delete_action(self, service_namespace, scheduled_action_name, resource_id, scalable_dimension)

    Backend.delete_scheduled_action = delete_scheduled_action

    # ---- the response layer: checks before moto, answers moto lacks -----------------

    def with_sweep(name: str) -> None:
        """Runs the deletion sweep for the request's ResourceId before moto's handler."""
        orig = getattr(Response, name)

        def handler(self: Any) -> Any:
            p = params(self)
            rid = p.get("ResourceId")
            sweep(self.applicationautoscaling_backend, [rid] if isinstance(rid, str) else None)
            return orig(self)

        handler.__name__ = name
        setattr(Response, name, handler)

    for name in ("deregister_scalable_target", "delete_scaling_policy", "delete_scheduled_action"):
        with_sweep(name)

    orig_register = Response.register_scalable_target

    def register_scalable_target(self: Any) -> Any:
        backend = self.applicationautoscaling_backend
        p = params(self)
        ns, rid, dim = p.get("ServiceNamespace"), p.get("ResourceId"), p.get("ScalableDimension")
        self._validate_params()
        if isinstance(rid, str):
            sweep(backend, [rid])
        existing = find_target(backend, ns, rid, dim)
        min_c, max_c = p.get("MinCapacity"), p.get("MaxCapacity")
        if on("register-capacity"):
            if existing is None and (min_c is None or max_c is None):
                log("register-capacity", f"refused {rid}: a new target without MinCapacity/MaxCapacity")
                raise AWSValidationException(MSG_CAPACITY_REQUIRED)
            eff_min = min_c if min_c is not None else getattr(existing, "min_capacity", None)
            eff_max = max_c if max_c is not None else getattr(existing, "max_capacity", None)
            if eff_min is not None and eff_max is not None and eff_min > eff_max:
                log("register-capacity", f"refused {rid}: MinCapacity {eff_min} > MaxCapacity {eff_max}")
                raise AWSValidationException(MSG_MIN_GT_MAX)
        tags = p.get("Tags")
        if on("scalable-target-tags") and tags:
            if existing is not None:
                log("scalable-target-tags", f"refused {rid}: Tags on an existing target")
                raise AWSValidationException(MSG_TAG_EXISTING)
            check_tags(tags, {})
        answer = orig_register(self)
        target = find_target(backend, ns, rid, dim)
        if target is None:
            return answer
        if on("target-defaults"):
            if existing is None and not target.role_arn and ns == ECS_NAMESPACE:
                target.role_arn = ecs_service_linked_role(backend.account_id)
            target.suspended_state = {
                k: bool((target.suspended_state or {}).get(k, False))
                for k in ("DynamicScalingInSuspended", "DynamicScalingOutSuspended", "ScheduledScalingSuspended")}
        if on("scalable-target-tags") and tags and existing is None:
            tags_of(backend)[target.arn] = {str(k): str(v) for k, v in tags.items()}
        if on("register-clamps-desired-count") and ns == ECS_NAMESPACE and last_service:
            clamp_desired_count(backend, target, dict(last_service))
        return answer

    Response.register_scalable_target = register_scalable_target

    def clamp_desired_count(backend: Any, target: Any, svc: dict[str, Any]) -> None:
        desired = svc.get("desiredCount")
        lo, hi = target.min_capacity, target.max_capacity
        if not isinstance(desired, int) or lo is None or hi is None:
            return
        new = min(max(desired, lo), hi)
        if new == desired:
            return
        cs = split_ecs_resource_id(target.resource_id)
        if cs is None:
            return
        started = time.time()
        try:
            ecs.call("UpdateService", {"cluster": cs[0], "service": cs[1], "desiredCount": new})
            status, message = "Successful", f"Successfully set desired count to {new}. Change successfully fulfilled by ecs."
        except EcsError as e:
            status, message = "Failed", f"Failed to set desired count to {new}. Reason: {e}"
        cause = (f"minimum capacity was set to {lo}" if desired < lo else f"maximum capacity was set to {hi}")
        activities_of(backend).insert(0, {
            "ActivityId": str(uuid.uuid4()),
            "ServiceNamespace": target.service_namespace,
            "ResourceId": target.resource_id,
            "ScalableDimension": target.scalable_dimension,
            "Description": f"Setting desired count to {new}.",
            "Cause": cause,
            "StartTime": started,
            "EndTime": time.time(),
            "StatusCode": status,
            "StatusMessage": message,
        })
        log("register-clamps-desired-count",
            f"{target.resource_id}: desiredCount {desired} -> {new} (min {lo}, max {hi}): {status}")

    # ---- needs-registered-target ------------------------------------------------------

    def needs_target(name: str) -> None:
        orig = getattr(Response, name)

        def handler(self: Any) -> Any:
            backend = self.applicationautoscaling_backend
            p = params(self)
            ns, rid, dim = p.get("ServiceNamespace"), p.get("ResourceId"), p.get("ScalableDimension")
            if isinstance(rid, str):
                sweep(backend, [rid])
            if on("needs-registered-target") and find_target(backend, ns, rid, dim) is None:
                log("needs-registered-target", f"refused {name} for {rid} {dim}: no scalable target")
                raise not_found(MSG_NOT_REGISTERED.format(ns=ns, rid=rid, dim=dim))
            return orig(self)

        handler.__name__ = name
        setattr(Response, name, handler)

    needs_target("put_scaling_policy")
    needs_target("put_scheduled_action")

    # ---- describe-filters + describe-paging -----------------------------------------

    def page(items: list[Any], p: dict[str, Any], op: str) -> tuple[list[Any], Optional[str]]:
        if not on("describe-paging"):
            return items, None
        max_results = p.get("MaxResults")
        if max_results is not None:
            if not isinstance(max_results, int) or isinstance(max_results, bool) or max_results < 1:
                bound = "greater than or equal to 1"
            elif max_results > AWS_MAX_RESULTS:
                bound = f"less than or equal to {AWS_MAX_RESULTS}"
            else:
                bound = None
            if bound:
                raise AWSValidationException(
                    f"1 validation error detected: Value '{max_results}' at 'maxResults' failed to satisfy "
                    f"constraint: Member must have value {bound}")
        size = min(max_results or AWS_MAX_RESULTS, config.page_size)
        fingerprint = hashlib.sha256(json.dumps(
            {"op": op, **{k: v for k, v in p.items() if k not in ("NextToken", "MaxResults")}},
            sort_keys=True, default=str).encode()).hexdigest()[:16]
        offset = 0
        token = p.get("NextToken")
        if token:
            try:
                decoded = json.loads(base64.urlsafe_b64decode(str(token).encode()))
                offset = int(decoded["o"])
                if decoded["h"] != fingerprint or offset < 0:
                    raise ValueError
            except (ValueError, KeyError, TypeError):
                raise AasError("InvalidNextTokenException", MSG_BAD_TOKEN)
        chunk = items[offset:offset + size]
        nxt = None
        if offset + size < len(items):
            nxt = base64.urlsafe_b64encode(json.dumps({"o": offset + size, "h": fingerprint}).encode()).decode()
        return chunk, nxt

    def check_dimension_needs_id(p: dict[str, Any], id_key: str) -> None:
        if not on("describe-filters"):
            return
        if p.get("ScalableDimension") and not p.get(id_key):
            raise AWSValidationException(MSG_DIMENSION_NEEDS_ID)
        # ResourceIds / PolicyNames / ScheduledActionNames: at most 50 items (botocore's model).
        for key in ("ResourceIds", "PolicyNames", "ScheduledActionNames"):
            value = p.get(key)
            if isinstance(value, list) and len(value) > AWS_MAX_RESULTS:
                field = key[0].lower() + key[1:]
                raise AWSValidationException(
                    f"1 validation error detected: Value at '{field}' failed to satisfy constraint: "
                    f"Member must have length less than or equal to {AWS_MAX_RESULTS}")

    def listed(value: Any) -> Optional[list[Any]]:
        return value if isinstance(value, list) and value else None

    def describe_scalable_targets(self: Any) -> str:
        self._validate_params()
        backend = self.applicationautoscaling_backend
        p = params(self)
        check_dimension_needs_id(p, "ResourceIds")
        ids = listed(p.get("ResourceIds"))
        sweep(backend, ids)
        targets = [t for t in all_targets(backend) if t.service_namespace == p.get("ServiceNamespace")]
        if ids is not None:
            targets = [t for t in targets if t.resource_id in ids]
        if p.get("ScalableDimension"):
            targets = [t for t in targets if t.scalable_dimension == p["ScalableDimension"]]
        chunk, nxt = page(targets, p, "DescribeScalableTargets")
        out: dict[str, Any] = {"ScalableTargets": [aas_responses._build_target(t) for t in chunk]}
        if nxt:
            out["NextToken"] = nxt
        return json.dumps(out)

    def describe_scaling_policies(self: Any) -> str:
        self._validate_params()
        backend = self.applicationautoscaling_backend
        p = params(self)
        check_dimension_needs_id(p, "ResourceId")
        rid = p.get("ResourceId")
        sweep(backend, [rid] if rid else None)
        policies = [x for x in backend.policies.values() if x.service_namespace == p.get("ServiceNamespace")]
        if on("describe-filters"):
            if rid:
                policies = [x for x in policies if x.resource_id == rid]
            if p.get("ScalableDimension"):
                policies = [x for x in policies if x.scalable_dimension == p["ScalableDimension"]]
            names = listed(p.get("PolicyNames"))
            if names is not None:
                policies = [x for x in policies if x.policy_name in names]
        else:  # moto's own filters: substring matches, PolicyNames ignored
            if rid:
                policies = [x for x in policies if x.resource_id in rid]
            if p.get("ScalableDimension"):
                policies = [x for x in policies if x.scalable_dimension in p["ScalableDimension"]]
        chunk, nxt = page(policies, p, "DescribeScalingPolicies")
        out: dict[str, Any] = {"ScalingPolicies": [aas_responses._build_policy(x) for x in chunk]}
        if nxt:
            out["NextToken"] = nxt
        return json.dumps(out)

    def describe_scheduled_actions(self: Any) -> str:
        self._validate_params()
        backend = self.applicationautoscaling_backend
        p = params(self)
        check_dimension_needs_id(p, "ResourceId")
        rid = p.get("ResourceId")
        sweep(backend, [rid] if rid else None)
        actions = backend.describe_scheduled_actions(
            scheduled_action_names=listed(p.get("ScheduledActionNames")),
            service_namespace=p.get("ServiceNamespace"), resource_id=rid,
            scalable_dimension=p.get("ScalableDimension"))
        chunk, nxt = page(actions, p, "DescribeScheduledActions")
        out: dict[str, Any] = {"ScheduledActions": [aas_responses._build_scheduled_action(a) for a in chunk]}
        if nxt:
            out["NextToken"] = nxt
        return json.dumps(out)

    def describe_scaling_activities(self: Any) -> str:
        """moto 5.2.5 has no DescribeScalingActivities. Activities exist here only for the
        capacity changes register-clamps-desired-count makes (nothing else scales)."""
        self._validate_params()
        backend = self.applicationautoscaling_backend
        p = params(self)
        check_dimension_needs_id(p, "ResourceId")
        rid = p.get("ResourceId")
        sweep(backend, [rid] if rid else None)
        acts = [a for a in activities_of(backend) if a["ServiceNamespace"] == p.get("ServiceNamespace")]
        if rid:
            acts = [a for a in acts if a["ResourceId"] == rid]
        if p.get("ScalableDimension"):
            acts = [a for a in acts if a["ScalableDimension"] == p["ScalableDimension"]]
        chunk, nxt = page(acts, p, "DescribeScalingActivities")
        out: dict[str, Any] = {"ScalingActivities": chunk}
        if nxt:
            out["NextToken"] = nxt
        return json.dumps(out)

    Response.describe_scalable_targets = describe_scalable_targets
    Response.describe_scaling_policies = describe_scaling_policies
    Response.describe_scheduled_actions = describe_scheduled_actions
    Response.describe_scaling_activities = describe_scaling_activities

    # ---- scalable-target-tags: the operations moto lacks ----------------------------

    def check_tags(new: Any, current: dict[str, str]) -> None:
        if not isinstance(new, dict):
            raise AWSValidationException("Tags must be a map of tag keys to values")
        for k, v in new.items():
            if not isinstance(k, str) or not 1 <= len(k) <= 128:
                raise AWSValidationException(f"Tag key '{k}' must be 1 to 128 characters long")
            if not isinstance(v, str) or len(v) > 256:
                raise AWSValidationException(f"Tag value for key '{k}' must be at most 256 characters long")
            if k.lower().startswith("aws:"):
                raise AWSValidationException(f"Tag keys starting with 'aws:' are reserved: {k}")
        if len(set(current) | set(new)) > MAX_TAGS:
            raise AasError("TooManyTagsException", f"A resource can have at most {MAX_TAGS} tags.")

    def target_by_arn(backend: Any, arn: Any) -> Any:
        for t in all_targets(backend):
            if t.arn == arn:
                sweep(backend, [t.resource_id])
                return find_target(backend, t.service_namespace, t.resource_id, t.scalable_dimension)
        return None

    def resource_not_found(arn: Any) -> AasError:
        return AasError("ResourceNotFoundException", f"Scalable target with ARN {arn} does not exist.",
                        ResourceName=str(arn))

    def tag_resource(self: Any) -> str:
        backend = self.applicationautoscaling_backend
        p = params(self)
        arn = p.get("ResourceARN")
        if target_by_arn(backend, arn) is None:
            raise resource_not_found(arn)
        current = tags_of(backend).setdefault(arn, {})
        check_tags(p.get("Tags") or {}, current)
        current.update({str(k): str(v) for k, v in (p.get("Tags") or {}).items()})
        return json.dumps({})

    def untag_resource(self: Any) -> str:
        backend = self.applicationautoscaling_backend
        p = params(self)
        arn = p.get("ResourceARN")
        if target_by_arn(backend, arn) is None:
            raise resource_not_found(arn)
        current = tags_of(backend).setdefault(arn, {})
        for k in p.get("TagKeys") or []:
            current.pop(k, None)
        return json.dumps({})

    def list_tags_for_resource(self: Any) -> str:
        backend = self.applicationautoscaling_backend
        p = params(self)
        arn = p.get("ResourceARN")
        if target_by_arn(backend, arn) is None:
            raise resource_not_found(arn)
        return json.dumps({"Tags": dict(tags_of(backend).get(arn, {}))})

    if on("scalable-target-tags"):
        Response.tag_resource = tag_resource
        Response.untag_resource = untag_resource
        Response.list_tags_for_resource = list_tags_for_resource

    app = DomainDispatcherApplication(create_backend_app)
    return app


# --------------------------------------------------------------------------------------
# Server
# --------------------------------------------------------------------------------------

class Wrapper:
    """moto's WSGI app behind one lock (moto's stores and the rules' read-check-write are
    not thread-safe), plus the /_aas control endpoints."""

    def __init__(self, app: Callable[..., Any], config: Config) -> None:
        self.app = app
        self.config = config
        self.lock = threading.Lock()
        self.ready = threading.Event()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        path = environ.get("PATH_INFO", "")
        if path.startswith("/_aas/"):
            return self.control(path, environ.get("REQUEST_METHOD", "GET"), start_response)
        with self.lock:
            # Materialize the body inside the lock: moto's app may return a lazy iterable.
            return [b"".join(self.app(environ, start_response))]

    def control(self, path: str, method: str, start_response: Callable[..., Any]) -> list[bytes]:
        def reply(status: str, body: bytes, ctype: str = "application/json") -> list[bytes]:
            start_response(status, [("Content-Type", ctype), ("Content-Length", str(len(body)))])
            return [body]

        if path == "/_aas/health" and method == "GET":
            if self.ready.is_set():
                return reply("200 OK", b"ok", "text/plain")
            return reply("503 Service Unavailable", b"starting", "text/plain")
        if path == "/_aas/rules" and method == "GET":
            rules = {"enabled": self.config.enabled_rules(),
                     "disabled": [r for r in RULES if r in self.config.disabled],
                     "visibility_lag": self.config.visibility_lag, "page_size": self.config.page_size,
                     "ecs": self.config.ecs}
            return reply("200 OK", json.dumps(rules).encode())
        return reply("404 Not Found", b"unknown aas endpoint", "text/plain")


def warm_up(host: str, port: int) -> None:
    """One Application Auto Scaling call, so the first real one does not pay for moto's
    lazy imports (and /_aas/health only answers 200 once the patched server answers)."""
    amz_date = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    headers = {
        "Content-Type": JSON_CONTENT_TYPE,
        "X-Amz-Target": AAS_TARGET_PREFIX + "DescribeScalableTargets",
        "X-Amz-Date": amz_date,
        "Authorization": (f"AWS4-HMAC-SHA256 Credential=test/{amz_date[:8]}/us-east-1/application-autoscaling/"
                          "aws4_request, SignedHeaders=host;x-amz-date;x-amz-target, Signature=" + "0" * 64),
    }
    conn = http.client.HTTPConnection(host if host not in ("0.0.0.0", "") else "127.0.0.1", port, timeout=60)
    try:
        conn.request("POST", "/", body=json.dumps({"ServiceNamespace": "ecs"}).encode(), headers=headers)
        resp = conn.getresponse()
        resp.read()
        if resp.status != 200:
            raise RuntimeError(f"warm-up DescribeScalableTargets answered HTTP {resp.status}")
    finally:
        conn.close()


def serve(config: Config) -> None:
    from moto.moto_server.werkzeug_app import MotoRequestHandler
    from werkzeug.serving import make_server

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request
    wrapper = Wrapper(install(config), config)
    server = make_server(config.host, config.port, wrapper, threaded=True, request_handler=MotoRequestHandler)
    port = server.server_address[1]

    def stop(_signum: int, _frame: Any) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    def warm() -> None:
        try:
            warm_up(config.host, port)
        except Exception as e:  # noqa: BLE001 - reported, and health stays 503
            print(f"aas: warm-up failed: {e}", file=sys.stderr, flush=True)
            return
        wrapper.ready.set()
        import moto
        print(f"aas: listening on http://{config.host}:{port} moto={moto.__version__} ecs={config.ecs} "
              f"visibility-lag={config.visibility_lag}s page-size={config.page_size} "
              f"rules={','.join(config.enabled_rules())}", file=sys.stderr, flush=True)

    threading.Thread(target=warm, daemon=True).start()
    try:
        server.serve_forever()
    finally:
        server.server_close()


def main(argv: Optional[list[str]] = None) -> int:
    config = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        import moto  # noqa: F401
    except ImportError:
        print(f"aas: moto is not installed for {sys.executable}: run `make venv` "
              "(hack/requirements.txt pins moto[server])", file=sys.stderr, flush=True)
        return 1
    serve(config)
    return 0


if __name__ == "__main__":
    sys.exit(main())
