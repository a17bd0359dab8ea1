"""nnU-Net's intensity augmentation reaches SynthTumorTrainer's synthetic tumours as it reaches their surroundings
(issue 19.1), and synthetic samples can be kept aligned (issue 19.2: "misalign_synthetic")."""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from batchgeneratorsv2.transforms.intensity.brightness import MultiplicativeBrightnessTransform
from batchgeneratorsv2.transforms.intensity.contrast import ContrastTransform
from batchgeneratorsv2.transforms.intensity.gamma import GammaTransform
from batchgeneratorsv2.transforms.intensity.gaussian_noise import GaussianNoiseTransform
from batchgeneratorsv2.transforms.noise.gaussian_blur import GaussianBlurTransform
from batchgeneratorsv2.transforms.spatial.low_resolution import SimulateLowResolutionTransform
from batchgeneratorsv2.transforms.spatial.spatial import SpatialTransform
from batchgeneratorsv2.transforms.utils.random import RandomTransform
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnunet_mm.synthesis.statistics import TumourContrastStatistics
from nnunet_mm.synthesis.trainer import SynthTumorTrainer

# nnU-Net's intensity transforms, named here (not imported from the module under test)
INTENSITY = (GaussianNoiseTransform, GaussianBlurTransform, MultiplicativeBrightnessTransform, ContrastTransform,
             SimulateLowResolutionTransform, GammaTransform)
DS_SCALES = [[1.0, 1.0], [0.5, 0.5], [0.25, 0.25]]
LABELS = {"background": 0, "liver": 1, "tumour": 2}


def _trainer(kit, *, block=None, **synthesis) -> SynthTumorTrainer:
    """2 phases, liver 1, tumour 2; the handcrafted synthesizer paints -2 (pv) and +3 (art), exactly (no jitter)."""
    statistics = TumourContrastStatistics(("pv", "art"), np.array([[-2.0, 3.0]]), np.zeros((1, 2)),
                                          np.zeros((1, 2)), ("real",))
    statistics_file = statistics.save(kit.preprocessed / "tumour_contrast_test.json")
    synthesis = {"probability": 1.0, "statistics_file": str(statistics_file), "contrast_jitter": 0.0, **synthesis}
    return kit.trainer(SynthTumorTrainer, block={"synthesis": synthesis, "seed": 0, **(block or {})})


def _pipeline(trainer, use_mask_for_norm=(False, False)):
    return trainer.get_training_transforms((64, 64), (-np.pi, np.pi), DS_SCALES, (), False,
                                           use_mask_for_norm=list(use_mask_for_norm), is_cascaded=False,
                                           foreground_labels=[1, 2], regions=None, ignore_label=None)


def _force(monkeypatch, chosen: type, **attributes) -> None:
    """nnU-Net's pipeline with the spatial transform removed, ``chosen`` applied always (with ``attributes``) and
    every other intensity transform never."""
    original = nnUNetTrainer.get_training_transforms

    def forced(*args, **kwargs):
        pipeline = original(*args, **kwargs)
        pipeline.transforms = [t for t in pipeline.transforms if not isinstance(t, SpatialTransform)]
        for t in pipeline.transforms:
            if isinstance(t, RandomTransform) and isinstance(t.transform, INTENSITY):
                t.apply_probability = 1.0 if isinstance(t.transform, chosen) else 0.0
                if isinstance(t.transform, chosen):
                    for name, value in attributes.items():
                        setattr(t.transform, name, value)
        return pipeline

    monkeypatch.setattr(nnUNetTrainer, "get_training_transforms", staticmethod(forced))


def _samples(batch_size: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, 2, 64, 64) images (liver 1 + noise, background 0 + noise) and (B, 1, 64, 64) labels."""
    label = torch.zeros(batch_size, 1, 64, 64, dtype=torch.int16)
    label[:-1, :, 8:56, 8:56] = 1  # the last sample has no liver
    noise = 0.1 * torch.randn(batch_size, 2, 64, 64, generator=torch.Generator().manual_seed(1))
    return (label > 0).float().expand(-1, 2, -1, -1) + noise, label


def _loader_batch(pipeline, images, labels) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """What nnU-Net's data loader does: the pipeline per sample, then stacking."""
    outputs = [pipeline(image=i.clone(), segmentation=s.clone()) for i, s in zip(images, labels)]
    data = torch.stack([o["image"] for o in outputs])
    return data, [torch.stack([o["segmentation"][k] for o in outputs]) for k in range(len(DS_SCALES))]


