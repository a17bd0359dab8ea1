"""The user's path, verbatim: nnU-Net's own commands in subprocesses, with nnU-Net's path variables set.

1. ``nnunet_mm demo``'s cycle on phantoms (convert 511 → nnUNetv2_plan_and_preprocess → nnUNetv2_train
   MultiModalTrainer_debug → nnUNetv2_predict → nnunet_mm predict with phases missing → nnUNetv2_evaluate_simple).
2. A real dataset we did not generate (BRATS 2015 FLAIR + T1c from ../shared/realdata), written by a plain script
   with no "nnunet_mm" block and z-scored channel names, checked and planned with nnU-Net's API, trained (2d),
   predicted and evaluated with the stock commands; ``nnunet_mm predict`` (in this process) fills the missing T1c
   channel and refuses a missing reference channel.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from nnunet_mm.cli.main import main as nnunet_mm
from nnunet_mm.demo import format_dice_table, run_demo

pytestmark = pytest.mark.slow
REALDATA = Path(__file__).resolve().parents[2].parent / "shared" / "realdata" / "brats2015-deepmedic"


def test_demo_cycle_trains_predicts_and_evaluates(cli, monkeypatch):
    for name, value in {**cli.env, "nnUNet_n_proc_DA": "1"}.items():  # the demo's commands start from os.environ;
        monkeypatch.setenv(name, value)  # nnU-Net's planner refuses 0 augmentation workers
    monkeypatch.delenv("nnUNet_extTrainer", raising=False)
    demo = cli.results / "demo"
    trainers = {"stock": "nnUNetTrainer_debug", "multimodal": "MultiModalTrainer_debug"}  # the demo's, shorter
    result = run_demo(demo, num_training=6, num_test=2, shape_zyx=(16, 32, 32), trainers=trainers, device="cpu")
    results = demo / "nnUNet_results" / "Dataset511_MultiPhaseLiver"
    fold = results / "MultiModalTrainer_debug__nnUNetPlans__2d" / "fold_0"
    log = next(fold.glob("training_log_*.txt")).read_text(encoding="utf-8")
    assert "nnunet_mm: 4 channel(s), reference channel 0 (pv)" in log
    assert (results / "nnUNetTrainer_debug__nnUNetPlans__2d" / "fold_0" / "checkpoint_final.pth").is_file()
    # both trainers on the one plan
    assert json.loads((fold.parent / "plans.json").read_text(encoding="utf-8")) == json.loads(
        (results / "nnUNetTrainer_debug__nnUNetPlans__2d" / "plans.json").read_text(encoding="utf-8"))
    # training lowered the loss: the second epoch's mean was 67-78 % of the first's in 12 unseeded runs. No bound on
    # Dice: after these 8 iterations the test cases' Dice is noise (the demo's own schedule is 200 iterations)
    checkpoint = torch.load(fold / "checkpoint_final.pth", map_location="cpu", weights_only=False)  # written just now
    losses = checkpoint["logging"]["train_losses"]
    assert len(losses) == 2 and losses[1] < losses[0], losses
    labels = demo / "test_raw" / "Dataset511_MultiPhaseLiver" / "labelsTr"
    runs = ("stock", "stock_missing", "multimodal", "multimodal_missing")
    for run_name in runs:
        predictions = sorted((demo / f"pred_{run_name}").glob("*.nii.gz"))
        assert [p.name for p in predictions] == sorted(p.name for p in labels.glob("*.nii.gz"))
        for prediction in predictions:
            image, truth = sitk.ReadImage(str(prediction)), sitk.ReadImage(str(labels / prediction.name))
            assert image.GetSize() == truth.GetSize() and image.GetSpacing() == truth.GetSpacing()
            assert set(np.unique(sitk.GetArrayFromImage(image))) <= {0, 1, 2}
    filled = json.loads((demo / "pred_multimodal_missing" / "missing_channels.json").read_text(encoding="utf-8"))
    assert all(entry["filled"] == [1, 3] and entry["available"] == [0, 2] for entry in filled.values())
    # nnunet_mm compare scored every run against stock nnU-Net, and the table shows its numbers
    report = json.loads((demo / "compare" / "compare.json").read_text(encoding="utf-8"))
    assert report["settings"]["baseline"] == "stock" and sorted(report["arms"]) == sorted(runs)
    assert result.dice["multimodal"]["tumor"] == round(report["summary"]["tumor"]["multimodal"]["dice_mean"], 3)
    assert (demo / "compare" / "compare.png").is_file() and result.compare_md.is_file()
    assert result.overlay_png.is_file() and result.overlay_png.stat().st_size > 10_000
    table = format_dice_table(result)
    for run_name in runs:
        assert f"| {run_name} | {result.dice[run_name]['liver']:.3f} | {result.dice[run_name]['tumor']:.3f} |" in table


def _write_foreign_dataset(raw: Path, cases: list[Path], test_cases: list[Path]) -> Path:
    """What a user's own script would write: 2 channels, no nnunet_mm block, downsampled to keep the test fast."""
    from nnunetv2.dataset_conversion.generate_dataset_json import generate_dataset_json

    folder = raw / "Dataset600_RealBrats"
    for sub in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
        (folder / sub).mkdir(parents=True)
    shrink = sitk.ResampleImageFilter()

    def downsample(image: sitk.Image, is_label: bool) -> sitk.Image:
        spacing = (8.0, 8.0, 8.0)
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
def test_stock_commands_on_a_dataset_we_did_not_generate(cli, plan_in_process, capsys):
    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity

    all_cases = sorted(p for split in ("train", "validation", "test") for p in (REALDATA / split).iterdir())
    folder = _write_foreign_dataset(cli.raw, all_cases[:4], all_cases[4:5])
    verify_dataset_integrity(str(folder), num_processes=1)
    plan_in_process(600, ("2d",))  # 3d_fullres: the demo above
    cli.run("nnUNetv2_train", "600", "2d", "all", "-tr", "MultiModalTrainer_debug", "-device", "cpu")
    model_args = ["-d", "600", "-c", "2d", "-tr", "MultiModalTrainer_debug", "-f", "all", "-device", "cpu"]
    cli.run("nnUNetv2_predict", "-i", str(folder / "imagesTs"), "-o", str(cli.results / "pred"), *model_args,
            "-npp", "0", "-nps", "0", "--disable_progress_bar")
    flair_only = cli.results / "flair_only"
    flair_only.mkdir()
    flair = next((folder / "imagesTs").glob("*_0000.nii.gz"))
    (flair_only / flair.name).symlink_to(flair)
    assert nnunet_mm(["predict", "-i", str(flair_only), "-o", str(cli.results / "pred_flair_only"), *model_args,
                      "--disable_progress_bar"]) == 0
    cli.run("nnUNetv2_evaluate_simple", str(folder / "labelsTs"), str(cli.results / "pred"), "-l", "1")
    case = flair.name[: -len("_0000.nii.gz")]
    for run_name in ("pred", "pred_flair_only"):
        prediction = sitk.ReadImage(str(cli.results / run_name / f"{case}.nii.gz"))
        assert prediction.GetSize() == sitk.ReadImage(str(flair)).GetSize()
        assert set(np.unique(sitk.GetArrayFromImage(prediction))) <= {0, 1}
    # the evaluation compared this case's prediction with its label, voxel by voxel
    [scores] = json.loads((cli.results / "pred" / "summary.json").read_text(encoding="utf-8"))["metric_per_case"]
    predicted = sitk.GetArrayFromImage(sitk.ReadImage(str(cli.results / "pred" / f"{case}.nii.gz"))) == 1
    truth = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "labelsTs" / f"{case}.nii.gz"))) == 1
    assert scores["metrics"]["1"]["n_pred"] == predicted.sum() and scores["metrics"]["1"]["n_ref"] == truth.sum() > 0
    assert scores["metrics"]["1"]["TP"] == (predicted & truth).sum()
    report = json.loads((cli.results / "pred_flair_only" / "missing_channels.json").read_text(encoding="utf-8"))
    assert report[case] == {"available": [0], "filled": [1], "fill_mode": "duplicate"}

    # nnunet_mm predict writes a folder nnU-Net's own tools accept: ensembling, post-processing, evaluation
    full = cli.results / "pred_mm_full"
    assert nnunet_mm(["predict", "-i", str(folder / "imagesTs"), "-o", str(full), *model_args,
                      "--save_probabilities", "--disable_progress_bar"]) == 0
    assert nnunet_mm(["predict", "-i", str(flair_only), "-o", str(cli.results / "pred_flair_probs"), *model_args,
                      "--save-probabilities", "--disable-progress-bar"]) == 0  # the dashed twins of nnU-Net's
    assert {"dataset.json", "plans.json", "predict_from_raw_data_args.json"} <= {p.name for p in full.iterdir()}
    cli.run("nnUNetv2_ensemble", "-i", str(full), str(cli.results / "pred_flair_probs"), "-o",
            str(cli.results / "ensembled"), "-np", "1")
    assert (cli.results / "ensembled" / f"{case}.nii.gz").is_file()
    import pickle

    no_postprocessing = cli.results / "postprocessing.pkl"  # what nnUNetv2_find_best_configuration writes
    no_postprocessing.write_bytes(pickle.dumps(([], [])))
    cli.run("nnUNetv2_apply_postprocessing", "-i", str(full), "-o", str(cli.results / "postprocessed"),
            "-pp_pkl_file", str(no_postprocessing), "-np", "1")
    assert (cli.results / "postprocessed" / f"{case}.nii.gz").is_file()
    cli.run("nnUNetv2_evaluate_folder", str(folder / "labelsTs"), str(full), "-djfile", str(full / "dataset.json"),
            "-pfile", str(full / "plans.json"), "-np", "1")
    scores_mm = json.loads((full / "summary.json").read_text(encoding="utf-8"))["metric_per_case"][0]["metrics"]["1"]
    assert scores_mm["n_ref"] == truth.sum()

    missing_reference = cli.results / "t1c_only"
    missing_reference.mkdir()
    t1c = next((folder / "imagesTs").glob("*_0001.nii.gz"))
    (missing_reference / t1c.name).symlink_to(t1c)
    capsys.readouterr()
    assert nnunet_mm(["predict", "-i", str(missing_reference), "-o", str(cli.results / "never"), *model_args]) != 0
    assert f"{case}_0000.nii.gz: reference channel 0 is missing" in capsys.readouterr().err

    # a NaN voxel is refused naming the file, or with --replace-non-finite predicted from a finite copy and recorded
    with_nan = cli.results / "with_nan"
    with_nan.mkdir()
    nan_image = sitk.ReadImage(str(flair), sitk.sitkFloat32)
    nan_array = sitk.GetArrayFromImage(nan_image)
    nan_array[tuple(s // 2 for s in nan_array.shape)] = np.nan
    nan_copy = sitk.GetImageFromArray(nan_array)
    nan_copy.CopyInformation(nan_image)
    sitk.WriteImage(nan_copy, str(with_nan / flair.name))
    capsys.readouterr()
    assert nnunet_mm(["predict", "-i", str(with_nan), "-o", str(cli.results / "never"), *model_args]) != 0
    assert f"{with_nan / flair.name}: contains 1 NaN/inf voxels" in capsys.readouterr().err
    assert nnunet_mm(["predict", "-i", str(with_nan), "-o", str(cli.results / "pred_nan"), *model_args,
                      "--replace-non-finite", "--disable_progress_bar"]) == 0
    replaced = json.loads((cli.results / "pred_nan" / "missing_channels.json").read_text(encoding="utf-8"))[case]
    assert replaced["non_finite_replaced"]["0"]["voxels"] == 1
    assert replaced["non_finite_replaced"]["0"]["value"] == float(np.nanmin(nan_array))
    assert sorted(p.name for p in (cli.results / "pred_nan").iterdir()) == sorted(
        [f"{case}.nii.gz", "dataset.json", "missing_channels.json", "plans.json", "predict_from_raw_data_args.json"])

    # a model folder whose checkpoint is a crafted pickle is refused before nnU-Net loads it; its code never runs
    import shutil

    import torch

    trained = cli.results / "Dataset600_RealBrats" / "MultiModalTrainer_debug__nnUNetPlans__2d"
    crafted = cli.results / "crafted_model"
    shutil.copytree(trained, crafted)
    marker = cli.results / "crafted_code_ran"
    torch.save({"network_weights": _Payload(str(marker))}, crafted / "fold_all" / "checkpoint_final.pth")
    capsys.readouterr()
    assert nnunet_mm(["predict", "-i", str(flair_only), "-o", str(cli.results / "never"), "-m", str(crafted),
                      "-f", "all", "-device", "cpu"]) != 0
    error = capsys.readouterr().err
    assert "checkpoint_final.pth: refused to load" in error and "Traceback" not in error
    assert not marker.exists()


class _Payload:
    """Pickles as a call that creates ``marker``: what a crafted checkpoint runs when unpickled."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return Path(self.marker).touch, ()
