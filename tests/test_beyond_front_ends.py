"""The losses and options beyond the first release in every front end: the public functions'
promises (bitwise identities, limits, finite differences, threads), the accumulators over
random chunkings, ``xent_rs.dask`` on a cluster-free scheduler, and ``xent-rs score``.

The golden cases (``test_golden.py``) check the values against PyTorch; the kernels' own
tests are ``test_beyond_core.py`` and ``test_beyond_binary.py``.
"""

from __future__ import annotations

import itertools
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import central_differences
from hypothesis import given, settings
from hypothesis import strategies as st

import xent_rs
from xent_rs import streaming

rng = np.random.default_rng(7)


def _logits(n: int = 40, c: int = 6, dtype: Any = np.float64) -> np.ndarray:
    return (rng.normal(size=(n, c)) * 3).astype(dtype)


# ---------------------------------------------------------------------------------------------
# promises of the public functions
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_neutral_options_are_bitwise_plain_cross_entropy(dtype: Any, reduction: str) -> None:
    x, t = _logits(dtype=dtype), rng.integers(0, 6, 40)
    w = rng.uniform(0.5, 2, 6)
    plain = xent_rs.cross_entropy(x, t, weight=w, reduction=reduction, return_grad=True)
    neutral = xent_rs.cross_entropy(
        x, t, weight=w, reduction=reduction, return_grad=True, z_loss=0.0, softcap=None
    )
    focal = xent_rs.focal_loss(x, t, gamma=0.0, weight=w, reduction=reduction, return_grad=True)
    for got in (neutral, focal):
        for a, b in zip(got, plain, strict=True):
            assert np.asarray(a).tobytes() == np.asarray(b).tobytes()


def test_a_huge_softcap_tends_to_plain_cross_entropy() -> None:
    x, t = _logits(), rng.integers(0, 6, 40)
    plain_loss, plain_grad = xent_rs.cross_entropy(x, t, return_grad=True)
    loss, grad = xent_rs.cross_entropy(x, t, softcap=1e6, return_grad=True)
    assert loss == pytest.approx(plain_loss, rel=1e-9)
    np.testing.assert_allclose(grad, plain_grad, rtol=1e-7, atol=1e-12)


def test_softcap_bounds_the_logits() -> None:
    """A capped logit never exceeds the cap: with every logit of a row far above it, the row
    is as uniform as with equal logits."""
    x = np.array([[1e6, 2e6, 3e6]])
    loss = xent_rs.cross_entropy(x, np.array([0]), softcap=5.0)
    assert float(loss) == pytest.approx(math.log(3), rel=1e-12)


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    z=st.sampled_from([0.0, 1e-3, 0.5]),
    cap=st.sampled_from([None, 0.7, 4.0]),
    soft=st.booleans(),
    smoothing=st.sampled_from([0.0, 0.2]),
    weighted=st.booleans(),
    reduction=st.sampled_from(["mean", "sum"]),
)
def test_cross_entropy_options_finite_differences(
    seed: int,
    z: float,
    cap: float | None,
    soft: bool,
    smoothing: float,
    weighted: bool,
    reduction: str,
) -> None:
    r = np.random.default_rng(seed)
    x = r.normal(size=(3, 4)) * 2
    t: Any = r.dirichlet(np.ones(4), 3) if soft else r.integers(0, 4, 3)
    w = r.uniform(0.5, 2, 4) if weighted else None
    kw = dict(weight=w, z_loss=z, softcap=cap, label_smoothing=smoothing, reduction=reduction)
    _, grad = xent_rs.cross_entropy(x, t, return_grad=True, **kw)
    want = central_differences(lambda v: xent_rs.cross_entropy(v, t, **kw), x)
    np.testing.assert_allclose(grad, want, rtol=1e-5, atol=1e-7)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), gamma=st.sampled_from([0.5, 1.0, 2.0, 3.7]))
