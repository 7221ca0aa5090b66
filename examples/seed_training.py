"""Replay training runs that PyTorch recorded, in plain NumPy with xent_rs's losses and gradients.

Run: ``python examples/seed_training.py [--trajectories DIR]``. ``DIR/trajectories.npz`` holds
small networks trained with ``torch.optim.SGD`` in float64 (``DIR/README.md`` describes them);
the default is the copy kept in ``tests/golden-training``. Each run is replayed step for step:
the same initial weights and mini-batches, the loss and ``d loss / d outputs`` from xent_rs,
the chain rule through the layers by hand, and PyTorch's SGD update. The final weights check
every step's gradient, not only the losses: an error in one step's gradient moves the weights
of every later step.

Conventions are PyTorch's: layer ``k`` holds ``Wk`` ``(out, in)`` and ``bk`` ``(out,)`` and
computes ``x @ Wk.T + bk``; losses use ``reduction="mean"``; SGD with momentum ``m`` sets the
buffer ``v = g`` on the first step, then ``v = m*v + g``, and updates ``p -= lr * v``.

Tolerance: a value's error is ``|got - want| / (|want| + 1e-3)`` and it passes when the error
is at most 1e-9, which is ``np.isclose(got, want, rtol=1e-9, atol=1e-12)``. For values of
order one (every loss, nearly every weight) this is the relative error; a weight that ends
near zero is held to 1e-12 absolute instead, because its relative error would measure the
cancellation in its own updates rather than the replay. NaN never passes.

The importable API, for pages that plot a replay: ``replay(path) -> dict[str, Replay]`` (import
this file with ``examples/`` on ``sys.path``) and ``main(argv) -> int``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

import xent_rs

Array = npt.NDArray[np.float64]

#: The copy of the recorded trajectories kept in the repository.
DEFAULT_DIR = Path(__file__).resolve().parent.parent / "tests" / "golden-training"
#: Largest accepted error (see the module docstring for how an error is measured).
TOLERANCE = 1e-9
#: Below this magnitude a value's error is measured absolutely (atol = TOLERANCE * SCALE).
SCALE = 1e-3


@dataclass(frozen=True)
class Replay:
    """The outcome of replaying one recorded trajectory.

    ``losses[s]`` is the loss xent_rs computed at step ``s`` (before that step's update) and
    ``reference_losses[s]`` the one PyTorch recorded; the errors are the worst over all steps
    and over every element of every final parameter.
    """

    name: str
    losses: Array
    reference_losses: Array
    max_loss_error: float
    max_param_error: float
    ok: bool


@dataclass(frozen=True)
class Activation:
    """A hidden layer's elementwise nonlinearity.

    ``backward(grad, out)`` maps ``d loss / d out`` to ``d loss / d pre`` from the activation's
    output alone, as torch's relu and tanh backward kernels do.
    """

    forward: Callable[[Array], Array]
    backward: Callable[[Array, Array], Array]


RELU = Activation(lambda pre: np.maximum(pre, 0.0), lambda grad, out: grad * (out > 0))
TANH = Activation(np.tanh, lambda grad, out: grad * (1.0 - out * out))

#: ``loss(outputs, targets, arrays) -> (loss, d loss / d outputs)``; ``arrays`` are the
#: trajectory's own, holding the class or positive weights the loss uses.
LossFn = Callable[[Array, npt.NDArray[Any], Mapping[str, npt.NDArray[Any]]], tuple[float, Array]]


def sigmoid(x: Array) -> Array:
    """``1 / (1 + exp(-x))``, torch's formula; ``exp`` overflowing to inf correctly gives 0."""
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-x))


def bce_on_sigmoid(
    outputs: Array, targets: npt.NDArray[Any], arrays: Mapping[str, npt.NDArray[Any]]
) -> tuple[float, Array]:
    """The seed's loss, ``nn.BCELoss()(torch.sigmoid(outputs), targets)``.

    BCE takes probabilities, so its gradient is with respect to them; the sigmoid's derivative
    ``p * (1 - p)`` (written as torch's sigmoid backward computes it) carries it back to the
    outputs.
    """
    probs = sigmoid(outputs)
    loss, grad = xent_rs.binary_cross_entropy(probs, targets, return_grad=True)
    return float(loss), grad * (1.0 - probs) * probs


