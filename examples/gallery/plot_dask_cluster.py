"""
Scoring Dask arrays on a cluster
================================

:mod:`xent_rs.dask` takes ``dask.array`` inputs chunked along the rows. A reduced loss is a
lazy 0-d array: each block is scored by a streaming accumulator where it lives, and only the
accumulators (a few numbers each) travel to be merged. Here the cluster is a
``distributed.LocalCluster`` of two workers in this process, to keep the build fast; a real
one (``dask scheduler`` and ``dask worker`` on several machines) runs the same code.
"""

import dask
import dask.array as da
import matplotlib.pyplot as plt
import numpy as np
from distributed import Client, LocalCluster

import xent_rs
import xent_rs.dask

cluster = LocalCluster(
    n_workers=2,
    threads_per_worker=1,
    processes=False,  # threads in this process: xent_rs releases the GIL
    dashboard_address=":0",
)
client = Client(cluster)
print(f"{len(client.scheduler_info()['workers'])} workers")

# %%
# Lazy losses
# -----------
# Eight blocks of 100,000 rows, generated on the workers; the class axis (10 classes) is one
# chunk, as it must be.

rng = da.random.default_rng(0)
x = rng.standard_normal((800_000, 10), chunks=(100_000, 10), dtype=np.float32)
y = rng.integers(0, 10, size=800_000, chunks=100_000)
x, y = client.persist([x, y])  # made on the workers, and kept there
loss = xent_rs.dask.cross_entropy(x, y)
print(loss)  # nothing computed yet
print(f"mean cross entropy: {float(loss.compute()):.9f}")

# %%
# The same number as the one-shot function on the whole array, up to float64 rounding (the
# blocks' sums are added exactly, see :mod:`xent_rs.streaming`):

x_np, y_np = dask.compute(x, y)
print(f"one-shot on NumPy:  {float(xent_rs.cross_entropy(x_np, y_np)):.9f}")

# %%
# Per-row losses and gradients
# ----------------------------
# ``reduction="none"`` and ``return_grad=True`` give dask arrays with the input's chunks, to
# reduce further or write out block by block. The accumulator itself comes back from
# :func:`~xent_rs.dask.accumulate`, to merge with results from elsewhere.

rows = xent_rs.dask.cross_entropy(x, y, reduction="none")
_, grad = xent_rs.dask.cross_entropy(x, y, return_grad=True)
print(f"per-row losses: {rows.chunks[0][:3]}... rows per block")
print(f"gradient chunks are the input's: {grad.chunks == x.chunks}")
acc = xent_rs.dask.accumulate(xent_rs.CrossEntropyAccumulator(), x, y).compute()
print(acc)

counts, edges = da.histogram(rows, bins=60, range=(0.0, 9.0))
fig, ax = plt.subplots(figsize=(6, 3.2))
ax.stairs(counts.compute(), edges, fill=True)
ax.set(xlabel="per-row cross entropy", ylabel="rows", title="800,000 rows")
fig.tight_layout()

# %%
client.close()
cluster.close()
