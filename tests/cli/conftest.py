"""The CLI cycles: nnU-Net's commands in subprocesses, as a user types them, with the plugin's trainers.

The plugin's own commands run in this process (``nnunet_mm.cli.main.main``) unless the subprocess is the point;
``nnunet_mm demo`` runs them all as subprocesses. Every test gets its own three nnU-Net folders
(:class:`CommandLine`). Datasets that several cycles train on are
written, planned and preprocessed once per session by :func:`shared_dataset` and copied into each test's folders,
so a test may write into its copy (splits, statistics, unlabeled cases) without touching another test's.

The subprocesses run on the CPU with the settings that keep a 2-core machine busy with training rather than with
process start-up: no data-augmentation workers, one export worker, no ``torch.compile``, one torch thread.
They start without ``nnUNet_extTrainer``: the plugin's start-up hook must supply it, as it did for this process.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
from session_cache import build_once_per_session

FOLDERS = ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")
CLI_TESTS = Path(__file__).parent
# The order in which pytest-xdist hands the cycles out (see pytest_collection_modifyitems): each worker starts with
# two tests (items 1-2 to one, 3-4 to the other), then gets one more whenever it finishes one. Seconds in one
# `pytest -n 2 tests/cli` on the 2-core box: demo 177, CMG 98 (with the shared dataset), stock commands 77, MAS 58,
# CMC 51, weak 43, synthesis 35.
HAND_OUT_ORDER = ("test_demo_cycle_trains_predicts_and_evaluates",
                  "test_cli_cycle_stats_train_predict_postprocess_and_preview",
                  "test_cmg_trainer_cli_cycle_in_2d_with_continue",
                  "test_stock_commands_on_a_dataset_we_did_not_generate", "test_mas_prior_trainer_cli_cycle",
                  "test_weak_label_cycle_gan_export_train_resume", "test_cmc_trainer_cli_cycle_with_unlabeled_cases")
QUIET_CPU = {"nnUNet_n_proc_DA": "0", "nnUNet_def_n_proc": "1", "nnUNet_compile": "f", "OMP_NUM_THREADS": "1"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the CLI cycles before every other test, in :data:`HAND_OUT_ORDER`: pytest-xdist (``--maxschedchunk=1``
    in pyproject.toml) spreads them over its workers and the quick tests fill up behind them, instead of one worker
    finishing a cycle long after the other ran out of tests."""
    def rank(item: pytest.Item) -> tuple[int, int]:
        if CLI_TESTS not in item.path.parents:
            return 2, 0
        name = item.originalname
        return (0, HAND_OUT_ORDER.index(name)) if name in HAND_OUT_ORDER else (1, 0)

    items.sort(key=rank)


@dataclass(frozen=True)
class CommandLine:
    """One test's nnU-Net folders and the environment its commands run in."""

    raw: Path
    preprocessed: Path
    results: Path
    env: dict[str, str]

    def run(self, *command: str) -> None:
        """Run ``command``; fail the test with the end of its output unless it exits with 0."""
        done = subprocess.run(list(command), env=self.env, capture_output=True, encoding="utf-8", errors="replace",
                              timeout=600)
        assert done.returncode == 0, f"{' '.join(command)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"

    def adopt(self, dataset: SharedDataset) -> None:
        """Copy a session dataset's raw and preprocessed folders into this test's folders."""
        shutil.copytree(dataset.raw, self.raw / dataset.name)
        shutil.copytree(dataset.preprocessed, self.preprocessed / dataset.name)

    def add_to_block(self, dataset_name: str, **entries: object) -> None:
        """Add ``entries`` to the ``"nnunet_mm"`` block of this test's dataset.json files of ``dataset_name`` (raw
        and preprocessed; trainers read the preprocessed one)."""
        for folder in (self.raw, self.preprocessed):
            path = folder / dataset_name / "dataset.json"
            dataset_json = json.loads(path.read_text(encoding="utf-8"))
            dataset_json.setdefault("nnunet_mm", {}).update(entries)
            path.write_text(json.dumps(dataset_json, indent=2), encoding="utf-8")


@dataclass(frozen=True)
class SharedDataset:
    """A dataset written, planned and preprocessed once per session; read it only (see :meth:`CommandLine.adopt`)."""

    name: str
    raw: Path
    preprocessed: Path


def _environment(raw: Path, preprocessed: Path, results: Path) -> dict[str, str]:
    env = dict(os.environ, nnUNet_raw=str(raw), nnUNet_preprocessed=str(preprocessed), nnUNet_results=str(results),
               PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""), **QUIET_CPU)
    env.pop("nnUNet_extTrainer", None)
    return env


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CommandLine:
    """Empty nnU-Net folders for this test, also set in this process (for commands run in-process)."""
    folders = [tmp_path / name for name in ("raw", "pre", "res")]
    for folder in folders:
        folder.mkdir()
    env = _environment(*folders)
    for name in FOLDERS:
        monkeypatch.setenv(name, env[name])
    return CommandLine(*folders, env)


def _plan_in_process(dataset_id: int, configurations: tuple[str, ...], quick_fingerprint) -> None:
    from nnunetv2.experiment_planning.plan_and_preprocess_api import plan_experiments, preprocess

    quick_fingerprint(dataset_id)
    plan_experiments([dataset_id])
    preprocess([dataset_id], configurations=configurations, num_processes=(1,) * len(configurations))


@pytest.fixture(scope="session")
def plan_in_process(quick_fingerprint) -> Callable[[int, tuple[str, ...]], None]:
    """``plan_in_process(dataset_id, configurations)``: fingerprint (fewer intensity samples), plan and preprocess
    with nnU-Net's API in this process, in the folders of the environment; the command-line version of this step
    is covered by ``test_end_to_end.py``."""
    return lambda dataset_id, configurations: _plan_in_process(dataset_id, configurations, quick_fingerprint)


def shared_dataset(tmp_path_factory: pytest.TempPathFactory, name: str,
                   build: Callable[[Path, Path], None]) -> SharedDataset:
    """The dataset ``name``, built by ``build(raw, preprocessed)`` once per session for every xdist worker
    (:func:`session_cache.build_once_per_session`). ``build`` runs with nnU-Net's folders set to ``raw`` and
    ``preprocessed``."""

    def build_in(root: Path) -> None:
        raw, preprocessed = root / "raw", root / "pre"
        for folder in (raw, preprocessed):
            folder.mkdir(parents=True)
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("nnUNet_raw", str(raw))
            patch.setenv("nnUNet_preprocessed", str(preprocessed))
            build(raw, preprocessed)

    root = build_once_per_session(tmp_path_factory, name, build_in)
    return SharedDataset(name, root / "raw" / name, root / "pre" / name)


@pytest.fixture(scope="session")
def two_phase_liver(tmp_path_factory: pytest.TempPathFactory, quick_fingerprint) -> SharedDataset:
    """``Dataset590_TwoPhaseLiver``: 5 training and 1 test phantom, portal-venous + arterial, 8×32×32 voxels of
    4×3×3 mm, planned and preprocessed in 2d."""

    def build(raw: Path, preprocessed: Path) -> None:
        from nnunet_mm.phantom import write_nnunet_raw

        write_nnunet_raw(raw, dataset_id=590, name="TwoPhaseLiver", num_training=5, num_test=1, seed=3,
                         shape_zyx=(8, 32, 32), spacing_zyx_mm=(4.0, 3.0, 3.0), phases=("pv", "art"))
        _plan_in_process(590, ("2d",), quick_fingerprint)

    return shared_dataset(tmp_path_factory, "Dataset590_TwoPhaseLiver", build)
