#!/usr/bin/env bash
# Local stack without Docker: Apache Kafka 4.x (KRaft, from Maven Central jars) and
# ClickHouse (Debian's clickhouse-server) on loopback, data under <repo>/.local/.
# Prometheus (Debian's) scraping the pipeline components is started and stopped with them
# by deploy/local/prometheus.sh (PROMETHEUS_PORT, default 9090; targets: see that script).
#
#   deploy/local/stack.sh install   # apt/mvn/pip what is missing (idempotent)
#   deploy/local/stack.sh start     # install, then start both and wait until they answer
#   deploy/local/stack.sh stop      # stop what this script started (by pid)
#   deploy/local/stack.sh status    # exit 0 when both answer
#   deploy/local/stack.sh reset     # stop and delete the data folder
#   deploy/local/stack.sh stop-clickhouse | start-clickhouse   # ClickHouse alone (failure tests)
#   deploy/local/stack.sh stop-kafka | start-kafka             # the Kafka broker alone (drills)
#
# Environment: FEEDBACK_LOCAL_DIR (data folder, default <repo>/.local),
# KAFKA_PORT (9092), KAFKA_CONTROLLER_PORT (9093), CLICKHOUSE_HTTP_PORT (8123),
# CLICKHOUSE_TCP_PORT (9000), START_TIMEOUT_SECS (120), KAFKA_SASL_PORT (9094: a second
# Kafka listener, SASL_SSL with SCRAM-SHA-512, see "Kafka over TLS with SCRAM" below).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
LOCAL="${FEEDBACK_LOCAL_DIR:-$ROOT/.local}"
KAFKA_PORT="${KAFKA_PORT:-9092}"
CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-9093}"
CH_HTTP_PORT="${CLICKHOUSE_HTTP_PORT:-8123}"
CH_TCP_PORT="${CLICKHOUSE_TCP_PORT:-9000}"
SASL_PORT="${KAFKA_SASL_PORT:-9094}"
START_TIMEOUT_SECS="${START_TIMEOUT_SECS:-120}"
KAFKA_LIBS="${FEEDBACK_KAFKA_LIBS:-$LOCAL/kafka/libs}"
KAFKA_DIR="$LOCAL/kafka"
CH_DIR="$LOCAL/clickhouse"

