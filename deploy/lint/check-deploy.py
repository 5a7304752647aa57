#!/usr/bin/env python3
"""Checks deploy/ beyond what each file's own linter sees (run by scripts/lint-deploy).

1. Every Kubernetes manifest against a schema, strictly (an unknown field is
   an error): built-in kinds against the Kubernetes schemas that the PyPI
   package kubernetes-validate ships (offline), KEDA's kinds against
   keda.schema.json beside this file. A kind with neither is an error.
2. That the files agree with each other and with sluice: the grace period
   above the config's shutdown_timeout_secs + 10, probes on the admin port's
   /healthz and /readyz, a token for a non-loopback --admin, every ${VAR} of
   the config and every Secret key it names provided, Service and ScaledObject
   pointing at the Deployment, systemd's TimeoutStopSec, and every sluice_*
   metric the rules and KEDA query use being one that crates/sluice defines.
3. With --sluice BIN: `sluice check` on the ConfigMap's config.

Usage: check-deploy.py [--sluice BIN] REPO_ROOT
"""

import argparse
import base64
import glob
import ipaddress
import json
import os
import re
import subprocess
import sys
import tempfile
import tomllib

import jsonschema
import kubernetes_validate
import yaml
from kubernetes_validate.utils import SchemaNotFoundError, latest_version, major_minor

# The Kubernetes versions whose schemas the manifests must pass: an old one
# still in use, and the newest that kubernetes-validate ships.
KUBERNETES_VERSIONS = ("1.30", major_minor(latest_version()))
# sluice's defaults (crates/sluice/src/config): what the grace periods must cover.
DEFAULT_SHUTDOWN_TIMEOUT_SECS = 30
SETTLE_GRACE_SECS = 10

errors = []


def ok(what):
    print(f"  ok   {what}")


def fail(what):
    print(f"  FAIL {what}")
    errors.append(what)


def load_docs(root):
    """(path, doc) for every manifest: kubernetes/*.yaml, keda/*.yaml, the Secret example."""
    paths = sorted(glob.glob(os.path.join(root, "deploy/kubernetes/*.yaml")))
    paths += sorted(glob.glob(os.path.join(root, "deploy/kubernetes/keda/*.yaml")))
    paths += sorted(glob.glob(os.path.join(root, "deploy/kubernetes/*.yaml.example")))
    docs = []
    for path in paths:
        rel = os.path.relpath(path, root)
        with open(path) as f:
            try:
                for doc in yaml.safe_load_all(f):
                    if doc is not None:
                        docs.append((rel, doc))
            except yaml.YAMLError as e:
                fail(f"{rel}: not YAML: {e}")
    return docs


def describe(doc):
    return f"{doc.get('kind')}/{(doc.get('metadata') or {}).get('name')}"


def validate_schemas(root, docs):
    with open(os.path.join(root, "deploy/lint/keda.schema.json")) as f:
        keda_schema = json.load(f)
    jsonschema.Draft202012Validator.check_schema(keda_schema)
    keda = jsonschema.Draft202012Validator(keda_schema)
    for rel, doc in docs:
        if not isinstance(doc, dict) or "apiVersion" not in doc or "kind" not in doc:
            fail(f"{rel}: a document without apiVersion and kind")
            continue
        what = f"{rel}: {describe(doc)}"
        if doc["apiVersion"].startswith("keda.sh/"):
            problems = sorted(keda.iter_errors(doc), key=lambda e: list(e.absolute_path))
            if problems:
                seen = set()
                for e in problems:
                    path = ".".join(str(p) for p in e.absolute_path) or "(top)"
                    if (path, e.message) not in seen:
                        seen.add((path, e.message))
                        fail(f"{what}: {path}: {e.message} (deploy/lint/keda.schema.json)")
            else:
                ok(f"{what} (KEDA schema, strict)")
            continue
        passed = True
        for version in KUBERNETES_VERSIONS:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except SchemaNotFoundError as e:
                fail(f"{what}: {e.message}; add a schema to deploy/lint/ for it")
                passed = False
                break
            except jsonschema.ValidationError as e:
                path = ".".join(str(p) for p in e.absolute_path) or "(top)"
                fail(f"{what}: {path}: {e.message} (Kubernetes {version})")
                passed = False
        if passed:
            ok(f"{what} (Kubernetes {' and '.join(KUBERNETES_VERSIONS)} schemas, strict)")


