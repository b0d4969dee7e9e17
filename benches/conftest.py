"""Prints, after a benchmark run, each implementation's time as a ratio to NumPy's in the
same group (same shape, same operation), measured in this run."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))


def pytest_terminal_summary(terminalreporter, config):
    session = getattr(config, "_benchmarksession", None)
    if session is None or not session.benchmarks:
        return
    groups = {}
    for bench in session.benchmarks:
        params = getattr(bench, "params", None) or {}
        impl = params.get("impl", bench.name)
        groups.setdefault(bench.group, {})[impl] = bench.stats.median
    tr = terminalreporter
    tr.write_sep("=", "ratio of NumPy's median time to each implementation's (higher = faster)")
    for group, times in groups.items():
        base = times.get("numpy")
        parts = []
        for impl, t in sorted(times.items(), key=lambda kv: kv[1]):
            ratio = f"{base / t:6.1f}x" if base else "   n/a"
            parts.append(f"{impl} {t * 1e3:9.2f} ms {ratio}")
        tr.write_line(f"{group:<34} " + " | ".join(parts))
