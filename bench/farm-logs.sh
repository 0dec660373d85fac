#!/usr/bin/env bash
# Build farm (issue 21): search latency over stored build logs. Starts a
# 3-node cluster, stores LOG_MB MiB of build logs (PACKAGES packages, one
# version each, lines of about 120 bytes in chunks of 1,000) through
# `POST /logs/{name}/{version}`, then times `GET /logs/search` on the leader
# and on a follower: a term found in no line (a full scan), a rare term near
# the end, a common term (the first `limit` hits), and a rare term narrowed
# by `package`. Prints a table and writes it into BENCHMARKS.md.
#
#   bench/farm-logs.sh                  # 100 MiB
#   LOG_MB=20 OUT=/tmp/x.md bench/farm-logs.sh
#
# Needs the release binaries: cargo build --release -p node -p bench
set -euo pipefail
source "$(dirname "$0")/common.sh"

LOG_MB=${LOG_MB:-100}
PACKAGES=${PACKAGES:-25}
ROUNDS=${ROUNDS:-5}
OUT=${OUT:-$ROOT/BENCHMARKS.md}
need_binaries

log "engine-room: 3 nodes on 127.0.0.1:27201-27203"
# Room for the logs under the farm's own cap (BUILD_LOG_MAX_BYTES).
export BUILD_LOG_MAX_BYTES=$(( (LOG_MB + 64) * 1024 * 1024 ))
er_start_cluster 27200
for _ in $(seq 600); do
    curl -fsS -m 1 -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:27201/api/history?entity=cluster:format" 2>/dev/null \
        | grep -qE '"format_version":([6-9]|[1-9][0-9])' && break
    sleep 0.1
done

RESULT=$(python3 - "$LOG_MB" "$PACKAGES" "$ROUNDS" "$TOKEN" <<'PY'
import json, random, statistics, sys, time, urllib.request

mb, packages, rounds, token = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
urls = [f"http://127.0.0.1:2720{n}" for n in (1, 2, 3)]

def call(url, method="GET", body=None):
    req = urllib.request.Request(url, method=method, data=None if body is None else json.dumps(body).encode(),
                                 headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read() or b"null")

def metric(url, name):
    req = urllib.request.Request(url + "/metrics", headers={"Authorization": f"Bearer {token}"})
    for line in urllib.request.urlopen(req, timeout=10).read().decode().splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0

leader = next(u for u in urls if metric(u, "engine_room_raft_is_leader") == 1.0)
follower = next(u for u in urls if u != leader)
rng = random.Random(21)
words = ["compiling", "linking", "running", "setup.py", "build_ext", "copying", "creating", "warning:", "gcc",
         "-O2", "-Wall", "-fPIC", "wheel", "installing", "collecting", "resolving", "cython", "numpy", "ok"]
total, lines_per_chunk, t0 = mb * 1024 * 1024, 1000, time.time()
per_pkg = total // packages
stored = chunks = 0
for p in range(packages):
    name, done, n = f"pkg-{p:03d}", 0, 0
    while done < per_pkg:
        lines = []
        for _ in range(lines_per_chunk):
            n += 1
            text = f"[{name}] step {n:07d} " + " ".join(rng.choice(words) for _ in range(12)) + f" {rng.getrandbits(64):016x}"
            if p == packages - 1 and n == 5000:
                text += " needle-4af1"  # the rare term: one line, in the last package
            lines.append(text)
            done += len(text) + 1
        call(f"{follower}/logs/{name}/1.0.{p}", "POST", {"lines": lines})
        chunks += 1
    stored += done
load_s = time.time() - t0

cases = [("absent term (full scan)", "q=zzqx-not-there&limit=100"),
         ("rare term (1 line, last package)", "q=needle-4af1&limit=100"),
         ("common term (first 100 hits)", "q=cython&limit=100"),
         ("rare term, package filter", f"q=needle-4af1&package=pkg-{packages - 1:03d}&limit=100")]
rows = []
for label, query in cases:
    for role, url in (("leader", leader), ("follower", follower)):
        times, last = [], None
        for _ in range(rounds):
            t = time.time()
            last = call(f"{url}/logs/search?{query}")
            times.append((time.time() - t) * 1000)
        rows.append((label, role, statistics.median(times), max(times), len(last["hits"]), last["complete"],
                     last.get("scanned", 0)))
print(json.dumps({"stored_mb": stored / 1048576, "chunks": chunks, "load_s": load_s, "rows": rows}))
PY
)
rss=$(for n in 1 2 3; do printf '%s ' "$(rss_mb "${ER_PID[$n]}")"; done)
disk=$(du -sm "$WORK/er-1" | cut -f1)
er_stop_cluster

COMMAND="LOG_MB=$LOG_MB PACKAGES=$PACKAGES ROUNDS=$ROUNDS bench/farm-logs.sh"
SECTION=$(python3 - "$RESULT" "$rss" "$disk" "$ROUNDS" <<'PY'
import json, sys
r, rss, disk, rounds = json.loads(sys.argv[1]), sys.argv[2].split(), sys.argv[3], sys.argv[4]
print("| search | node | median ms | max ms | hits | complete | lines scanned |")
print("| --- | --- | ---: | ---: | ---: | --- | ---: |")
for label, role, med, mx, hits, complete, scanned in r["rows"]:
    print(f"| {label} | {role} | {med:.0f} | {mx:.0f} | {hits} | {str(complete).lower()} | {scanned:,} |")
print()
print(f"{r['stored_mb']:.1f} MiB of build logs stored in {r['chunks']} chunks of 1,000 lines "
      f"({r['load_s']:.1f} s through a follower); {rounds} rounds per search, each a fresh request. "
      f"RSS after: {' / '.join(rss)} MB; node 1's data dir {disk} MB. The search scans for at most 2 s "
      f"(`complete: false` past it).")
PY
)
echo
echo "$SECTION"
write_section "$OUT" farm-logs "Build farm (issue 21): log search over stored logs" "$COMMAND" "$SECTION"
log "written to $OUT"
