# R/extendr-wrappers.R must be what the Rust module's own generator makes now: every
# generated function is installed in the namespace with the same arguments and body.
test_that("the extendr wrappers are current", {
  generated <- .Call("wrap__make_fullrandom_wrappers", use_symbols = TRUE,
                     package_name = "fullrandom", PACKAGE = "fullrandom")
  env <- new.env()
  eval(parse(text = generated, keep.source = FALSE), env)
  ns <- asNamespace("fullrandom")
  expect_gt(length(ls(env)), 0)
  for (name in ls(env)) {
    expect_true(exists(name, envir = ns, inherits = FALSE), label = paste(name, "is installed"))
    expect_identical(formals(get(name, ns)), formals(get(name, env)), label = name)
    expect_identical(body(get(name, ns)), body(get(name, env)), label = name)
  }
  wrapper_names <- grep("^wrap__", ls(ns, all.names = TRUE), value = TRUE)
  # Every module (the main one and its submodules) also registers its metadata functions.
  exported_from_rust <- grep("^(get_.*_metadata|make_.*_wrappers)$", sub("^wrap__", "", wrapper_names),
                             value = TRUE, invert = TRUE)
  expect_setequal(exported_from_rust, ls(env))
})
