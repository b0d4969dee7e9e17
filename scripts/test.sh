#!/usr/bin/env bash
# The whole test suite: set up (wheel built and installed into .venv), then the Rust unit
# tests, lints, and pytest against the installed wheel (not an in-place build).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

cargo fmt --check
cargo clippy --quiet --all-targets --features python -- -D warnings
cargo test --quiet

# Run from tests/ so that `import xent_rs` finds the installed wheel, never python/. An
# adapter module whose framework is not installed is left out of the doctests (its tests
# skip themselves); any other import error fails the regular tests that import it.
cd tests
../.venv/bin/python -m pytest -q -p no:cacheprovider --doctest-modules \
  --doctest-ignore-import-errors --pyargs xent_rs . "$@"
