#!/usr/bin/env python3
"""Prometheus against the running pipeline.

1. Every metric name used by the alert rules (deploy/prometheus/rules/*.yml) and by the
   Pipeline health dashboard's Prometheus panels is really exposed by the component that owns
   it (feedback_<component>_...): the test starts the components (`feedback collector`,
   `attributor`, `sink`, and `board` when the binary has it) on the addresses the local
   stack's Prometheus scrapes, drives a small workload through them (ratings and interactions,
   a duplicate, a poison message that is dead-lettered, two board pages), scrapes each /metrics and reports
   precisely which names are missing from which component.
2. The local stack's Prometheus (deploy/local/prometheus.sh, started by stack.sh) reports
   every component's target as up, and accepts every dashboard expression.

Environment: FEEDBACK_TEST_BROKERS (127.0.0.1:9092), FEEDBACK_TEST_CLICKHOUSE_URL
(http://127.0.0.1:8123), PROMETHEUS_PORT (9090), the component addresses
FEEDBACK_COLLECTOR_LISTEN (127.0.0.1:8080), FEEDBACK_ATTRIBUTOR_METRICS_LISTEN (127.0.0.1:9101),
FEEDBACK_SINK_METRICS_LISTEN (127.0.0.1:9102), FEEDBACK_BOARD_LISTEN (127.0.0.1:8090), and
FEEDBACK_BIN (target/debug/feedback).
"""
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("FEEDBACK_BIN", os.path.join(ROOT, "target", "debug", "feedback"))
BROKERS = os.environ.get("FEEDBACK_TEST_BROKERS", "127.0.0.1:9092")
CH_URL = os.environ.get("FEEDBACK_TEST_CLICKHOUSE_URL", "http://127.0.0.1:8123")
PROM = f"http://127.0.0.1:{os.environ.get('PROMETHEUS_PORT', '9090')}"
ADDR = {
    "collector": os.environ.get("FEEDBACK_COLLECTOR_LISTEN", "127.0.0.1:8080"),
    "attributor": os.environ.get("FEEDBACK_ATTRIBUTOR_METRICS_LISTEN", "127.0.0.1:9101"),
    "sink": os.environ.get("FEEDBACK_SINK_METRICS_LISTEN", "127.0.0.1:9102"),
    "board": os.environ.get("FEEDBACK_BOARD_LISTEN", "127.0.0.1:8090"),
}
WAIT_SECS = 60

failures = []


def fail(msg):
    failures.append(msg)
    print(f"not ok - {msg}")


def http(url, data=None, timeout=5):
    req = urllib.request.Request(url, data=data, headers={"content-type": "application/json"} if data else {})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.status, r.read().decode()


def port_taken(addr):
    host, port = addr.rsplit(":", 1)
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex((host, int(port))) == 0


def used_names():
    """{metric name: [where used]} from the alert rules and the Prometheus panels."""
    names = {}
    ident = re.compile(r"\b(feedback_[a-z0-9_]+)\b")
    rules_dir = os.path.join(ROOT, "deploy", "prometheus", "rules")
    for f in sorted(os.listdir(rules_dir)):
        for line in open(os.path.join(rules_dir, f)):
            if line.strip().startswith("#"):
                continue
            for n in ident.findall(line):
                names.setdefault(n, []).append(f"rules/{f}")
    exprs = []
    dash = json.load(open(os.path.join(ROOT, "deploy", "grafana", "dashboards", "pipeline-health.json")))
    for p in dash["panels"]:
        for t in p.get("targets", []):
            if "expr" in t:
                exprs.append((p["title"], t["expr"]))
                for n in ident.findall(t["expr"]):
                    names.setdefault(n, []).append(f"panel {p['title']!r}")
    return names, exprs


def owner(name):
    return name.split("_")[1]


def exposed(component):
    """Sample names in the component's /metrics (None when it does not answer)."""
    try:
        _, body = http(f"http://{ADDR[component]}/metrics")
    except Exception:
        return None
    out = set()
    for line in body.splitlines():
        if line and not line.startswith("#"):
            out.add(re.split(r"[{ ]", line, 1)[0])
    return out


