"""Forward+gradient of ``binary_focal_loss_with_logits`` and ``kl_div`` (through ``_core``)
against their peer compositions, on the shapes of W1, W2 and W6 of ``benches/peers.py``.

The logits are element-wise logits (one binary decision per element); ``kl_div`` takes the
rows of W1/W2 as distributions (W6 as one), ``batchmean``. Peers, each with its gradient:

* focal: torchvision's ``sigmoid_focal_loss`` written out in torch (torchvision is no
  dependency; its source, with ``mean``) under autograd; optax's ``sigmoid_focal_loss`` under
  ``jax.jit(jax.value_and_grad)``; a NumPy composition with the hand-derived gradient.
* kl_div: ``F.kl_div`` under autograd; ``optax.kl_divergence`` under
  ``jax.jit(jax.value_and_grad)``; NumPy (``xlogy``).

Every library runs with the same number of threads; the calls are interleaved repeat by
repeat and the medians compared. A peer that is not installed is skipped. Run::

    PYTHONPATH=python /work/venv-bench/bin/python benches/beyond_binary.py [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import peers

from xent_rs import _core, _spec

GAMMA, ALPHA = 2.0, 0.25


def np_focal(x: np.ndarray, t: np.ndarray) -> tuple[Any, np.ndarray]:
    """NumPy focal loss (mean) and its gradient, float32 throughout."""
    e = np.exp(-np.abs(x))
    p = np.where(x >= 0, np.float32(1), e) / (1 + e)
    ce = np.maximum(x, 0) - x * t + np.log1p(e)
    q = p * (1 - t) + (1 - p) * t
    a = ALPHA * t + (1 - ALPHA) * (1 - t)
    loss = (a * ce * q * q).mean()
    grad = a * (q * q * (p - t) + ce * 2 * q * p * (1 - p) * (1 - 2 * t)) / np.float32(x.size)
    return loss, grad


def np_kl(lp: np.ndarray, t: np.ndarray) -> tuple[Any, np.ndarray]:
    """NumPy KL divergence (batchmean) and its gradient."""
    from scipy.special import xlogy

    n = np.float32(lp.shape[0])
    return (xlogy(t, t) - t * lp).sum() / n, -t / n


def xent_calls(x: np.ndarray, t: np.ndarray, lp: np.ndarray, q: np.ndarray) -> dict[str, Any]:
    focal = _spec.binary_focal_loss_with_logits(GAMMA, ALPHA, return_grad=True)
    kl = _spec.kl_div("batchmean", return_grad=True)
    return {
        "focal": lambda: _core.binary_loss(focal, x, t, (None, 1), (None, 1), None),
        "kl": lambda: _core.kl_div(kl, lp, q, None),
    }


def numpy_calls(x: np.ndarray, t: np.ndarray, lp: np.ndarray, q: np.ndarray) -> dict[str, Any]:
    return {"focal": lambda: np_focal(x, t), "kl": lambda: np_kl(lp, q)}


def torch_calls(x: np.ndarray, t: np.ndarray, lp: np.ndarray, q: np.ndarray) -> dict[str, Any]:
    import torch
    import torch.nn.functional as F

    def focal(x: Any, t: Any) -> Any:
        # torchvision.ops.sigmoid_focal_loss, reduction="mean".
        p = torch.sigmoid(x)
        ce = F.binary_cross_entropy_with_logits(x, t, reduction="none")
        p_t = p * t + (1 - p) * (1 - t)
        loss = ce * ((1 - p_t) ** GAMMA)
        alpha_t = ALPHA * t + (1 - ALPHA) * (1 - t)
        return (alpha_t * loss).mean()

    def fwdbwd(leaf: Any, f: Callable[[], Any]) -> Callable[[], Any]:
        def call() -> Any:
            leaf.grad = None
            loss = f()
            loss.backward()
            return loss.detach(), leaf.grad

        return call

    tx = torch.from_numpy(x).requires_grad_(True)
    tt = torch.from_numpy(t)
    tlp = torch.from_numpy(lp).requires_grad_(True)
    tq = torch.from_numpy(q)
    return {
        "focal": fwdbwd(tx, lambda: focal(tx, tt)),
        "kl": fwdbwd(tlp, lambda: F.kl_div(tlp, tq, reduction="batchmean")),
    }


def jax_calls(x: np.ndarray, t: np.ndarray, lp: np.ndarray, q: np.ndarray) -> dict[str, Any]:
    import jax
    import jax.numpy as jnp
    import optax

    def focal(x: Any, t: Any) -> Any:
        return optax.sigmoid_focal_loss(x, t, alpha=ALPHA, gamma=GAMMA).mean()

    batch = lp.shape[0]

    def kl(lp: Any, q: Any) -> Any:
        return optax.kl_divergence(lp, q).sum() / batch

    f_focal = jax.jit(jax.value_and_grad(focal))
    f_kl = jax.jit(jax.value_and_grad(kl))
    args_focal = (jnp.asarray(x), jnp.asarray(t))
    args_kl = (jnp.asarray(lp), jnp.asarray(q))
    jax.block_until_ready((args_focal, args_kl))
    return {
        "focal": lambda: jax.block_until_ready(f_focal(*args_focal)),
        "kl": lambda: jax.block_until_ready(f_kl(*args_kl)),
    }


def data(shape: tuple[int, ...], seed: int) -> tuple[np.ndarray, ...]:
    """Logits and 0/1 targets; log-probabilities and probabilities along the last axis."""
    rng = np.random.default_rng(seed)
    x = (3 * rng.standard_normal(shape)).astype(np.float32)
    t = (rng.random(shape, dtype=np.float32) < 0.3).astype(np.float32)
    z = rng.standard_normal(shape).astype(np.float32)
    lp = (z - np.log(np.exp(z).sum(-1, keepdims=True))).astype(np.float32)
    q = np.exp(rng.standard_normal(shape).astype(np.float32))
    q /= q.sum(-1, keepdims=True)
    return x, t, lp, q


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="the workloads shrunk 16x")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only", default="W1,W2,W6")
    args = ap.parse_args()
    _core.set_num_threads(args.threads)
    try:
        import torch

        torch.set_num_threads(args.threads)
    except ImportError:
        pass
    wanted = args.only.split(",")
    print("| workload | loss | xent_rs ms | torch ms | jax ms | numpy ms | best peer / xent_rs |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for wl in peers.workloads(args.quick):
        if wl.name not in wanted:
            continue
        x, t, lp, q = data(wl.shape, wl.seed)
        calls: dict[str, dict[str, Callable[[], Any]]] = {}
        for lib, make in (
            ("xent_rs", xent_calls),
            ("torch", torch_calls),
            ("jax", jax_calls),
            ("numpy", numpy_calls),
        ):
            try:
                calls[lib] = make(x, t, lp, q)
            except ImportError:
                pass
        for loss in ("focal", "kl"):
            ref = float(np.asarray(calls["xent_rs"][loss]()[0]))
            times: dict[str, list[float]] = {lib: [] for lib in calls}
            for lib, c in calls.items():  # warm-up (jit compiles), and a value check
                got = float(np.asarray(c[loss]()[0]))
                assert abs(got - ref) <= 1e-4 * abs(ref), (wl.name, loss, lib, got, ref)
            for _ in range(args.repeats):
                for lib, c in calls.items():
                    start = time.perf_counter()
                    c[loss]()
                    times[lib].append(time.perf_counter() - start)
            med = {lib: 1e3 * statistics.median(v) for lib, v in times.items()}
            peer = min(v for lib, v in med.items() if lib != "xent_rs")
            cells = [f"{med[lib]:.1f}" if lib in med else "-" for lib in ("torch", "jax", "numpy")]
            print(
                f"| {wl.name} {wl.shape} | {loss} | {med['xent_rs']:.1f} | {' | '.join(cells)} "
                f"| {peer / med['xent_rs']:.1f}x |",
                flush=True,
            )


if __name__ == "__main__":
    main()
