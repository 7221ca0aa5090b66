"""The output cache: large fresh outputs reuse the memory of freed ones, the arrays behave as
NumPy's own, and the cache's size is configurable (set_output_cache, XENT_RS_OUTPUT_CACHE_MB)."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

xent_rs = pytest.importorskip("xent_rs")

# 2**21 float32 values: 8 MiB, above the 4 MiB the cache starts at.
SHAPE = (2048, 1024)


def _address(a: npt.NDArray[Any]) -> int:
    return int(a.__array_interface__["data"][0])


@pytest.fixture
def logits() -> npt.NDArray[np.float32]:
    return np.random.default_rng(7).standard_normal(SHAPE, dtype=np.float32)


@pytest.fixture(autouse=True)
def _default_limit() -> Iterator[None]:
    before = xent_rs.get_output_cache()
    yield
    xent_rs.set_output_cache(before)


def test_freed_output_memory_is_reused(logits: npt.NDArray[np.float32]) -> None:
    xent_rs.set_output_cache(1 << 30)
    first = xent_rs.log_softmax(logits)
    address = _address(first)
    del first
    gc.collect()
    second = xent_rs.log_softmax(logits)
    assert _address(second) == address
    # Reused memory holds the old values until overwritten: the result must not depend on it.
    np.testing.assert_array_equal(second, xent_rs.log_softmax(logits.copy()))


def test_live_outputs_never_share_memory(logits: npt.NDArray[np.float32]) -> None:
    outputs = [xent_rs.softmax(logits) for _ in range(4)]
    addresses = {_address(o) for o in outputs}
    assert len(addresses) == 4
    for o in outputs:
        np.testing.assert_allclose(o.sum(axis=1), 1.0, rtol=1e-5)


def test_cached_arrays_are_ordinary_arrays(logits: npt.NDArray[np.float32]) -> None:
    xent_rs.set_output_cache(1 << 30)
    loss, grad = xent_rs.cross_entropy(logits, np.zeros(SHAPE[0], np.int64), return_grad=True)
    assert grad.flags.owndata and grad.flags.writeable and grad.flags.c_contiguous
    assert grad.base is None
    assert grad.__array_interface__["data"][0] % (1 << 21) == 0
    before = grad.copy()
    grad.resize((SHAPE[0] * 2, SHAPE[1]), refcheck=False)  # realloc through the hooks
    np.testing.assert_array_equal(grad[: SHAPE[0]], before)
    grad.resize((16, SHAPE[1]), refcheck=False)
    np.testing.assert_array_equal(grad, before[:16])
    assert np.isfinite(loss)


def test_small_outputs_bypass_the_cache() -> None:
    x = np.ones((4, 10), np.float32)
    y = xent_rs.log_softmax(x)
    np.testing.assert_allclose(y, -np.log(10.0), rtol=1e-6)
    assert y.flags.owndata


def test_limit_round_trips_and_zero_disables(logits: npt.NDArray[np.float32]) -> None:
    xent_rs.set_output_cache(12345)
    assert xent_rs.get_output_cache() == 12345
    xent_rs.set_output_cache(0)
    assert xent_rs.get_output_cache() == 0
    out = xent_rs.log_softmax(logits)
    np.testing.assert_allclose(out, xent_rs.log_softmax(logits, out=np.empty_like(logits)))


def test_negative_limit_is_refused() -> None:
    with pytest.raises(ValueError, match="output cache size must be at least 0"):
        xent_rs.set_output_cache(-1)


def test_outputs_freed_on_other_threads(logits: npt.NDArray[np.float32]) -> None:
    expected = xent_rs.log_softmax(logits)
    failures: list[str] = []

    def work() -> None:
        for _ in range(10):
            out = xent_rs.log_softmax(logits)
            if not np.array_equal(out, expected):
                failures.append("wrong values")
            del out

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []


def test_environment_sets_the_initial_limit() -> None:
    code = "import xent_rs; print(xent_rs.get_output_cache())"
    env = dict(os.environ, XENT_RS_OUTPUT_CACHE_MB="3")
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert int(out.stdout) == 3 << 20


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="address-space limit via /proc")
@pytest.mark.parametrize("cache_mb", ["1024", "0"])
def test_failed_output_allocation_is_numpys_memory_error(cache_mb: str) -> None:
    # The output does not fit under the address-space limit: NumPy's MemoryError, nothing on
    # stderr from Rust, and NumPy's allocator is current again afterwards.
    code = """
import resource, numpy as np, xent_rs
try:
    from numpy._core.multiarray import get_handler_name
except ImportError:  # NumPy 1.x (numpy.core became numpy._core in 2.0)
    from numpy.core.multiarray import get_handler_name
x = np.zeros((1 << 26,), np.float32)
pages = int(open("/proc/self/statm").read().split()[0])
limit = pages * resource.getpagesize() + (64 << 20)
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
try:
    xent_rs.softmax(x)
    print("no error")
except MemoryError:
    print("MemoryError")
print(get_handler_name())
"""
    env = dict(os.environ, XENT_RS_OUTPUT_CACHE_MB=cache_mb, OPENBLAS_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["MemoryError", "default_allocator"], proc.stdout
    assert "panicked" not in proc.stderr, proc.stderr