def test_a_synthetic_lesion_gets_nnunets_brightness_like_its_surroundings(trainer_kit, monkeypatch):
    _force(monkeypatch, MultiplicativeBrightnessTransform, multiplier_range=(2.0, 2.0))
    trainer = _trainer(trainer_kit)
    images, labels = _samples()
    data, targets = _loader_batch(_pipeline(trainer), images, labels)
    state = trainer.augmentation_generator.get_state()
    out, out_targets, _ = trainer.prepare_batch(data, targets)
    trainer.augmentation_generator.set_state(state)  # the same tumours, painted without any augmentation
    painted, painted_targets, chosen = trainer.insert_synthetic_tumours(images, [t.clone() for t in targets])
    assert chosen.tolist() == [True, True, True, False]
    # whole patch ×2, lesion included (before: the lesion's contrast was painted after the ×2, so stayed ×1)
    torch.testing.assert_close(out, 2 * painted)
    assert all(torch.equal(a, b) for a, b in zip(out_targets, painted_targets))


def test_a_synthetic_lesion_is_blurred_like_its_surroundings(trainer_kit, monkeypatch):
    _force(monkeypatch, GaussianBlurTransform, p_per_channel=1.0, blur_sigma=(2.0, 2.0))
    trainer = _trainer(trainer_kit, edge_sigma_voxels=[0.05, 0.05])  # painted with a sharp edge
    images, labels = _samples()
    data, targets = _loader_batch(_pipeline(trainer), images, labels)
    out, out_targets, _ = trainer.prepare_batch(data, targets)
    synthetic = (out_targets[0] == 2) & (labels != 2)
    assert synthetic[:3].flatten(1).any(1).all()
    # the +3 edge of the arterial phase is blurred like the liver's edge: no step steeper than σ = 2 allows
    # (3 / (√(2π)·2) ≈ 0.6 per voxel; before, the lesion was painted after the blur and kept its step of ~3)
    steps = torch.cat([(out[:3, :, 1:] - out[:3, :, :-1]).abs().flatten(), 
                       (out[:3, :, :, 1:] - out[:3, :, :, :-1]).abs().flatten()])
    assert steps.max() < 1.0, f"a sharp edge of {float(steps.max()):.2f} survived the blur"


def test_the_cpu_pipeline_keeps_nnunets_order_without_its_intensity_transforms(trainer_kit):
    trainer = _trainer(trainer_kit)
    nnunet = nnUNetTrainer.get_training_transforms((64, 64), (-np.pi, np.pi), DS_SCALES, (0, 1), False,
                                                   use_mask_for_norm=[False, False], is_cascaded=False,
                                                   foreground_labels=[1, 2], regions=None, ignore_label=None)
    cpu = trainer.get_training_transforms((64, 64), (-np.pi, np.pi), DS_SCALES, (0, 1), False,
                                          use_mask_for_norm=[False, False], is_cascaded=False,
                                          foreground_labels=[1, 2], regions=None, ignore_label=None)

    def inner(t):
        return t.transform if isinstance(t, RandomTransform) else t

    def described(t):  # class, probability and parameters, object addresses dropped
        inside = inner(t)
        inside = getattr(inside, "transform", inside)  # OnCPU wraps blur inside its RandomTransform
        return (type(inside).__name__, getattr(t, "apply_probability", None),
                re.sub(r" at 0x[0-9a-f]+", "", repr(inside)))

    assert [type(t) for t in cpu.transforms] == [type(t) for t in nnunet.transforms
                                                 if not isinstance(inner(t), INTENSITY)]
    expected = [described(t) for t in nnunet.transforms if isinstance(inner(t), INTENSITY)]
    assert [described(t) for t in trainer.deferred_augmentation.intensity] == expected
    assert [e[0] for e in expected] == ["GaussianNoiseTransform", "GaussianBlurTransform",
                                        "MultiplicativeBrightnessTransform", "ContrastTransform",
                                        "SimulateLowResolutionTransform", "GammaTransform", "GammaTransform"]
    assert trainer.deferred_augmentation.mask is None  # no mask: the -1 removal stays on the CPU
    assert "SynthTumorTrainer" not in SynthTumorTrainer.get_validation_transforms.__qualname__  # validation as is


