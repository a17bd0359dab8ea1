"""SimpleITK registration recovers a known deformation between a CT phantom and its MR-like, deformed copy."""
import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_mm.atlas.phantom_pairs import mr_like, random_deformation
from nnunet_mm.atlas.registration import RegistrationSettings, register_atlas, warp_label_probabilities
from nnunet_mm.evaluation.metrics import dice
from nnunet_mm.phantom import make_case


def test_registration_recovers_a_known_deformation_across_modalities():
    case = make_case(4, shape_zyx=(16, 32, 32), spacing_zyx_mm=(4.0, 3.0, 3.0), phases=("pv",))
    rng = np.random.default_rng(1)
    ct, label = case.image_on_reference_grid("pv").astype(np.float32), case.label
    deformation = random_deformation(ct.shape, (4.0, 3.0, 3.0), rng=rng, max_translation_mm=8.0,
                                     max_rotation_deg=8.0)
    assert deformation.magnitude_mm((4.0, 3.0, 3.0)).mean() > 3.0
    target_label = deformation.apply(label, is_label=True)
    mr = mr_like(deformation.apply(ct, is_label=False), rng=rng)
    assert abs(np.corrcoef(mr.ravel(), deformation.apply(ct, is_label=False).ravel())[0, 1]) < 0.9  # not CT
    geometry = case.reference_geometry
    atlas_label = geometry.to_sitk(label.astype(np.uint8))
    fixed, moving = geometry.to_sitk(mr), geometry.to_sitk(ct)
    before = dice(label == 1, target_label == 1)
    transform = register_atlas(fixed, moving, RegistrationSettings(iterations=40, bspline_iterations=8,
                                                                   shrink_factors=(2, 1)))
    probabilities = warp_label_probabilities(atlas_label, fixed, transform, 3)
    after = dice(probabilities.argmax(0) == 1, target_label == 1)
    assert after > before + 0.05, (before, after)
    np.testing.assert_allclose(probabilities.sum(0), 1.0, atol=1e-5)


def test_identity_warp_returns_the_one_hot_label():
    label = np.zeros((8, 8, 8), np.uint8)
    label[2:5, 2:6, 3:7] = 2
    image = sitk.GetImageFromArray(label)
    probabilities = warp_label_probabilities(image, image, sitk.Transform(3, sitk.sitkIdentity), 3)
    np.testing.assert_array_equal(probabilities.argmax(0), label)
    with pytest.raises(ValueError, match=r"outside 0..1"):
        warp_label_probabilities(image, image, sitk.Transform(3, sitk.sitkIdentity), 2)


def test_settings_refuse_unknown_or_misordered_stages():
    with pytest.raises(ValueError, match="unknown registration stage"):
        RegistrationSettings(stages=("rigid", "demons"))
    with pytest.raises(ValueError, match="order"):
        RegistrationSettings(stages=("bspline", "rigid"))