log() { printf '[stack] %s\n' "$*" >&2; }
die() { printf '[stack] error: %s\n' "$*" >&2; exit 1; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
pid_alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

need_apt=()
install() {
  command -v java >/dev/null || need_apt+=(default-jre-headless)
  command -v mvn >/dev/null || need_apt+=(maven)
  [ -x /usr/sbin/clickhouse-server ] || need_apt+=(clickhouse-server)
  command -v clickhouse-client >/dev/null || need_apt+=(clickhouse-client)
  command -v curl >/dev/null || need_apt+=(curl)
  command -v openssl >/dev/null || need_apt+=(openssl)
  dpkg -s libssl-dev >/dev/null 2>&1 || need_apt+=(libssl-dev pkg-config)  # librdkafka with TLS/SASL
  python3 -c 'import fastavro' 2>/dev/null || PIP_NEEDED=1
  python3 -c 'import chdb' 2>/dev/null || CHDB_NEEDED=1
  if [ "${#need_apt[@]}" -gt 0 ]; then
    log "installing Debian packages: ${need_apt[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
  fi
  if [ "${PIP_NEEDED:-0}" = 1 ]; then
    log "installing Python packages: fastavro"
    python3 -m pip install -q fastavro 2>&1 | grep -v 'Running pip as the' || true
  fi
  if [ "${CHDB_NEEDED:-0}" = 1 ]; then
    log "installing Python packages: chdb-core (current ClickHouse, for the version test)"
    python3 -m pip install -q chdb-core 2>&1 | grep -v 'Running pip as the' || true
  fi
  if [ ! -f "$KAFKA_LIBS/.complete" ] || ! cmp -s "$HERE/pom.xml" "$KAFKA_LIBS/.complete"; then
    log "fetching Apache Kafka jars from Maven Central (deploy/local/pom.xml)"
    rm -rf "$KAFKA_LIBS"; mkdir -p "$KAFKA_LIBS"
    mvn -q -B -f "$HERE/pom.xml" dependency:copy-dependencies -DincludeScope=runtime \
      -DoutputDirectory="$KAFKA_LIBS" || die "mvn could not fetch the Kafka jars; see the output above"
    cp "$HERE/pom.xml" "$KAFKA_LIBS/.complete"
  fi
}

render() { # template dest
  sed -e "s#@DATA@#$3#g" -e "s#@KAFKA_PORT@#$KAFKA_PORT#g" -e "s#@CONTROLLER_PORT@#$CONTROLLER_PORT#g" \
      -e "s#@HTTP_PORT@#$CH_HTTP_PORT#g" -e "s#@TCP_PORT@#$CH_TCP_PORT#g" \
      -e "s#@SASL_PORT@#$SASL_PORT#g" -e "s#@TLS_STORE_PASSWORD@#$(secret tls-store)#g" \
      -e "s#@CH_PASSWORD_SHA256@#$(secret clickhouse-feedback | tr -d '\n' | sha256sum | cut -d' ' -f1)#g" \
      "$1" > "$2"
}

# --- Kafka over TLS with SCRAM, ClickHouse with a password (issue 8) ----------------------
# Generated once under $LOCAL/secrets (mode 600) and $KAFKA_DIR/tls, never committed:
#   secrets/kafka-scram-feedback.password  SCRAM-SHA-512 password of Kafka user `feedback`
#   secrets/clickhouse-feedback.password   password of ClickHouse user `feedback`
#   kafka/tls/ca.pem                       the local CA clients trust (ssl.ca.location)
secret() { # name: prints the secret, generating it on first use
  local f="$LOCAL/secrets/$1.password"
  if [ ! -s "$f" ]; then
    mkdir -p "$LOCAL/secrets"; chmod 700 "$LOCAL/secrets"
    (umask 077; openssl rand -hex 24 > "$f")
  fi
  cat "$f"
}

ensure_tls() { # self-signed CA and a broker certificate for 127.0.0.1/localhost, as PKCS12
  local d="$KAFKA_DIR/tls"
  [ -s "$d/broker.p12" ] && [ -s "$d/ca.pem" ] && return 0
  command -v openssl >/dev/null || die "openssl is needed to make the local Kafka TLS certificates (apt-get install openssl)"
  log "generating a local CA and a broker certificate under $d"
  mkdir -p "$d"; chmod 700 "$d"
  (umask 077; cd "$d" &&
    openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 3650 \
      -subj "/CN=feedback-pipeline local CA" >/dev/null 2>&1 &&
    openssl req -newkey rsa:2048 -nodes -keyout broker.key -out broker.csr -subj "/CN=localhost" >/dev/null 2>&1 &&
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' > broker.ext &&
    openssl x509 -req -in broker.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out broker.pem \
      -days 3650 -extfile broker.ext >/dev/null 2>&1 &&
    openssl pkcs12 -export -in broker.pem -inkey broker.key -certfile ca.pem -name broker \
      -out broker.p12 -passout "pass:$(secret tls-store)") \
    || die "could not generate the Kafka TLS certificates under $d"
  chmod 644 "$d/ca.pem"
}

ensure_scram_user() { # idempotent: (re)sets user `feedback`'s SCRAM-SHA-512 credential
  kafka_java kafka.admin.ConfigCommand --bootstrap-server "127.0.0.1:$KAFKA_PORT" --alter \
    --add-config "SCRAM-SHA-512=[iterations=8192,password=$(secret kafka-scram-feedback)]" \
    --entity-type users --entity-name feedback >"$KAFKA_DIR/logs/scram.log" 2>&1 \
    || die "could not create the Kafka SCRAM user; see $KAFKA_DIR/logs/scram.log"
  log "kafka SASL_SSL (SCRAM-SHA-512, user feedback) on 127.0.0.1:$SASL_PORT"
}

check_port_free() { # port what
  if port_open "$1"; then
    die "port 127.0.0.1:$1 is already taken by another process (wanted for $2); stop it, or set the port variable (see the head of deploy/local/stack.sh)"
  fi
}

kafka_java() {
  java -Xms256m -Xmx1g -XX:+UseG1GC -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$KAFKA_DIR/log4j2.properties" -Dkafka.logs.dir="$KAFKA_DIR/logs" \
    -cp "$KAFKA_LIBS/*" "$@"
}

start_kafka() {
  if pid_alive "$KAFKA_DIR/pid"; then log "kafka already running (pid $(cat "$KAFKA_DIR/pid"))"; return; fi
  check_port_free "$KAFKA_PORT" "the Kafka broker"
  check_port_free "$CONTROLLER_PORT" "the Kafka KRaft controller"
  check_port_free "$SASL_PORT" "the Kafka SASL_SSL listener (KAFKA_SASL_PORT)"
  mkdir -p "$KAFKA_DIR/data" "$KAFKA_DIR/logs"
  ensure_tls
  render "$HERE/kafka/server.properties" "$KAFKA_DIR/server.properties" "$KAFKA_DIR"
  cp "$HERE/kafka/log4j2.properties" "$KAFKA_DIR/log4j2.properties"
  if [ ! -f "$KAFKA_DIR/data/meta.properties" ]; then
    log "formatting KRaft storage"
    kafka_java kafka.tools.StorageTool format --standalone -t "$(kafka_java kafka.tools.StorageTool random-uuid 2>/dev/null | tail -1)" \
      -c "$KAFKA_DIR/server.properties" >"$KAFKA_DIR/logs/format.log" 2>&1 \
      || die "kafka storage format failed; see $KAFKA_DIR/logs/format.log"
  fi
  log "starting kafka on 127.0.0.1:$KAFKA_PORT"
  nohup java -Xms512m -Xmx1g -XX:+UseG1GC -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$KAFKA_DIR/log4j2.properties" -Dkafka.logs.dir="$KAFKA_DIR/logs" \
    -cp "$KAFKA_LIBS/*" kafka.Kafka "$KAFKA_DIR/server.properties" >"$KAFKA_DIR/logs/stdout.log" 2>&1 &
  echo $! > "$KAFKA_DIR/pid"
}

start_clickhouse() {
  if pid_alive "$CH_DIR/pid"; then log "clickhouse already running (pid $(cat "$CH_DIR/pid"))"; return; fi
  check_port_free "$CH_HTTP_PORT" "ClickHouse HTTP"
  check_port_free "$CH_TCP_PORT" "ClickHouse native TCP"
  mkdir -p "$CH_DIR"/{data,tmp,log,user_files,format_schemas}
  render "$HERE/clickhouse/config.xml" "$CH_DIR/config.xml" "$CH_DIR"
  render "$HERE/clickhouse/users.xml" "$CH_DIR/users.xml" "$CH_DIR"
  log "starting clickhouse on 127.0.0.1:$CH_HTTP_PORT"
  # exec: the recorded pid is the server itself, so stop can end exactly it.
  (cd "$CH_DIR" || exit 1; exec nohup /usr/sbin/clickhouse-server --config-file="$CH_DIR/config.xml" \
    >"$CH_DIR/log/stdout.log" 2>&1) &
  echo $! > "$CH_DIR/pid"
}

kafka_ready() {
  port_open "$KAFKA_PORT" && kafka_java org.apache.kafka.tools.TopicCommand \
    --bootstrap-server "127.0.0.1:$KAFKA_PORT" --list >/dev/null 2>&1
}
clickhouse_ready() { [ "$(curl -s -m 2 "http://127.0.0.1:$CH_HTTP_PORT/ping" 2>/dev/null)" = "Ok." ]; }

wait_ready() {
  local deadline=$((SECONDS + START_TIMEOUT_SECS)) k=0 c=0
  while [ $SECONDS -lt $deadline ]; do
    [ $c = 1 ] || { clickhouse_ready && c=1 && log "clickhouse answers"; } || true
    [ $k = 1 ] || { port_open "$KAFKA_PORT" && kafka_ready && k=1 && log "kafka answers" && ensure_scram_user; } || true
    [ $k = 1 ] && [ $c = 1 ] && return 0
    pid_alive "$KAFKA_DIR/pid" || die "kafka exited during start; see $KAFKA_DIR/logs/server.log and stdout.log"
    pid_alive "$CH_DIR/pid" || die "clickhouse exited during start; see $CH_DIR/log/clickhouse-server.err.log"
    sleep 1
  done
  die "stack not ready after ${START_TIMEOUT_SECS}s (kafka=$k clickhouse=$c); see logs under $LOCAL"
}

stop_one() { # name pidfile
  if pid_alive "$2"; then
    local pid; pid="$(cat "$2")"
    log "stopping $1 (pid $pid)"
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -0 "$pid" 2>/dev/null && { log "$1 did not stop in 30s, killing"; kill -9 "$pid" 2>/dev/null || true; }
  fi
  rm -f "$2"
}

status() {
  local rc=0
  if clickhouse_ready; then echo "clickhouse: up (http 127.0.0.1:$CH_HTTP_PORT)"; else echo "clickhouse: down"; rc=1; fi
  if port_open "$KAFKA_PORT"; then echo "kafka: up (127.0.0.1:$KAFKA_PORT)"; else echo "kafka: down"; rc=1; fi
  "$HERE/prometheus.sh" status || rc=1  # Prometheus scraping the pipeline (prometheus.sh)
  return $rc
}

case "${1:-}" in
  install) install; "$HERE/prometheus.sh" install ;;
  start)
    install
    if clickhouse_ready && port_open "$KAFKA_PORT" && ! pid_alive "$KAFKA_DIR/pid" && ! pid_alive "$CH_DIR/pid"; then
      log "kafka and clickhouse already answer on their ports (started elsewhere); using them"
      "$HERE/prometheus.sh" start; exit 0
    fi
    start_clickhouse; start_kafka; wait_ready; "$HERE/prometheus.sh" start; status ;;
  stop) "$HERE/prometheus.sh" stop; stop_one kafka "$KAFKA_DIR/pid"; stop_one clickhouse "$CH_DIR/pid" ;;
  status) status ;;
  reset) "$HERE/prometheus.sh" stop; stop_one kafka "$KAFKA_DIR/pid"; stop_one clickhouse "$CH_DIR/pid"; rm -rf "$KAFKA_DIR/data" "$CH_DIR" "$LOCAL/prometheus" ;;
  kafka-tool) shift; kafka_java "$@" ;;
  # ClickHouse alone (failure tests: stop and start it while the pipeline runs).
  stop-clickhouse) stop_one clickhouse "$CH_DIR/pid" ;;
  start-clickhouse)
    start_clickhouse
    deadline=$((SECONDS + START_TIMEOUT_SECS))
    until clickhouse_ready; do
      [ $SECONDS -lt $deadline ] || die "clickhouse not ready after ${START_TIMEOUT_SECS}s; see $CH_DIR/log/clickhouse-server.err.log"
      pid_alive "$CH_DIR/pid" || die "clickhouse exited during start; see $CH_DIR/log/clickhouse-server.err.log"
      sleep 0.5
    done
    log "clickhouse answers" ;;
  # The Kafka broker alone (fault drills: restart it while the pipeline runs).
  stop-kafka) stop_one kafka "$KAFKA_DIR/pid" ;;
  start-kafka)
    start_kafka
    deadline=$((SECONDS + START_TIMEOUT_SECS))
    until kafka_ready; do
      [ $SECONDS -lt $deadline ] || die "kafka not ready after ${START_TIMEOUT_SECS}s; see $KAFKA_DIR/logs/server.log"
      pid_alive "$KAFKA_DIR/pid" || die "kafka exited during start; see $KAFKA_DIR/logs/server.log and stdout.log"
      sleep 0.5
    done
    log "kafka answers" ;;
  *) echo "usage: $0 install|start|stop|status|reset|stop-clickhouse|start-clickhouse|stop-kafka|start-kafka|kafka-tool CLASS ARGS..." >&2; exit 2 ;;
esac
