"""The ``xent-rs`` command line, run as ``python -m xent_rs`` in child interpreters: its JSON
against the in-memory calibration functions on the same data, every input format, the
temperature fit, the plot, the exit statuses and one-line messages, and the peak memory of a
run over a file larger than a gigabyte."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import struct
import subprocess
import sys
import termios

import numpy as np
import pytest

from xent_rs import calibration as cal
from xent_rs.cli import METRIC_KEYS, REPORT_KEYS

from conftest import subprocess_env

N, K = 3000, 5
METRIC_RTOL = 1e-12
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def run_cli(*args, timeout=300):
    """``python -m xent_rs report ARGS`` in a fresh interpreter importing this xent_rs."""
    return subprocess.run([sys.executable, "-m", "xent_rs", "report", *map(str, args)],
                          capture_output=True, text=True, env=subprocess_env(),
                          timeout=timeout)


def report_json(*args):
    proc = run_cli(*args, "--json")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    return json.loads(proc.stdout)


def expected(scores, labels, *, from_logits, n_bins=15, convention="right"):
    """The report's keys from the in-memory functions on the whole arrays."""
    kw = dict(n_bins=n_bins, convention=convention, from_logits=from_logits)
    result = cal.CalibrationAccumulator(**kw).update(scores, labels).result()
    rel, res, unc, brier = cal.brier_decomposition(scores, labels, **kw)
    return dict(
        count=len(labels), weight_sum=float(len(labels)),
        n_classes=2 if scores.ndim == 1 else scores.shape[1],
        accuracy=result.accuracy, nll=result.nll,
        ece=cal.calibration_error(scores, labels, norm="l1", **kw),
        rms=cal.calibration_error(scores, labels, norm="l2", **kw),
        mce=cal.calibration_error(scores, labels, norm="max", **kw),
        brier=cal.brier_score(scores, labels, from_logits=from_logits),
        reliability=rel, resolution=res, uncertainty=unc,
        mean_confidence=result.mean_confidence)


def assert_report(got, want):
    assert list(got)[:len(METRIC_KEYS)] == list(METRIC_KEYS)
    for key in METRIC_KEYS:
        if key in ("count", "n_classes"):
            assert got[key] == want[key], key
        elif not np.isfinite(want[key]):
            assert got[key] is None, key            # JSON has no inf or NaN: null
        else:
            assert got[key] == pytest.approx(want[key], rel=METRIC_RTOL, abs=1e-15), key


def assert_one_line_error(proc, path):
    """Exit status 1 and exactly one line on standard error, naming ``path``."""
    assert proc.returncode == 1, (proc.returncode, proc.stderr)
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert str(path) in lines[0] and "Traceback" not in proc.stderr
    assert proc.stdout == ""
    return lines[0]


def make_logits(rng, n=N, k=K, dtype=np.float32, temperature=2.0):
    """Logits whose labels are drawn from softmax(z / temperature): over-confident by
    ``temperature``."""
    z = (rng.standard_normal((n, k)) * 3.0).astype(dtype)
    p = np.exp(z / temperature)
    p /= p.sum(axis=1, keepdims=True)
    y = (p.cumsum(axis=1) < rng.random((n, 1))).sum(axis=1)
    return z, y


def softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@pytest.fixture
def data(rng, tmp_path):
    z, y = make_logits(rng)
    np.save(tmp_path / "z.npy", z)
    np.save(tmp_path / "y.npy", y)
    return z, y, tmp_path


# -------------------------------------------------------------------------- .npy input --

@pytest.mark.parametrize("chunk_rows", [None, 1000, 777, 1])
def test_npy_logits_match_the_in_memory_functions(data, chunk_rows):
    z, y, d = data
    extra = [] if chunk_rows is None else ["--chunk-rows", chunk_rows]
    if chunk_rows == 1:
        z, y = z[:200], y[:200]
        np.save(d / "z.npy", z)
        np.save(d / "y.npy", y)
    got = report_json(d / "z.npy", d / "y.npy", "--logits", "--no-progress", *extra)
    assert set(got) == set(REPORT_KEYS)  # the metric keys, then the additions (issue 15)
    assert_report(got, expected(z, y, from_logits=True))