def weighted_smoothed_cross_entropy(
    outputs: Array, targets: npt.NDArray[Any], arrays: Mapping[str, npt.NDArray[Any]]
) -> tuple[float, Array]:
    """``nn.CrossEntropyLoss(weight=class_weight, label_smoothing=0.05)`` on the logits."""
    loss, grad = xent_rs.cross_entropy(
        outputs, targets, weight=arrays["class_weight"], label_smoothing=0.05, return_grad=True
    )
    return float(loss), grad


def bce_with_logits_pos_weight(
    outputs: Array, targets: npt.NDArray[Any], arrays: Mapping[str, npt.NDArray[Any]]
) -> tuple[float, Array]:
    """``nn.BCEWithLogitsLoss(pos_weight=pos_weight)`` on the logits."""
    loss, grad = xent_rs.binary_cross_entropy_with_logits(
        outputs, targets, pos_weight=arrays["pos_weight"], return_grad=True
    )
    return float(loss), grad


@dataclass(frozen=True)
class Recipe:
    """How a trajectory was trained: what ``trajectories.npz`` does not record.

    ``hidden`` holds the activation after each hidden layer, so the network has
    ``len(hidden) + 1`` linear layers; the last one's outputs go to ``loss``.
    """

    hidden: tuple[Activation, ...]
    loss: LossFn
    lr: float
    momentum: float


#: The recipes of the recorded runs, from the README next to ``trajectories.npz``.
RECIPES: dict[str, Recipe] = {
    "seed_bce": Recipe((RELU,), bce_on_sigmoid, lr=0.5, momentum=0.0),
    "multiclass_weighted": Recipe((TANH,), weighted_smoothed_cross_entropy, lr=0.2, momentum=0.9),
    "multilabel_pos_weight": Recipe((), bce_with_logits_pos_weight, lr=0.3, momentum=0.0),
}


def loss_and_grads(
    params: Mapping[str, Array],
    recipe: Recipe,
    x: Array,
    targets: npt.NDArray[Any],
    arrays: Mapping[str, npt.NDArray[Any]],
) -> tuple[float, dict[str, Array]]:
    """The mini-batch loss and the gradient of every parameter (backpropagation by hand).

    Each layer's input is kept from the forward pass: it is what the layer's weight gradient
    needs, and, being the previous activation's output, what that activation's backward needs.
    """
    n_layers = len(recipe.hidden) + 1
    inputs = [x]
    for k, activation in enumerate(recipe.hidden, start=1):
        inputs.append(activation.forward(inputs[-1] @ params[f"W{k}"].T + params[f"b{k}"]))
    outputs = inputs[-1] @ params[f"W{n_layers}"].T + params[f"b{n_layers}"]
    loss, grad = recipe.loss(outputs, targets, arrays)
    grads: dict[str, Array] = {}
    for k in range(n_layers, 0, -1):
        grads[f"W{k}"] = grad.T @ inputs[k - 1]
        grads[f"b{k}"] = grad.sum(axis=0)
        if k > 1:
            grad = recipe.hidden[k - 2].backward(grad @ params[f"W{k}"], inputs[k - 1])
    return loss, grads


def sgd_step(
    params: dict[str, Array],
    grads: Mapping[str, Array],
    velocity: dict[str, Array],
    lr: float,
    momentum: float,
) -> None:
    """One ``torch.optim.SGD`` step in place (no dampening, weight decay or Nesterov)."""
    for key, grad in grads.items():
        if momentum:
            # torch's rule: v = g on the first step, then v = m*v + g
            velocity[key] = grad.copy() if key not in velocity else momentum * velocity[key] + grad
            grad = velocity[key]
        params[key] -= lr * grad


def worst_error(got: npt.ArrayLike, want: npt.ArrayLike) -> float:
    """The largest ``|got - want| / (|want| + SCALE)``; NaN if any value is NaN."""
    g, w = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    return float(np.max(np.abs(g - w) / (np.abs(w) + SCALE)))


