"""Unit tests of the policy rules on small hand-made objects. Standard library only:

    python3 -m unittest tools.k8s_check.test_rules        (from the repository root)
"""

from __future__ import annotations

import copy
import unittest

from . import rules
from .objects import Check, Note
from .rules import Rendered, policy, problems

LABEL = "k8s/test"


def config(**data: str) -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "visionq-config-abc123"}, "data": data}


def deployment(name: str = "visionq-ingest", **pod: object) -> dict:
    """A Deployment that passes every per-Deployment rule on its own."""
    labels = {"app.kubernetes.io/name": name}
    container = {
        "name": "role",
        "image": "visionq:0.1.0",
        "ports": [{"name": "http", "containerPort": 8080}],
        "livenessProbe": {"httpGet": {"path": "/livez", "port": "http"}},
        "readinessProbe": {"httpGet": {"path": "/readyz", "port": "http"}},
        "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"memory": "128Mi"}},
        "securityContext": {"readOnlyRootFilesystem": True, "allowPrivilegeEscalation": False,
                            "capabilities": {"drop": ["ALL"]}},
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
        "lifecycle": {"preStop": {"sleep": {"seconds": 5}}},
    }
    spec = {
        "securityContext": {"runAsNonRoot": True, "runAsUser": 10001, "seccompProfile": {"type": "RuntimeDefault"}},
        "automountServiceAccountToken": False,
        "terminationGracePeriodSeconds": 40,
        "containers": [container],
        "volumes": [{"name": "tmp", "emptyDir": {}}],
    }
    spec.update(pod)
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels}, "spec": spec}}}


def service(name: str, *ports: int) -> dict:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
            "spec": {"ports": [{"name": "http", "port": p, "targetPort": "http"} for p in ports]}}


def rendered(*docs: dict) -> Rendered:
    return Rendered(LABEL, list(docs))


def container(d: dict) -> dict:
    return d["spec"]["template"]["spec"]["containers"][0]


