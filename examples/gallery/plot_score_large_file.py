"""
Scoring a file bigger than memory
=================================

A model wrote its logits for every row of a data set to disk, and the labels sit in another
file. Neither has to fit in memory: ``xent-rs score`` memory-maps ``.npy`` files and scores
them chunk by chunk, and the :mod:`streaming accumulators <xent_rs.streaming>` do the same
inside your own loop. This page writes a modest file (40 MB) to a temporary folder, scores it
both ways, and says how that scales.
"""

import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

import xent_rs

ROWS, CLASSES, CHUNK = 1_000_000, 10, 100_000
folder = Path(tempfile.mkdtemp(prefix="xent-rs-gallery-"))

# %%
# Writing the files chunk by chunk
# --------------------------------
# ``open_memmap`` writes a ``.npy`` file through a memory map, so the writer never holds more
# than one chunk either. The "model" is usually right: its logit for the true class is raised.

open_memmap = np.lib.format.open_memmap
logits = open_memmap(folder / "logits.npy", "w+", np.float32, (ROWS, CLASSES))
labels = open_memmap(folder / "labels.npy", "w+", np.int64, (ROWS,))
rng = np.random.default_rng(0)
for start in range(0, ROWS, CHUNK):
    y = rng.integers(0, CLASSES, size=CHUNK)
    x = rng.normal(size=(CHUNK, CLASSES)).astype(np.float32)
    x[np.arange(CHUNK), y] += 2.5
    logits[start : start + CHUNK], labels[start : start + CHUNK] = x, y
logits.flush()
labels.flush()
del logits, labels
for name in ("logits.npy", "labels.npy"):
    print(f"{name}: {(folder / name).stat().st_size / 1e6:.1f} MB")

# %%
# The command line
# ----------------
# ``xent-rs score PRED TARGET`` prints the loss, the rows and the throughput; ``--json`` prints
# the same as one JSON object, and ``--per-row`` writes every row's loss to a new ``.npy``
# file, also chunk by chunk. (The page runs ``python -m xent_rs``, the same program as
# ``xent-rs``, with the build's Python.)


def xent_rs_score(*args: str) -> str:
    print("$ xent-rs score", *args)
    command = [sys.executable, "-m", "xent_rs", "score", *args]
    run = subprocess.run(command, cwd=folder, capture_output=True, text=True)
    run.check_returncode()
    return run.stdout


print(xent_rs_score("logits.npy", "labels.npy", "--loss", "cross_entropy"))
out = xent_rs_score(
    "logits.npy",
    "labels.npy",
    "--loss=cross_entropy",
    "--per-row=rows.npy",
    "--json",
)
report = json.loads(out)
for key in ("value", "rows", "chunks", "seconds", "bytes_read", "per_row"):
    print(f"  {key}: {report[key]}")

# %%
# The accumulators
# ----------------
# The same loss inside your own loop: memory-map the files, feed one chunk at a time to a
# :class:`~xent_rs.streaming.CrossEntropyAccumulator` and read ``result()`` whenever you like.
# Here it is read after every chunk, to watch the running mean settle.

x = np.load(folder / "logits.npy", mmap_mode="r")
y = np.load(folder / "labels.npy", mmap_mode="r")
acc = xent_rs.CrossEntropyAccumulator()
rows_seen, running = [], []
start_time = time.perf_counter()
for start in range(0, len(x), CHUNK):
    acc.update(x[start : start + CHUNK], y[start : start + CHUNK])
    rows_seen.append(acc.count)
    running.append(acc.result())
seconds = time.perf_counter() - start_time
per_row = np.load(folder / "rows.npy", mmap_mode="r")
print(f"accumulator:      {acc.result():.9f} ({acc.count:,} rows, {seconds:.3f} s)")
print(f"command line:     {report['value']:.9f}")
print(f"mean of rows.npy: {per_row.mean(dtype=np.float64):.9f}")

fig, ax = plt.subplots(figsize=(6, 3.2))
ax.plot(rows_seen, running, marker="o")
ax.axhline(report["value"], color="gray", ls="--", label="xent-rs score")
ax.set(xlabel="rows seen", ylabel="running mean", title="CrossEntropyAccumulator")
ax.legend()
fig.tight_layout()

# %%
# How it scales
# -------------
# Memory holds one chunk at a time: ``xent-rs score`` picks about 32 MiB of predictions per
# chunk (``--chunk-rows N`` to change it), and the pages of the memory-mapped file already read
# are the operating system's cache, which it drops when memory is short. So a file of 100 GB
# is scored with the same memory as this one, in time proportional to its size, at the
# throughput printed above or the disk's read speed, whichever is lower (this file, just
# written, was still in the cache). Chunks scored elsewhere (other processes, other machines)
# combine with :meth:`~xent_rs.streaming.Accumulator.merge`; on a cluster,
# :doc:`plot_dask_cluster` does that for you.

rate = report["bytes_read"] / report["seconds"]
print(f"read {report['bytes_read'] / 1e6:.0f} MB at {rate / 1e9:.2f} GB/s here")
print(f"100 GB at this rate: about {100e9 / rate:.0f} s, in the memory of one chunk")
shutil.rmtree(folder)
