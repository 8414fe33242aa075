#!/usr/bin/env python3
"""Checks the production deployment files without a container engine or a cluster.

* deploy/compose.yaml: `docker-compose config` (Debian's docker-compose validates the file
  against the Compose schema and resolves it), then the resolved services: every pipeline
  component built from deploy/Dockerfile, a healthcheck on every long-running service, the
  mounted files present, every FEEDBACK_* variable one that the component's `--help` names.
* deploy/k8s/*.yaml: every document validated against the Kubernetes 1.37 OpenAPI schemas
  (kubernetes-validate, strict: unknown fields are errors), then the expected kinds and the
  cross-references (selectors, probe ports, the headless Services Prometheus discovers, the
  partition-count rule, the kustomization's resources, variable names).
* Grafana provisioning: every dashboard's data source uids are provisioned, and compose mounts
  the dashboards where the provider reads them.

Environment: FEEDBACK_BIN (target/debug/feedback).
"""
import json
import os
import re
import subprocess
import sys

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEPLOY = os.path.join(ROOT, "deploy")
BIN = os.environ.get("FEEDBACK_BIN", os.path.join(ROOT, "target", "debug", "feedback"))
failures = []


def check(ok, msg):
    if ok:
        print(f"ok - {msg}")
    else:
        failures.append(msg)
        print(f"not ok - {msg}")


_env_cache = {}


def known_env(sub):
    """FEEDBACK_* variables that `feedback <sub> --help` names (None: no such subcommand)."""
    if sub not in _env_cache:
        r = subprocess.run([BIN, *sub.split(), "--help"], capture_output=True, text=True)
        _env_cache[sub] = set(re.findall(r"\[env: (FEEDBACK_\w+)", r.stdout)) | {"FEEDBACK_CONFIG", "FEEDBACK_LOG"} \
            if r.returncode == 0 else None
    return _env_cache[sub]


def check_env(where, subs, names):
    for sub in subs:
        if known_env(sub) is None:
            check(False, f"{where}: the feedback binary has no `{sub}` subcommand")
            return
    known = set().union(*(known_env(s) for s in subs))
    unknown = sorted(n for n in names if n.startswith("FEEDBACK_") and n not in known)
    check(not unknown, f"{where}: every FEEDBACK_* variable is one `feedback {'/'.join(subs)} --help` names"
          + (f" (unknown: {unknown})" if unknown else ""))


PIPELINE = {"collector", "attributor", "sink", "board"}


def volume(v):
    """(source, target) of a compose volume in either the short or the long form."""
    if isinstance(v, dict):
        return v.get("source", ""), v["target"]
    parts = v.split(":")
    return parts[0], parts[1]


def compose():
    path = os.path.join(DEPLOY, "compose.yaml")
    r = subprocess.run(["docker-compose", "-f", path, "config"], capture_output=True, text=True)
    check(r.returncode == 0, f"docker-compose config accepts deploy/compose.yaml {r.stderr.strip()[:500]}")
    if r.returncode:
        return
    c = yaml.safe_load(r.stdout)
    svcs = c["services"]
    want = {"kafka", "clickhouse", "init", "prometheus", "grafana"} | PIPELINE
    check(set(svcs) == want, f"compose services are {sorted(want)} (got {sorted(svcs)})")
    for name, s in sorted(svcs.items()):
        if name != "init":
            check("healthcheck" in s, f"compose service {name} has a healthcheck")
        for v in s.get("volumes", []):
            src = volume(v)[0]
            if src.startswith("/"):
                check(os.path.exists(src), f"compose service {name} mounts {os.path.relpath(src, ROOT)}, which exists")
        if name in PIPELINE | {"init"}:
            b = s.get("build", {})
            check(b.get("dockerfile") == "deploy/Dockerfile" and os.path.realpath(b.get("context", "")) == ROOT,
                  f"compose service {name} is built from deploy/Dockerfile with the repository as context")
            subs = ["topics", "migrate"] if name == "init" else [name]
            check_env(f"compose service {name}", subs, s.get("environment", {}))
            if name != "init":
                check(s.get("depends_on", {}).get("init", {}).get("condition") == "service_completed_successfully",
                      f"compose service {name} waits for topics and schema (init)")
    graf = svcs["grafana"]
    check(any(str(e).startswith("grafana-clickhouse-datasource") for e in [graf["environment"].get("GF_PLUGINS_PREINSTALL_SYNC", "")]),
          "grafana installs the grafana-clickhouse-datasource plugin")
    provider = yaml.safe_load(open(os.path.join(DEPLOY, "grafana", "provisioning", "dashboards", "feedback.yaml")))
    dash_path = provider["providers"][0]["options"]["path"]
    mounts = {volume(v)[1]: volume(v)[0] for v in graf["volumes"]}
    check(os.path.realpath(mounts.get(dash_path, "")) == os.path.join(DEPLOY, "grafana", "dashboards"),
          f"compose mounts deploy/grafana/dashboards at the provider's path {dash_path}")
    prom_targets = yaml.safe_load(open(os.path.join(DEPLOY, "prometheus", "prometheus.yml")))["scrape_configs"]
    for sc in prom_targets:
        for t in sc["static_configs"][0]["targets"]:
            host, port = t.split(":")
            if host == "localhost":
                continue
            env = svcs.get(host, {}).get("environment", {})
            listens = [v for k, v in env.items() if k.endswith("LISTEN")]
            check(listens == [f"0.0.0.0:{port}"], f"compose Prometheus job {sc['job_name']} scrapes {t}, where {host} listens")
    # Dockerfile: what it copies exists.
    for line in open(os.path.join(DEPLOY, "Dockerfile")):
        m = re.match(r"COPY (?!--from)(\S+) ", line)
        if m and m.group(1) != ".":
            check(os.path.exists(os.path.join(ROOT, m.group(1))), f"Dockerfile copies {m.group(1)}, which exists")


