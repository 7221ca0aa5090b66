"""examples/seed_training.py replays PyTorch's recorded training runs (tests/golden-training).

The replay is end to end: xent_rs's loss and gradient at every step of a small network's
training, against torch's float64 run. These tests run the example as a script and through its
``replay()``, check that the repository's copy of the record has not drifted from the shared
one, and that a replay fed a slightly wrong run does report a mismatch (a check that cannot
fail would prove nothing).
"""

from __future__ import annotations

import dataclasses
import importlib
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from conftest import (
    GOLDEN_TRAINING_DIR,
    REPO_ROOT,
    SHARED_GOLDEN_TRAINING_DIR,
    assert_same_files,
)

EXAMPLE = REPO_ROOT / "examples" / "seed_training.py"
NAMES = ("seed_bce", "multiclass_weighted", "multilabel_pos_weight")
#: A relative change that a replay to 1e-9 must notice.
PERTURBATION = 1e-6

seed_training: ModuleType | None
sys.path.insert(0, str(EXAMPLE.parent))
try:
    seed_training = importlib.import_module("seed_training")
except ImportError:  # xent_rs is not built: only the copy check can run
    seed_training = None
finally:
    sys.path.remove(str(EXAMPLE.parent))

needs_example = pytest.mark.skipif(seed_training is None, reason="xent_rs is not importable")


def _example() -> ModuleType:
    assert seed_training is not None
    return seed_training


def _check_lines(output: str, verdicts: dict[str, str]) -> None:
    """One line per trajectory, in the file's order, ending with its expected verdict."""
    lines = output.strip().splitlines()
    assert [line.split(":")[0] for line in lines] == list(verdicts), output
    for line, verdict in zip(lines, verdicts.values(), strict=True):
        assert line.endswith(f"  {verdict}"), line


@needs_example
@pytest.mark.parametrize(
    "directory",
    [
        pytest.param(None, id="repository-copy"),
        pytest.param(
            SHARED_GOLDEN_TRAINING_DIR,
            id="shared",
            marks=pytest.mark.skipif(
                not SHARED_GOLDEN_TRAINING_DIR.is_dir(),
                reason="../shared/golden-training is not present",
            ),
        ),
    ],
)
def test_example_script(directory: Path | None) -> None:
    args = [] if directory is None else ["--trajectories", str(directory)]
    proc = subprocess.run(
        [sys.executable, str(EXAMPLE), *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    _check_lines(proc.stdout, dict.fromkeys(NAMES, "ok"))


@needs_example
def test_replay_matches_torch() -> None:
    example = _example()
    replays = example.replay()
    assert list(replays) == list(NAMES)
    with np.load(GOLDEN_TRAINING_DIR / "trajectories.npz", allow_pickle=False) as npz:
        for name, r in replays.items():
            assert r.name == name
            assert r.ok, r
            assert r.max_loss_error <= 1e-9, r
            assert r.max_param_error <= 1e-9, r
            reference = npz[f"{name}/loss"]
            assert r.losses.shape == reference.shape == (len(npz[f"{name}/batches"]),)
            np.testing.assert_array_equal(r.reference_losses, reference)
            np.testing.assert_allclose(r.losses, reference, rtol=1e-9, atol=1e-12)


@pytest.mark.skipif(
    not SHARED_GOLDEN_TRAINING_DIR.is_dir(), reason="../shared/golden-training is not present"
)
def test_golden_training_copy_matches_shared() -> None:
    assert_same_files(GOLDEN_TRAINING_DIR, SHARED_GOLDEN_TRAINING_DIR)


@needs_example
@pytest.mark.parametrize("name", NAMES)
def test_perturbed_initial_weight_is_a_mismatch(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with np.load(GOLDEN_TRAINING_DIR / "trajectories.npz", allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    weights = arrays[f"{name}/init/W1"]
    # the largest weight, so that the change is far above the tolerance's absolute floor
    weights.flat[np.argmax(np.abs(weights))] *= 1 + PERTURBATION
    np.savez(tmp_path / "trajectories.npz", **arrays)
    assert _example().main(["--trajectories", str(tmp_path)]) == 1
    _check_lines(capsys.readouterr().out, {n: "MISMATCH" if n == name else "ok" for n in NAMES})


@needs_example
@pytest.mark.parametrize("name", NAMES)
def test_perturbed_learning_rate_is_a_mismatch(
    name: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    example = _example()
    recipe = example.RECIPES[name]
    perturbed = dataclasses.replace(recipe, lr=recipe.lr * (1 + PERTURBATION))
    monkeypatch.setitem(example.RECIPES, name, perturbed)
    assert example.main([]) == 1
    _check_lines(capsys.readouterr().out, {n: "MISMATCH" if n == name else "ok" for n in NAMES})


@needs_example
def test_trajectory_without_recipe_is_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with np.load(GOLDEN_TRAINING_DIR / "trajectories.npz", allow_pickle=False) as npz:
        arrays = {k.replace("seed_bce/", "unknown/"): npz[k] for k in npz.files}
    np.savez(tmp_path / "trajectories.npz", **arrays)
    assert _example().main(["--trajectories", str(tmp_path)]) == 2
    assert "no recipe for the trajectories ['unknown']" in capsys.readouterr().err
