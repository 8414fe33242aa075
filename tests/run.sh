#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit tests and the integration tests against a
# real local Kafka and ClickHouse (started here if they are not running, and stopped again
# if this script started them).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

started_stack=0
if ! deploy/local/stack.sh status >/dev/null 2>&1; then
  deploy/local/stack.sh start
  started_stack=1
else
  deploy/local/stack.sh install
fi
finish() { [ "$started_stack" = 1 ] && deploy/local/stack.sh stop || true; }
trap finish EXIT

# The board's tests need Debian's headless Chromium and its WebDriver; its SQL is also checked
# on current ClickHouse with chDB. Installed when missing (idempotent).
if ! command -v chromedriver >/dev/null || [ ! -x /usr/bin/chromium ]; then
  echo "== installing chromium and chromium-driver (board tests)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
fi
if ! python3 -c 'import chdb' 2>/dev/null; then
  echo "== installing chdb-core (board SQL on current ClickHouse)"
  python3 -m pip install -q chdb-core 2>&1 | grep -v 'Running pip as the' || true
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings
echo "== ownership files"
cargo run --quiet --bin feedback -- ownership check
echo "== shell scripts"
bash -n deploy/local/stack.sh deploy/local/demo.sh tests/run.sh tests/stack_test.sh .ci/run deploy/local/prometheus.sh
python3 -m py_compile tests/clickhouse_versions.py
bash tests/stack_test.sh
echo "== cargo test"
# sink_chaos stops and starts ClickHouse, readiness and fault_drill also Kafka: they run alone, after everything else.
cargo test --workspace -- --skip sink_chaos --skip fault_drill --skip readiness:: 2>&1 | tee target/test-output.txt
echo "== cargo test sink_chaos (alone: it restarts ClickHouse)"
cargo test -p feedback --test it sink_chaos 2>&1 | tee -a target/test-output.txt
echo "== cargo test readiness (alone: it stops Kafka and ClickHouse)"
cargo test -p feedback --test it readiness:: 2>&1 | tee -a target/test-output.txt
echo "== cargo test fault_drill (alone: it restarts Kafka and ClickHouse; about 8 minutes)"
cargo test -p feedback --test it fault_drill -- --nocapture 2>&1 | tee -a target/test-output.txt
echo "== deploy: Prometheus rules and configs, compose, Kubernetes, Grafana dashboards"
python3 -c 'import kubernetes_validate, chdb, yaml' 2>/dev/null || python3 -m pip install -q kubernetes-validate chdb-core pyyaml
command -v docker-compose >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-compose >/dev/null; }
promtool check rules deploy/prometheus/rules/*.yml
promtool test rules deploy/prometheus/tests/*.yml
promtool check config "$(deploy/local/prometheus.sh config)"
for f in deploy/prometheus/prometheus.yml deploy/prometheus/kubernetes.yml; do  # rule paths as mounted in production
  sed "s#/etc/prometheus/rules#$ROOT/deploy/prometheus/rules#" "$f" > "target/$(basename "$f")"
  promtool check config "target/$(basename "$f")"
done
deploy_failed=()  # run all three, so one report lists everything missing
python3 tests/deploy_test.py || deploy_failed+=(deploy_test.py)
python3 tests/dashboards_test.py || deploy_failed+=(dashboards_test.py)
python3 tests/prometheus_test.py || deploy_failed+=(prometheus_test.py)
if [ "$started_stack" = 1 ]; then deploy/local/stack.sh stop; started_stack=0; fi
echo "== summary"
awk '/^test result:/ { p += $4; f += $6 } END { printf "%d passed, %d failed\n", p, f }' target/test-output.txt
if [ "${#deploy_failed[@]}" -gt 0 ]; then echo "failed: ${deploy_failed[*]} (see above)"; exit 1; fi
