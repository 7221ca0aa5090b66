"""The CuPy backend's entry points match the public functions that dispatch to them (no GPU).

``xent_rs.<fn>`` hands a call with CuPy arrays to ``xent_rs._cupy.<fn>``. Checked here without
CuPy: the two have the same parameters (names, kinds, defaults, annotations but for the array
types), the public function forwards every argument unchanged, and the backend runs the shared
mixing check (``_arrays.uses_cupy``) over all of its arrays before it touches CuPy. The
arguments are stand-ins whose type claims to come from CuPy, which is all the dispatch looks at.

The checks further in (dtypes, shapes, overlaps) run on device arrays and are covered by
``tests/test_cupy.py`` where a GPU is. The streaming accumulators and ``xent_rs.dask`` do not
dispatch to CuPy (they compute on NumPy blocks), so they have no CuPy twin to compare.
"""

from __future__ import annotations

import ast
import inspect
from typing import Any

import pytest

import xent_rs
from xent_rs import _arrays, _cupy, _functional

#: Parameters holding arrays: NumPy's on the CPU path, CuPy's here (annotations may differ).
ARRAY_PARAMS = frozenset(
    {"x", "input", "target", "output", "weight", "sample_weight", "pos_weight", "grad_output"}
    | {"out", "grad_out"}
)


def _dispatching() -> dict[str, str]:
    """Public function -> the ``_cupy`` function it calls (``_cupy().NAME(...)`` in its body)."""
    tree = ast.parse(inspect.getsource(_functional))
    found: dict[str, str] = {}
    for func in tree.body:
        if not isinstance(func, ast.FunctionDef) or func.name.startswith("_"):
            continue
        for node in ast.walk(func):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Call)
                and ast.unparse(node.value.func) == "_cupy"
            ):
                assert func.name not in found, f"{func.name} dispatches twice"
                found[func.name] = node.attr
    return found


DISPATCH = _dispatching()
BACKEND = sorted(
    name
    for name, obj in vars(_cupy).items()
    if inspect.isfunction(obj) and obj.__module__ == _cupy.__name__ and not name.startswith("_")
)


class FakeCupyArray:
    """Passes for a CuPy array in ``_arrays.is_cupy`` (its type's module is ``cupy...``)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"<fake cupy array {self.name}>"


FakeCupyArray.__module__ = "cupy._fake"


class Stop(Exception):
    """Raised by the stand-in for CuPy's namespace: the backend reached for CuPy."""


class NoCupy:
    def __getattr__(self, name: str) -> Any:
        raise Stop(name)


def _arguments(sig: inspect.Signature) -> tuple[list[Any], dict[str, Any], dict[str, Any]]:
    """``(args, kwargs, every value by name)`` for a call that sets every parameter to
    something other than its default: a fresh fake array for an array, a changed option."""
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    values: dict[str, Any] = {}
    for p in sig.parameters.values():
        default = p.default
        if p.name in ARRAY_PARAMS:
            value: Any = FakeCupyArray(p.name)
        elif isinstance(default, bool):
            value = not default
        elif isinstance(default, int):
            value = default + 3
        elif isinstance(default, float):
            value = default + 0.25
        elif isinstance(default, str):
            value = "sum" if default != "sum" else "none"
        else:
            raise AssertionError(f"no test value for {p}")
        values[p.name] = value
        if p.kind is p.KEYWORD_ONLY:
            kwargs[p.name] = value
        else:
            args.append(value)
    return args, kwargs, values


def test_every_backend_function_has_a_dispatching_twin() -> None:
    assert sorted(DISPATCH.values()) == BACKEND
    assert all(public == backend for public, backend in DISPATCH.items()), DISPATCH
    assert set(DISPATCH) <= set(xent_rs.__all__)
    for name in DISPATCH:
        assert getattr(xent_rs, name) is getattr(_functional, name)


@pytest.mark.parametrize("name", BACKEND)
def test_same_signature(name: str) -> None:
    public = inspect.signature(getattr(xent_rs, name))
    backend = inspect.signature(getattr(_cupy, name))
    assert list(public.parameters) == list(backend.parameters)
    for p, q in zip(public.parameters.values(), backend.parameters.values(), strict=True):
        assert (p.kind, p.default) == (q.kind, q.default), f"{name}({p.name}): {p} vs {q}"
        if p.name not in ARRAY_PARAMS:
            assert p.annotation == q.annotation, f"{name}({p.name}): {p} vs {q}"
    assert public.return_annotation == backend.return_annotation


@pytest.mark.parametrize("name", BACKEND)
def test_dispatch_forwards_every_argument(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    backend = getattr(_cupy, name)
    calls: list[dict[str, Any]] = []

    def record(*args: Any, **kwargs: Any) -> str:
        calls.append(dict(inspect.signature(backend).bind(*args, **kwargs).arguments))
        return "backend result"

    monkeypatch.setattr(_functional, "_cupy", lambda: type("Backend", (), {name: record}))
    args, kwargs, values = _arguments(inspect.signature(getattr(xent_rs, name)))
    assert getattr(xent_rs, name)(*args, **kwargs) == "backend result"
    assert len(calls) == 1
    got = calls[0]
    assert got.keys() == values.keys(), f"not forwarded: {set(values) - set(got)}"
    for key, value in values.items():
        assert got[key] is value or got[key] == value, f"{name}: {key}={got[key]!r}, not {value!r}"


@pytest.mark.parametrize("name", BACKEND)
def test_backend_runs_the_shared_mixing_check(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    args, kwargs, values = _arguments(inspect.signature(getattr(_cupy, name)))
    arrays = {id(v) for v in values.values() if isinstance(v, FakeCupyArray)}
    checked: list[set[int]] = []

    def uses_cupy(*given: Any) -> bool:
        checked.append({id(a) for a in given if a is not None})
        return True

    monkeypatch.setattr(_arrays, "uses_cupy", uses_cupy)
    monkeypatch.setattr(_cupy, "_cp", NoCupy)
    with pytest.raises(Stop):
        getattr(_cupy, name)(*args, **kwargs)
    if len(arrays) == 1:  # one array: nothing to mix (logsumexp)
        assert checked in ([], [arrays])
    else:
        assert checked == [arrays], f"{name} checks {len(checked[0]) if checked else 0} arrays"
