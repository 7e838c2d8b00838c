#!/usr/bin/env bash
# Prints inst/AUTHORS: the authors and licence of every crate in a vendor directory, as
# cargo metadata reports them, offline (the crates come from that directory).
#   bash tools/vendor-authors.sh <vendor directory>
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
vendor="$(cd "$1" && pwd)"
home="$(mktemp -d)"
trap 'rm -rf "$home"' EXIT
# Cargo's own binaries stay where they are; only its home (config, caches) moves.
export PATH="$PATH:${CARGO_HOME:-$HOME/.cargo}/bin"
printf '[source.crates-io]\nreplace-with = "vendored-sources"\n\n[source.vendored-sources]\ndirectory = "%s"\n' \
  "$vendor" >"$home/config.toml"
CARGO_HOME="$home" cargo metadata --format-version 1 --locked --offline \
  --manifest-path "$root/src/rust/Cargo.toml" >"$home/metadata.json"
Rscript --vanilla "$root/tools/vendor-authors.R" "$home/metadata.json"
