#!/usr/bin/env bash
# Side-by-side heartbeat ingest: a 3-member etcd (v3 JSON gateway), a 3-node
# Engine Room and a no-op HTTP ceiling, one after the other on this machine,
# loaded by the same er-bench with the same duration, connections and payload.
# Prints one table and writes it into BENCHMARKS.md (section "Heartbeat ingest").
# ROUNDS rounds run the three targets in turn (etcd, Engine Room, no-op, then
# again), each from empty data dirs; the table shows each target's median
# round, so a swing in the machine's load hits all three alike.
#
#   bench/compare.sh                      # defaults below
#   DURATION=30 CONNS=128 bench/compare.sh
set -euo pipefail
source "$(dirname "$0")/common.sh"

DURATION=${DURATION:-15}
WARMUP=${WARMUP:-3}
CONNS=${CONNS:-64}
WORKERS=${WORKERS:-10000}
THREADS=${THREADS:-1}
RATE=${RATE:-}
ROUNDS=${ROUNDS:-3}
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || { echo "ROUNDS must be a whole number of at least 1, got '$ROUNDS'" >&2; exit 2; }
OUT=${OUT:-$ROOT/BENCHMARKS.md}
COMMAND="DURATION=$DURATION WARMUP=$WARMUP CONNS=$CONNS WORKERS=$WORKERS THREADS=$THREADS ROUNDS=$ROUNDS${RATE:+ RATE=$RATE} bench/compare.sh"

need_binaries
ensure_etcd

load() { # load TARGET JSON_OUT URL...
    local target=$1 out=$2
    shift 2
    local urls
    urls=$(IFS=,; echo "$*")
    log "loading $target: $DURATION s + $WARMUP s warm-up, $CONNS connections, $WORKERS workers"
    "$BENCH_BIN" run --target "$target" --url "$urls" --token "$TOKEN" -c "$CONNS" --workers "$WORKERS" \
        --duration "$DURATION" --warmup "$WARMUP" --threads "$THREADS" ${RATE:+--rate "$RATE"} \
        --json "$out" --quiet
}

for round in $(seq "$ROUNDS"); do
    log "round $round of $ROUNDS"
    log "etcd: 3 members on 127.0.0.1:23791-23793"
    etcd_start_cluster 23790
    load etcd "$WORK/etcd-$round.json" http://127.0.0.1:23791 http://127.0.0.1:23792 http://127.0.0.1:23793
    etcd_stop_cluster

    log "engine-room: 3 nodes on 127.0.0.1:27001-27003"
    er_start_cluster 27000
    load engine-room "$WORK/engine-room-$round.json" http://127.0.0.1:27001 http://127.0.0.1:27002 http://127.0.0.1:27003
    for n in 1 2 3; do printf '%s ' "$(rss_mb "${ER_PID[$n]}")"; done >"$WORK/engine-room-rss-$round"
    er_stop_cluster

    log "noop ceiling on 127.0.0.1:28080"
    "$BENCH_BIN" noop-server --listen 127.0.0.1:28080 >"$WORK/noop.log" 2>&1 &
    NOOP_PID=$!
    PIDS+=("$NOOP_PID")
    wait_http http://127.0.0.1:28080/ 10 || true
    load noop "$WORK/noop-$round.json" http://127.0.0.1:28080
    stop_pid "$NOOP_PID"
    # The next round starts from empty data; KEEP_WORK=1 keeps each round's.
    for d in "$WORK"/etcd-[0-9] "$WORK"/er-[0-9]; do
        if [[ ${KEEP_WORK:-0} == 1 ]]; then mv "$d" "$d.round-$round"; else rm -rf "$d"; fi
    done
done

SECTION=$(python3 - "$WORK" "$COMMAND" "$ROUNDS" <<'PY'
import json, sys
from collections import Counter
work, command, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
targets = ("etcd", "engine-room", "noop")
every = {t: [json.load(open(f"{work}/{t}-{r}.json")) for r in range(1, rounds + 1)] for t in targets}
# Each target's median round by throughput (the lower middle for an even count).
median = {t: sorted(range(rounds), key=lambda i: rs[i]["throughput_rps"])[(rounds - 1) // 2] for t, rs in every.items()}
runs = {t: every[t][median[t]] for t in targets}
rss = open(f"{work}/engine-room-rss-{median['engine-room'] + 1}").read().split()
etcd, ceil = runs["etcd"]["throughput_rps"], runs["noop"]["throughput_rps"]
rows = ["| target | heartbeats/s | p50 ms | p99 ms | p99.9 ms | errors | × etcd | share of no-op ceiling |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
for t in targets:
    r = runs[t]; l = r["latency_ms"]
    errs = sum(x["errors_total"] for x in every[t])
    kinds = ", ".join(f"{k} {n}" for k, n in sum((Counter(x["errors"]) for x in every[t]), Counter()).items())
    rows.append(f"| {t} | {r['throughput_rps']:.0f} | {l['p50']:.2f} | {l['p99']:.2f} | {l['p999']:.2f} | "
                f"{errs}{' (' + kinds + ')' if kinds else ''} | {r['throughput_rps'] / etcd:.2f} | "
                f"{100 * r['throughput_rps'] / ceil:.0f}% |")
e = runs["engine-room"]
print("\n".join(rows))
print()
print(f"Engine Room vs etcd: {e['throughput_rps'] / etcd:.2f}× throughput (target ≥ 3×), "
      f"p99 {e['latency_ms']['p99']:.2f} ms vs {runs['etcd']['latency_ms']['p99']:.2f} ms (target: no worse), "
      f"{100 * e['throughput_rps'] / ceil:.0f}% of the no-op ceiling (target ≥ 20%).")
print(f"Mode {e['mode']}, {e['connections']} connections, {e['workers']} workers, "
      f"{e['measured_s']:.1f} s measured after {e['warmup_s']:.0f} s warm-up; "
      f"request body {e['body_bytes']:.0f} B (etcd: {runs['etcd']['body_bytes']:.0f} B, the same JSON base64-encoded in the gateway envelope). "
      f"Engine Room RSS after {'its median round' if rounds > 1 else 'the run'}: {' / '.join(rss)} MB.")
if rounds > 1:
    print()
    print(f"Rows are each target's median of {rounds} rounds (errors: all rounds); "
          "each round ran etcd, Engine Room and no-op in turn. Per round, heartbeats/s "
          "etcd / engine-room / no-op (× etcd, share of ceiling):")
    for i in range(rounds):
        e_, r_, n_ = (every[t][i]["throughput_rps"] for t in targets)
        print(f"- round {i + 1}: {e_:.0f} / {r_:.0f} / {n_:.0f} ({r_ / e_:.2f}×, {100 * r_ / n_:.0f}%)")
PY
)
echo
echo "$SECTION"

# CONNS other than the default get their own section, so runs at several
# concurrencies stand side by side in BENCHMARKS.md.
if [[ $CONNS == 64 ]]; then ID=compare TITLE_C=""; else ID=compare-c$CONNS TITLE_C=" ($CONNS connections)"; fi
write_section "$OUT" "$ID" "Heartbeat ingest: Engine Room vs etcd vs no-op$TITLE_C" "$COMMAND" "$SECTION"
log "written to $OUT"
