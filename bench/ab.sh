#!/usr/bin/env bash
# A/B of two Engine Room builds under compare.sh's heartbeat load: the two
# 3-node clusters take turns (A, B, A, B, ...), each round from empty data,
# loaded by the same er-bench with the same duration and connections. Prints
# each round's heartbeats/s and p99, the medians, and B / A, and the nodes'
# CPU time per heartbeat received (user + system of the three processes over
# the round, over the heartbeats their /metrics counted): on a shared, noisy
# machine throughput moves with the neighbours' load, CPU per heartbeat much
# less, so it is the steadier figure for "did B make a heartbeat dearer". The builds are
# directories holding `engine-room` (for example target/release of two
# checkouts); er-bench is taken from BIN_DIR (default target/release).
#
#   A=/tmp/old/target/release B=target/release bench/ab.sh
#   PAIRS=4 DURATION=12 CONNS=64 A=... B=... bench/ab.sh
#   TLS_DIR=/tmp/certs A=... B=... bench/ab.sh   # both over HTTPS (certs init --nodes 3 --out DIR)
set -euo pipefail
source "$(dirname "$0")/common.sh"

DURATION=${DURATION:-12}
WARMUP=${WARMUP:-3}
CONNS=${CONNS:-64}
WORKERS=${WORKERS:-10000}
PAIRS=${PAIRS:-3}
[[ $PAIRS =~ ^[1-9][0-9]*$ ]] || { echo "PAIRS must be a whole number of at least 1, got '$PAIRS'" >&2; exit 2; }
: "${A:?set A to the directory of build A's engine-room}" "${B:?set B to the directory of build B's engine-room}"
for d in "$A" "$B"; do [[ -x $d/engine-room ]] || { echo "no executable $d/engine-room" >&2; exit 2; }; done
[[ -x $BENCH_BIN ]] || { echo "missing $BENCH_BIN; run: cargo build --release -p bench" >&2; exit 2; }

# User + system CPU ticks of the running cluster's three processes.
cluster_cpu_ticks() {
    local n total=0 f
    for n in 1 2 3; do
        read -ra f <"/proc/${ER_PID[$n]}/stat"
        # Fields 14 and 15 (utime, stime); the command name (field 2) has no spaces here.
        total=$((total + f[13] + f[14]))
    done
    echo "$total"
}

# Heartbeats the three nodes received from clients (their /metrics counters).
cluster_heartbeats() {
    local base=$1 n total=0 v
    for n in 1 2 3; do
        v=$(curl -fsS -m 2 ${TLS_DIR:+--cacert "$TLS_DIR/ca.pem"} -H "Authorization: Bearer $TOKEN" \
            "$ER_SCHEME://127.0.0.1:$((base + n))/metrics" | awk '$1 ~ /^engine_room_heartbeats_received_total/ {print int($2)}')
        total=$((total + ${v:-0}))
    done
    echo "$total"
}

for pair in $(seq "$PAIRS"); do
    for side in A B; do
        ER_BIN=${!side}/engine-room
        log "pair $pair of $PAIRS, build $side ($ER_BIN)"
        er_start_cluster 27100
        cpu0=$(cluster_cpu_ticks); beats0=$(cluster_heartbeats 27100)
        "$BENCH_BIN" run --target engine-room ${TLS_DIR:+--ca "$TLS_DIR/ca.pem"} \
            --url $ER_SCHEME://127.0.0.1:27101,$ER_SCHEME://127.0.0.1:27102,$ER_SCHEME://127.0.0.1:27103 \
            --token "$TOKEN" -c "$CONNS" --workers "$WORKERS" --duration "$DURATION" --warmup "$WARMUP" \
            --json "$WORK/$side-$pair.json" --quiet
        cpu1=$(cluster_cpu_ticks); beats1=$(cluster_heartbeats 27100)
        echo "{\"ticks\": $((cpu1 - cpu0)), \"hz\": $(getconf CLK_TCK), \"beats\": $((beats1 - beats0))}" \
            >"$WORK/$side-$pair.cpu.json"
        er_stop_cluster
        rm -rf "$WORK"/er-[0-9]
    done
done

python3 - "$WORK" "$PAIRS" <<'PY'
import json, statistics, sys
work, pairs = sys.argv[1], int(sys.argv[2])
runs = {s: [json.load(open(f"{work}/{s}-{p}.json")) for p in range(1, pairs + 1)] for s in "AB"}
cpu = {s: [json.load(open(f"{work}/{s}-{p}.cpu.json")) for p in range(1, pairs + 1)] for s in "AB"}
def us_per_beat(c):
    return c["ticks"] / c["hz"] * 1e6 / max(c["beats"], 1)
print("| pair | A heartbeats/s | B heartbeats/s | B / A | A p99 ms | B p99 ms | A CPU µs/beat | B CPU µs/beat | B / A |")
print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
for i in range(pairs):
    a, b = runs["A"][i], runs["B"][i]
    ca, cb = us_per_beat(cpu["A"][i]), us_per_beat(cpu["B"][i])
    print(f"| {i + 1} | {a['throughput_rps']:.0f} | {b['throughput_rps']:.0f} | "
          f"{b['throughput_rps'] / a['throughput_rps']:.3f} | {a['latency_ms']['p99']:.2f} | {b['latency_ms']['p99']:.2f} | "
          f"{ca:.0f} | {cb:.0f} | {cb / ca:.3f} |")
cmed = {s: statistics.median(us_per_beat(c) for c in cpu[s]) for s in "AB"}
print(f"\nCPU per heartbeat (median): A {cmed['A']:.0f} µs, B {cmed['B']:.0f} µs, B / A = {cmed['B'] / cmed['A']:.3f}.")
med = {s: statistics.median(r["throughput_rps"] for r in runs[s]) for s in "AB"}
p99 = {s: statistics.median(r["latency_ms"]["p99"] for r in runs[s]) for s in "AB"}
errs = {s: sum(r["errors_total"] for r in runs[s]) for s in "AB"}
print(f"\nMedians: A {med['A']:.0f}/s, B {med['B']:.0f}/s, B / A = {med['B'] / med['A']:.3f}; "
      f"p99 A {p99['A']:.2f} ms, B {p99['B']:.2f} ms; errors A {errs['A']}, B {errs['B']}.")
PY
