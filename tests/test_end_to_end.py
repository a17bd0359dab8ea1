"""The user's path, verbatim: nnU-Net's own commands in subprocesses, with only the three path variables set.

1. ``nnunet_mm demo``'s cycle on phantoms (convert 511 → nnUNetv2_plan_and_preprocess → nnUNetv2_train
   MultiModalTrainer_debug → nnUNetv2_predict → nnunet_mm predict with phases missing → nnUNetv2_evaluate_simple).
2. A real dataset we did not generate (BRATS 2015 FLAIR + T1c from ../shared/realdata), written by a plain script
   with no "nnunet_mm" block and z-scored channel names, trained and predicted with the stock commands.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_mm.demo import format_dice_table, run_demo

pytestmark = pytest.mark.slow
REALDATA = Path(__file__).resolve().parents[1].parent / "shared" / "realdata" / "brats2015-deepmedic"


@pytest.fixture
def without_ext_trainer(monkeypatch):
    """Start every subprocess without nnUNet_extTrainer: the start-up hook must supply it."""
    monkeypatch.delenv("nnUNet_extTrainer", raising=False)
    monkeypatch.setenv("nnUNet_def_n_proc", "2")
    monkeypatch.setenv("nnUNet_n_proc_DA", "1")


def test_demo_cycle_trains_predicts_and_evaluates(tmp_path, without_ext_trainer):
    result = run_demo(tmp_path / "demo", num_training=6, num_test=2, shape_zyx=(24, 48, 48), device="cpu")
    results = tmp_path / "demo" / "nnUNet_results" / "Dataset511_MultiPhaseLiver"
    fold = results / "MultiModalTrainer_debug__nnUNetPlans__3d_fullres" / "fold_0"
    assert (fold / "checkpoint_final.pth").is_file()
    assert json.loads((fold / "validation" / "summary.json").read_text())["foreground_mean"]["Dice"] >= 0
    log = next(fold.glob("training_log_*.txt")).read_text()
    assert "nnunet_mm: 4 channel(s), reference channel 0 (pv)" in log
    for run_name in ("pred_all_phases", "pred_missing_phases"):
        predictions = sorted((tmp_path / "demo" / run_name).glob("*.nii.gz"))
        assert len(predictions) == 2
        assert set(np.unique(sitk.GetArrayFromImage(sitk.ReadImage(str(predictions[0]))))) <= {0, 1, 2}
        # an all-background prediction scores 0; 8 unseeded iterations give 0.19-0.3 at this size, so 0.2 was flaky
        assert result.dice[run_name]["liver"] > 0.1
    filled = json.loads((tmp_path / "demo" / "pred_missing_phases" / "missing_channels.json").read_text())
    assert all(entry["filled"] == [1, 3] and entry["available"] == [0, 2] for entry in filled.values())
    assert result.overlay_png.is_file() and result.overlay_png.stat().st_size > 10_000
    assert "| pred_missing_phases |" in format_dice_table(result)


def _write_foreign_dataset(raw: Path, cases: list[Path], test_cases: list[Path]) -> Path:
    """What a user's own script would write: 2 channels, no nnunet_mm block, downsampled to keep the test fast."""
    from nnunetv2.dataset_conversion.generate_dataset_json import generate_dataset_json

    folder = raw / "Dataset600_RealBrats"
    for sub in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
        (folder / sub).mkdir(parents=True)
    shrink = sitk.ResampleImageFilter()

    def downsample(image: sitk.Image, is_label: bool) -> sitk.Image:
        spacing = (6.0, 6.0, 6.0)
        size = [int(round(n * s / t)) for n, s, t in zip(image.GetSize(), image.GetSpacing(), spacing)]
        shrink.SetOutputSpacing(spacing)
        shrink.SetSize(size)
        shrink.SetOutputOrigin(image.GetOrigin())
        shrink.SetOutputDirection(image.GetDirection())
        shrink.SetInterpolator(sitk.sitkNearestNeighbor if is_label else sitk.sitkLinear)
        return shrink.Execute(image)

    for images_dir, labels_dir, group in (("imagesTr", "labelsTr", cases), ("imagesTs", "labelsTs", test_cases)):
        for case in group:
            for channel, name in enumerate(("Flair_subtrMeanDivStd", "T1c_subtrMeanDivStd")):
                image = downsample(sitk.ReadImage(str(case / f"{name}.nii.gz")), is_label=False)
                sitk.WriteImage(image, str(folder / images_dir / f"{case.name}_{channel:04d}.nii.gz"))
            label = sitk.ReadImage(str(case / "OTMultiClass.nii.gz"))
            whole_tumour = sitk.Cast(downsample(label, is_label=True) > 0, sitk.sitkUInt8)
            sitk.WriteImage(whole_tumour, str(folder / labels_dir / f"{case.name}.nii.gz"))
    generate_dataset_json(str(folder), {0: "FLAIR", 1: "T1c"}, {"background": 0, "tumour": 1},
                          len(cases), ".nii.gz", dataset_name="RealBrats")
    return folder


