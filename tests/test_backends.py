"""The two cores behind one backend layer: the GPU core takes the CPU core's arguments and
refuses what it refuses, in the same words (no GPU needed).

``xent_rs._backend`` converts a call's arguments once, whatever its array module, and hands
them to ``xent_rs._core`` (NumPy) or ``xent_rs._cupy`` (CuPy). So the public functions, their
options (``xent_rs._spec``) and their conversions are one code for both; what remains to
compare is the two cores. Checked here:

* every function of the GPU core has the parameters of its CPU namesake, and every core
  function the backend calls exists in both;
* the GPU core's own checks (shapes, output buffers, upstream gradients: the ones the Rust core
  makes before it touches memory) give the CPU core's exception type and message, run with
  NumPy standing in for CuPy up to the first kernel launch.

The checks that read device memory (class indices, probabilities) and the kernels themselves
are covered by ``tests/test_cupy.py`` where a GPU is.
"""

from __future__ import annotations

import ast
import inspect
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from xent_rs import _backend, _core, _cupy, _linear


def _public(module: Any) -> dict[str, Callable[..., Any]]:
    return {
        name: obj
        for name, obj in vars(module).items()
        if callable(obj) and not name.startswith("_") and not inspect.isclass(obj)
    }


GPU = {name: f for name, f in _public(_cupy).items() if f.__module__ == _cupy.__name__}


def _called_by_backend() -> set[str]:
    """The core functions the backend calls (``_backend``, and ``_linear``'s chunk loop):
    ``core.NAME(...)``, ``ns.core.NAME(...)`` and ``getattr(ns.core, name)`` with the literal
    names its callers pass."""
    names: set[str] = set()
    for module in (_backend, _linear):
        for node in ast.walk(ast.parse(inspect.getsource(module))):
            if isinstance(node, ast.Attribute) and ast.unparse(node.value) in ("core", "ns.core"):
                names.add(node.attr)
    source = inspect.getsource(_backend)
    for literal in ("log_softmax", "softmax", "log_softmax_backward", "softmax_backward"):
        assert f'"{literal}"' in source
        names.add(literal)
    return names


def test_every_core_function_the_backend_calls_has_a_gpu_twin() -> None:
    called = _called_by_backend()
    assert called <= set(GPU), f"no GPU twin: {called - set(GPU)}"
    assert set(GPU) <= called, f"never called: {set(GPU) - called}"


@pytest.mark.parametrize("name", sorted(GPU))
def test_gpu_core_takes_the_cpu_cores_arguments(name: str) -> None:
    cpu = inspect.signature(getattr(_core, name))
    gpu = inspect.signature(GPU[name])
    assert list(cpu.parameters) == list(gpu.parameters)


class Launched(Exception):
    """The GPU core got past its checks (to a kernel launch or a device read)."""


@pytest.fixture
def gpu_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    """The GPU core with NumPy for CuPy, stopping at its first kernel or device read."""

    def launch(*args: Any, **kwargs: Any) -> None:
        raise Launched

    monkeypatch.setattr(_cupy, "_cp", lambda: np)
    monkeypatch.setattr(_cupy, "_address", lambda a: a.ctypes.data)
    for name in ("_launch_row", "_check_targets", "_check_probabilities", "_elementwise"):
        monkeypatch.setattr(_cupy, name, launch)
    monkeypatch.setattr(_cupy, "_reduction", launch)


def _outcome(call: Callable[[], Any]) -> tuple[type[BaseException], str] | None:
    try:
        call()
    except Launched:
        return None
    except (TypeError, ValueError, IndexError) as exc:
        return type(exc), str(exc)
    return None


X = np.zeros((4, 3))
T = np.array([0, 1, 2, 0])
SOFT = np.full((4, 3), 1 / 3)

