#!/usr/bin/env bash
# The patched dependencies, rebuilt from their published releases.
#
# Each vendored crate is its crates.io release plus one patch file:
#   vendor/openraft     = openraft 0.9.25    + vendor/openraft.patch
#   vendor/chunked-wal  = chunked-wal 0.2.3  + vendor/chunked-wal.patch
#
# The published .crate files come through cargo (a throwaway project outside
# the workspace, so no [patch] applies) and are checked against the sha256
# pinned below, which is the checksum crates.io's index records. If cargo's
# registry cache already holds them, nothing is downloaded.
#
#   bash vendor/reapply.sh --check    the patches reproduce vendor/ byte for byte
#                                     (exit 1 and show the difference otherwise)
#   bash vendor/reapply.sh [--write]  replace vendor/<crate> with release + patch
#   bash vendor/reapply.sh --update-patches
#                                     rewrite vendor/<crate>.patch from the
#                                     vendored trees (after changing them on
#                                     purpose); then commit both
#
# Compared: the crate's files as git lists them (tracked plus untracked, not
# ignored), so build output under vendor/ does not count; outside a git
# checkout, every file but target/.
set -euo pipefail
export LC_ALL=C

#        name         version  sha256 of the .crate (crates.io index)
CRATES=(
  "openraft     0.9.25  a97014fb78acb77be3a40ac2da305f6dd3a6b243f3a908ace87d29b3972eaafd"
  "chunked-wal  0.2.3   cfec3827d0ac8bce1998c2991795f3ec0ea45b4fb2f14b87585a57fb35b5c039"
)

mode=write
case "${1:-}" in
  "" | --write) mode=write ;;
  --check) mode=check ;;
  --update-patches) mode=update ;;
  -h | --help) sed -n '2,23p' "$0"; exit 0 ;;
  *) echo "usage: $0 [--check | --write | --update-patches]" >&2; exit 2 ;;
esac

