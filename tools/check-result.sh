#!/usr/bin/env bash
# Reads an R CMD check directory: prints the test summary and the check's problems, and
# exits non-zero on any ERROR or WARNING, or when the tests did not run.
set -euo pipefail
dir="$1"
log="$dir/00check.log"
if [ ! -f "$log" ]; then
  echo "check-result: $log is missing: R CMD check did not run" >&2
  exit 1
fi
rout="$dir/tests/testthat.Rout"
[ -f "$rout" ] || rout="$dir/tests/testthat.Rout.fail"
if [ -f "$rout" ]; then
  # The testthat summary looks like: [ FAIL 0 | WARN 0 | SKIP 0 | PASS 212 ]
  summary=$(grep -E '^\[ FAIL [0-9]+ \| WARN [0-9]+ \| SKIP [0-9]+ \| PASS [0-9]+ \]' "$rout" | tail -n 1 || true)
  echo "R tests: ${summary:-no testthat summary found}"
  if [ -n "$summary" ]; then
    read -r failed skipped passed < <(echo "$summary" | sed -E 's/.*FAIL ([0-9]+).*SKIP ([0-9]+).*PASS ([0-9]+).*/\1 \2 \3/')
    echo "testthat: $passed passed, $failed failed, $skipped skipped"
  fi
  if [[ "$rout" == *.fail ]]; then
    tail -n 60 "$rout"
  fi
else
  echo "check-result: no test output in $dir/tests" >&2
fi
grep -E "^\* checking .*\.\.\. (NOTE|WARNING|ERROR)" -A 12 "$log" || true
status=$(tail -n 3 "$log")
echo "$status"
if grep -qE "^\* checking .*\.\.\. (WARNING|ERROR)" "$log" || grep -qE "^Status: .*(ERROR|WARNING)" "$log"; then
  echo "check-result: R CMD check found an ERROR or WARNING" >&2
  exit 1
fi
if [ ! -f "$rout" ] || [[ "$rout" == *.fail ]]; then
  echo "check-result: the tests did not pass" >&2
  exit 1
fi
