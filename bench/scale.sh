#!/usr/bin/env bash
# Scale check at WORKERS registered workers (default 100,000) on a fresh 3-node
# Engine Room: RSS per node, snapshot size and build time, GET /api/workers page
# latency, and how long a wiped follower takes to catch up by snapshot (idle,
# then again while heartbeats keep arriving at CATCHUP_RATE/s).
# Prints the figures and writes them into BENCHMARKS.md (section "Scale").
set -euo pipefail
source "$(dirname "$0")/common.sh"

WORKERS=${WORKERS:-100000}
CONNS=${CONNS:-64}
CATCHUP_RATE=${CATCHUP_RATE:-1000}
BASE=${BASE:-27100}
OUT=${OUT:-$ROOT/BENCHMARKS.md}
COMMAND="WORKERS=$WORKERS CONNS=$CONNS CATCHUP_RATE=$CATCHUP_RATE bench/scale.sh"
URLS="http://127.0.0.1:$((BASE + 1)),http://127.0.0.1:$((BASE + 2)),http://127.0.0.1:$((BASE + 3))"
need_binaries

api() { curl -fsS -m 5 -H "Authorization: Bearer $TOKEN" "$@"; }
status() { api "http://127.0.0.1:$((BASE + $1))/api/cluster/status"; }
# field N EXPR: evaluate a python expression over node N's cluster status `s`.
field() { status "$1" | python3 -c "import json,sys; s=json.load(sys.stdin); print($2)"; }
leader() { field 1 "s['leader_id']"; }
applied() { field "$1" "[n for n in s['nodes'] if n['id']==s['node_id']][0]['applied_index']"; }

log "starting 3 nodes on 127.0.0.1:$((BASE + 1))-$((BASE + 3))"
er_start_cluster "$BASE"

log "registering $WORKERS workers (one heartbeat each)"
"$BENCH_BIN" run --target engine-room --url "$URLS" --token "$TOKEN" -c "$CONNS" --workers "$WORKERS" \
    --requests "$WORKERS" --duration 600 --json "$WORK/register.json" --quiet
REGISTER=$(python3 -c "import json; r=json.load(open('$WORK/register.json')); print(f\"{r['ok']} registered in {r['measured_s']:.1f} s ({r['throughput_rps']:.0f}/s, p99 {r['latency_ms']['p99']:.1f} ms, errors {r['errors_total']})\")")
log "$REGISTER"
TOTAL=$(api "http://127.0.0.1:$((BASE + 1))/api/workers?limit=1" | python3 -c "import json,sys; print(json.load(sys.stdin)['total'])")

RSS_REG=""
for n in 1 2 3; do RSS_REG+="${RSS_REG:+ / }$(rss_mb "${ER_PID[$n]}")"; done
log "RSS MB after registration: $RSS_REG"

log "snapshot on every node"
for n in 1 2 3; do api -X POST "http://127.0.0.1:$((BASE + n))/api/cluster/snapshot" >/dev/null; done
sleep 3
SNAP=$(sed 's/\x1b\[[0-9;]*m//g' "$WORK"/er-*/node.log | grep -h 'snapshot built' | tail -3 | sed -E 's/.*bytes=([0-9]+).*encode_ms=([0-9.]+).*/\1 \2/' | sort -n | tail -1 || true)
SNAP=${SNAP:-0 ?}
SNAP_MB=$(awk -v b="${SNAP%% *}" 'BEGIN {printf "%.1f", b / 1048576}')
SNAP_MS=$(awk -v m="${SNAP##* }" 'BEGIN {printf "%.0f", m}')

RSS=""
for n in 1 2 3; do RSS+="${RSS:+ / }$(rss_mb "${ER_PID[$n]}")"; done
log "RSS MB: $RSS; snapshot ${SNAP_MB} MB"

log "GET /api/workers page latency (20 pages of 100, from node 2)"
PAGES=$(for i in $(seq 0 19); do
    curl -fsS -o /dev/null -w '%{time_total}\n' -H "Authorization: Bearer $TOKEN" \
        "http://127.0.0.1:$((BASE + 2))/api/workers?limit=100&offset=$((i * 4000))"
done | sort -n | awk '{a[NR]=$1*1000} END {printf "median %.1f ms, max %.1f ms", a[int((NR+1)/2)], a[NR]}')
log "page: $PAGES"