def main():
    names, exprs = used_names()
    help_out = subprocess.run([BIN, "--help"], capture_output=True, text=True).stdout
    components = ["collector", "attributor", "sink", "board"]
    runnable = [c for c in components if re.search(rf"^\s+{c}\b", help_out, re.M)]
    for c in components:
        if c not in runnable:
            fail(f"component {c}: the feedback binary has no `{c}` subcommand, so nothing exposes "
                 f"{sorted(n for n in names if owner(n) == c)}")
    for c in runnable:
        if port_taken(ADDR[c]):
            sys.exit(f"prometheus_test: {ADDR[c]} (where Prometheus scrapes the {c}) is taken by another process; "
                     f"stop it or set the component address variables (see {__file__})")

    tag = f"obs{os.getpid()}_{int(time.time())}"
    env = dict(os.environ, FEEDBACK_BROKERS=BROKERS, FEEDBACK_CLICKHOUSE_URL=CH_URL,
               FEEDBACK_CLICKHOUSE_DATABASE=tag, FEEDBACK_TOPIC_PREFIX=f"{tag}.",
               FEEDBACK_COLLECTOR_LISTEN=ADDR["collector"], FEEDBACK_ATTRIBUTOR_METRICS_LISTEN=ADDR["attributor"],
               FEEDBACK_SINK_METRICS_LISTEN=ADDR["sink"], FEEDBACK_BOARD_LISTEN=ADDR["board"],
               FEEDBACK_ATTRIBUTOR_GROUP=f"{tag}.attributor", FEEDBACK_SINK_GROUP=f"{tag}.sink", FEEDBACK_LOG="warn",
               FEEDBACK_COLLECTOR_ALLOW_ANONYMOUS="1")
    for args in (["topics", "--partitions", "2"], ["migrate"]):
        r = subprocess.run([BIN, *args], env=env, capture_output=True, text=True)
        if r.returncode:
            sys.exit(f"prometheus_test: feedback {' '.join(args)} failed: {r.stdout}{r.stderr}")
    procs = {}
    logdir = os.path.join(ROOT, "target", "prometheus_test")
    os.makedirs(logdir, exist_ok=True)
    try:
        for c in runnable:
            log = open(os.path.join(logdir, f"{c}.log"), "w")
            procs[c] = subprocess.Popen([BIN, c], env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.time() + WAIT_SECS
        while time.time() < deadline:
            if all(exposed(c) is not None for c in runnable):
                break
            for c, p in procs.items():
                if p.poll() is not None:
                    sys.exit(f"prometheus_test: `feedback {c}` exited with {p.returncode}; see {logdir}/{c}.log")
            time.sleep(0.3)

        # A small workload: interactions and ratings, a duplicate, a poison message.
        t = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        col = f"http://{ADDR['collector']}"
        inter = [{"interaction_id": f"{tag}-i{n}", "occurred_at": t, "service": "checkout-api", "channel": "web",
                  "kind": "order", "customer_ref": "c-1", "product": "payments-card"} for n in range(3)]
        rat = [{"rating_id": f"{tag}-r{n}", "occurred_at": t, "interaction_id": f"{tag}-i{n}", "metric": "csat",
                "score": 1 + n, "comment": "x", "service": "survey", "channel": "email", "customer_ref": "c-1"}
               for n in range(3)]
        for path, body in [("interactions", inter), ("ratings", rat), ("interactions", inter[:1])]:
            status, text = http(f"{col}/v1/{path}", json.dumps(body).encode())
            if status != 202:
                fail(f"collector answered {status} to POST /v1/{path}: {text}")
        poison = subprocess.run(
            [os.path.join(ROOT, "deploy", "local", "stack.sh"), "kafka-tool", "org.apache.kafka.tools.ConsoleProducer",
             "--bootstrap-server", BROKERS, "--topic", f"{tag}.feedback.interactions.v1"],
            input="hello, not avro\n", capture_output=True, text=True)
        if poison.returncode:
            fail(f"could not produce the poison message: {poison.stderr[-500:]}")

        if "board" in runnable:  # its request and query metrics appear with requests
            for path in ("/", "/api/teams"):
                try:
                    http(f"http://{ADDR['board']}{path}", timeout=30)
                except Exception as e:
                    fail(f"board: GET {path} failed: {e}")

        # Wait (bounded) until every used name shows up or the time is over, then report.
        missing = {}
        deadline = time.time() + WAIT_SECS
        while True:
            seen = {c: exposed(c) or set() for c in runnable}
            missing = {n: owner(n) for n in names if owner(n) in seen and n not in seen[owner(n)]}
            if not missing or time.time() > deadline:
                break
            time.sleep(1)
        for c in runnable:
            m = sorted(n for n, o in missing.items() if o == c)
            used = sorted(n for n in names if owner(n) == c)
            if m:
                fail(f"component {c} does not expose {len(m)} of the {len(used)} names the rules/dashboard use: "
                     + ", ".join(f"{n} (used in {', '.join(sorted(set(names[n])))})" for n in m))
            else:
                print(f"ok - component {c} exposes all {len(used)} names the rules/dashboard use")
        unknown = sorted(n for n in names if owner(n) not in components)
        if unknown:
            fail(f"names with no owning component: {unknown}")

        # Prometheus: every component's target up, every dashboard expression accepted.
        want_jobs = {f"feedback-{c}" for c in components} | {"prometheus"}
        deadline = time.time() + WAIT_SECS
        health = {}
        while time.time() < deadline:
            try:
                _, body = http(f"{PROM}/api/v1/targets?state=active")
            except Exception as e:
                sys.exit(f"prometheus_test: the local stack's Prometheus does not answer at {PROM} ({e}); "
                         "start it with deploy/local/stack.sh start (PROMETHEUS_PORT)")
            health = {}
            for tg in json.loads(body)["data"]["activeTargets"]:
                health[tg["labels"]["job"]] = (tg["health"], tg["scrapeUrl"], tg.get("lastError", ""))
            if all(health.get(j, ("",))[0] == "up" for j in want_jobs):
                break
            time.sleep(1)
        for j in sorted(want_jobs):
            h = health.get(j)
            if h is None:
                fail(f"Prometheus has no target for job {j}")
            elif h[0] != "up":
                fail(f"Prometheus target {j} ({h[1]}) is {h[0]}: {h[2]}")
            else:
                print(f"ok - Prometheus reports {j} ({h[1]}) up")
        for title, e in exprs:
            try:
                _, body = http(f"{PROM}/api/v1/query?" + urllib.parse.urlencode({"query": e}))
                if json.loads(body)["status"] != "success":
                    fail(f"panel {title!r}: Prometheus refused {e}: {body}")
            except urllib.error.HTTPError as err:
                fail(f"panel {title!r}: Prometheus refused {e}: {err.read().decode()}")
        print(f"ok - Prometheus evaluated the {len(exprs)} dashboard expressions")
    finally:
        for p in procs.values():
            p.terminate()
        for p in procs.values():
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        if not failures:
            try:
                http(CH_URL, f"DROP DATABASE IF EXISTS {tag}".encode())
            except Exception:
                pass
    if failures:
        print(f"prometheus_test: {len(failures)} failure(s)", file=sys.stderr)
        sys.exit(1)
    print("prometheus_test: every name used is exposed and every target is up")


if __name__ == "__main__":
    main()