def test_with_a_normalisation_mask_the_outside_stays_zero_and_the_targets_lose_their_minus_one(trainer_kit,
                                                                                                monkeypatch):
    _force(monkeypatch, GaussianNoiseTransform, noise_variance=(0.5, 0.5))
    trainer = _trainer(trainer_kit)
    images, labels = _samples()
    labels[:, :, :4] = -1  # outside the nonzero mask, as nnU-Net's preprocessing marks it
    cpu = _pipeline(trainer, use_mask_for_norm=(True, True))
    assert trainer.deferred_augmentation.mask is not None and trainer.deferred_augmentation.remove_label is not None
    data, targets = _loader_batch(cpu, images, labels)
    assert (targets[0] == -1).any()  # the CPU part leaves the -1 for the mask on the device
    out, out_targets, _ = trainer.prepare_batch(data, targets)
    assert (out[:, :, :4] == 0).all()  # masked after the noise, as in nnU-Net
    assert (out[:, :, 4:] - data[:, :, 4:]).std() > 0.3  # the noise reached the rest
    assert all(not (t == -1).any() for t in out_targets)


def test_the_deferred_transforms_draw_from_the_trainers_generator_and_leave_the_global_ones_alone(trainer_kit):
    from nnunet_mm.synthesis.intensity_after_insertion import apply_deferred_augmentation

    trainer = _trainer(trainer_kit)
    _pipeline(trainer)
    data = torch.rand(8, 2, 32, 32)
    targets = [torch.zeros(8, 1, 32, 32, dtype=torch.int16)]
    numpy_before, torch_before = np.random.get_state()[1].copy(), torch.get_rng_state()

    def run(seed):
        return apply_deferred_augmentation(data, targets, trainer.deferred_augmentation, 2,
                                           torch.Generator().manual_seed(seed))[0]

    assert torch.equal(run(1), run(1)) and not torch.equal(run(1), run(2))  # rank seeds differ
    assert (np.random.get_state()[1] == numpy_before).all() and torch.equal(torch.get_rng_state(), torch_before)


MISALIGN = {"channel_acquisition": "separate", "misalignment": {"probability": 1.0},
            "modality_dropout": {"probability": 0.0}}


@pytest.mark.parametrize("misalign_synthetic", [False, True])
def test_misalign_synthetic_decides_whether_synthetic_samples_are_misaligned(trainer_kit, misalign_synthetic):
    trainer = _trainer(trainer_kit, block=MISALIGN, misalign_synthetic=misalign_synthetic)
    images, labels = _samples()
    data, targets = _loader_batch(_pipeline(trainer), images, labels)  # no intensity transform fires here…
    for t in trainer.deferred_augmentation.intensity:
        t.apply_probability = 0.0  # …nor here
    prepared, _, _ = trainer.prepare_batch(data, targets)
    out, draw = trainer.augment_multimodal(prepared)
    moved = (out[:, 1] != prepared[:, 1]).flatten(1).any(1)
    assert torch.equal(out[:, 0], prepared[:, 0])  # the reference channel never moves
    assert moved[3]  # the sample without liver (no synthetic tumour) is misaligned either way
    assert moved[:3].tolist() == [misalign_synthetic] * 3
    assert draw.misalignment.active[:3, 1].tolist() == [misalign_synthetic] * 3  # the draw says what happened
    log = open(trainer.log_file, encoding="utf-8").read()
    assert f"(misalign_synthetic {str(misalign_synthetic).lower()})" in log
