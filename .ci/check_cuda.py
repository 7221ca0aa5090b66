#!/usr/bin/env python3
"""Compile every CUDA source of xent_rs's GPU backend with NVRTC, with no GPU and no CuPy.

NVRTC, the runtime compiler CuPy uses, is a plain shared library that needs no driver; it is
called here through ctypes. What is compiled is what ``xent_rs._cupy`` compiles, as listed by
``python/xent_rs/_cuda.py`` (loaded by path: neither the native core nor NumPy is needed):

- ``cuda/rows.cu`` as CuPy's ``RawModule`` compiles it: every name expression added before the
  compile and resolved to its lowered (mangled) name after it;
- every element-wise and reduction kernel (``_cuda.all_kernels()``): its one-line body wrapped
  in the kernel CuPy generates for it (``cuda-probes/*.cu.in``) after the preamble
  ``cuda/binary.cuh``, once for each C type its type placeholders take.

The options are CuPy's (``--std=c++17 -ftz=true``), for two targets by default: PTX for the
oldest architecture the library knows (CuPy's ``-arch=compute_XX`` path) and a cubin for the
newest (its ``-arch=sm_XX`` path, which runs the assembler too). The check fails on any error or
warning, and on a device function or kernel that nothing instantiates or calls: NVRTC checks a
template only where it is instantiated, so an unused one could hide a broken name.

Usage: ``python .ci/check_cuda.py [--nvrtc LIBRARY] [--arch compute_75 --arch sm_90 ...]``.
Without ``--nvrtc`` the library is looked for in ``$XENT_RS_NVRTC``, in the Python package of
the ``nvidia-cuda-nvrtc-cu12`` wheel, then on the system's library path; ``.ci/check-cuda``
installs the wheel and runs this. ``tests/test_cuda_sources.py`` runs the same check.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import importlib.util
import os
import re
import string
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "python" / "xent_rs"
PROBES = Path(__file__).resolve().parent / "cuda-probes"
#: The options CuPy adds to every NVRTC compile (besides its include paths and the target).
OPTIONS = ("--std=c++17", "-ftz=true")
#: NumPy dtype names of kernel parameters -> C types (CuPy's ``_scalar`` names).
DTYPES = {
    "bool": "bool",
    "int8": "signed char",
    "uint8": "unsigned char",
    "int16": "short",
    "uint16": "unsigned short",
    "int32": "int",
    "uint32": "unsigned int",
    "int64": "long long",
    "uint64": "unsigned long long",
    "float32": "float",
    "float64": "double",
}
#: A device function or kernel definition: the name before the parameter list.
DEFINITION = re.compile(r"(?:__device__|__global__)[^;{}()]*?\b(\w+)\s*\(")
#: NVRTC's notice that a target is deprecated (12.9 gives it for compute_50 to compute_72): about
#: the target, not the code; reported once rather than failing the check.
TARGET_NOTICE = re.compile(r"^nvrtc: warning: Architectures prior to .*$\n?", re.MULTILINE)
COMMENT = re.compile(r"//[^\n]*|/\*.*?\*/", re.DOTALL)


class CompileError(Exception):
    """An NVRTC call failed; the message holds the program's log, also in ``log``."""

    def __init__(self, message: str, log: str = "") -> None:
        super().__init__(message)
        self.log = log or message


