#!/usr/bin/env bash
# deploy/k8s: `kubectl kustomize` builds the base and its monitoring and kserve directories
# (offline, no cluster), and the built objects keep the facts that matter:
#  - the probes are native gRPC probes on the daemon's gRPC port (readiness on
#    inference.GRPCInferenceService or ""), and that port is the one --listen names;
#  - every container argument is a real sparkled flag (`sparkled --helpfull`); --listen,
#    --http_listen (KServe v2 REST) and --metrics_address bind 0.0.0.0 on declared ports
#    (KServe: the metrics port in the prometheus.kserve.io/port annotation);
#  - REST: the --http_listen port is the container port named http (Deployment) / http1
#    (ServingRuntime, whose first port is h2c = the --listen port: the InferenceService's URL),
#    and both Services publish it;
#  - terminationGracePeriodSeconds (the pod's, and the InferenceService predictor's) exceeds
#    --drain_delay + --drain_timeout (+ any preStop sleep), and the liveness probe cannot fail a
#    container within that drain;
#  - --threads is $(VAR) with VAR from resourceFieldRef limits.cpu of the same container, which
#    has a CPU limit (and requests = limits for CPU);
#  - the headless Service, the ClusterIP Service, the PodDisruptionBudget and the ServiceMonitor
#    select the Deployment's pods and name its ports; the ServingRuntime speaks grpc-v2 on h2c.
# Exit 77 (skipped) only when kubectl or python3's yaml module is missing.
# usage: k8s_manifests_test.sh SOURCE_DIR SPARKLED
set -euo pipefail
src=$1
sparkled=$2
command -v kubectl >/dev/null || { echo "SKIP: kubectl not installed (scripts/setup.sh)"; exit 77; }
python3 -c 'import yaml' 2>/dev/null ||
  { echo "SKIP: python3 yaml module missing (python3-yaml, scripts/setup.sh)"; exit 77; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for d in "" monitoring kserve; do
  out=$tmp/${d:-base}.yaml
  if ! kubectl kustomize "$src/deploy/k8s/$d" > "$out" 2> "$tmp/err"; then
    cat "$tmp/err"
    echo "FAIL: kubectl kustomize deploy/k8s/$d"
    exit 1
  fi
done
# (--helpfull exits 1 by abseil's convention: the text is what counts.)
{ "$sparkled" --helpfull 2>&1 || true; } | grep -oP '^\s+--\K[a-z0-9_]+(?= \()' | sort -u \
  > "$tmp/flags"
[ -s "$tmp/flags" ] || { echo "FAIL: no flags in sparkled --helpfull"; exit 1; }

python3 - "$tmp" <<'EOF'
import re, sys, yaml

tmp = sys.argv[1]
flags = set(open(f"{tmp}/flags").read().split())
errors = []
def check(cond, msg):
    if not cond:
        errors.append(msg)

def load(name):
    return [o for o in yaml.safe_load_all(open(f"{tmp}/{name}.yaml")) if o]

def by_kind(objs, kind):
    return [o for o in objs if o["kind"] == kind]

def seconds(v):  # sparkled durations as the manifests write them: 5s, 500ms, 1m, 0
    total = 0.0
    for num, unit in re.findall(r"([\d.]+)(h|ms|m|s|us|ns)?", v):
        total += float(num) * {"h": 3600, "m": 60, "s": 1, "ms": 1e-3, "us": 1e-6,
                               "ns": 1e-9, None: 1, "": 1}[unit]
    return total

def check_container(where, c, pod_grace, metrics_ports=None):
    args = {}
    for a in c.get("args", []) + c.get("command", [])[1:]:
        m = re.fullmatch(r"--(no)?([a-z0-9_]+)(?:=(.*))?", a)
        check(m is not None, f"{where}: argument {a!r} is not --flag=value")
        if not m:
            continue
        name = m.group(2)
        check(name in flags or (m.group(1) and name in flags),
              f"{where}: {a!r}: sparkled has no flag --{name} (sparkled --helpfull)")
        args[name] = m.group(3)
    listen = args.get("listen")
    check(listen is not None and listen.startswith("0.0.0.0:"),
          f"{where}: --listen must bind 0.0.0.0 (the default is loopback), got {listen}")
    grpc_port = int(listen.rsplit(":", 1)[1]) if listen else None
    ports = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
    check(grpc_port in ports.values(), f"{where}: --listen port {grpc_port} is not a containerPort")
    http = args.get("http_listen")
    check(http is not None and http.startswith("0.0.0.0:"),
          f"{where}: --http_listen (KServe v2 REST) must bind 0.0.0.0, got {http}")
    http_port = int(http.rsplit(":", 1)[1]) if http else None
    check(http_port in ports.values(),
          f"{where}: --http_listen port {http_port} is not a containerPort")
    check(http_port != grpc_port, f"{where}: --http_listen and --listen share port {http_port}")
    metrics = args.get("metrics_address")
    if metrics:
        check(metrics.startswith("0.0.0.0:") and
              int(metrics.rsplit(":", 1)[1]) in (metrics_ports or ports.values()),
              f"{where}: --metrics_address {metrics} is not 0.0.0.0 on a containerPort")
    # Probes: native gRPC on the --listen port.
    for probe in ("readinessProbe", "livenessProbe"):
        p = c.get(probe)
        check(p is not None and "grpc" in p, f"{where}: {probe} is not a grpc probe")
        if p and "grpc" in p:
            check(p["grpc"].get("port") == grpc_port,
                  f"{where}: {probe} on port {p['grpc'].get('port')}, --listen is {grpc_port}")
    r = c.get("readinessProbe", {}).get("grpc", {})
    check(r.get("service", "") in ("", "inference.GRPCInferenceService"),
          f"{where}: readiness service {r.get('service')!r}")
    if "startupProbe" in c:
        check("grpc" in c["startupProbe"] and c["startupProbe"]["grpc"]["port"] == grpc_port,
              f"{where}: startupProbe is not grpc on {grpc_port}")
    # The drain budget.
    drain = seconds(args.get("drain_delay", "0")) + seconds(args.get("drain_timeout", "30s"))
    pre = c.get("lifecycle", {}).get("preStop", {})
    if "sleep" in pre:
        drain += pre["sleep"]["seconds"]
    check(pod_grace is not None and pod_grace > drain,
          f"{where}: terminationGracePeriodSeconds {pod_grace} <= drain budget {drain} s "
          "(--drain_delay + --drain_timeout + preStop)")
    live = c.get("livenessProbe", {})
    live_fail = live.get("periodSeconds", 10) * live.get("failureThreshold", 3)
    check(live_fail > drain, f"{where}: liveness fails after {live_fail} s, within the "
          f"{drain} s drain (a draining daemon answers NOT_SERVING)")
    # --threads follows the CPU limit.
    threads = args.get("threads")
    m = re.fullmatch(r"\$\(([A-Z0-9_]+)\)", threads or "")
    check(m is not None, f"{where}: --threads={threads} is not $(VAR) from the CPU limit")
    if m:
        env = {e["name"]: e for e in c.get("env", [])}
        ref = env.get(m.group(1), {}).get("valueFrom", {}).get("resourceFieldRef", {})
        check(ref.get("resource") == "limits.cpu" and
              ref.get("containerName", c["name"]) == c["name"] and
              str(ref.get("divisor", "1")) == "1",
              f"{where}: {m.group(1)} is not resourceFieldRef limits.cpu (divisor 1) of "
              f"this container: {ref}")
    res = c.get("resources", {})
    check("cpu" in res.get("limits", {}), f"{where}: no CPU limit (--threads follows it)")
    check(res.get("requests", {}).get("cpu") == res.get("limits", {}).get("cpu"),
          f"{where}: CPU requests != limits")
    return ports, grpc_port, http_port

# The base.
base = load("base")
deps = by_kind(base, "Deployment")
check(len(deps) == 1, f"base: {len(deps)} Deployments")
dep = deps[0]
pod = dep["spec"]["template"]["spec"]
labels = dep["spec"]["template"]["metadata"]["labels"]
check(dep["spec"]["selector"]["matchLabels"].items() <= labels.items(),
      "Deployment selector does not match its pods")
sc = pod.get("securityContext", {})
check(sc.get("runAsNonRoot") is True, "pod: runAsNonRoot")
(c,) = [c for c in pod["containers"] if c["name"] == "sparkled"]
ports, grpc_port, http_port = check_container("Deployment sparkled", c,
                                              pod.get("terminationGracePeriodSeconds"))
check(ports.get("http") == http_port,
      f"Deployment: the container port named http is {ports.get('http')}, --http_listen "
      f"port is {http_port}")
check(ports.get("grpc") == grpc_port,
      f"Deployment: the container port named grpc is {ports.get('grpc')}, --listen port is "
      f"{grpc_port}")
svcs = {s["metadata"]["name"]: s for s in by_kind(base, "Service")}
headless = [s for s in svcs.values() if s["spec"].get("clusterIP") == "None"]
cluster = [s for s in svcs.values() if s["spec"].get("clusterIP") != "None"]
check(len(headless) == 1 and len(cluster) == 1,
      f"want one headless and one ClusterIP Service, got {sorted(svcs)}")
for s in svcs.values():
    n = s["metadata"]["name"]
    check(s["spec"]["selector"].items() <= labels.items(), f"Service {n} selects no pod")
    for p in s["spec"]["ports"]:
        check(p["targetPort"] in ports, f"Service {n}: targetPort {p['targetPort']} unknown")
for s in headless:
    check(any(p["targetPort"] == "grpc" for p in s["spec"]["ports"]),
          "headless Service without the grpc port")
for s in svcs.values():
    check(any(p["targetPort"] in ("http", http_port) for p in s["spec"]["ports"]),
          f"Service {s['metadata']['name']} does not publish the REST port (http)")
pdbs = by_kind(base, "PodDisruptionBudget")
check(len(pdbs) == 1 and pdbs[0]["spec"]["selector"]["matchLabels"].items() <= labels.items(),
      "PodDisruptionBudget missing or selecting no pod")
check(not by_kind(base, "ServiceMonitor") and not by_kind(base, "InferenceService"),
      "the base must apply without the Prometheus-operator and KServe CRDs")

# monitoring: the ServiceMonitor scrapes a Service that has the metrics port.
(sm,) = by_kind(load("monitoring"), "ServiceMonitor")
sel = sm["spec"]["selector"]["matchLabels"]
scraped = [s for s in svcs.values() if sel.items() <= s["metadata"].get("labels", {}).items()
           and any(p["name"] == ep["port"] for p in s["spec"]["ports"]
                   for ep in sm["spec"]["endpoints"])]
check(scraped, "ServiceMonitor matches no Service with its endpoint port")

# kserve.
kserve = load("kserve")
(rt,) = by_kind(kserve, "ServingRuntime")
(isvc,) = by_kind(kserve, "InferenceService")
check({"v2", "grpc-v2"} <= set(rt["spec"].get("protocolVersions", [])),
      "ServingRuntime protocolVersions lack v2 / grpc-v2")
fmts = {f["name"] for f in rt["spec"]["supportedModelFormats"]}
model = isvc["spec"]["predictor"]["model"]
check(model["modelFormat"]["name"] in fmts, "InferenceService model format not in the runtime")
check(model.get("runtime") == rt["metadata"]["name"], "InferenceService names another runtime")
(kc,) = rt["spec"]["containers"]
ann = rt["metadata"].get("annotations", {})
kports, kgrpc, khttp = check_container(
    "ServingRuntime sparkled", kc, isvc["spec"]["predictor"].get("terminationGracePeriodSeconds"),
    metrics_ports=[int(ann.get("prometheus.kserve.io/port", -1))])
check("h2c" in kports, "ServingRuntime: no port named h2c (KServe's gRPC port)")
# The first port is what the InferenceService's URL reaches (its protocol from the name): it
# must be gRPC on --listen, as the InferenceService asks for grpc-v2.
first = kc["ports"][0]
check(first.get("name") == "h2c" and first["containerPort"] == kgrpc,
      f"ServingRuntime: first port {first} is not h2c on the --listen port {kgrpc}")
check(model.get("protocolVersion") == "grpc-v2",
      f"InferenceService protocolVersion {model.get('protocolVersion')} but the first port is h2c")
check(kports.get("http1") == khttp,
      f"ServingRuntime: the port named http1 is {kports.get('http1')}, --http_listen port is "
      f"{khttp}")

if errors:
    print("\n".join("FAIL: " + e for e in errors))
    sys.exit(1)
print(f"k8s manifests: base ({len(base)} objects), monitoring, kserve ({len(kserve)} objects) "
      f"build; probes, gRPC/REST/metrics ports, flags ({len(flags)} known), drain budget and "
      "threads checked")
EOF
