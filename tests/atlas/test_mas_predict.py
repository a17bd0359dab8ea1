"""Priors for new cases (:mod:`nnunet_mm.atlas.predict`): the same priors as building the case into the dataset,
from the recipe the dataset.json records; reused on the next run; moved or changed atlases refused."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_mm.atlas import mas as mas_module
from nnunet_mm.atlas.mas import MASSettings, SimpleITKRegistration, build_mas_dataset
from nnunet_mm.atlas.phantom_pairs import write_cross_modality_datasets
from nnunet_mm.atlas.predict import PRIORS_DIR, PRIORS_RECORD, prepare_atlas_priors
from nnunet_mm.atlas.registration import RegistrationSettings

# not the default settings: a prediction path that ignored the recorded ones would give other priors
RECORDED = SimpleITKRegistration(RegistrationSettings(stages=("rigid", "affine"), iterations=25, shrink_factors=(2, 1),
                                                      sampling_percentage=0.5, seed=7, num_threads=1))


@pytest.fixture(scope="module")
def mas_dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("mas_predict")
    atlas, target = write_cross_modality_datasets(root / "raw", atlas_id=731, target_id=732, num_atlases=3,
                                                  num_target_training=1, num_target_test=1, shape_zyx=(10, 32, 32),
                                                  spacing_zyx_mm=(4.0, 3.0, 3.0), seed=4)
    out = build_mas_dataset(target, atlas, output_id=733, settings=MASSettings(num_atlases=2, fusion="local"),
                            backend=RECORDED, output_root=root / "raw", cache_dir=root / "cache",
                            show_progress=False)
    return root, atlas, target, out


def _new_case_folder(tmp_path, target, name="newpatient"):
    """A folder in nnU-Net naming holding only the image channel of the target's test case, under a new name."""
    folder = tmp_path / "input"
    folder.mkdir(exist_ok=True)
    shutil.copyfile(target / "imagesTs" / "target_001_0000.nii.gz", folder / f"{name}_0000.nii.gz")
    return {name: {0: folder / f"{name}_0000.nii.gz"}}


def test_a_new_case_gets_the_priors_building_it_into_the_dataset_gave(mas_dataset, tmp_path, monkeypatch):
    root, atlas, target, out = mas_dataset
    dataset_json = json.loads((out / "dataset.json").read_text(encoding="utf-8"))
    cases = _new_case_folder(tmp_path, target)
    sources = prepare_atlas_priors(dataset_json, "model/dataset.json", cases, prior_channels=[1],
                                   output_folder=tmp_path / "out", show_progress=False)
    assert sources == {"newpatient": "atlas"}
    new_prior = sitk.ReadImage(str(tmp_path / "out" / PRIORS_DIR / "newpatient_0001.nii.gz"))
    built_prior = sitk.ReadImage(str(out / "imagesTs" / "target_001_0001.nii.gz"))
    assert cases["newpatient"][1] == tmp_path / "out" / PRIORS_DIR / "newpatient_0001.nii.gz"
    for get in ("GetSize", "GetSpacing", "GetOrigin", "GetDirection"):
        assert getattr(new_prior, get)() == getattr(built_prior, get)()
    np.testing.assert_allclose(sitk.GetArrayFromImage(new_prior), sitk.GetArrayFromImage(built_prior), atol=1e-5)
    assert sitk.GetArrayFromImage(new_prior).max() > 0.5  # a real prior, not an empty channel
    assert (tmp_path / "out" / PRIORS_DIR / "qa" / "newpatient.png").stat().st_size > 10_000
    record = json.loads((tmp_path / "out" / PRIORS_DIR / PRIORS_RECORD).read_text(encoding="utf-8"))
    assert record["newpatient"]["atlases"] == ["atlas_000", "atlas_002"]  # K = 2, as recorded

    # the next run reuses the priors: nothing is registered
    def no_registration(*args, **kwargs):
        raise AssertionError("registered again")

    monkeypatch.setattr(mas_module, "make_case_priors", no_registration)
    again = _new_case_folder(tmp_path, target)
    assert prepare_atlas_priors(dataset_json, "model/dataset.json", again, prior_channels=[1],
                                output_folder=tmp_path / "out", show_progress=False) == {"newpatient": "cached"}
    assert again["newpatient"][1] == cases["newpatient"][1]
    monkeypatch.undo()
    # another recipe (fusion), or another image under the same name: registered again, never an old prior
    other_recipe = json.loads(json.dumps(dataset_json))
    other_recipe["nnunet_mm"]["mas_priors"]["fusion"] = "majority"
    assert prepare_atlas_priors(other_recipe, "model/dataset.json", _new_case_folder(tmp_path, target),
                                prior_channels=[1], output_folder=tmp_path / "out", show_progress=False) == {
        "newpatient": "atlas"}
    other_image = _new_case_folder(tmp_path, target)
    shutil.copyfile(target / "imagesTr" / "target_000_0000.nii.gz", other_image["newpatient"][0])
    assert prepare_atlas_priors(other_recipe, "model/dataset.json", other_image, prior_channels=[1],
                                output_folder=tmp_path / "out", show_progress=False) == {"newpatient": "atlas"}
    # zeros: no registration, no prior file; given prior files are used as they are
    assert prepare_atlas_priors(dataset_json, "m", _new_case_folder(tmp_path, target, "other"), prior_channels=[1],
                                output_folder=tmp_path / "out2", mode="zeros") == {"other": "zeros"}
    given = {"g": {0: cases["newpatient"][0], 1: cases["newpatient"][1]}}
    assert prepare_atlas_priors(dataset_json, "m", given, prior_channels=[1], output_folder=tmp_path / "out3") == {
        "g": "given"}


