#!/usr/bin/env bash
# Instructions per heartbeat of one or more Engine Room builds, counted by
# valgrind's callgrind on a single-node cluster at a fixed, low rate: the
# count does not move with the neighbours' load, so on a shared, noisy
# machine it shows a change of a few percent on the heartbeat's request path
# (HTTP, auth, limits, parse, propose, apply) that a throughput A/B cannot.
# It leaves out replication (no peers) and under-weights what batching
# amortises (each heartbeat is nearly its own batch), so it complements
# bench/ab.sh rather than replacing it. SHA-256 runs in software under
# valgrind (no SHA extensions), so peer signing would be overstated: one
# node has no peer traffic.
#
#   bench/instructions.sh /tmp/old/target/release target/release
#   RATE=100 DURATION=20 WORKERS=500 bench/instructions.sh DIR...
#
# Each DIR holds an `engine-room`; er-bench is taken from BIN_DIR.
set -euo pipefail
source "$(dirname "$0")/common.sh"

RATE=${RATE:-100}
DURATION=${DURATION:-20}
WORKERS=${WORKERS:-500}
(($# > 0)) || { echo "usage: bench/instructions.sh BUILD_DIR..." >&2; exit 2; }
[[ -x $BENCH_BIN ]] || { echo "missing $BENCH_BIN; run: cargo build --release -p bench" >&2; exit 2; }
if ! command -v valgrind >/dev/null; then
    log "installing Debian valgrind"
    apt-get update -qq && apt-get install -y -qq valgrind >/dev/null
fi

port=27401
url=http://127.0.0.1:$port
beats() {
    curl -fsS -m 5 -H "Authorization: Bearer $TOKEN" "$url/metrics" |
        awk '$1 ~ /^engine_room_heartbeats_received_total/ {print int($2)}'
}

printf '| build | heartbeats | instructions per heartbeat |\n| --- | ---: | ---: |\n'
for dir in "$@"; do
    [[ -x $dir/engine-room ]] || { echo "no executable $dir/engine-room" >&2; exit 2; }
    run=$WORK/run-$RANDOM
    mkdir -p "$run"
    # Slow Raft timing: the node runs some fifty times slower under valgrind.
    env ENGINE_RAFT_HEARTBEAT_MS=500 ENGINE_ELECTION_MIN_MS=6000 ENGINE_ELECTION_MAX_MS=9000 \
        ENGINE_NODE_ID=1 ENGINE_LISTEN=127.0.0.1:$port ENGINE_PEERS=1=$url ENGINE_DATA_DIR="$run/data" \
        CONTROL_PLANE_TOKEN=$TOKEN CLUSTER_SECRET=$CLUSTER_SECRET_VALUE TOKIO_WORKER_THREADS=1 \
        valgrind --tool=callgrind --callgrind-out-file="$run/cg" "$dir/engine-room" serve >>"$run/node.log" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    wait_http "$url/api/health/ready" 120
    # Register the workers first, so the measured heartbeats update records.
    "$BENCH_BIN" run --target engine-room --url "$url" --token "$TOKEN" -c 8 --workers "$WORKERS" \
        --rate "$RATE" --duration 10 --warmup 2 --quiet >"$run/warm.txt"
    callgrind_control -z "$pid" >/dev/null 2>&1
    b0=$(beats)
    "$BENCH_BIN" run --target engine-room --url "$url" --token "$TOKEN" -c 8 --workers "$WORKERS" \
        --rate "$RATE" --duration "$DURATION" --warmup 0 --quiet >"$run/bench.txt"
    b1=$(beats)
    callgrind_control -d "$pid" >/dev/null 2>&1
    sleep 2
    ir=$(callgrind_annotate "$run/cg.1" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
    stop_pid "$pid"
    printf '| %s | %d | %d |\n' "$dir" $((b1 - b0)) $((ir / (b1 - b0)))
done
