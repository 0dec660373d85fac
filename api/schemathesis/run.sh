#!/usr/bin/env bash
# The OpenAPI document against the real thing: starts a throwaway 3-node dev
# cluster on loopback with the already-built binary, runs schemathesis with all
# its checks against one node's /openapi.json, and stops every process it
# started. Exits non-zero on any failure.
#
# Left out: the public health routes (no token, answers follow cluster state,
# not input) and the membership changes (/api/cluster/{learners,promote,remove}),
# which would take the throwaway cluster apart mid-run.
#
# Time limits fit the long poll: a job claim may wait up to 30 s (answered by
# ENGINE_REQUEST_TIMEOUT_MS - ENGINE_WRITE_TIMEOUT_MS - 1 s, 24 s by default),
# so requests may take 40 s and answers 35 s.
#
# One worker: CPython 3.11 before 3.11.8 can fail parsing in threads ("AST
# constructor recursion depth mismatch", gh-106905) inside hypothesis.
# SCHEMATHESIS_MAX_EXAMPLES (default 75) bounds the run, 1-2 min on 2 cores;
# SCHEMATHESIS_SEED makes a run repeatable. Reports go to target/schemathesis/.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
BIN="${ENGINE_ROOM_BIN:-$TARGET/debug/engine-room}"
REPORT_DIR="${REPORT_DIR:-$TARGET/schemathesis}"
MAX_EXAMPLES="${SCHEMATHESIS_MAX_EXAMPLES:-75}"
SCHEMATHESIS_VERSION="4.32.5"
# 32 bytes or more, like any token outside a weak-secrets escape hatch.
TOKEN="st-test-$(od -An -N24 -tx1 /dev/urandom | tr -d " \n")"

if ! command -v schemathesis >/dev/null 2>&1; then
  echo "== installing schemathesis $SCHEMATHESIS_VERSION"
  python3 -m pip install --quiet "schemathesis==$SCHEMATHESIS_VERSION"
fi
if [ ! -x "$BIN" ]; then
  echo "== building engine-room"
  (cd "$ROOT" && cargo build -p node --bin engine-room)
fi

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
BASE_PORT=""
for base in 7511 7541 7571 7601 7631 7661 7691; do
  if ! port_busy "$base" && ! port_busy $((base + 1)) && ! port_busy $((base + 2)); then
    BASE_PORT=$base
    break
  fi
done
[ -n "$BASE_PORT" ] || { echo "no free port range for the test cluster"; exit 1; }

WORK="$(mktemp -d)"
DEV_PID=""
NODE_PIDS=""
cleanup() {
  local rc=$?
  if [ -n "$DEV_PID" ] && kill -0 "$DEV_PID" 2>/dev/null; then
    kill -TERM "$DEV_PID" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$DEV_PID" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$DEV_PID" 2>/dev/null || true
  fi
  # The nodes are the dev process's children; make sure none is left.
  for pid in $NODE_PIDS; do
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
  done
  if [ "$rc" -ne 0 ]; then
    echo "== schemathesis run failed (exit $rc); node logs:"
    for f in "$WORK"/cluster/node-*.log "$WORK"/dev.log; do
      [ -f "$f" ] && { echo "--- $f (last 15 lines)"; tail -n 15 "$f"; }
    done
  fi
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT

echo "== starting a 3-node dev cluster on 127.0.0.1:$BASE_PORT-$((BASE_PORT + 2))"
# Generous Raft timing: the fuzzer loads a 2-core machine (snapshots on
# demand included), and an election mid-run answers a legitimate 503 that
# the server-error check would count.
export ENGINE_RAFT_HEARTBEAT_MS=${ENGINE_RAFT_HEARTBEAT_MS:-150} ENGINE_ELECTION_MIN_MS=${ENGINE_ELECTION_MIN_MS:-1000} \
  ENGINE_ELECTION_MAX_MS=${ENGINE_ELECTION_MAX_MS:-2000}
# Its authentication checks send wrong credentials on purpose, all from one
# address; the failed-authentication limit (tested in chaos-tests/tests/
# security.rs) would then refuse the rest of the run.
export ENGINE_AUTH_FAIL_BURST=${ENGINE_AUTH_FAIL_BURST:-1000000}
"$BIN" dev --base-port "$BASE_PORT" --dir "$WORK/cluster" --fresh --workers 12 --token "$TOKEN" >"$WORK/dev.log" 2>&1 &
DEV_PID=$!
for i in $(seq 1 120); do
  ready=0
  for n in 0 1 2; do
    curl -fsS --max-time 2 "http://127.0.0.1:$((BASE_PORT + n))/api/health/ready" >/dev/null 2>&1 && ready=$((ready + 1))
  done
  [ "$ready" -eq 3 ] && break
  kill -0 "$DEV_PID" 2>/dev/null || { echo "dev cluster exited"; exit 1; }
  [ "$i" -eq 120 ] && { echo "cluster not ready after 60 s"; exit 1; }
  sleep 0.5
done
NODE_PIDS="$(pgrep -P "$DEV_PID" || true)"

# A follower's document and API: every write is forwarded to the leader.
URL="http://127.0.0.1:$((BASE_PORT + 1))"
mkdir -p "$REPORT_DIR"
echo "== schemathesis $(schemathesis --version | awk '{print $NF}') against $URL (max $MAX_EXAMPLES examples per operation)"
start=$(date +%s)
# NO_PROXY: a proxy in the environment is not for the loopback cluster. Run
# from the scratch dir, so hypothesis' and schemathesis' caches land there.
cd "$WORK"
NO_PROXY=127.0.0.1 no_proxy=127.0.0.1 timeout 600 schemathesis run "$URL/openapi.json" \
  --checks all \
  --header "Authorization: Bearer $TOKEN" \
  --exclude-path-regex '^/api/(health/|cluster/(learners|promote|remove)$)' \
  --max-examples "$MAX_EXAMPLES" \
  --request-timeout 40 \
  --max-response-time 35 \
  --workers 1 \
  --generation-database none \
  ${SCHEMATHESIS_SEED:+--seed "$SCHEMATHESIS_SEED"} \
  --no-color \
  --report junit --report-dir "$REPORT_DIR"
echo "== schemathesis passed in $(($(date +%s) - start)) s"
