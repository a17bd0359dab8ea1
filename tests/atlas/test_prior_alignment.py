"""A prior channel stays aligned with its image through nnU-Net's preprocessing (crop, transpose, resampling of
anisotropic data) and back, and the prediction path feeds the network exactly what training fed it.

The dataset: three cases whose coarse axis is the *last* array axis (x, 3-5 mm; nnU-Net transposes it to the front)
with a different x spacing each (nnU-Net resamples them), an asymmetric organ, and a prior channel written by the
writer ``nnunet_mm mas`` and ``nnunet_mm predict`` use (:func:`nnunet_mm.atlas.mas.write_prior_channels`), here the
organ's own indicator (a perfect prior), so any shift, flip or transposition shows as lost overlap.
"""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from nnunet_mm.atlas.mas import CasePriors, write_prior_channels
from nnunet_mm.atlas.prior_augmentation import drop_priors
from nnunet_mm.atlas.settings import MASPriorRecipe
from nnunet_mm.evaluation.metrics import dice
from nnunet_mm.atlas.predict import zero_priors
from nnunet_mm.inference.missing_channels import DerivedChannels, _preprocessed_cases, fill_preprocessed_case
from nnunet_mm.settings import read_settings

DATASET_ID = 761
DATASET = f"Dataset{DATASET_ID}_PriorAlign"
SHAPE_ZYX = (20, 28, 12)
X_SPACINGS_MM = (3.0, 4.0, 5.0)


def _organ(shape: tuple[int, int, int]) -> np.ndarray:
    """An asymmetric organ: an off-centre ellipsoid with a lobe towards +y, +x (any flip or transposition moves it)."""
    z, y, x = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    body = ((z + 0.15) / 0.55) ** 2 + ((y + 0.2) / 0.45) ** 2 + ((x + 0.25) / 0.5) ** 2 < 1
    lobe = ((z - 0.1) / 0.3) ** 2 + ((y - 0.35) / 0.3) ** 2 + ((x - 0.4) / 0.35) ** 2 < 1
    return (body | lobe).astype(np.uint8)


def _recipe() -> MASPriorRecipe:
    return MASPriorRecipe(atlas_dataset="/none", atlas_channel=0, atlas_files={}, target_channel=0, num_atlases=1,
                          fusion="majority", local_sigma_voxels=2.0, local_power=2.0, num_classes=2,
                          prior_classes={"organ": 1}, registration={"backend": "simpleitk"})


def _write_dataset(raw: Path) -> None:
    folder = raw / DATASET
    rng = np.random.default_rng(0)
    for index, x_spacing in enumerate(X_SPACINGS_MM):
        case = f"case_{index}"
        label = _organ(SHAPE_ZYX)
        image_array = (label * 80.0 + rng.normal(0, 10, SHAPE_ZYX) + 40).astype(np.float32)
        image_array[:3], image_array[:, :, -2:] = 0, 0  # air: nnU-Net crops it away
        label[:3], label[:, :, -2:] = 0, 0
        image = sitk.GetImageFromArray(image_array)
        image.SetSpacing((x_spacing, 1.2, 1.0))  # x, y, z: coarse along the last array axis
        image.SetOrigin((-10.0 * index, 5.0, 2.5 * index))
        for path, array in ((folder / "imagesTr" / f"{case}_0000.nii.gz", image_array),
                            (folder / "labelsTr" / f"{case}.nii.gz", label)):
            written = sitk.GetImageFromArray(array)
            written.CopyInformation(image)
            path.parent.mkdir(parents=True, exist_ok=True)
            sitk.WriteImage(written, str(path))
        perfect = CasePriors(prior=np.stack([1.0 - label, label]).astype(np.float32), warped=[], seconds=[],
                             reference=image, target_array=image_array)
        write_prior_channels(perfect, _recipe(), folder / "imagesTr", case, first_channel=1, file_ending=".nii.gz")
    (folder / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "MR", "1": "noNorm"}, "labels": {"background": 0, "organ": 1},
        "numTraining": len(X_SPACINGS_MM), "file_ending": ".nii.gz",
        "nnunet_mm": {"modalities": {"0": "MR", "1": "atlas_prior:organ"}}}), encoding="utf-8")


@pytest.fixture(scope="module")
def planned(tmp_path_factory, quick_fingerprint):
    """The dataset planned and preprocessed (3d_fullres) by nnU-Net, in-process."""
    from nnunetv2.experiment_planning.plan_and_preprocess_api import plan_experiments, preprocess

    root = tmp_path_factory.mktemp("prior_alignment")
    with pytest.MonkeyPatch.context() as patch:
        for name, sub in (("nnUNet_raw", "raw"), ("nnUNet_preprocessed", "pre"), ("nnUNet_results", "res")):
            (root / sub).mkdir()
            patch.setenv(name, str(root / sub))
        patch.setenv("nnUNet_n_proc_DA", "1")
        _write_dataset(root / "raw")
        quick_fingerprint(DATASET_ID)
        plan_experiments([DATASET_ID])
        preprocess([DATASET_ID], configurations=("3d_fullres",), num_processes=(1,))
    return root


def _nnunet_objects(root: Path):
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    preprocessed = root / "pre" / DATASET
    plans_manager = PlansManager(str(preprocessed / "nnUNetPlans.json"))
    dataset_json = json.loads((preprocessed / "dataset.json").read_text(encoding="utf-8"))
    return plans_manager, plans_manager.get_configuration("3d_fullres"), dataset_json


