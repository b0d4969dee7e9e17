#!/usr/bin/env bash
# Memory-safety evidence (issue 5): the Rust unit tests and a representative slice of the
# Python suite under valgrind's memcheck.
#
# Exits non-zero if memcheck reports an invalid read or write, a use of uninitialised memory,
# an invalid or mismatched free, or an overlapping copy:
#   * Rust unit tests: any memcheck error at all (--error-exitcode), run once per
#     instruction-set path this CPU and valgrind support (XENT_RS_ISA), since the float32
#     kernels are chosen at run time (valgrind does not emulate AVX-512: that path is skipped);
#   * Python slice: any error record whose stack passes through xent_rs's extension module
#     (CPython and glibc have their own known memcheck noise, which is counted and reported
#     but does not fail the run), or a pytest run that does not finish (a crash).
#     PYTHONMALLOC=malloc so that every Python allocation is tracked by memcheck (pymalloc
#     arenas would hide overruns); two xent_rs threads, so that the pool runs too.
# Leaks are not counted: CPython and NumPy keep memory for the life of the process.
#
# It builds nothing but the Rust unit-test binary (`cargo test --release --lib --no-run`),
# and not even that if XENT_RS_TEST_BIN names an already built one. The Python part imports
# xent_rs from $PYTHON's environment (default: .venv/bin/python, where scripts/setup.sh
# installs the wheel, else python3); XENT_RS_INPLACE=1 uses the in-place build in python/
# instead (maturin develop). Logs go to $VALGRIND_LOGDIR (default: a new temporary folder).
#
# Usage: bash scripts/valgrind.sh [pytest arguments, run from tests/, replacing the slice]
# Needs valgrind (apt-get install valgrind). Takes about 6 minutes on two cores.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

command -v valgrind >/dev/null || { echo "valgrind is not installed" >&2; exit 2; }
PYTHON=${PYTHON:-}
if [[ -z "$PYTHON" ]]; then
  if [[ -x .venv/bin/python ]]; then PYTHON=$ROOT/.venv/bin/python; else PYTHON=$(command -v python3); fi
fi
# The interpreter itself, not a wrapper script (pyenv shims, launchers): valgrind does not
# follow exec by default, and a shim would leave Python unchecked.
PYTHON=$("$PYTHON" -c 'import sys; print(sys.executable)')
if [[ "${XENT_RS_INPLACE:-0}" == 1 ]]; then
  export PYTHONPATH="$ROOT/python${PYTHONPATH:+:$PYTHONPATH}"
fi
LOGDIR=${VALGRIND_LOGDIR:-$(mktemp -d)}
mkdir -p "$LOGDIR"
status=0

# ------------------------------------------------------------------ Rust unit tests --
if [[ -n "${XENT_RS_TEST_BIN:-}" ]]; then
  bin=$XENT_RS_TEST_BIN
