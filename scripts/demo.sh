#!/usr/bin/env bash
# The main job: set up, then train a softmax-regression classifier with xent_rs gradients.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python examples/demo.py "$@"
