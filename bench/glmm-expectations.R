# The expectations of the GLMM moment statistics (first moments, pair statistics T_k,
# within-row D) by the quadrature of the Rust core against a 10^7-draw Monte Carlo over
# the random effects on small designs, and merge invariance over 1, 2, 7 and 64 chunks
# (issue 19's first acceptance item). Runs two tests of the Rust core in release mode:
# glmm_expectations::expectations_match_ten_million_draws (ignored by the default cargo
# test: a minute or two) and glmm::fits_are_invariant_to_chunks, and writes the
# "glmm-expectations" section of bench/results.md from the lines they print. The tests
# themselves assert the tolerances; this script fails when they fail.
# Run from the package root: Rscript bench/glmm-expectations.R
source("bench/results.R")
target <- Sys.getenv("FULLRANDOM_CARGO_TARGET_DIR", file.path(getwd(), ".build", "cargo-target"))
jobs <- Sys.getenv("CARGO_JOBS", "2")
load <- function() as.numeric(strsplit(readLines("/proc/loadavg"), " ")[[1]][1])

cargo_test <- function(test, filters, ignored = FALSE) {
  args <- c("test", "--release", "--jobs", jobs, "--manifest-path", "src/rust/Cargo.toml", "-p", "fullrandom-core",
            "--test", test, "--", filters, "--exact", "--nocapture", "--test-threads", "1", if (ignored) "--ignored")
  before <- load()
  seconds <- system.time(out <- suppressWarnings(system2("cargo", args, stdout = TRUE, stderr = TRUE,
                                                         env = paste0("CARGO_TARGET_DIR=", target))))[["elapsed"]]
  status <- attr(out, "status")
  if (!is.null(status) && status != 0) {
    cat(out, sep = "\n")
    stop(sprintf("cargo test --test %s %s failed", test, paste(filters, collapse = " ")))
  }
  list(out = out, seconds = seconds, load = (before + load()) / 2)
}

# Build first, so that the timings below are of the runs alone.
for (test in c("glmm_expectations", "glmm")) {
  built <- system2("cargo", c("test", "--release", "--jobs", jobs, "--manifest-path", "src/rust/Cargo.toml",
                              "-p", "fullrandom-core", "--test", test, "--no-run"),
                   env = paste0("CARGO_TARGET_DIR=", target))
  if (built != 0) stop("cargo test --no-run failed")
}
expect <- cargo_test("glmm_expectations", "expectations_match_ten_million_draws", ignored = TRUE)
exact <- cargo_test("glmm_expectations", c("poisson_expectations_are_the_closed_forms",
                                           "one_term_expectations_match_dense_integration"))
chunks <- cargo_test("glmm", "fits_are_invariant_to_chunks")

rows <- grep("^(test [a-z_]+ \\.\\.\\. )?expectations \\| ", expect$out, value = TRUE)
rows <- sub("^test [a-z_]+ \\.\\.\\. ", "", rows)
fields <- lapply(strsplit(rows, " | ", fixed = TRUE), trimws)
table <- vapply(fields, function(f) {
  sprintf("| %s | %s | %.10g | %.10g | %s | %s | %s |", f[[2]], f[[3]], as.numeric(f[[4]]), as.numeric(f[[5]]),
          f[[6]], f[[7]], f[[8]])
}, "")
total <- sub("^.*expectations total \\| ", "", grep("expectations total", expect$out, value = TRUE))
# One-term designs: the 10^7-draw Monte Carlo against the dense one-dimensional integral
# (z), and the quadrature against it (relative difference).
dense_mc <- lapply(strsplit(sub("^.*dense \\| ", "", grep("dense \\| .* \\| [0-9.]+$", expect$out, value = TRUE)),
                            " | ", fixed = TRUE), trimws)
dense_quad <- lapply(strsplit(sub("^.*dense \\| ", "", grep("dense \\| ", exact$out, value = TRUE)), " | ", fixed = TRUE),
                     trimws)