# catchup LABEL: kill -9 a follower, wipe it, restart it, and time until it has
# applied the index the leader had applied at the restart. Sets CATCHUP.
# With MODE=behind the follower keeps its data, but the leader takes in more
# than ENGINE_KEEP_LOGS entries and snapshots while it is down, so the restarted
# node also needs the snapshot (the SPEC §7 "restarted node" case).
catchup() {
    local label=$1 mode=${2:-wipe} lead f t0 target now i
    CATCHUP="timeout (>60 s)"
    lead=$(leader)
    for f in 3 2 1; do [[ $f != "$lead" ]] && break; done
    kill -9 "${ER_PID[$f]}" 2>/dev/null || true
    wait "${ER_PID[$f]}" 2>/dev/null || true
    if [[ $mode == wipe ]]; then
        rm -rf "$WORK/er-$f/data"
    else
        "$BENCH_BIN" run --target engine-room --url "http://127.0.0.1:$((BASE + lead))" --token "$TOKEN" -c 4 \
            --workers "$WORKERS" --requests 6000 --duration 60 --quiet >/dev/null
        api -X POST "http://127.0.0.1:$((BASE + lead))/api/cluster/snapshot" >/dev/null
        sleep 4
    fi
    target=$(applied "$lead")
    t0=$(date +%s.%N)
    er_start_node "$f" "$BASE"
    for i in $(seq 1200); do
        now=$(curl -fsS -m 1 -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$((BASE + f))/api/cluster/status" 2>/dev/null |
            python3 -c "import json,sys; s=json.load(sys.stdin); print([n for n in s['nodes'] if n['id']==s['node_id']][0]['applied_index'] or 0)" 2>/dev/null || echo 0)
        if (( now >= target )); then
            CATCHUP=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN {printf "%.2f s", b - a}')
            log "$label: node $f (leader $lead) applied $now >= $target after $CATCHUP"
            return 0
        fi
        (( $(date +%s) - ${t0%.*} > 60 )) && break
        sleep 0.05
    done
    log "$label: node $f did not catch up within 60 s"
}

log "catch-up, idle cluster"
catchup idle
CATCHUP_IDLE=$CATCHUP

log "catch-up of a restarted follower that fell behind the leader's purged log (no wipe)"
catchup behind behind
CATCHUP_BEHIND=$CATCHUP

log "catch-up while heartbeats arrive at $CATCHUP_RATE/s"
"$BENCH_BIN" run --target engine-room --url "$URLS" --token "$TOKEN" -c 16 --workers "$WORKERS" \
    --rate "$CATCHUP_RATE" --duration 40 --json "$WORK/during.json" --quiet &
LOAD_PID=$!
PIDS+=("$LOAD_PID")
sleep 3
catchup loaded
CATCHUP_LOAD=$CATCHUP
kill -TERM "$LOAD_PID" 2>/dev/null || true # er-bench stops on SIGTERM and still writes its summary
wait "$LOAD_PID" 2>/dev/null || true
DURING=$(python3 -c "import json; r=json.load(open('$WORK/during.json')); print(f\"{r['ok']} ok, errors {r['errors']}, p99 {r['latency_ms']['p99']:.1f} ms\")" 2>/dev/null || echo "load summary unavailable")

RSS_AFTER=""
for n in 1 2 3; do RSS_AFTER+="${RSS_AFTER:+ / }$(rss_mb "${ER_PID[$n]}")"; done

SECTION=$(cat <<MD
| figure | measured | target |
| --- | --- | --- |
| workers in state | $TOTAL | 100,000 |
| registration | $REGISTER | |
| RSS per node right after registration (MB) | $RSS_REG | < 300 |
| RSS per node after registration + snapshot (MB) | $RSS | < 300 |
| RSS per node at the end (MB) | $RSS_AFTER | < 300 |
| state-machine snapshot | ${SNAP_MB} MB, built in ${SNAP_MS} ms | |
| \`GET /api/workers?limit=100\` (20 pages, node 2) | $PAGES | |
| wiped follower catch-up, idle | ${CATCHUP_IDLE} | < 5 s |
| restarted follower (kept data, behind the purged log) catch-up | ${CATCHUP_BEHIND} | < 5 s |
| wiped follower catch-up, ${CATCHUP_RATE} heartbeats/s arriving | ${CATCHUP_LOAD} | < 5 s |
| heartbeat load during that catch-up | $DURING | |
MD
)
echo "$SECTION"
write_section "$OUT" scale "Scale: 100,000 workers" "$COMMAND" "$SECTION"
log "written to $OUT"
