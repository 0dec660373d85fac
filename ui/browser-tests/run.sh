#!/usr/bin/env bash
# Browser tests of the operator UI, from a fresh clone: installs Chromium and
# playwright-core when absent, starts its own 3-node dev cluster on free
# loopback ports with the already-built binary, runs run.mjs against a
# follower's UI, and stops every process it started. Exits non-zero on any
# failure. Screenshots go to target/ui-screenshots/.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
BIN="$TARGET/debug/engine-room"
SHOT_DIR="${SHOT_DIR:-$TARGET/ui-screenshots}"
# 32 bytes or more, like any token outside a weak-secrets escape hatch.
TOKEN="ui-test-$(od -An -N24 -tx1 /dev/urandom | tr -d " \n")"
export DEBIAN_FRONTEND=noninteractive

if [ ! -x /usr/bin/chromium ]; then
  echo "== installing chromium"
  apt-get update -qq && apt-get install -y -qq chromium >/dev/null
fi
if ! command -v node >/dev/null 2>&1; then
  echo "== installing nodejs"
  apt-get update -qq && apt-get install -y -qq nodejs npm >/dev/null
fi
if [ ! -d "$HERE/node_modules/playwright-core" ]; then
  echo "== npm ci (playwright-core)"
  (cd "$HERE" && npm ci --no-audit --no-fund --loglevel=error)
fi
# Always through cargo, so a stale binary is rebuilt (a no-op when fresh). The
# same selection as chaos-tests' binary() (BUILD_ARGS in chaos-tests/src/lib.rs),
# so that it is the build `cargo nextest run --workspace` made (same profile,
# same dependency features) and nothing is rebuilt for a difference of those.
echo "== building engine-room (cargo build, a no-op when fresh)"
(cd "$ROOT" && cargo build -q --profile test --workspace --bin engine-room --examples)

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
BASE_PORT=""
for base in 7301 7331 7361 7391 7421 7451 7481; do
  if ! port_busy "$base" && ! port_busy $((base + 1)) && ! port_busy $((base + 2)); then
    BASE_PORT=$base
    break
  fi
done
[ -n "$BASE_PORT" ] || { echo "no free port range for the test cluster"; exit 1; }

WORK="$(mktemp -d)"
DEV_PID=""
NODE_PIDS_LIST=""
cleanup() {
  local rc=$?
  if [ -n "$DEV_PID" ] && kill -0 "$DEV_PID" 2>/dev/null; then
    kill -TERM "$DEV_PID" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$DEV_PID" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$DEV_PID" 2>/dev/null || true
  fi
  # The node processes are the dev process's children; make sure none is left
  # (also thaws any the test froze).
  for pid in $NODE_PIDS_LIST; do
    if kill -0 "$pid" 2>/dev/null; then
      kill -CONT "$pid" 2>/dev/null || true
      kill -KILL "$pid" 2>/dev/null || true
    fi
  done
  if [ "$rc" -ne 0 ]; then
    echo "== browser tests failed (exit $rc); node logs:"
    for f in "$WORK"/cluster/node-*.log "$WORK"/dev.log; do
      [ -f "$f" ] && { echo "--- $f (last 25 lines)"; tail -n 25 "$f"; }
    done
  fi
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT

echo "== starting a 3-node dev cluster on 127.0.0.1:$BASE_PORT-$((BASE_PORT + 2))"
"$BIN" dev --base-port "$BASE_PORT" --dir "$WORK/cluster" --fresh --workers 60 --token "$TOKEN" >"$WORK/dev.log" 2>&1 &
DEV_PID=$!

api() { curl -fsS --max-time 3 -H "Authorization: Bearer $TOKEN" "$@"; }
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
NODE_PIDS_LIST="$(pgrep -P "$DEV_PID" || true)"
NODE_PIDS=""
for pid in $NODE_PIDS_LIST; do
  id="$(tr '\0' '\n' <"/proc/$pid/environ" | sed -n 's/^ENGINE_NODE_ID=//p')"
  [ -n "$id" ] && NODE_PIDS="$NODE_PIDS${NODE_PIDS:+,}$id:$pid"
done

STATUS="$(api "http://127.0.0.1:$BASE_PORT/api/cluster/status")"
read -r LEADER_ID FOLLOWER_ID FOLLOWER_URL LEADER_URL < <(node -e '
  const s = JSON.parse(process.argv[1]);
  const leader = s.nodes.find((n) => n.id === s.leader_id);
  const follower = s.nodes.find((n) => n.id !== s.leader_id && n.voter && n.healthy);
  if (!leader || !follower) { console.error("no leader/follower in " + process.argv[1]); process.exit(1); }
  console.log(leader.id, follower.id, follower.addr, leader.addr);
' "$STATUS")
[ -n "${FOLLOWER_URL:-}" ] || { echo "could not find a leader and a follower"; exit 1; }
echo "== leader: node $LEADER_ID ($LEADER_URL); testing the UI of follower node $FOLLOWER_ID ($FOLLOWER_URL)"
echo "== node processes: $NODE_PIDS"

# Give the simulator a few heartbeats so the UI has healthy workers to show.
for _ in $(seq 1 40); do
  n="$( (api "$FOLLOWER_URL/api/workers?heartbeat_state=healthy&limit=1" |
    node -e 'let d="";process.stdin.on("data",c=>d+=c).on("end",()=>console.log(JSON.parse(d).total))') 2>/dev/null || echo 0)"
  [ "${n:-0}" -ge 20 ] && break
  sleep 0.5
done

mkdir -p "$SHOT_DIR"
UI_URL="$FOLLOWER_URL" API_URL="$LEADER_URL" TOKEN="$TOKEN" SHOT_DIR="$SHOT_DIR" \
  NODE_PIDS="$NODE_PIDS" FOLLOWER_ID="$FOLLOWER_ID" SCALE_WORKERS="${SCALE_WORKERS:-10000}" \
  node "$HERE/run.mjs"
