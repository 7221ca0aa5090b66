"""The documentation's examples run: the docstrings' doctests and the README's tour."""

from __future__ import annotations

import doctest
import re
from pathlib import Path

import pytest

xent_rs = pytest.importorskip("xent_rs")

from xent_rs import _functional  # noqa: E402

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.mark.parametrize("module", [xent_rs, _functional], ids=lambda m: m.__name__)
def test_docstring_examples(module: object) -> None:
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)  # type: ignore[arg-type]
    assert result.attempted > 0
    assert result.failed == 0


BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_python_examples() -> None:
    assert len(BLOCKS) >= 2


@pytest.mark.parametrize("block", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_readme_examples_run(block: str) -> None:
    # Blocks that use an optional extra run where it is installed (CI installs them all).
    for extra in ("dask", "distributed"):
        if f"import {extra}" in block:
            pytest.importorskip(extra)
    namespace: dict[str, object] = {}
    exec(compile(block, str(README), "exec"), namespace)
    assert "np" in namespace or "xent_rs" in namespace