else
  echo "== building the Rust unit-test binary (cargo test --release --lib --no-run)"
  bin=$(cargo test --release --lib --no-run --message-format=json 2>"$LOGDIR/cargo.err" \
    | "$PYTHON" -c '
import json, sys
for line in sys.stdin:
    try:
        msg = json.loads(line)
    except ValueError:
        continue
    target = msg.get("target", {})
    if msg.get("reason") == "compiler-artifact" and msg.get("executable") \
            and msg.get("profile", {}).get("test") and target.get("name") == "xent_rs" \
            and target.get("src_path", "").endswith("src/lib.rs"):
        print(msg["executable"])
') || true
fi
if [[ ! -x "$bin" ]]; then
  echo "no unit-test binary found ('$bin')" >&2
  tail -n 20 "$LOGDIR/cargo.err" >&2 || true
  exit 2
fi
paths=$("$PYTHON" -c 'import xent_rs._core as c; print(" ".join(c.simd_paths_supported()))' \
  2>/dev/null || echo "scalar avx2")
for isa in $paths; do
  if [[ "$isa" == avx512 ]]; then
    echo "== (skipping XENT_RS_ISA=avx512: valgrind does not emulate AVX-512)"
    continue
  fi
  echo "== Rust unit tests under memcheck, XENT_RS_ISA=$isa ($bin)"
  rc=0
  XENT_RS_ISA=$isa valgrind --tool=memcheck --error-exitcode=99 --leak-check=no \
    --track-origins=yes -q --log-file="$LOGDIR/rust-$isa.log" \
    "$bin" --test-threads 2 -q >"$LOGDIR/rust-$isa.out" 2>&1 || rc=$?
  if [[ $rc -eq 0 ]]; then
    echo "   $(grep -E 'test result' "$LOGDIR/rust-$isa.out" | tail -n 1)"
    echo "   memcheck: no errors"
  else
    status=1
    echo "   FAILED (exit $rc): see $LOGDIR/rust-$isa.log and $LOGDIR/rust-$isa.out"
    head -n 60 "$LOGDIR/rust-$isa.log"
    tail -n 20 "$LOGDIR/rust-$isa.out"
  fi
done

# -------------------------------------------------------------- Python suite slice --
run_python() {  # name, pytest args...
  local name=$1
  shift
  echo "== Python under memcheck: $name"
  local log="$LOGDIR/python-$name.log"
  local rc=0
  (cd tests && PYTHONMALLOC=malloc XENT_RS_NUM_THREADS=2 valgrind --tool=memcheck \
      --leak-check=no --track-origins=no --num-callers=40 --log-file="$log" \
      "$PYTHON" -m pytest -q -p no:cacheprovider -W ignore "$@") \
      >"$LOGDIR/python-$name.out" 2>&1 || rc=$?
  if [[ $rc -eq 1 ]]; then
    # Test failures are the normal suite's business; memcheck's verdict is below.
    echo "   (some tests failed under valgrind: $LOGDIR/python-$name.out)"
    grep -E '^FAILED' "$LOGDIR/python-$name.out" | head -n 20 | sed 's/^/   /' || true
  elif [[ $rc -ne 0 ]]; then
    echo "   pytest did not finish under valgrind (exit $rc): $LOGDIR/python-$name.out"
    tail -n 30 "$LOGDIR/python-$name.out"
    status=1
  fi
  echo "   $(tail -n 1 "$LOGDIR/python-$name.out")"
  "$PYTHON" - "$log" <<'PYEOF' || status=1
import re, sys
text = open(sys.argv[1]).read()
summary = re.findall(r"ERROR SUMMARY: (\d+) errors", text)
if not summary:  # valgrind did not run the interpreter itself, or it crashed
    print("   memcheck: no ERROR SUMMARY in the log: the run was not checked")
    sys.exit(1)
records = [r for r in re.split(r"==\d+== \n", text) if re.search(r"(at|by) 0x", r)]
ours = [r for r in records if "_core.abi3.so" in r or "xent_rs::" in r or "_core.cpython" in r]
print(f"   memcheck: {summary[-1]} errors ({len(records)} distinct records) in all, "
      f"{len(ours)} through xent_rs")
for r in ours[:5]:
    print(r)
sys.exit(1 if ours else 0)
PYEOF
}

if [[ $# -gt 0 ]]; then
  run_python custom "$@"
else
  run_python core test_errors.py test_building_blocks.py test_cross_entropy.py test_bce.py \
    -k "not property and not large_k and not hypothesis"
  k2="layouts or out_ or zero_size or private_core_refuses or ignore_index or every_integer"
  k2+=" or non_finite_logits_every_dtype or bad_ or array_likes or mismatched or broadcast"
  k2+=" or infinite_binary or accumulator_misuse or not_copied"
  run_python hardening test_hardening_inputs.py -k "$k2"
fi

echo "logs: $LOGDIR"
if [[ $status -eq 0 ]]; then
  echo "valgrind: no memory errors in xent_rs"
else
  echo "valgrind: memory errors or failures (see above)"
fi
exit $status