@pytest.mark.parametrize("bins, convention", [(10, "right"), (7, "torchmetrics")])
def test_bins_and_convention(data, bins, convention):
    z, y, d = data
    p = softmax(z.astype(np.float64))
    p[:50] = np.round(p[:50] * bins) / bins     # on the edges, where the conventions differ
    p[:50] /= p[:50].sum(axis=1, keepdims=True)
    np.save(d / "p.npy", p)
    got = report_json(d / "p.npy", d / "y.npy", "--probs", "--bins", bins, "--convention",
                      convention, "--chunk-rows", 999)
    want = expected(p, y, from_logits=False, n_bins=bins, convention=convention)
    assert_report(got, want)
    assert want["nll"] == np.inf           # a label of probability 0 (rounded): null in JSON


def test_binary_logits_and_probabilities(rng, tmp_path):
    z = rng.standard_normal(2000) * 2.0
    y = (rng.random(2000) < 1 / (1 + np.exp(-z / 1.5))).astype(np.int32)
    np.save(tmp_path / "z.npy", z)
    np.save(tmp_path / "p.npy", 1 / (1 + np.exp(-z)))
    np.save(tmp_path / "y.npy", y)
    got = report_json(tmp_path / "z.npy", tmp_path / "y.npy", "--chunk-rows", 300)
    assert got["n_classes"] == 2
    assert_report(got, expected(z, y, from_logits=True))
    p = np.load(tmp_path / "p.npy")
    got = report_json(tmp_path / "p.npy", tmp_path / "y.npy", "--probs")
    assert_report(got, expected(p, y, from_logits=False))


def test_fortran_order_and_big_endian_npy(data):
    z, y, d = data
    np.save(d / "zf.npy", np.asfortranarray(z.astype(">f8")))
    got = report_json(d / "zf.npy", d / "y.npy", "--logits", "--chunk-rows", 512)
    assert_report(got, expected(z.astype(np.float64), y, from_logits=True))


@pytest.mark.parametrize("dtype", [np.float16, np.float64])
def test_other_float_dtypes(data, dtype):
    z, y, d = data
    z = z.astype(dtype)
    np.save(d / "z16.npy", z)
    got = report_json(d / "z16.npy", d / "y.npy", "--logits", "--chunk-rows", 1024)
    assert_report(got, expected(z, y, from_logits=True))


def test_float_and_bool_labels(rng, tmp_path):
    z = rng.standard_normal(500)
    y = rng.random(500) < 0.5
    np.save(tmp_path / "z.npy", z)
    np.save(tmp_path / "yb.npy", y)
    np.save(tmp_path / "yf.npy", y.astype(np.float32))
    want = expected(z, y.astype(np.int64), from_logits=True)
    assert_report(report_json(tmp_path / "z.npy", tmp_path / "yb.npy", "--logits"), want)
    assert_report(report_json(tmp_path / "z.npy", tmp_path / "yf.npy", "--logits"), want)


# ---------------------------------------------------------------------- logits or probs --

def test_guess_is_reported_on_stderr(data):
    z, y, d = data
    np.save(d / "p.npy", softmax(z.astype(np.float64)))
    proc = run_cli(d / "z.npy", d / "y.npy", "--json")
    assert proc.returncode == 0
    assert "read as logits" in proc.stderr and "z.npy" in proc.stderr
    assert_report(json.loads(proc.stdout), expected(z, y, from_logits=True))

    proc = run_cli(d / "p.npy", d / "y.npy", "--json")
    assert proc.returncode == 0
    assert "read as probabilities" in proc.stderr
    p = np.load(d / "p.npy")
    assert_report(json.loads(proc.stdout), expected(p, y, from_logits=False))


def test_said_kind_is_not_guessed(data):
    z, y, d = data
    # Logits that happen to lie in [0, 1] with rows summing to 1 are guessed as
    # probabilities; --logits reads them as logits, and says nothing.
    q = softmax(z.astype(np.float64))
    np.save(d / "q.npy", q)
    proc = run_cli(d / "q.npy", d / "y.npy", "--json", "--logits")
    assert proc.returncode == 0 and proc.stderr == ""
    assert_report(json.loads(proc.stdout), expected(q, y, from_logits=True))
    guessed = report_json(d / "q.npy", d / "y.npy")
    assert_report(guessed, expected(q, y, from_logits=False))


# ---------------------------------------------------------------------------- .npz input --

