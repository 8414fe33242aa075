#!/usr/bin/env bash
# Checks of deploy/local/stack.sh against the running stack: start and status are idempotent,
# and a taken port is refused with a message that names it. Run by tests/run.sh.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
S="$ROOT/deploy/local/stack.sh"
fail() { echo "stack_test: FAIL: $*" >&2; exit 1; }

"$S" start >/tmp/stack_test.$$ 2>&1 || fail "a second start failed: $(cat /tmp/stack_test.$$)"
grep -qE "already (running|answer)" /tmp/stack_test.$$ || fail "a second start did not say the stack was already up"
"$S" status >/dev/null || fail "status is not 0 on a running stack"
"$S" status >/dev/null || fail "status is not idempotent"
echo "ok - start and status are idempotent"

# A port that something else holds: start must refuse and name it, starting nothing.
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
python3 -c "import socket,time; s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('127.0.0.1',$port)); s.listen(); time.sleep(30)" &
holder=$!
trap 'kill $holder 2>/dev/null || true; rm -f /tmp/stack_test.$$' EXIT
for _ in $(seq 1 50); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
tmp=$(mktemp -d)
set +e
FEEDBACK_LOCAL_DIR="$tmp" FEEDBACK_KAFKA_LIBS="$ROOT/.local/kafka/libs" CLICKHOUSE_HTTP_PORT=$port CLICKHOUSE_TCP_PORT=1 \
  KAFKA_PORT=2 KAFKA_CONTROLLER_PORT=3 "$S" start >/tmp/stack_test.$$ 2>&1
rc=$?
set -e
# Should start have started anything after all, stop it before failing.
[ $rc -ne 0 ] || FEEDBACK_LOCAL_DIR="$tmp" "$S" stop >/dev/null 2>&1 || true
rm -rf "$tmp"
[ $rc -ne 0 ] || fail "start succeeded although port $port was taken"
grep -q "port 127.0.0.1:$port is already taken by another process (wanted for ClickHouse HTTP)" /tmp/stack_test.$$ \
  || fail "unexpected message: $(cat /tmp/stack_test.$$)"
echo "ok - a taken port is refused by name"
