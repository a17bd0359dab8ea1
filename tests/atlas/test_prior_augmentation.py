"""Prior channels: nnU-Net's intensity transforms leave them untouched, spatial transforms move them; dropout."""
import numpy as np
import torch
from batchgeneratorsv2.transforms.utils.random import RandomTransform
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnunet_mm.atlas.prior_augmentation import ImageChannelsOnly, drop_priors, restrict_intensity_transforms


def _nnunet_pipeline(patch=(32, 32)):
    return nnUNetTrainer.get_training_transforms(patch, (-np.pi, np.pi), None, (0, 1), False,
                                                 use_mask_for_norm=[False, False, False], foreground_labels=[1, 2])


def test_intensity_transforms_leave_prior_channels_untouched():
    pipeline = restrict_intensity_transforms(_nnunet_pipeline(), num_image_channels=1)
    wrapped = [t for t in pipeline.transforms if isinstance(t, ImageChannelsOnly)]
    names = sorted(type(t.transform.transform).__name__ for t in wrapped)
    assert names == ["ContrastTransform", "GammaTransform", "GammaTransform", "GaussianBlurTransform",
                     "GaussianNoiseTransform", "MultiplicativeBrightnessTransform", "SimulateLowResolutionTransform"]
    unwrapped = [type(t).__name__ for t in pipeline.transforms if not isinstance(t, ImageChannelsOnly)]
    assert "SpatialTransform" in unwrapped and "MirrorTransform" in unwrapped
    intensity_only = wrapped
    for t in intensity_only:
        if isinstance(t.transform, RandomTransform):
            t.transform.apply_probability = 1.0
    torch.manual_seed(0)
    image = torch.randn(3, 32, 32)
    image[1:] = torch.rand(2, 32, 32)  # priors
    original = image.clone()
    out = image
    for t in intensity_only:
        out = t(image=out)["image"]
    assert torch.equal(out[1:], original[1:])
    assert not torch.allclose(out[0], original[0])


def test_spatial_transforms_still_move_priors_with_the_label():
    torch.manual_seed(1)
    pipeline = restrict_intensity_transforms(_nnunet_pipeline(), num_image_channels=1)
    seg = torch.zeros(1, 40, 40, dtype=torch.int16)
    seg[0, 5:20, 8:30] = 1
    image = torch.cat([torch.randn(1, 40, 40), seg.float(), torch.zeros(1, 40, 40)])  # prior 1 = the label
    for _ in range(5):
        out = pipeline(image=image.clone(), segmentation=seg.clone())
        prior, label = out["image"][1], out["segmentation"][0]
        agreement = ((prior > 0.5) == (label == 1)).float().mean()
        assert agreement > 0.97


def test_prior_dropout_zeroes_whole_samples_only_on_prior_channels():
    generator = torch.Generator().manual_seed(0)
    data = torch.rand(64, 3, 4, 4) + 0.1
    out, dropped = drop_priors(data, [1, 2], 0.5, generator)
    assert 10 < int(dropped.sum()) < 54
    assert torch.equal(out[:, 0], data[:, 0])
    assert torch.all(out[dropped][:, 1:] == 0)
    assert torch.equal(out[~dropped], data[~dropped])
    unchanged, none = drop_priors(data, [1, 2], 0.0, generator)
    assert torch.equal(unchanged, data) and not none.any()


def test_prior_dropout_probability_comes_from_the_block_and_is_checked():
    import pytest

    from nnunet_mm.atlas.settings import PRIOR_DROPOUT_KEY
    from nnunet_mm.settings import read_settings

    def probability(block: dict) -> float:
        return read_settings({"channel_names": {"0": "MR", "1": "noNorm"}, "nnunet_mm": block},
                             "Dataset703/dataset.json").method(PRIOR_DROPOUT_KEY)

    assert probability({}) == 0.3
    assert probability({"prior_dropout": {"probability": 0}}) == 0.0
    for bad in ({"probability": 1.5}, {"p": 0.2}, 0.2, {"probability": True}):
        with pytest.raises((ValueError, KeyError), match="Dataset703/dataset.json: 'nnunet_mm'.prior_dropout"):
            probability({"prior_dropout": bad})