def find(docs, kind, name=None):
    return [(rel, d) for rel, d in docs
            if isinstance(d, dict) and d.get("kind") == kind
            and (name is None or (d.get("metadata") or {}).get("name") == name)]


def arg_value(args, *flags):
    for i, a in enumerate(args):
        for flag in flags:
            if a == flag and i + 1 < len(args):
                return args[i + 1]
            if a.startswith(flag + "="):
                return a[len(flag) + 1:]
    return None


def required_env(toml_text):
    """Names of the ${VAR}s without a default (`${VAR:-default}` has one; `$${` is literal)."""
    names = set()
    for m in re.finditer(r"(\$?)\$\{([A-Za-z_][A-Za-z0-9_]*)(:-[^}]*)?\}", toml_text):
        if m.group(1) or m.group(3):
            continue
        names.add(m.group(2))
    return sorted(names)


def secret_keys(docs, name):
    keys = set()
    for _, s in find(docs, "Secret", name):
        keys |= set((s.get("stringData") or {}).keys()) | set((s.get("data") or {}).keys())
    return keys


def check_deployment(docs):
    """Returns the config text the Deployment runs, if it could be found."""
    deployments = find(docs, "Deployment")
    if len(deployments) != 1:
        fail(f"expected one Deployment in deploy/kubernetes, found {len(deployments)}")
        return None
    rel, dep = deployments[0]
    spec = dep["spec"]["template"]["spec"]
    containers = spec.get("containers", [])
    c = next((c for c in containers if c.get("name") == "sluice"), containers[0] if containers else None)
    if c is None:
        fail(f"{rel}: no container")
        return None
    argv = (c.get("command") or []) + (c.get("args") or [])
    if "run" not in argv:
        fail(f"{rel}: the container does not run `sluice run` ({argv})")
    env = {e["name"]: e for e in c.get("env") or []}

    # The config: the -c path must be a key of a mounted ConfigMap.
    config_text = None
    config_path = arg_value(argv, "-c", "--config")
    mounts = {m["name"]: m for m in c.get("volumeMounts") or []}
    for vol in spec.get("volumes") or []:
        m = mounts.get(vol["name"])
        if not m or "configMap" not in vol or not config_path:
            continue
        directory = m["mountPath"].rstrip("/")
        if os.path.dirname(config_path) != directory:
            continue
        cm_name = vol["configMap"]["name"]
        cms = find(docs, "ConfigMap", cm_name)
        key = os.path.basename(config_path)
        if not cms:
            fail(f"{rel}: ConfigMap {cm_name} (mounted at {directory}) is not in deploy/kubernetes")
        elif key not in (cms[0][1].get("data") or {}):
            fail(f"{rel}: ConfigMap {cm_name} has no key {key} for -c {config_path}")
        else:
            config_text = cms[0][1]["data"][key]
            ok(f"{rel}: -c {config_path} is ConfigMap {cm_name}'s {key}")
    if config_text is None:
        fail(f"{rel}: -c {config_path} is not a file of a mounted ConfigMap")
        return None
    try:
        config = tomllib.loads(config_text)
    except tomllib.TOMLDecodeError as e:
        fail(f"{rel}: the ConfigMap's config is not TOML: {e}")
        return None

    shutdown = config.get("shutdown_timeout_secs", DEFAULT_SHUTDOWN_TIMEOUT_SECS)
    grace = spec.get("terminationGracePeriodSeconds", 30)
    if grace > shutdown + SETTLE_GRACE_SECS:
        ok(f"{rel}: terminationGracePeriodSeconds {grace} > shutdown_timeout_secs {shutdown} + {SETTLE_GRACE_SECS}")
    else:
        fail(f"{rel}: terminationGracePeriodSeconds {grace} must be above shutdown_timeout_secs "
             f"{shutdown} + {SETTLE_GRACE_SECS} (the settlements' grace), or SIGKILL cuts them short")

    # The admin server: a token off loopback; the probes and the scrape on its port.
    admin = arg_value(argv, "--admin")
    if not admin:
        fail(f"{rel}: no --admin: the probes and /metrics need the admin server")
        return config_text
    host, _, port = admin.rpartition(":")
    port = int(port)
    try:
        loopback = ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback and "SLUICE_ADMIN_TOKEN" not in env:
        fail(f"{rel}: --admin {admin} is not loopback: sluice refuses it without SLUICE_ADMIN_TOKEN in env")
    elif not loopback:
        ok(f"{rel}: --admin {admin} with SLUICE_ADMIN_TOKEN set")
    named = {p.get("name"): p["containerPort"] for p in c.get("ports") or []}
    if port not in named.values():
        fail(f"{rel}: no containerPort {port} for --admin {admin}")
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz"), ("startupProbe", "/healthz")):
        p = c.get(probe)
        if p is None:
            if probe != "startupProbe":
                fail(f"{rel}: no {probe} (sluice serves {path})")
            continue
        get = p.get("httpGet") or {}
        target = named.get(get.get("port"), get.get("port"))
        if get.get("path") != path or target != port:
            fail(f"{rel}: {probe} asks {get.get('path')} on port {get.get('port')}; sluice serves {path} on {port}")
        else:
            ok(f"{rel}: {probe} GET {path} on the admin port {port}")
    annotations = dep["spec"]["template"].get("metadata", {}).get("annotations") or {}
    if "prometheus.io/port" in annotations and annotations["prometheus.io/port"] != str(port):
        fail(f"{rel}: prometheus.io/port {annotations['prometheus.io/port']} is not the admin port {port}")

    # Every ${VAR} of the config comes from the env; every Secret key named exists.
    missing = [v for v in required_env(config_text) if v not in env]
    if missing:
        fail(f"{rel}: the config needs {', '.join(missing)} from the environment; the container does not set it")
    else:
        ok(f"{rel}: the container sets every ${{VAR}} the config needs ({', '.join(required_env(config_text))})")
    for e in env.values():
        ref = (e.get("valueFrom") or {}).get("secretKeyRef")
        if ref and ref["key"] not in secret_keys(docs, ref["name"]):
            fail(f"{rel}: env {e['name']} reads Secret {ref['name']} key {ref['key']}, which the example Secret lacks")

    # The Service and the ScaledObjects point at this Deployment.
    pod_labels = dep["spec"]["template"]["metadata"].get("labels") or {}
    for srel, svc in find(docs, "Service"):
        selector = svc["spec"].get("selector") or {}
        if not selector or any(pod_labels.get(k) != v for k, v in selector.items()):
            fail(f"{srel}: selector {selector} does not select the Deployment's pods {pod_labels}")
        for p in svc["spec"].get("ports", []):
            target = p.get("targetPort", p["port"])
            if named.get(target, target) != port:
                fail(f"{srel}: targetPort {target} is not the admin port {port}")
    name = dep["metadata"]["name"]
    for srel, so in find(docs, "ScaledObject"):
        before = len(errors)
        ref = so["spec"]["scaleTargetRef"]
        if ref.get("name") != name or ref.get("kind", "Deployment") != "Deployment":
            fail(f"{srel}: scaleTargetRef {ref} is not Deployment {name}")
        for t in so["spec"]["triggers"]:
            auth = (t.get("authenticationRef") or {}).get("name")
            if auth and not [d for r, d in find(docs, "TriggerAuthentication", auth) if r == srel]:
                fail(f"{srel}: trigger {t['type']} names TriggerAuthentication {auth}, not in the same file")
        if len(errors) == before:
            ok(f"{srel}: ScaledObject scales Deployment {name}")
    for trel, ta in find(docs, "TriggerAuthentication"):
        for ref in ta["spec"].get("secretTargetRef") or []:
            if ref["key"] not in secret_keys(docs, ref["name"]):
                fail(f"{trel}: reads Secret {ref['name']} key {ref['key']}, which the example Secret lacks")
    return config_text


