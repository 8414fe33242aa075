#!/usr/bin/env bash
# End-to-end latency at a steady moderate load (a benchmark: prints, asserts nothing about
# time): collector, attributor and sink (release builds) on a fresh topic prefix and
# database, the load generator offering RATE events/s (default 2000) for DURATION seconds
# (default 90), and after a 10 s warm-up `feedback probe` measuring COUNT (default 100)
# ratings from their 202 to their team's aggregate changing in ClickHouse.
# Uses the stack's ports (KAFKA_PORT, CLICKHOUSE_HTTP_PORT); the stack must be running.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
RATE="${RATE:-2000}" DURATION="${DURATION:-90}" COUNT="${COUNT:-100}"
RUN_ID="lat$(date +%s)"
export FEEDBACK_BROKERS="127.0.0.1:${KAFKA_PORT:-9092}"
export FEEDBACK_CLICKHOUSE_URL="http://127.0.0.1:${CLICKHOUSE_HTTP_PORT:-8123}"
export FEEDBACK_CLICKHOUSE_DATABASE="$RUN_ID" FEEDBACK_TOPIC_PREFIX="$RUN_ID."
export FEEDBACK_ATTRIBUTOR_GROUP="$RUN_ID.attributor" FEEDBACK_SINK_GROUP="$RUN_ID.sink"
export FEEDBACK_ATTRIBUTOR_METRICS_LISTEN=127.0.0.1:0 FEEDBACK_SINK_METRICS_LISTEN=127.0.0.1:0
COLLECTOR_PORT="${BENCH_COLLECTOR_PORT:-18581}"
export FEEDBACK_COLLECTOR_LISTEN="127.0.0.1:$COLLECTOR_PORT" FEEDBACK_COLLECTOR_URL="http://127.0.0.1:$COLLECTOR_PORT"
export FEEDBACK_LOG=warn
OUT="$ROOT/.local/bench-latency"
mkdir -p "$OUT"

cargo build --release --quiet --bin feedback
FB="$ROOT/target/release/feedback"
"$FB" topics >/dev/null
"$FB" migrate >/dev/null
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  curl -sS "$FEEDBACK_CLICKHOUSE_URL" --data-binary "DROP DATABASE IF EXISTS $RUN_ID" >/dev/null || true
}
trap cleanup EXIT INT TERM
export FEEDBACK_COLLECTOR_ALLOW_ANONYMOUS=1  # benchmark collector: no API keys
for c in collector attributor sink; do
  "$FB" "$c" >"$OUT/$c.log" 2>&1 & pids+=("$!")
done
for _ in $(seq 1 100); do curl -sf "$FEEDBACK_COLLECTOR_URL/healthz" >/dev/null && break; sleep 0.2; done
"$FB" loadgen --rate "$RATE" --duration-secs "$DURATION" --quiet >"$OUT/loadgen.out" 2>"$OUT/loadgen.log" & pids+=("$!")
sleep 10
echo "[latency] $RATE events/s offered; probing $COUNT ratings"
"$FB" probe --count "$COUNT" --interval-ms 300 | tee "$OUT/probe.out"
