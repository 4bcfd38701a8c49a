"""Schema validation of every rendered object:
  schema  built-in kinds against the Kubernetes schemas of the oldest and the
          newest version we support (K8S_VERSIONS below);
  crd     ScaledObject, TriggerAuthentication (KEDA), ServiceMonitor,
          PrometheusRule (Prometheus Operator) against their CRD models;
  struct  RabbitmqCluster: no package here ships its schema, so a structural
          check of our own (apiVersion/kind, the spec fields the CRD has, their
          types, sub-objects against the Kubernetes schemas);
and no kind may go unchecked. Runs inside the tools venv."""

from __future__ import annotations

import inspect
from importlib.metadata import version as dist_version

import jsonschema
import pydantic
from referencing import Registry, Resource

import kubernetes_validate
from kubernetes_validate import utils as kv_utils

from .objects import QUANTITY_RE, name_of, sysctl_conf

# Oldest and newest Kubernetes minor we support: 1.30 is the first where the
# preStop `sleep` action is on by default.
K8S_VERSIONS = ("1.30.0", "1.37.0")


# ─── built-in kinds ───────────────────────────────────────────────────────────

def k8s_validate(o: dict) -> str | None:
    """None when valid against every K8S_VERSIONS schema (strict), else the error."""
    for v in K8S_VERSIONS:
        try:
            kubernetes_validate.validate(o, v, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            return f"no Kubernetes {v} schema for {o.get('apiVersion')} {o.get('kind')}"
        except kubernetes_validate.ValidationError as e:
            path = "/".join(str(p) for p in e.path)
            return f"Kubernetes {v}: {e.message} (at {path or '/'})"
    return None


def k8s_fragment_errors(fragment: object, filename: str) -> list[str]:
    """Validates a sub-object (e.g. ResourceRequirements) against a Kubernetes schema file."""
    errors = []
    for v in K8S_VERSIONS:
        d = f"v{v}-local-strict"
        schema = kv_utils.schema_contents(f"kubernetes-json-schema/{d}/{filename}", v)
        defs = kv_utils.schema_contents(f"kubernetes-json-schema/{d}/_definitions.json", v)
        registry = Resource.from_contents(defs) @ (Resource.from_contents(schema) @ Registry())
        validator = jsonschema.validators.Draft202012Validator(schema, registry=registry)
        for e in validator.iter_errors(fragment):
            errors.append(f"Kubernetes {v}: {e.message}")
    return errors


# ─── CRDs with published schemas: KEDA, Prometheus Operator ───────────────────

def strict_models(*modules) -> int:
    """Makes every pydantic model of `modules` refuse unknown fields, as the API
    server's structural schemas (with pruning off) would flag them."""
    n = 0
    classes = []
    for mod in modules:
        for obj in vars(mod).values():
            if inspect.isclass(obj) and issubclass(obj, pydantic.BaseModel) and obj.__module__ == mod.__name__:
                obj.model_config["extra"] = "forbid"
                classes.append(obj)
    for cls in classes:
        cls.model_rebuild(force=True)
        n += 1
    return n


def load_crd_models() -> dict:
    import cloudcoil.apimachinery as apimachinery
    from cloudcoil.models.keda import v1alpha1 as keda
    from cloudcoil.models.prometheus_operator import v1 as monitoring
    strict_models(keda, monitoring, apimachinery)
    k = f"KEDA {dist_version('cloudcoil.models.keda').rsplit('.', 1)[0]} CRD model"
    m = f"prometheus-operator {dist_version('cloudcoil.models.prometheus_operator').rsplit('.', 1)[0]} CRD model"
    return {
        ("keda.sh/v1alpha1", "ScaledObject"): (keda.ScaledObject, k),
        ("keda.sh/v1alpha1", "TriggerAuthentication"): (keda.TriggerAuthentication, k),
        ("monitoring.coreos.com/v1", "ServiceMonitor"): (monitoring.ServiceMonitor, m),
        ("monitoring.coreos.com/v1", "PrometheusRule"): (monitoring.PrometheusRule, m),
    }


def crd_validate(model, o: dict) -> str | None:
    try:
        model.model_validate(o)
        return None
    except pydantic.ValidationError as e:
        first = e.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        return f"{first['msg']} (at {loc}; {e.error_count()} error(s))"


# ─── RabbitmqCluster: structural check of our own ─────────────────────────────

QUANTITY = {"type": ["string", "integer", "number"]}
RABBITMQ_CLUSTER_SCHEMA = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "rabbitmq.com/v1beta1"},
        "kind": {"const": "RabbitmqCluster"},
        "metadata": {
            "type": "object",
            "required": ["name"],
            "properties": {
                "name": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 63},
                "namespace": {"type": "string"},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
            },
        },
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "replicas": {"type": "integer", "minimum": 0},
                "image": {"type": "string"},
                "imagePullSecrets": {"type": "array"},
                "service": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "type": {"enum": ["ClusterIP", "LoadBalancer", "NodePort"]},
                        "annotations": {"type": "object"},
                        "ipFamilyPolicy": {"enum": ["SingleStack", "PreferDualStack", "RequireDualStack"]},
                    },
                },
                "persistence": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {"storageClassName": {"type": "string"}, "storage": QUANTITY},
                },
                "resources": {"type": "object"},  # checked against the Kubernetes schema
                "affinity": {"type": "object"},
                "tolerations": {"type": "array"},
                "rabbitmq": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "additionalPlugins": {
                            "type": "array",
                            "maxItems": 100,
                            "items": {"type": "string", "pattern": "^\\w+$"},
                        },
                        "additionalConfig": {"type": "string", "maxLength": 100000},
                        "advancedConfig": {"type": "string", "maxLength": 100000},
                        "envConfig": {"type": "string", "maxLength": 100000},
                        "erlangInetConfig": {"type": "string", "maxLength": 2000},
                    },
                },
                "tls": {"type": "object"},
                "override": {"type": "object"},
                "secretBackend": {"type": "object"},
                "skipPostDeploySteps": {"type": "boolean"},
                "terminationGracePeriodSeconds": {"type": "integer", "minimum": 0},
                "delayStartSeconds": {"type": "integer", "minimum": 0},
                "autoEnableAllFeatureFlags": {"type": "boolean"},
            },
        },
    },
}