def systemd_seconds(value):
    """TimeoutStopSec in seconds: `45`, `45s`, `1min 30s`, `2m`."""
    units = {"": 1, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600}
    parts = re.findall(r"(\d+)\s*([a-z]*)\s*", value)
    if not parts or "".join(n + u for n, u in parts) != re.sub(r"\s", "", value) \
            or any(u not in units for _, u in parts):
        return None
    return sum(int(n) * units[u] for n, u in parts)


def check_systemd(root):
    rel = "deploy/systemd/sluice.service"
    with open(os.path.join(root, rel)) as f:
        settings = dict(re.findall(r"^([A-Za-z]+)=(.*)$", f.read(), re.M))
    stop = systemd_seconds(settings.get("TimeoutStopSec", "90"))
    need = DEFAULT_SHUTDOWN_TIMEOUT_SECS + SETTLE_GRACE_SECS
    if stop is None:
        fail(f"{rel}: TimeoutStopSec {settings['TimeoutStopSec']} is not a time this check reads (45, 45s, 1min 30s)")
    elif stop > need:
        ok(f"{rel}: TimeoutStopSec {stop} s > the default shutdown_timeout_secs {DEFAULT_SHUTDOWN_TIMEOUT_SECS} + {SETTLE_GRACE_SECS}")
    else:
        fail(f"{rel}: TimeoutStopSec {stop} s must be above shutdown_timeout_secs "
             f"{DEFAULT_SHUTDOWN_TIMEOUT_SECS} + {SETTLE_GRACE_SECS}")
    if settings.get("KillSignal", "SIGTERM") != "SIGTERM":
        fail(f"{rel}: KillSignal {settings['KillSignal']}: sluice stops gracefully on SIGTERM")


