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
    assert json.loads((tmp_path / "model" / "mas_model.json").read_text(encoding="utf-8"))["grid_shape"] == [8, 16, 16]
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


def test_the_networks_learn_from_the_folds_training_cases_only_and_the_dataset_records_them(tmp_path, monkeypatch):
    """mas-train --fold 0 loads the atlases and fold 0's training targets, never fold 0's validation case or a test
    case; ``nnunet_mm mas`` with that model records the cases, so MASPriorTrainer can refuse a leaking fold."""
    from nnunet_mm.atlas import learned
    from nnunet_mm.atlas.mas import MASSettings, build_mas_dataset, target_splits
    from nnunet_mm.atlas.phantom_pairs import write_cross_modality_datasets
    from nnunet_mm.io.raw_dataset import open_raw_dataset
    from nnunet_mm.settings import read_settings

    atlas, target = write_cross_modality_datasets(tmp_path / "raw", atlas_id=723, target_id=724, num_atlases=2,
                                                  num_target_training=3, num_target_test=1, shape_zyx=(8, 16, 16),
                                                  spacing_zyx_mm=(4.0, 3.0, 3.0), seed=3)
    loaded: list[str] = []
    load_volumes = learned._load_volumes
    monkeypatch.setattr(learned, "_load_volumes",
                        lambda dataset, cases, *args: loaded.extend(cases) or load_volumes(dataset, cases, *args))
    config = LearnedMASConfig(grid_shape=(8, 16, 16), base_channels=2, simnet_base_channels=2, num_levels=2)
    train_learned_mas(atlas, target, tmp_path / "model", config=config, iterations=1, simnet_iterations=1, fold=0,
                      show_progress=False)
    split = target_splits(open_raw_dataset(target))[0]
    assert len(split["val"]) == 1 and sorted(loaded) == sorted(["atlas_000", "atlas_001", *split["train"]])
    assert split["val"][0] not in loaded and "target_003" not in loaded  # fold 0's validation case, the test case
    training = json.loads((tmp_path / "model" / "training.json").read_text(encoding="utf-8"))
    assert training["target_training_cases"] == sorted(split["train"]) and training["fold"] == 0
    with pytest.raises(ValueError, match=r"--fold 7: the split of .* has folds 0..2"):
        train_learned_mas(atlas, target, tmp_path / "model2", config=config, iterations=1, fold=7,
                          show_progress=False)

    backend, simnet = load_learned_mas(tmp_path / "model")
    out = build_mas_dataset(target, atlas, output_id=725, settings=MASSettings(fusion="simnet"), backend=backend,
                            simnet=simnet, output_root=tmp_path / "raw", show_progress=False)
    recipe = read_settings(json.loads((out / "dataset.json").read_text(encoding="utf-8"))).method("mas_priors")
    assert list(recipe.learned_training_cases) == sorted(split["train"])
    assert recipe.registration["model"] == str((tmp_path / "model").resolve())
    assert recipe.simnet_model == str((tmp_path / "model").resolve())
    # a new case gets its priors from the frozen networks the recipe names, as the dataset's test case did
    from nnunet_mm.atlas.predict import PRIORS_DIR, prepare_atlas_priors

    new = tmp_path / "new"
    new.mkdir()
    (new / "fresh_0000.nii.gz").write_bytes((target / "imagesTs" / "target_003_0000.nii.gz").read_bytes())
    cases = {"fresh": {0: new / "fresh_0000.nii.gz"}}
    assert prepare_atlas_priors(json.loads((out / "dataset.json").read_text(encoding="utf-8")), "model/dataset.json", cases,
                                prior_channels=[1], output_folder=tmp_path / "pred", show_progress=False) == {
        "fresh": "atlas"}
    np.testing.assert_allclose(
        sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "pred" / PRIORS_DIR / "fresh_0001.nii.gz"))),
        sitk.GetArrayFromImage(sitk.ReadImage(str(out / "imagesTs" / "target_003_0001.nii.gz"))), atol=1e-5)


def _randomised_biregnet(spatial_dims: int = 3) -> BiRegNet:
    """A BiRegNet whose fields are not zero (the heads start at zero), so the field depends on the input's order."""
    torch.manual_seed(0)
    net = BiRegNet(spatial_dims, base_channels=2, num_levels=2)
    with torch.no_grad():
        for parameter in net.parameters():
            parameter.normal_(0, 0.3)
    return net.eval()


def test_learned_priors_follow_the_anatomy_not_the_voxel_order(tmp_path):
    """The same target stored in another axis order (RAS instead of LPS: flipped voxels, another origin and
    direction; physically the same image) gets the same prior, physically; an oblique target is refused."""
    from nnunet_mm.atlas.phantom_pairs import write_cross_modality_datasets

    atlas, target = write_cross_modality_datasets(tmp_path / "raw", atlas_id=726, target_id=727, num_atlases=1,
                                                  num_target_training=1, shape_zyx=(8, 16, 24),
                                                  spacing_zyx_mm=(4.0, 3.0, 2.0), seed=2)
    config = LearnedMASConfig(grid_shape=(8, 16, 16), num_classes=3, base_channels=2, num_levels=2)
    backend = LearnedRegistration(_randomised_biregnet(), config, "digest")
    image = sitk.ReadImage(str(target / "imagesTr" / "target_000_0000.nii.gz"))
    atlas_image = sitk.ReadImage(str(atlas / "imagesTr" / "atlas_000_0000.nii.gz"))
    atlas_label = sitk.ReadImage(str(atlas / "labelsTr" / "atlas_000.nii.gz"))
    reoriented = sitk.DICOMOrient(image, "RAS")
    assert not np.array_equal(sitk.GetArrayFromImage(reoriented), sitk.GetArrayFromImage(image))
    first = backend.warp(image, atlas_image, atlas_label, 3).probabilities
    second = backend.warp(reoriented, sitk.DICOMOrient(atlas_image, "RPI"), sitk.DICOMOrient(atlas_label, "RPI"),
                          3).probabilities
    assert first[1].max() > 0.5 and not np.allclose(first, second)  # a real prior, on other voxel orders
    back = sitk.GetImageFromArray(second[1])
    back.CopyInformation(reoriented)
    np.testing.assert_allclose(sitk.GetArrayFromImage(sitk.DICOMOrient(back, "LPS")), first[1], atol=1e-5)

    oblique = sitk.Image(image)
    angle = np.deg2rad(30)
    oblique.SetDirection((np.cos(angle), -np.sin(angle), 0, np.sin(angle), np.cos(angle), 0, 0, 0, 1))
    with pytest.raises(ValueError, match=r"target image: oblique direction .*axis-aligned images only.*"
                                         r"--registration simpleitk"):
        backend.warp(oblique, atlas_image, atlas_label, 3)