def test_moved_or_changed_atlases_are_refused_naming_the_file(mas_dataset, tmp_path):
    root, atlas, target, out = mas_dataset
    dataset_json = json.loads((out / "dataset.json").read_text(encoding="utf-8"))
    moved = tmp_path / "moved_atlases"
    shutil.copytree(atlas, moved)
    dataset_json["nnunet_mm"]["mas_priors"]["atlas_dataset"] = str(tmp_path / "gone")
    with pytest.raises(FileNotFoundError, match=r"gone/imagesTr/atlas_000_0000.nii.gz: atlas image of 'atlas_000' "
                                                r"not found; model/dataset.json records .*pass its new folder with "
                                                r"--atlas"):
        prepare_atlas_priors(dataset_json, "model/dataset.json", _new_case_folder(tmp_path, target),
                             prior_channels=[1], output_folder=tmp_path / "out", show_progress=False)
    label = moved / "labelsTr" / "atlas_002.nii.gz"
    array = sitk.GetArrayFromImage(sitk.ReadImage(str(label)))
    changed = sitk.GetImageFromArray(np.roll(array, 3, axis=2))
    changed.CopyInformation(sitk.ReadImage(str(label)))
    sitk.WriteImage(changed, str(label))
    with pytest.raises(ValueError, match=r"moved_atlases/labelsTr/atlas_002.nii.gz: atlas label of 'atlas_002' "
                                         r"differs from the file"):
        prepare_atlas_priors(dataset_json, "model/dataset.json", _new_case_folder(tmp_path, target),
                             prior_channels=[1], output_folder=tmp_path / "out", atlas_dataset=moved,
                             show_progress=False)


def test_a_model_without_a_recipe_is_refused_unless_priors_are_given_or_zero(mas_dataset, tmp_path):
    root, atlas, target, out = mas_dataset
    dataset_json = json.loads((out / "dataset.json").read_text(encoding="utf-8"))
    del dataset_json["nnunet_mm"]["mas_priors"]
    with pytest.raises(ValueError, match=r"model/dataset.json: the model takes atlas prior channels \[1\] but "
                                         r"records no 'mas_priors' recipe.*--priors zeros"):
        prepare_atlas_priors(dataset_json, "model/dataset.json", _new_case_folder(tmp_path, target),
                             prior_channels=[1], output_folder=tmp_path / "out")
    assert prepare_atlas_priors(dataset_json, "m", _new_case_folder(tmp_path, target), prior_channels=[1],
                                output_folder=tmp_path / "out", mode="zeros") == {"newpatient": "zeros"}
