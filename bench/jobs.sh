#!/usr/bin/env bash
# Jobs (issue 20): the same job workload on a 3-node Engine Room and on a
# Postgres queue (`SELECT … FOR UPDATE SKIP LOCKED`, synchronous_commit=on,
# fsync on; Debian's postgresql, installed with apt-get when missing), one
# after the other on this machine: PRODUCERS producers enqueue JOBS jobs one
# at a time, WORKERS workers claim (CLAIM_BATCH per claim) and complete them,
# bounded by MAX_TIME seconds. Prints a side-by-side table (end-to-end jobs/s,
# enqueue-to-claim latency p50/p99) and writes it into BENCHMARKS.md.
#
#   bench/jobs.sh                          # defaults below
#   PRODUCERS=16 WORKERS=16 JOBS=50000 bench/jobs.sh
#   MODE=fill bench/jobs.sh                # 1,000,000 queued jobs, RSS per node
#
# Needs the release binaries: cargo build --release -p node -p bench
set -euo pipefail
source "$(dirname "$0")/common.sh"

MODE=${MODE:-compare}
PRODUCERS=${PRODUCERS:-8}
WORKERS=${WORKERS:-8}
JOBS=${JOBS:-20000}
MAX_TIME=${MAX_TIME:-120}
CLAIM_BATCH=${CLAIM_BATCH:-1}
# 1: a worker completes the last job of its batch and claims the next batch
# in one call (Engine Room: `next` on the complete; Postgres: one transaction).
COMPLETE_NEXT=${COMPLETE_NEXT:-0}
FILL_JOBS=${FILL_JOBS:-1000000}
PG_PORT=${PG_PORT:-25432}
OUT=${OUT:-$ROOT/BENCHMARKS.md}

need_binaries

# Postgres as the postgres user, in the work dir, on loopback only.
ensure_postgres() {
    if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
        log "installing Debian postgresql"
        apt-get update -qq && apt-get install -y -qq postgresql >/dev/null
    fi
    PG_BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
}

pg_start() {
    local dir=$WORK/pg
    chmod 711 "$WORK"
    mkdir -p "$dir"
    chown postgres:postgres "$dir"
    setpriv --reuid=postgres --regid=postgres --init-groups "$PG_BIN/initdb" -D "$dir/data" -A trust -U bench \
        >"$WORK/pg-initdb.log" 2>&1
    # Durable commits, as Engine Room's (a commit is acknowledged once its WAL is flushed).
    setpriv --reuid=postgres --regid=postgres --init-groups "$PG_BIN/postgres" -D "$dir/data" \
        -c listen_addresses=127.0.0.1 -p "$PG_PORT" -c unix_socket_directories="$dir" \
        -c synchronous_commit=on -c fsync=on -c full_page_writes=on -c max_connections=300 \
        -c shared_buffers=256MB >>"$WORK/pg.log" 2>&1 &
    PG_PID=$!
    PIDS+=("$PG_PID")
    for _ in $(seq 100); do
        "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" && break
        sleep 0.2
    done
    "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" || { cat "$WORK/pg.log" >&2; exit 1; }
    setpriv --reuid=postgres --regid=postgres --init-groups "$PG_BIN/createdb" -h 127.0.0.1 -p "$PG_PORT" -U bench jobs
}

jobs_load() { # jobs_load TARGET JSON URL
    log "$1: $PRODUCERS producers, $WORKERS workers, $JOBS jobs (claim batch $CLAIM_BATCH, complete-next $COMPLETE_NEXT), at most $MAX_TIME s"
    local next=()
    [ "$COMPLETE_NEXT" = 1 ] && next=(--complete-next)
    "$BENCH_BIN" jobs --target "$1" --url "$3" --token "$TOKEN" --producers "$PRODUCERS" --workers "$WORKERS" \
        --jobs "$JOBS" --max-time "$MAX_TIME" --claim-batch "$CLAIM_BATCH" "${next[@]}" --json "$2" >/dev/null
}

ER_URLS=http://127.0.0.1:27101,http://127.0.0.1:27102,http://127.0.0.1:27103

# Job operations need cluster format 5 (or later), which the leader's upgrade loop
# commits shortly after the cluster first forms.
wait_format_5() {
    for _ in $(seq 600); do
        curl -fsS -m 1 -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:27101/api/history?entity=cluster:format" 2>/dev/null \
            | grep -qE '"format_version":([5-9]|[1-9][0-9])' && return 0
        sleep 0.1
    done
    echo "the cluster did not reach format 5 within 60 s" >&2
    return 1
}

