# fullrandom: set-up, demo, tests and benchmarks. Every target installs what it needs.
#   make demo   fit lme4's InstEval with fr_fit and lmer and print both
#   make test   cargo tests of the Rust core, then R CMD build + R CMD check of the package
#   make bench  the benchmark scripts under bench/ (the Python peers in .build/venv)
#   make lint   lintr on R/, cargo fmt --check and cargo clippy (also part of make test)
#   make site   the pkgdown site in docs/
#   make vendor src/rust/vendor.tar.xz and inst/AUTHORS from Cargo.lock (needs the network)
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c

BUILD := $(CURDIR)/.build
R_LIB := $(BUILD)/lib
# A project-local library first, so nothing is installed into the system R library.
export R_LIBS := $(R_LIB)
export FULLRANDOM_CARGO_TARGET_DIR := $(BUILD)/cargo-target
export PATH := $(PATH):$(HOME)/.cargo/bin
export NOT_CRAN := true
CARGO_JOBS := 2

.PHONY: setup install demo test cargo-test check wrappers document bench clean vendor vendor-check site lint

setup:
	@bash tools/setup.sh
	@mkdir -p $(R_LIB)

install: setup
	R CMD INSTALL --no-multiarch --library=$(R_LIB) .

demo: install
	Rscript demo/insteval.R

cargo-test: setup
	cargo test --jobs $(CARGO_JOBS) --manifest-path src/rust/Cargo.toml --workspace

# Build the tarball and check it; any ERROR or WARNING fails the target.
check: setup
	rm -rf $(BUILD)/check && mkdir -p $(BUILD)/check
	cd $(BUILD)/check && R CMD build --no-manual $(CURDIR)
	cd $(BUILD)/check && _R_CHECK_FORCE_SUGGESTS_=true R CMD check --no-manual fullrandom_*.tar.gz || true
	@bash tools/check-result.sh $(BUILD)/check/fullrandom.Rcheck

test: vendor-check lint cargo-test check

# The crates the package builds offline with, and their authors; after changing Cargo.lock.
vendor:
	bash tools/vendor.sh

# Fails when src/rust/vendor.tar.xz or inst/AUTHORS is stale against Cargo.lock.
vendor-check: setup
	bash tools/check-vendor.sh

# lintr on R/ with the project's .lintr (lme4-style names allowed; generated wrappers excluded),
# then the Rust code: cargo fmt --check (src/rust/rustfmt.toml) and cargo clippy without warnings.
lint: setup
	Rscript -e 'l <- lintr::lint_dir("R"); print(l); quit(status = length(l) > 0)'
	cargo fmt --all --check --manifest-path src/rust/Cargo.toml
	cargo clippy --jobs $(CARGO_JOBS) --manifest-path src/rust/Cargo.toml --workspace --all-targets --target-dir $(FULLRANDOM_CARGO_TARGET_DIR) -- -D warnings

# The pkgdown site (reference grouped by topic in _pkgdown.yml) into docs/. Offline: pkgdown
# would otherwise ask cloud.r-project.org whether the package is on CRAN (it is not yet) and
# stop where that host cannot be reached.
site: install
	Rscript -e 'options(pkgdown.internet = FALSE); pkgdown::build_site(lazy = TRUE, preview = FALSE, install = FALSE)'

# Regenerates R/extendr-wrappers.R from the Rust module's own wrapper generator.
wrappers: install
	Rscript tools/generate-wrappers.R

document: install
	Rscript -e 'roxygen2::roxygenise(load_code = "installed")'

# Each script writes its section of bench/results.md and the same tables into README.md.
bench: install
	@bash tools/setup.sh bench
	Rscript bench/insteval.R
	Rscript bench/full-randomness.R
	Rscript bench/scale.R
	@bash tools/bench-python.sh
	Rscript bench/peers.R
	Rscript bench/figures.R
	Rscript bench/alchemy.R
	Rscript bench/coverage.R
	Rscript bench/efficiency.R
	Rscript bench/mixing.R
	Rscript bench/mixing-gmodel.R

clean:
	rm -rf $(BUILD) src/*.o src/*.so src/rust/target
