#!/usr/bin/env bash
# The long reliability drill: 20 leader kills (3 nodes) plus every chaos
# scenario (5-node leader kills, follower kill, rolling restart, minority
# partitions, isolated leader, SIGSTOP of the leader, snapshot catch-up,
# membership change under load), each under load, each followed by the
# no-lost-acknowledged-write checks. Writes a markdown report.
#
#   deploy/run_reliability_drill.sh [report.md] [extra er-drill flags...]
#
# Needs root for the iptables partitions (installs iptables if missing).
# Runs only local processes on 127.0.0.x; ends them itself.
set -euo pipefail
cd "$(dirname "$0")/.."
report=${1:-deploy/drill-report.md}
shift || true
if ! command -v iptables >/dev/null 2>&1; then
  apt-get update -qq && apt-get install -y -qq iptables >/dev/null
fi
# The build er-drill's binary() checks (BUILD_ARGS in chaos-tests/src/lib.rs),
# plus er-drill itself.
cargo build -q --profile test --workspace --bin engine-room --bin er-drill --examples
exec target/debug/er-drill --report "$report" "$@"
