"""Unlabeled cases: declared in imagesUnl, preprocessed with the labeled plans into <data_identifier>_unlabeled."""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from nnunet_mm.phantom import write_nnunet_raw
from nnunet_mm.cmc.unlabeled import preprocess_unlabeled, unlabeled_cases, unlabeled_folder

DATASET_ID = 525
TWO_CHANNELS = {"channel_names": {"0": "CT", "1": "CT"}, "labels": {"background": 0, "organ": 1},
                "numTraining": 1, "file_ending": ".nii.gz", "nnunet_mm": {"phase_names": ["pv", "art"]}}


def _tree_digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _touch(folder: Path, *names: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(b"")


def _raw_with_unlabeled(root: Path) -> Path:
    """4 phantoms: 2 stay labeled, 2 lose their labels (imagesUnl), plus ``copy_000`` = phantom_000's images."""
    raw = write_nnunet_raw(root, dataset_id=DATASET_ID, num_training=4, num_test=0, shape_zyx=(12, 48, 48),
                           phases=("pv", "art"))
    unlabeled = raw / "imagesUnl"
    unlabeled.mkdir()
    for case in ("phantom_002", "phantom_003"):
        for channel in (0, 1):
            shutil.move(raw / "imagesTr" / f"{case}_{channel:04d}.nii.gz", unlabeled)
        (raw / "labelsTr" / f"{case}.nii.gz").unlink()
    for channel in (0, 1):
        shutil.copyfile(raw / "imagesTr" / f"phantom_000_{channel:04d}.nii.gz",
                        unlabeled / f"copy_000_{channel:04d}.nii.gz")
    dataset_json = json.loads((raw / "dataset.json").read_text(encoding="utf-8"))
    dataset_json["numTraining"] = 2
    (raw / "dataset.json").write_text(json.dumps(dataset_json), encoding="utf-8")
    return raw


@pytest.fixture(scope="module")
def planned(tmp_path_factory, quick_fingerprint):
    """The dataset planned and preprocessed (3d_fullres) by nnU-Net, once for this module."""
    from nnunetv2.experiment_planning.plan_and_preprocess_api import plan_experiments, preprocess

    root = tmp_path_factory.mktemp("unlabeled")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("nnUNet_raw", str(root / "raw"))
        patch.setenv("nnUNet_preprocessed", str(root / "pre"))
        patch.setenv("nnUNet_results", str(root / "res"))
        patch.setenv("nnUNet_n_proc_DA", "1")  # the planner needs >= 1
        raw = _raw_with_unlabeled(root / "raw")
        quick_fingerprint(DATASET_ID)
        plan_experiments([DATASET_ID])
        preprocess([DATASET_ID], configurations=("3d_fullres",), num_processes=(1,))
        yield raw, root / "pre" / raw.name


def test_preprocessed_unlabeled_cases_load_and_batch_like_labeled_ones(planned):
    from nnunetv2.training.dataloading.data_loader import nnUNetDataLoader
    from nnunetv2.training.dataloading.nnunet_dataset import nnUNetDatasetBlosc2
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    raw, preprocessed = planned
    labeled_folder = preprocessed / "nnUNetPlans_3d_fullres"
    labeled_before = _tree_digest(labeled_folder)

    folder = preprocess_unlabeled(DATASET_ID, "3d_fullres", num_processes=1)

    assert folder == unlabeled_folder(preprocessed, "nnUNetPlans_3d_fullres")
    assert _tree_digest(labeled_folder) == labeled_before  # nothing written into the labeled folder
    unlabeled = nnUNetDatasetBlosc2(str(folder))
    assert sorted(unlabeled.identifiers) == ["copy_000", "phantom_002", "phantom_003"]
    data, seg, _, properties = unlabeled.load_case("copy_000")
    assert properties["class_locations"] == {}
    assert set(np.unique(np.asarray(seg))) <= {-1, 0}  # the nonzero mask, no label
    labeled_data, _, _, _ = nnUNetDatasetBlosc2(str(labeled_folder)).load_case("phantom_000")
    np.testing.assert_allclose(np.asarray(data), np.asarray(labeled_data))  # same crop, normalisation, resampling

    plans_manager = PlansManager(str(preprocessed / "nnUNetPlans.json"))
    configuration = plans_manager.get_configuration("3d_fullres")
    dataset_json = json.loads((raw / "dataset.json").read_text(encoding="utf-8"))
    patch_size = configuration.patch_size
    loader = nnUNetDataLoader(unlabeled, 2, patch_size, patch_size, plans_manager.get_label_manager(dataset_json),
                              oversample_foreground_percent=0.0)
    batch = next(loader)
    assert tuple(batch["data"].shape) == (2, 2, *patch_size)
    assert np.isfinite(np.asarray(batch["data"])).all()


def test_preprocess_unlabeled_names_missing_plans_and_unknown_configuration(planned):
    with pytest.raises(ValueError, match=r"no configuration '3d_lowres_x'.*3d_fullres"):
        preprocess_unlabeled(DATASET_ID, "3d_lowres_x")
    with pytest.raises(FileNotFoundError, match=r"nnUNetPlansX\.json: no plans; run nnUNetv2_plan_and_preprocess"):
        preprocess_unlabeled(DATASET_ID, "3d_fullres", plans_identifier="nnUNetPlansX")


def test_missing_imagesUnl_gives_a_clear_error_naming_the_folder_and_the_key(tmp_path):
    _touch(tmp_path / "imagesTr", "a_0000.nii.gz", "a_0001.nii.gz")
    with pytest.raises(FileNotFoundError, match=r"imagesUnl: unlabeled image folder not found; put the unlabeled "
                                                r"images there .*'unlabeled_dir'"):
        unlabeled_cases(tmp_path, TWO_CHANNELS)
    declared = {**TWO_CHANNELS, "nnunet_mm": {"unlabeled_dir": "imagesExtra"}}
    with pytest.raises(FileNotFoundError, match=r"imagesExtra: unlabeled image folder not found; it is declared"):
        unlabeled_cases(tmp_path, declared)
    (tmp_path / "imagesExtra").mkdir()
    with pytest.raises(ValueError, match=r"imagesExtra: no unlabeled images"):
        unlabeled_cases(tmp_path, declared)
    _write_images(tmp_path / "imagesExtra", "u_0000.nii.gz", "u_0001.nii.gz")
    assert unlabeled_cases(tmp_path, declared) == {"u": [tmp_path / "imagesExtra" / "u_0000.nii.gz",
                                                         tmp_path / "imagesExtra" / "u_0001.nii.gz"]}


def _write_images(folder, *names: str) -> None:
    import numpy as np
    import SimpleITK as sitk

    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        sitk.WriteImage(sitk.GetImageFromArray(np.full((4, 8, 8), 40.0, np.float32)), str(folder / name))


def test_cut_or_nan_unlabeled_files_are_refused_each_named(tmp_path):
    """nnU-Net's preprocessor would read a cut file as zeros (and exit 0): every bad file is named first."""
    import numpy as np
    import SimpleITK as sitk

    _write_images(tmp_path / "imagesUnl", "u1_0000.nii.gz", "u1_0001.nii.gz", "u2_0000.nii.gz", "u2_0001.nii.gz")
    assert set(unlabeled_cases(tmp_path, TWO_CHANNELS)) == {"u1", "u2"}
    cut = tmp_path / "imagesUnl" / "u1_0001.nii.gz"
    cut.write_bytes(cut.read_bytes()[: len(cut.read_bytes()) // 2])
    with_nan = np.full((4, 8, 8), 40.0, np.float32)
    with_nan[1, 2, 3] = np.inf
    sitk.WriteImage(sitk.GetImageFromArray(with_nan), str(tmp_path / "imagesUnl" / "u2_0000.nii.gz"))
    with pytest.raises(ValueError, match="2 unlabeled image file") as error:
        unlabeled_cases(tmp_path, TWO_CHANNELS)
    assert f"{cut}: incomplete or corrupt file" in str(error.value)
    assert "u2_0000.nii.gz: contains 1 NaN/inf voxels" in str(error.value)


def test_missing_channel_and_misnamed_file_are_named(tmp_path):
    _touch(tmp_path / "imagesUnl", "u1_0000.nii.gz", "u1_0001.nii.gz", "u2_0000.nii.gz", "u3.nii", "u4_0002.nii.gz")
    with pytest.raises(ValueError) as error:
        unlabeled_cases(tmp_path, TWO_CHANNELS)
    message = str(error.value)
    assert "u2_0001.nii.gz: missing channel 1 (art) of case 'u2'" in message
    assert "u3.nii: not an image named CASE_XXXX.nii.gz" in message
    assert "u4_0002.nii.gz: channel 2, but dataset.json has 2 channel(s)" in message


def test_unlabeled_id_that_is_also_a_labeled_case_names_both_files(tmp_path):
    _touch(tmp_path / "imagesTr", "a_0000.nii.gz", "a_0001.nii.gz")
    _touch(tmp_path / "imagesUnl", "a_0000.nii.gz", "a_0001.nii.gz", "b_0000.nii.gz", "b_0001.nii.gz")
    with pytest.raises(ValueError, match="also labeled training cases") as error:
        unlabeled_cases(tmp_path, TWO_CHANNELS)
    both_files = f"{tmp_path / 'imagesUnl' / 'a_0000.nii.gz'} and {tmp_path / 'imagesTr' / 'a_0000.nii.gz'}"
    assert both_files in str(error.value)