def kubernetes():
    k8s = os.path.join(DEPLOY, "k8s")
    files = sorted(f for f in os.listdir(k8s) if f.endswith(".yaml"))
    manifests = [f for f in files if f != "kustomization.yaml"]
    r = subprocess.run([sys.executable, "-m", "kubernetes_validate", "--strict", "--no-warn",
                        *[os.path.join(k8s, f) for f in manifests]], capture_output=True, text=True)
    check(r.returncode == 0, "every Kubernetes document validates against the 1.37 schemas (strict)"
          + ("" if r.returncode == 0 else ": " + (r.stdout + r.stderr).strip()[-1500:]))
    # The validator itself must be able to say no.
    bad = os.path.join(ROOT, "target", "deploy_test_bad.yaml")
    os.makedirs(os.path.dirname(bad), exist_ok=True)
    open(bad, "w").write("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec: {replicas: three, selector: {}, template: {}}\n")
    r = subprocess.run([sys.executable, "-m", "kubernetes_validate", "--strict", "--no-warn", bad], capture_output=True, text=True)
    check(r.returncode != 0, "the schema validator rejects a Deployment with replicas: three")

    kust = yaml.safe_load(open(os.path.join(k8s, "kustomization.yaml")))
    check(sorted(kust["resources"]) == manifests, f"kustomization lists every manifest ({manifests})")
    docs = []
    for f in manifests:
        for d in yaml.safe_load_all(open(os.path.join(k8s, f))):
            if d:
                docs.append((f, d))
    kinds = {}
    for f, d in docs:
        kinds.setdefault(d["kind"], []).append(d)
        if d["kind"] != "Namespace":
            check(d["metadata"].get("namespace") == "feedback", f"{f}: {d['kind']} {d['metadata']['name']} is in namespace feedback")
    deployments = {d["metadata"]["name"]: d for d in kinds.get("Deployment", []) + kinds.get("StatefulSet", [])}
    check(set(deployments) == {f"feedback-{c}" for c in PIPELINE}, f"a workload per component (got {sorted(deployments)})")
    check([d["metadata"]["name"] for d in kinds.get("StatefulSet", [])] == ["feedback-attributor"],
          "the attributor is a StatefulSet (stable instance names for its transactional id)")
    sts = deployments["feedback-attributor"]["spec"]
    check(sts.get("serviceName") == "feedback-attributor-metrics", "the attributor StatefulSet's serviceName is its headless Service")
    check(len(kinds.get("Job", [])) == 1 and len(kinds.get("Namespace", [])) == 1 and len(kinds.get("ConfigMap", [])) == 1,
          "one Namespace, one ConfigMap, one init Job")
    config = kinds["ConfigMap"][0]["data"]
    job = kinds["Job"][0]
    job_env = {e["name"]: e.get("value") for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    partitions = int(job_env["FEEDBACK_TOPIC_PARTITIONS"])
    check_env("k8s init Job", ["topics", "migrate"], set(config) | set(job_env))
    headless = {s["metadata"]["name"]: s for s in kinds.get("Service", []) if s["spec"].get("clusterIP") == "None"}
    for name, d in sorted(deployments.items()):
        comp = name.removeprefix("feedback-")
        spec = d["spec"]
        labels = spec["template"]["metadata"]["labels"]
        sel = spec["selector"]["matchLabels"]
        check(all(labels.get(k) == v for k, v in sel.items()), f"{name}: selector matches the pod labels")
        c = spec["template"]["spec"]["containers"][0]
        check(c.get("args") == [comp], f"{name}: runs `feedback {comp}`")
        req = c.get("resources", {}).get("requests", {})
        check("cpu" in req and "memory" in req and "memory" in c["resources"].get("limits", {}),
              f"{name}: cpu/memory requests and a memory limit")
        ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
        for probe in ("readinessProbe", "livenessProbe"):
            p = c.get(probe, {}).get("httpGet", {})
            check(p.get("port") in ports, f"{name}: {probe} on a declared port ({p.get('port')})")
        env = {e["name"]: e.get("value") for e in c.get("env", [])}
        listen = [v for k, v in env.items() if k.endswith("LISTEN")]
        check(listen == [f"0.0.0.0:{list(ports.values())[0]}"], f"{name}: listens on the declared port")
        check_env(f"k8s {name}", [comp], set(config) | set(env))
        hs = headless.get(f"{name}-metrics")
        check(hs is not None and all(hs["spec"]["selector"].get(k) == v for k, v in sel.items())
              and hs["spec"]["selector"] == sel, f"{name}: headless metrics Service selects its pods")
        if comp in ("attributor", "sink"):
            check(spec["replicas"] <= partitions,
                  f"{name}: {spec['replicas']} replicas <= {partitions} partitions (the partition-count rule)")
    pdbs = {p["metadata"]["name"] for p in kinds.get("PodDisruptionBudget", [])}
    check(pdbs == set(deployments), "a PodDisruptionBudget per workload")
    # Prometheus on Kubernetes discovers exactly these headless Services.
    kprom = yaml.safe_load(open(os.path.join(DEPLOY, "prometheus", "kubernetes.yml")))
    for sc in kprom["scrape_configs"]:
        for sd in sc.get("dns_sd_configs", []):
            for n in sd["names"]:
                svc, ns = n.split(".")[0:2]
                hs = headless.get(svc)
                check(ns == "feedback" and hs is not None and hs["spec"]["ports"][0]["port"] == sd["port"],
                      f"Prometheus job {sc['job_name']} discovers {n}:{sd['port']}, a headless Service on that port")


def grafana():
    ds = yaml.safe_load(open(os.path.join(DEPLOY, "grafana", "provisioning", "datasources", "feedback.yaml")))
    uids = {d["uid"]: d["type"] for d in ds["datasources"]}
    ddir = os.path.join(DEPLOY, "grafana", "dashboards")
    titles = set()
    for f in sorted(os.listdir(ddir)):
        d = json.load(open(os.path.join(ddir, f)))
        titles.add(d["title"])
        used = set()
        for p in d["panels"]:
            for t in [p] + p.get("targets", []):
                if "datasource" in t:
                    used.add((t["datasource"]["uid"], t["datasource"]["type"]))
        for v in d.get("templating", {}).get("list", []):
            if "datasource" in v:
                used.add((v["datasource"]["uid"], v["datasource"]["type"]))
        bad = sorted(u for u in used if uids.get(u[0]) != u[1])
        check(not bad, f"{f}: every data source is provisioned with that uid and type" + (f" (not: {bad})" if bad else ""))
        ids = [p["id"] for p in d["panels"]]
        check(len(ids) == len(set(ids)), f"{f}: panel ids are unique")
    check(titles == {"Feedback / Team", "Feedback / Organisation", "Feedback / Pipeline health"},
          f"the three dashboards are there ({sorted(titles)})")


def main():
    compose()
    kubernetes()
    grafana()
    if failures:
        print(f"deploy_test: {len(failures)} failure(s)", file=sys.stderr)
        sys.exit(1)
    print("deploy_test: compose, Kubernetes and Grafana provisioning check out")


if __name__ == "__main__":
    main()
