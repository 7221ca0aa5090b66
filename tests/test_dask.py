"""``xent_rs.dask`` on a real ``dask.distributed`` cluster (two worker processes) matches the
one-shot functions."""

from __future__ import annotations

import doctest
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")

import xent_rs  # noqa: E402
import xent_rs.dask as xd  # noqa: E402
from xent_rs import streaming  # noqa: E402


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    cluster = distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
        silence_logs=logging.ERROR,
    )
    with distributed.Client(cluster) as c:
        yield c
    cluster.close()


def compute(client: Any, *things: Any) -> list[Any]:
    """Computes on the cluster (not in this process)."""
    return [f.result() for f in client.compute(list(things))]


def close(got: Any, want: Any, rtol: float = 1e-12) -> None:
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=rtol, atol=1e-15)


def test_the_cluster_has_two_worker_processes(client: Any) -> None:
    workers = client.scheduler_info()["workers"]
    assert len(workers) == 2
    pids = set(client.run(os.getpid).values())
    assert len(pids) == 2 and os.getpid() not in pids


def test_cross_entropy_reductions_and_gradients(client: Any) -> None:
    rng = np.random.default_rng(0)
    n, c = 1000, 7
    x = rng.normal(size=(n, c)) * 3
    t = rng.integers(0, c, size=n)
    t[rng.random(n) < 0.2] = -1
    t[100:300] = -1  # whole blocks with every target ignored
    weight = rng.random(c) + 0.2
    sw = rng.random(n)
    xs = da.from_array(x, chunks=((100, 200, 0, 350, 350), c))  # an empty block too
    ts = da.from_array(t, chunks=250)  # other chunks: aligned to the input's
    options: dict[str, Any] = {
        "weight": weight,
        "ignore_index": -1,
        "label_smoothing": 0.1,
    }
    for reduction in ("mean", "sum", "none"):
        loss, grad = xd.cross_entropy(
            xs, ts, sample_weight=sw, reduction=reduction, return_grad=True, **options
        )
        assert grad.chunks == xs.chunks
        if reduction == "none":
            assert loss.chunks == (xs.chunks[0],)
        got_loss, got_grad = compute(client, loss, grad)
        want_loss, want_grad = xent_rs.cross_entropy(
            x, t, sample_weight=sw, reduction=reduction, return_grad=True, **options
        )
        close(got_loss, want_loss)
        close(got_grad, want_grad)
    # grad_output: a scalar for mean, per-sample for none
    loss, grad = xd.cross_entropy(xs, ts, return_grad=True, grad_output=0.5, **options)
    close(
        compute(client, grad)[0],
        xent_rs.cross_entropy(x, t, return_grad=True, grad_output=0.5, **options)[1],
    )
    go = rng.random(n)
    _, grad = xd.cross_entropy(
        xs,
        ts,
        reduction="none",
        return_grad=True,
        grad_output=da.from_array(go, chunks=300),
        **options,
    )
    close(
        compute(client, grad)[0],
        xent_rs.cross_entropy(x, t, reduction="none", return_grad=True, grad_output=go, **options)[
            1
        ],
    )


def test_cross_entropy_class_axis_1_and_soft_targets(client: Any) -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(60, 5, 8)).astype(np.float32)
    t = rng.integers(0, 5, size=(60, 8))
    xs = da.from_array(x, chunks=(25, 5, 3))  # split along rows and the trailing axis
    loss, rows = xd.cross_entropy(xs, t, axis=1), xd.cross_entropy(xs, t, axis=1, reduction="none")
    got_loss, got_rows = compute(client, loss, rows)
    assert got_loss.dtype == np.float32 and rows.chunks == (xs.chunks[0], xs.chunks[2])
    close(got_loss, xent_rs.cross_entropy(x, t, axis=1), rtol=1e-6)
    close(got_rows, xent_rs.cross_entropy(x, t, axis=1, reduction="none"), rtol=1e-6)

    soft = xent_rs.softmax(rng.normal(size=(60, 5, 8)), axis=1)
    x64 = x.astype(np.float64)
    loss, grad = xd.cross_entropy(
        da.from_array(x64, chunks=(7, 5, 8)), soft, axis=1, label_smoothing=0.2, return_grad=True
    )
    want_loss, want_grad = xent_rs.cross_entropy(
        x64, soft, axis=1, label_smoothing=0.2, return_grad=True
    )
    got_loss, got_grad = compute(client, loss, grad)
    close(got_loss, want_loss)
    close(got_grad, want_grad)


def test_nll_loss(client: Any) -> None:
    rng = np.random.default_rng(2)
    logp = xent_rs.log_softmax(rng.normal(size=(300, 4)))
    t = rng.integers(0, 4, size=300)
    weight = np.array([1.0, 2.0, 0.5, 3.0])
    xs = da.from_array(logp, chunks=(64, 4))
    loss, grad = xd.nll_loss(xs, da.from_array(t, chunks=100), weight=weight, return_grad=True)
    got = compute(client, loss, grad)
    want = xent_rs.nll_loss(logp, t, weight=weight, return_grad=True)
    close(got[0], want[0])
    close(got[1], want[1])