root=$(cd "$(dirname "$0")/.." && pwd)
vendor=$root/vendor
cargo_home=${CARGO_HOME:-$HOME/.cargo}
command -v patch >/dev/null || { echo "reapply.sh: needs GNU patch (apt-get install patch)" >&2; exit 2; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/engine-room-reapply.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

# The cached .crate file whose sha256 is the pinned one, or nothing.
find_crate() { # name version sha
  local f
  for f in "$cargo_home"/registry/cache/*/"$1-$2.crate"; do
    [ -f "$f" ] || continue
    if [ "$(sha256sum "$f" | cut -d' ' -f1)" = "$3" ]; then
      echo "$f"
      return 0
    fi
  done
  return 0
}

# Brings the pinned releases into cargo's cache when one is missing.
fetched=no
fetch_releases() {
  [ "$fetched" = no ] || return 0
  fetched=yes
  local p=$tmp/fetch
  mkdir -p "$p/src"
  : >"$p/src/lib.rs"
  {
    printf '[package]\nname = "engine-room-reapply-fetch"\nversion = "0.0.0"\nedition = "2021"\npublish = false\n\n'
    printf '[workspace]\n\n[dependencies]\n'
    local line name version sha
    for line in "${CRATES[@]}"; do
      read -r name version sha <<<"$line"
      printf '%s = "=%s"\n' "$name" "$version"
    done
  } >"$p/Cargo.toml"
  echo "reapply.sh: fetching the pinned releases through cargo" >&2
  # Host target only: the .crate files are what is wanted, not every
  # platform's dependencies.
  (cd "$p" && cargo fetch -q --target "$(rustc -vV | sed -n 's/^host: //p')")
}

# The files of a crate tree, relative and sorted, one per line.
list_files() { # dir
  local d=$1
  if git -C "$d" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    git -C "$d" ls-files -z --cached --others --exclude-standard -- . |
      tr '\0' '\n' | while IFS= read -r f; do [ -e "$d/$f" ] && echo "$f"; done | sort -u
  else
    (cd "$d" && find . -path ./target -prune -o -type f -print | sed 's|^\./||' | sort)
  fi
}

# A copy of a tree holding only the listed files.
copy_listed() { # from to
  mkdir -p "$2"
  list_files "$1" | while IFS= read -r f; do
    mkdir -p "$2/$(dirname "$f")"
    cp -p "$1/$f" "$2/$f"
  done
}

failed=0
for line in "${CRATES[@]}"; do
  read -r name version sha <<<"$line"
  crate=$(find_crate "$name" "$version" "$sha")
  if [ -z "$crate" ]; then
    fetch_releases
    crate=$(find_crate "$name" "$version" "$sha")
  fi
  if [ -z "$crate" ]; then
    echo "reapply.sh: no $name-$version.crate with sha256 $sha in $cargo_home/registry/cache" >&2
    exit 2
  fi

  # Upstream as published (the .crate holds no .cargo-ok: cargo writes that
  # only when it unpacks into its own cache).
  mkdir -p "$tmp/upstream"
  tar -xzf "$crate" -C "$tmp/upstream"
  up=$tmp/upstream/$name-$version
  patchfile=$vendor/$name.patch

  if [ "$mode" = update ]; then
    mkdir -p "$tmp/diff/$name"
    cp -a "$up" "$tmp/diff/$name/a"
    copy_listed "$vendor/$name" "$tmp/diff/$name/b"
    # diff exits 1 when the trees differ; 2 is trouble. Timestamps are cut
    # from the headers so that the file changes only when the code does.
    rc=0
    (cd "$tmp/diff/$name" && diff -ruN a b) >"$tmp/$name.patch" || rc=$?
    [ "$rc" -le 1 ] || { echo "reapply.sh: diff failed for $name" >&2; exit 2; }
    sed -E 's/^((---|\+\+\+) [^\t]+)\t.*$/\1/' "$tmp/$name.patch" >"$patchfile"
    echo "wrote vendor/$name.patch ($(grep -c '^+++ ' "$patchfile") files) against $name $version"
    continue
  fi

  [ -f "$patchfile" ] || { echo "reapply.sh: missing vendor/$name.patch" >&2; exit 2; }
  new=$tmp/patched/$name
  mkdir -p "$tmp/patched"
  cp -a "$up" "$new"
  # -E: a file the patch empties is one it deletes.
  if ! patch -d "$new" -p1 -E -s --batch --no-backup-if-mismatch -r - <"$patchfile"; then
    echo "reapply.sh: vendor/$name.patch does not apply to $name $version" >&2
    exit 1
  fi

  if [ "$mode" = write ]; then
    rm -rf "${vendor:?}/$name"
    cp -a "$new" "$vendor/$name"
    echo "vendor/$name = $name $version + vendor/$name.patch"
    continue
  fi

  # --check
  list_files "$vendor/$name" >"$tmp/$name.have"
  list_files "$new" >"$tmp/$name.want"
  bad=0
  if ! cmp -s "$tmp/$name.have" "$tmp/$name.want"; then
    bad=1
    echo "vendor/$name: the files differ from $name $version + vendor/$name.patch" >&2
    diff "$tmp/$name.want" "$tmp/$name.have" | sed -n 's/^> /  only in vendor\/'"$name"': /p; s/^< /  missing from vendor\/'"$name"': /p' >&2 || true
  fi
  while IFS= read -r f; do
    if [ -f "$vendor/$name/$f" ] && ! cmp -s "$new/$f" "$vendor/$name/$f"; then
      bad=1
      echo "vendor/$name/$f differs from $name $version + vendor/$name.patch:" >&2
      diff -u --label "patched/$f" --label "vendor/$name/$f" "$new/$f" "$vendor/$name/$f" | head -40 >&2 || true
    fi
  done <"$tmp/$name.want"
  if [ "$bad" = 0 ]; then
    echo "ok: vendor/$name = $name $version + vendor/$name.patch ($(wc -l <"$tmp/$name.want") files)"
  else
    failed=1
  fi
done

if [ "$failed" != 0 ]; then
  echo "reapply.sh --check FAILED: vendor/ is not its pinned releases plus vendor/*.patch." >&2
  echo "  A change to vendor/ on purpose: bash vendor/reapply.sh --update-patches, and commit the .patch too." >&2
  exit 1
fi
