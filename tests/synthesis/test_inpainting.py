"""FFC inpainter: the spectral branch is global, the hole is the only thing replaced, random large masks, the median
baseline, and a training run whose reconstruction loss falls (and resumes)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from nnunet_mm.synthesis.inpainting import (FFCInpainter, FourierUnit, InpainterConfig, inpainting_batch,
                                            load_inpainter, median_inpaint, random_large_mask, train_inpainter)
from nnunet_mm.synthesis.model_checkpoints import load_weights
from nnunet_mm.synthesis.model_data import LiverSlices

CPU = torch.device("cpu")


def _slices(count: int = 12, size: int = 32) -> LiverSlices:
    """Smooth synthetic 'liver slices': a bright disc (liver) with a gentle gradient on a dark background."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size]
    images, livers = [], []
    for _ in range(count):
        cy, cx, r = rng.uniform(12, 20), rng.uniform(12, 20), rng.uniform(8, 12)
        liver = (yy - cy) ** 2 + (xx - cx) ** 2 <= r ** 2
        level = rng.uniform(0.8, 0.9)
        image = np.where(liver, level + 0.004 * (yy - cy), 0.05) + 0.01 * rng.standard_normal((size, size))
        images.append(np.clip(image, 0, 1).astype(np.float32))
        livers.append(liver)
    return LiverSlices(np.stack(images), np.stack(livers), [f"s{i}" for i in range(count)])


def test_fourier_unit_sees_the_whole_slice_in_one_layer():
    torch.manual_seed(0)
    unit = FourierUnit(2, 2).eval()
    x = torch.randn(1, 2, 16, 16)
    moved = x.clone()
    moved[0, :, 0, 0] += 5.0  # one corner pixel
    difference = (unit(moved) - unit(x)).abs()
    assert difference[0, :, -1, -1].max() > 1e-4  # the opposite corner responds (a 3x3 conv could not)


def test_inpainter_replaces_only_the_hole_and_gradients_reach_the_spectral_branch():
    torch.manual_seed(0)
    network = FFCInpainter(base_channels=8, num_blocks=1)
    image = torch.rand(2, 1, 30, 44)  # not a multiple of 8: padded inside forward
    hole = torch.zeros(2, 1, 30, 44, dtype=torch.bool)
    hole[:, :, 8:20, 10:30] = True
    out = network(image, hole)
    assert out.shape == image.shape
    assert torch.equal(out[~hole], image[~hole])
    corrupted = image.clone()
    corrupted[hole] = 100.0  # hole content is never read
    assert torch.allclose(network(corrupted, hole), out)
    network.generate(torch.rand(2, 1, 32, 32), torch.ones(2, 1, 32, 32)).mean().backward()
    spectral = network.blocks[0].first.ffc.global_to_global.fourier.conv.weight
    assert spectral.grad is not None and spectral.grad.abs().sum() > 0


def test_random_large_masks_lie_on_the_liver_and_leave_context():
    rng = np.random.default_rng(1)
    liver = np.zeros((64, 64), bool)
    liver[16:48, 12:52] = True
    from scipy import ndimage
    allowed = ndimage.binary_dilation(liver, iterations=3)
    sizes = []
    for _ in range(20):
        hole = random_large_mask(liver, rng)
        assert hole.any() and not (hole & ~allowed).any()
        assert hole.mean() <= 0.5 + 1e-6
        sizes.append(hole.sum())
    assert max(sizes) > 150  # large holes, not specks


def test_median_baseline_fills_a_bright_blob_with_its_surroundings():
    image = np.full((32, 32), 0.5, np.float32)
    image[12:18, 12:18] = 0.95
    hole = np.zeros((32, 32), bool)
    hole[10:20, 10:20] = True
    out = median_inpaint(image, hole)
    assert np.abs(out[hole] - 0.5).max() < 1e-6
    assert np.array_equal(out[~hole], image[~hole])
    with pytest.raises(ValueError, match="whole slice"):
        median_inpaint(image, np.ones_like(hole))


def test_training_reduces_the_hole_loss_on_a_fixed_batch(tmp_path):
    slices = _slices()
    config = InpainterConfig(base_channels=8, num_blocks=1, patch_size=32, batch_size=4, steps=16,
                             adversarial_weight=0.0, checkpoint_every=100)
    train_inpainter(slices, config, tmp_path / "inpainter", device=CPU, progress=False)
    images, holes = (torch.from_numpy(a) for a in inpainting_batch(slices, 12, np.random.default_rng(99)))
    holes = holes.float()

    def hole_l1(network: FFCInpainter) -> float:
        with torch.no_grad():
            prediction = network.train().generate(images, holes)  # batch statistics, same for both networks
        return float(((prediction - images).abs() * holes).sum() / holes.sum())

    torch.manual_seed(config.seed)
    initial = FFCInpainter.from_config(config)  # the training run's initialisation
    trained = load_weights(tmp_path / "inpainter", "inpainter", FFCInpainter.from_config(config))
    assert hole_l1(trained) < 0.75 * hole_l1(initial)


def test_adversarial_training_runs_writes_the_model_folder_and_resumes(tmp_path):
    slices = _slices()
    config = InpainterConfig(base_channels=8, num_blocks=1, patch_size=32, batch_size=2, steps=2,
                             discriminator_channels=8)
    result = train_inpainter(slices, config, tmp_path / "inpainter", device=CPU, progress=False)
    assert len(result.history["discriminator"]) == 2 and all(np.isfinite(result.history["generator"]))
    for name in ("inpainter.safetensors", "config.json", "checkpoint_latest.pt", "losses.png"):
        assert (tmp_path / "inpainter" / name).is_file(), name
    network = load_inpainter(tmp_path / "inpainter", CPU)
    assert isinstance(network, FFCInpainter) and not network.training
    with pytest.raises(FileExistsError, match="--resume"):
        train_inpainter(slices, config, tmp_path / "inpainter", device=CPU, progress=False)
    longer = InpainterConfig(**{**config.__dict__, "steps": 3})
    resumed = train_inpainter(slices, longer, tmp_path / "inpainter", device=CPU, resume=True, progress=False)
    assert resumed.step == 3 and resumed.history["l1_hole"][:2] == pytest.approx(result.history["l1_hole"])
