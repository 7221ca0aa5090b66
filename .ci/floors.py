"""Print pip constraints pinning each declared floor: ``name>=X`` becomes ``name==X``.

Reads pyproject.toml's runtime dependencies and the ``test`` extra, so that CI's floors row
installs exactly the oldest versions the package claims to work with (a floor that does not
work fails there, and is raised). Usage: ``python .ci/floors.py 3.10 > floors.txt``, then
``pip install -c floors.txt WHEEL[test]`` with that Python. Requirements whose environment
marker is false for that Python version are left out. Needs Python 3.11+ (tomllib) and
``packaging`` (pytest's dependency).
"""

from __future__ import annotations

import sys
from pathlib import Path

import tomllib
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version


def floors(pyproject: Path, python_version: str) -> dict[str, str]:
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    pins: dict[str, str] = {}
    for line in [*project["dependencies"], *project["optional-dependencies"]["test"]]:
        requirement = Requirement(line)
        if requirement.marker and not requirement.marker.evaluate(
            {"python_version": python_version, "python_full_version": f"{python_version}.0"}
        ):
            continue
        lows = [s.version for s in requirement.specifier if s.operator == ">="]
        if len(lows) != 1:
            sys.exit(f"floors.py: {line!r} declares no single '>=' floor")
        name = canonicalize_name(requirement.name)
        # named twice (numpy: the package's floor, and the test extra's on 3.11+): the higher
        pins[name] = max(pins.get(name, lows[0]), lows[0], key=Version)
    return pins


if __name__ == "__main__":
    version = sys.argv[1] if len(sys.argv) > 1 else "{}.{}".format(*sys.version_info)
    root = Path(__file__).resolve().parents[1]
    for name, low in floors(root / "pyproject.toml", version).items():
        print(f"{name}=={low}")
