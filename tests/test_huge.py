"""Inputs of more than 2**31 elements: every offset past the 32-bit range is read and written
where it belongs.

The data are a random block of prime length tiled over the whole array (cheap to make, and
every position still sees other values than its neighbours), so that the float64 reference
needs only the block: each element's (or row's) expected value depends on its position modulo
the block length. The checks walk the results chunk by chunk to bound the extra memory.

The 8 GiB inputs live in memory-mapped scratch files (the SPEC accepts memory-mapped arrays
and reads C-contiguous ones in place): their pages are page cache that the kernel can drop
and read back, not memory the process holds, so no test holds more than about 9 GiB of its
own (the largest, a reduction="none" output of 8 GiB). Making them is also faster than
touching 8 GiB of fresh anonymous memory. Each test skips when the machine has less
``MemAvailable`` or free scratch disk (``TMPDIR``) than it needs, and ``XENT_RS_SKIP_HUGE=1``
skips them all (see the README's Development section).
"""

from __future__ import annotations

import gc
import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

xent_rs = pytest.importorskip("xent_rs")

Array = npt.NDArray[Any]
GiB = 2**30
#: headroom left to the rest of the machine beyond what a test needs
MARGIN = GiB
#: the element count past which a 32-bit signed offset overflows
BOUNDARY = 2**31


def available_memory() -> int:
    """Bytes of memory available to new allocations (``MemAvailable``, else free pages)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return 0


def need_memory(nbytes: int, what: str) -> None:
    """Skips the test when it is switched off or ``nbytes`` (plus a margin) are not there."""
    if os.environ.get("XENT_RS_SKIP_HUGE", "") not in ("", "0"):
        pytest.skip("XENT_RS_SKIP_HUGE is set")
    have = available_memory()
    if have < nbytes + MARGIN:
        pytest.skip(
            f"{what} needs {(nbytes + MARGIN) / GiB:.1f} GiB of available memory, "
            f"the machine has {have / GiB:.1f} GiB (MemAvailable)"
        )


@pytest.fixture(scope="module")
def scratch() -> Iterator[Path]:
    """A scratch directory for the memory-mapped inputs, removed at the end."""
    if os.environ.get("XENT_RS_SKIP_HUGE", "") not in ("", "0"):
        pytest.skip("XENT_RS_SKIP_HUGE is set")
    with tempfile.TemporaryDirectory(prefix="xent-rs-huge-") as d:
        yield Path(d)


def scratch_array(directory: Path, name: str, n: int, block: Array) -> Array:
    """A memory-mapped file of ``n`` elements, ``out[i] = block[i % len(block)]``, filled by
    doubling copies; skips when the disk lacks the room."""
    nbytes = n * block.dtype.itemsize
    free = shutil.disk_usage(directory).free
    if free < nbytes + MARGIN:
        pytest.skip(
            f"needs {(nbytes + MARGIN) / GiB:.1f} GiB of free disk in {directory}, "
            f"there are {free / GiB:.1f} GiB"
        )
    out = np.memmap(directory / name, dtype=block.dtype, mode="w+", shape=(n,))
    filled = min(len(block), n)
    out[:filled] = block[:filled]
    while filled < n:  # ``filled`` stays a multiple of len(block)
        k = min(filled, n - filled)
        out[filled : filled + k] = out[:k]
        filled += k
    return out


@pytest.fixture(autouse=True)
def _free_memory() -> Iterator[None]:
    """Gives the memory back after each test: the test's arrays, and the idle blocks
    xent_rs's output cache may keep."""
    yield
    gc.collect()
    limit = xent_rs.get_output_cache()
    xent_rs.set_output_cache(0)
    xent_rs.set_output_cache(limit)


def first_mismatch(bad: Array, offset: int) -> str:
    i = int(np.argmax(bad.reshape(-1)))
    return f"{int(np.count_nonzero(bad))} mismatches, the first at flat index {offset + i}"


# --------------------------------------------------------------------------------------------
# binary_cross_entropy_with_logits: 2**31 + 17 float32 elements
# --------------------------------------------------------------------------------------------

