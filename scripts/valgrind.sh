#!/usr/bin/env bash
# Memory-safety evidence: the Rust unit tests and a slice of the Python suite under
# valgrind's memcheck. Exits non-zero if memcheck reports an invalid read or write, a use of
# uninitialised memory or an invalid free (leaks are not counted: CPython and NumPy keep
# memory for the life of the process). Needs valgrind (apt-get install valgrind) and, for
# the Python part, the package installed in .venv (bash scripts/setup.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

VG=(valgrind --tool=memcheck --error-exitcode=99 --leak-check=no --track-origins=no -q)

echo "== Rust unit tests under memcheck"
bin=$(cargo test --release --no-run --message-format=json 2>/dev/null \
  | grep -o '"executable":"[^"]*xent_rs-[^"]*"' | head -n 1 | cut -d'"' -f4)
# The AVX2/AVX-512 paths are exercised where the CPU has them; valgrind emulates AVX2.
"${VG[@]}" "$bin" --test-threads 1

echo "== Python suite (a representative slice) under memcheck"
# CPython itself reports uninitialised reads under memcheck (long objects, the GC at exit):
# count only the error records whose stack passes through xent_rs's extension.
PY=$(pwd)/.venv/bin/python
log=$(mktemp)
(cd tests && PYTHONMALLOC=malloc valgrind --tool=memcheck --leak-check=no -q \
  --log-file="$log" "$PY" -m pytest -q -p no:cacheprovider -x -W ignore \
  test_cross_entropy.py test_bce.py test_building_blocks.py test_errors.py \
  -k "not property and not large_k" "$@")
"$PY" - "$log" <<'PYEOF'
import re, sys
text = open(sys.argv[1]).read()
records = [r for r in re.split(r"==\d+== \n", text) if r.strip()]
ours = [r for r in records if "_core.abi3.so" in r or "xent_rs::" in r]
print(f"memcheck: {len(records)} error records in all, {len(ours)} in xent_rs's code")
for r in ours[:5]:
    print(r)
sys.exit(1 if ours else 0)
PYEOF
echo "valgrind: no memory errors in xent_rs"
