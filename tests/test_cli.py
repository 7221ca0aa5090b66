"""The ``xent-rs`` command line, run as a real subprocess on real files."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import xent_rs
from xent_rs import _files

REPO = Path(__file__).resolve().parents[1]


def run(*args: str, limit_data: int | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m xent_rs ARGS`` (optionally under a data-segment limit, in bytes)."""
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1")
    env.pop("XENT_RS_TRACEBACK", None)
    preexec = None
    if limit_data is not None:
        import resource

        def preexec() -> None:
            resource.setrlimit(resource.RLIMIT_DATA, (limit_data, limit_data))

    return subprocess.run(
        [sys.executable, "-m", "xent_rs", *args],
        capture_output=True,
        text=True,
        env=env,
        preexec_fn=preexec,
        timeout=120,
    )


def score_json(*args: str) -> dict[str, Any]:
    proc = run("score", *args, "--json")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


def one_line_error(proc: subprocess.CompletedProcess[str], name: str, *words: str) -> str:
    """The process failed with one line on stderr naming ``name``; returns the line."""
    assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr)
    assert proc.stdout == ""
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    line = lines[0]
    assert line.startswith(f"xent-rs: error: {name}"), line
    for word in words:
        assert word in line, line
    return line


def mean_log_loss(data: dict[str, Any]) -> float:
    """The log loss of the fixture's probabilities, in plain NumPy (none is near 0 or 1)."""
    picked = data["proba"][np.arange(len(data["labels"])), data["labels"]]
    return float(-np.log(picked).mean())


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Logits, probabilities, labels and weights, as arrays and as .npy files."""
    d = tmp_path_factory.mktemp("cli")
    rng = np.random.default_rng(7)
    n, c = 10_000, 6
    logits = (rng.normal(size=(n, c)) * 2).astype(np.float32)
    labels = rng.integers(0, c, size=n)
    proba = xent_rs.softmax(logits.astype(np.float64))
    weights = rng.random(n)
    arrays = {"logits": logits, "labels": labels, "proba": proba, "weights": weights}
    for name, array in arrays.items():
        np.save(d / f"{name}.npy", array)
    return {"dir": d, **arrays}


def write_score_tables(data: dict[str, Any], tmp_path: Path) -> tuple[Any, Any]:
    """``scores.parquet`` and ``scores.arrow``: columns p0..p5 and label, in several chunks.

    Returns the ``pyarrow`` and ``pyarrow.parquet`` modules (the test skips without them).
    """
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    columns = {f"p{i}": data["proba"][:, i] for i in range(6)}
    table = pa.table({**columns, "label": data["labels"]})
    pq.write_table(table, tmp_path / "scores.parquet", row_group_size=2500)
    with pa.ipc.new_file(tmp_path / "scores.arrow", table.schema) as writer:
        writer.write_table(table, max_chunksize=1500)
    return pa, pq


def test_score_npy_in_chunks_matches_the_one_shot_function(data: dict[str, Any]) -> None:
    d = data["dir"]
    result = score_json(
        str(d / "logits.npy"),
        str(d / "labels.npy"),
        "--loss",
        "cross_entropy",
        "--chunk-rows",
        "999",
    )
    assert result["rows"] == 10_000 and result["chunks"] == 11
    assert result["loss"] == "cross_entropy" and result["reduction"] == "mean"
    want = xent_rs.cross_entropy(data["logits"], data["labels"])
    assert result["value"] == pytest.approx(float(want), rel=1e-6)
    assert result["value"] == pytest.approx(
        float(xent_rs.cross_entropy(data["logits"].astype(np.float64), data["labels"])), rel=1e-6
    )
    # the plain output: the loss, the rows and the throughput
    proc = run("score", str(d / "logits.npy"), str(d / "labels.npy"), "--loss", "ce")
    assert proc.returncode == 0, proc.stderr
    assert f"cross_entropy (mean): {result['value']:.10g}" in proc.stdout
    assert "rows: 10,000" in proc.stdout and "rows/s" in proc.stdout
    assert proc.stderr == ""  # not a terminal: no progress bar


def test_log_loss_with_weights_and_options(data: dict[str, Any]) -> None:
    metrics = pytest.importorskip("sklearn.metrics")
    d = data["dir"]
    result = score_json(
        str(d / "proba.npy"), str(d / "labels.npy"), "--weight", str(d / "weights.npy"),
        "--chunk-rows", "4096",
    )  # fmt: skip
    want = metrics.log_loss(data["labels"], data["proba"], sample_weight=data["weights"])
    assert result["loss"] == "log_loss" and result["chunks"] == 3
    assert result["value"] == pytest.approx(want, rel=1e-12)
    assert result["denominator"] == pytest.approx(data["weights"].sum(), rel=1e-12)
    total = score_json(str(d / "proba.npy"), str(d / "labels.npy"), "--reduction", "sum")
    assert total["value"] == pytest.approx(
        metrics.log_loss(data["labels"], data["proba"], normalize=False), rel=1e-12
    )
    logits = score_json(str(d / "logits.npy"), str(d / "labels.npy"), "--from-logits")
    assert logits["value"] == pytest.approx(
        xent_rs.log_loss(data["labels"], data["logits"], from_logits=True), rel=1e-6
    )
    smoothed = score_json(
        str(d / "logits.npy"), str(d / "labels.npy"), "--loss", "cross_entropy",
        "--class-weight", "1,2,3,1,2,3", "--label-smoothing", "0.1", "--ignore-index", "2",
        "--chunk-rows", "3000",
    )  # fmt: skip
    want_ce = xent_rs.cross_entropy(
        data["logits"].astype(np.float64),
        data["labels"],
        weight=np.array([1.0, 2, 3, 1, 2, 3]),
        label_smoothing=0.1,
        ignore_index=2,
    )
    assert smoothed["value"] == pytest.approx(float(want_ce), rel=1e-6)


def test_per_row_losses(data: dict[str, Any], tmp_path: Path) -> None:
    d = data["dir"]
    out = tmp_path / "rows.npy"
    result = score_json(
        str(d / "logits.npy"), str(d / "labels.npy"), "--loss", "cross_entropy",
        "--per-row", str(out), "--chunk-rows", "1234",
    )  # fmt: skip
    rows = np.load(out)
    want = xent_rs.cross_entropy(data["logits"], data["labels"], reduction="none")
    assert rows.dtype == np.float32
    np.testing.assert_array_equal(rows, want)
    assert result["per_row"] == str(out)
    out2 = tmp_path / "ll.npy"
    score_json(str(d / "proba.npy"), str(d / "labels.npy"), "--per-row", str(out2))
    picked = data["proba"][np.arange(10_000), data["labels"]]
    np.testing.assert_allclose(np.load(out2), -np.log(picked), rtol=1e-12)


def test_binary_cross_entropy(tmp_path: Path) -> None:
    rng = np.random.default_rng(8)
    logits = rng.normal(size=(3000, 4))
    target = (rng.random((3000, 4)) < 0.5).astype(np.float64)
    np.save(tmp_path / "x.npy", logits)
    np.save(tmp_path / "y.npy", target)
    result = score_json(
        str(tmp_path / "x.npy"), str(tmp_path / "y.npy"), "--loss", "bce", "--from-logits",
        "--pos-weight", "1,2,3,4", "--chunk-rows", "700",
    )  # fmt: skip
    assert result["loss"] == "binary_cross_entropy_with_logits" and result["count"] == 12_000
    want = xent_rs.binary_cross_entropy_with_logits(logits, target, pos_weight=[1.0, 2, 3, 4])
    assert result["value"] == pytest.approx(float(want), rel=1e-12)


def test_npz_parquet_and_arrow_inputs(data: dict[str, Any], tmp_path: Path) -> None:
    np.savez_compressed(tmp_path / "both.npz", logits=data["logits"], labels=data["labels"])
    want = float(xent_rs.cross_entropy(data["logits"], data["labels"]))
    result = score_json(
        f"{tmp_path / 'both.npz'}:logits", f"{tmp_path / 'both.npz'}:labels",
        "--loss", "cross_entropy", "--chunk-rows", "3333",
    )  # fmt: skip
    assert result["chunks"] == 4 and result["value"] == pytest.approx(want, rel=1e-6)

    pa, pq = write_score_tables(data, tmp_path)
    want_ll = mean_log_loss(data)
    for name in ("scores.parquet", "scores.arrow"):
        path = tmp_path / name
        result = score_json(f"{path}:p*", f"{path}:label", "--chunk-rows", "4000")
        assert result["rows"] == 10_000 and result["chunks"] == 3
        assert result["value"] == pytest.approx(want_ll, rel=1e-12)
    # one list column with string labels
    names = np.array(["a", "b", "c", "d", "e", "f"])[data["labels"]]
    lists = pa.table({"proba": list(data["proba"]), "label": names})
    pq.write_table(lists, tmp_path / "lists.parquet", row_group_size=3000)
    path = tmp_path / "lists.parquet"
    result = score_json(f"{path}:proba", f"{path}:label", "--labels", "a,b,c,d,e,f")
    assert result["value"] == pytest.approx(want_ll, rel=1e-12)
    proc = run("score", f"{path}:proba", f"{path}:label")
    one_line_error(proc, f"{path}:label", "--labels")
    proc = run("score", f"{path}:nope", f"{path}:label")
    one_line_error(proc, f"{path}:nope", "no column 'nope'")


# Python code that makes pandas not installed, as far as `import pandas` can tell.
NO_PANDAS = """
import sys

