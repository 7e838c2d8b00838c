#!/usr/bin/env bash
# Installs what building, testing and demonstrating fullrandom needs on a Debian
# machine that already has Rust: R and the R packages the package uses, from Debian's
# archive (CRAN is not assumed to be reachable). Does nothing when all are present.
#   bash tools/setup.sh         what make demo / test / install need
#   bash tools/setup.sh bench   also what the benchmarks compare against (make bench)
set -euo pipefail

packages=(
  r-base-dev       # R itself and the headers the package compiles against
  r-cran-nlme      # Imports: the VarCorr generic
  r-cran-lme4      # Imports: lme4's generics (ngrps, getME, ...); lmer comparisons, example data
  r-cran-testthat  # Suggests: the test suite
  r-cran-knitr     # VignetteBuilder
  r-cran-rmarkdown # vignette format
  r-cran-roxygen2  # regenerates NAMESPACE and man/ (make document)
  r-cran-generics  # Suggests: the tidy() generic that broom users call
  r-cran-future    # Suggests: backend = "future" (plans: multisession, cluster, ...)
  r-cran-future.apply # Suggests: runs the chunks on the plan's workers
  r-cran-data.table   # Suggests: fread() reads chunks from CSV files
  r-cran-withr     # Suggests: temporary files and directories in the tests
  r-cran-jsonlite  # tools/vendor-authors.R reads cargo metadata (make vendor, make test)
  xz-utils         # src/rust/vendor.tar.xz, the vendored crates
  pandoc           # rmarkdown renders vignettes through pandoc
  qpdf             # R CMD check --as-cran checks the size of PDFs with it
  # Suggests: the ecosystem methods are tested against these (tests/testthat/test-ecosystem.R)
  r-cran-insight r-cran-performance r-cran-parameters r-cran-ggeffects
  r-cran-emmeans r-cran-estimability r-cran-broom.mixed r-cran-lattice
  r-cran-glmnet    # Suggests: LASSO and ridge in the click-through vignette (and bench/click-through.R)
  r-cran-pkgdown   # make site
  r-cran-lintr     # make lint
)
if [ "${1:-}" = "bench" ]; then
  packages+=(
    r-cran-glmmtmb # bench/insteval.R times glmmTMB beside lmer
    r-cran-mlmrev  # bench/efficiency.R: REML against lmer on mlmRev's data (Chem97, Exam, ...)
  )
fi

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  sudo_cmd=()
  if [ "$(id -u)" -ne 0 ]; then sudo_cmd=(sudo); fi
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

if ! command -v cargo >/dev/null 2>&1 && [ ! -x "${CARGO_HOME:-$HOME/.cargo}/bin/cargo" ]; then
  echo "setup: cargo (Rust) is required but was not found; install Rust with rustup first" >&2
  exit 1
fi

# make lint checks the Rust code with cargo fmt and cargo clippy; rustup installs both as
# components of the toolchain (Debian's rustfmt and rust-clippy are too old for the code).
export PATH="$PATH:${CARGO_HOME:-$HOME/.cargo}/bin"
if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
  if command -v rustup >/dev/null 2>&1; then
    echo "setup: installing the rustfmt and clippy components with rustup"
    rustup component add rustfmt clippy
  else
    echo "setup: cargo fmt and cargo clippy (make lint) were not found; install them with rustup (rustup component add rustfmt clippy)" >&2
    exit 1
  fi
fi