@pytest.mark.skipif(not REALDATA.is_dir(), reason=f"real sample data not found at {REALDATA} (CI has it)")
def test_stock_commands_on_a_dataset_we_did_not_generate(tmp_path, without_ext_trainer):
    env = dict(os.environ, nnUNet_raw=str(tmp_path / "raw"), nnUNet_preprocessed=str(tmp_path / "pre"),
               nnUNet_results=str(tmp_path / "res"),
               PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    all_cases = sorted(p for split in ("train", "validation", "test") for p in (REALDATA / split).iterdir())
    folder = _write_foreign_dataset(tmp_path / "raw", all_cases[:4], all_cases[4:5])

    def run(*command: str) -> str:
        done = subprocess.run(list(command), env=env, capture_output=True, encoding="utf-8", errors="replace", timeout=600)
        assert done.returncode == 0, f"{' '.join(command)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        return done.stdout

    run("nnUNetv2_plan_and_preprocess", "-d", "600", "-c", "3d_fullres", "-np", "2", "-npfp", "2",
        "--verify_dataset_integrity")
    run("nnUNetv2_train", "600", "3d_fullres", "all", "-tr", "MultiModalTrainer_debug", "-device", "cpu")
    model_args = ["-d", "600", "-c", "3d_fullres", "-tr", "MultiModalTrainer_debug", "-f", "all", "-device", "cpu"]
    run("nnUNetv2_predict", "-i", str(folder / "imagesTs"), "-o", str(tmp_path / "pred"), *model_args,
        "-npp", "0", "-nps", "0", "--disable_progress_bar")
    (tmp_path / "flair_only").mkdir()
    flair = next((folder / "imagesTs").glob("*_0000.nii.gz"))
    (tmp_path / "flair_only" / flair.name).symlink_to(flair)
    run(sys.executable, "-m", "nnunet_mm.cli.main", "predict", "-i", str(tmp_path / "flair_only"),
        "-o", str(tmp_path / "pred_flair_only"), *model_args, "--disable_progress_bar")
    run("nnUNetv2_evaluate_simple", str(folder / "labelsTs"), str(tmp_path / "pred"), "-l", "1")
    summary = json.loads((tmp_path / "pred" / "summary.json").read_text())
    assert 0.0 <= summary["foreground_mean"]["Dice"] <= 1.0
    case = flair.name[: -len("_0000.nii.gz")]
    for run_name in ("pred", "pred_flair_only"):
        prediction = sitk.ReadImage(str(tmp_path / run_name / f"{case}.nii.gz"))
        assert prediction.GetSize() == sitk.ReadImage(str(flair)).GetSize()
    report = json.loads((tmp_path / "pred_flair_only" / "missing_channels.json").read_text())
    assert report[case] == {"available": [0], "filled": [1], "fill_mode": "duplicate"}

    missing_reference = tmp_path / "t1c_only"
    missing_reference.mkdir()
    t1c = next((folder / "imagesTs").glob("*_0001.nii.gz"))
    (missing_reference / t1c.name).symlink_to(t1c)
    refused = subprocess.run([sys.executable, "-m", "nnunet_mm.cli.main", "predict", "-i", str(missing_reference),
                              "-o", str(tmp_path / "never"), *model_args], env=env, capture_output=True, encoding="utf-8", errors="replace")
    assert refused.returncode != 0
    assert f"{case}_0000.nii.gz: reference channel 0 is missing" in refused.stderr


def _plan_in_process(dataset_id: int, configuration: str, env: dict, monkeypatch, quick_fingerprint) -> None:
    """Fingerprint (fewer intensity samples), plan and preprocess with nnU-Net's API in this process; the CLI
    version of this step is covered by the demo test, and its fingerprint sampling alone takes ~30 s here."""
    from nnunetv2.experiment_planning.plan_and_preprocess_api import plan_experiments, preprocess

    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.setenv(name, env[name])
    quick_fingerprint(dataset_id)
    plan_experiments([dataset_id])
    preprocess([dataset_id], configurations=(configuration,), num_processes=(1,))


def test_cmg_trainer_cli_cycle_in_2d_with_continue(tmp_path, without_ext_trainer, monkeypatch, quick_fingerprint):
    """`nnUNetv2_train ... -tr CMGTrainer_debug` (2d), `--c` after the end, `nnUNetv2_predict -tr CMGTrainer_debug`."""
    from nnunet_mm.phantom import write_nnunet_raw

    env = dict(os.environ, nnUNet_raw=str(tmp_path / "raw"), nnUNet_preprocessed=str(tmp_path / "pre"),
               nnUNet_results=str(tmp_path / "res"),
               PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    write_nnunet_raw(tmp_path / "raw", dataset_id=590, name="CMGPhantom", num_training=5, num_test=1, seed=3,
                     shape_zyx=(12, 48, 48), phases=("pv", "art"))

    def run(*command: str) -> str:
        done = subprocess.run(list(command), env=env, capture_output=True, encoding="utf-8", errors="replace",
                              timeout=600)
        assert done.returncode == 0, f"{' '.join(command)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        return done.stdout

    _plan_in_process(590, "2d", env, monkeypatch, quick_fingerprint)
    run("nnUNetv2_train", "590", "2d", "0", "-tr", "CMGTrainer_debug", "-device", "cpu")
    fold = tmp_path / "res" / "Dataset590_CMGPhantom" / "CMGTrainer_debug__nnUNetPlans__2d" / "fold_0"
    checkpoint = torch_load_weights(fold / "checkpoint_final.pth")
    assert any(key.startswith("guidance.") for key in checkpoint)  # the CMG network was trained, not a U-Net
    assert "reference_index" in checkpoint
    continued = run("nnUNetv2_train", "590", "2d", "0", "-tr", "CMGTrainer_debug", "-device", "cpu", "--c")
    assert "Validation complete" in continued or "validation" in continued.lower()
    images = tmp_path / "raw" / "Dataset590_CMGPhantom" / "imagesTs"
    run("nnUNetv2_predict", "-i", str(images), "-o", str(tmp_path / "pred"), "-d", "590", "-c", "2d",
        "-tr", "CMGTrainer_debug", "-f", "0", "-device", "cpu", "--disable_tta")
    predictions = sorted((tmp_path / "pred").glob("*.nii.gz"))
    assert len(predictions) == 1
    assert set(np.unique(sitk.GetArrayFromImage(sitk.ReadImage(str(predictions[0]))))) <= {0, 1, 2}
    case = predictions[0].name[: -len(".nii.gz")]
    run("nnunet_mm", "cmg-maps", "-i", str(images), "--case", case, "-o", str(tmp_path / "maps.png"), "-d", "590",
        "-c", "2d", "-tr", "CMGTrainer_debug", "-device", "cpu")
    assert (tmp_path / "maps.png").stat().st_size > 20_000


def torch_load_weights(path: Path) -> dict:
    """The network weights of an nnU-Net checkpoint (our own file, written by the test just before)."""
    import torch

    return torch.load(path, map_location="cpu", weights_only=False)["network_weights"]


def test_cmc_trainer_cli_cycle_with_unlabeled_cases(tmp_path, without_ext_trainer, monkeypatch, quick_fingerprint):
    """label-fraction → plan/preprocess → preprocess-unlabeled → nnUNetv2_train CMCTrainer_debug → nnUNetv2_predict
    (self-paired inference)."""
    from nnunet_mm.phantom import write_nnunet_raw

    env = dict(os.environ, nnUNet_raw=str(tmp_path / "raw"), nnUNet_preprocessed=str(tmp_path / "pre"),
               nnUNet_results=str(tmp_path / "res"),
               PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    write_nnunet_raw(tmp_path / "raw", dataset_id=580, name="Single", num_training=4, num_test=1, seed=2,
                     shape_zyx=(16, 32, 32), phases=("pv",))

    def run(*command: str) -> str:
        done = subprocess.run(list(command), env=env, capture_output=True, encoding="utf-8", errors="replace",
                              timeout=600)
        assert done.returncode == 0, f"{' '.join(command)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        return done.stdout

    run("nnunet_mm", "label-fraction", "-d", "580", "--fraction", "0.5", "--target-id", "581")
    _plan_in_process(581, "3d_fullres", env, monkeypatch, quick_fingerprint)
    run("nnunet_mm", "preprocess-unlabeled", "-d", "581", "-c", "3d_fullres")
    run("nnUNetv2_train", "581", "3d_fullres", "0", "-tr", "CMCTrainer_debug", "-device", "cpu")
    fold = next((tmp_path / "res").glob("Dataset581_*")) / "CMCTrainer_debug__nnUNetPlans__3d_fullres" / "fold_0"
    log = next(fold.glob("training_log_*.txt")).read_text()
    csc = [float(line.split("csc ")[1].split()[0]) for line in log.splitlines() if "nnunet_mm: csc" in line]
    assert len(csc) == 2 and all(value > 0 for value in csc)  # the consistency terms were computed every epoch
    images = next((tmp_path / "raw").glob("Dataset581_*")) / "imagesTs"
    run("nnUNetv2_predict", "-i", str(images), "-o", str(tmp_path / "pred"), "-d", "581", "-c", "3d_fullres",
        "-tr", "CMCTrainer_debug", "-f", "0", "-device", "cpu", "--disable_tta")
    predictions = sorted((tmp_path / "pred").glob("*.nii.gz"))
    assert len(predictions) == 1
    assert set(np.unique(sitk.GetArrayFromImage(sitk.ReadImage(str(predictions[0]))))) <= {0, 1, 2}
