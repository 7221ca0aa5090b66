"""The GPU backend's CUDA sources, checked without a GPU.

The sources are package files (``xent_rs/cuda/*.cu*``), never Python strings. Where the NVRTC
library can be loaded (the ``nvidia-cuda-nvrtc-cu12`` wheel, ``$XENT_RS_NVRTC``, or a CUDA
toolkit on the library path), every source and every element-wise kernel body is compiled the
way CuPy compiles it, by the same code as ``.ci/check-cuda`` (``.ci/check_cuda.py``), and a
broken name is shown to fail that check. Elsewhere those tests skip, saying how to run them.
"""

from __future__ import annotations

import ast
import inspect
import itertools
from importlib import resources
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from conftest import load_script

from xent_rs import _cuda, _cupy

ROOT = Path(__file__).resolve().parents[1]
#: Tokens of CUDA C++ that no Python file of the package may hold.
CUDA_MARKERS = ("__global__", "__device__", "__shared__", 'extern "C"', "#pragma", "__syncthreads")


@pytest.fixture(scope="module")
def check_cuda() -> ModuleType:
    return load_script(ROOT / ".ci" / "check_cuda.py")


@pytest.fixture(scope="module")
def nvrtc(check_cuda: ModuleType) -> Any:
    path = check_cuda.find_nvrtc()
    if not path:
        pytest.skip(
            "NVRTC not found: pip install nvidia-cuda-nvrtc-cu12 (or set XENT_RS_NVRTC to "
            "libnvrtc.so); .ci/check-cuda runs this check with a wheel of its own"
        )
    try:
        return check_cuda.Nvrtc(path)
    except OSError as e:
        pytest.skip(f"NVRTC at {path} cannot be loaded: {e}")


# --------------------------------------------------------------------------------------------
# the sources are files
# --------------------------------------------------------------------------------------------


def test_no_cuda_source_in_python_files() -> None:
    files = sorted((ROOT / "python").rglob("*.py"))
    assert any(f.name == "_cupy.py" for f in files)
    found = [
        f"{f.relative_to(ROOT)}: {marker}"
        for f in files
        for marker in CUDA_MARKERS
        if marker in f.read_text(encoding="utf-8")
    ]
    assert not found, f"CUDA source belongs in python/xent_rs/cuda/*.cu: {found}"


@pytest.mark.parametrize("name", [_cuda.ROWS, _cuda.BINARY])
def test_sources_are_package_data(name: str) -> None:
    resource = resources.files("xent_rs") / _cuda.SOURCE_DIR / name
    assert resource.is_file()
    text = _cuda.source(name)
    assert text == resource.read_text(encoding="utf-8")
    assert "__device__" in text


def test_cupy_builds_kernels_only_from_cuda_listing() -> None:
    """Every kernel ``_cupy`` builds comes from ``_cuda`` (which the NVRTC check compiles):
    CuPy's kernel classes appear in one helper each, and every call of those helpers passes
    a ``_cuda`` entry."""
    tree = ast.parse(inspect.getsource(_cupy))
    builders = {"RawModule": "_module", "ElementwiseKernel": "_elementwise"}
    builders["ReductionKernel"] = "_reduction"
    for func in ast.walk(tree):
        if not isinstance(func, ast.FunctionDef):
            continue
        for node in ast.walk(func):
            if not isinstance(node, ast.Call):
                continue
            callee = node.func
            if isinstance(callee, ast.Attribute) and callee.attr in builders:
                assert func.name == builders[callee.attr], f"{callee.attr} in {func.name}"
            kernel_call = isinstance(callee, ast.Name) and callee.id in (
                "_elementwise",
                "_reduction",
            )
            if kernel_call and func.name != "_first_index":  # its spec: checked at its calls
                first = node.args[0]
                if isinstance(first, ast.Call):
                    first = first.func
                assert isinstance(first, ast.Attribute), ast.unparse(node)
                assert ast.unparse(first.value) == "_cuda", ast.unparse(node)
            if isinstance(callee, ast.Name) and callee.id == "_first_index":
                assert ast.unparse(node.args[0]).startswith("_cuda."), ast.unparse(node)