@pytest.mark.parametrize("save", [np.savez, np.savez_compressed])
def test_npz_with_keys(data, save):
    z, y, d = data
    save(d / "both.npz", logits=z, labels=y, fortran=np.asfortranarray(z))
    save(d / "one.npz", y)
    want = expected(z, y, from_logits=True)
    for key in ("logits", "fortran"):
        got = report_json(d / "both.npz", d / "both.npz", "--key", key, "--labels-key",
                          "labels", "--chunk-rows", 700)
        assert_report(got, want)
    # An archive of one array needs no key.
    assert_report(report_json(d / "both.npz", d / "one.npz", "--key", "logits"), want)


# ------------------------------------------------------------------------ Parquet input --

@pytest.fixture
def parquet(data):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    z, y, d = data
    columns = {f"p{j}": z[:, j] for j in range(K)}
    pq.write_table(pa.table({"logits": pa.array(list(z)), "label": y, "id": np.arange(N)}),
                   d / "list.parquet", row_group_size=1000)
    pq.write_table(pa.table({**columns, "label": y}), d / "columns.parquet",
                   row_group_size=640)
    fixed = pa.FixedSizeListArray.from_arrays(pa.array(z.ravel()), K)
    pq.write_table(pa.table({"z": fixed}), d / "fixed.parquet")
    pq.write_table(pa.table({"y": y, "other": y}), d / "labels.parquet")
    return z, y, d


def test_parquet_list_column_with_label_column(parquet):
    z, y, d = parquet
    want = expected(z, y, from_logits=True)
    assert_report(report_json(d / "list.parquet", "label"), want)
    assert_report(report_json(d / "list.parquet", "label", "--key", "logits",
                              "--chunk-rows", 333), want)


def test_parquet_numeric_columns(parquet):
    z, y, d = parquet
    got = report_json(d / "columns.parquet", "label", "--chunk-rows", 500)
    assert got["n_classes"] == K
    assert_report(got, expected(z, y, from_logits=True))


def test_parquet_fixed_size_list_and_labels_file(parquet):
    z, y, d = parquet
    want = expected(z, y, from_logits=True)
    assert_report(report_json(d / "fixed.parquet", d / "labels.parquet", "--labels-key", "y"),
                  want)
    assert_report(report_json(d / "fixed.parquet", d / "y.npy"), want)


def test_parquet_binary_column(parquet):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    z, y, d = parquet
    s, b = z[:, 0].astype(np.float64), (y == 0).astype(np.int8)
    pq.write_table(pa.table({"score": s, "target": b}), d / "binary.parquet")
    got = report_json(d / "binary.parquet", "target", "--logits")
    assert got["n_classes"] == 2
    assert_report(got, expected(s, b, from_logits=True))


# --------------------------------------------------------------------------- temperature --

def assert_temperature(got, z, y):
    t = got["temperature"]
    assert t == pytest.approx(cal.fit_temperature(z, y), rel=1e-7)
    scaled = z.astype(np.float64) / t
    assert set(got) == set(REPORT_KEYS) | {"temperature", "after_temperature"}
    assert_report(got["after_temperature"], expected(scaled, y, from_logits=True))
    assert_report(got, expected(z, y, from_logits=True))


@pytest.mark.parametrize("chunk_rows", [None, 450])
def test_temperature_matches_fit_temperature(data, chunk_rows):
    z, y, d = data
    extra = [] if chunk_rows is None else ["--chunk-rows", chunk_rows]
    got = report_json(d / "z.npy", d / "y.npy", "--temperature", *extra)
    assert_temperature(got, z, y)
    assert 1.8 < got["temperature"] < 2.2            # the labels were drawn at T = 2
    assert got["after_temperature"]["nll"] < got["nll"]


def test_temperature_of_binary_logits(rng, tmp_path):
    z = rng.standard_normal(4000) * 3.0
    y = (rng.random(4000) < 1 / (1 + np.exp(-z / 3.0))).astype(np.int64)
    np.save(tmp_path / "z.npy", z)
    np.save(tmp_path / "y.npy", y)
    got = report_json(tmp_path / "z.npy", tmp_path / "y.npy", "--temperature", "--logits",
                      "--chunk-rows", 1000)
    assert_temperature(got, z, y)


