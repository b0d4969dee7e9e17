#!/usr/bin/env bash
# Creates .venv, builds the release abi3 wheel with maturin and installs it (plus the
# test/demo dependencies) into that environment. Idempotent; a warm target/ makes it fast.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
VPY=.venv/bin/python
"$VPY" -m pip install --quiet --upgrade pip
"$VPY" -m pip install --quiet "maturin>=1.7,<2" numpy pytest hypothesis scikit-learn \
  matplotlib pytest-benchmark mypy

rm -rf dist
"$VPY" -m maturin build --release --out dist --interpreter "$VPY" >/dev/null
"$VPY" -m pip install --quiet --force-reinstall --no-deps dist/xent_rs-*.whl
echo "setup: installed $(ls dist/xent_rs-*.whl) into .venv"