def _training_case(root: Path, case: str):
    from nnunetv2.training.dataloading.nnunet_dataset import nnUNetDatasetBlosc2

    folder = root / "pre" / DATASET / "nnUNetPlans_3d_fullres"
    data, seg, _, properties = nnUNetDatasetBlosc2(str(folder)).load_case(case)
    return np.asarray(data), np.asarray(seg), properties


def test_the_premise_nnunet_transposes_and_resamples_these_cases(planned):
    plans_manager, configuration, _ = _nnunet_objects(planned)
    assert plans_manager.transpose_forward != [0, 1, 2]  # the coarse x axis goes first
    data, _, properties = _training_case(planned, "case_2")
    transposed_spacing = [properties["spacing"][i] for i in plans_manager.transpose_forward]
    assert not np.allclose(transposed_spacing, configuration.spacing)  # 5 mm is resampled to the target spacing
    cropped = [high - low for low, high in properties["bbox_used_for_cropping"]]  # in the transposed order
    without_air = (SHAPE_ZYX[0] - 3, SHAPE_ZYX[1], SHAPE_ZYX[2] - 2)
    assert cropped == [without_air[i] for i in plans_manager.transpose_forward]  # the air is cropped
    assert data.shape[1] != cropped[0]  # the 5 mm axis (first after transposing) is resampled


@pytest.mark.parametrize("case", ["case_0", "case_2"])
def test_the_prior_covers_the_organ_after_preprocessing(planned, case):
    data, seg, _ = _training_case(planned, case)
    assert data.shape[0] == 2
    assert dice(data[1] > 0.5, seg[0] == 1) > 0.9


def test_the_prediction_path_feeds_exactly_what_training_preprocessed(planned):
    """``nnunet_mm predict``'s generator on the raw files equals nnU-Net's preprocessed training case, prior
    included; with the prior file missing, the prior channel is what prior dropout gives (zeros), the image the
    same."""
    plans_manager, configuration, dataset_json = _nnunet_objects(planned)
    predictor = SimpleNamespace(configuration_manager=configuration, plans_manager=plans_manager,
                                dataset_json=dataset_json)
    images = planned / "raw" / DATASET / "imagesTr"
    cases = {"case_2": {0: images / "case_2_0000.nii.gz", 1: images / "case_2_0001.nii.gz"}}
    settings = read_settings(dataset_json).multimodal
    prior = DerivedChannels("atlas prior", [1], lambda cases, folder: {}, zero_priors([1]))
    (fed,) = _preprocessed_cases(predictor, cases, {"case_2": [0, 1]}, settings, "duplicate", planned / "out",
                                 derived=prior)
    trained, _, _ = _training_case(planned, "case_2")
    np.testing.assert_array_equal(fed["data"].numpy(), trained)
    (without_prior,) = _preprocessed_cases(predictor, cases, {"case_2": [0]}, settings, "duplicate",
                                           planned / "out", derived=prior)
    dropped, _ = drop_priors(torch.from_numpy(trained)[None], [1], 1.0)
    np.testing.assert_array_equal(without_prior["data"].numpy(), dropped[0].numpy())
    assert without_prior["data"][1].abs().max() == 0 and without_prior["data"][0].abs().max() > 0


def test_the_preprocessed_prior_maps_back_onto_the_original_label(planned):
    """nnU-Net's export (resampling back, un-transposing, un-cropping) of the preprocessed prior as a prediction
    lands on the organ of the original, untransposed grid."""
    from nnunetv2.inference.export_prediction import convert_predicted_logits_to_segmentation_with_correct_shape

    plans_manager, configuration, dataset_json = _nnunet_objects(planned)
    data, _, properties = _training_case(planned, "case_2")
    probabilities = torch.from_numpy(np.stack([1.0 - data[1], data[1]]).astype(np.float32))
    segmentation = convert_predicted_logits_to_segmentation_with_correct_shape(
        torch.log(probabilities.clamp_min(1e-6)), plans_manager, configuration,
        plans_manager.get_label_manager(dataset_json), properties, num_threads_torch=1)
    label = sitk.GetArrayFromImage(sitk.ReadImage(str(planned / "raw" / DATASET / "labelsTr" / "case_2.nii.gz")))
    assert segmentation.shape == label.shape == SHAPE_ZYX
    assert dice(segmentation == 1, label == 1) > 0.9


def test_a_missing_prior_is_filled_as_prior_dropout_drops_it_never_with_an_image():
    """Two image channels (channel 1 missing, modality dropout mode "duplicate") and one missing prior channel: the
    image channel is a copy of the reference, the prior is zero, exactly :func:`drop_priors` with p = 1."""
    rng = np.random.default_rng(0)
    data = rng.normal(size=(3, 4, 6, 6)).astype(np.float32)
    priors = DerivedChannels("atlas prior", [2], lambda cases, folder: {}, zero_priors([2]))
    filled = fill_preprocessed_case(data, [0], "duplicate", reference_channel=0, derived=priors)
    np.testing.assert_array_equal(filled[1], data[0])
    assert np.all(filled[2] == 0)
    dropped, _ = drop_priors(torch.from_numpy(data[None].copy()), [2], 1.0)
    np.testing.assert_array_equal(filled[2], dropped[0, 2].numpy())
    np.testing.assert_array_equal(fill_preprocessed_case(data, [0, 1, 2], "duplicate", reference_channel=0,
                                                         derived=priors), data)
    two = DerivedChannels("atlas prior", [2, 3], lambda cases, folder: {}, zero_priors([2, 3]))
    with pytest.raises(ValueError, match=r"prior channels \[3\] missing but \[2\] given"):
        fill_preprocessed_case(np.zeros((4, 2, 2, 2), np.float32), [0, 1, 2], "zeros", reference_channel=0,
                               derived=two)