def test_temperature_of_tiny_logits_is_scaled(rng, tmp_path):
    # Beyond 1e-100 the search runs on logits / scale, as fit_temperature does.
    z, y = make_logits(rng, n=800, dtype=np.float64)
    z *= 1e-150
    np.save(tmp_path / "z.npy", z)
    np.save(tmp_path / "y.npy", y)
    got = report_json(tmp_path / "z.npy", tmp_path / "y.npy", "--temperature", "--logits",
                      "--chunk-rows", 300)
    assert got["temperature"] == pytest.approx(cal.fit_temperature(z, y), rel=1e-7)


def test_temperature_of_constant_rows_is_one(tmp_path):
    z = np.array([[1.0, 1.0, -np.inf], [0.5, 0.5, 0.5], [2.0, -np.inf, 2.0]])
    y = np.array([0, 2, 2])
    np.save(tmp_path / "z.npy", z)
    np.save(tmp_path / "y.npy", y)
    got = report_json(tmp_path / "z.npy", tmp_path / "y.npy", "--temperature", "--chunk-rows", 2)
    assert got["temperature"] == cal.fit_temperature(z, y) == 1.0


def test_temperature_of_a_masked_label_is_a_data_error(tmp_path):
    z = np.array([[1.0, 0.0], [0.0, 2.0], [1.0, -np.inf]])
    np.save(tmp_path / "z.npy", z)
    np.save(tmp_path / "y.npy", np.array([1, 0, 1]))
    with pytest.raises(ValueError):
        cal.fit_temperature(z, np.array([1, 0, 1]))
    line = assert_one_line_error(run_cli(tmp_path / "z.npy", tmp_path / "y.npy", "--logits",
                                         "--temperature"), "y.npy")
    assert "-inf" in line


def test_temperature_without_a_minimum_is_a_data_error(tmp_path):
    z = np.array([[3.0, 0.0], [0.0, 2.0], [1.0, -1.0]])
    np.save(tmp_path / "z.npy", z)
    np.save(tmp_path / "y.npy", np.array([0, 1, 0]))   # every label already on top
    line = assert_one_line_error(run_cli(tmp_path / "z.npy", tmp_path / "y.npy",
                                         "--temperature"), tmp_path / "z.npy")
    assert "no finite temperature" in line


# -------------------------------------------------------------------------- table, plot --

def test_table_output(data):
    z, y, d = data
    proc = run_cli(d / "z.npy", d / "y.npy", "--logits", "--temperature")
    assert proc.returncode == 0 and proc.stderr == ""
    rows = {line.split()[0]: line.split()[1:] for line in proc.stdout.splitlines()[1:]}
    want = expected(z, y, from_logits=True)
    t = cal.fit_temperature(z, y)
    after = expected(z.astype(np.float64) / t, y, from_logits=True)
    assert float(rows["temperature"][0]) == pytest.approx(t, rel=1e-5)
    for key in METRIC_KEYS:
        before_cell, after_cell = map(float, rows[key])
        assert before_cell == pytest.approx(want[key], abs=1e-6), key
        assert after_cell == pytest.approx(after[key], abs=1e-6), key


def test_plot_writes_a_png(data):
    pytest.importorskip("matplotlib")
    z, y, d = data
    got = report_json(d / "z.npy", d / "y.npy", "--plot", d / "diagram.png")
    assert_report(got, expected(z, y, from_logits=True))
    assert (d / "diagram.png").read_bytes()[:8] == PNG_SIGNATURE
    assert (d / "diagram.png").stat().st_size > 10_000


def test_threads_do_not_change_the_numbers(data):
    z, y, d = data
    one = run_cli(d / "z.npy", d / "y.npy", "--json", "--threads", 1, "--temperature")
    two = run_cli(d / "z.npy", d / "y.npy", "--json", "--threads", 2, "--temperature")
    assert one.returncode == two.returncode == 0
    assert one.stdout == two.stdout                   # the library is deterministic
    assert_temperature(json.loads(one.stdout), z, y)


def test_in_process_main(data, capsys):
    from xent_rs.cli import main
    z, y, d = data
    assert main(["report", str(d / "z.npy"), str(d / "y.npy"), "--json", "--logits"]) == 0
    assert_report(json.loads(capsys.readouterr().out), expected(z, y, from_logits=True))


# ------------------------------------------------------------------------ progress bar --

