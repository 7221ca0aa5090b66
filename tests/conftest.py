"""Shared fixtures and helpers for the xent_rs test suite.

- ``load_golden()``: the reference cases of ``tests/golden`` (cases.json + arrays.npz).
- ``assert_golden_close()``: the golden tolerance rule (README of ``tests/golden``).
- ``assert_same_files()``: a reference directory kept in ``tests/`` is an exact copy of the
  shared one (``../shared/...``) it was taken from.
- ``core_class()`` / ``core_binary()``: a call of the native core with an options object built
  directly, without ``_spec``'s checks, so that the core's own checks answer.
- ``restore_threads``: puts ``xent_rs.set_num_threads`` back after a test that changes it.
- hypothesis profile ``xent``: no deadline, modest example counts (the suite stays fast).
- ``--require-installed``: fail unless ``xent_rs`` is an installed one (CI tests its wheel
  so); the header names the ``xent_rs`` that the tests import, in every run.
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import HealthCheck, settings

TESTS_DIR = Path(__file__).resolve().parent
GOLDEN_DIR = TESTS_DIR / "golden"
GOLDEN_TRAINING_DIR = TESTS_DIR / "golden-training"
GOLDEN_BEYOND_DIR = TESTS_DIR / "golden-beyond"
REPO_ROOT = TESTS_DIR.parent
SHARED_DIR = REPO_ROOT.parent / "shared"
SHARED_GOLDEN_DIR = SHARED_DIR / "golden"
SHARED_GOLDEN_TRAINING_DIR = SHARED_DIR / "golden-training"
SHARED_GOLDEN_BEYOND_DIR = SHARED_DIR / "golden-beyond"

settings.register_profile(
    "xent",
    deadline=None,
    max_examples=50,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile("xent-thorough", parent=settings.get_profile("xent"), max_examples=500)
settings.load_profile("xent")


def cupy_with_a_gpu() -> Any:
    """CuPy, for a test module that needs a GPU: the module is skipped when CuPy is not
    importable or no GPU is visible to it."""
    cp = pytest.importorskip("cupy")
    try:
        count = int(cp.cuda.runtime.getDeviceCount())
    except Exception:  # no driver, no device: CuPy raises its own runtime errors
        count = 0
    if count == 0:
        pytest.skip("no GPU is visible to CuPy", allow_module_level=True)
    return cp


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--require-installed",
        action="store_true",
        help="fail unless xent_rs is imported from an installed wheel, not from this source "
        "tree's python/ directory (an editable install)",
    )


def pytest_configure(config: pytest.Config) -> None:
    if not config.getoption("--require-installed"):
        return
    import xent_rs

    where = Path(xent_rs.__file__).resolve()
    if where.is_relative_to(REPO_ROOT / "python"):
        raise pytest.UsageError(
            f"--require-installed: xent_rs is imported from the source tree ({where}), "
            "not from an installed wheel"
        )


def pytest_report_header(config: pytest.Config) -> str:
    try:
        import xent_rs
    except ImportError as exc:
        return f"xent_rs: not importable ({exc})"
    return f"xent_rs {xent_rs.__version__}: {Path(xent_rs.__file__).parent}"


LOSS_OPS = (
    "cross_entropy",
    "nll_loss",
    "binary_cross_entropy",
    "binary_cross_entropy_with_logits",
    "focal_loss",
    "binary_focal_loss_with_logits",
    "kl_div",
    "linear_cross_entropy",
)
SOFTMAX_OPS = ("log_softmax", "softmax")


# --------------------------------------------------------------------------------------------
# golden cases
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GoldenCase:
    """One entry of ``cases.json`` with its arrays resolved."""

    id: str
    op: str
    dtype: str
    rtol: float
    atol: float
    kwargs: dict[str, Any]
    inputs: dict[str, np.ndarray[Any, Any]]
    expected: dict[str, np.ndarray[Any, Any]] = field(default_factory=dict)
    expect_error: str | None = None
    note: str = ""
    #: Inputs to convert before the call (``golden-beyond``: ``{"input": "bfloat16"}``).
    cast: dict[str, str] = field(default_factory=dict)

    @property
    def is_loss(self) -> bool:
        return self.op in LOSS_OPS

    @property
    def reduced(self) -> bool:
        """True when the loss is reduced to a scalar (reduction 'mean' or 'sum')."""
        return self.is_loss and self.kwargs.get("reduction", "mean") != "none"

    def copy_inputs(self) -> dict[str, np.ndarray[Any, Any]]:
        """Fresh copies of the input arrays (a test may hand them to in-place code), in the
        dtype the case's ``cast`` names (bfloat16 from ``ml_dtypes``: the test skips without
        it)."""
        inputs = {k: v.copy() for k, v in self.inputs.items()}
        for name, dtype in self.cast.items():
            inputs[name] = inputs[name].astype(result_dtype(dtype))
        return inputs


def result_dtype(name: str) -> np.dtype[Any]:
    """A case's dtype; ``bfloat16`` is ``ml_dtypes``' (the calling test skips without it)."""
    if name == "bfloat16":
        return np.dtype(pytest.importorskip("ml_dtypes").bfloat16)
    return np.dtype(name)


@cache
def load_golden(directory: Path = GOLDEN_DIR) -> tuple[GoldenCase, ...]:
    """Every golden case of ``directory``, arrays loaded eagerly (``allow_pickle=False``)."""
    with open(directory / "cases.json", encoding="utf-8") as fh:
        doc = json.load(fh)
    raw_cases: list[dict[str, Any]] = doc["cases"] if isinstance(doc, dict) else doc
    with np.load(directory / "arrays.npz", allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    cases = []
    for c in raw_cases:
        cases.append(
            GoldenCase(
                id=c["id"],
                op=c["op"],
                dtype=c["dtype"],
                rtol=float(c["rtol"]),
                atol=float(c["atol"]),
                kwargs=dict(c.get("kwargs", {})),
                inputs={name: arrays[key] for name, key in c.get("inputs", {}).items()},
                expected={name: arrays[key] for name, key in c.get("expected", {}).items()},
                expect_error=c.get("expect_error"),
                note=c.get("note", ""),
                cast=dict(c.get("cast", {})),
            )
        )
    return tuple(cases)


def golden_params(predicate: Any = None, directory: Path = GOLDEN_DIR) -> list[Any]:
    """``pytest.param`` objects (id = case id) for the golden cases of ``directory`` matching
    ``predicate``."""
    return [
        pytest.param(c, id=c.id)
        for c in load_golden(directory)
        if predicate is None or predicate(c)
    ]


# --------------------------------------------------------------------------------------------
# comparisons
# --------------------------------------------------------------------------------------------


def assert_golden_close(
    got: Any,
    want: Any,
    rtol: float,
    atol: float,
    *,
    grad: bool = False,
    what: str = "value",
) -> None:
    """The golden tolerance rule.

    An element passes when ``|got - want| <= atol + rtol*|want|``; for gradients ``atol`` is
    raised by ``rtol * max|want|`` (over the finite expected values). ``nan`` and ``±inf``
    must match exactly. Shapes must be equal.
    """
    g = np.asarray(got, dtype=np.float64)
    w = np.asarray(want, dtype=np.float64)
    assert g.shape == w.shape, f"{what}: shape {g.shape} != expected {w.shape}"
    nan_g, nan_w = np.isnan(g), np.isnan(w)
    assert np.array_equal(nan_g, nan_w), (
        f"{what}: nan mismatch at {np.argwhere(nan_g != nan_w)[:5].tolist()}"
    )
    inf_w = np.isinf(w)
    inf_g = np.isinf(g)
    inf_bad = (inf_g != inf_w) | (inf_w & (g != w))
    assert not np.any(inf_bad), f"{what}: inf mismatch at {np.argwhere(inf_bad)[:5].tolist()}"
    fin = np.isfinite(w)
    if not np.any(fin):
        return
    eff_atol = atol
    if grad:
        eff_atol += rtol * float(np.max(np.abs(w[fin])))
    with np.errstate(invalid="ignore", over="ignore"):
        err = np.where(fin, np.abs(g - w), 0.0)
    tol = eff_atol + rtol * np.abs(np.where(fin, w, 0.0))
    bad = fin & ~(err <= tol)
    if np.any(bad):
        idx = np.argwhere(bad)[:5]
        detail = ", ".join(
            f"{tuple(int(i) for i in ix)}: got {g[tuple(ix)]!r} want {w[tuple(ix)]!r}" for ix in idx
        )
        raise AssertionError(
            f"{what}: {int(np.sum(bad))} of {w.size} elements outside "
            f"atol={eff_atol:g} rtol={rtol:g}; first: {detail}"
        )


def load_script(path: Path) -> ModuleType:
    """A repository script outside the package (``benches/``, ``.ci/``), imported by its path.

    It is registered in ``sys.modules`` under ``xent_rs_<stem>`` before it runs, as its
    dataclasses need.
    """
    spec = importlib.util.spec_from_file_location(f"xent_rs_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    sys.modules[spec.name] = module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def central_differences(f: Callable[[Any], Any], x: np.ndarray, h: float = 1e-6) -> np.ndarray:
    """The gradient of the scalar function ``f`` at ``x`` by central differences, element by
    element."""
    g = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        up, down = x.copy(), x.copy()
        up[i] += h
        down[i] -= h
        g[i] = (float(f(up)) - float(f(down))) / (2 * h)
    return g


def raises_exactly(exc: type[BaseException], fn: Callable[..., Any], *args: Any, **kw: Any) -> str:
    """Calls fn, asserts that exactly ``exc`` (no subclass) is raised, returns the message."""
    with pytest.raises(exc) as info:
        fn(*args, **kw)
    assert type(info.value) is exc, f"raised {type(info.value).__name__}: {info.value}"
    msg = str(info.value)
    assert msg.strip(), "the error message is empty"
    return msg


def raises_writing_into(exc: type[BaseException], op: str, x: Any, target: Any, buf: Any) -> str:
    """:func:`raises_exactly` for ``op`` writing into ``buf``.

    ``buf`` is cross_entropy's ``grad_out`` (of ``x`` and ``target``) or, for log_softmax and
    softmax, ``out`` (``target`` unused). NumPy and CuPy arguments alike.
    """
    import xent_rs

    if op == "cross_entropy":
        return raises_exactly(exc, xent_rs.cross_entropy, x, target, return_grad=True, grad_out=buf)
    return raises_exactly(exc, getattr(xent_rs, op), x, out=buf)


def has_number(msg: str, value: str) -> bool:
    """``value`` appears in ``msg`` as a whole number (not as part of a longer one)."""
    return re.search(rf"(?<![\d.]){re.escape(value)}(?![\d])", msg) is not None


def core_class(loss: str, *arrays: Any, partial: bool | None = None, **options: Any) -> Any:
    """``_core.class_loss`` for ``loss`` with ``options`` (``_spec.ClassLoss``'s fields) and
    ``arrays``: input, target, then weight, sample_weight, grad_output and grad_out (``None``
    where left out)."""
    from xent_rs import _core, _spec

    given = arrays + (None,) * (6 - len(arrays))
    return _core.class_loss(_spec.ClassLoss(loss, **options), *given, partial)


def core_binary(loss: str, *arrays: Any, partial: bool | None = None, **options: Any) -> Any:
    """``_core.binary_loss`` for ``loss`` with ``options`` (``_spec.BinaryLoss``'s fields) and
    ``arrays``: input, target, then weight, pos_weight (each ``None`` or 1-D values repeated
    along the last axis) and grad_output."""
    from xent_rs import _core, _spec

    x, t, weight, pos_weight, grad_output = arrays + (None,) * (5 - len(arrays))
    spec = _spec.BinaryLoss(loss, **options)
    return _core.binary_loss(spec, x, t, (weight, 1), (pos_weight, 1), grad_output, partial)


def assert_same_files(copy: Path, original: Path) -> None:
    """``copy`` holds exactly the files of ``original``, byte for byte.

    The reference data is produced once, outside the repository (PyTorch is no dependency);
    the copy in ``tests/`` must not drift from it, or the tests would check a stale record.
    """

    def files(d: Path) -> dict[str, bytes]:
        return {p.name: p.read_bytes() for p in sorted(d.iterdir()) if p.is_file()}

    ours, theirs = files(copy), files(original)
    assert sorted(ours) == sorted(theirs), f"{copy} and {original} hold different files"
    for name, data in theirs.items():
        assert ours[name] == data, f"{copy / name} differs from {original / name}"


def assert_same_bits(a: Any, b: Any, what: str = "value") -> None:
    """Bit-for-bit equality: same type family, dtype, shape and bytes."""
    aa, bb = np.asarray(a), np.asarray(b)
    assert aa.dtype == bb.dtype, f"{what}: dtype {aa.dtype} != {bb.dtype}"
    assert aa.shape == bb.shape, f"{what}: shape {aa.shape} != {bb.shape}"
    assert aa.tobytes() == bb.tobytes(), f"{what}: values differ (bitwise)"


# --------------------------------------------------------------------------------------------
# layouts: the same values held in different memory layouts
# --------------------------------------------------------------------------------------------


def as_fortran(a: npt.ArrayLike) -> np.ndarray[Any, Any]:
    """A Fortran-ordered copy (0-d arrays stay 0-d)."""
    arr = np.asarray(a)
    if arr.ndim == 0:
        return arr.copy()
    return np.asfortranarray(arr)


def as_strided(a: npt.ArrayLike) -> np.ndarray[Any, Any]:
    """A view with stride 2 along every axis holding the same values."""
    arr = np.asarray(a)
    if arr.ndim == 0:
        return arr.copy()
    big = np.zeros(tuple(2 * s for s in arr.shape), dtype=arr.dtype)
    sl = tuple(slice(None, None, 2) for _ in arr.shape)
    big[sl] = arr
    view = big[sl]
    assert np.array_equal(view, arr, equal_nan=arr.dtype.kind in "fc")
    return view


def as_negative_stride(a: npt.ArrayLike) -> np.ndarray[Any, Any]:
    """A view with negative strides along every axis holding the same values."""
    arr = np.asarray(a)
    if arr.ndim == 0:
        return arr.copy()
    rev = tuple(slice(None, None, -1) for _ in arr.shape)
    view = np.ascontiguousarray(arr[rev])[rev]
    return view


LAYOUTS = {
    "fortran": as_fortran,
    "strided": as_strided,
    "negstride": as_negative_stride,
}


# --------------------------------------------------------------------------------------------
# fixtures
# --------------------------------------------------------------------------------------------


@pytest.fixture
def restore_threads() -> Iterator[Any]:
    """Yields the xent_rs module; restores its thread count afterwards."""
    xent_rs = pytest.importorskip("xent_rs")
    before = xent_rs.get_num_threads()
    try:
        yield xent_rs
    finally:
        xent_rs.set_num_threads(before)


@pytest.fixture
def rng() -> np.random.Generator:
    """A seeded generator, so that failures reproduce."""
    return np.random.default_rng(20240601)