def test_focal_losses_finite_differences(seed: int, gamma: float) -> None:
    r = np.random.default_rng(seed)
    x = r.normal(size=(3, 4)) * 2
    t = r.integers(0, 4, 3)
    _, grad = xent_rs.focal_loss(x, t, gamma=gamma, return_grad=True)
    want = central_differences(lambda v: xent_rs.focal_loss(v, t, gamma=gamma), x)
    np.testing.assert_allclose(grad, want, rtol=1e-5, atol=1e-7)
    y = (r.uniform(size=(3, 4)) > 0.5).astype(float)
    _, grad = xent_rs.binary_focal_loss_with_logits(x, y, gamma=gamma, return_grad=True)
    focal = xent_rs.binary_focal_loss_with_logits
    want = central_differences(lambda v: focal(v, y, gamma=gamma), x)
    np.testing.assert_allclose(grad, want, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("log_target", [False, True])
@pytest.mark.parametrize("reduction", ["mean", "batchmean", "sum"])
def test_kl_div_finite_differences(log_target: bool, reduction: str) -> None:
    q = np.log(rng.dirichlet(np.ones(4), 3))
    p = rng.dirichlet(np.ones(4), 3)
    t = np.log(p) if log_target else p
    kw: dict[str, Any] = dict(reduction=reduction, log_target=log_target)
    _, grad = xent_rs.kl_div(q, t, return_grad=True, **kw)
    want = central_differences(lambda v: xent_rs.kl_div(v, t, **kw), q)
    np.testing.assert_allclose(grad, want, rtol=1e-6, atol=1e-9)


def test_binary_focal_loss_is_finite_for_any_logit() -> None:
    x = np.array([-1e30, -800.0, -30.0, 0.0, 30.0, 800.0, 1e30])
    for y in (np.zeros_like(x), np.ones_like(x)):
        loss, grad = xent_rs.binary_focal_loss_with_logits(x, y, reduction="none", return_grad=True)
        assert np.all(np.isfinite(loss)) and np.all(np.isfinite(grad))


@pytest.mark.usefixtures("restore_threads")
def test_one_and_two_threads_agree_bitwise() -> None:
    x = (rng.normal(size=(70_000, 33)) * 3).astype(np.float32)
    t = rng.integers(0, 33, 70_000)
    y = (rng.uniform(size=x.shape) > 0.5).astype(np.float32)
    calls = [
        lambda: xent_rs.cross_entropy(x, t, z_loss=1e-3, softcap=8.0, return_grad=True),
        lambda: xent_rs.focal_loss(x, t, return_grad=True),
        lambda: xent_rs.binary_focal_loss_with_logits(x, y, return_grad=True),
        lambda: xent_rs.kl_div(x, y, reduction="batchmean", return_grad=True),
    ]
    results = []
    for threads in (1, 2):
        xent_rs.set_num_threads(threads)
        results.append([tuple(np.asarray(r).tobytes() for r in call()) for call in calls])
    assert results[0] == results[1]


# ---------------------------------------------------------------------------------------------
# accumulators: any chunking gives the one-shot loss
# ---------------------------------------------------------------------------------------------

CHUNKED = {
    "cross_entropy z_loss softcap": (
        "cross_entropy",
        {"z_loss": 1e-3, "softcap": 3.0, "weight": [1.0, 2.0, 0.5, 1.0, 1.0, 3.0]},
    ),
    "cross_entropy soft z_loss": ("cross_entropy", {"z_loss": 0.1}),
    "focal_loss": ("focal_loss", {"gamma": 2.0, "ignore_index": 1}),
    "binary_focal_loss_with_logits": ("binary_focal_loss_with_logits", {"alpha": 0.3}),
    "kl_div batchmean": ("kl_div", {"reduction": "batchmean"}),
    "kl_div log_target": ("kl_div", {"log_target": True}),
}


def _data(loss: str, name: str, n: int) -> tuple[np.ndarray, np.ndarray]:
    x = _logits(n)
    if loss == "kl_div":
        q = np.log(rng.dirichlet(np.ones(6), n))
        p = rng.dirichlet(np.ones(6), n)
        return q, (np.log(p) if "log_target" in name else p)
    if loss == "binary_focal_loss_with_logits":
        return x, (rng.uniform(size=x.shape) > 0.5).astype(float)
    if "soft" in name:
        return x, rng.dirichlet(np.ones(6), n)
    return x, rng.integers(0, 6, n)


@pytest.mark.parametrize("name", sorted(CHUNKED))
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_accumulators_match_the_one_shot_function(name: str, reduction: str) -> None:
    loss, options = CHUNKED[name]
    options = dict(options)
    if loss != "kl_div" or reduction == "sum":
        options["reduction"] = reduction
    x, t = _data(loss, name, 50)
    acc = streaming.accumulator(loss, **options)
    losses = [acc.update(x[lo:hi], t[lo:hi], return_losses=True) for lo, hi in _cuts(50)]
    call = {k: (np.asarray(v) if k == "weight" else v) for k, v in options.items()}
    want = getattr(xent_rs, loss)(x, t, **call)
    assert acc.result() == pytest.approx(float(want), rel=1e-12)
    call["reduction"] = "none"
    np.testing.assert_allclose(np.concatenate(losses), getattr(xent_rs, loss)(x, t, **call))


def _cuts(n: int) -> list[tuple[int, int]]:
    edges = [0, 7, 7, 20, 33, n]
    return list(itertools.pairwise(edges))


# ---------------------------------------------------------------------------------------------
# dask
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(CHUNKED))
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_dask_matches_the_one_shot_function(name: str, reduction: str) -> None:
    da = pytest.importorskip("dask.array")
    import xent_rs.dask as xd

    loss, options = CHUNKED[name]
    options = {k: (np.asarray(v) if k == "weight" else v) for k, v in options.items()}
    if loss != "kl_div" or reduction != "mean":
        options["reduction"] = reduction
    x, t = _data(loss, name, 50)
    chunks = (13, 3) if loss in ("binary_focal_loss_with_logits", "kl_div") else (13, 6)
    lazy_loss, lazy_grad = getattr(xd, loss)(
        da.from_array(x, chunks=chunks), t, return_grad=True, **options
    )
    want_loss, want_grad = getattr(xent_rs, loss)(x, t, return_grad=True, **options)
    got_loss, got_grad = lazy_loss.compute(scheduler="sync"), lazy_grad.compute(scheduler="sync")
    np.testing.assert_allclose(got_loss, want_loss, rtol=1e-12)
    np.testing.assert_allclose(got_grad, want_grad, rtol=1e-10, atol=1e-15)


