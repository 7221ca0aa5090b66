"""Timings of ``z_loss`` / ``softcap`` in cross entropy and of the multiclass focal loss, through
``_core`` directly (the public front ends do not take them yet).

Run from the repository root with the package built (``pip install -e .``), e.g.
``python benches/beyond_core.py --threads 2``. Every call of one workload is timed in the same
process, interleaved round by round, and the medians are printed with their ratios:

* cross entropy forward+gradient (``mean``, fresh gradient) plain, with ``z_loss=1e-4``, with
  ``softcap=30``, and with both, on W2 and W3 of ``benches/peers.py``;
* focal loss (``gamma=2``) forward+gradient against cross entropy and against the
  compositions a user would write: NumPy (one buffer, the strongest plain-NumPy way), and torch
  ``log_softmax`` + ``gather`` + ``pow`` with autograd where torch is importable, on W1 and W2.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peers import Data, workloads

from xent_rs import _core, _spec


def ce(x: np.ndarray, y: np.ndarray, **extra: Any) -> Any:
    spec = _spec.cross_entropy(return_grad=True, **extra)
    return _core.class_loss(spec, x, y, None, None, None, None)


def focal(x: np.ndarray, y: np.ndarray, gamma: float) -> Any:
    spec = _spec.focal_loss(gamma=gamma, return_grad=True)
    return _core.class_loss(spec, x, y, None, None, None, None)


def numpy_focal(x: np.ndarray, y: np.ndarray, gamma: float) -> tuple[float, np.ndarray]:
    """Focal loss (mean) and its gradient in NumPy, in one buffer."""
    n = x.shape[0]
    rows = np.arange(n)
    g = x - x.max(axis=1, keepdims=True)
    np.exp(g, out=g)
    s = g.sum(axis=1, keepdims=True)
    g /= s
    p = g[rows, y].astype(np.float64)
    lp = np.log(p)
    q = -np.expm1(lp)
    f = q**gamma
    loss = float(np.mean(-f * lp))
    coef = ((f - gamma * p * q ** (gamma - 1) * lp) / n).astype(np.float32)
    g *= coef[:, None]
    g[rows, y] -= coef
    return loss, g


def torch_focal(torch: Any, x: np.ndarray, y: np.ndarray, gamma: float) -> Callable[[], Any]:
    xt = torch.from_numpy(x)
    yt = torch.from_numpy(y)

    def call() -> Any:
        xg = xt.detach().requires_grad_()
        lp = torch.log_softmax(xg, dim=1).gather(1, yt[:, None]).squeeze(1)
        loss = (-((1 - lp.exp()) ** gamma) * lp).mean()
        loss.backward()
        return loss.item(), xg.grad

    return call


def interleaved(calls: dict[str, Callable[[], Any]], rounds: int) -> dict[str, float]:
    """Median seconds of each call, the calls run in turn each round (after one warm-up)."""
    times: dict[str, list[float]] = {k: [] for k in calls}
    for f in calls.values():
        f()
    for _ in range(rounds):
        for name, f in calls.items():
            t = time.perf_counter()
            f()
            times[name].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def report(title: str, medians: dict[str, float], base: str) -> None:
    print(f"\n{title}")
    for name, sec in medians.items():
        print(f"  {name:<32} {sec * 1e3:9.2f} ms   {sec / medians[base]:6.2f}x {base}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--no-torch", action="store_true")
    args = ap.parse_args()
    _core.set_num_threads(args.threads)
    torch: Any = None
    if not args.no_torch:
        try:
            import torch
        except ImportError:
            pass
        else:
            torch.set_num_threads(args.threads)
    by_name = {wl.name: wl for wl in workloads(quick=False)}

    for name in ("W2", "W3"):
        d = Data(by_name[name])
        medians = interleaved(softcap_calls(d.x, d.y), args.rounds)
        report(f"{name} {d.x.shape} fwd+grad", medians, "CE")
    for name in ("W1", "W2"):
        d = Data(by_name[name])
        medians = interleaved(focal_calls(d.x, d.y, torch), args.rounds)
        report(f"{name} {d.x.shape} fwd+grad", medians, "focal gamma=2")


def softcap_calls(x: np.ndarray, y: np.ndarray) -> dict[str, Callable[[], Any]]:
    return {
        "CE": lambda: ce(x, y),
        "CE z_loss=1e-4": lambda: ce(x, y, z_loss=1e-4),
        "CE softcap=30": lambda: ce(x, y, softcap=30.0),
        "CE z_loss=1e-4 softcap=30": lambda: ce(x, y, z_loss=1e-4, softcap=30.0),
    }


def focal_calls(x: np.ndarray, y: np.ndarray, torch: Any) -> dict[str, Callable[[], Any]]:
    calls: dict[str, Callable[[], Any]] = {
        "CE": lambda: ce(x, y),
        "focal gamma=2": lambda: focal(x, y, 2.0),
        "focal gamma=1.5": lambda: focal(x, y, 1.5),
        "NumPy focal gamma=2": lambda: numpy_focal(x, y, 2.0),
    }
    if torch is not None:
        calls["torch focal gamma=2"] = torch_focal(torch, x, y, 2.0)
    return calls


if __name__ == "__main__":
    main()