def stderr_on_a_terminal(*args):
    """Standard error of a CLI run whose standard error is a pseudo-terminal."""
    master, slave = pty.openpty()
    # A terminal of 100 columns (a new pseudo-terminal has none, and tqdm draws to its width).
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
    proc = subprocess.Popen([sys.executable, "-m", "xent_rs", "report", *map(str, args)],
                            stdout=subprocess.PIPE, stderr=slave, env=subprocess_env())
    os.close(slave)
    chunks = []
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    proc.wait(timeout=300)
    os.close(master)
    assert proc.returncode == 0
    return b"".join(chunks).decode(errors="replace")


def test_progress_bar_only_on_a_terminal(data):
    pytest.importorskip("tqdm")
    z, y, d = data
    shown = stderr_on_a_terminal(d / "z.npy", d / "y.npy", "--logits", "--chunk-rows", 100)
    assert "report" in shown and "rows" in shown and "%" in shown
    hidden = stderr_on_a_terminal(d / "z.npy", d / "y.npy", "--logits", "--chunk-rows", 100,
                                  "--no-progress")
    assert hidden == ""
    piped = run_cli(d / "z.npy", d / "y.npy", "--logits", "--chunk-rows", 100)
    assert piped.returncode == 0 and piped.stderr == ""


# -------------------------------------------------------------------------------- errors --

def test_missing_files(data):
    z, y, d = data
    assert_one_line_error(run_cli(d / "nope.npy", d / "y.npy"), d / "nope.npy")
    assert_one_line_error(run_cli(d / "z.npy", d / "nope.npy"), d / "nope.npy")
    assert_one_line_error(run_cli(d, d / "y.npy"), d)


def test_wrong_label_count(data):
    z, y, d = data
    np.save(d / "short.npy", y[:-1])
    line = assert_one_line_error(run_cli(d / "z.npy", d / "short.npy"), d / "short.npy")
    assert f"{N - 1} labels" in line and f"{N} rows" in line


def test_labels_out_of_range(data):
    z, y, d = data
    bad = y.copy()
    bad[2500] = K
    np.save(d / "bad.npy", bad)
    line = assert_one_line_error(run_cli(d / "z.npy", d / "bad.npy", "--chunk-rows", 1000),
                                 d / "bad.npy")
    assert "rows 2000-2999" in line and f"[0, {K})" in line
    np.save(d / "frac.npy", y + 0.5)
    assert_one_line_error(run_cli(d / "z.npy", d / "frac.npy"), d / "frac.npy")
    np.save(d / "wide.npy", np.stack([y, y], axis=1))
    assert_one_line_error(run_cli(d / "z.npy", d / "wide.npy"), d / "wide.npy")


def test_nan_and_out_of_range_predictions(data):
    z, y, d = data
    bad = z.copy()
    bad[1234, 2] = np.nan
    np.save(d / "nan.npy", bad)
    line = assert_one_line_error(run_cli(d / "nan.npy", d / "y.npy", "--logits"),
                                 d / "nan.npy")
    assert "NaN" in line
    np.save(d / "p.npy", softmax(z.astype(np.float64)) * 1.5)
    line = assert_one_line_error(run_cli(d / "p.npy", d / "y.npy", "--probs"), d / "p.npy")
    assert "[0, 1]" in line
    np.save(d / "cube.npy", z.reshape(N, K, 1))
    assert_one_line_error(run_cli(d / "cube.npy", d / "y.npy"), d / "cube.npy")
    np.save(d / "one.npy", z[:, :1])
    assert_one_line_error(run_cli(d / "one.npy", d / "y.npy", "--logits"), d / "one.npy")