if [[ $MODE == fill ]]; then
    COMMAND="MODE=fill FILL_JOBS=$FILL_JOBS bench/jobs.sh"
    log "engine-room: 3 nodes on 127.0.0.1:27101-27103"
    er_start_cluster 27100
    wait_format_5
    before=$(for n in 1 2 3; do printf '%s ' "$(rss_mb "${ER_PID[$n]}")"; done)
    log "enqueueing $FILL_JOBS jobs in batches of 1,000"
    "$BENCH_BIN" jobs-fill --url "$ER_URLS" --token "$TOKEN" --jobs "$FILL_JOBS" >"$WORK/fill.json"
    after=$(for n in 1 2 3; do printf '%s ' "$(rss_mb "${ER_PID[$n]}")"; done)
    sleep 30
    settled=$(for n in 1 2 3; do printf '%s ' "$(rss_mb "${ER_PID[$n]}")"; done)
    queued=$(curl -fsS -H "Authorization: Bearer $TOKEN" http://127.0.0.1:27101/api/v1/queue/stats || echo '{}')
    SECTION=$(python3 - "$WORK/fill.json" "$before" "$after" "$settled" "$queued" <<'PY'
import json, sys
fill = json.load(open(sys.argv[1]))
before, after, settled = (s.split() for s in sys.argv[2:5])
print("| node | RSS empty MB | RSS after enqueue MB | RSS 30 s later MB |")
print("| --- | ---: | ---: | ---: |")
for i in range(3):
    print(f"| {i + 1} | {before[i]} | {after[i]} | {settled[i]} |")
print()
print(f"{fill['enqueued']:,} jobs enqueued ({fill['errors']} refused) in {fill['seconds']:.1f} s "
      f"({fill['enqueued'] / max(fill['seconds'], 1e-9):,.0f} jobs/s in batches of 1,000), none claimed; "
      f"payload ~50 B each.")
PY
)
    echo "$SECTION"
    write_section "$OUT" jobs-fill "Jobs (issue 20): 1,000,000 queued jobs, RSS per node" "$COMMAND" "$SECTION"
    log "written to $OUT"
    exit 0
fi

COMMAND="PRODUCERS=$PRODUCERS WORKERS=$WORKERS JOBS=$JOBS CLAIM_BATCH=$CLAIM_BATCH COMPLETE_NEXT=$COMPLETE_NEXT MAX_TIME=$MAX_TIME bench/jobs.sh"
ensure_postgres

log "postgres: $PG_BIN on 127.0.0.1:$PG_PORT"
pg_start
jobs_load postgres "$WORK/postgres.json" "host=127.0.0.1 port=$PG_PORT user=bench dbname=jobs"
stop_pid "$PG_PID"

log "engine-room: 3 nodes on 127.0.0.1:27101-27103"
er_start_cluster 27100
wait_format_5
jobs_load engine-room "$WORK/engine-room.json" "$ER_URLS"
rss=$(for n in 1 2 3; do printf '%s ' "$(rss_mb "${ER_PID[$n]}")"; done)
er_stop_cluster

SECTION=$(python3 - "$WORK" "$rss" "$($PG_BIN/postgres --version)" <<'PY'
import json, sys
work, rss, pg_version = sys.argv[1], sys.argv[2].split(), sys.argv[3]
runs = {t: json.load(open(f"{work}/{t}.json")) for t in ("postgres", "engine-room")}
pg = runs["postgres"]["jobs_per_s"]
print("| queue | jobs/s (enqueue → claim → complete) | enqueues/s | enqueue-to-claim p50 ms | p99 ms | completed / enqueued | errors | × Postgres |")
print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
for name, r in (("Postgres (SKIP LOCKED)", runs["postgres"]), ("Engine Room (3 nodes)", runs["engine-room"])):
    l = r["claim_latency_ms"]
    print(f"| {name} | {r['jobs_per_s']:.0f} | {r['enqueue_per_s']:.0f} | {l['p50']:.2f} | {l['p99']:.2f} | "
          f"{r['completed']} / {r['enqueued']} | {r['errors']} | {r['jobs_per_s'] / pg if pg else 0:.2f} |")
e = runs["engine-room"]
print()
print(f"{e['producers']} producers and {e['workers']} workers on each; Engine Room through the reference client "
      f"(jobs-client: enqueue with an idempotency key, claim with a 5 s long poll, complete), Postgres through "
      f"tokio-postgres (one connection each, every statement its own durable transaction; an empty claim sleeps 5 ms). "
      f"{pg_version.strip()}, synchronous_commit=on, fsync on, one server. "
      f"Engine Room RSS after the run: {' / '.join(rss)} MB. Target: at least Postgres's throughput, goal twice.")
PY
)
echo
echo "$SECTION"
write_section "$OUT" jobs "Jobs (issue 20): Engine Room vs a Postgres queue" "$COMMAND" "$SECTION"
log "written to $OUT"
