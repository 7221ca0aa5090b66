"""Side-by-side CPU benchmark of xent_rs against its peers, on the same arrays, in one run.

How to run (from the repository root, with the ``bench`` extra installed)::

    python benches/compare.py                 # full run (~15 min on 2 cores)
    python benches/compare.py --quick         # ~25 s: see "Quick mode"
    python benches/compare.py --quick --check # CI guard, see the end of this text
    python benches/compare.py --only W2,sweep --threads 1,2 --json out.json --png out.png
    python benches/compare.py --only W3 --ops ce_fwd,ce_fwdbwd --no-jax

The ``bench`` extra holds the peers: torch, jax[cpu], optax, scipy, scikit-learn, matplotlib,
threadpoolctl. Progress goes to stderr, the report (markdown) to stdout.

What is timed. Workloads W1-W7 (see ``benches/peers.py``; W1, W2, W3 and W6 include the losses
and options beyond the first release: z-loss, softcap, the focal losses, kl_div, and bfloat16
against float16), ``linear_cross_entropy``'s rows L1 and L2 in full runs (from
``benches/linear.py``, each path in its own subprocess for its peak memory), and a size sweep
of CE forward from N*C = 10 to 10^8 (C = 10 and C = 1000) that shows the per-call overhead. For
every op, each library that has a counterpart is timed in this process on the same NumPy arrays
(torch tensors share their memory); jax runs in one subprocess per thread count on the same
seeded arrays, because its thread count cannot change in-process (1 thread = the process pinned
to CPU 0 with ``sched_setaffinity``; all CPUs = jax's defaults). Threads:
``xent_rs.set_num_threads(T)``, ``torch.set_num_threads(T)`` and
``threadpoolctl.threadpool_limits(T)`` (NumPy/SciPy BLAS and scikit-learn's OpenMP). Libraries
that do not import are skipped with a note; xent_rs cells are skipped the same way until the
package is installed.

Each cell: 2 warm-up calls (the first one's outputs are kept for the cross-check), then at
least 7 timed calls with ``time.perf_counter`` and more until 0.5 s was spent (200 at most);
the median is reported. A timed call includes allocating and releasing its outputs (loss,
gradient, log-probabilities): steady-state cost per call. The in-place gradient variant
(``grad_out=x``) works on a copy of the logits that is refilled from the original before each
call, outside the timed region. The cyclic garbage collector is off inside a cell.

Mirrors: an xent_rs op with a bar against another xent_rs op on the same arrays
(``peers.MIRRORS``: an accumulator's ``update`` against the one-shot call, an option against
plain cross entropy, bfloat16 against float16) is timed once more together with that op, the
two calls taking turns for 21 rounds (9 in quick mode), after the workload's cells; the
mirror table compares those two medians, which come from the same minutes of the machine.

Quick mode: every workload 16x smaller (so mostly cache-resident: the floors mean less), the
sweep up to N*C = 10^6, at least 5 calls or 0.03 s per cell, and no jax unless ``--jax``.

How to read the tables. One table per workload, one row per op and thread count ``T``:

* ``floor ms``: the memory-bandwidth floor, (bytes the op must read once + write once) / the
  best bandwidth measured in this run with at most ``T`` threads (large float32 sums and copies
  with NumPy and torch, see the bandwidth table; labels count as int64).
* ``xent_rs ms (x floor)``: our median time and how many times the floor it is.
* ``<peer> ms (ours x)``: the peer's median time and our speed-up over it (peer ms / our ms;
  above 1 means xent_rs is faster).
* ``xent_rs vs ref``: relative difference of our loss (and of a strided checksum of our
  gradient / output) against the reference: torch where it has the op, else scikit-learn for
  ``log_loss``, else the NumPy reference. ``FLAG`` marks a difference above 1e-4.
  ``peers vs ref`` is the largest such difference among the peers.

All numbers go to ``--json`` (default ``benches/results.json``; per cell: median and quartile
ms, call count, loss, checksum, floor, differences) and, when matplotlib imports, a chart to
``--png`` (default ``benches/results.png``, ``benches/results-quick.png`` with ``--quick``).
``--report JSON`` prints the tables and redraws the
chart of a saved run without running anything.

``--check`` (meant for CI together with ``--quick``) exits with status 1 when any xent_rs cell
is slower than the NumPy reference for the same op, workload and thread count (comparing the
fastest timed call of each, so that a scheduling stall does not trip it; a cell that loses is
timed once more, both sides, and only a second loss counts), when any xent_rs
cell fails or differs from the reference by more than 1e-4, and with status 2 when xent_rs
cannot be imported. It is a guard against regressions, not the performance bar.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import gc
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import peers

HERE = Path(__file__).resolve().parent
LIBS = ("xent_rs", "torch", "numpy", "jax", "sklearn")
PEERS = LIBS[1:]
TOLERANCE = 1e-4


# --------------------------------------------------------------------------- timing


class Timing:
    """Warm-up and repeat policy for one run."""

    def __init__(self, quick: bool) -> None:
        self.warmup = 2
        self.min_calls = 5 if quick else 7
        self.min_time = 0.03 if quick else 0.5
        self.max_calls = 50 if quick else 200
        self.pair_rounds = 9 if quick else 21

    def as_dict(self) -> dict[str, Any]:
        return dict(vars(self))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Timing:
        t = cls(False)
        t.__dict__.update(d)
        return t


def run_cell(call: peers.Call, timing: Timing) -> dict[str, Any]:
    """Time one cell; returns median ms, quartiles, call count and the cross-check values.

    The cyclic garbage collector is off while the cell runs (as ``timeit`` does): with torch
    loaded, one full collection takes ~0.1 s and would land in a random timed call.
    """
    gc.disable()
    try:
        return _run_cell(call, timing)
    finally:
        gc.enable()


def _run_cell(call: peers.Call, timing: Timing) -> dict[str, Any]:
    setup = call.setup
    if setup:
        setup()
    loss, checksum = summarize(call.fn())
    for _ in range(timing.warmup - 1):
        if setup:
            setup()
        call.fn()
    times: list[float] = []
    spent = 0.0
    while len(times) < timing.min_calls or (
        spent < timing.min_time and len(times) < timing.max_calls
    ):
        dt = time_call(call)
        times.append(dt)
        spent += dt
    q1, _, q3 = statistics.quantiles(times, n=4)
    return {
        "ms": statistics.median(times) * 1e3,
        "min_ms": min(times) * 1e3,
        "q1_ms": q1 * 1e3,
        "q3_ms": q3 * 1e3,
        "calls": len(times),
        "loss": loss,
        "checksum": checksum,
    }


def time_call(call: peers.Call) -> float:
    """Seconds of one call, its setup (if any) run first, outside the timed region."""
    if call.setup:
        call.setup()
    t0 = time.perf_counter()
    call.fn()
    return time.perf_counter() - t0


def _to_numpy(v: Any) -> np.ndarray:
    if hasattr(v, "detach"):
        v = v.detach().cpu().numpy()
    return np.asarray(v)


def summarize(res: Any) -> tuple[float | None, float | None]:
    """(loss, strided sum of |array|) of a call's result, for the cross-check."""
    loss = arr = None
    if res is None:
        return None, None
    if isinstance(res, tuple):
        loss, arr = res[0], res[1]
    elif np.ndim(_to_numpy(res)) == 0:
        loss = res
    else:
        arr = res
    loss_f = None if loss is None else float(_to_numpy(loss))
    checksum = None
    if arr is not None:
        a = _to_numpy(arr).reshape(-1)
        step = max(1, a.size // 1_000_000) | 1
        checksum = float(np.abs(a[::step], dtype=np.float64).sum())
    return loss_f, checksum


# --------------------------------------------------------------------------- environment


def import_libs(with_jax: bool) -> tuple[dict[str, Any], dict[str, str], dict[str, str]]:
    """Import the in-process libraries; returns (modules, versions, notes on skipped ones).

    jax is only probed (in a subprocess, since it runs in its own processes) when ``with_jax``.
    """
    mods: dict[str, Any] = {}
    versions = {"numpy": np.__version__, "python": platform.python_version()}
    notes: dict[str, str] = {}
    for name, module in (
        ("xent_rs", "xent_rs"),
        ("torch", "torch"),
        ("scipy", "scipy.special"),
        ("sklearn", "sklearn.metrics"),
        ("threadpoolctl", "threadpoolctl"),
    ):
        try:
            mods[name] = __import__(module, fromlist=["_"])
            top = sys.modules[module.split(".")[0]]
            versions[name] = getattr(top, "__version__", "?")
        except Exception as exc:  # any import failure means: skip this library
            notes[name] = f"{type(exc).__name__}: {exc}"
    if "scipy" not in mods:
        notes["numpy"] = "the NumPy references need scipy: " + notes["scipy"]
    if not with_jax:
        notes["jax"] = "not run (--quick or --no-jax; pass --jax to include it)"
        return mods, versions, notes
    try:
        probe = subprocess.run(
            [sys.executable, "-c", "import jax, optax; print(jax.__version__, optax.__version__)"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        if probe.returncode == 0:
            versions["jax"], versions["optax"] = probe.stdout.split()
        else:
            notes["jax"] = probe.stderr.strip().splitlines()[-1]
    except Exception as exc:
        notes["jax"] = f"{type(exc).__name__}: {exc}"
    return mods, versions, notes


def cpu_info() -> str:
    """CPU model, family/model, logical CPUs and the widest SIMD flag, from /proc/cpuinfo."""
    fields: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if ":" in line:
                key, _, val = line.partition(":")
                fields.setdefault(key.strip(), val.strip())
    except OSError:
        return platform.processor() or platform.machine()
    flags = set(fields.get("flags", "").split())
    simd = next((f for f in ("avx512f", "avx2", "sse4_2", "neon") if f in flags), "none")
    return (
        f"{fields.get('model name', '?')} (family {fields.get('cpu family', '?')} "
        f"model {fields.get('model', '?')}), {len(os.sched_getaffinity(0))} CPUs, "
        f"widest SIMD flag: {simd}"
    )


def thp_setting() -> str:
    try:
        return Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text().strip()
    except OSError:
        return "?"


@contextlib.contextmanager
def thread_limit(threads: int, mods: dict[str, Any]) -> Iterator[None]:
    """Run the body with every in-process library limited to ``threads`` threads."""
    xr, torch = mods.get("xent_rs"), mods.get("torch")
    if xr is not None and hasattr(xr, "set_num_threads"):
        xr.set_num_threads(threads)
    if torch is not None:
        torch.set_num_threads(threads)
    tpc = mods.get("threadpoolctl")
    with tpc.threadpool_limits(limits=threads) if tpc else contextlib.nullcontext():
        yield


# --------------------------------------------------------------------------- bandwidth


def measure_bandwidth(
    threads: list[int], mods: dict[str, Any], timing: Timing, mib: int
) -> tuple[dict[str, dict[str, float]], dict[str, float]]:
    """GB/s of large reads and copies at each thread count (copy counts read + write bytes).

    Also returns a fork/join probe per thread count: the median microseconds of a torch copy
    of 256 KiB, just big enough for torch to split it over its threads. It shows what waking
    the other threads costs on this machine (on some VMs a sleeping vCPU takes milliseconds to
    wake up, which then shows in every short multi-threaded cell, whatever the library).
    """
    torch = mods.get("torch")
    n = mib * 2**20 // 4
    a = np.ones(n, dtype=np.float32)
    b = np.zeros(n, dtype=np.float32)
    probes: list[tuple[str, Callable[[], Any], int]] = [
        ("read: numpy a.sum()", a.sum, a.nbytes),
        ("copy: np.copyto(b, a) (r+w)", lambda: np.copyto(b, a), 2 * a.nbytes),
    ]
    if torch is not None:
        ta, tb = torch.from_numpy(a), torch.from_numpy(b)
        probes += [
            ("read: torch ta.sum()", ta.sum, a.nbytes),
            ("copy: torch tb.copy_(ta) (r+w)", lambda: tb.copy_(ta), 2 * a.nbytes),
        ]
        small_a, small_b = ta[: 1 << 16], tb[: 1 << 16]
        fork_join_call = peers.Call(lambda: small_b.copy_(small_a))
    out: dict[str, dict[str, float]] = {}
    forkjoin: dict[str, float] = {}
    for t in threads:
        with thread_limit(t, mods):
            row = {}
            for label, fn, nbytes in probes:
                ms = run_cell(peers.Call(fn), timing)["ms"]
                row[label] = nbytes / (ms * 1e-3) / 1e9
                log(f"bandwidth @{t}t {label}: {row[label]:.1f} GB/s")
            out[str(t)] = row
            if torch is not None:
                forkjoin[str(t)] = run_cell(fork_join_call, timing)["ms"] * 1e3
                log(f"fork/join probe @{t}t: {forkjoin[str(t)]:.1f} us")
    return out, forkjoin


# --------------------------------------------------------------------------- running

START = time.perf_counter()


def log(msg: str) -> None:
    print(f"[{time.perf_counter() - START:7.1f}s] {msg}", file=sys.stderr, flush=True)


def build(lib: str, op: str, data: peers.Data, mods: dict[str, Any]) -> peers.Call | None:
    if lib == "xent_rs":
        return peers.build_xent_rs(mods["xent_rs"], op, data)
    if lib == "torch":
        return peers.build_torch(mods["torch"], op, data)
    if lib == "numpy":
        return peers.build_numpy(op, data)
    if lib == "sklearn":
        return peers.build_sklearn(op, data)
    raise ValueError(lib)


def run_workload(
    wl: peers.Workload,
    ops: list[str],
    libs: list[str],
    threads: list[int],
    mods: dict[str, Any],
    timing: Timing,
    data: peers.Data | None = None,
) -> list[dict[str, Any]]:
    """Time every (op, library, thread count) of one workload in this process (on ``data``,
    its arrays, when given)."""
    if data is None:
        data = peers.Data(wl)
    cells = []
    for t in threads:
        with thread_limit(t, mods):
            for op in ops:
                for lib in libs:
                    cell = {"workload": wl.name, "op": op, "lib": lib, "threads": t}
                    try:
                        call = build(lib, op, data, mods)
                        if call is None:
                            continue
                        cell.update(run_cell(call, timing))
                        del call
                        log(f"{wl.name} {op} {lib}@{t}t: {cell['ms']:.4g} ms")
                    except Exception as exc:  # a failing cell is reported, not fatal
                        cell["error"] = describe_error(exc)
                        log(f"{wl.name} {op} {lib}@{t}t: ERROR {cell['error']}")
                    cells.append(cell)
    return cells


def mirror_pairs(ops: list[str]) -> list[tuple[str, str]]:
    """The (op, mirrored op) pairs among ``ops`` (``peers.MIRRORS``)."""
    return [(op, peers.MIRRORS[op][0]) for op in ops if peers.MIRRORS.get(op, ("",))[0] in ops]


def run_mirror_pairs(
    data: peers.Data,
    ops: list[str],
    threads: list[int],
    mods: dict[str, Any],
    timing: Timing,
) -> list[dict[str, Any]]:
    """Each mirrored xent_rs op of one workload (on ``data``, the arrays its cells were timed
    on) timed against its mirror in alternation.

    The two calls take turns (``Timing.pair_rounds`` rounds, the order swapped every round),
    so that both medians come from the same minutes of the machine: the cells of the main
    tables are timed minutes apart, and on a shared VM a 20 ms cell moves 10-20 % between
    runs, more than the bars leave.
    """
    pairs = mirror_pairs(ops)
    if not pairs or "xent_rs" not in mods:
        return []
    wl = data.wl
    out = []
    for t in threads:
        with thread_limit(t, mods):
            for op, mirror in pairs:
                pair = {"workload": wl.name, "op": op, "mirror": mirror, "threads": t}
                try:
                    a = build("xent_rs", op, data, mods)
                    b = build("xent_rs", mirror, data, mods)
                    if a is None or b is None:
                        continue
                    ms, mirror_ms = time_pair(a, b, timing)
                    del a, b
                    pair.update(ms=ms, mirror_ms=mirror_ms, rounds=timing.pair_rounds)
                    log(f"{wl.name} {op} / {mirror}@{t}t: {ms:.4g} / {mirror_ms:.4g} ms")
                except Exception as exc:  # reported, not fatal
                    pair["error"] = describe_error(exc)
                    log(f"{wl.name} {op} / {mirror}@{t}t: ERROR {pair['error']}")
                out.append(pair)
    return out


def time_pair(a: peers.Call, b: peers.Call, timing: Timing) -> tuple[float, float]:
    """Median ms of ``a`` and of ``b``, timed in alternation (see :func:`run_mirror_pairs`)."""
    gc.disable()
    try:
        for call in (a, b):
            for _ in range(timing.warmup):
                time_call(call)
        ta, tb = [], []
        for i in range(timing.pair_rounds):
            if i % 2:
                tb.append(time_call(b))
                ta.append(time_call(a))
            else:
                ta.append(time_call(a))
                tb.append(time_call(b))
    finally:
        gc.enable()
    return statistics.median(ta) * 1e3, statistics.median(tb) * 1e3


def describe_error(exc: BaseException) -> str:
    """The exception's type and the first line of its message, at most 300 characters."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {first}"[:300]


def run_jax(
    threads: int, pin: bool, jobs: list[tuple[str, list[str]]], quick: bool, timing: Timing
) -> list[dict[str, Any]]:
    """Run the jax cells in a subprocess limited to ``threads`` CPUs."""
    env = dict(os.environ)
    if pin and threads == 1:
        env["XLA_FLAGS"] = (
            env.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false"
        ).strip()
    job = {
        "threads": threads,
        "pin": pin,
        "jobs": jobs,
        "quick": quick,
        "timing": timing.as_dict(),
    }
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--jax-worker"],
        input=json.dumps(job),
        capture_output=True,
        text=True,
        env=env,
    )
    for line in proc.stderr.splitlines():
        if line.startswith("["):
            print(line, file=sys.stderr)
    if proc.returncode != 0:
        raise RuntimeError(f"jax worker exited {proc.returncode}: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def jax_worker() -> None:
    """Entry point of the jax subprocess: reads a job on stdin, prints cells as JSON."""
    job = json.loads(sys.stdin.read())
    threads = job["threads"]
    if job["pin"]:
        cpus = sorted(os.sched_getaffinity(0))[:threads]
        os.sched_setaffinity(0, cpus)
    import jax
    import optax  # noqa: F401  (imported before the freeze below)

    gc.collect()
    gc.freeze()
    timing = Timing.from_dict(job["timing"])
    by_name = {wl.name: wl for wl in peers.workloads(job["quick"])}
    cells = []
    for name, ops in job["jobs"]:
        data = peers.Data(by_name[name])
        for op in ops:
            cell = {"workload": name, "op": op, "lib": "jax", "threads": threads}
            try:
                call = peers.build_jax(op, data)
                if call is None:
                    continue
                cell.update(run_cell(call, timing))
                del call
                log(f"{name} {op} jax@{threads}t: {cell['ms']:.4g} ms")
            except Exception as exc:
                cell["error"] = describe_error(exc)
                log(f"{name} {op} jax@{threads}t: ERROR {cell['error']}")
            cells.append(cell)
            jax.clear_caches()
        del data
        gc.collect()
    print(json.dumps(cells))


# --------------------------------------------------------------------------- analysis


def rel_diff(a: float | None, b: float | None) -> float | None:
    if a is None or b is None:
        return None
    if a == b:
        return 0.0
    if not (math.isfinite(a) and math.isfinite(b)):
        return math.inf
    return abs(a - b) / max(abs(b), 1e-30)


def cross_check(cells: list[dict[str, Any]]) -> None:
    """Add ``ref``, ``diff_loss`` and ``diff_out`` to each cell.

    The reference of an op is torch's result for it (for the ``grad_out=`` variants: torch's
    plain fwd+grad), else scikit-learn's (``log_loss``), else the NumPy reference's.
    """
    first: dict[tuple[str, str, str], dict[str, Any]] = {}
    for c in cells:
        if "ms" in c:
            first.setdefault((c["workload"], c["op"], c["lib"]), c)
    for c in cells:
        if "ms" not in c:
            continue
        wl, op = c["workload"], c["op"]
        candidates = [
            (wl, op, "torch"),
            (wl, peers.REF_OP.get(op, op), "torch"),
            (wl, op, "sklearn"),
            (wl, op, "numpy"),
        ]
        ref = next((first[k] for k in candidates if k in first), None)
        if ref is None or ref is c:
            continue
        c["ref"] = ref["lib"]
        c["diff_loss"] = rel_diff(c["loss"], ref["loss"])
        c["diff_out"] = rel_diff(c["checksum"], ref["checksum"])


def worst_diff(c: dict[str, Any]) -> float | None:
    diffs = [d for d in (c.get("diff_loss"), c.get("diff_out")) if d is not None]
    return max(diffs) if diffs else None


def fastest(c: dict[str, Any]) -> float:
    return float(c.get("min_ms", c["ms"]))


def slower_than_numpy(cells: list[dict[str, Any]]) -> list[tuple[str, str, int]]:
    """The (workload, op, threads) cells where xent_rs's fastest call lost to NumPy's.

    Speed is compared on the fastest timed call of each side, not the median: a guard must not
    trip on a scheduling stall (see the fork/join probe), and a real regression slows every call.
    """
    index = {(c["workload"], c["op"], c["lib"], c["threads"]): c for c in cells}
    out = []
    for (wl, op, lib, t), c in index.items():
        ref = index.get((wl, op, "numpy", t))
        if lib != "xent_rs" or "ms" not in c or ref is None or "ms" not in ref:
            continue
        if fastest(c) > fastest(ref):
            out.append((wl, op, t))
    return out


def check_failures(cells: list[dict[str, Any]]) -> list[str]:
    """What ``--check`` fails on: slower than NumPy (see `slower_than_numpy`), an error, or a
    value off the reference."""
    index = {(c["workload"], c["op"], c["lib"], c["threads"]): c for c in cells}
    slow = set(slower_than_numpy(cells))
    out = []
    for (wl, op, lib, t), c in index.items():
        if lib != "xent_rs":
            continue
        where = f"{wl} {op} @{t}t"
        if "error" in c:
            out.append(f"{where}: xent_rs raised {c['error']}")
            continue
        if (wl, op, t) in slow:
            ref = index[(wl, op, "numpy", t)]
            out.append(
                f"{where}: xent_rs {fastest(c):.4g} ms > NumPy reference {fastest(ref):.4g} ms "
                "(fastest calls, also when timed again)"
            )
        d = worst_diff(c)
        if d is not None and d > TOLERANCE:
            out.append(f"{where}: differs from {c['ref']} by {d:.2g} (> {TOLERANCE:g})")
    return out


# --------------------------------------------------------------------------- report


def fmt_ms(v: float) -> str:
    if v >= 100:
        return f"{v:.0f}"
    if v >= 10:
        return f"{v:.1f}"
    if v >= 1:
        return f"{v:.2f}"
    return f"{v:.3g}"


def fmt_ratio(r: float) -> str:
    return f"{r:.0f}x" if r >= 100 else f"{r:.2g}x"


def fmt_diff(d: float | None) -> str:
    if d is None:
        return "-"
    return f"{d:.1g}" + (" FLAG" if d > TOLERANCE else "")


def md_table(header: list[str], rows: list[list[str]]) -> str:
    align = ["---"] + ["---:"] * (len(header) - 1)
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _peer_cell(peer: dict[str, Any] | None, ours: dict[str, Any] | None, scale: float) -> str:
    if peer is None:
        return "-"
    if "error" in peer:
        return "error"
    text = fmt_ms(peer["ms"] * scale)
    if ours is not None and "ms" in ours:
        text += f" ({fmt_ratio(peer['ms'] / ours['ms'])})"
    return text


def _ours_cell(ours: dict[str, Any] | None, scale: float) -> str:
    if ours is None:
        return "-"
    if "error" in ours:
        return "error"
    text = fmt_ms(ours["ms"] * scale)
    if ours.get("floor_ms"):
        text += f" ({fmt_ratio(ours['ms'] / ours['floor_ms'])})"
    return text


def workload_table(
    wl: peers.Workload, cells: list[dict[str, Any]], threads: list[int], with_ours: bool
) -> str:
    index = {(c["op"], c["lib"], c["threads"]): c for c in cells}
    peer_libs = [lib for lib in PEERS if any(c["lib"] == lib for c in cells)]
    header = ["op", "T", "floor ms"]
    header += ["xent_rs ms (x floor)"] if with_ours else []
    header += [f"{lib} ms" + (" (ours x)" if with_ours else "") for lib in peer_libs]
    header += ["xent_rs vs ref"] if with_ours else []
    header += ["peers vs ref (max)"]
    rows = []
    for op in wl.ops:
        for t in threads:
            row_cells = [index.get((op, lib, t)) for lib in LIBS]
            if not any(row_cells):
                continue
            ours = index.get((op, "xent_rs", t))
            floor = next((c["floor_ms"] for c in row_cells if c and "floor_ms" in c), None)
            row = [peers.OPS[op], str(t), "-" if floor is None else fmt_ms(floor)]
            if with_ours:
                row.append(_ours_cell(ours, 1.0))
            row += [_peer_cell(index.get((op, lib, t)), ours, 1.0) for lib in peer_libs]
            if with_ours:
                row.append(fmt_diff(worst_diff(ours) if ours else None))
            peer_diffs = [
                d
                for lib in peer_libs
                if (d := worst_diff(index.get((op, lib, t)) or {})) is not None
            ]
            row.append(fmt_diff(max(peer_diffs) if peer_diffs else None))
            rows.append(row)
    return md_table(header, rows)


def sweep_table(
    sweep: list[peers.Workload], cells: list[dict[str, Any]], threads: list[int], with_ours: bool
) -> str:
    index = {(c["workload"], c["lib"], c["threads"]): c for c in cells}
    peer_libs = [lib for lib in PEERS if any(c["lib"] == lib for c in cells)]
    header = ["C", "N", "N*C", "T", "floor us"]
    header += ["xent_rs us (x floor)"] if with_ours else []
    header += [f"{lib} us" + (" (ours x)" if with_ours else "") for lib in peer_libs]
    rows = []
    for wl in sweep:
        n, c = wl.shape
        for t in threads:
            ours = index.get((wl.name, "xent_rs", t))
            any_cell = next((v for k, v in index.items() if k[0] == wl.name and k[2] == t), None)
            if any_cell is None:
                continue
            floor = any_cell.get("floor_ms")
            row = [f"{c:,}", f"{n:,}", f"{n * c:,}", str(t)]
            row.append("-" if floor is None else fmt_ms(floor * 1e3))
            if with_ours:
                row.append(_ours_cell(ours, 1e3))
            row += [_peer_cell(index.get((wl.name, lib, t)), ours, 1e3) for lib in peer_libs]
            rows.append(row)
    return md_table(header, rows)


def report(results: dict[str, Any], wls: list[peers.Workload], threads: list[int]) -> str:
    meta, cells = results["meta"], results["cells"]
    with_ours = "xent_rs" in meta["versions"]
    out = [
        "# xent_rs vs peers",
        "",
        f"- date: {meta['date']}",
        f"- CPU: {meta['cpu']}; transparent huge pages: {meta['thp']}",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()),
        f"- mode: {'quick' if meta['quick'] else 'full'}; threads: {threads}; "
        f"timing: {meta['timing']}",
    ]
    for lib, note in meta["skipped"].items():
        out.append(f"- skipped {lib}: {note}")
    if not with_ours:
        out.append("- xent_rs is not importable: only the peers were timed")
    out += ["", "## Memory bandwidth (GB/s)", ""]
    bw = results["bandwidth"]
    labels = list(next(iter(bw.values())))
    rows = [[lab] + [f"{bw[str(t)][lab]:.1f}" for t in threads] for lab in labels]
    rows.append(["best (floor)"] + [f"{results['bandwidth_best'][str(t)]:.1f}" for t in threads])
    out.append(md_table(["measurement"] + [f"@{t}t" for t in threads], rows))
    forkjoin = results.get("forkjoin_us") or {}
    if forkjoin:
        probe = ", ".join(f"{v:.1f} us @{t}t" for t, v in forkjoin.items())
        out += [
            "",
            f"Fork/join probe (torch copy of 256 KiB, median): {probe}. Where the multi-thread "
            "figure reads in milliseconds, waking a sleeping CPU stalls short multi-thread "
            "cells here (any library), and their medians say more about this machine than "
            "about the library.",
        ]
    out += [
        "",
        "Cells: median ms per call. `(x floor)`: our time / the bandwidth floor at T threads. "
        "`(ours x)`: peer ms / xent_rs ms (above 1: xent_rs faster). "
        f"`FLAG`: relative difference above {TOLERANCE:g}.",
    ]
    sweep = [wl for wl in wls if wl.group == "sweep"]
    for wl in wls:
        if wl.group == "sweep":
            continue
        wl_cells = [c for c in cells if c["workload"] == wl.name]
        if not wl_cells:
            continue
        out += ["", f"### {wl.name}: {wl.describe()}", ""]
        out.append(workload_table(wl, wl_cells, threads, with_ours))
    acc_rows = mirror_rows(results, threads)
    if acc_rows:
        rounds = results["meta"]["timing"].get("pair_rounds")
        timed = (
            f"the two calls timed in alternation, {rounds} rounds each, medians"
            if "mirrors" in results
            else "the medians of the two cells above"
        )
        out += [
            "",
            "### xent_rs against the xent_rs call each op mirrors",
            "",
            "An accumulator's `update` against the one-shot call on the same chunk, an option "
            f"against the plain call, bfloat16 against float16 ({timed}); `bar`: the largest "
            "ratio allowed.",
            "",
            md_table(
                ["workload", "op", "mirrors", "T", "xent_rs ms", "mirror ms", "ratio", "bar"],
                acc_rows,
            ),
        ]
    linear_cells = results.get("linear") or []
    if linear_cells:
        import linear

        out += [
            "",
            "### linear_cross_entropy: L1 (4096 x 1024 -> 32,000), L2 (2048 x 512 -> 128,256)",
            "",
            "float32, every 17th target ignored, loss + every gradient; each path in its own "
            "subprocess (see `benches/linear.py`): seconds, median (fastest), and peak resident "
            "memory above the inputs in MiB; bar = the gradients + 1/8 of the logits.",
            "",
            linear.table(linear_cells),
        ]
    sweep_cells = [c for c in cells if c["workload"].startswith("sweep-")]
    if sweep_cells:
        out += ["", "### Size sweep: CE fwd (mean), float32, per call in microseconds", ""]
        out.append(sweep_table(sweep, sweep_cells, threads, with_ours))
    notes = results.get("notes", [])
    if notes:
        out += ["", "Notes:"] + [f"- {n}" for n in notes]
    if results.get("check") is not None:
        fails = results["check"]
        out += ["", f"Check: {'FAILED' if fails else 'passed'}"] + [f"- {f}" for f in fails]
    return "\n".join(out)


def plot(results: dict[str, Any], wls: list[peers.Workload], path: Path) -> bool:
    """Bar chart per workload (ms at the largest thread count, log scale) and the sweep."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception:
        return False
    cells = [c for c in results["cells"] if "ms" in c]
    tmax = max(c["threads"] for c in cells)
    main = [
        wl for wl in wls if wl.group != "sweep" and any(c["workload"] == wl.name for c in cells)
    ]
    has_sweep = any(c["workload"].startswith("sweep-") for c in cells)
    panels = len(main) + (2 if has_sweep else 0)
    ncols = 2
    nrows = max(1, math.ceil(panels / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(15, 4.2 * nrows), squeeze=False)
    colors = dict(zip(LIBS, ("C3", "C0", "C2", "C1", "C4"), strict=True))
    for ax, wl in zip(axes.flat, main, strict=False):
        wl_cells = [c for c in cells if c["workload"] == wl.name and c["threads"] == tmax]
        ops = [op for op in wl.ops if any(c["op"] == op for c in wl_cells)]
        libs = [lib for lib in LIBS if any(c["lib"] == lib for c in wl_cells)]
        width = 0.8 / max(1, len(libs))
        for j, lib in enumerate(libs):
            xs, ys = [], []
            for i, op in enumerate(ops):
                c = next((c for c in wl_cells if c["op"] == op and c["lib"] == lib), None)
                if c:
                    xs.append(i + (j - (len(libs) - 1) / 2) * width)
                    ys.append(c["ms"])
            ax.bar(xs, ys, width, label=lib, color=colors[lib])
        for i, op in enumerate(ops):
            floor = next((c.get("floor_ms") for c in wl_cells if c["op"] == op), None)
            if floor:
                ax.hlines(floor, i - 0.45, i + 0.45, colors="k", linestyles=":")
        ax.set_yscale("log")
        ax.set_xticks(range(len(ops)), [peers.OP_SHORT[op] for op in ops], rotation=30, fontsize=8)
        ax.set_ylabel(f"ms per call @{tmax}t (dotted: floor)")
        ax.set_title(f"{wl.name}: {wl.title}", fontsize=10)
        ax.legend(fontsize=7)
    if has_sweep:
        for ax, c_classes in zip(axes.flat[len(main) :], (10, 1000), strict=False):
            for lib in LIBS:
                for t, style in ((tmax, "-"), (1, "--")):
                    pts = sorted(
                        (int(c["workload"].split("-N")[1]) * c_classes, c["ms"] * 1e3)
                        for c in cells
                        if c["workload"].startswith(f"sweep-C{c_classes}-")
                        and c["lib"] == lib
                        and c["threads"] == t
                    )
                    if pts:
                        ax.loglog(*zip(*pts, strict=True), style, color=colors[lib], marker=".")
                        ax.plot([], [], style, color=colors[lib], label=f"{lib}@{t}t")
            ax.set_xlabel("N*C")
            ax.set_ylabel("us per call")
            ax.set_title(f"CE fwd size sweep, C = {c_classes}", fontsize=10)
            ax.legend(fontsize=7)
    for ax in axes.flat[panels:]:
        ax.set_visible(False)
    fig.suptitle(f"xent_rs vs peers, {results['meta']['cpu']}", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.98))
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    all_cpus = len(os.sched_getaffinity(0))
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small workloads, few repeats")
    ap.add_argument("--check", action="store_true", help="fail if xent_rs loses to NumPy")
    ap.add_argument(
        "--json", type=Path, help="results file (default benches/results.json; with --report: none)"
    )
    ap.add_argument(
        "--png",
        type=Path,
        help="chart file (default benches/results.png; with --quick: benches/results-quick.png,"
        " so that a quick run leaves the committed chart alone)",
    )
    ap.add_argument(
        "--threads",
        default=f"1,{all_cpus}",
        help="comma-separated thread counts (default: 1 and all CPUs)",
    )
    ap.add_argument(
        "--only",
        help="comma-separated workloads to run: W1..W7, sweep, L1, L2 (default: all; L1 and "
        "L2, linear_cross_entropy's rows from benches/linear.py, not with --quick)",
    )
    ap.add_argument("--ops", help="comma-separated op ids to run (see peers.OPS)")
    jax_group = ap.add_mutually_exclusive_group()
    jax_group.add_argument(
        "--jax",
        dest="jax",
        action="store_true",
        default=None,
        help="time jax (default: in full runs, not with --quick)",
    )
    jax_group.add_argument("--no-jax", dest="jax", action="store_false", help="do not time jax")
    ap.add_argument(
        "--report",
        type=Path,
        metavar="JSON",
        help="print the tables (and write --png) for a saved results file, without running",
    )
    ap.add_argument("--jax-worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.threads = sorted({int(t) for t in args.threads.split(",")})
    if args.jax is None:
        args.jax = not args.quick
    return args


def best_bandwidth(bw: dict[str, dict[str, float]]) -> dict[str, float]:
    """Best GB/s usable at each thread count: T threads can always run as fewer threads."""
    best, running = {}, 0.0
    for t in sorted(bw, key=int):
        running = max(running, *bw[t].values())
        best[t] = running
    return best


def mirror_rows(results: dict[str, Any], threads: list[int]) -> list[list[str]]:
    """One row per mirrored xent_rs op (``peers.MIRRORS``) and thread count: its median against
    the mirrored op's, timed in alternation (``results["mirrors"]``), and the bar. A saved run
    without them falls back on the two cells of the main tables."""
    pairs = results.get("mirrors")
    if pairs is None:
        pairs = cell_pairs(results["cells"])
    rows = []
    for p in sorted(pairs, key=lambda p: (p["workload"], p["op"], p["threads"])):
        if "ms" not in p or p["threads"] not in threads:
            continue
        bar = peers.MIRRORS[p["op"]][1]
        ratio = p["ms"] / p["mirror_ms"]
        verdict = "ok" if ratio <= bar else "OVER"
        rows.append(
            [
                p["workload"],
                peers.OPS[p["op"]],
                peers.OPS[p["mirror"]],
                str(p["threads"]),
                fmt_ms(p["ms"]),
                fmt_ms(p["mirror_ms"]),
                f"{ratio:.2f}x",
                f"{bar:.2f}x {verdict}",
            ]
        )
    return rows


def cell_pairs(cells: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The mirror pairs of a saved run that has none, from its xent_rs cells."""
    ours = {
        (c["workload"], c["op"], c["threads"]): c
        for c in cells
        if c["lib"] == "xent_rs" and "ms" in c
    }
    pairs = []
    for (wl, op, t), c in ours.items():
        mirror = ours.get((wl, peers.MIRRORS.get(op, ("",))[0], t))
        if mirror is not None:
            pair = {"workload": wl, "op": op, "mirror": mirror["op"], "threads": t}
            pairs.append(pair | {"ms": c["ms"], "mirror_ms": mirror["ms"]})
    return pairs


def analyse(results: dict[str, Any]) -> None:
    """Floors, cross-checks and notes, from the raw cells and bandwidths (idempotent)."""
    cells = results["cells"]
    results["bandwidth_best"] = best = best_bandwidth(results["bandwidth"])
    for c in cells:
        if "floor_bytes" in c:
            c["floor_ms"] = c["floor_bytes"] / (best[str(c["threads"])] * 1e9) * 1e3
    cross_check(cells)
    ours: dict[tuple[str, str], set[float]] = {}
    for c in cells:
        if c["lib"] == "xent_rs" and c.get("loss") is not None:
            ours.setdefault((c["workload"], c["op"]), set()).add(c["loss"])
    results["notes"] = [
        f"xent_rs {wl} {op}: the loss differs between thread counts: {sorted(losses)}"
        for (wl, op), losses in ours.items()
        if len(losses) > 1
    ]


def collect(args: argparse.Namespace) -> dict[str, Any]:
    """Measure bandwidth and every cell; returns the raw results."""
    timing = Timing(args.quick)
    mods, versions, skipped = import_libs(args.jax)
    gc.collect()
    gc.freeze()  # the imported modules' objects: later collections skip them
    all_cpus = len(os.sched_getaffinity(0))
    wls = select_workloads(args)
    op_filter = set(args.ops.split(",")) if args.ops else None
    # The NumPy references use scipy.special, so "numpy" is there when scipy imports.
    importable = set(mods) | ({"numpy"} if "scipy" in mods else set())
    libs = [lib for lib in ("xent_rs", "torch", "numpy", "sklearn") if lib in importable]
    meta = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpu": cpu_info(),
        "thp": thp_setting(),
        "versions": versions,
        "skipped": skipped,
        "quick": args.quick,
        "threads": args.threads,
        "timing": timing.as_dict(),
        "argv": sys.argv[1:],
    }
    print(f"# {meta['date']} | {meta['cpu']}", file=sys.stderr)
    bw, forkjoin = measure_bandwidth(args.threads, mods, timing, 128 if args.quick else 512)

    cells: list[dict[str, Any]] = []
    mirrors: list[dict[str, Any]] = []
    floors: dict[tuple[str, str], int] = {}
    jax_jobs: list[tuple[str, list[str]]] = []
    for wl in wls:
        ops = [op for op in wl.ops if op_filter is None or op in op_filter]
        if not ops:
            continue
        floors.update({(wl.name, op): peers.floor_bytes(op, wl) for op in ops})
        data = peers.Data(wl)
        cells += run_workload(wl, ops, libs, args.threads, mods, timing, data)
        mirrors += run_mirror_pairs(data, ops, args.threads, mods, timing)
        del data
        gc.collect()
        jax_ops = [op for op in ops if op in peers.JAX_OPS]
        if jax_ops:
            jax_jobs.append((wl.name, jax_ops))
    if args.check:
        cells = retime_slow(cells, wls, libs, mods, timing)
    if "jax" not in skipped and jax_jobs:
        for t in args.threads:
            try:
                cells += run_jax(t, t < all_cpus, jax_jobs, args.quick, timing)
            except Exception as exc:
                skipped[f"jax@{t}t"] = str(exc)[-500:]
                log(f"jax@{t}t failed: {exc}")
    for c in cells:
        c["floor_bytes"] = floors[(c["workload"], c["op"])]
    linear_rows = selected_linear_rows(args)
    linear_cells = []
    if linear_rows:
        import linear

        linear_cells = linear.linear_rows(
            linear_rows, tuple(args.threads), progress=lambda msg: log(f"linear {msg}")
        )
    meta["wall_s"] = round(time.perf_counter() - START, 1)
    return {
        "meta": meta,
        "bandwidth": bw,
        "forkjoin_us": forkjoin,
        "cells": cells,
        "mirrors": mirrors,
        "linear": linear_cells,
    }


def selected_linear_rows(args: argparse.Namespace) -> tuple[str, ...]:
    """linear_cross_entropy's rows to run: L1 and L2 in a full run, those named by --only."""
    if args.only:
        wanted = {w.strip().upper() for w in args.only.split(",")}
        return tuple(row for row in ("L1", "L2") if row in wanted)
    return () if args.quick else ("L1", "L2")


def retime_slow(
    cells: list[dict[str, Any]],
    wls: list[peers.Workload],
    libs: list[str],
    mods: dict[str, Any],
    timing: Timing,
) -> list[dict[str, Any]]:
    """Times every cell that lost to NumPy once more (xent_rs and NumPy side by side) and keeps
    the new pair. On this kind of VM a whole cell now and then runs in a slow phase (a busy
    neighbour, a peer's threads still spinning); a real regression loses both times."""
    slow = slower_than_numpy(cells)
    if not slow:
        return cells
    by_name = {wl.name: wl for wl in wls}
    redone = {}
    for wl, op, t in slow:
        log(f"{wl} {op}@{t}t lost to NumPy: timing it again")
        for c in run_workload(
            by_name[wl], [op], [x for x in libs if x in ("xent_rs", "numpy")], [t], mods, timing
        ):
            c["retimed"] = True
            redone[(wl, op, c["lib"], t)] = c
    return [redone.get((c["workload"], c["op"], c["lib"], c["threads"]), c) for c in cells]


def select_workloads(args: argparse.Namespace) -> list[peers.Workload]:
    wls = peers.workloads(args.quick)
    if args.only:
        wanted = {w.strip().lower() for w in args.only.split(",")}
        wls = [wl for wl in wls if wl.group.lower() in wanted or wl.name.lower() in wanted]
    return wls


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.jax_worker:
        jax_worker()
        return 0
    if args.report:
        results = json.loads(args.report.read_text())
        args.quick = results["meta"]["quick"]
    else:
        results = collect(args)
    analyse(results)
    meta, cells = results["meta"], results["cells"]
    threads = meta["threads"]
    wls = select_workloads(args)
    status = 0
    results["check"] = None
    if args.check:
        if "xent_rs" not in meta["versions"]:
            results["check"] = ["xent_rs is not importable: nothing to check"]
            status = 2
        else:
            results["check"] = check_failures(cells)
            status = 1 if results["check"] else 0
    print(report(results, wls, threads))
    print(f"\nwall time of the run: {meta['wall_s']} s")
    if args.json is None and not args.report:
        args.json = HERE / "results.json"
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1, default=str) + "\n")
        print(f"results: {args.json}")
    if args.png is None:
        args.png = HERE / ("results-quick.png" if args.quick else "results.png")
    if plot(results, wls, args.png):
        print(f"chart: {args.png}")
    return status


if __name__ == "__main__":
    sys.exit(main())
