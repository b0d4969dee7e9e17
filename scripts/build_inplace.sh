#!/usr/bin/env bash
# Development build: compile the extension and drop it into python/xent_rs/ (gitignored), so
# that `cd tests && PYTHONPATH=../python ../.venv/bin/python -m pytest` tests this checkout
# without installing anything into the shared virtual environment. PYTHON overrides the
# interpreter (default: .venv/bin/python here).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
rm -rf target/inplace-wheel
"$PY" -m maturin build --release --quiet --out target/inplace-wheel --interpreter "$PY"
"$PY" - <<'PYEOF'
import glob, zipfile
whl = glob.glob("target/inplace-wheel/*.whl")[0]
with zipfile.ZipFile(whl) as z:
    name = next(n for n in z.namelist() if n.startswith("xent_rs/_core"))
    open("python/xent_rs/_core.abi3.so", "wb").write(z.read(name))
print("built", whl)
PYEOF
