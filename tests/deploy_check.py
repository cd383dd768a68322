"""Checks that the files in deploy/ parse and hang together.

Run by tests/observability.rs (needs PyYAML; tests/run.sh installs it).
Prints the Vigil configs it found, one per line, for `vigil check`.
"""
import glob
import json
import os
import sys

import yaml


def load_all(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def fail(message):
    print(f"deploy check: {message}", file=sys.stderr)
    sys.exit(1)


docs = {}
for path in sorted(glob.glob("deploy/**/*.y*ml", recursive=True)):
    try:
        docs[path] = load_all(path)
    except yaml.YAMLError as e:
        fail(f"{path}: {e}")
for path in sorted(glob.glob("deploy/grafana/dashboards/*.json")):
    with open(path) as f:
        dashboard = json.load(f)
    if not dashboard.get("uid") or not dashboard.get("panels"):
        fail(f"{path}: a dashboard needs a uid and panels")

# Kubernetes: the kustomization's files exist, and the StatefulSet, Service
# and ServiceMonitor agree on labels and the metrics port.
k8s = "deploy/kubernetes"
kustomization = docs[f"{k8s}/kustomization.yaml"][0]
for resource in kustomization["resources"]:
    if not os.path.exists(os.path.join(k8s, resource)):
        fail(f"{k8s}/kustomization.yaml: resource {resource} does not exist")
generated = {g["name"]: g["files"] for g in kustomization["configMapGenerator"]}
for name, files in generated.items():
    for file in files:
        if not os.path.exists(os.path.join(k8s, file)):
            fail(f"{k8s}/kustomization.yaml: {name} file {file} does not exist")
queries = sorted(os.path.basename(f) for f in generated["vigil-queries"])
catalogue = sorted(os.path.basename(f) for f in glob.glob("queries/*.sql"))
if queries != catalogue:
    fail(f"vigil-queries lists {queries}, queries/ holds {catalogue}")
by_kind = {d["kind"]: d for path in docs if path.startswith(k8s) for d in docs[path] if "kind" in d}
for kind in ["StatefulSet", "Service", "ServiceMonitor", "Namespace"]:
    if kind not in by_kind:
        fail(f"{k8s}: no {kind}")
deployment, service, monitor = by_kind["StatefulSet"], by_kind["Service"], by_kind["ServiceMonitor"]
if deployment["spec"].get("serviceName") != service["metadata"]["name"]:
    fail("the StatefulSet's serviceName is not the Service")
pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
if not deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items():
    fail("the StatefulSet's selector does not match its pods")
if not service["spec"]["selector"].items() <= pod_labels.items():
    fail("the Service does not select Vigil's pods")
if not monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items():
    fail("the ServiceMonitor does not select the Service")
container = deployment["spec"]["template"]["spec"]["containers"][0]
port_names = {p["name"] for p in container["ports"]}
if {p["targetPort"] for p in service["spec"]["ports"]} - port_names:
    fail("the Service targets a port the container does not name")
if {e["port"] for e in monitor["spec"]["endpoints"]} - {p["name"] for p in service["spec"]["ports"]}:
    fail("the ServiceMonitor scrapes a port the Service does not name")
probes = {container["readinessProbe"]["httpGet"]["path"], container["livenessProbe"]["httpGet"]["path"]}
if probes != {"/readyz", "/healthz"}:
    fail(f"probes are {probes}")
args, env = container["args"], {e["name"]: e for e in container.get("env", [])}
if "--instance-id" not in args or args[args.index("--instance-id") + 1] != "$(POD_NAME)":
    fail("each pod should join as a static member under its own name: --instance-id $(POD_NAME)")
if env.get("POD_NAME", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") != "metadata.name":
    fail("POD_NAME should come from the pod's metadata.name")
mounts = {v["name"] for v in deployment["spec"]["template"]["spec"]["volumes"]}
if {m["name"] for m in container["volumeMounts"]} - mounts:
    fail("a volume mount has no volume")

# Compose: the services, and the files they mount, exist.
compose_path = "deploy/compose/compose.yaml"
compose = docs[compose_path][0]
for name in ["kafka", "vigil", "prometheus", "alertmanager", "grafana"]:
    if name not in compose["services"]:
        fail(f"{compose_path}: no {name} service")
for name, service in compose["services"].items():
    for volume in service.get("volumes", []):
        source = volume.split(":")[0]
        if not os.path.exists(os.path.join("deploy/compose", source)):
            fail(f"{compose_path}: {name} mounts {source}, which does not exist")
build = compose["services"]["vigil"]["build"]
if not os.path.exists(os.path.join("deploy/compose", build["context"], build["dockerfile"])):
    fail(f"{compose_path}: the vigil image's Dockerfile does not exist")
with open("deploy/Dockerfile") as f:
    if f.read().count("FROM ") < 2:
        fail("deploy/Dockerfile: expected a build stage and a runtime stage")

print("deploy/vigil.toml")
print("deploy/compose/vigil.toml")
print(f"{k8s}/vigil.toml")
