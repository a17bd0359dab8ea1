"""``bench/bench_weak.py``: the BraTS slice rules and writer (a one-slice NIfTI case is a 2D weak image), the ratio
interval, and (slow) a smoke run of the whole experiment on the skin data."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bench_weak():
    sys.path.insert(0, str(REPO / "bench"))  # the script imports its sibling benchlib
    try:
        import bench_weak as module
        yield module
    finally:
        sys.path.remove(str(REPO / "bench"))


def test_brats_slice_selection_applies_the_rules_and_subsamples_evenly(bench_weak):
    tumour = [0, 0, 10, 60, 80, 0, 100, 49, 50, 0]
    brain = [0.01, 0.2, 0.3, 0.3, 0.3, 0.04, 0.3, 0.3, 0.3, 0.5]
    chosen = bench_weak.brats_slice_selection(tumour, brain, per_label=10)
    assert chosen == {"diseased": [3, 4, 6, 8], "normal": [1, 9]}  # 1-49 tumour voxels and little brain skipped
    assert bench_weak.brats_slice_selection(tumour, brain, per_label=2)["diseased"] == [3, 8]


def _patient(folder: Path, rng: np.random.Generator, *, shape=(6, 40, 40)) -> None:
    folder.mkdir(parents=True)
    brain = np.zeros(shape, np.float32)
    brain[:, 5:35, 5:35] = 1
    label = np.zeros(shape, np.float32)
    label[1:3, 10:25, 10:25] = 2  # 225 voxels: diseased slices 1, 2
    label[3, 10:12, 10:12] = 1  # 4 voxels: skipped
    for name, array in (("Flair_subtrMeanDivStd", rng.normal(0, 1, shape) * brain),
                        ("T1c_subtrMeanDivStd", rng.normal(0, 1, shape) * brain), ("OTMultiClass", label),
                        ("brainmask", brain)):
        sitk.WriteImage(sitk.GetImageFromArray(array.astype(np.float32)), str(folder / f"{name}.nii.gz"))


def test_brats_writer_makes_one_slice_cases_that_read_as_2d_weak_images(bench_weak, tmp_path):
    from nnunet_mm.weak.weak_images import load_weak_images

    rng = np.random.default_rng(0)
    root = tmp_path / "brats"
    for split, patient in (("train", "brats_2013_pat0005_1"), ("validation", "brats_2013_pat0003_1"),
                           ("test", "brats_2013_pat0001_1")):
        _patient(root / split / patient, rng)
    folder = bench_weak.write_brats_slices(root, tmp_path / "raw" / "Dataset950_BenchBraTS2D", train_per_patient=5,
                                           test_per_patient=1)
    dataset_json = json.loads((folder / "dataset.json").read_text(encoding="utf-8"))
    labels = dataset_json["nnunet_mm"]["image_labels"]
    assert dataset_json["nnunet_mm"]["channel_acquisition"] == "co_registered"
    assert sorted(labels) == [f"{p}_z{z:03d}" for p in ("pat0003", "pat0005") for z in (0, 1, 2, 4, 5)]
    assert [labels[f"pat0005_z{z:03d}"] for z in (0, 1, 2, 4, 5)] == ["normal", "diseased", "diseased", "normal",
                                                                        "normal"]
    assert sorted(p.name for p in (folder / "imagesTs_diseased").iterdir()) == [
        "pat0001_z001_0000.nii.gz", "pat0001_z001_0001.nii.gz"]
    image = sitk.ReadImage(str(folder / "imagesTr" / "pat0005_z001_0000.nii.gz"))
    assert image.GetSize() == (64, 64, 1) and image.GetSpacing()[2] == bench_weak.BRATS_SLICE_SPACING
    assert sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "labelsTr" / "pat0005_z001.nii.gz"))).sum() > 0
    images = load_weak_images(folder, size=32)
    assert len(images) == 10 and all(i.slice_index is None and i.image.shape == (2, 32, 32) for i in images)
    assert sum(i.image_label == "diseased" for i in images) == 4


def test_dice_ratio_is_the_ratio_of_means_with_an_interval_around_it(bench_weak):
    rng = np.random.default_rng(1)
    baseline = rng.uniform(0.6, 0.9, 30)
    arm = baseline * 0.5 + rng.normal(0, 0.02, 30)
    ratio = bench_weak.dice_ratio(arm, baseline)
    assert ratio["ratio"] == pytest.approx(arm.mean() / baseline.mean(), abs=1e-4)
    assert ratio["ci_low"] < ratio["ratio"] < ratio["ci_high"] and ratio["num_cases"] == 30
    assert bench_weak.dice_ratio([0.5, np.nan], [0.0, 0.3])["ratio"] is None  # no case left with a defined pair


@pytest.mark.slow
def test_smoke_run_trains_every_arm_and_reports(tmp_path):
    env = {key: value for key, value in os.environ.items() if not key.startswith("nnUNet_")}
    env.pop("PYTHONIOENCODING", None)
    env.update(nnUNet_n_proc_DA="1", nnUNet_def_n_proc="1", OMP_NUM_THREADS="1",
               LC_ALL="C", LANG="C", PYTHONUTF8="0", PYTHONCOERCECLOCALE="0")  # an ASCII locale, as on CI
    done = subprocess.run([sys.executable, "bench/bench_weak.py", "--workdir", str(tmp_path), "--data", "skin",
                           "--seeds", "0", "--smoke"], cwd=REPO, env=env, capture_output=True, text=True,
                          encoding="utf-8", errors="replace", timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((tmp_path / "bench_weak.json").read_text(encoding="utf-8"))["datasets"]["skin"]
    assert set(report["summary"]["arms"]) == {"true_nnunet", "true_weak", "pseudo_nnunet", "pseudo_weak"}
    runs = {r["arm"]: r for r in report["runs"]}
    assert runs["pseudo_weak"]["refinements"] and not runs["true_weak"]["refinements"]
    assert (tmp_path / "skin" / "compare" / "compare.png").is_file()
    assert "| pseudo_weak |" in (tmp_path / "bench_weak.md").read_text(encoding="utf-8")
    assert report["stage_a"][0]["polarity"]["rule"] == "auto"
    assert 0.0 <= report["outlier_baseline"]["pseudo_mask_dice_mean"] <= 1.0