def test_binary_cross_entropy_with_row_weights(client: Any) -> None:
    rng = np.random.default_rng(3)
    p = rng.random((400, 6))
    y = (rng.random((400, 6)) < 0.3).astype(np.float64)
    weight = rng.random(6) + 0.5
    sw = rng.random(400)
    ps = da.from_array(p, chunks=(150, 6))
    for reduction in ("mean", "sum", "none"):
        loss, grad = xd.binary_cross_entropy(
            ps, y, weight=weight, sample_weight=sw, reduction=reduction, return_grad=True
        )
        got = compute(client, loss, grad)
        want = xent_rs.binary_cross_entropy(
            p, y, weight=weight * sw[:, None], reduction=reduction, return_grad=True
        )
        close(got[0], want[0])
        close(got[1], want[1])
    # Elementwise: any chunking works when nothing varies along the split axes.
    logits = rng.normal(size=(400, 6)) * 4
    xs = da.from_array(logits, chunks=(90, 4))
    loss, grad = xd.binary_cross_entropy_with_logits(xs, y, pos_weight=2.0, return_grad=True)
    got = compute(client, loss, grad)
    want = xent_rs.binary_cross_entropy_with_logits(logits, y, pos_weight=2.0, return_grad=True)
    close(got[0], want[0])
    close(got[1], want[1])
    assert grad.chunks == xs.chunks


def test_log_loss_matches_scikit_learn(client: Any) -> None:
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(4)
    p = rng.dirichlet(np.ones(4) * 0.5, size=900)
    y = rng.integers(0, 4, size=900)
    sw = rng.random(900)
    ps = da.from_array(p, chunks=(200, 4))
    got = compute(client, xd.log_loss(y, ps, sample_weight=sw))[0]
    close(got, metrics.log_loss(y, p, sample_weight=sw, labels=range(4)))
    names = np.array(["ant", "bee", "cat", "dog"])[y]
    got = compute(
        client,
        xd.log_loss(da.from_array(names, chunks=333), ps, labels=["ant", "bee", "cat", "dog"]),
    )[0]
    close(got, metrics.log_loss(names, p, labels=["ant", "bee", "cat", "dog"]))
    logits = rng.normal(size=(900, 4))
    got = compute(client, xd.log_loss(y, da.from_array(logits, chunks=(500, 4)), from_logits=True))[
        0
    ]
    close(got, xent_rs.log_loss(y, logits, from_logits=True))


def test_accumulate_merges_with_local_accumulators(client: Any) -> None:
    rng = np.random.default_rng(5)
    x = rng.normal(size=(500, 3))
    t = rng.integers(0, 3, size=500)
    remote = xd.accumulate(
        streaming.CrossEntropyAccumulator(), da.from_array(x[:400], chunks=(64, 3)), t[:400]
    )
    acc = compute(client, remote)[0]
    assert isinstance(acc, streaming.CrossEntropyAccumulator) and acc.count == 400
    acc.update(x[400:], t[400:])
    close(acc.result(), xent_rs.cross_entropy(x, t))


def test_clear_errors_for_bad_chunking_and_shapes() -> None:
    x = da.zeros((10, 6), chunks=(5, 3))
    with pytest.raises(ValueError, match=r"class axis .* split into 2 chunks"):
        xd.cross_entropy(x, np.zeros(10, np.int64))
    with pytest.raises(ValueError, match=r"split into 2 chunks"):
        xd.log_loss(np.zeros(10, np.int64), x)
    with pytest.raises(ValueError, match="does not match"):
        xd.cross_entropy(x.rechunk({1: -1}), np.zeros(9, np.int64))
    with pytest.raises(ValueError, match="varies along axis 1"):
        xd.binary_cross_entropy(x, da.zeros((10, 6)), weight=np.ones(6))
    with pytest.raises(ValueError, match="sample_weight"):
        xd.cross_entropy(x.rechunk({1: -1}), np.zeros(10, np.int64), sample_weight=np.ones(3))
    with pytest.raises(TypeError, match="integer class indices"):
        xd.nll_loss(x.rechunk({1: -1}), da.zeros((10, 6)))
    for fn in (xd.cross_entropy, xd.nll_loss):  # the functions' message, not an accumulator's
        with pytest.raises(ValueError, match='"none", "mean" or "sum"'):
            fn(x.rechunk({1: -1}), np.zeros(10, np.int64), reduction="bogus")
    for fn in (xd.binary_cross_entropy, xd.binary_cross_entropy_with_logits):
        with pytest.raises(ValueError, match='"none", "mean" or "sum"'):
            fn(x, da.zeros((10, 6)), reduction="bogus")


def test_doctests_and_nothing_else_imports_dask() -> None:
    result = doctest.testmod(xd, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
    code = (
        "import sys, xent_rs, xent_rs.cli, xent_rs.streaming; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
