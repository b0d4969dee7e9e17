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
  matplotlib pytest-benchmark mypy ml-dtypes
# The frameworks the adapter tests run against (PyTorch is a multi-GB download, about a
# minute here). XENT_RS_SKIP_FRAMEWORKS=1 leaves them out: their tests are then skipped.
if [ "${XENT_RS_SKIP_FRAMEWORKS:-0}" != 1 ]; then
  "$VPY" -m pip install --quiet torch jax optax xgboost-cpu lightgbm "dask[array]" \
    distributed pyarrow tqdm
  # The peers the second-round losses and calibration metrics are checked against (their
  # tests skip when absent). --no-deps keeps pip from re-resolving torch for torchvision;
  # their small pure-Python dependencies are named instead.
  "$VPY" -m pip install --quiet --no-deps torchvision==0.29.2 keras==3.15.1 relplot==1.0.3 \
    uncertainty-calibration==0.1.4
  "$VPY" -m pip install --quiet pillow absl-py h5py namex optree rich deprecation pandas \
    seaborn scipy parameterized
fi

rm -rf dist
"$VPY" -m maturin build --release --out dist --interpreter "$VPY" >/dev/null
"$VPY" -m pip install --quiet --force-reinstall --no-deps dist/xent_rs-*.whl
echo "setup: installed $(ls dist/xent_rs-*.whl) into .venv"