def test_listing_covers_every_option() -> None:
    kernels = _cuda.all_kernels()
    assert len(set(kernels)) == len(kernels)
    for flags in itertools.product((False, True), repeat=2):
        assert _cuda.hard_denominator(*flags) in kernels
    parts = [
        _cuda.binary_parts(logits, pos_weight and logits, weighted)  # pos_weight with logits
        for logits, pos_weight, weighted in itertools.product((False, True), repeat=3)
    ]
    parts += [_cuda.focal_parts(weighted) for weighted in (False, True)]
    parts += [_cuda.kl_parts(log_target) for log_target in (False, True)]
    assert set(parts) == set(_cuda.all_pointwise())
    for part in parts:
        assert _cuda.pointwise_sum(part) in kernels
        for kind in ("none", "none_grad", "grad"):
            assert _cuda.pointwise(part, kind) in kernels  # type: ignore[arg-type]
    assert _cuda.BAD_TARGET in kernels and _cuda.BAD_PROBABILITY in kernels


def test_every_function_is_instantiated(check_cuda: ModuleType) -> None:
    """No kernel template without a name expression, no device function nothing calls:
    NVRTC checks a template only where it is instantiated (no NVRTC needed for this part)."""
    rows, binary = _cuda.source(_cuda.ROWS), _cuda.source(_cuda.BINARY)
    assert check_cuda.uncalled(rows, " ".join(_cuda.row_name_expressions())) == []
    bodies = " ".join(
        getattr(k, "operation", getattr(k, "map_expr", "")) for k in _cuda.all_kernels()
    )
    assert check_cuda.uncalled(binary, bodies) == []
    names = " ".join(_cuda.row_name_expressions())
    assert check_cuda.uncalled(rows + "\n__device__ void xent_unused(int a) {}", names) == [
        "xent_unused"
    ]


# --------------------------------------------------------------------------------------------
# NVRTC
# --------------------------------------------------------------------------------------------


def test_every_source_compiles_with_nvrtc(check_cuda: ModuleType, nvrtc: Any) -> None:
    targets = check_cuda.default_targets(nvrtc)
    report = check_cuda.check(nvrtc, targets, say=lambda _: None)
    assert not report.failures, "\n\n".join(report.failures)
    per_target = 1 + sum(len(k.bindings) for k in _cuda.all_kernels())
    assert report.compiles == per_target * len(targets)


def test_a_broken_name_fails_the_check(check_cuda: ModuleType, nvrtc: Any) -> None:
    rows = _cuda.source(_cuda.ROWS)
    binary = _cuda.source(_cuda.BINARY)
    call = "xent_ms_merge(&md, &s, m2, s2);"
    assert call in rows and "return xent_sigmoid(x) - t;" in binary
    broken = {
        _cuda.ROWS: rows.replace(call, call.replace("xent_ms_merge", "xent_ms_merg")),
        _cuda.BINARY: binary.replace("return xent_sigmoid(x) - t;", "return xent_sigmod(x) - t;"),
    }
    target = [f"-arch=compute_{nvrtc.archs()[-1]}"]
    report = check_cuda.check(nvrtc, target, sources=broken, say=lambda _: None)
    text = "\n".join(report.failures)
    assert 'identifier "xent_ms_merg" is undefined' in text
    assert 'identifier "xent_sigmod" is undefined' in text
    assert "cuda/rows.cu(" in text and "cuda/binary.cuh(" in text  # the files' own lines


def test_a_broken_body_fails_the_check(check_cuda: ModuleType, nvrtc: Any) -> None:
    kernel = _cuda.pointwise(_cuda.binary_parts(True, True, True), "none_grad")._replace(
        operation="loss = xent_bcelp_los(x, t, pw)"
    )
    code = check_cuda.probe(kernel, "float", _cuda.source(_cuda.BINARY))
    with pytest.raises(check_cuda.CompileError, match='"xent_bcelp_los" is undefined'):
        nvrtc.compile(code, "broken", [*check_cuda.OPTIONS, f"-arch=compute_{nvrtc.archs()[-1]}"])
