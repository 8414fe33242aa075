#!/usr/bin/env bash
# Sink throughput beside clickhouse-client, same rows, same tables, same run (a benchmark:
# prints numbers, asserts nothing about time).
#
#   tests/bench_sink.sh            # EVENTS=300000 by default
#
# 1. The collector, attributor and load generator fill the attributed topic of a fresh
#    topic prefix / database with about EVENTS events; the sink is not running yet.
# 2. One `feedback sink` (release build) lands the backlog: rows/s = rows / time from its
#    start until the last row is in ClickHouse (includes consumer group join and reads).
# 3. The same rows, exported as Native from ClickHouse, are inserted again into the same
#    tables (materialized views included) by clickhouse-client, one INSERT per table.
# Uses the stack's ports (KAFKA_PORT, CLICKHOUSE_HTTP_PORT, CLICKHOUSE_TCP_PORT); the stack
# must be running (deploy/local/stack.sh start). Drops its database at the end.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
EVENTS="${EVENTS:-300000}"
KAFKA_PORT="${KAFKA_PORT:-9092}"
HTTP_PORT="${CLICKHOUSE_HTTP_PORT:-8123}"
TCP_PORT="${CLICKHOUSE_TCP_PORT:-9000}"
RUN_ID="bench$(date +%s)"
export FEEDBACK_BROKERS="127.0.0.1:$KAFKA_PORT"
export FEEDBACK_CLICKHOUSE_URL="http://127.0.0.1:$HTTP_PORT"
export FEEDBACK_CLICKHOUSE_DATABASE="$RUN_ID"
export FEEDBACK_TOPIC_PREFIX="$RUN_ID."
export FEEDBACK_ATTRIBUTOR_GROUP="$RUN_ID.attributor" FEEDBACK_SINK_GROUP="$RUN_ID.sink"
export FEEDBACK_ATTRIBUTOR_METRICS_LISTEN=127.0.0.1:0 FEEDBACK_SINK_METRICS_LISTEN=127.0.0.1:0
COLLECTOR_PORT="${BENCH_COLLECTOR_PORT:-18580}"
export FEEDBACK_COLLECTOR_LISTEN="127.0.0.1:$COLLECTOR_PORT"
export FEEDBACK_LOG=warn
OUT="$ROOT/.local/bench-sink"
mkdir -p "$OUT"

q() { curl -sS "http://127.0.0.1:$HTTP_PORT/" --data-binary "$1"; }
rows() { q "SELECT (SELECT count() FROM $RUN_ID.interactions) + (SELECT count() FROM $RUN_ID.ratings)"; }
now() { date +%s.%N; }

cargo build --release --quiet --bin feedback
FB="$ROOT/target/release/feedback"
"$FB" topics --partitions 3 >/dev/null
"$FB" migrate >/dev/null

pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  q "DROP DATABASE IF EXISTS $RUN_ID" >/dev/null || true
}
trap cleanup EXIT INT TERM

export FEEDBACK_COLLECTOR_ALLOW_ANONYMOUS=1  # benchmark collector: no API keys
"$FB" collector >"$OUT/collector.log" 2>&1 & pids+=("$!")
"$FB" attributor >"$OUT/attributor.log" 2>&1 & pids+=("$!")
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$COLLECTOR_PORT/healthz" >/dev/null && break; sleep 0.2; done
echo "[bench] filling the attributed topic with ~$EVENTS events (collector + attributor, no sink yet)"
"$FB" loadgen --collector-url "http://127.0.0.1:$COLLECTOR_PORT" --rate 40000 --duration-secs "$((EVENTS / 40000))" --quiet >"$OUT/loadgen.out" 2>"$OUT/loadgen.log"
# Wait until the attributor has written everything (its group lag reaches 0).
attributed() {
  deploy/local/stack.sh kafka-tool org.apache.kafka.tools.GetOffsetShell --bootstrap-server "127.0.0.1:$KAFKA_PORT" \
    --topic "$RUN_ID.feedback.attributed.v1" 2>/dev/null | awk -F: '{ s += $3 } END { print s + 0 }'
}
prev=-1; n=$(attributed)
for _ in $(seq 1 120); do
  [ "$n" = "$prev" ] && [ "$n" -gt 0 ] && break
  sleep 2; prev=$n; n=$(attributed)
done
echo "[bench] attributed topic holds $n messages"

t0=$(now)
"$FB" sink >"$OUT/sink.log" 2>&1 & pids+=("$!")
tf=""; ff=0
for _ in $(seq 1 1200); do
  r=$(rows)
  if [ -z "$tf" ] && [ "$r" -gt 0 ]; then tf=$(now); ff=$r; fi
  [ "$r" -ge "$n" ] && break
  sleep 0.05
done
t1=$(now)
landed=$(rows)
sink_secs=$(echo "$t1 - $t0" | bc -l)
echo "[bench] sink: $landed rows in $(printf %.2f "$sink_secs") s = $(printf %.0f "$(echo "$landed / $sink_secs" | bc -l)") rows/s (one instance, from process start: includes joining the consumer group)"
steady=$(echo "$t1 - $tf" | bc -l)
echo "[bench] sink after its first batch landed: $((landed - ff)) rows in $(printf %.2f "$steady") s = $(printf %.0f "$(echo "($landed - $ff) / $steady" | bc -l)") rows/s"

for t in interactions ratings; do
  cols=$(q "SELECT arrayStringConcat(groupArray(name), ', ') FROM (SELECT name FROM system.columns WHERE database = '$RUN_ID' AND table = '$t' AND default_kind = '')")
  clickhouse-client --port "$TCP_PORT" --query "SELECT $cols FROM $RUN_ID.$t FORMAT Native" >"$OUT/$t.native"
  echo "$cols" >"$OUT/$t.cols"
done
before=$(rows)
t0=$(now)
for t in interactions ratings; do
  clickhouse-client --port "$TCP_PORT" --query "INSERT INTO $RUN_ID.$t ($(cat "$OUT/$t.cols")) FORMAT Native" <"$OUT/$t.native"
done
t1=$(now)
after=$(rows)
cc_secs=$(echo "$t1 - $t0" | bc -l)
inserted=$((after - before))
echo "[bench] clickhouse-client: $inserted rows in $(printf %.2f "$cc_secs") s = $(printf %.0f "$(echo "$inserted / $cc_secs" | bc -l)") rows/s (same rows, same tables, Native over TCP, one INSERT per table)"