def check_metric_names(root, docs):
    src = os.path.join(root, "crates/sluice/src")
    defined = set()
    for path in glob.glob(os.path.join(src, "**/*.rs"), recursive=True):
        with open(path) as f:
            defined |= set(re.findall(r'"(sluice_[a-z0-9_]+)"', f.read()))
    if not defined:
        fail(f"no sluice_* metric names found under {os.path.relpath(src, root)}")
        return
    used = {}
    texts = [(os.path.relpath(p, root), open(p).read())
             for p in sorted(glob.glob(os.path.join(root, "deploy/prometheus/*.yml")))]
    for rel, so in find(docs, "ScaledObject"):
        for t in so["spec"]["triggers"]:
            if t["type"] == "prometheus":
                texts.append((rel, t["metadata"].get("query", "")))
    for rel, text in texts:
        for name in re.findall(r"(?<![:\w])(sluice_[a-z0-9_]+)(?![:\w])", text):
            name = re.sub(r"_(bucket|sum|count)$", "", name)
            used.setdefault(name, set()).add(rel)
    unknown = {n: r for n, r in used.items() if n not in defined}
    for name, rels in sorted(unknown.items()):
        fail(f"{', '.join(sorted(rels))}: metric {name} is not defined in crates/sluice/src")
    if not unknown:
        ok(f"every sluice_* metric the rules and KEDA use is defined in crates/sluice/src ({len(used)})")


def sluice_check(binary, config_text):
    env = dict(os.environ)
    # A value of the shape every field here accepts, even a signing secret.
    dummy = "whsec_" + base64.b64encode(bytes(range(32))).decode()
    for name in required_env(config_text):
        env[name] = dummy
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "sluice.toml")
        with open(path, "w") as f:
            f.write(config_text)
        r = subprocess.run([binary, "check", "-c", path], env=env, capture_output=True, text=True)
    out = (r.stdout + r.stderr).strip().replace(path, "sluice.toml")
    if r.returncode == 0:
        ok(f"sluice check of the ConfigMap's config: {out}")
    else:
        fail(f"sluice check of the ConfigMap's config exited {r.returncode}: {out}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sluice", help="a sluice binary: also run `sluice check` on the ConfigMap's config")
    parser.add_argument("root")
    args = parser.parse_args()
    docs = load_docs(args.root)
    validate_schemas(args.root, docs)
    config_text = check_deployment(docs)
    check_systemd(args.root)
    check_metric_names(args.root, docs)
    if not args.sluice:
        print("  skip sluice check of the ConfigMap's config (set SLUICE=path/to/sluice)")
    elif config_text is not None:
        sluice_check(args.sluice, config_text)
    if errors:
        print(f"check-deploy: {len(errors)} problem(s)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
