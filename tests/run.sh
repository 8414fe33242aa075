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

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings
echo "== ownership files"
cargo run --quiet --bin feedback -- ownership check
echo "== shell scripts"
bash -n deploy/local/stack.sh deploy/local/demo.sh tests/run.sh tests/stack_test.sh .ci/run
python3 -m py_compile tests/clickhouse_versions.py
bash tests/stack_test.sh
echo "== cargo test"
# sink_chaos stops and starts ClickHouse: it runs alone, after everything else.
cargo test --workspace -- --skip sink_chaos 2>&1 | tee target/test-output.txt
echo "== cargo test sink_chaos (alone: it restarts ClickHouse)"
cargo test -p feedback --test it sink_chaos 2>&1 | tee -a target/test-output.txt
if [ "$started_stack" = 1 ]; then deploy/local/stack.sh stop; started_stack=0; fi
echo "== summary"
awk '/^test result:/ { p += $4; f += $6 } END { printf "%d passed, %d failed\n", p, f }' target/test-output.txt
