"""
The seed's training loop, replayed against PyTorch
==================================================

PyTorch trained small models from fixed seeds and recorded, for every step, the loss and the
parameters (``tests/golden-training/trajectories.npz``). ``replay()`` in
``examples/seed_training.py`` runs the same steps from the same start with xent_rs's losses and
fused gradients, and compares the two. Here are both loss curves for each trajectory, and the
largest errors that ``replay()`` reports in the losses and in the parameters (its docstring
says how they are measured).
"""

import sys
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

# examples/seed_training.py sits beside this folder; the build fails if it is missing.
try:
    EXAMPLES = Path(__file__).resolve().parents[1]
except NameError:  # sphinx-gallery runs the page in its own folder, without __file__
    EXAMPLES = Path.cwd().parent
sys.path.insert(0, str(EXAMPLES))
import seed_training

replays = seed_training.replay()
print("trajectory               steps  max loss error  max param error  ok")
for r in replays.values():
    errors = f"{r.max_loss_error:>14.3g}  {r.max_param_error:>15.3g}"
    print(f"{r.name:<24} {len(r.losses):>5}  {errors}  {r.ok}")

# %%
# The curves lie on top of each other: PyTorch's recorded losses (wide, light) under
# xent_rs's (dots).

cols = min(len(replays), 2)
rows = -(-len(replays) // cols)
fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
for ax in axes.flat[len(replays) :]:
    ax.set_axis_off()
for ax, r in zip(axes.flat, replays.values(), strict=False):
    steps = np.arange(len(r.losses))
    ax.plot(steps, r.reference_losses, lw=6, alpha=0.4, c="tab:orange", label="PyTorch")
    ax.plot(steps, r.losses, ".-", lw=1, ms=4, c="tab:blue", label="xent_rs")
    ax.set(title=r.name, xlabel="step", ylabel="loss")
    ax.legend()
fig.tight_layout()

# %%
# A replay that drifted from PyTorch fails this page, and with it the documentation build.

failed = [r.name for r in replays.values() if not r.ok]
if failed:
    raise RuntimeError(f"replays that do not match PyTorch: {failed}")
