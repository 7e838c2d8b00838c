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

# Crates that the R library does not build on any of these targets (the dev-dependencies
# of the tests, and platform crates reached only through impossible combinations such as
# a macOS-only crate's Windows-only dependency; windows-sys alone is 1.9 MB compressed)
# keep their manifest and licence files and an empty src/lib.rs: cargo still resolves
# Cargo.lock with them, and never compiles them.
targets=(
  x86_64-unknown-linux-gnu aarch64-unknown-linux-gnu x86_64-unknown-linux-musl
  aarch64-unknown-linux-musl powerpc64le-unknown-linux-gnu s390x-unknown-linux-gnu
  riscv64gc-unknown-linux-gnu x86_64-apple-darwin aarch64-apple-darwin
  x86_64-pc-windows-gnu x86_64-pc-windows-msvc i686-pc-windows-gnu aarch64-pc-windows-gnullvm
  x86_64-unknown-freebsd x86_64-unknown-netbsd x86_64-unknown-openbsd
  x86_64-unknown-illumos x86_64-pc-solaris wasm32-unknown-emscripten
)
for t in "${targets[@]}"; do
  (cd "$rust" && cargo tree --locked -p fullrandom-r --target "$t" -e normal,build --prefix none) |
    sed -E 's/ \(.*//; s/ v/ /'
done | sort -u >"$work/needed"
stubbed=0
for crate in "$work"/vendor/*/; do
  name=$(sed -n '/^\[package\]/,/^\[/{s/^name = "\(.*\)"/\1/p}' "$crate/Cargo.toml" | head -n 1)
  version=$(sed -n '/^\[package\]/,/^\[/{s/^version = "\(.*\)"/\1/p}' "$crate/Cargo.toml" | head -n 1)
  if ! grep -qxF "$name $version" "$work/needed"; then
    find "$crate" -mindepth 1 -maxdepth 1 ! -name Cargo.toml ! -name .cargo-checksum.json \
      ! -iname 'LICENSE*' ! -iname 'COPYING*' ! -iname 'COPYRIGHT*' ! -iname 'NOTICE*' \
      -exec rm -rf {} +
    mkdir -p "$crate/src"
    echo "// Not built by fullrandom on any supported target; see tools/vendor.sh." >"$crate/src/lib.rs"
    stubbed=$((stubbed + 1))
  fi
done
echo "vendor: $stubbed crates are not built on any of ${#targets[@]} targets and kept as stubs"

# The same crates give the same bytes: sorted names, no times, owners or extra headers.
echo "vendor: writing src/rust/vendor.tar.xz"
tar --sort=name --mtime='@0' --owner=0 --group=0 --numeric-owner --format=gnu \
  -C "$work" -cf - vendor | xz -9e -T1 >"$rust/vendor.tar.xz"

echo "vendor: writing inst/AUTHORS"
mkdir -p "$root/inst"
bash "$root/tools/vendor-authors.sh" "$work/vendor" >"$root/inst/AUTHORS"
echo "vendor: $(ls "$work/vendor" | wc -l) crates, src/rust/vendor.tar.xz is $(du -k "$rust/vendor.tar.xz" | cut -f1) kB"
