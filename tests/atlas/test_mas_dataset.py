"""``build_mas_dataset``: prior channels line up with the images, cache, refusal to overwrite, clear errors."""
import hashlib
import json
from pathlib import Path

import pytest
import SimpleITK as sitk

from nnunet_mm.atlas.mas import MASSettings, SimpleITKRegistration, build_mas_dataset
from nnunet_mm.io.splits import cross_validation_splits
from nnunet_mm.atlas.phantom_pairs import write_cross_modality_datasets
from nnunet_mm.atlas.prior_channels import prior_channel_indices
from nnunet_mm.atlas.registration import RegistrationSettings
from nnunet_mm.atlas.settings import MASPriorRecipe
from nnunet_mm.settings import read_settings

FAST = SimpleITKRegistration(RegistrationSettings(stages=("rigid", "affine"), iterations=30, shrink_factors=(2, 1)))


def _tree_digest(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    root = tmp_path_factory.mktemp("raw")
    atlas, target = write_cross_modality_datasets(root, atlas_id=701, target_id=702, num_atlases=2,
                                                  num_target_training=2, num_target_test=1,
                                                  shape_zyx=(12, 32, 32), spacing_zyx_mm=(4.0, 3.0, 3.0), seed=5)
    return root, atlas, target


def test_prior_channels_line_up_with_the_images(datasets, tmp_path):
    root, atlas, target = datasets
    before = _tree_digest(target)
    out = build_mas_dataset(target, atlas, output_id=703, settings=MASSettings(num_atlases=2), backend=FAST,
                            output_root=tmp_path, cache_dir=tmp_path / "cache", show_progress=False)
    assert _tree_digest(target) == before  # the input is only read
    dataset_json = json.loads((out / "dataset.json").read_text(encoding="utf-8"))
    # one prior channel: the liver, which every atlas labels; no tumour channel (a lesion: an atlas's tumour says
    # nothing about where the target's is) unless asked for
    assert dataset_json["channel_names"] == {"0": "MR", "1": "noNorm"}
    assert dataset_json["nnunet_mm"]["modalities"] == {"0": "MR", "1": "atlas_prior:liver"}
    assert prior_channel_indices(read_settings(dataset_json), dataset_json["channel_names"]) == [1]
    recipe = read_settings(dataset_json).method("mas_priors")
    assert recipe.prior_classes == {"liver": 1} and recipe.num_atlases == 2 and recipe.fusion == "majority"
    assert recipe.atlas_dataset == str(atlas.resolve()) and recipe.registration["stages"] == ["rigid", "affine"]
    assert dataset_json["nnunet_mm"]["channel_acquisition"] == "co_registered"  # priors lie on the image's grid
    for split, case in (("Tr", "target_000"), ("Tr", "target_001"), ("Ts", "target_002")):
        image = sitk.ReadImage(str(out / f"images{split}" / f"{case}_0000.nii.gz"))
        label = sitk.GetArrayFromImage(sitk.ReadImage(str(target / f"labels{split}" / f"{case}.nii.gz")))
        assert not (out / f"images{split}" / f"{case}_0002.nii.gz").exists()
        priors = [sitk.ReadImage(str(out / f"images{split}" / f"{case}_0001.nii.gz"))]
        for prior in priors:
            assert prior.GetSize() == image.GetSize() and prior.GetSpacing() == image.GetSpacing()
            assert prior.GetOrigin() == image.GetOrigin() and prior.GetDirection() == image.GetDirection()
        liver_prior = sitk.GetArrayFromImage(priors[0])
        assert 0.0 <= liver_prior.min() and liver_prior.max() <= 1.0 + 1e-5
        # the prior lies where the target's own liver is (registered), not somewhere else
        assert liver_prior[label > 0].mean() > 2.5 * liver_prior[label == 0].mean()
    assert (out / "labelsTr" / "target_000.nii.gz").is_file() and (out / "labelsTs" / "target_002.nii.gz").is_file()
    assert (out / "nnunet_mm_qa" / "target_002.png").stat().st_size > 10_000
    summary = json.loads((out / "nnunet_mm_qa" / "mas_summary.json").read_text(encoding="utf-8"))
    assert summary["cases"]["target_000"]["fused_dice"]["1"] > 0.5
    assert summary["cache_hits"] == 0  # every target registered to both atlases, each pair timed:
    assert [len(case["seconds_per_pair"]) for case in summary["cases"].values()] == [2, 2, 2]

    with pytest.raises(FileExistsError, match="--overwrite"):
        build_mas_dataset(target, atlas, output_id=703, backend=FAST, output_root=tmp_path, show_progress=False)
    again = build_mas_dataset(target, atlas, output_id=703, settings=MASSettings(num_atlases=2, fusion="staple"),
                              backend=FAST, output_root=tmp_path, cache_dir=tmp_path / "cache", overwrite=True,
                              prior_classes=["tumor", "liver"], show_progress=False)
    summary = json.loads((again / "nnunet_mm_qa" / "mas_summary.json").read_text(encoding="utf-8"))
    assert summary["cache_hits"] == 6  # 3 targets × 2 atlases, nothing registered twice
    dataset_json = json.loads((again / "dataset.json").read_text(encoding="utf-8"))  # asked for: the tumour channel too, in label order
    assert dataset_json["channel_names"] == {"0": "MR", "1": "noNorm", "2": "noNorm"}
    assert dataset_json["nnunet_mm"]["modalities"] == {"0": "MR", "1": "atlas_prior:liver", "2": "atlas_prior:tumor"}
    with pytest.raises(ValueError, match=r"--prior-classes kidney: \['kidney'\] not among the foreground classes "
                                         r"\['liver', 'tumor'\]"):
        build_mas_dataset(target, atlas, output_id=703, backend=FAST, output_root=tmp_path, overwrite=True,
                          prior_classes=["kidney"], show_progress=False)


def test_two_training_targets_get_a_two_fold_split_and_the_atlases_used_are_recorded(datasets, tmp_path):
    root, atlas, target = datasets
    out = build_mas_dataset(target, atlas, output_id=708, backend=FAST, output_root=tmp_path,
                            cache_dir=tmp_path / "cache", show_progress=False)  # K not given: every atlas (2 < 5)
    splits = json.loads((out / "splits_final.json").read_text(encoding="utf-8"))
    assert len(splits) == 2  # nnU-Net's default 5-fold split would fail on 2 cases
    assert sorted((fold["train"], fold["val"]) for fold in splits) == [(["target_000"], ["target_001"]),
                                                                     (["target_001"], ["target_000"])]
    assert json.loads((out / "dataset.json").read_text(encoding="utf-8"))["nnunet_mm"]["registration"]["num_atlases"] == 2
    summary = json.loads((out / "nnunet_mm_qa" / "mas_summary.json").read_text(encoding="utf-8"))
    assert summary["settings"]["num_atlases"] == 2


def test_more_atlases_than_the_atlas_dataset_has_are_refused_before_registering(datasets, tmp_path):
    root, atlas, target = datasets
    with pytest.raises(ValueError, match=r"num_atlases \(-k\) 3: .* has 2 atlas case\(s\) .*pass -k 2 or fewer"):
        build_mas_dataset(target, atlas, output_id=709, settings=MASSettings(num_atlases=3), backend=FAST,
                          output_root=tmp_path, cache_dir=tmp_path / "cache", show_progress=False)
    assert list(tmp_path.iterdir()) == []  # no dataset, no cache: nothing was registered


def test_an_atlas_dataset_that_is_the_target_never_counts_a_case_as_its_own_atlas(datasets, tmp_path):
    root, atlas, target = datasets
    with pytest.raises(ValueError, match=r"has 1 atlas case\(s\) other than the case itself"):
        build_mas_dataset(atlas, atlas, output_id=709, settings=MASSettings(num_atlases=2), backend=FAST,
                          output_root=tmp_path, show_progress=False)


@pytest.mark.parametrize("num_cases, num_folds", [(1, 1), (2, 2), (4, 4), (5, 5), (9, 5)])
def test_splits_validate_every_case_once_with_at_most_five_folds(num_cases, num_folds):
    cases = [f"case_{i:03d}" for i in range(num_cases)]
    splits = cross_validation_splits(cases)
    assert len(splits) == num_folds
    if num_cases > 1:
        assert sorted(c for fold in splits for c in fold["val"]) == cases
        assert all(set(fold["train"]).isdisjoint(fold["val"]) for fold in splits)
    else:
        assert splits == [{"train": cases, "val": cases}]


def test_five_or_more_cases_get_nnunets_own_split():
    from nnunetv2.utilities.crossval_split import generate_crossval_split

    cases = [f"case_{i:03d}" for i in range(7)]
    expected = generate_crossval_split(cases, seed=12345, n_splits=5)
    assert cross_validation_splits(list(reversed(cases))) == [
        {"train": list(fold["train"]), "val": list(fold["val"])} for fold in expected]


def test_missing_atlas_label_is_named(datasets, tmp_path):
    root, atlas, target = datasets
    broken = tmp_path / "Dataset704_Broken"
    (broken / "imagesTr").mkdir(parents=True)
    (broken / "labelsTr").mkdir()
    (broken / "dataset.json").write_text((atlas / "dataset.json").read_text(encoding="utf-8"), encoding="utf-8")
    for path in (atlas / "imagesTr").iterdir():
        (broken / "imagesTr" / path.name).write_bytes(path.read_bytes())
    with pytest.raises(FileNotFoundError, match="atlas_000.nii.gz"):
        build_mas_dataset(target, broken, output_id=705, backend=FAST, output_root=tmp_path, show_progress=False)
    assert not (tmp_path / "Dataset705_PhantomMRTarget_MASPrior").exists()


def test_label_maps_must_match(datasets, tmp_path):
    root, atlas, target = datasets
    other = tmp_path / "Dataset706_Other"
    other.mkdir()
    dataset_json = json.loads((atlas / "dataset.json").read_text(encoding="utf-8"))
    dataset_json["labels"] = {"background": 0, "organ": 1}
    (other / "dataset.json").write_text(json.dumps(dataset_json), encoding="utf-8")
    with pytest.raises(ValueError, match="share one label map"):
        build_mas_dataset(target, other, output_id=707, backend=FAST, output_root=tmp_path, show_progress=False)


def _prior_channels(channel_names: dict, modalities: dict) -> list[int]:
    dataset_json = {"channel_names": channel_names, "nnunet_mm": {"modalities": modalities}}
    return prior_channel_indices(read_settings(dataset_json, "Dataset9/dataset.json"), channel_names)


def test_prior_channels_must_be_named_nonorm():
    with pytest.raises(ValueError, match=r"Dataset9/dataset.json: channel 1 is an atlas prior but is named 'MR'"
                                         r".*'noNorm'"):
        _prior_channels({"0": "MR", "1": "MR"}, {"1": "atlas_prior:liver"})
    with pytest.raises(ValueError, match=r"Dataset9/dataset.json: prior channels \[0\] must be the last"):
        _prior_channels({"0": "noNorm", "1": "MR"}, {"0": "atlas_prior:liver"})
    assert _prior_channels({"0": "MR", "1": "NONORM"}, {"0": "MR", "1": "atlas_prior:liver"}) == [1]
    assert _prior_channels({"0": "MR"}, {}) == []


@pytest.mark.parametrize("target_block, num_images, expected", [
    ({}, 1, "co_registered"),  # image + priors on its grid
    ({"channel_acquisition": "separate"}, 1, "co_registered"),
    ({"channel_acquisition": "separate"}, 2, "separate"),  # about the target's images, which the trainer augments
    ({"channel_acquisition": "co_registered"}, 2, "co_registered"),
    ({}, 2, None),  # the target declares nothing: neither does the MAS dataset
])
def test_the_mas_dataset_declares_the_targets_channel_acquisition_or_co_registered_for_one_image(
        target_block, num_images, expected, tmp_path):
    from types import SimpleNamespace

    from nnunet_mm.atlas.mas import _output_dataset_json

    target_json = {"channel_names": {str(c): "CT" for c in range(num_images)},
                   "labels": {"background": 0, "liver": 1}, "numTraining": 1, "file_ending": ".nii.gz",
                   "nnunet_mm": target_block}
    target = SimpleNamespace(dataset_json=target_json, num_channels=num_images, folder=tmp_path / "target",
                             file_ending=".nii.gz")
    recipe = MASPriorRecipe(atlas_dataset=str(tmp_path / "atlases"), atlas_channel=0, atlas_files={},
                            target_channel=0, num_atlases=1, fusion="majority", local_sigma_voxels=2.0,
                            local_power=2.0, num_classes=2, prior_classes={"liver": 1},
                            registration=FAST.cache_key())
    written = _output_dataset_json(target, read_settings(target_json), recipe, "MAS")
    assert written["nnunet_mm"].get("channel_acquisition") == expected
    read_settings(written)  # valid