N_BINARY = BOUNDARY + 17  # 5 * 429_496_733
COLS = 5
#: block length: 5 times a prime, so that an element's column (its pos_weight) is fixed by
#: its residue modulo the block
L_BINARY = COLS * 200_003
POS_WEIGHT = np.array([0.5, 1.0, 1.5, 2.0, 3.0], dtype=np.float32)  # (C,): the usual form


def _binary_block() -> Array:
    return np.random.default_rng(2**31 + 17).uniform(-4.0, 4.0, L_BINARY).astype(np.float32)


def _binary_reference() -> tuple[Array, Array]:
    """The loss of each residue ``k = i % L`` (float64) and the magnitude of its terms."""
    block = _binary_block()
    x = np.roll(block, -1).astype(np.float64)  # logit i = buf[i + 1]
    t = block.astype(np.float64)  # target i = buf[i]
    pw = np.tile(POS_WEIGHT.astype(np.float64), L_BINARY // COLS)
    softplus = np.log1p(np.exp(-np.abs(x))) + np.maximum(-x, 0.0)
    a, b = (1.0 - t) * x, (1.0 + (pw - 1.0) * t) * softplus
    return a + b, np.abs(a) + np.abs(b)


@pytest.fixture(scope="class")
def binary_data(scratch: Path) -> Iterator[tuple[Array, Array]]:
    """The input and target of the class below, made once for both its tests."""
    need_memory((N_BINARY + 1) * 4, "the 2**31 + 17 logits (page cache)")
    buf = scratch_array(scratch, "binary.f32", N_BINARY + 1, _binary_block())
    x, t = buf[1:].reshape(-1, COLS), buf[:-1].reshape(-1, COLS)
    assert x.size == N_BINARY > BOUNDARY and x.flags.c_contiguous and t.flags.c_contiguous
    yield x, t
    del buf, x, t
    gc.collect()
    (scratch / "binary.f32").unlink()


class TestBinaryCrossEntropyWithLogitsPast2Pow31:
    """A (429_496_733, 5) float32 input: 2**31 + 17 elements, pos_weight along the last
    axis. One file of N + 1 tiled values holds the input ``buf[1:]`` and the target
    ``buf[:-1]``: target ``i`` is logit ``i - 1``, so the target differs from the logit at
    every position (targets are not checked, as in torch; they lie in [-4, 4] here)."""

    def test_sum(self, binary_data: tuple[Array, Array]) -> None:
        x, t = binary_data
        loss = xent_rs.binary_cross_entropy_with_logits(
            x, t, pos_weight=POS_WEIGHT, reduction="sum"
        )
        f, mag = _binary_reference()
        q, r = divmod(N_BINARY, L_BINARY)
        want = q * math.fsum(f) + math.fsum(f[:r])
        # per-element float32 terms (a few ulps of each term), then the float32 result
        tol = 2e-6 * (q * math.fsum(mag) + math.fsum(mag[:r])) + 2e-7 * abs(want)
        assert isinstance(loss, np.float32)
        assert abs(float(loss) - want) <= tol, (float(loss), want, tol)

    def test_none(self, binary_data: tuple[Array, Array]) -> None:
        need_memory(N_BINARY * 4, "the reduction='none' output of 2**31 + 17 losses")
        x, t = binary_data
        loss = xent_rs.binary_cross_entropy_with_logits(
            x, t, pos_weight=POS_WEIGHT, reduction="none"
        )
        assert loss.shape == x.shape and loss.dtype == np.float32
        flat = loss.reshape(-1)
        f, mag = _binary_reference()
        # compared in float32 (the float64 reference rounded: 6e-8 relative) for speed
        f32 = f.astype(np.float32)
        tol32 = (2e-6 * mag + 2e-7 * np.abs(f) + 1e-30).astype(np.float32)
        step = L_BINARY * 16  # whole periods: residue k at column k
        for start in range(0, N_BINARY, step):
            chunk = flat[start : start + step]
            full = chunk.size // L_BINARY * L_BINARY
            bad = ~(np.abs(chunk[:full].reshape(-1, L_BINARY) - f32) <= tol32)
            assert not bad.any(), first_mismatch(bad, start)
            tail = chunk[full:]
            bad = ~(np.abs(tail - f32[: tail.size]) <= tol32[: tail.size])
            assert not bad.any(), first_mismatch(bad, start + full)
        # the last elements, past index 2**31, one by one in float64
        last = np.arange(N_BINARY - 40, N_BINARY)
        np.testing.assert_allclose(
            flat[last].astype(np.float64), f[last % L_BINARY], rtol=1e-6, atol=1e-6
        )
        del loss, flat


# --------------------------------------------------------------------------------------------
# cross_entropy: (2**31 // 1000 + 5, 1000) float32 logits, hard targets
# --------------------------------------------------------------------------------------------

C_CE = 1000
R_CE = BOUNDARY // C_CE + 5  # 2_147_488 rows: the last ~4 rows lie past element 2**31
L_CE = 10_007  # prime, coprime with C: row r starts at residue (r * C) % L, all L of them
IGNORE = -100


def _ce_block() -> Array:
    return (3.0 * np.random.default_rng(1000).standard_normal(L_CE)).astype(np.float32)


def _ce_targets() -> Array:
    r = np.arange(R_CE, dtype=np.int64)
    t = (r * 7919 + r // 3) % C_CE
    t[r % 101 == 7] = IGNORE
    t[-2] = IGNORE  # an ignored row past element 2**31 (the last row is counted)
    return t.astype(np.int32)


def _ce_tables() -> tuple[Array, Array, Array]:
    """For each of the L distinct rows (by start residue ``o``): the logits (float64,
    ``W[o, c] = block[(o + c) % L]``), their logsumexp and softmax."""
    block = _ce_block().astype(np.float64)
    w = block[(np.arange(L_CE)[:, None] + np.arange(C_CE)) % L_CE]
    m = w.max(axis=1, keepdims=True)
    lse = np.log(np.exp(w - m).sum(axis=1)) + m[:, 0]
    return w, lse, np.exp(w - lse[:, None])


def test_cross_entropy_past_2_pow_31_elements(scratch: Path) -> None:
    need_memory(R_CE * C_CE * 4 + 400 * 2**20, "cross_entropy on 2**31+ logits (page cache)")
    x = scratch_array(scratch, "logits.f32", R_CE * C_CE, _ce_block()).reshape(R_CE, C_CE)
    assert x.size > BOUNDARY
    t = _ce_targets()
    w, lse, p = _ce_tables()
    start = np.arange(R_CE, dtype=np.int64) * C_CE % L_CE
    counted = t != IGNORE
    t_safe = np.where(counted, t, 0).astype(np.int64)
    want_rows = np.where(counted, lse[start] - w[start, t_safe], 0.0)

    # per-row losses: every row, the ones past element 2**31 included
    none = xent_rs.cross_entropy(x, t, reduction="none")
    assert none.shape == (R_CE,) and none.dtype == np.float32
    np.testing.assert_allclose(none, want_rows, rtol=1e-5, atol=2e-5)
    mean = xent_rs.cross_entropy(x, t)
    np.testing.assert_allclose(mean, want_rows.sum() / counted.sum(), rtol=1e-5)

    # the sum and its gradient written over the logits (no second 8 GiB buffer)
    loss, grad = xent_rs.cross_entropy(x, t, reduction="sum", return_grad=True, grad_out=x)
    assert grad is x
    assert isinstance(loss, np.float32)
    np.testing.assert_allclose(loss, math.fsum(want_rows), rtol=1e-5)
    # d loss / d x = softmax - onehot on counted rows, 0 on ignored ones; checked against the
    # float64 softmax rounded to float32 (grad entries lie in [-1, 1]: a few float32 ulps)
    p32 = p.astype(np.float32)
    step = 4096
    for a in range(0, R_CE, step):
        b = min(a + step, R_CE)
        want = p32[start[a:b]]
        want[np.arange(b - a), t_safe[a:b]] -= 1.0
        want[~counted[a:b]] = 0.0
        bad = ~(np.abs(grad[a:b] - want) <= 2e-6)
        assert not bad.any(), first_mismatch(bad, a * C_CE)
    del x, grad
    (scratch / "logits.f32").unlink()
