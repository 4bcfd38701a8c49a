"""The validators are checked too: objects broken on purpose must be refused."""

from __future__ import annotations

import copy

from .ingress import GRPC_ROUTES, documented_routes, ingress_errors, is_grpc_ingress
from .promql import promql_error
from .schemas import crd_validate, k8s_validate, rabbitmq_cluster_errors


def self_test(docs: list[dict], crd_models: dict, tally) -> None:
    """Objects broken on purpose must be refused, or the checks above prove nothing."""
    def first(kind):
        return copy.deepcopy(next(o for o in docs if o["kind"] == kind))

    cases = []
    d = first("Deployment")
    d["spec"]["replica"] = 1
    cases.append(("Deployment with an unknown field", lambda: k8s_validate(d)))
    d2 = first("Deployment")
    d2["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "http"
    cases.append(("Deployment with a string port", lambda: k8s_validate(d2)))
    so = first("ScaledObject")
    so["spec"]["maxReplicaCont"] = 3
    model = crd_models[("keda.sh/v1alpha1", "ScaledObject")][0]
    cases.append(("ScaledObject with an unknown field", lambda: crd_validate(model, so)))
    sm = first("ServiceMonitor")
    del sm["spec"]["selector"]
    smm = crd_models[("monitoring.coreos.com/v1", "ServiceMonitor")][0]
    cases.append(("ServiceMonitor without its selector", lambda: crd_validate(smm, sm)))
    rc = first("RabbitmqCluster")
    rc["spec"]["replica"] = 3
    cases.append(("RabbitmqCluster with an unknown field", lambda: "; ".join(rabbitmq_cluster_errors(rc)) or None))
    rc2 = first("RabbitmqCluster")
    rc2["spec"]["resources"]["requests"]["cpu"] = {"cores": 1}
    cases.append(("RabbitmqCluster with bad resources", lambda: "; ".join(rabbitmq_cluster_errors(rc2)) or None))
    services = [o for o in docs if o["kind"] == "Service"]
    routes = documented_routes()
    ing = first("Ingress")
    ing["spec"]["rules"][0]["http"]["paths"] = [p for p in ing["spec"]["rules"][0]["http"]["paths"] if p["path"] == "/"]
    cases.append(("Ingress sending frames to results", lambda: "; ".join(ingress_errors(ing, services, routes)) or None))
    ing2 = first("Ingress")
    ing2["metadata"]["annotations"].pop("nginx.ingress.kubernetes.io/use-regex")
    cases.append(("Ingress whose frames path is not a regex", lambda: "; ".join(ingress_errors(ing2, services, routes)) or None))
    ing3 = first("Ingress")
    ing3["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["port"] = {"name": "metrics"}
    cases.append(("Ingress to a port no Service has", lambda: "; ".join(ingress_errors(ing3, services, routes)) or None))
    grpc = copy.deepcopy(next(o for o in docs if o["kind"] == "Ingress" and is_grpc_ingress(o)))
    grpc["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["name"] = "visionq-results"
    cases.append(("gRPC Ingress sending Detect to results", lambda: "; ".join(ingress_errors(grpc, services, GRPC_ROUTES)) or None))
    cases.append(("PromQL with an unclosed parenthesis", lambda: promql_error("sum(rate(visionq_queue_depth[5m])")))
    for what, run in cases:
        tally.check(run() is not None, f"self-test: {what} is refused", "the validator accepted it")