class Rules(unittest.TestCase):
    def assertProblems(self, results, *want: str) -> None:
        self.assertEqual(problems(list(results)), list(want))

    # pod_runs_as_non_root
    def test_non_root_passes(self):
        d = deployment()
        self.assertEqual(list(rules.pod_runs_as_non_root(rendered(d), d)),
                         [Check("k8s/test: policy visionq-ingest runAsNonRoot", True,
                                "pod securityContext.runAsNonRoot is not true")])

    def test_non_root_fails_when_unset(self):
        d = deployment(securityContext={"runAsUser": 10001})
        self.assertProblems(rules.pod_runs_as_non_root(rendered(d), d),
                            "k8s/test: policy visionq-ingest runAsNonRoot: "
                            "pod securityContext.runAsNonRoot is not true")

    # container_image_pinned
    def test_pinned_image_passes_with_tag_or_digest(self):
        for image in ("visionq:0.1.0", "registry.example.com:5000/visionq@sha256:" + "0" * 64):
            d = deployment()
            container(d)["image"] = image
            self.assertProblems(rules.container_image_pinned(rendered(d), d, container(d)))

    def test_pinned_image_fails_on_latest_or_no_tag(self):
        for image in ("visionq:latest", "registry.example.com:5000/visionq"):
            d = deployment()
            container(d)["image"] = image
            self.assertProblems(rules.container_image_pinned(rendered(d), d, container(d)),
                                f"k8s/test: policy visionq-ingest/role pinned image: "
                                f"image {image!r} has no tag or uses :latest")

    # probes_on_livez_and_readyz
    def test_probes_pass(self):
        d = deployment()
        container(d)["startupProbe"] = {"httpGet": {"path": "/livez", "port": "http"}}
        results = list(rules.probes_on_livez_and_readyz(rendered(d), d, container(d)))
        self.assertEqual([r.what for r in results], [
            "k8s/test: policy visionq-ingest/role liveness /livez",
            "k8s/test: policy visionq-ingest/role readiness /readyz",
            "k8s/test: policy visionq-ingest/role startup /livez",
        ])
        self.assertProblems(results)

    def test_probes_fail_on_other_paths(self):
        d = deployment()
        c = container(d)
        c["readinessProbe"] = {"httpGet": {"path": "/livez", "port": "http"}}
        c["startupProbe"] = {"tcpSocket": {"port": "http"}}
        self.assertProblems(rules.probes_on_livez_and_readyz(rendered(d), d, c),
                            "k8s/test: policy visionq-ingest/role readiness /readyz: "
                            "readinessProbe is not an httpGet of /readyz",
                            "k8s/test: policy visionq-ingest/role startup /livez: "
                            "startupProbe is not an httpGet of /livez")

    # grace_period_covers_shutdown
    def test_grace_period_passes(self):
        d = deployment()  # 40 s >= 5 s preStop + 20 s shutdown + 5 s
        self.assertProblems(rules.grace_period_covers_shutdown(rendered(config(), d), d))

    def test_grace_period_fails_below_shutdown_budget(self):
        d = deployment()
        m = rendered(config(VISIONQ_SHUTDOWN_TIMEOUT_MS="32500"), d)
        self.assertProblems(rules.grace_period_covers_shutdown(m, d),
                            "k8s/test: policy visionq-ingest grace period: terminationGracePeriodSeconds 40 < "
                            "preStop 5 s + VISIONQ_SHUTDOWN_TIMEOUT_MS 32.5 s + 5 s margin")

    # autoscalers_own_replicas
    def hpa(self, target: str) -> dict:
        return {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "ingest"},
                "spec": {"scaleTargetRef": {"kind": "Deployment", "name": target}}}

    def test_autoscaler_passes(self):
        self.assertProblems(rules.autoscalers_own_replicas(rendered(deployment(), self.hpa("visionq-ingest"))))

    def test_autoscaler_fails_on_replicas_and_missing_target(self):
        d = deployment()
        d["spec"]["replicas"] = 2
        self.assertProblems(rules.autoscalers_own_replicas(rendered(d, self.hpa("visionq-ingest"))),
                            "k8s/test: policy visionq-ingest replicas left to HorizontalPodAutoscaler/ingest: "
                            "spec.replicas is set: every apply would reset what the autoscaler chose")
        self.assertProblems(rules.autoscalers_own_replicas(rendered(d, self.hpa("visionq-ingst"))),
                            "k8s/test: policy HorizontalPodAutoscaler/ingest target: "
                            "Deployment visionq-ingst is not rendered")

    # trigger_watches_consumed_queue
    def scaled_object(self, target: str, queue: str) -> tuple[dict, dict]:
        trig = {"type": "rabbitmq", "metadata": {"queueName": queue, "mode": "QueueLength", "value": "200"}}
        so = {"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "metadata": {"name": target},
              "spec": {"scaleTargetRef": {"name": target}, "triggers": [trig]}}
        return so, trig

    def test_trigger_queue_passes_with_prefix_and_input_mode(self):
        so, trig = self.scaled_object("visionq-infer", "plant2.frames")
        m = rendered(config(VISIONQ_QUEUE_PREFIX="plant2", VISIONQ_INFER_INPUT="frames"), so)
        self.assertProblems(rules.trigger_watches_consumed_queue(m, so, 0, trig))

    def test_trigger_queue_fails_on_the_other_queue(self):
        so, trig = self.scaled_object("visionq-infer", "visionq.frames")
        self.assertProblems(rules.trigger_watches_consumed_queue(rendered(config(), so), so, 0, trig),
                            "k8s/test: policy ScaledObject/visionq-infer trigger 0 queue: "
                            "watches 'visionq.frames'; visionq-infer consumes 'visionq.tensors'")

    # dashboard_metrics_urls_name_services
    def test_dashboard_urls_pass(self):
        urls = "http://visionq-ingest/metrics, http://visionq-infer:8080/metrics"
        m = rendered(config(VISIONQ_DASHBOARD_METRICS_URLS=urls),
                     service("visionq-ingest", 80), service("visionq-infer", 8080))
        self.assertProblems(rules.dashboard_metrics_urls_name_services(m))

    def test_dashboard_urls_fail_on_unknown_port(self):
        m = rendered(config(VISIONQ_DASHBOARD_METRICS_URLS="http://visionq-ingest:9090/metrics"),
                     service("visionq-ingest", 80))
        self.assertProblems(rules.dashboard_metrics_urls_name_services(m),
                            "k8s/test: policy dashboard metrics URL http://visionq-ingest:9090/metrics: "
                            "no rendered Service with that name and port")

    # placeholder_secrets_noted
    def test_placeholder_secret_is_a_note(self):
        s = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "visionq-secrets"},
             "stringData": {"VISIONQ_AMQP_URL": "amqp://REPLACE_ME@broker"}}
        self.assertEqual(list(rules.placeholder_secrets_noted(rendered(s))),
                         [Note("k8s/test: Secret/visionq-secrets holds placeholder values "
                               "(a template; see docs/OPERATIONS.md, Deploying, step 2)")])
        s2 = copy.deepcopy(s)
        s2["stringData"]["VISIONQ_AMQP_URL"] = "amqp://broker"
        self.assertEqual(list(rules.placeholder_secrets_noted(rendered(s2))), [])


class Policy(unittest.TestCase):
    def test_stops_without_the_one_config(self):
        self.assertEqual(list(policy(LABEL, [deployment()])),
                         [Check("k8s/test: policy one visionq-config ConfigMap", False, "found 0")])

    def test_per_deployment_rules_run_one_deployment_at_a_time(self):
        a, b = deployment("visionq-ingest"), deployment("visionq-results")
        whats = [r.what for r in rules.each_deployment(rendered(config(), a, b))]
        first_b = next(i for i, w in enumerate(whats) if "visionq-results" in w)
        self.assertTrue(all("visionq-ingest" in w for w in whats[:first_b]))
        self.assertTrue(all("visionq-results" in w for w in whats[first_b:]))

    def test_every_rule_says_what_and_why(self):
        lists = [rules.POLICY, rules.POD_RULES, rules.CONTAINER_RULES, rules.SERVING_CONTAINER_RULES,
                 rules.DEPLOYMENT_RULES, rules.TRIGGER_RULES, rules.ALERT_RULES]
        for rule in [rules.one_visionq_config] + [r for lst in lists for r in lst]:
            self.assertTrue((rule.__doc__ or "").strip(), f"{rule.__name__} has no docstring")


if __name__ == "__main__":
    unittest.main()
