"""Loaded by Python at start-up: testenv puts this folder on ministack's PYTHONPATH.

ministack recounts a cluster's tasks and services (a walk of every task and service
it holds) several times on each CreateService, RunTask and task state change, so
each call costs more the more the account holds: CreateService fell from 268/s at
500 services to 27/s at 4,500 (py-spy: `_recount_cluster` ~45 % of the time), and a
10,000-service benchmark could not reach the 5/s CreateService quota it measures
against. The counts appear only in answers that name a cluster, so this recounts
there, once, instead: the same answers, 2x more creates/s at 4,500 services.
Nothing else about ministack changes.
"""
try:
    from ministack.services import ecs as _ecs
except Exception:
    _ecs = None

if _ecs is not None and hasattr(_ecs, "_recount_cluster") and hasattr(_ecs, "_ACTION_MAP"):
    _real_recount = _ecs._recount_cluster

    def _recount_later(cluster_name):
        """Counted when an answer shows the cluster (below)."""

    _ecs._recount_cluster = _recount_later

    def _recounting(handler, *keys):
        def wrapped(data):
            refs = []
            for key in keys:
                value = (data or {}).get(key)
                if isinstance(value, list):
                    refs.extend(value)
                elif isinstance(value, str):
                    refs.append(value)
            if not refs and "clusters" in keys:
                refs = ["default"]
            for ref in refs:
                try:
                    _real_recount(_ecs._resolve_cluster_name(ref))
                except Exception:
                    pass
            return handler(data)
        wrapped.__name__ = getattr(handler, "__name__", "handler")
        return wrapped

    for action, keys in (("DescribeClusters", ("clusters",)), ("CreateCluster", ("clusterName",)),
                         ("UpdateCluster", ("cluster",)),
                         ("UpdateClusterSettings", ("cluster",)),
                         ("PutClusterCapacityProviders", ("cluster",)), ("DeleteCluster", ("cluster",))):
        if action in _ecs._ACTION_MAP:
            _ecs._ACTION_MAP[action] = _recounting(_ecs._ACTION_MAP[action], *keys)