class Nvrtc:
    """The few NVRTC calls the check needs, through ctypes."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.lib = ctypes.CDLL(path)
        self.notices: set[str] = set()
        self.lib.nvrtcGetErrorString.restype = ctypes.c_char_p
        self.lib.nvrtcGetErrorString.argtypes = [ctypes.c_int]
        self.lib.nvrtcAddNameExpression.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        self.lib.nvrtcGetLoweredName.argtypes = [
            ctypes.c_void_p,
            ctypes.c_char_p,
            ctypes.POINTER(ctypes.c_char_p),
        ]

    def _call(self, what: str, result: int) -> None:
        if result != 0:
            raise CompileError(f"{what}: {self.lib.nvrtcGetErrorString(result).decode()}")

    def version(self) -> tuple[int, int]:
        major, minor = ctypes.c_int(), ctypes.c_int()
        self._call("nvrtcVersion", self.lib.nvrtcVersion(ctypes.byref(major), ctypes.byref(minor)))
        return major.value, minor.value

    def archs(self) -> list[int]:
        """The compute capabilities this NVRTC compiles for (e.g. 50 ... 90)."""
        count = ctypes.c_int()
        self._call(
            "nvrtcGetNumSupportedArchs", self.lib.nvrtcGetNumSupportedArchs(ctypes.byref(count))
        )
        archs = (ctypes.c_int * count.value)()
        self._call("nvrtcGetSupportedArchs", self.lib.nvrtcGetSupportedArchs(archs))
        return sorted(archs)

    def compile(
        self,
        source: str,
        name: str,
        options: Sequence[str],
        name_expressions: Sequence[str] = (),
    ) -> tuple[dict[str, str], str]:
        """``(lowered name of each name expression, log)``; ``CompileError`` on failure."""
        lib = self.lib
        prog = ctypes.c_void_p()
        self._call(
            "nvrtcCreateProgram",
            lib.nvrtcCreateProgram(
                ctypes.byref(prog), source.encode(), name.encode(), 0, None, None
            ),
        )
        try:
            for expr in name_expressions:
                self._call(
                    f"nvrtcAddNameExpression({expr})",
                    lib.nvrtcAddNameExpression(prog, expr.encode()),
                )
            opts = (ctypes.c_char_p * len(options))(*(o.encode() for o in options))
            result = lib.nvrtcCompileProgram(prog, len(options), opts)
            size = ctypes.c_size_t()
            self._call(
                "nvrtcGetProgramLogSize", lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
            )
            buf = ctypes.create_string_buffer(size.value)
            self._call("nvrtcGetProgramLog", lib.nvrtcGetProgramLog(prog, buf))
            log = buf.value.decode(errors="replace")
            self.notices.update(m.strip() for m in TARGET_NOTICE.findall(log))
            log = TARGET_NOTICE.sub("", log).strip()
            if result != 0:
                error = lib.nvrtcGetErrorString(result).decode()
                raise CompileError(f"{name} ({' '.join(options)}): {error}\n{log}", log)
            lowered = {}
            for expr in name_expressions:
                out = ctypes.c_char_p()
                self._call(
                    f"nvrtcGetLoweredName({expr})",
                    lib.nvrtcGetLoweredName(prog, expr.encode(), ctypes.byref(out)),
                )
                lowered[expr] = (out.value or b"").decode()
            return lowered, log
        finally:
            lib.nvrtcDestroyProgram(ctypes.byref(prog))


def find_nvrtc() -> str | None:
    """The NVRTC library to load: ``$XENT_RS_NVRTC``, the pip wheel's, or the system's."""
    explicit = os.environ.get("XENT_RS_NVRTC")
    if explicit:
        return explicit
    try:
        spec = importlib.util.find_spec("nvidia.cuda_nvrtc")
    except ModuleNotFoundError:
        spec = None
    for base in (spec.submodule_search_locations or []) if spec else []:
        found = sorted(Path(base).glob("lib/libnvrtc.so*")) + sorted(
            Path(base).glob("bin/nvrtc64_*.dll")
        )
        if found:
            return str(found[0])
    return ctypes.util.find_library("nvrtc")


def load_kernels() -> ModuleType:
    """``python/xent_rs/_cuda.py``, loaded by path (it imports only the standard library)."""
    spec = importlib.util.spec_from_file_location("xent_rs_cuda_kernels", PACKAGE / "_cuda.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@dataclass(frozen=True)
class Param:
    """One parameter of a CuPy kernel: ``[raw] TYPE NAME``."""

    raw: bool
    ctype: str
    name: str
    placeholder: bool


def parse_params(text: str) -> list[Param]:
    params = []
    for part in text.split(","):
        words = part.split()
        raw = words[0] == "raw"
        typ, name = words[1:] if raw else words
        params.append(Param(raw, DTYPES.get(typ, typ), name, typ not in DTYPES))
    return params


def probe(kernel: Any, ctype: str, preamble: str) -> str:
    """The kernel CuPy would generate for ``kernel`` (an ``Elementwise`` or ``Reduction`` of
    ``_cuda``), its type placeholders all ``ctype``."""
    reduction = hasattr(kernel, "map_expr")
    ins, outs = parse_params(kernel.in_params), parse_params(kernel.out_params)
    index = "_j" if reduction else "i"
    typedefs = sorted({p.ctype for p in ins + outs if p.placeholder})
    params, bind, bind_out = [], [], []
    for p, const in [(p, True) for p in ins] + [(p, False) for p in outs]:
        qual = "const " if const else ""
        if p.raw:
            params.append(f"{qual}{p.ctype}* {p.name}")
            continue
        params.append(f"{qual}{p.ctype}* _raw_{p.name}")
        if reduction and not const:  # a reduction's output: one value per block
            bind_out.append(f"    {p.ctype} &{p.name} = _raw_{p.name}[blockIdx.x];")
        else:
            bind.append(f"        {qual}{p.ctype} &{p.name} = _raw_{p.name}[{index}];")
    fields = {
        "typedefs": "\n".join(f"typedef {ctype} {t};" for t in typedefs),
        "preamble": preamble,
        "name": kernel.name,
        "params": ", ".join(params),
        "bind": "\n".join(bind),
    }
    if reduction:
        fields.update(
            bind_out="\n".join(bind_out),
            map_expr=kernel.map_expr,
            reduce_expr=kernel.reduce_expr,
            post_map_expr=kernel.post_map_expr,
            reduce_type=kernel.reduce_type,
            identity=kernel.identity,
        )
    else:
        fields["operation"] = kernel.operation
    template = (PROBES / ("reduction.cu.in" if reduction else "elementwise.cu.in")).read_text()
    return string.Template(template).substitute(fields)


def uncalled(source: str, callers: str) -> list[str]:
    """The device functions and kernels of ``source`` that neither ``source`` (outside their
    definitions) nor ``callers`` (kernel bodies, name expressions) name."""
    source = COMMENT.sub("", source)
    defined = DEFINITION.findall(source)
    missing = []
    for name in sorted(set(defined)):
        inside = len(re.findall(rf"\b{name}\s*\(", source)) - defined.count(name)
        if inside == 0 and not re.search(rf"\b{name}\b", callers):
            missing.append(name)
    return missing


def default_targets(nvrtc: Nvrtc) -> list[str]:
    archs = nvrtc.archs()
    return [f"-arch=compute_{archs[0]}", f"-arch=sm_{archs[-1]}"]


@dataclass
class Report:
    compiles: int = 0
    seconds: float = 0.0
    failures: list[str] = field(default_factory=list)
    #: An error or warning log (the program's name blanked) -> its first message, and the
    #: programs and targets that gave it: one broken name in the preamble is reported once.
    logs: dict[str, tuple[str, list[str]]] = field(default_factory=dict)

    def problem(self, label: str, target: str, log: str, message: str) -> None:
        key = log.replace(label, "<program>")
        if key in self.logs:
            self.logs[key][1].append(f"{label} {target}")
        else:
            self.logs[key] = (message, [])

    def close(self) -> None:
        for message, others in self.logs.values():
            more = f"\n(the same in {len(others)} more: {', '.join(others)})" if others else ""
            self.failures.append(message + more)
        self.logs.clear()


def _listing(code: str, label: str) -> str:
    """A probe after its preamble, numbered as NVRTC numbers it (``#line 1 "label"``)."""
    tail = code.split(f'#line 1 "{label}"\n', 1)[-1]
    lines = "\n".join(f"{n:4} | {line}" for n, line in enumerate(tail.splitlines(), 1))
    return f"\n{label} after the preamble, as compiled:\n{lines}"


def check(
    nvrtc: Nvrtc,
    targets: Sequence[str],
    sources: dict[str, str] | None = None,
    say: Callable[[str], None] = print,
) -> Report:
    """Compiles everything for each target; ``sources`` replaces files' text (by file name)."""
    kernels = load_kernels()
    texts = {
        name: (sources or {}).get(name)
        or (PACKAGE / kernels.SOURCE_DIR / name).read_text(encoding="utf-8")
        for name in (kernels.ROWS, kernels.BINARY)
    }
    rows_path = f"python/xent_rs/{kernels.SOURCE_DIR}/{kernels.ROWS}"
    binary_path = f"python/xent_rs/{kernels.SOURCE_DIR}/{kernels.BINARY}"
    report = Report()
    start = time.perf_counter()

    names = kernels.row_name_expressions()
    specs = kernels.all_kernels()
    bodies = "\n".join(getattr(k, "operation", "") or getattr(k, "map_expr", "") for k in specs)
    for path, text, callers in (
        (rows_path, texts[kernels.ROWS], " ".join(names)),
        (binary_path, texts[kernels.BINARY], bodies),
    ):
        for name in uncalled(text, callers):
            report.failures.append(
                f"{path}: {name} is never instantiated or called by a kernel xent_rs._cupy "
                "builds (python/xent_rs/_cuda.py), so NVRTC never checks it; use it or remove it"
            )

    def compile_one(
        label: str, code: str, target: str, exprs: Sequence[str] = (), listing: str = ""
    ) -> bool:
        try:
            _, log = nvrtc.compile(code, label, [*OPTIONS, target], exprs)
        except CompileError as e:
            report.problem(label, target, e.log, f"{e}{listing}")
            return False
        report.compiles += 1
        if log:  # warnings fail the check too
            report.problem(label, target, log, f"{label} ({target}): warnings\n{log}{listing}")
        return not log

    for target in targets:
        ok = compile_one(rows_path, texts[kernels.ROWS], target, names)
        say(f"  {rows_path} {target}: {len(names)} name expressions" + ("" if ok else ", FAILED"))
        # Errors in the preamble point at binary.cuh's own lines; the rest of a probe is
        # numbered from 1 under the kernel's name and listed with the error.
        failed = 0
        for kernel in specs:
            for ctype in kernel.bindings:
                args = ",".join(p.name for p in parse_params(kernel.in_params))
                label = f"{kernel.name}({args})[{ctype}]"
                preamble = f'#line 1 "{binary_path}"\n{texts[kernels.BINARY]}\n#line 1 "{label}"'
                code = probe(kernel, ctype, preamble)
                failed += not compile_one(label, code, target, listing=_listing(code, label))
        count = sum(len(k.bindings) for k in specs)
        say(
            f"  {binary_path} {target}: {len(specs)} element-wise/reduction kernels, "
            f"{count} type bindings" + (f", {failed} FAILED" if failed else "")
        )
    report.close()
    report.seconds = time.perf_counter() - start
    return report


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nvrtc", help="path of the NVRTC library (libnvrtc.so.12)")
    parser.add_argument(
        "--arch",
        action="append",
        help="a target such as compute_75 or sm_90, repeatable "
        "(default: PTX for the oldest architecture NVRTC supports, a cubin for the newest)",
    )
    args = parser.parse_args(argv)
    path = args.nvrtc or find_nvrtc()
    if not path:
        print(
            "check-cuda: NVRTC not found; pip install nvidia-cuda-nvrtc-cu12, or pass --nvrtc",
            file=sys.stderr,
        )
        return 2
    nvrtc = Nvrtc(path)
    major, minor = nvrtc.version()
    targets = [f"-arch={a}" for a in args.arch] if args.arch else default_targets(nvrtc)
    print(f"check-cuda: NVRTC {major}.{minor} ({path}); options {' '.join(OPTIONS)}")
    report = check(nvrtc, targets)
    for notice in sorted(nvrtc.notices):
        print(f"check-cuda: note: {notice}")
    for failure in report.failures:
        print(f"\ncheck-cuda: {failure}", file=sys.stderr)
    verdict = f"{len(report.failures)} FAILED" if report.failures else "ok"
    print(f"check-cuda: {report.compiles} NVRTC compiles in {report.seconds:.1f} s: {verdict}")
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main())
