#!/usr/bin/env bash
# The whole test suite, from a fresh clone: installs what it needs, then runs
# every Rust test (unit, storage conformance, multi-process cluster tests).
set -euo pipefail
cd "$(dirname "$0")"
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}
# The slowloris test holds 1,500 sockets at once (500 per node): lift the
# soft open-files limit to the hard one where it is lower.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

if ! command -v cargo-nextest >/dev/null 2>&1; then
  echo "== installing cargo-nextest"
  cargo install cargo-nextest --locked
fi

if ! command -v iptables >/dev/null 2>&1; then
  echo "== installing iptables (network partitions in chaos tests)"
  if [ "$(id -u)" = 0 ]; then
    (apt-get update -qq && apt-get install -y -qq iptables >/dev/null) || echo "could not install iptables"
  fi
fi

if ! python3 -c 'import aiosmtpd' >/dev/null 2>&1; then
  echo "== installing aiosmtpd (real SMTP server for notification tests)"
  python3 -m pip install --quiet aiosmtpd || echo "could not install aiosmtpd"
fi

echo "== building"
cargo build --workspace --all-targets
echo "== tests"
status=0
cargo nextest run --workspace --no-fail-fast || status=$?

# The patched dependencies are their crates.io releases plus vendor/*.patch,
# byte for byte (fetches the two .crate files through cargo if not cached).
echo "== vendor patches (vendor/reapply.sh --check)"
bash vendor/reapply.sh --check || status=$?

# Patched openraft (vendor/openraft/ENGINE-ROOM-PATCH.md): its own unit tests,
# with the workspace's features. The published crate ships only these (see
# README.md, "Patched dependencies").
echo "== vendor/openraft tests"
CARGO_TARGET_DIR=target/vendor-openraft cargo test --locked -q \
  --manifest-path vendor/openraft/Cargo.toml \
  --features storage-v2,serde,loosen-follower-log-revert || status=$?

# The patched WAL crate under the Raft log (vendor/chunked-wal/ENGINE-ROOM-PATCH.md):
# its own tests, including crash images with preallocated chunks.
echo "== vendor/chunked-wal tests"
CARGO_TARGET_DIR=target/vendor-chunked-wal cargo test --locked -q \
  --manifest-path vendor/chunked-wal/Cargo.toml || status=$?

# The OpenAPI document against a throwaway 3-node dev cluster: schemathesis
# with all its checks (undocumented statuses, schema-valid requests refused,
# answers off their schema, ...) must find nothing.
echo "== schemathesis (api/schemathesis/run.sh)"
bash api/schemathesis/run.sh || status=$?

# Operator UI in a real browser (Debian's Chromium via playwright-core)
# against a 3-node dev cluster started by the script itself.
echo "== browser tests (ui/browser-tests/run.sh)"
bash ui/browser-tests/run.sh || status=$?

if [ "$status" != 0 ]; then
  echo "== FAILED (exit $status)"
fi
exit "$status"
