#!/usr/bin/env bash
# Fails when src/rust/vendor.tar.xz or inst/AUTHORS is stale against src/rust/Cargo.lock:
# the vendored crates must be exactly the registry crates the lock file names (compared
# by the checksums both record), and inst/AUTHORS must be what tools/vendor-authors.sh
# writes for them. Offline. Run `make vendor` to bring them up to date.
#   bash tools/check-vendor.sh
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
rust="$root/src/rust"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
stale() {
  echo "check-vendor: $1; run 'make vendor' and commit src/rust/vendor.tar.xz and inst/AUTHORS" >&2
  exit 1
}
[ -f "$rust/vendor.tar.xz" ] || stale "src/rust/vendor.tar.xz is missing"
[ -f "$root/inst/AUTHORS" ] || stale "inst/AUTHORS is missing"

tar -xJf "$rust/vendor.tar.xz" -C "$work"
grep -h '^checksum = ' "$rust/Cargo.lock" | sed -E 's/checksum = "([0-9a-f]+)"/\1/' | sort >"$work/lock"
cat "$work"/vendor/*/.cargo-checksum.json | grep -o '"package":"[0-9a-f]*"' |
  sed -E 's/"package":"([0-9a-f]+)"/\1/' | sort >"$work/tarball"
if ! diff -q "$work/lock" "$work/tarball" >/dev/null; then
  echo "check-vendor: crates in Cargo.lock but not in the tarball: $(comm -23 "$work/lock" "$work/tarball" | wc -l); in the tarball but not in Cargo.lock: $(comm -13 "$work/lock" "$work/tarball" | wc -l)" >&2
  stale "src/rust/vendor.tar.xz does not match Cargo.lock"
fi
bash "$root/tools/vendor-authors.sh" "$work/vendor" >"$work/AUTHORS"
if ! diff -u "$root/inst/AUTHORS" "$work/AUTHORS" >"$work/authors.diff"; then
  head -n 20 "$work/authors.diff" >&2
  stale "inst/AUTHORS does not match the vendored crates"
fi
echo "check-vendor: src/rust/vendor.tar.xz ($(wc -l <"$work/lock") crates) and inst/AUTHORS match Cargo.lock"
