#!/usr/bin/env bash
# The main job: local stack, the whole pipeline, a synthetic workload, and live per-team
# CSAT / NPS / CES in the terminal; then an end-to-end latency probe and a summary.
#
#   deploy/local/demo.sh                     # 60 s at 2000 events/s
#   RATE=5000 DURATION=120 deploy/local/demo.sh
#
# Stops the pipeline processes it started (by pid) on exit; Kafka and ClickHouse keep
# running (deploy/local/stack.sh stop).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
RATE="${RATE:-2000}"
DURATION="${DURATION:-60}"
RUN="$ROOT/.local/pipeline"
mkdir -p "$RUN"
cd "$ROOT"

"$HERE/stack.sh" start
echo "[demo] building feedback (release)"
cargo build --release --quiet --bin feedback
FB="$ROOT/target/release/feedback"
"$FB" topics
"$FB" migrate
"$FB" ownership check | tail -1

pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT INT TERM
# The local demo's collector takes requests without API keys (a warning in its log); with
# keys: `feedback collector keygen --service <name>`, FEEDBACK_COLLECTOR_API_KEYS, FEEDBACK_API_KEY.
export FEEDBACK_COLLECTOR_ALLOW_ANONYMOUS="${FEEDBACK_COLLECTOR_ALLOW_ANONYMOUS:-1}"
for c in collector attributor sink; do
  "$FB" "$c" >"$RUN/$c.log" 2>&1 &
  pids+=("$!")
  echo "[demo] $c started (pid $!, log $RUN/$c.log)"
done
for _ in $(seq 1 100); do curl -sf http://127.0.0.1:8080/healthz >/dev/null && break; sleep 0.2; done

echo "[demo] loadgen: $RATE events/s for ${DURATION}s; live numbers follow"
"$FB" loadgen --rate "$RATE" --duration-secs "$DURATION" --quiet >"$RUN/loadgen.out" 2>"$RUN/loadgen.log" &
lg=$!
pids+=("$lg")
"$FB" watch --duration-secs "$((DURATION + 8))" --grain last_1h
wait "$lg" || { echo "[demo] loadgen failed:"; cat "$RUN/loadgen.log"; exit 1; }
pids=("${pids[@]:0:3}")
echo
cat "$RUN/loadgen.out"
# The probe measures latency on an idle pipeline: first wait (bounded) until the attributor
# and the sink have caught up with what the load left queued in Kafka.
lag_of() { curl -sf "http://127.0.0.1:$1/metrics" | awk -v m="$2" '$1 ~ "^"m"[{]" { s += $2 } END { print s + 0 }'; }
# Lag comes from librdkafka statistics (every 5 s): zero must hold for three looks in a row.
drain_start=$(date +%s)
zeros=0
for i in $(seq 1 300); do
  a=$(lag_of 9101 feedback_attributor_consumer_lag || echo "?")
  s=$(lag_of 9102 feedback_sink_consumer_lag || echo "?")
  if [ "$a" = 0 ] && [ "$s" = 0 ]; then zeros=$((zeros + 1)); else zeros=0; fi
  [ "$zeros" -ge 3 ] && break
  [ $((i % 5)) = 1 ] && echo "[demo] draining the backlog: attributor lag $a, sink lag $s"
  sleep 2
done
echo "[demo] backlog drained $(( $(date +%s) - drain_start )) s after the load ended (attributor lag $a, sink lag $s)"
"$FB" probe --count 20 | tee "$RUN/probe.out"
echo "[demo] pipeline metrics: http://127.0.0.1:8080/metrics, :9101/metrics, :9102/metrics (until this script exits)"