class NoPandas:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "pandas":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)

sys.meta_path.insert(0, NoPandas())
"""


def test_parquet_and_arrow_without_pandas(data: dict[str, Any], tmp_path: Path) -> None:
    # The parquet extra is pyarrow alone. Before pyarrow 26, DataType.to_pandas_dtype() imported
    # pandas, so column types must be read without it.
    pa, pq = write_score_tables(data, tmp_path)
    pq.write_table(pa.table({"proba": list(data["proba"])}), tmp_path / "lists.parquet")
    no_pandas = NO_PANDAS + "from xent_rs.cli import main; sys.exit(main(sys.argv[1:]))"
    want = mean_log_loss(data)
    for pred, target in [
        ("scores.parquet:p*", "scores.parquet:label"),
        ("scores.arrow:p*", "scores.arrow:label"),
        ("lists.parquet:proba", "scores.parquet:label"),
    ]:
        args = ["score", str(tmp_path / pred), str(tmp_path / target), "--json"]
        proc = subprocess.run(
            [sys.executable, "-c", no_pandas, *args],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)["value"] == pytest.approx(want, rel=1e-12)
    # a type with no NumPy dtype is still a one-line error
    times = pa.table({"t": pa.array(np.arange(10, dtype=np.int32), pa.time32("s"))})
    pq.write_table(times, tmp_path / "times.parquet")
    proc = run("score", f"{tmp_path / 'times.parquet'}:t", f"{tmp_path / 'scores.parquet'}:label")
    one_line_error(proc, f"{tmp_path / 'times.parquet'}:t", "time32", "cannot be scored")


@pytest.mark.parametrize(
    ("error", "words"),
    [
        ("ModuleNotFoundError(\"No module named 'pyarrow'\", name='pyarrow')", ["needs pyarrow"]),
        # what pyarrow 26 raises under NumPy 1.x (pip pairs them: pyarrow does not declare it)
        ("ImportError('pyarrow requires NumPy 2.0 or newer, found 1.23.5')", ["NumPy 2.0"]),
    ],
    ids=["missing", "broken"],
)
def test_parquet_without_a_working_pyarrow(tmp_path: Path, error: str, words: list[str]) -> None:
    code = f"""
