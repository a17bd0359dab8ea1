"""BiRegNet / SimNet: shapes, the pure inference path, gradients, a falling loss; save/load with weights_only."""
import json

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from nnunet_mm.atlas.learned import (LearnedMASConfig, LearnedRegistration, _Warper, local_agreement,
                                     load_learned_mas, multiscale_dice, registration_loss, train_learned_mas)
from nnunet_mm.atlas.networks import BiRegNet, SimNet
from figure_checks import capture_saved_figures, figure_texts


def _blob(centre: tuple[float, float], shape=(32, 32)) -> torch.Tensor:
    y, x = torch.meshgrid(torch.arange(shape[0]), torch.arange(shape[1]), indexing="ij")
    return (((y - centre[0]) ** 2 + (x - centre[1]) ** 2) < 64).float()


def test_biregnet_forward_is_the_atlas_to_target_field_and_starts_at_identity():
    net = BiRegNet(spatial_dims=3, base_channels=2, num_levels=2)
    pair = torch.randn(1, 2, 8, 16, 16)
    forward_field, backward_field = net.forward_train(pair)
    assert forward_field.shape == backward_field.shape == (1, 3, 8, 16, 16)
    assert torch.equal(net(pair), forward_field)
    assert forward_field.abs().max() == 0  # zero-initialised heads: identity at the start
    assert SimNet(spatial_dims=3, num_label_channels=2, base_channels=2, num_levels=2)(
        torch.randn(1, 3, 8, 16, 16)).shape == (1, 1, 8, 16, 16)


def test_registration_loss_falls_and_aligns_a_shifted_blob_in_2d():
    torch.manual_seed(0)
    config = LearnedMASConfig(grid_shape=(32, 32), num_classes=2, base_channels=4, num_levels=2)
    atlas_fg, target_fg = _blob((14, 13)), _blob((18, 19))
    atlas_label = torch.stack([1 - atlas_fg, atlas_fg])[None]
    target_label = torch.stack([1 - target_fg, target_fg])[None]
    atlas_image, target_image = atlas_fg[None, None] * 2 - 1, 1 - target_fg[None, None] * 2  # inverted contrast
    net = BiRegNet(spatial_dims=2, base_channels=4, num_levels=2)
    optimiser = torch.optim.Adam(net.parameters(), lr=1e-2)
    warp = _Warper()
    losses = []
    for _ in range(40):
        loss, parts = registration_loss(net, atlas_image, target_image, atlas_label, target_label, config, warp)
        optimiser.zero_grad()
        loss.backward()
        if not losses:
            assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in net.heads_target_to_atlas.parameters())
        optimiser.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0] - 0.2
    with torch.no_grad():
        warped = warp(atlas_label, net(torch.cat((atlas_image, target_image), dim=1)))
    before = float(multiscale_dice(target_label, atlas_label, (0.0,)))
    after = float(multiscale_dice(target_label, warped, (0.0,)))
    assert after > before + 0.2, (before, after)


def test_simnet_target_is_the_local_label_agreement():
    target = torch.zeros(1, 2, 5, 5)
    target[:, 0] = 1
    warped = target.clone()
    warped[:, :, 0, 0] = torch.tensor([0.0, 1.0])  # one disagreeing voxel, in a corner
    agreement = local_agreement(warped, target)
    assert agreement[0, 0, 0, 0] == pytest.approx(3 / 4)  # corner: a 2×2 neighbourhood, one disagrees
    assert agreement[0, 0, 1, 1] == pytest.approx(8 / 9)
    assert agreement[0, 0, 4, 4] == 1


def test_trained_model_folder_loads_with_weights_only_and_warps_atlases(tmp_path, monkeypatch):
    from nnunet_mm.atlas.phantom_pairs import write_cross_modality_datasets

    figures = capture_saved_figures(monkeypatch)

    atlas, target = write_cross_modality_datasets(tmp_path / "raw", atlas_id=721, target_id=722, num_atlases=2,
                                                  num_target_training=2, shape_zyx=(8, 32, 32),
                                                  spacing_zyx_mm=(4.0, 3.0, 3.0), seed=3)
    config = LearnedMASConfig(grid_shape=(8, 16, 16), base_channels=2, simnet_base_channels=2, num_levels=2)
    summary = train_learned_mas(atlas, target, tmp_path / "model", config=config, iterations=3,
                                simnet_iterations=2, show_progress=False)
    assert len(summary["train_pair_dice_before_after"]) == 2
    assert (tmp_path / "model" / "training.png").is_file()
    (figure,) = figures  # training.png: every iteration of the short run drawn, and counted in the titles
    assert {"BiRegNet loss (3 iterations)", "SimNet BCE (2 iterations)"} <= set(figure_texts(figure))
    assert [len(axis.get_lines()[0].get_xdata()) for axis in figure.axes] == [3, 2]
    assert all(axis.get_lines()[0].get_marker() == "o" for axis in figure.axes)
    assert json.loads((tmp_path / "model" / "mas_model.json").read_text())["grid_shape"] == [8, 16, 16]
    with pytest.raises(FileExistsError, match="--overwrite"):
        train_learned_mas(atlas, target, tmp_path / "model", config=config, iterations=1, show_progress=False)
    backend, simnet = load_learned_mas(tmp_path / "model")
    assert isinstance(backend, LearnedRegistration) and simnet is not None
    image = sitk.ReadImage(str(target / "imagesTr" / "target_000_0000.nii.gz"))
    warped = backend.warp(image, sitk.ReadImage(str(atlas / "imagesTr" / "atlas_000_0000.nii.gz")),
                          sitk.ReadImage(str(atlas / "labelsTr" / "atlas_000.nii.gz")), 3)
    assert warped.probabilities.shape == (3, 8, 32, 32)
    np.testing.assert_allclose(warped.probabilities.sum(0), 1.0, atol=1e-4)
    weights = simnet.similarity(sitk.GetArrayFromImage(image).astype(np.float32), warped.probabilities[None])
    assert weights.shape == (1, 8, 32, 32) and 0 <= weights.min() and weights.max() <= 1
    with pytest.raises(FileNotFoundError, match="mas_model.json"):
        load_learned_mas(tmp_path / "nothing")