def rabbitmq_cluster_errors(o: dict) -> list[str]:
    errors = [
        f"{e.message} (at {'/'.join(str(p) for p in e.path) or '/'})"
        for e in jsonschema.Draft202012Validator(RABBITMQ_CLUSTER_SCHEMA).iter_errors(o)
    ]
    spec = o.get("spec", {}) if isinstance(o.get("spec"), dict) else {}
    if "resources" in spec:
        errors += [f"spec.resources: {m}" for m in k8s_fragment_errors(spec["resources"], "resourcerequirements-v1.json")]
    for i, t in enumerate(spec.get("tolerations") or []):
        errors += [f"spec.tolerations[{i}]: {m}" for m in k8s_fragment_errors(t, "toleration-v1.json")]
    if "affinity" in spec:
        errors += [f"spec.affinity: {m}" for m in k8s_fragment_errors(spec["affinity"], "affinity-v1.json")]
    quantities = {f"resources.{kind}.{k}": v for kind in ("requests", "limits")
                  for k, v in ((spec.get("resources") or {}).get(kind) or {}).items()}
    if "storage" in (spec.get("persistence") or {}):
        quantities["persistence.storage"] = spec["persistence"]["storage"]
    errors += [f"spec.{k}: {v!r} is not a Kubernetes quantity" for k, v in quantities.items()
               if not QUANTITY_RE.match(str(v))]
    cfg = (spec.get("rabbitmq") or {}).get("additionalConfig")
    if isinstance(cfg, str):
        _, bad = sysctl_conf(cfg)
        errors += [f"spec.rabbitmq.additionalConfig: not `key = value`: {b!r}" for b in bad]
    return errors


# ─── per-object validation ────────────────────────────────────────────────────

def validate_objects(label: str, docs: list[dict], crd_models: dict, tally) -> dict[str, int]:
    """Every object against its schema, CRD model or structural check, into `tally`;
    the counts of each."""
    counts = {"schema": 0, "crd": 0, "struct": 0}
    for o in docs:
        key = (o.get("apiVersion"), o.get("kind"))
        w = f"{label}: {name_of(o)}"
        if key in crd_models:
            model, what = crd_models[key]
            err = crd_validate(model, o)
            tally.check(err is None, f"{w} [crd: {what}]", err or "")
            counts["crd"] += 1
        elif key == ("rabbitmq.com/v1beta1", "RabbitmqCluster"):
            errs = rabbitmq_cluster_errors(o)
            tally.check(not errs, f"{w} [struct: own check, no published schema available]", "; ".join(errs))
            counts["struct"] += 1
        elif "." in (o.get("apiVersion") or "").split("/")[0] and not o["apiVersion"].split("/")[0].endswith(".k8s.io"):
            tally.fail(w, f"custom resource {key} has neither a schema nor a structural check here")
        else:
            err = k8s_validate(o)
            tally.check(err is None, f"{w} [schema: Kubernetes {', '.join(K8S_VERSIONS)} strict]", err or "")
            counts["schema"] += 1
    return counts
