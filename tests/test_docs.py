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


def test_readme_tour_runs() -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "the README has a Python example"
    namespace: dict[str, object] = {}
    for block in blocks:
        exec(compile(block, str(README), "exec"), namespace)
    assert "grad" in namespace
