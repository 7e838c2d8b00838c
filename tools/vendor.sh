#!/usr/bin/env bash
# Vendors the Rust crates that src/rust/Cargo.lock names, so that the package builds
# without network access (CRAN, clusters): writes src/rust/vendor.tar.xz and
# inst/AUTHORS (every vendored crate's authors and licence, from cargo metadata).
# Needs the network once, to fetch the crates; run it (make vendor) after any change to
# Cargo.lock, and commit both files. tools/check-vendor.sh tells when they are stale.
#   bash tools/vendor.sh
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
rust="$root/src/rust"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

echo "vendor: cargo vendor --locked (crates from Cargo.lock)"
(cd "$rust" && cargo vendor --locked --quiet "$work/vendor" >/dev/null)

# Tests, benchmarks and examples of the crates are never built as dependencies; dropping
# them makes the tarball smaller. cargo verifies vendored files against each crate's
# .cargo-checksum.json, so its list of files is emptied (the crate's own checksum, the
# one Cargo.lock holds, stays and is what tools/check-vendor.sh compares).
for crate in "$work"/vendor/*/; do
  rm -rf "$crate"tests "$crate"benches "$crate"examples "$crate".github
  package=$(grep -o '"package":"[0-9a-f]*"' "$crate.cargo-checksum.json")
  printf '{"files":{},%s}' "$package" >"$crate.cargo-checksum.json"
done

# The same crates give the same bytes: sorted names, no times, owners or extra headers.
echo "vendor: writing src/rust/vendor.tar.xz"
tar --sort=name --mtime='@0' --owner=0 --group=0 --numeric-owner --format=gnu \
  -C "$work" -cf - vendor | xz -9e -T1 >"$rust/vendor.tar.xz"

echo "vendor: writing inst/AUTHORS"
mkdir -p "$root/inst"
bash "$root/tools/vendor-authors.sh" "$work/vendor" >"$root/inst/AUTHORS"
echo "vendor: $(ls "$work/vendor" | wc -l) crates, src/rust/vendor.tar.xz is $(du -k "$rust/vendor.tar.xz" | cut -f1) kB"
