"""The distribution: one version (Cargo.toml's) everywhere, and the licenses it ships."""

from __future__ import annotations

import re
import subprocess
import sys
import sysconfig
from importlib import metadata
from pathlib import Path

import pytest

import xent_rs
from xent_rs import _core

REPO = Path(__file__).resolve().parents[1]
LICENSES = ["LICENSE-APACHE", "LICENSE-MIT"]


def cargo_version() -> str:
    """``version`` of Cargo.toml's ``[package]`` (no tomllib on Python 3.10)."""
    text = (REPO / "Cargo.toml").read_text(encoding="utf-8")
    package = text.split("[package]", 1)[1].split("\n[", 1)[0]
    match = re.search(r'^version\s*=\s*"([^"]+)"', package, flags=re.M)
    assert match is not None, "Cargo.toml has no [package] version"
    return match.group(1)


def test_version_is_cargo_tomls() -> None:
    assert xent_rs.__version__ == _core.__version__ == cargo_version()


def test_metadata() -> None:
    try:
        dist = metadata.distribution("xent-rs")
    except metadata.PackageNotFoundError:
        pytest.skip("xent_rs is not installed as a distribution")
    # maturin writes Cargo.toml's version in PEP 440's spelling: equal for a release like 0.1.0
    assert dist.version == cargo_version()
    assert dist.metadata["License-Expression"] == "MIT OR Apache-2.0"
    assert sorted(dist.metadata.get_all("License-File") or []) == LICENSES
    for name in LICENSES:
        shipped = dist.read_text(f"licenses/{name}")
        assert shipped == (REPO / name).read_text(encoding="utf-8"), name


def test_command_line_version() -> None:
    want = f"xent-rs {cargo_version()}"
    proc = subprocess.run(
        [sys.executable, "-m", "xent_rs", "--version"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == want
    script = Path(sysconfig.get_path("scripts")) / "xent-rs"
    if not script.exists():
        pytest.skip(f"no xent-rs script in {script.parent}")
    proc = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == want
