"""The benchmark's CI guard (``benches/compare.py --check``), on made-up cells."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest
from conftest import load_script

BENCHES = Path(__file__).resolve().parents[1] / "benches"


@pytest.fixture(scope="module")
def compare() -> ModuleType:
    return load_script(BENCHES / "compare.py")


def cell(lib: str, min_ms: float, op: str = "log_softmax", threads: int = 2) -> dict[str, Any]:
    return {
        "workload": "W2",
        "op": op,
        "lib": lib,
        "threads": threads,
        "ms": min_ms * 1.1,
        "min_ms": min_ms,
    }


def test_a_cell_slower_than_numpy_fails(compare: ModuleType) -> None:
    cells = [cell("xent_rs", 8.0), cell("numpy", 7.7), cell("xent_rs", 1.0, "ce_fwd")]
    cells.append(cell("numpy", 9.0, "ce_fwd"))
    assert compare.slower_than_numpy(cells) == [("W2", "log_softmax", 2)]
    (failure,) = compare.check_failures(cells)
    assert failure.startswith("W2 log_softmax @2t: xent_rs 8 ms > NumPy reference 7.7 ms")


def test_a_slow_cell_is_timed_again_and_only_a_second_loss_counts(
    compare: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    cells = [cell("xent_rs", 8.0), cell("numpy", 7.7), cell("torch", 3.0)]
    wl = SimpleNamespace(name="W2")
    calls = []
    again = [1.2]

    def rerun(w: Any, ops: list[str], libs: list[str], threads: list[int], *_: Any) -> Any:
        calls.append((w.name, ops, libs, threads))
        return [cell("xent_rs", again[0]), cell("numpy", 7.5)]

    monkeypatch.setattr(compare, "run_workload", rerun)
    fixed = compare.retime_slow(cells, [wl], ["xent_rs", "torch", "numpy"], {}, None)
    assert calls == [("W2", ["log_softmax"], ["xent_rs", "numpy"], [2])]
    assert [c["min_ms"] for c in fixed] == [1.2, 7.5, 3.0]
    assert all(c.get("retimed") for c in fixed[:2]) and "retimed" not in fixed[2]
    assert compare.check_failures(fixed) == []
    again[0] = 9.0
    still = compare.retime_slow(cells, [wl], ["xent_rs", "torch", "numpy"], {}, None)
    assert len(compare.check_failures(still)) == 1


def test_mirror_rows_compare_the_alternating_pair_not_the_table_cells(
    compare: ModuleType,
) -> None:
    # The main tables' cells say 1.3x (over the 1.10 bar); the pair timed in alternation
    # says 1.02x, and the mirror table reports the pair.
    cells = [cell("xent_rs", 13.0, "ce_z_fwdbwd"), cell("xent_rs", 10.0, "ce_fwdbwd")]
    pair = {"workload": "W2", "op": "ce_z_fwdbwd", "mirror": "ce_fwdbwd", "threads": 2}
    results = {"cells": cells, "mirrors": [pair | {"ms": 10.2, "mirror_ms": 10.0}]}
    (row,) = compare.mirror_rows(results, [2])
    assert row[-2:] == ["1.02x", "1.10x ok"]
    # A saved run without pairs falls back on the cells.
    (row,) = compare.mirror_rows({"cells": cells}, [2])
    assert row[-2:] == ["1.30x", "1.10x OVER"]
    assert compare.mirror_rows(results, [1]) == []


def test_time_pair_takes_turns_and_reports_both_medians(compare: ModuleType) -> None:
    order: list[str] = []

    def call(name: str) -> SimpleNamespace:
        return SimpleNamespace(fn=lambda: order.append(name), setup=None)

    timing = compare.Timing(True)
    ms, mirror_ms = compare.time_pair(call("a"), call("b"), timing)
    assert ms >= 0.0 and mirror_ms >= 0.0
    timed = order[2 * timing.warmup :]
    assert len(timed) == 2 * timing.pair_rounds
    assert timed[:4] == ["a", "b", "b", "a"]
