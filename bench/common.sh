# Shared helpers for bench/compare.sh and bench/scale.sh: start and stop
# loopback clusters whose processes this script started, tracked by pid.
# shellcheck shell=bash

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN_DIR=${BIN_DIR:-$ROOT/target/release}
ER_BIN=$BIN_DIR/engine-room
BENCH_BIN=$BIN_DIR/er-bench
# Token and cluster secret: 32 bytes or more, as a node outside `dev` requires.
TOKEN=${TOKEN:-bench-token-0123456789abcdef0123456789abcdef}
CLUSTER_SECRET_VALUE=${CLUSTER_SECRET_VALUE:-bench-secret-0123456789abcdef0123456789abcdef}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/er-bench.XXXXXX")
PIDS=()
# The three nodes (or etcd members) share this machine, so each gets an equal
# share of its cores as runtime threads: TOKIO_WORKER_THREADS for Engine Room,
# GOMAXPROCS for etcd. The generator and the no-op server keep the default.
NODE_THREADS=${NODE_THREADS:-$(( $(nproc) / 3 > 0 ? $(nproc) / 3 : 1 ))}

log() { printf '%s %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

# Stop a process this script started, and forget it, so that cleanup never
# signals an id the system has since given to someone else.
stop_pid() {
    local pid=$1 p keep=()
    for p in "${PIDS[@]}"; do [[ $p == "$pid" ]] || keep+=("$p"); done
    PIDS=("${keep[@]}")
    kill "$pid" 2>/dev/null || return 0
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
}

cleanup() {
    for pid in "${PIDS[@]}"; do stop_pid "$pid"; done
    if [[ ${KEEP_WORK:-0} == 1 ]]; then log "work dir kept: $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

need_binaries() {
    [[ -x $ER_BIN && -x $BENCH_BIN ]] || {
        echo "missing $ER_BIN or $BENCH_BIN; run: cargo build --release -p node -p bench" >&2
        exit 2
    }
}

# TLS_DIR=DIR (made by `engine-room certs init --out DIR`): Engine Room nodes
# serve HTTPS (and talk mutual TLS to each other) with its certificates.
TLS_DIR=${TLS_DIR:-}
ER_SCHEME=http
[[ -n $TLS_DIR ]] && ER_SCHEME=https

# wait_http URL SECONDS: until URL answers 2xx (bounded).
wait_http() {
    local url=$1 limit=$2 i
    for i in $(seq $((limit * 10))); do
        curl -fsS -m 1 ${TLS_DIR:+--cacert "$TLS_DIR/ca.pem"} -H "Authorization: Bearer $TOKEN" "$url" >/dev/null 2>&1 \
            && return 0
        sleep 0.1
    done
    echo "timed out waiting for $url" >&2
    return 1
}

# er_start_node N PORT_BASE: start Engine Room node N of 3 on 127.0.0.1:(PORT_BASE+N).
er_start_node() {
    local n=$1 base=$2 peers="" i tls=()
    for i in 1 2 3; do peers+="${peers:+,}$i=$ER_SCHEME://127.0.0.1:$((base + i))"; done
    [[ -n $TLS_DIR ]] && tls=(ENGINE_TLS_CERT="$TLS_DIR/node-$n.pem" ENGINE_TLS_KEY="$TLS_DIR/node-$n-key.pem"
        ENGINE_TLS_CA="$TLS_DIR/ca.pem")
    mkdir -p "$WORK/er-$n"
    env "${tls[@]}" ENGINE_NODE_ID=$n ENGINE_LISTEN=127.0.0.1:$((base + n)) ENGINE_PEERS=$peers \
        ENGINE_DATA_DIR=$WORK/er-$n/data CONTROL_PLANE_TOKEN=$TOKEN CLUSTER_SECRET=$CLUSTER_SECRET_VALUE \
        TOKIO_WORKER_THREADS=$NODE_THREADS "$ER_BIN" serve >>"$WORK/er-$n/node.log" 2>&1 &
    ER_PID[$n]=$!
    PIDS+=("$!")
}

# er_start_cluster PORT_BASE: three nodes, returns once every node is ready.
er_start_cluster() {
    local base=$1 n
    for n in 1 2 3; do er_start_node "$n" "$base"; done
    for n in 1 2 3; do wait_http "$ER_SCHEME://127.0.0.1:$((base + n))/api/health/ready" 60; done
}

er_stop_cluster() {
    local n
    for n in 1 2 3; do stop_pid "${ER_PID[$n]}"; done
}

declare -a ER_PID ETCD_PID

ensure_etcd() {
    if ! command -v etcd >/dev/null; then
        log "installing Debian etcd-server"
        apt-get update -qq && apt-get install -y -qq etcd-server etcd-client >/dev/null
    fi
}

# etcd_start_cluster PORT_BASE: three members, clients on PORT_BASE+N, peers on PORT_BASE+10+N.
etcd_start_cluster() {
    local base=$1 cluster="" n
    for n in 1 2 3; do cluster+="${cluster:+,}m$n=http://127.0.0.1:$((base + 10 + n))"; done
    for n in 1 2 3; do
        mkdir -p "$WORK/etcd-$n"
        GOMAXPROCS=$NODE_THREADS etcd --name "m$n" --data-dir "$WORK/etcd-$n/data" \
            --listen-client-urls "http://127.0.0.1:$((base + n))" \
            --advertise-client-urls "http://127.0.0.1:$((base + n))" \
            --listen-peer-urls "http://127.0.0.1:$((base + 10 + n))" \
            --initial-advertise-peer-urls "http://127.0.0.1:$((base + 10 + n))" \
            --initial-cluster "$cluster" --initial-cluster-state new --initial-cluster-token er-bench \
            --logger zap --log-level warn >>"$WORK/etcd-$n/etcd.log" 2>&1 &
        ETCD_PID[$n]=$!
        PIDS+=("$!")
    done
    for n in 1 2 3; do wait_http "http://127.0.0.1:$((base + n))/health" 60; done
}

etcd_stop_cluster() {
    local n
    for n in 1 2 3; do stop_pid "${ETCD_PID[$n]}"; done
}

rss_mb() { awk '/^VmRSS/ {printf "%.1f", $2 / 1024}' "/proc/$1/status"; }

machine_info() {
    echo "- machine: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')), $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo) RAM, kernel $(uname -r)"
    echo "- shared with other work while measured (noisy); figures are from one run, compare them as ratios"
    echo "- each Engine Room node (and etcd member, where etcd runs) has $NODE_THREADS runtime thread(s): TOKIO_WORKER_THREADS / GOMAXPROCS = cores / 3, at least 1 (NODE_THREADS overrides)"
    echo "- engine-room $(git -C "$ROOT" rev-parse --short HEAD)$(git -C "$ROOT" diff --quiet HEAD -- . ':!BENCHMARKS.md' || echo '+dirty'), $(etcd --version 2>/dev/null | sed -n 1p)"
    echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC')"
}

# Replace the section between <!-- NAME:begin --> and <!-- NAME:end --> in
# BENCHMARKS.md-style file PATH (appending it when absent).
# write_section PATH NAME TITLE COMMAND TABLE
write_section() {
  python3 - "$1" "$2" "$3" "$4" "$5" "$(machine_info)" <<'PY'
import os, sys
path, name, title, command, table, machine = sys.argv[1:7]
begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
body = f"{begin}\n## {title}\n\n{machine}\n- command: `{command}`\n\n{table}\n{end}"
text = open(path).read() if os.path.exists(path) else "# Benchmarks\n\n"
if begin in text and end in text:
    text = text[:text.index(begin)] + body + text[text.index(end) + len(end):]
else:
    text = text.rstrip("\n") + "\n\n" + body + "\n"
open(path, "w").write(text)
PY
}
