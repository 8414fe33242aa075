#!/usr/bin/env bash
# The local stack's Prometheus (Debian's `prometheus` package) scraping every pipeline
# component, with the alert rules of deploy/prometheus/rules loaded. Called by stack.sh;
# usable alone:
#
#   deploy/local/prometheus.sh start|stop|status|config
#
# Environment: PROMETHEUS_PORT (9090); the scrape targets come from the same variables the
# components listen on: FEEDBACK_COLLECTOR_LISTEN (127.0.0.1:8080),
# FEEDBACK_ATTRIBUTOR_METRICS_LISTEN (127.0.0.1:9101), FEEDBACK_SINK_METRICS_LISTEN
# (127.0.0.1:9102), FEEDBACK_BOARD_LISTEN (127.0.0.1:8090). FEEDBACK_LOCAL_DIR as in stack.sh.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
LOCAL="${FEEDBACK_LOCAL_DIR:-$ROOT/.local}"
DIR="$LOCAL/prometheus"
PORT="${PROMETHEUS_PORT:-9090}"
START_TIMEOUT_SECS="${START_TIMEOUT_SECS:-120}"

log() { printf '[prometheus] %s\n' "$*" >&2; }
die() { printf '[prometheus] error: %s\n' "$*" >&2; exit 1; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
pid_alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
ready() { curl -sf -m 2 "http://127.0.0.1:$PORT/-/ready" >/dev/null 2>&1; }

install() {
  if ! command -v prometheus >/dev/null || ! command -v promtool >/dev/null; then
    log "installing Debian package: prometheus"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  fi
}

config() { # renders the configuration and checks it with promtool
  mkdir -p "$DIR/data"
  sed -e "s#@RULES@#$ROOT/deploy/prometheus/rules/*.yml#" \
      -e "s#@PROMETHEUS_PORT@#$PORT#" \
      -e "s#@COLLECTOR@#${FEEDBACK_COLLECTOR_LISTEN:-127.0.0.1:8080}#" \
      -e "s#@ATTRIBUTOR@#${FEEDBACK_ATTRIBUTOR_METRICS_LISTEN:-127.0.0.1:9101}#" \
      -e "s#@SINK@#${FEEDBACK_SINK_METRICS_LISTEN:-127.0.0.1:9102}#" \
      -e "s#@BOARD@#${FEEDBACK_BOARD_LISTEN:-127.0.0.1:8090}#" \
      "$HERE/prometheus/prometheus.yml" > "$DIR/prometheus.yml"
  promtool check config "$DIR/prometheus.yml" >"$DIR/check.log" 2>&1 \
    || die "the rendered configuration $DIR/prometheus.yml is invalid: $(cat "$DIR/check.log")"
}

start() {
  install
  if pid_alive "$DIR/pid"; then log "prometheus already running (pid $(cat "$DIR/pid"))"; return; fi
  if ready; then log "prometheus already answers on 127.0.0.1:$PORT (started elsewhere); using it"; return; fi
  if port_open "$PORT"; then
    die "port 127.0.0.1:$PORT is already taken by another process (wanted for Prometheus); stop it, or set PROMETHEUS_PORT"
  fi
  config
  log "starting prometheus on 127.0.0.1:$PORT"
  (exec nohup prometheus --config.file="$DIR/prometheus.yml" --storage.tsdb.path="$DIR/data" \
    --web.listen-address="127.0.0.1:$PORT" --storage.tsdb.retention.time=2d \
    >"$DIR/prometheus.log" 2>&1) &
  echo $! > "$DIR/pid"
  local deadline=$((SECONDS + START_TIMEOUT_SECS))
  while [ $SECONDS -lt $deadline ]; do
    ready && { log "prometheus answers"; return 0; }
    pid_alive "$DIR/pid" || die "prometheus exited during start; see $DIR/prometheus.log"
    sleep 0.5
  done
  die "prometheus not ready after ${START_TIMEOUT_SECS}s; see $DIR/prometheus.log"
}

stop() {
  if pid_alive "$DIR/pid"; then
    local pid; pid="$(cat "$DIR/pid")"
    log "stopping prometheus (pid $pid)"
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -0 "$pid" 2>/dev/null && { log "prometheus did not stop in 30s, killing"; kill -9 "$pid" 2>/dev/null || true; }
  fi
  rm -f "$DIR/pid"
}

status() {
  if ready; then echo "prometheus: up (http 127.0.0.1:$PORT)"; else echo "prometheus: down"; return 1; fi
}

case "${1:-}" in
  install) install ;;
  config) config; echo "$DIR/prometheus.yml" ;;
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 install|config|start|stop|status" >&2; exit 2 ;;
esac
