"""Check what the release artifacts promise (run by .ci/build-dist).

``python .ci/check_dist.py WHEEL SDIST``: the wheel is abi3 and tagged manylinux_2_17, its
native library needs no glibc symbol version newer than 2.17 (the manylinux2014 promise:
a library linked against a newer glibc fails to load on RHEL 7/8 or Ubuntu 20.04), and both
archives carry the two license texts (PEP 639: ``.dist-info/licenses/`` in the wheel, the
top directory in the sdist).
"""

from __future__ import annotations

import re
import sys
import tarfile
import zipfile

LICENSES = ("LICENSE-MIT", "LICENSE-APACHE")


def main(wheel: str, sdist: str) -> None:
    if "-abi3-" not in wheel or "manylinux_2_17_x86_64" not in wheel:
        sys.exit(f"check_dist: {wheel} is not an abi3 manylinux_2_17 wheel")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        (lib,) = [n for n in names if n.endswith(".so")]
        data = zf.read(lib)
    # The version needs of the dynamic symbols (.gnu.version_r) are plain strings in the file.
    found = re.findall(rb"GLIBC_(\d+(?:\.\d+)+)", data)
    newest = max(tuple(int(p) for p in v.split(b".")) for v in found)
    spelled = ".".join(map(str, newest))
    if newest > (2, 17):
        sys.exit(f"check_dist: {lib} needs GLIBC_{spelled}, newer than manylinux2014's 2.17")
    print(f"check_dist: {lib} needs at most GLIBC_{spelled}")
    with tarfile.open(sdist) as tf:
        sdist_names = set(tf.getnames())
    top = min(sdist_names).split("/")[0]
    for name in LICENSES:
        in_wheel = [n for n in names if n.endswith(f".dist-info/licenses/{name}")]
        if not in_wheel:
            sys.exit(f"check_dist: {name} is missing from the wheel")
        if f"{top}/{name}" not in sdist_names:
            sys.exit(f"check_dist: {name} is missing from the sdist")
        print(f"check_dist: {name}: {in_wheel[0]} in the wheel, {top}/{name} in the sdist")


if __name__ == "__main__":
    main(*sys.argv[1:])
