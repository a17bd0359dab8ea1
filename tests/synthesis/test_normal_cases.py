"""Normal cases: a bright tumour is inpainted away in every phase, nothing outside the removal mask changes, the
source dataset is never touched, and the CLI trains an inpainter and writes the new dataset."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_mm.synthesis.masks import removal_mask
from nnunet_mm.synthesis.model_data import liver_slices
from nnunet_mm.synthesis.normal_cases import make_normal_dataset
from figure_checks import capture_saved_figures, figure_texts

SHAPE = (6, 32, 32)
LIVER_HU = (100, 60)  # per phase
TUMOUR_HU = (230, 10)  # bright in phase 0, dark in phase 1


def _write_raw_dataset(folder: Path, num_cases: int = 2) -> Path:
    """A tiny 2-phase CT raw dataset: body -100 HU, liver disc, a tumour blob in slices 2-3 (labels 1 liver, 2 tumour)."""
    (folder / "imagesTr").mkdir(parents=True)
    (folder / "labelsTr").mkdir()
    z, y, x = np.meshgrid(*[np.arange(n) for n in SHAPE], indexing="ij")
    for case in range(num_cases):
        rng = np.random.default_rng(case)
        liver = (y - 16) ** 2 + (x - 16) ** 2 <= 11 ** 2
        tumour = (z >= 2) & (z <= 3) & ((y - 14 - case) ** 2 + (x - 15) ** 2 <= 3 ** 2)
        label = np.where(tumour, 2, np.where(liver, 1, 0)).astype(np.uint8)
        for phase in range(2):
            image = np.where(liver, LIVER_HU[phase], -100) + np.where(tumour, TUMOUR_HU[phase] - LIVER_HU[phase], 0)
            image = (image + rng.normal(0, 3, SHAPE)).astype(np.int16)
            itk = sitk.GetImageFromArray(image)
            itk.SetSpacing((1.5, 1.5, 3.0))
            sitk.WriteImage(itk, str(folder / "imagesTr" / f"liver_{case:03d}_{phase:04d}.nii.gz"))
        itk = sitk.GetImageFromArray(label)
        itk.SetSpacing((1.5, 1.5, 3.0))
        sitk.WriteImage(itk, str(folder / "labelsTr" / f"liver_{case:03d}.nii.gz"))
    (folder / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "CT", "1": "CT"}, "labels": {"background": 0, "liver": 1, "tumor": 2},
        "numTraining": num_cases, "file_ending": ".nii.gz", "name": folder.name}), encoding="utf-8")
    return folder


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _array(path: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def test_median_normal_cases_remove_the_tumour_and_leave_everything_else(tmp_path, monkeypatch):
    figures = capture_saved_figures(monkeypatch)
    source = _write_raw_dataset(tmp_path / "Dataset901_Liver")
    before = _digest(source)
    result = make_normal_dataset(source, tmp_path / "Dataset902_LiverNormal", method="median", progress=False)
    assert _digest(source) == before  # the input is never modified
    target = result.folder
    assert set(result.normal_cases) == {"liver_000_normal", "liver_001_normal"}
    label = _array(source / "labelsTr" / "liver_000.nii.gz")
    tumour = label == 2
    hole = removal_mask(tumour)
    for phase in range(2):
        original = _array(source / "imagesTr" / f"liver_000_{phase:04d}.nii.gz")
        normal = _array(target / "imagesTr" / f"liver_000_normal_{phase:04d}.nii.gz")
        assert np.array_equal(normal[~hole], original[~hole])  # bit-identical outside the removal mask
        liver_around = original[(label == 1) & ~hole].mean()
        # the inpainted tumour is much closer to the surrounding liver than the tumour was
        assert abs(normal[tumour].mean() - liver_around) < 0.2 * abs(original[tumour].mean() - liver_around)
    normal_label = _array(target / "labelsTr" / "liver_000_normal.nii.gz")
    assert not (normal_label == 2).any() and (normal_label[tumour] == 1).all()
    assert np.array_equal(_array(target / "imagesTr" / "liver_000_0000.nii.gz"),
                          _array(source / "imagesTr" / "liver_000_0000.nii.gz"))  # originals copied unchanged
    dataset_json = json.loads((target / "dataset.json").read_text(encoding="utf-8"))
    assert dataset_json["numTraining"] == 4
    record = json.loads((target / "normal_cases.json").read_text(encoding="utf-8"))
    assert record["method"] == "median" and record["cases"]["liver_000_normal"]["source"] == "liver_000"
    assert (target / "normal_cases.png").stat().st_size > 5000
    splits = json.loads((target / "splits_final.json").read_text(encoding="utf-8"))  # each twin in its original's fold
    assert sorted((fold["train"], fold["val"]) for fold in splits) == [
        (["liver_000", "liver_000_normal"], ["liver_001", "liver_001_normal"]),
        (["liver_001", "liver_001_normal"], ["liver_000", "liver_000_normal"])]
    texts = figure_texts(figures[0])
    assert texts[0].startswith("normal cases (median inpainting)")
    z = int(np.argmax(tumour.reshape(tumour.shape[0], -1).sum(1)))
    assert f"liver_000 z{z}\nch1 CT normal" in texts  # case, slice and channel of every panel
    with pytest.raises(FileExistsError, match="overwrite"):
        make_normal_dataset(source, target, method="median", progress=False)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging folder left behind


def test_a_source_split_is_extended_with_each_twin_in_its_originals_fold(tmp_path):
    source = _write_raw_dataset(tmp_path / "Dataset901_Liver", num_cases=3)
    shipped = [{"train": ["liver_000", "liver_001"], "val": ["liver_002"]},
               {"train": ["liver_002"], "val": ["liver_000", "liver_001"]}]
    (source / "splits_final.json").write_text(json.dumps(shipped), encoding="utf-8")
    target = make_normal_dataset(source, tmp_path / "Dataset902_LiverNormal", method="median", progress=False).folder
    assert json.loads((target / "splits_final.json").read_text(encoding="utf-8")) == [
        {"train": ["liver_000", "liver_000_normal", "liver_001", "liver_001_normal"],
         "val": ["liver_002", "liver_002_normal"]},
        {"train": ["liver_002", "liver_002_normal"],
         "val": ["liver_000", "liver_000_normal", "liver_001", "liver_001_normal"]}]
    only_twins = make_normal_dataset(source, tmp_path / "Dataset903_Normal", method="median", progress=False,
                                     include_originals=False).folder
    assert json.loads((only_twins / "splits_final.json").read_text(encoding="utf-8")) == [
        {"train": ["liver_000_normal", "liver_001_normal"], "val": ["liver_002_normal"]},
        {"train": ["liver_002_normal"], "val": ["liver_000_normal", "liver_001_normal"]}]


def test_ffc_needs_a_model_and_bad_labels_name_the_file(tmp_path):
    source = _write_raw_dataset(tmp_path / "Dataset901_Liver", num_cases=1)
    with pytest.raises(ValueError, match="model folder"):
        make_normal_dataset(source, tmp_path / "out", method="ffc", progress=False)
    with pytest.raises(FileNotFoundError, match="train"):
        make_normal_dataset(source, tmp_path / "out", method="ffc", model_folder=tmp_path / "none", progress=False)
    (source / "labelsTr" / "liver_000.nii.gz").write_bytes(b"not an image")
    with pytest.raises(ValueError, match="liver_000.nii.gz"):
        make_normal_dataset(source, tmp_path / "out2", method="median", progress=False)
    assert not (tmp_path / "out2").exists()


def test_liver_slices_hold_out_tumour_slices(tmp_path):
    source = _write_raw_dataset(tmp_path / "Dataset901_Liver")
    slices = liver_slices(source, patch_size=32, liver_label=1, tumour_label=2, progress=False)
    assert slices.images.shape[1:] == (32, 32) and slices.images.min() >= 0 and slices.images.max() <= 1
    used_z = {int(s.split("/")[2]) for s in slices.sources}
    assert used_z == {0, 1, 4, 5}  # slices 2-3 hold tumour
    assert len(slices.images) == 2 * 2 * 4  # cases x phases x slices


def test_cli_trains_the_inpainter_and_makes_normal_cases(tmp_path, monkeypatch, capsys):
    from nnunet_mm.cli.main import main

    raw = tmp_path / "raw"
    source = _write_raw_dataset(raw / "Dataset901_Liver")
    monkeypatch.setenv("nnUNet_raw", str(raw))
    monkeypatch.setenv("nnUNet_preprocessed", str(tmp_path / "preprocessed"))
    monkeypatch.setenv("nnUNet_results", str(tmp_path / "results"))
    before = _digest(source)
    assert main(["make-normal", "-d", "901", "--target-id", "902"]) == 1
    assert "inpainter" in capsys.readouterr().err  # no trained inpainter yet: says which folder is missing
    assert main(["train-inpainter", "-d", "901", "--steps", "2", "--patch-size", "32", "--base-channels", "8",
                 "--blocks", "1", "--batch-size", "2", "-device", "cpu"]) == 0
    model = tmp_path / "preprocessed" / "Dataset901_Liver" / "nnunet_mm_synthesis" / "inpainter"
    assert (model / "inpainter.safetensors").is_file()
    assert main(["make-normal", "-d", "901", "--target-id", "902", "--no-originals", "-device", "cpu"]) == 0
    target = raw / "Dataset902_Liver_normal"
    assert sorted(p.name for p in (target / "labelsTr").iterdir()) == ["liver_000_normal.nii.gz",
                                                                       "liver_001_normal.nii.gz"]
    assert main(["make-normal", "-d", "901", "--target-id", "902", "--inpainter", "median"]) == 1
    assert "--overwrite" in capsys.readouterr().err
    assert main(["make-normal", "-d", "901", "--target-id", "902", "--inpainter", "median", "--overwrite"]) == 0
    assert json.loads((target / "normal_cases.json").read_text(encoding="utf-8"))["method"] == "median"
    assert _digest(source) == before