def test_unreadable_files(data):
    z, y, d = data
    (d / "junk.npy").write_bytes(b"not an array at all")
    assert_one_line_error(run_cli(d / "junk.npy", d / "y.npy"), d / "junk.npy")
    (d / "junk.npz").write_bytes(b"not a zip archive")
    assert_one_line_error(run_cli(d / "junk.npz", d / "y.npy"), d / "junk.npz")
    (d / "z.csv").write_text("1,2\n")
    assert_one_line_error(run_cli(d / "z.csv", d / "y.npy"), d / "z.csv")
    whole = (d / "z.npy").read_bytes()
    (d / "cut.npy").write_bytes(whole[:len(whole) // 2])
    line = assert_one_line_error(run_cli(d / "cut.npy", d / "y.npy"), d / "cut.npy")
    assert "truncated" in line
    np.save(d / "objects.npy", np.array([{}, []], dtype=object))
    assert_one_line_error(run_cli(d / "objects.npy", d / "y.npy"), d / "objects.npy")


def test_unreadable_parquet(parquet):
    z, y, d = parquet
    (d / "junk.parquet").write_bytes(b"PAR1 not really")
    assert_one_line_error(run_cli(d / "junk.parquet", d / "y.npy"), d / "junk.parquet")
    assert_one_line_error(run_cli(d / "list.parquet", "nope"), "nope")
    assert_one_line_error(run_cli(d / "list.parquet", "label", "--key", "nope"),
                          d / "list.parquet")
    assert_one_line_error(run_cli(d / "fixed.parquet", d / "labels.parquet"),
                          d / "labels.parquet")  # two columns, no --labels-key


def test_ragged_and_null_parquet(parquet):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    z, y, d = parquet
    rows = list(z)
    rows[1500] = rows[1500][:-1]
    pq.write_table(pa.table({"z": pa.array(rows), "y": y}), d / "ragged.parquet")
    line = assert_one_line_error(run_cli(d / "ragged.parquet", "y", "--logits"),
                                 d / "ragged.parquet")
    assert "row 1500" in line
    score = pa.array([None if i == 7 else float(v) for i, v in enumerate(z[:, 0])])
    pq.write_table(pa.table({"s": score, "y": (y == 0).astype(np.int8)}), d / "null.parquet")
    line = assert_one_line_error(run_cli(d / "null.parquet", "y", "--logits"),
                                 d / "null.parquet")
    assert "null" in line


def test_npz_key_errors(data):
    z, y, d = data
    np.savez(d / "both.npz", logits=z, labels=y)
    line = assert_one_line_error(run_cli(d / "both.npz", d / "y.npy"), d / "both.npz")
    assert "--key" in line
    line = assert_one_line_error(run_cli(d / "both.npz", d / "y.npy", "--key", "nope"),
                                 d / "both.npz")
    assert "logits" in line and "labels" in line


def test_plot_to_a_missing_directory(data):
    pytest.importorskip("matplotlib")
    z, y, d = data
    target = d / "no" / "such" / "dir.png"
    assert_one_line_error(run_cli(d / "z.npy", d / "y.npy", "--plot", target), target)


def run_without(module, *args):
    """The CLI in a child where ``import module`` fails, as when it is not installed."""
    code = (f"import sys; sys.modules[{module!r}] = None\n"
            "from xent_rs.cli import main\n"
            "sys.exit(main(sys.argv[1:]))\n")
    return subprocess.run([sys.executable, "-c", code, "report", *map(str, args)],
                          capture_output=True, text=True, env=subprocess_env(), timeout=300)


def test_missing_optional_packages(parquet):
    z, y, d = parquet
    line = assert_one_line_error(run_without("pyarrow", d / "list.parquet", "label"),
                                 d / "list.parquet")
    assert "pip install" in line and "pyarrow" in line
    target = d / "diagram.png"
    line = assert_one_line_error(run_without("matplotlib", d / "z.npy", d / "y.npy", "--plot",
                                             target, "--logits"), target)
    assert "matplotlib" in line and not target.exists()
    # Without tqdm there is no progress bar, and nothing else changes.
    proc = run_without("tqdm", d / "z.npy", d / "y.npy", "--logits", "--json")
    assert proc.returncode == 0 and proc.stderr == ""
    assert_report(json.loads(proc.stdout), expected(z, y, from_logits=True))


def test_output_closed_early(data):
    z, y, d = data
    cmd = [sys.executable, "-m", "xent_rs", "report", str(d / "z.npy"), str(d / "y.npy"),
           "--logits"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=subprocess_env())
    proc.stdout.close()  # as `| head -0` would
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=300) == 1
    assert err == ""            # no traceback, no "Exception ignored" at exit


@pytest.mark.parametrize("args", [
    [],
    ["--logits", "--probs"],
    ["--probs", "--temperature"],
    ["--bins", "0"],
    ["--bins", "many"],
    ["--chunk-rows", "-1"],
    ["--threads", "0"],
    ["--convention", "left"],
    ["--key", "logits"],          # a .npy file holds one array
    ["--frobnicate"],
])
def test_usage_errors_exit_2(data, args):
    z, y, d = data
    files = [] if not args else [d / "z.npy", d / "y.npy"]
    proc = run_cli(*files, *args)
    assert proc.returncode == 2, proc.stderr
    assert "usage:" in proc.stderr and "Traceback" not in proc.stderr


def test_temperature_of_guessed_probabilities_is_a_usage_error(data):
    z, y, d = data
    np.save(d / "p.npy", softmax(z.astype(np.float64)))
    proc = run_cli(d / "p.npy", d / "y.npy", "--temperature")
    assert proc.returncode == 2 and "--temperature needs logits" in proc.stderr
    # Said after the first window, before the rest is read (a NaN there would exit 1).
    p = np.load(d / "p.npy")
    p[2500] = np.nan
    np.save(d / "p.npy", p)
    proc = run_cli(d / "p.npy", d / "y.npy", "--temperature", "--chunk-rows", 1000)
    assert proc.returncode == 2 and "--temperature needs logits" in proc.stderr


def test_no_command_is_a_usage_error():
    proc = subprocess.run([sys.executable, "-m", "xent_rs"], capture_output=True, text=True,
                          env=subprocess_env())
    assert proc.returncode == 2 and "usage:" in proc.stderr


# ------------------------------------------------------------------- a file beyond 1 GB --

BIG_ROWS, BIG_K = 2_700_000, 100      # float32: 1.08 GB
BIG_RSS_LIMIT = 600 << 20          # the contract: ~600 MB at most for a multi-GB file


def peak_rss_of_cli(*args):
    """Run the CLI from a tiny parent interpreter and return (its JSON, its peak RSS in
    bytes): a child started from this (large) test process would report this process's peak
    as its own, since the high-water mark survives fork and exec."""
    parent = ("import json, resource, subprocess, sys\n"
              "proc = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
              "rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024\n"
              "print(json.dumps([proc.returncode, proc.stdout, proc.stderr, rss]))\n")
    cmd = [sys.executable, "-c", parent, sys.executable, "-m", "xent_rs", "report",
           *map(str, args), "--json", "--no-progress"]
    out = subprocess.run(cmd, capture_output=True, text=True, env=subprocess_env(),
                         timeout=3000, check=True).stdout
    rc, stdout, stderr, rss = json.loads(out)
    assert rc == 0, stderr
    return json.loads(stdout), rss


@pytest.mark.slow
def test_a_file_beyond_a_gigabyte_in_bounded_memory(tmp_path):
    path = tmp_path / "big.npy"
    header = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32,
                                       shape=(BIG_ROWS, BIG_K))
    offset = header.offset
    del header
    labels = np.empty(BIG_ROWS, dtype=np.int64)
    reference = cal.CalibrationAccumulator(from_logits=True)
    step = 100_000
    with open(path, "r+b") as f:  # written chunk by chunk, never held whole
        f.seek(offset)
        for start in range(0, BIG_ROWS, step):
            rng = np.random.default_rng(start)
            z = rng.standard_normal((min(step, BIG_ROWS - start), BIG_K), dtype=np.float32)
            z *= 4.0
            y = np.argmax(z + rng.gumbel(size=z.shape).astype(np.float32) * 2.0, axis=1)
            labels[start:start + len(z)] = y
            reference.update(z, y)
            f.write(z.tobytes())
            del z
    assert path.stat().st_size > 1_000_000_000
    np.save(tmp_path / "labels.npy", labels)
    del labels
    want = reference.result()

    got, rss = peak_rss_of_cli(path, tmp_path / "labels.npy", "--logits")
    print(f"peak RSS of the report over {path.stat().st_size / 1e9:.2f} GB: {rss / 2**20:.0f} MiB")
    assert rss < BIG_RSS_LIMIT, rss
    for key in METRIC_KEYS:
        if key != "n_classes":
            assert got[key] == pytest.approx(getattr(want, key), rel=METRIC_RTOL), key

    got, rss = peak_rss_of_cli(path, tmp_path / "labels.npy", "--logits", "--temperature")
    print(f"peak RSS with --temperature: {rss / 2**20:.0f} MiB")
    assert rss < BIG_RSS_LIMIT, rss
    assert got["ece"] == pytest.approx(want.ece, rel=METRIC_RTOL)
    assert 0 < got["temperature"] < np.inf
    assert got["after_temperature"]["nll"] < got["nll"]