import sys

class NoPyarrow:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "pyarrow":
            raise {error}

sys.meta_path.insert(0, NoPyarrow())
from xent_rs.cli import main
sys.exit(main(sys.argv[1:]))
"""
    path = tmp_path / "scores.parquet"
    path.write_bytes(b"PAR1")
    proc = subprocess.run(
        [sys.executable, "-c", code, "score", f"{path}:p*", f"{path}:label"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    one_line_error(proc, f"{path}:p*", *words)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_DATA semantics")
def test_a_file_bigger_than_the_memory_allowed(tmp_path: Path) -> None:
    """Under a data limit that np.load cannot load the file in, score still reads it."""
    rows, classes = 6_000_000, 10
    x = np.lib.format.open_memmap(
        tmp_path / "big.npy", mode="w+", dtype=np.float32, shape=(rows, classes)
    )
    for start in range(0, rows, 1_000_000):
        x[start : start + 1_000_000] = np.linspace(-1, 1, classes, dtype=np.float32)
    x.flush()
    del x
    np.save(tmp_path / "y.npy", np.arange(rows, dtype=np.int64) % classes)
    limit = 170 << 20  # the predictions alone are 240 MB
    loader = subprocess.run(
        [sys.executable, "-c", f"import numpy as np; np.load({str(tmp_path / 'big.npy')!r})"],
        capture_output=True,
        text=True,
        env=dict(os.environ, OPENBLAS_NUM_THREADS="1"),
        preexec_fn=lambda: __import__("resource").setrlimit(
            __import__("resource").RLIMIT_DATA, (limit, limit)
        ),
    )
    assert loader.returncode != 0 and "MemoryError" in loader.stderr
    proc = run(
        "score", str(tmp_path / "big.npy"), str(tmp_path / "y.npy"), "--loss", "cross_entropy",
        "--chunk-rows", "250000", "--json", limit_data=limit,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["rows"] == rows and result["chunks"] == 24
    row = np.linspace(-1, 1, classes)
    per_class = np.log(np.exp(row).sum()) - row
    assert result["value"] == pytest.approx(per_class.mean(), rel=1e-6)


def test_npy_sources_are_memory_mapped(data: dict[str, Any]) -> None:
    source = _files.open_source(str(data["dir"] / "logits.npy"))
    try:
        chunk = source.read(100, 200)
        assert isinstance(chunk, np.memmap) and chunk.shape == (100, 6)
        assert not chunk.flags.owndata and not chunk.flags.writeable
    finally:
        source.close()


# ---------------------------------------------------------------------------------------------
# bad files: one line naming the file, exit status 1, never a traceback
# ---------------------------------------------------------------------------------------------


def test_bad_files(data: dict[str, Any], tmp_path: Path) -> None:
    d = data["dir"]
    logits, labels = str(d / "logits.npy"), str(d / "labels.npy")

    missing = str(tmp_path / "missing.npy")
    one_line_error(run("score", missing, labels), missing, "no such file")

    truncated = tmp_path / "truncated.npy"
    truncated.write_bytes((d / "logits.npy").read_bytes()[:10_000])
    one_line_error(run("score", str(truncated), labels), str(truncated), "truncated")

    garbage = tmp_path / "garbage.npy"
    garbage.write_bytes(b"predictions,label\n0.1,1\n")
    one_line_error(run("score", str(garbage), labels), str(garbage), "not a .npy file")

    short = tmp_path / "short.npy"
    np.save(short, data["labels"][:-1])
    one_line_error(
        run("score", logits, str(short), "--loss", "ce"), str(short), "9,999 rows", "10,000"
    )

    wrong_shape = tmp_path / "wrong_shape.npy"
    np.save(wrong_shape, data["labels"].reshape(10_000, 1))
    one_line_error(
        run("score", logits, str(wrong_shape), "--loss", "ce"), str(wrong_shape), "shape (10000, 1)"
    )

    text = tmp_path / "text.npy"
    np.save(text, np.array(["0.5"] * 10_000))
    one_line_error(run("score", str(text), labels), str(text), "text values")

    float_labels = tmp_path / "float_labels.npy"
    np.save(float_labels, data["labels"].astype(np.float64))
    one_line_error(
        run("score", logits, str(float_labels), "--loss", "ce"),
        str(float_labels),
        "cast class indices to integers",
    )

    objects = tmp_path / "objects.npy"
    np.save(objects, np.array([{"p": 1}], dtype=object), allow_pickle=True)
    one_line_error(run("score", str(objects), labels), str(objects), "Python objects")

    out_of_range = tmp_path / "out_of_range.npy"
    bad = data["labels"].copy()
    bad[7777] = 6
    np.save(out_of_range, bad)
    line = one_line_error(
        run("score", logits, str(out_of_range), "--loss", "ce", "--chunk-rows", "1000"),
        str(out_of_range),
        "label 6 at row 7,777",
    )
    assert "0..5" in line
    one_line_error(
        run("score", str(d / "proba.npy"), str(out_of_range)), str(out_of_range), "row 7,777"
    )

    bad_proba = tmp_path / "bad_proba.npy"
    p = data["proba"].copy()
    p[4321, 2] = 1.5
    np.save(bad_proba, p)
    one_line_error(run("score", str(bad_proba), labels), str(bad_proba), "row 4,321", "1.5")

    np.savez(tmp_path / "two.npz", a=data["logits"], b=data["labels"])
    two = str(tmp_path / "two.npz")
    one_line_error(run("score", two, labels), two, "holds 2 arrays (a, b)")
    one_line_error(run("score", f"{two}:c", labels), f"{two}:c", "no array 'c'")

    names = tmp_path / "names.npy"
    words = np.array(["a", "b", "c", "d", "e", "f"])[data["labels"]].astype("<U5")
    words[5000] = "zebra"
    np.save(names, words)
    one_line_error(
        run("score", str(d / "proba.npy"), str(names), "--labels", "a,b,c,d,e,f"),
        str(names),
        "row 5,000 (label 'zebra')",
    )
    one_line_error(
        run("score", str(d / "proba.npy"), str(names), "--labels", "a,b,c"),
        str(d / "proba.npy"),
        "6 class columns but --labels names 3",
    )

    unknown = tmp_path / "scores.csv"
    unknown.write_text("0.5\n")
    one_line_error(run("score", str(unknown), labels), str(unknown), "unknown file type")

    out = tmp_path / "partial.npy"
    one_line_error(
        run("score", logits, str(out_of_range), "--loss", "ce", "--per-row", str(out)),
        str(out_of_range),
    )
    assert not out.exists()  # no half-written output is left behind

    # --per-row naming an input (or a link to one) would truncate it before it is read.
    link = tmp_path / "link.npy"
    link.symlink_to(logits)
    before = Path(logits).read_bytes()
    for per_row, args in (
        (logits, [logits, labels]),
        (labels, [logits, labels]),
        (str(link), [logits, labels]),
    ):
        one_line_error(
            run("score", *args, "--loss", "ce", "--per-row", per_row), per_row, "is the input"
        )
    assert Path(logits).read_bytes() == before


def test_usage_errors_exit_with_status_2(data: dict[str, Any]) -> None:
    d = data["dir"]
    for args in (
        ["--loss", "hinge"],
        ["--loss", "nll_loss", "--from-logits"],
        ["--ignore-index", "3"],  # log_loss has no ignore_index
        ["--loss", "ce", "--axis", "0"],
        ["--chunk-rows", "0"],
        ["--loss", "ce", "--label-smoothing", "-0.1"],  # values the loss itself refuses
        ["--loss", "ce", "--ignore-index", str(2**64)],
        ["--loss", "ce", "--ignore-index", "1.5"],  # not an integer (not read as 1)
        ["--loss", "ce", "--ignore-index", "True"],
    ):
        proc = run("score", str(d / "logits.npy"), str(d / "labels.npy"), *args)
        assert proc.returncode == 2, (args, proc.stderr)
        assert proc.stderr.startswith("xent-rs: error:") or "usage:" in proc.stderr
        assert "Traceback" not in proc.stderr
        if args[-2:] in (["--ignore-index", "1.5"], ["--ignore-index", "True"]):
            assert "--ignore-index" in proc.stderr and args[-1] in proc.stderr, proc.stderr
    assert run().returncode == 2


def test_progress_bar_when_asked(data: dict[str, Any]) -> None:
    d = data["dir"]
    proc = run(
        "score", str(d / "proba.npy"), str(d / "labels.npy"), "--progress", "--chunk-rows", "100"
    )
    assert proc.returncode == 0
    assert "[####" in proc.stderr and "rows/s" in proc.stderr and "100.0%" in proc.stderr


def test_demo_runs_and_compares_with_numpy() -> None:
    proc = run("demo", "--rows", "50000")
    assert proc.returncode == 0, proc.stderr
    assert "xent-rs score" in proc.stdout and "plain NumPy" in proc.stdout
    assert "faster" in proc.stdout
    proc = run("demo", "--rows", "30000", "--classes", "4", "--json")
    result = json.loads(proc.stdout)
    assert result["rows"] == 30000
    assert result["xent_rs"]["value"] == pytest.approx(result["numpy"]["value"], rel=1e-5)
    assert result["speedup"] > 0


@pytest.mark.skipif(shutil.which("xent-rs") is None, reason="the console script is not installed")
def test_console_script(data: dict[str, Any]) -> None:
    d = data["dir"]
    proc = subprocess.run(
        ["xent-rs", "score", str(d / "proba.npy"), str(d / "labels.npy"), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["value"] == pytest.approx(mean_log_loss(data), rel=1e-12)
