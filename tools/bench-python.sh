#!/usr/bin/env bash
# The Python peers of bench/peers.R, from PyPI, in a virtual environment of the project:
# gpboost 1.8.x and mixedlm 1.3.x (and pandas/pyarrow, which read the data R writes).
# Installs python3 and python3-venv from Debian's archive when they are missing. Does
# nothing when the environment already has the pinned versions.
#   bash tools/bench-python.sh [VENV]    (default: .build/venv)
set -euo pipefail

venv="${1:-.build/venv}"
requirements=("gpboost==1.8.*" "mixedlm==1.3.*" "pandas>=2" "pyarrow")

missing=()
command -v python3 >/dev/null 2>&1 || missing+=(python3)
if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then missing+=(python3-venv); fi
if ((${#missing[@]})); then
  echo "bench-python: installing ${missing[*]}"
  sudo_cmd=()
  if [ "$(id -u)" -ne 0 ]; then sudo_cmd=(sudo); fi
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

if [ ! -x "$venv/bin/python" ]; then
  echo "bench-python: creating $venv"
  python3 -m venv "$venv"
fi
if ! "$venv/bin/python" - "${requirements[@]}" <<'PY' >/dev/null 2>&1
import sys
from importlib.metadata import version
from packaging.requirements import Requirement
for spec in sys.argv[1:]:
    r = Requirement(spec)
    assert r.specifier.contains(version(r.name), prereleases=True), spec
PY
then
  echo "bench-python: installing ${requirements[*]} into $venv"
  "$venv/bin/python" -m pip install --quiet --upgrade pip
  "$venv/bin/python" -m pip install --quiet "${requirements[@]}"
fi
"$venv/bin/python" -c 'from importlib.metadata import version as v; print("bench-python: gpboost", v("gpboost"), "mixedlm", v("mixedlm"))'
