"""Threads: results are bitwise identical for any number of threads, the pool size is
configurable (set_num_threads, XENT_RS_NUM_THREADS) and the GIL is released during the work."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import threading
import zlib
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from conftest import assert_same_bits

xent_rs = pytest.importorskip("xent_rs")

Array = npt.NDArray[Any]
THREAD_COUNTS = (1, 2, 3)


@cache
def _data(name: str) -> dict[str, Any]:
    """Large inputs (well above the single-thread threshold), built once."""
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    if name == "ce_wide":  # (4096, 300): weights, ignored rows, label smoothing
        x = (3.0 * rng.standard_normal((4096, 300))).astype(np.float32)
        t = rng.integers(0, 300, size=4096)
        t[rng.random(4096) < 0.1] = -100
        w = rng.uniform(0.2, 2.0, size=300).astype(np.float32)
        return {"x": x, "t": t, "w": w}
    if name == "ce_small_c":  # (2**20, 10)
        x = rng.standard_normal((2**20, 10), dtype=np.float32)
        t = rng.integers(0, 10, size=2**20)
        sw = rng.uniform(0.0, 2.0, size=2**20).astype(np.float32)
        return {"x": x, "t": t, "sw": sw}
    if name == "ce_seg":  # (8, 5, 64, 64), classes on axis 1
        x = rng.standard_normal((8, 5, 64, 64), dtype=np.float32)
        t = rng.integers(0, 5, size=(8, 64, 64))
        t[rng.random((8, 64, 64)) < 0.05] = 255
        return {"x": x, "t": t}
    if name == "bce":  # 2**21 elements
        x = (4.0 * rng.standard_normal((2**11, 2**10))).astype(np.float32)
        y = (rng.random((2**11, 2**10)) < 0.3).astype(np.float32)
        pw = rng.uniform(0.5, 3.0, size=2**10).astype(np.float32)
        p = rng.uniform(0.0, 1.0, size=(2**11, 2**10))
        return {"x": x, "y": y, "pw": pw, "p": p}
    if name == "f64":
        x64 = rng.standard_normal((4096, 300))
        t = rng.integers(0, 300, size=4096)
        soft = rng.random((4096, 300))
        soft /= soft.sum(axis=1, keepdims=True)
        return {"x": x64, "t": t, "soft": soft}
    raise KeyError(name)


def _ce_wide(reduction: str) -> Callable[[], Any]:
    def run() -> Any:
        d = _data("ce_wide")
        return xent_rs.cross_entropy(
            d["x"],
            d["t"],
            weight=d["w"],
            label_smoothing=0.1,
            reduction=reduction,
            return_grad=True,
        )

    return run


WORKLOADS: dict[str, Callable[[], Any]] = {
    "ce_wide_mean": _ce_wide("mean"),
    "ce_wide_sum": _ce_wide("sum"),
    "ce_wide_none": _ce_wide("none"),
    "ce_wide_loss_only": lambda: xent_rs.cross_entropy(
        _data("ce_wide")["x"], _data("ce_wide")["t"], weight=_data("ce_wide")["w"]
    ),
    "ce_small_c": lambda: xent_rs.cross_entropy(
        _data("ce_small_c")["x"], _data("ce_small_c")["t"], return_grad=True
    ),
    "ce_small_c_sample_weight": lambda: xent_rs.cross_entropy(
        _data("ce_small_c")["x"],
        _data("ce_small_c")["t"],
        sample_weight=_data("ce_small_c")["sw"],
        return_grad=True,
    ),
    "ce_seg_axis1": lambda: xent_rs.cross_entropy(
        _data("ce_seg")["x"], _data("ce_seg")["t"], axis=1, ignore_index=255, return_grad=True
    ),
    "nll_seg_axis1": lambda: xent_rs.nll_loss(
        _data("ce_seg")["x"], _data("ce_seg")["t"], axis=1, ignore_index=255, return_grad=True
    ),
    "bce_with_logits": lambda: xent_rs.binary_cross_entropy_with_logits(
        _data("bce")["x"], _data("bce")["y"], pos_weight=_data("bce")["pw"], return_grad=True
    ),
    "bce": lambda: xent_rs.binary_cross_entropy(
        _data("bce")["p"], _data("bce")["y"], reduction="sum", return_grad=True
    ),
    "log_softmax": lambda: xent_rs.log_softmax(_data("ce_wide")["x"]),
    "softmax_axis1": lambda: xent_rs.softmax(_data("ce_seg")["x"], axis=1),
    "logsumexp": lambda: xent_rs.logsumexp(_data("ce_small_c")["x"]),
    "log_softmax_backward": lambda: xent_rs.log_softmax_backward(
        _data("f64")["soft"], xent_rs.log_softmax(_data("f64")["x"])
    ),
    "ce_f64_hard": lambda: xent_rs.cross_entropy(
        _data("f64")["x"], _data("f64")["t"], return_grad=True
    ),
    "ce_f64_soft": lambda: xent_rs.cross_entropy(
        _data("f64")["x"], _data("f64")["soft"], label_smoothing=0.05, return_grad=True
    ),
}


def _flatten(res: Any) -> list[Any]:
    return list(res) if isinstance(res, tuple) else [res]


@pytest.mark.parametrize("name", sorted(WORKLOADS))
def test_bitwise_identical_across_thread_counts(restore_threads: Any, name: str) -> None:
    results = []
    for n in THREAD_COUNTS:
        xent_rs.set_num_threads(n)
        assert xent_rs.get_num_threads() == n
        results.append(_flatten(WORKLOADS[name]()))
    base = results[0]
    for n, res in zip(THREAD_COUNTS[1:], results[1:], strict=True):
        assert len(res) == len(base)
        for i, (a, b) in enumerate(zip(res, base, strict=True)):
            assert_same_bits(a, b, what=f"{name} result {i}, {n} threads vs 1")
    # and the result is a real number, not an all-nan artefact
    assert np.any(np.isfinite(np.asarray(base[0])))


def test_set_and_get_num_threads(restore_threads: Any) -> None:
    for n in (1, 3, 2, 5):
        xent_rs.set_num_threads(n)
        assert xent_rs.get_num_threads() == n
    # the pool works after being resized
    x = np.random.default_rng(1).standard_normal((1024, 64))
    xent_rs.set_num_threads(4)
    a = xent_rs.log_softmax(x)
    xent_rs.set_num_threads(1)
    assert_same_bits(xent_rs.log_softmax(x), a)


def _threads_in_subprocess(env_value: str | None) -> int:
    env = {k: v for k, v in os.environ.items() if k != "XENT_RS_NUM_THREADS"}
    if env_value is not None:
        env["XENT_RS_NUM_THREADS"] = env_value
    proc = subprocess.run(
        [sys.executable, "-c", "import xent_rs; print(xent_rs.get_num_threads())"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return int(proc.stdout.strip())


@pytest.mark.parametrize("value", [1, 3, 7])
def test_env_var_sets_initial_thread_count(value: int) -> None:
    assert _threads_in_subprocess(str(value)) == value


def test_default_thread_count_is_number_of_cpus() -> None:
    n = _threads_in_subprocess(None)
    cpus = {os.cpu_count() or 1}
    if hasattr(os, "sched_getaffinity"):
        cpus.add(len(os.sched_getaffinity(0)))
    try:  # a cgroup CPU quota (containers) also bounds the available parallelism
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cpus.add(max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    assert n in cpus


# --------------------------------------------------------------------------------------------
# the GIL is released while the kernels run
# --------------------------------------------------------------------------------------------


def _main_thread_ran_during(call: Callable[[], Any]) -> bool:
    """Runs ``call`` in a worker thread; True if the main thread got to run before it returned.

    With a switch interval of 10 s, the interpreter does not take the GIL away from the worker
    while it runs Python code; the only way for the main thread to run before the worker has
    finished is for ``call`` to release the GIL.
    """
    started = threading.Event()
    state = {"finished": False}
    errors: list[BaseException] = []

    def worker() -> None:
        started.set()
        try:
            call()
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)
        state["finished"] = True

    old = sys.getswitchinterval()
    sys.setswitchinterval(10.0)
    try:
        th = threading.Thread(target=worker)
        th.start()
        started.wait()
        finished_when_main_ran = state["finished"]
        th.join()
    finally:
        sys.setswitchinterval(old)
    assert not errors, errors
    assert state["finished"]
    return not finished_when_main_ran


@cache
def _gil_data() -> dict[str, Array]:
    rng = np.random.default_rng(3)
    x = rng.standard_normal((300_000, 100), dtype=np.float32)  # 3e7 elements
    t = rng.integers(0, 100, size=300_000)
    y = (rng.random((300_000, 100)) < 0.5).astype(np.float32)
    return {"x": x, "t": t, "y": y}


GIL_CALLS: dict[str, Callable[[], Any]] = {
    "cross_entropy": lambda: xent_rs.cross_entropy(
        _gil_data()["x"], _gil_data()["t"], return_grad=True
    ),
    "log_softmax": lambda: xent_rs.log_softmax(_gil_data()["x"]),
    "binary_cross_entropy_with_logits": lambda: xent_rs.binary_cross_entropy_with_logits(
        _gil_data()["x"], _gil_data()["y"], return_grad=True
    ),
}


@pytest.mark.parametrize("name", sorted(GIL_CALLS))
def test_gil_released(name: str) -> None:
    _gil_data()  # build the inputs outside the measured call
    assert _main_thread_ran_during(GIL_CALLS[name]), (
        f"{name} held the GIL for the whole call: the main thread could not run meanwhile"
    )


def test_gil_probe_detects_a_gil_holding_call() -> None:
    # the probe itself: pure-Python work never lets the main thread in
    def busy() -> None:
        total = 0
        for i in range(2_000_000):
            total += i
        assert total > 0

    assert not _main_thread_ran_during(busy)