dense_table <- vapply(dense_quad, function(f) {
  z <- Filter(function(m) m[[1]] == f[[1]] && m[[2]] == f[[2]], dense_mc)
  sprintf("| %s | %s | %.12g | %s | %s |", f[[1]], f[[2]], as.numeric(f[[4]]), f[[5]],
          if (length(z)) z[[1]][[4]] else "")
}, "")
poisson <- sub("^.*Poisson closed forms: largest relative difference ", "", grep("Poisson closed forms", exact$out, value = TRUE))
invariance <- sub("^.*(Binomial|Poisson): ", "\\1: ", grep("largest relative difference over", chunks$out, value = TRUE))

lines <- c(
  "## Expectations of the GLMM moment statistics and merge invariance (bench/glmm-expectations.R)",
  "",
  paste("The quadrature expectations of the moment statistics (`moment_statistics`: `sum y`, `sum x y`, the pair",
        "statistics `T_k` with the simple level weights, the within-row `D` of an observation-level term) at the",
        "true parameters against a Monte Carlo over the random effects with 10,004,200 draws (100 replicates of",
        "50,021 points and their mirror images), on small designs (24-30 rows; tests/glmm_expectations.rs).",
        "The Monte Carlo takes the conditional expectation of each statistic given the effects exactly, from",
        "the pairs of rows each statistic counts, so its noise is only that of the effects; the effects are",
        "stratified (a Latin hypercube of 50,021 strata per effect whose strata are paired by a randomly",
        "shifted rank-1 lattice; every point exactly N(0, I)). \"se\": its standard error from the spread of",
        "the replicates, relative to the value; \"z\": |quadrature - Monte Carlo| / se. The test asserts",
        "|quadrature - Monte Carlo| < 4 se + 1e-6 |Monte Carlo| for every statistic and a relative difference",
        "below 1e-4 for the binomial ones. The 1e-6 is the quadrature's own error, which this Monte Carlo",
        "resolves: the Bernoulli one-term T_0 (sd 0.95) is 2e-7 off, and a dense one-dimensional integral",
        "(one term: each summand depends on one effect) agrees with the Monte Carlo, not the quadrature (table",
        "below): the outer trapezoidal rule's error where its step bound switches, as glmm.rs's module doc",
        "bounds it. The Poisson-log expectations are closed forms, equal to closed forms computed independently",
        sprintf("in the test (`poisson_expectations_are_the_closed_forms`: largest relative difference %s);", poisson),
        "their Monte Carlo is noisier (log-normal tails), so only z is asserted for them."),
  "",
  "| design | statistic | quadrature | Monte Carlo | se (relative) | relative difference | z |",
  "|---|---|---:|---:|---:|---:|---:|",
  table,
  "",
  sprintf("Total: %s (release build, 2 threads, load %.1f on this 2-core machine).", total, expect$load),
  "",
  "One-term designs: the dense one-dimensional integral (trapezoidal rule, step 0.002 sd over +-12 sd).",
  "",
  "| design | statistic | dense integral | quadrature: relative difference | Monte Carlo: z |",
  "|---|---|---:|---:|---:|",
  dense_table,
  "",
  paste("Merge invariance (`fits_are_invariant_to_chunks`, 6,400 rows, `(1 | g0) + (1 | g1)` with 60 x 40 levels,",
        "binomial with 4 trials and Poisson; 1, 2, 7 and 64 chunks of consecutive rows, every level in at least",
        "10 of the 64 chunks): largest relative difference of the fixed effects and variances from the",
        "one-chunk fit, asserted below 1e-10:"),
  "",
  paste0("- ", invariance),
  "",
  sprintf("(The chunk test: %.1f s in release mode, load %.1f.)", chunks$seconds, chunks$load)
)
write_results_section("glmm-expectations", lines, readme = "")
cat(lines, sep = "\n")
