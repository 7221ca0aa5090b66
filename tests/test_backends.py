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
from xent_rs._spec import BinaryLoss, ClassLoss, KlDiv


def _public(module: Any) -> dict[str, Callable[..., Any]]:
    return {
        name: obj
        for name, obj in vars(module).items()
        if callable(obj) and not name.startswith("_") and not inspect.isclass(obj)
    }


GPU = {name: f for name, f in _public(_cupy).items() if f.__module__ == _cupy.__name__}


def _called_by_backend() -> set[str]:
    """The core functions the backend calls (``_backend``, and ``_linear``'s chunk loop):
    ``core.NAME(...)`` and ``ns.core.NAME(...)``; it never looks a name up."""
    names: set[str] = set()
    for module in (_backend, _linear):
        source = inspect.getsource(module)
        assert "getattr(ns.core" not in source and "getattr(core" not in source
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Attribute) and ast.unparse(node.value) in ("core", "ns.core"):
                names.add(node.attr)
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


def ce(**options: Any) -> ClassLoss:
    """A ``cross_entropy`` options object, built without ``_spec``'s checks."""
    return ClassLoss("cross_entropy", **options)


def focal(gamma: float = 2.0) -> ClassLoss:
    return ClassLoss("focal_loss", gamma=gamma)


NLL = ClassLoss("nll_loss")
GRAD = ce(return_grad=True)
Z43 = np.zeros((4, 3))

#: (options, arrays after conversion: input, target, weight, sample_weight, grad_output,
#: grad_out) that the CPU core's ``class_loss`` refuses before touching memory.
CLASS_CASES: dict[str, tuple[ClassLoss, tuple[Any, ...]]] = {
    "0-d input": (ce(), (np.zeros(()), np.array(0), None, None, None, None)),
    "axis out of range": (ce(axis=2), (X, T, None, None, None, None)),
    "target shape": (ce(), (X, T[:3], None, None, None, None)),
    "soft target shape": (ce(), (X, SOFT[:, :2], None, None, None, None)),
    "floats shaped as indices": (ce(), (X, T.astype(float), None, None, None, None)),
    "ignore_index with soft targets": (ce(ignore_index=0), (X, SOFT, None, None, None, None)),
    "weight shape": (ce(), (X, T, np.ones(2), None, None, None)),
    "sample_weight shape": (ce(), (X, T, None, np.ones(3), None, None)),
    "grad_out without return_grad": (ce(), (X, T, None, None, None, Z43)),
    "grad_out shape": (GRAD, (X, T, None, None, None, np.zeros((4, 2)))),
    "grad_out dtype": (GRAD, (X, T, None, None, None, Z43.astype(np.float32))),
    "grad_out overlaps the target": (GRAD, (X, np.zeros(4, np.int64), None, None, None, None)),
    "grad_output not scalar": (GRAD, (X, T, None, None, np.ones(4), None)),
    "grad_output shape": (
        ce(reduction="none", return_grad=True),
        (X, T, None, None, np.ones(3), None),
    ),
    "nll soft targets": (NLL, (X, SOFT, None, None, None, None)),
    "nll target shape": (NLL, (X, T[:2], None, None, None, None)),
    "negative z_loss": (ce(z_loss=-1.0), (X, T, None, None, None, None)),
    "NaN z_loss": (ce(z_loss=math.nan), (X, T, None, None, None, None)),
    "zero softcap": (ce(softcap=0.0), (X, T, None, None, None, None)),
    "infinite softcap": (ce(softcap=math.inf), (X, T, None, None, None, None)),
    "negative gamma": (focal(gamma=-0.5), (X, T, None, None, None, None)),
    "focal soft targets": (focal(), (X, SOFT, None, None, None, None)),
    "focal target shape": (focal(), (X, T[:3], None, None, None, None)),
}


@pytest.mark.usefixtures("gpu_checks")
@pytest.mark.parametrize("case", sorted(CLASS_CASES))
def test_gpu_class_checks_match_the_cpu_core(case: str) -> None:
    spec, args = CLASS_CASES[case]
    if case == "grad_out overlaps the target":
        buffer = np.zeros(16)
        args = (X, buffer[:4].view(np.int64), None, None, None, buffer[:12].reshape(4, 3))
    cpu = _outcome(lambda: _core.class_loss(spec, *args))
    gpu = _outcome(lambda: _cupy.class_loss(spec, *args))
    assert cpu is not None, f"the CPU core accepts {case}"
    assert gpu == cpu


def bfocal(gamma: float, alpha: float) -> BinaryLoss:
    return BinaryLoss("binary_focal_loss_with_logits", gamma=gamma, alpha=alpha)


LOGITS = BinaryLoss("binary_cross_entropy_with_logits", "sum", return_grad=True)
PROBABILITIES = BinaryLoss("binary_cross_entropy", "none", return_grad=True)

#: No broadcast weight: (values, repeat count).
NONE = (None, 1)

#: (options, arrays after conversion: input, target, weight and pos_weight as (values, repeat
#: count), grad_output) that the CPU core's ``binary_loss`` refuses.
BINARY_CASES: dict[str, tuple[BinaryLoss, tuple[Any, ...]]] = {
    "grad_output not scalar": (LOGITS, (X, X, NONE, NONE, np.ones((4, 3)))),
    "grad_output shape": (PROBABILITIES, (X, X, NONE, NONE, np.ones((4, 2)))),
    "focal negative gamma": (bfocal(-1.0, 0.25), (X, X, NONE, NONE, None)),
    "focal NaN gamma": (bfocal(math.nan, 0.25), (X, X, NONE, NONE, None)),
    "focal NaN alpha": (bfocal(2.0, math.nan), (X, X, NONE, NONE, None)),
    "focal alpha above 1": (bfocal(2.0, 1.5), (X, X, NONE, NONE, None)),
}

#: (options, arrays: input, target, grad_output) that the CPU core's ``kl_div`` refuses.
KL_CASES: dict[str, tuple[KlDiv, tuple[Any, ...]]] = {
    "kl_div reduction": (KlDiv("avg"), (X, X, None)),
    "kl_div shapes": (KlDiv(), (X, X[:2], None)),
    "kl_div grad_output": (KlDiv("batchmean", return_grad=True), (X, X, np.ones((4, 3)))),
}


@pytest.mark.usefixtures("gpu_checks")
@pytest.mark.parametrize("case", sorted(BINARY_CASES) + sorted(KL_CASES))
def test_gpu_binary_checks_match_the_cpu_core(case: str) -> None:
    name, (spec, args) = (
        ("binary_loss", BINARY_CASES[case]) if case in BINARY_CASES else ("kl_div", KL_CASES[case])
    )
    cpu = _outcome(lambda: getattr(_core, name)(spec, *args))
    gpu = _outcome(lambda: getattr(_cupy, name)(spec, *args))
    assert cpu is not None, f"the CPU core accepts {case}"
    assert gpu == cpu
