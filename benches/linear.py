"""Benchmark of ``linear_cross_entropy`` (loss and backward) against torch and the naive ways.

Rows (float32, every 17th target ignored, loss + all gradients):

* L1: N=4096, D=1024, V=32,000
* L2: N=2048, D=512, V=128,256

Paths, each timed in its own subprocess so that its peak memory is its own:

* ``xent_rs``: ``xent_rs.linear_cross_entropy(h, W, y, return_grad=True)`` (default chunk).
* ``torch_chunked``: ``F.linear_cross_entropy(..., options=LinearCrossEntropyOptions())`` and
  ``backward()``, where the installed torch has it.
* ``torch_ref``: ``F.linear_cross_entropy`` (its reference path, options=None) and
  ``backward()``; where torch has no ``linear_cross_entropy``, ``F.linear`` +
  ``F.cross_entropy`` + ``backward()``.
* ``numpy_naive``: ``z = h @ W.T``, our ``cross_entropy(z, y, return_grad=True, grad_out=z)``,
  ``z @ W`` and ``z.T @ h``: the full logits held.
* ``gemm3``: the three matrix products alone (``h @ W.T``, ``z @ W``, ``z.T @ h``, NumPy's
  BLAS), the floor the fused path is measured against.

Threads: ``T`` = 1 and 2: ``OPENBLAS_NUM_THREADS``/``OMP_NUM_THREADS``/``MKL_NUM_THREADS`` of
the subprocess, ``xent_rs.set_num_threads(T)`` and ``torch.set_num_threads(T)``.

Each subprocess makes the arrays (seeded), runs one warm-up call, resets the peak resident
memory (``/proc/self/clear_refs``), then times ``--repeat`` calls; the paths run round-robin
``--rounds`` times so that a noisy neighbour spreads over all of them. Reported: the median and
the fastest call, and the peak resident memory above the inputs (VmHWM after the calls minus
the resident memory before them), next to the bar: the gradients plus 1/8 of the logits.

Run ``python benches/linear.py`` (``--quick``: every row 8x fewer samples, one round);
``benches/compare.py`` can call :func:`linear_rows`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

#: name -> (N, D, V)
ROWS = {"L1": (4096, 1024, 32_000), "L2": (2048, 512, 128_256)}
PATHS = ("xent_rs", "torch_chunked", "torch_ref", "numpy_naive", "gemm3")
MIB = 1 << 20


def _rss() -> int:
    """Resident memory now (bytes)."""
    with open("/proc/self/statm", encoding="ascii") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak() -> int:
    """Peak resident memory (VmHWM, bytes) since the last reset."""
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def _reset_peak() -> None:
    with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
        fh.write("5")


def _arrays(n: int, d: int, v: int) -> tuple[Any, Any, Any]:
    import numpy as np

    rng = np.random.default_rng(0)
    h = rng.standard_normal((n, d), dtype=np.float32)
    w = rng.standard_normal((v, d), dtype=np.float32)
    w *= 1.0 / np.sqrt(d)
    y = rng.integers(0, v, n)
    y[::17] = -100
    return h, w, y


def _call(path: str, h: Any, w: Any, y: Any, threads: int) -> Any:
    """The loss-and-backward call of ``path``, ready to time; returns the loss."""
    import numpy as np

    if path == "xent_rs":
        import xent_rs

        xent_rs.set_num_threads(threads)
        return lambda: float(xent_rs.linear_cross_entropy(h, w, y, return_grad=True)[0])
    if path == "numpy_naive":
        import xent_rs

        xent_rs.set_num_threads(threads)

        def naive() -> float:
            z = h @ w.T
            loss, g = xent_rs.cross_entropy(z, y, return_grad=True, grad_out=z)
            g @ w
            g.T @ h
            return float(loss)

        return naive
    if path == "gemm3":

        def gemm3() -> float:
            z = h @ w.T
            z @ w
            z.T @ h
            return float("nan")

        return gemm3
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(threads)
    th = torch.from_numpy(h).requires_grad_()
    tw = torch.from_numpy(w).requires_grad_()
    ty = torch.from_numpy(np.ascontiguousarray(y))
    options = None
    if path == "torch_chunked":
        options_type = getattr(torch.nn, "LinearCrossEntropyOptions", None)
        if options_type is None or not hasattr(F, "linear_cross_entropy"):
            return None
        options = options_type()

    def run() -> float:
        th.grad = tw.grad = None
        if hasattr(F, "linear_cross_entropy"):
            loss = F.linear_cross_entropy(th, tw, ty, options=options)
        else:
            loss = F.cross_entropy(F.linear(th, tw), ty)
        loss.backward()
        # Released here, so that the memory before a timed call holds no gradients.
        th.grad = tw.grad = None
        return float(loss)

    return run


def worker(job: dict[str, Any]) -> dict[str, Any]:
    """One path in this process: warm-up, then ``repeat`` timed calls."""
    n, d, v = job["shape"]
    h, w, y = _arrays(n, d, v)
    fn = _call(job["path"], h, w, y, job["threads"])
    if fn is None:
        return {"skipped": "this torch has no chunked linear_cross_entropy"}
    loss = fn()
    base = _rss()
    _reset_peak()
    times = []
    for _ in range(job["repeat"]):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return {"times": times, "peak_above_inputs": _peak() - base, "loss": loss}


def _run_worker(job: dict[str, Any], python: str) -> dict[str, Any]:
    threads = str(job["threads"])
    env = dict(os.environ)
    env.update(OPENBLAS_NUM_THREADS=threads, OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
    # Every large block from mmap, given back when freed: the resident peak is then honest
    # (glibc's threshold otherwise grows to 32 MiB and freed blocks below it stay resident).
    env["MALLOC_MMAP_THRESHOLD_"] = str(1 << 20)
    proc = subprocess.run(
        [python, __file__, "--worker", json.dumps(job)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1:] or [f"rc {proc.returncode}"]}
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def linear_rows(
    rows: tuple[str, ...] = tuple(ROWS),
    threads: tuple[int, ...] = (1, 2),
    *,
    paths: tuple[str, ...] = PATHS,
    repeat: int = 2,
    rounds: int = 2,
    scale: int = 1,
    python: str = sys.executable,
    progress: Any = None,
) -> list[dict[str, Any]]:
    """Times every path on every row and thread count; one dict per cell (``row``, ``path``,
    ``threads``, ``shape``, ``times`` in seconds, ``median_s``, ``min_s``, ``peak_mib`` above
    the inputs, ``bar_mib``, ``loss``; or ``skipped``/``error``). ``scale`` divides N."""
    cells: dict[tuple[str, str, int], dict[str, Any]] = {}
    for row in rows:
        n, d, v = ROWS[row]
        shape = (n // scale, d, v)
        for t in threads:
            for _ in range(rounds):
                for path in paths:
                    job = {"path": path, "threads": t, "shape": shape, "repeat": repeat}
                    got = _run_worker(job, python)
                    if progress is not None:
                        progress(f"{row} T={t} {path}: {got}")
                    cell = cells.setdefault(
                        (row, path, t),
                        {"row": row, "path": path, "threads": t, "shape": shape, "times": []},
                    )
                    for key in ("skipped", "error"):
                        if key in got:
                            cell[key] = got[key]
                    cell["times"] += got.get("times", [])
                    if "peak_above_inputs" in got:
                        cell["peak_mib"] = max(
                            cell.get("peak_mib", 0.0), got["peak_above_inputs"] / MIB
                        )
                        cell["loss"] = got["loss"]
    out = []
    for cell in cells.values():
        n, d, v = cell["shape"]
        cell["bar_mib"] = ((n * d + v * d) * 4 + n * v * 4 / 8) / MIB
        if cell["times"]:
            cell["median_s"] = statistics.median(cell["times"])
            cell["min_s"] = min(cell["times"])
        out.append(cell)
    return out


def table(cells: list[dict[str, Any]]) -> str:
    """Markdown: one line per row and thread count, one column pair per path."""
    lines = [
        "| row | T | " + " | ".join(f"{p} s (min) / peak MiB" for p in PATHS) + " | bar MiB |",
        "| --- | --- |" + " --- |" * (len(PATHS) + 1),
    ]
    keys = sorted({(c["row"], c["threads"]) for c in cells})
    for row, t in keys:
        line = [row, str(t)]
        bar = ""
        for p in PATHS:
            c = next((c for c in cells if (c["row"], c["path"], c["threads"]) == (row, p, t)), None)
            if c is None or "median_s" not in c:
                line.append("-" if c is None else c.get("skipped", str(c.get("error", "-"))))
                continue
            bar = f"{c['bar_mib']:.0f}"
            line.append(f"{c['median_s']:.2f} ({c['min_s']:.2f}) / {c['peak_mib']:.0f}")
        lines.append("| " + " | ".join([*line, bar]) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--only", default=",".join(ROWS), help="rows, e.g. L1 or L1,L2")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--paths", default=",".join(PATHS))
    ap.add_argument("--repeat", type=int, default=2, help="timed calls per subprocess")
    ap.add_argument("--rounds", type=int, default=2, help="subprocesses per path, round-robin")
    ap.add_argument("--quick", action="store_true", help="N/8, one round")
    ap.add_argument("--json", type=Path, help="write the cells here")
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return 0
    cells = linear_rows(
        tuple(args.only.split(",")),
        tuple(int(t) for t in args.threads.split(",")),
        paths=tuple(args.paths.split(",")),
        repeat=args.repeat,
        rounds=1 if args.quick else args.rounds,
        scale=8 if args.quick else 1,
        progress=lambda msg: print(msg, file=sys.stderr, flush=True),
    )
    if args.json:
        args.json.write_text(json.dumps(cells, indent=1))
    print(table(cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