# ---------------------------------------------------------------------------------------------
# the command line
# ---------------------------------------------------------------------------------------------


def _score(
    tmp: Path, x: np.ndarray, t: np.ndarray, *flags: str
) -> subprocess.CompletedProcess[str]:
    np.save(tmp / "x.npy", x)
    np.save(tmp / "t.npy", t)
    cmd = [sys.executable, "-m", "xent_rs.cli", "score", str(tmp / "x.npy"), str(tmp / "t.npy")]
    return subprocess.run([*cmd, *flags, "--json"], capture_output=True, text=True, check=False)


CLI = [
    ("cross_entropy", ["--z-loss", "0.001", "--softcap", "3"], {"z_loss": 1e-3, "softcap": 3.0}),
    ("focal_loss", ["--gamma", "1.5"], {"gamma": 1.5}),
    ("binary_focal_loss_with_logits", ["--alpha", "none"], {"alpha": None}),
    ("kl_div", ["--reduction", "batchmean"], {"reduction": "batchmean"}),
]


@pytest.mark.parametrize(("loss", "flags", "options"), CLI)
def test_score_command(
    tmp_path: Path, loss: str, flags: list[str], options: dict[str, Any]
) -> None:
    x, t = _data(loss, loss, 300)
    done = _score(tmp_path, x, t, "--loss", loss, "--chunk-rows", "64", *flags)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    want = getattr(xent_rs, loss)(x, t, **options)
    assert report["value"] == pytest.approx(float(want), rel=1e-12)


@pytest.mark.parametrize(
    ("loss", "flags", "words"),
    [
        ("cross_entropy", ["--gamma", "2"], "--gamma does not apply to cross_entropy"),
        ("nll_loss", ["--z-loss", "0.1"], "--z-loss does not apply to nll_loss"),
        ("focal_loss", ["--gamma", "-1"], "gamma must be a finite number >= 0.0, got -1.0"),
        ("cross_entropy", ["--softcap", "0"], "softcap must be a finite number > 0.0"),
        ("binary_focal_loss_with_logits", ["--alpha", "2"], "alpha must lie in [0, 1]"),
        ("kl_div", ["--log-target", "--weight", "x.npy"], "--weight does not apply to kl_div"),
    ],
)
def test_score_usage_errors(tmp_path: Path, loss: str, flags: list[str], words: str) -> None:
    x, t = _data(loss, loss, 10)
    flags = [str(tmp_path / f) if f.endswith(".npy") else f for f in flags]
    done = _score(tmp_path, x, t, "--loss", loss, *flags)
    assert done.returncode == 2, done.stderr
    assert words in done.stderr