def load(path: str | os.PathLike[str] | None = None) -> dict[str, dict[str, npt.NDArray[Any]]]:
    """The arrays of each trajectory in ``path/trajectories.npz``, keyed ``name -> key -> array``
    (``NAME/init/W1`` becomes ``arrays["seed_bce"]["init/W1"]``)."""
    npz_path = Path(DEFAULT_DIR if path is None else path) / "trajectories.npz"
    trajectories: dict[str, dict[str, npt.NDArray[Any]]] = {}
    with np.load(npz_path, allow_pickle=False) as npz:
        for key in npz.files:
            name, _, rest = key.partition("/")
            trajectories.setdefault(name, {})[rest] = npz[key]
    return trajectories


def replay_trajectory(name: str, arrays: Mapping[str, npt.NDArray[Any]], recipe: Recipe) -> Replay:
    """Trains the trajectory's network from its initial weights and compares with the record."""
    params = {k.removeprefix("init/"): v.copy() for k, v in arrays.items() if k.startswith("init/")}
    finals = {k.removeprefix("final/"): v for k, v in arrays.items() if k.startswith("final/")}
    expected = {f"{p}{k}" for k in range(1, len(recipe.hidden) + 2) for p in "Wb"}
    if set(params) != expected or set(finals) != expected:
        raise ValueError(
            f"{name}: parameters {sorted(params)} -> {sorted(finals)}, "
            f"but its recipe has the layers {sorted(expected)}"
        )
    x, targets, batches = arrays["X"], arrays["target"], arrays["batches"]
    reference = np.asarray(arrays["loss"], dtype=np.float64)
    if reference.shape != (len(batches),):
        raise ValueError(f"{name}: {len(batches)} batches but losses of shape {reference.shape}")
    velocity: dict[str, Array] = {}
    losses = np.empty(len(batches))
    for step, rows in enumerate(batches):
        losses[step], grads = loss_and_grads(params, recipe, x[rows], targets[rows], arrays)
        sgd_step(params, grads, velocity, recipe.lr, recipe.momentum)
    loss_error = worst_error(losses, reference)
    param_error = max(worst_error(params[k], finals[k]) for k in sorted(params))
    return Replay(
        name=name,
        losses=losses,
        reference_losses=reference,
        max_loss_error=loss_error,
        max_param_error=param_error,
        ok=bool(loss_error <= TOLERANCE and param_error <= TOLERANCE),
    )


def replay(path: str | os.PathLike[str] | None = None) -> dict[str, Replay]:
    """Replays every trajectory of ``path/trajectories.npz`` (default: ``DEFAULT_DIR``).

    Returns one ``Replay`` per trajectory, in the file's order. A trajectory without a recipe
    in ``RECIPES``, or whose parameters do not fit its recipe, raises ``ValueError``: it cannot
    be replayed, which is not the same as a replay that disagrees (``Replay.ok`` False).
    """
    trajectories = load(path)
    unknown = sorted(set(trajectories) - set(RECIPES))
    if unknown:
        raise ValueError(f"no recipe for the trajectories {unknown}; known: {sorted(RECIPES)}")
    return {
        name: replay_trajectory(name, arrays, RECIPES[name])
        for name, arrays in trajectories.items()
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: one line per trajectory; 0 when all agree, 1 on a mismatch, 2 on an error."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--trajectories",
        type=Path,
        default=DEFAULT_DIR,
        metavar="DIR",
        help="directory holding trajectories.npz (default: the copy in tests/golden-training)",
    )
    args = parser.parse_args(argv)
    try:
        replays = replay(args.trajectories)
    except (OSError, ValueError) as exc:
        print(f"seed_training: error: {exc}", file=sys.stderr)
        return 2
    for r in replays.values():
        print(
            f"{r.name}: {len(r.losses)} steps, worst loss error {r.max_loss_error:.2e}, "
            f"worst parameter error {r.max_param_error:.2e}  {'ok' if r.ok else 'MISMATCH'}"
        )
    return 0 if all(r.ok for r in replays.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