#: (function, arguments after conversion) that the CPU core refuses before touching memory.
CLASS_CASES: dict[str, tuple[str, tuple[Any, ...]]] = {
    "0-d input": (
        "cross_entropy",
        (np.zeros(()), np.array(0), -1, None, None, -100, "mean", 0.0, False, None, None),
    ),
    "axis out of range": (
        "cross_entropy",
        (X, T, 2, None, None, -100, "mean", 0.0, False, None, None),
    ),
    "target shape": (
        "cross_entropy",
        (X, T[:3], -1, None, None, -100, "mean", 0.0, False, None, None),
    ),
    "soft target shape": (
        "cross_entropy",
        (X, SOFT[:, :2], -1, None, None, -100, "mean", 0.0, False, None, None),
    ),
    "floats shaped as indices": (
        "cross_entropy",
        (X, T.astype(float), -1, None, None, -100, "mean", 0.0, False, None, None),
    ),
    "ignore_index with soft targets": (
        "cross_entropy",
        (X, SOFT, -1, None, None, 0, "mean", 0.0, False, None, None),
    ),
    "weight shape": (
        "cross_entropy",
        (X, T, -1, np.ones(2), None, -100, "mean", 0.0, False, None, None),
    ),
    "sample_weight shape": (
        "cross_entropy",
        (X, T, -1, None, np.ones(3), -100, "mean", 0.0, False, None, None),
    ),
    "grad_out without return_grad": (
        "cross_entropy",
        (X, T, -1, None, None, -100, "mean", 0.0, False, None, np.zeros((4, 3))),
    ),
    "grad_out shape": (
        "cross_entropy",
        (X, T, -1, None, None, -100, "mean", 0.0, True, None, np.zeros((4, 2))),
    ),
    "grad_out dtype": (
        "cross_entropy",
        (X, T, -1, None, None, -100, "mean", 0.0, True, None, np.zeros((4, 3), np.float32)),
    ),
    "grad_out overlaps the target": (
        "cross_entropy",
        (X, np.zeros(4, np.int64), -1, None, None, -100, "mean", 0.0, True, None, None),
    ),
    "grad_output not scalar": (
        "cross_entropy",
        (X, T, -1, None, None, -100, "mean", 0.0, True, np.ones(4), None),
    ),
    "grad_output shape": (
        "cross_entropy",
        (X, T, -1, None, None, -100, "none", 0.0, True, np.ones(3), None),
    ),
    "nll soft targets": ("nll_loss", (X, SOFT, -1, None, None, -100, "mean", False, None)),
    "nll target shape": ("nll_loss", (X, T[:2], -1, None, None, -100, "mean", False, None)),
    "negative z_loss": (
        "cross_entropy",
        (X, T, -1, None, None, -100, "mean", 0.0, False, None, None, -1.0, None),
    ),
    "NaN z_loss": (
        "cross_entropy",
        (X, T, -1, None, None, -100, "mean", 0.0, False, None, None, math.nan, None),
    ),
    "zero softcap": (
        "cross_entropy",
        (X, T, -1, None, None, -100, "mean", 0.0, False, None, None, 0.0, 0.0),
    ),
    "infinite softcap": (
        "cross_entropy",
        (X, T, -1, None, None, -100, "mean", 0.0, False, None, None, 0.0, math.inf),
    ),
    "negative gamma": ("focal_loss", (X, T, -1, -0.5, None, None, -100, "mean", False, None, None)),
    "focal soft targets": (
        "focal_loss",
        (X, SOFT, -1, 2.0, None, None, -100, "mean", False, None, None),
    ),
    "focal target shape": (
        "focal_loss",
        (X, T[:3], -1, 2.0, None, None, -100, "mean", False, None, None),
    ),
}


@pytest.mark.usefixtures("gpu_checks")
@pytest.mark.parametrize("case", sorted(CLASS_CASES))
def test_gpu_class_checks_match_the_cpu_core(case: str) -> None:
    name, args = CLASS_CASES[case]
    if case == "grad_out overlaps the target":
        buffer = np.zeros(16)
        args = (X, buffer[:4].view(np.int64), *args[2:10], buffer[:12].reshape(4, 3))
    cpu = _outcome(lambda: getattr(_core, name)(*args))
    gpu = _outcome(lambda: getattr(_cupy, name)(*args))
    assert cpu is not None, f"the CPU core accepts {case}"
    assert gpu == cpu


BINARY_CASES: dict[str, tuple[str, tuple[Any, ...]]] = {
    "grad_output not scalar": (
        "binary_cross_entropy_with_logits",
        (X, X, None, 1, None, 1, "sum", True, np.ones((4, 3))),
    ),
    "grad_output shape": ("binary_cross_entropy", (X, X, None, 1, "none", True, np.ones((4, 2)))),
    "focal negative gamma": (
        "binary_focal_loss_with_logits",
        (X, X, -1.0, 0.25, None, 1, "mean", False, None),
    ),
    "focal NaN gamma": (
        "binary_focal_loss_with_logits",
        (X, X, math.nan, 0.25, None, 1, "mean", False, None),
    ),
    "focal NaN alpha": (
        "binary_focal_loss_with_logits",
        (X, X, 2.0, math.nan, None, 1, "mean", False, None),
    ),
    "focal alpha above 1": (
        "binary_focal_loss_with_logits",
        (X, X, 2.0, 1.5, None, 1, "mean", False, None),
    ),
    "kl_div reduction": ("kl_div", (X, X, "avg", False, False, None)),
    "kl_div shapes": ("kl_div", (X, X[:2], "mean", False, False, None)),
    "kl_div grad_output": ("kl_div", (X, X, "batchmean", False, True, np.ones((4, 3)))),
}


@pytest.mark.usefixtures("gpu_checks")
@pytest.mark.parametrize("case", sorted(BINARY_CASES))
def test_gpu_binary_checks_match_the_cpu_core(case: str) -> None:
    name, args = BINARY_CASES[case]
    cpu = _outcome(lambda: getattr(_core, name)(*args))
    gpu = _outcome(lambda: getattr(_cupy, name)(*args))
    assert cpu is not None, f"the CPU core accepts {case}"
    assert gpu == cpu
