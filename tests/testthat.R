library(testthat)
library(fullrandom)

test_check("fullrandom")
