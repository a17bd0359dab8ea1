"""make_label_fraction_dataset: a new raw dataset that keeps a fraction of the labels and unlabels the rest."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from nnunet_mm.cmc.label_fraction import HELDOUT_LABELS_DIR, make_label_fraction_dataset
from nnunet_mm.phantom import write_nnunet_raw
from nnunet_mm.cmc.unlabeled import unlabeled_cases


def _tree_digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _fake_dataset(folder: Path, modality_of: dict[str, str], **block: object) -> Path:
    """A raw dataset of empty two-channel files (enough for everything that only copies files)."""
    for sub in ("imagesTr", "labelsTr"):
        (folder / sub).mkdir(parents=True)
    for case in modality_of:
        for channel in (0, 1):
            (folder / "imagesTr" / f"{case}_{channel:04d}.nii.gz").write_bytes(case.encode())
        (folder / "labelsTr" / f"{case}.nii.gz").write_bytes(b"label " + case.encode())
    dataset_json = {"channel_names": {"0": "CT", "1": "CT"}, "labels": {"background": 0, "organ": 1},
                    "numTraining": len(modality_of), "file_ending": ".nii.gz", "name": folder.name,
                    "nnunet_mm": {"per_case_modality": modality_of, **block}}
    (folder / "dataset.json").write_text(json.dumps(dataset_json), encoding="utf-8")
    return folder


@pytest.fixture
def phantom_source(tmp_path, monkeypatch):
    monkeypatch.setenv("nnUNet_raw", str(tmp_path / "raw"))
    return write_nnunet_raw(tmp_path / "raw", dataset_id=520, num_training=4, num_test=1, shape_zyx=(12, 48, 48),
                            phases=("pv", "art"))


def test_keeps_the_fraction_labeled_and_moves_the_rest_to_imagesUnl(phantom_source, tmp_path):
    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity

    before = _tree_digest(phantom_source)
    target = make_label_fraction_dataset(520, 0.5, target_id=521, seed=3)

    assert target == tmp_path / "raw" / "Dataset521_MultiPhasePhantom_labeled50pct"
    assert _tree_digest(phantom_source) == before  # the source is only read
    labeled = sorted(p.name[:-len(".nii.gz")] for p in (target / "labelsTr").iterdir())
    assert len(labeled) == 2
    assert sorted(p.name for p in (target / "imagesTr").iterdir()) == [f"{c}_{x:04d}.nii.gz" for c in labeled
                                                                        for x in (0, 1)]
    dataset_json = json.loads((target / "dataset.json").read_text(encoding="utf-8"))
    assert dataset_json["numTraining"] == 2 and dataset_json["name"] == target.name
    assert dataset_json["nnunet_mm"]["unlabeled_dir"] == "imagesUnl"
    assert dataset_json["nnunet_mm"]["phase_names"] == ["pv", "art"]
    assert "label fraction 0.5 of Dataset520_MultiPhasePhantom (seed 3)" in dataset_json["nnunet_mm"]["notes"][-1]

    unlabeled = unlabeled_cases(target, dataset_json)
    assert sorted(unlabeled) == sorted({"phantom_000", "phantom_001", "phantom_002", "phantom_003"} - set(labeled))
    assert all([f.name for f in files] == [f"{case}_0000.nii.gz", f"{case}_0001.nii.gz"]
               for case, files in unlabeled.items())
    assert sorted(p.name for p in (target / HELDOUT_LABELS_DIR).iterdir()) == [f"{c}.nii.gz" for c in unlabeled]
    assert all(f.read_bytes() == (phantom_source / "imagesTr" / f.name).read_bytes()
               for files in unlabeled.values() for f in files)
    assert sorted(p.name for p in (target / "imagesTs").iterdir()) == ["phantom_004_0000.nii.gz",
                                                                       "phantom_004_0001.nii.gz"]

    splits = json.loads((target / "splits_final.json").read_text(encoding="utf-8"))
    assert len(splits) == 2
    assert all(sorted(fold["train"] + fold["val"]) == labeled for fold in splits)
    verify_dataset_integrity(str(target), num_processes=1)


def test_same_seed_gives_the_same_cases_and_overwrite_is_required_to_replace(phantom_source, tmp_path):
    first = make_label_fraction_dataset(520, 0.25, target_id=522, seed=1)
    chosen = sorted(p.name for p in (first / "labelsTr").iterdir())
    with pytest.raises(FileExistsError, match="overwrite"):
        make_label_fraction_dataset(520, 0.25, target_id=522, seed=1)
    again = make_label_fraction_dataset(520, 0.25, target_id=522, seed=1, overwrite=True)
    assert sorted(p.name for p in (again / "labelsTr").iterdir()) == chosen and len(chosen) == 1
    splits = json.loads((again / "splits_final.json").read_text(encoding="utf-8"))
    assert splits == [{"train": [chosen[0][:-7]], "val": [chosen[0][:-7]]}]  # one labeled case: one fold


def test_stratifies_by_per_case_modality_so_every_modality_keeps_labels(tmp_path):
    modality_of = {**{f"ct_{i}": "CT" for i in range(6)}, "mr_0": "MR", "mr_1": "MR"}
    source = _fake_dataset(tmp_path / "Dataset530_Unpaired", modality_of, phase_labels_dir="labelsTr_phases")
    (source / "labelsTr_phases").mkdir()
    for case in modality_of:
        (source / "labelsTr_phases" / f"{case}_0001.nii.gz").write_bytes(b"phase")
    target = make_label_fraction_dataset(source, 0.25, target_id=531, output_root=tmp_path / "out")

    labeled = sorted(p.name[:-len(".nii.gz")] for p in (target / "labelsTr").iterdir())
    assert len(labeled) == 2 and {modality_of[c] for c in labeled} == {"CT", "MR"}
    assert sorted(p.name for p in (target / "labelsTr_phases").iterdir()) == [f"{c}_0001.nii.gz" for c in labeled]
    block = json.loads((target / "dataset.json").read_text(encoding="utf-8"))["nnunet_mm"]
    assert block["per_case_modality"] == modality_of  # kept for every case, labeled or not


def test_fraction_that_keeps_every_case_labeled_or_is_out_of_range_is_refused(tmp_path):
    source = _fake_dataset(tmp_path / "Dataset540_Two", {"a": "CT", "b": "MR"})
    with pytest.raises(ValueError, match="keeps all 2 training case"):
        make_label_fraction_dataset(source, 0.1, target_id=541, output_root=tmp_path / "out")
    with pytest.raises(ValueError, match=r"fraction must be in \(0, 1\)"):
        make_label_fraction_dataset(source, 1.0, target_id=541, output_root=tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("declared", [True, False])
def test_source_that_already_has_unlabeled_cases_is_refused(tmp_path, declared):
    block = {"unlabeled_dir": "moreImages"} if declared else {}
    source = _fake_dataset(tmp_path / "Dataset550_Semi", {"a": "CT", "b": "CT", "c": "CT"}, **block)
    if not declared:  # without the key, imagesUnl is the unlabeled folder
        (source / "imagesUnl").mkdir()
        (source / "imagesUnl" / "u_0000.nii.gz").write_bytes(b"u")
    expected = r"sets 'unlabeled_dir': 'moreImages'" if declared else r"imagesUnl is not empty"
    with pytest.raises(ValueError, match=rf"Dataset550_Semi/dataset.json: the source already has unlabeled cases "
                                         rf"\(.*{expected}"):
        make_label_fraction_dataset(source, 0.5, target_id=551, output_root=tmp_path / "out")
    assert not (tmp_path / "out").exists()
