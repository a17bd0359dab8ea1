"""SynthTumorTrainer, built the nnU-Net way on the session's planned phantom: targets follow the inserted tumours
at every deep-supervision scale, the synthesis runs inside the shared training step, both synthesizers plug in (its
CLI cycle is in tests/cli/test_synthesis_cycle.py)."""
from __future__ import annotations

import json
from dataclasses import asdict

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from batchgeneratorsv2.transforms.utils.deep_supervision_downsampling import DownsampleSegForDSTransform

from nnunet_mm.synthesis.handcrafted import HandcraftedSynthesizer
from nnunet_mm.synthesis.statistics import TumourContrastStatistics, statistics_path
from nnunet_mm.synthesis.trainer import SynthTumorTrainer

DS_SCALES = [[1.0, 1.0], [0.5, 0.5], [0.25, 0.25]]


def _trainer(kit, probability: float, **synthesis) -> SynthTumorTrainer:
    """A SynthTumorTrainer on the phantom (2 phases; liver 1, tumour 2) whose handcrafted synthesizer reads a
    statistics file with one tumour: portal-venous darker, arterial brighter than the liver."""
    statistics = TumourContrastStatistics(("pv", "art"), np.array([[-2.0, 3.0]]), np.zeros((1, 2)),
                                          np.zeros((1, 2)), ("real",))
    statistics_file = statistics.save(kit.preprocessed / "tumour_contrast_test.json")
    block = {"synthesis": {"probability": probability, "statistics_file": str(statistics_file), **synthesis},
             "seed": 0}
    return kit.trainer(SynthTumorTrainer, block=block, configuration="3d_fullres" if synthesis else "2d")


def _batch(batch_size: int = 4) -> tuple[torch.Tensor, list[torch.Tensor]]:
    label = torch.zeros(batch_size, 1, 64, 64, dtype=torch.int16)
    label[:-1, :, 8:56, 8:56] = 1  # the last sample has no liver
    label[0, :, 10:14, 10:14] = 2  # a real tumour stays
    data = torch.randn(batch_size, 3, 64, 64, generator=torch.Generator().manual_seed(1))  # 2 phases + 1 extra
    return data, _pyramid(label)


def _pyramid(label: torch.Tensor) -> list[torch.Tensor]:
    """nnU-Net's deep-supervision targets: its transform applied to each sample's (1, X, Y) segmentation."""
    transform = DownsampleSegForDSTransform(DS_SCALES)
    per_sample = [transform(segmentation=sample)["segmentation"] for sample in label]
    return [torch.stack([scales[s] for scales in per_sample]) for s in range(len(DS_SCALES))]


def test_targets_match_the_inserted_tumours_at_every_deep_supervision_scale(trainer_kit):
    trainer = _trainer(trainer_kit, probability=1.0)
    assert isinstance(trainer.synthesizer, HandcraftedSynthesizer) and (trainer.liver_label, trainer.tumour_label) \
        == (1, 2)
    data, targets = _batch()
    new_data, new_targets, chosen = trainer.insert_synthetic_tumours(data, targets)
    assert chosen.tolist() == [True, True, True, False]  # every sample with liver, none without
    tumour = new_targets[0] == 2
    synthetic = tumour & (targets[0] != 2)
    assert synthetic[:3].flatten(1).any(1).all()
    assert not (synthetic & (targets[0] != 1)).any()  # only healthy liver became tumour
    assert (new_targets[0][0, :, 10:14, 10:14] == 2).all()  # the real tumour is kept
    expected = _pyramid(new_targets[0])
    for scale, (got, want) in enumerate(zip(new_targets, expected)):
        assert got.shape == targets[scale].shape and got.dtype == targets[scale].dtype
        assert torch.equal(got, want), f"scale {scale}"
    changed = (new_data != data).any(1, keepdim=True)
    assert torch.equal(new_data[:, 2:], data[:, 2:])  # channels beyond the phases are untouched
    assert not (changed & ~_near(synthetic)).any()  # images change only at the tumour and its 2-voxel rim
    inside = synthetic[:3, 0]
    assert (new_data[:3, 0][inside] - data[:3, 0][inside]).mean() < -1.0  # pv darker, art brighter (fitted rows)
    assert (new_data[:3, 1][inside] - data[:3, 1][inside]).mean() > 1.5
    assert torch.equal(targets[0], _batch()[1][0])  # the inputs were not modified in place


def _near(mask: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.max_pool2d(mask.float(), 5, stride=1, padding=2) > 0


def test_probability_zero_leaves_the_batch_untouched(trainer_kit):
    trainer = _trainer(trainer_kit, probability=0.0)
    data, targets = _batch()
    new_data, new_targets, chosen = trainer.insert_synthetic_tumours(data, targets)
    assert not chosen.any() and new_data is data and all(a is b for a, b in zip(new_targets, targets))


def test_synthesis_runs_inside_the_shared_step_before_the_augmentation_and_its_share_is_logged(trainer_kit,
                                                                                                monkeypatch):
    trainer = _trainer(trainer_kit, probability=1.0)
    order = []
    for name in ("insert_synthetic_tumours", "augment_multimodal", "compute_loss"):
        method = getattr(SynthTumorTrainer, name)
        monkeypatch.setattr(SynthTumorTrainer, name,
                            lambda self, *args, _name=name, _method=method: order.append(_name) or _method(self, *args))
    loader, _ = trainer.get_dataloaders()
    outputs = [trainer.train_step(next(loader)) for _ in range(2)]
    assert order == ["insert_synthetic_tumours", "augment_multimodal", "compute_loss"] * 2
    assert all(set(o) == {"loss", "synthetic_fraction"} for o in outputs)
    assert any(o["synthetic_fraction"] > 0 for o in outputs)  # the phantom's patches show liver

    trainer.on_train_epoch_end(outputs)
    fraction = float(np.mean([o["synthetic_fraction"] for o in outputs]))
    assert trainer.logger.local_logger.my_fantastic_logging["synthetic_fraction"] == [pytest.approx(fraction)]
    log = open(trainer.log_file, encoding="utf-8").read()
    assert log.count(f"nnunet_mm: synthetic tumours in {100 * fraction:.1f} % of the training samples") == 1


def test_dice_and_ce_weights_of_the_block_reach_nnunets_loss(trainer_kit):
    trainer = _trainer(trainer_kit, probability=0.5)
    dice_and_ce = trainer.loss.loss  # inside nnU-Net's deep-supervision wrapper
    assert (dice_and_ce.weight_dice, dice_and_ce.weight_ce) == (1.0, 0.5)


def _log(trainer) -> str:
    return open(trainer.log_file, encoding="utf-8").read()


def test_the_log_names_the_synthesizer_the_probability_and_the_statistics_file(trainer_kit):
    log = _log(_trainer(trainer_kit, probability=0.25))
    assert (f"nnunet_mm SynthTumor: synthetic tumours (handcrafted synthesizer, tumour contrast statistics from "
            f"{trainer_kit.preprocessed / 'tumour_contrast_test.json'}) into the healthy liver of a share p = 0.25 of "
            f"the training samples with liver") in log
    assert "liver label 1, tumour label 2; loss 1.0*Dice + 0.5*CE; validation on real cases only" in log


def test_the_log_says_when_the_statistics_were_fitted_for_this_run(trainer_kit):
    trainer = trainer_kit.trainer(SynthTumorTrainer, block={"seed": 0})
    fitted = statistics_path(trainer_kit.preprocessed, "nnUNetPlans_2d")
    assert fitted.is_file()
    assert (f"(handcrafted synthesizer, tumour contrast statistics fitted now from fold all's training cases into "
            f"{fitted}) into the healthy liver of a share p = 0.5") in _log(trainer)


def test_keep_tumours_in_liver_reads_the_labels_from_the_prediction_folders_dataset_json(tmp_path, capsys):
    from nnunet_mm.cli.main import main as nnunet_mm

    predictions = tmp_path / "pred"
    predictions.mkdir()
    (predictions / "dataset.json").write_text(json.dumps({"channel_names": {"0": "CT"},  # as nnUNetv2_predict copies it
                                                          "labels": {"background": 0, "liver": 3, "tumor": 5},
                                                          "file_ending": ".nii.gz"}), encoding="utf-8")
    segmentation = np.zeros((4, 12, 12), np.uint8)
    segmentation[:, 2:8, 2:8] = 3
    segmentation[1, 3:5, 3:5] = 5
    segmentation[2, 10:12, 10:12] = 5
    sitk.WriteImage(sitk.GetImageFromArray(segmentation), str(predictions / "case_1.nii.gz"))
    assert nnunet_mm(["keep-tumours-in-liver", "-i", str(predictions), "-o", str(tmp_path / "out")]) == 0
    cleaned = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "out" / "case_1.nii.gz")))
    assert (cleaned[1, 3:5, 3:5] == 5).all() and not (cleaned[2, 10:12, 10:12] == 5).any()
    assert (tmp_path / "out" / "dataset.json").is_file()
    (predictions / "broken.nii.gz").write_text("not an image", encoding="utf-8")
    assert nnunet_mm(["keep-tumours-in-liver", "-i", str(predictions), "-o", str(tmp_path / "out2")]) == 1
    assert "broken.nii.gz: cannot be read as an image" in capsys.readouterr().err
    assert not (tmp_path / "out2").exists()  # staged: nothing is left behind


def test_diffusion_synthesizer_plugs_into_the_step_in_3d(trainer_kit):
    """The trainer with part B's LatentDiffusionSynthesizer (real MONAI networks, tiny and untrained, from the model
    folder the block names): tumours are written into the 3D targets and the images change only at the tumours and
    their blending rim."""
    from nnunet_mm.synthesis import model_checkpoints
    from nnunet_mm.synthesis.autoencoder import AutoencoderConfig, build_autoencoder
    from nnunet_mm.synthesis.latent_diffusion import (AUTOENCODER_WEIGHTS_NAME, WEIGHTS_NAME, DiffusionConfig,
                                                      LatentDiffusionSynthesizer, build_denoiser)

    ae_config = AutoencoderConfig(channels=(8, 8), latent_channels=2, norm_num_groups=8, patch_size=(8, 16, 16),
                                  discriminator_layers=1)
    config = DiffusionConfig(channels=(8, 8), attention_levels=(False, False), num_head_channels=8,
                             norm_num_groups=8, patch_size=(8, 16, 16), num_train_timesteps=10,
                             num_inference_steps=2, margin_voxels=2)
    model_folder = trainer_kit.preprocessed / "tiny_latent_diffusion"
    model_folder.mkdir()
    model_checkpoints.write_config(model_folder, {"autoencoder": asdict(ae_config), "diffusion": asdict(config),
                                                  "latent_scale": 1.0, "num_phases": 2})
    model_checkpoints.save_weights(model_folder, AUTOENCODER_WEIGHTS_NAME, build_autoencoder(ae_config))
    model_checkpoints.save_weights(model_folder, WEIGHTS_NAME, build_denoiser(config, 2, 2))
    trainer = _trainer(trainer_kit, probability=1.0, synthesizer="diffusion", model_folder=str(model_folder))
    assert isinstance(trainer.synthesizer, LatentDiffusionSynthesizer)
    label = torch.zeros(2, 1, 16, 32, 32, dtype=torch.int16)
    label[:, :, 2:14, 4:28, 4:28] = 1
    data = torch.randn(2, 2, 16, 32, 32, generator=torch.Generator().manual_seed(2))
    targets = [label, resize_like(label, (8, 16, 16))]
    new_data, new_targets, chosen = trainer.insert_synthetic_tumours(data, targets)
    synthetic = (new_targets[0] == 2)
    assert chosen.all() and synthetic.flatten(1).any(1).all()
    assert torch.equal(new_targets[1], resize_like(new_targets[0], (8, 16, 16)))
    near = torch.nn.functional.max_pool3d(synthetic.float(), 5, stride=1, padding=2) > 0
    assert not ((new_data != data).any(1, keepdim=True) & ~near).any()
    assert torch.isfinite(new_data).all()


def resize_like(label: torch.Tensor, shape) -> torch.Tensor:
    """nnU-Net's DS downsampling of a (B, 1, ...) label (nearest-exact)."""
    return torch.nn.functional.interpolate(label.float(), size=shape, mode="nearest-exact").to(label.dtype)


def _write_pool(kit, trainer_configuration: str = "3d_fullres", *, spacing=None, size=(24, 64, 64)) -> "Path":
    """Two pooled patches in nnU-Net's preprocessed format, larger than the training patch: every image voxel 7.0
    (a value no real sample has), a small tumour block in one corner of the liver (a random crop mostly misses
    it), and the pool.json of ``trainer_configuration`` (or another ``spacing``)."""
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    from nnunet_mm.synthesis.latent_diffusion import configuration_record
    from nnunet_mm.synthesis.pool import save_pool_case, write_pool_record

    folder = kit.preprocessed / "nnunet_mm_synthesis" / f"pool_{trainer_configuration}"
    folder.mkdir(parents=True)
    manager = PlansManager(kit.plans()).get_configuration(trainer_configuration)
    record = configuration_record(trainer_configuration, manager)
    if spacing is not None:
        record["spacing"] = list(spacing)
    seg = np.ones((1, *size), dtype=np.int16)
    seg[:, 1:4, 2:8, 2:8] = 2
    for index in range(2):
        save_pool_case(folder, f"pool_{index:04d}", np.full((2, *size), 7.0, np.float32), seg, 2, seed=index)
    write_pool_record(folder, model_folder=kit.preprocessed / "ldm", configuration=record, patch_size=size, seed=0,
                      tumour_label=2, samples=[{"case": f"pool_{i:04d}"} for i in range(2)])
    return folder


def test_pooled_patches_replace_a_share_of_the_batch_through_nnunets_loader(trainer_kit):
    """"synthesizer": "pool": chosen samples are replaced by pool samples cropped and augmented by nnU-Net's loader
    (crops forced onto the synthetic tumour, targets at every scale from the pool), the others stay bit-identical."""
    from nnunet_mm.training.extra_loader import finish_loader

    folder = _write_pool(trainer_kit)
    trainer = _trainer(trainer_kit, probability=0.5, synthesizer="pool")
    assert trainer.synthesizer is None and trainer.pool_folder == folder
    assert f"pool of 2 patches from {folder}" in _log(trainer)
    trainer.dataloader_pool = trainer.make_pool_loader()  # what on_train_start builds
    trainer.synthetic_probability = 0.5
    patch = tuple(trainer.configuration_manager.patch_size)
    scales = trainer._get_deep_supervision_scales()
    label = torch.ones(8, 1, *patch, dtype=torch.int16)
    targets = [resize_like(label, [round(n * s) for n, s in zip(patch, scale)]) for scale in scales]
    data = torch.randn(8, 2, *patch, generator=torch.Generator().manual_seed(3))
    try:
        new_data, new_targets, chosen = trainer.insert_synthetic_tumours(data, targets)
    finally:
        finish_loader(trainer.dataloader_pool)
    assert 0 < chosen.sum() < 8  # p = 0.5 of 8 samples, seeded
    assert torch.equal(new_data[~chosen], data[~chosen]) and torch.equal(new_targets[0][~chosen], label[~chosen])
    pooled = new_data[chosen]
    assert ((pooled - 7.0).abs() < 1e-3).float().mean() > 0.5  # the pool's images (padding and resampling aside)
    for target, original in zip(new_targets, targets):
        assert target.shape == original.shape
        assert (target[chosen] == 2).flatten(1).any(1).all()  # every pooled crop holds its synthetic tumour


def test_a_pool_of_another_configuration_or_format_is_refused(trainer_kit):
    from nnunet_mm.training.refusal import TrainingRefused

    with pytest.raises(TrainingRefused, match="synth-pool"):
        _trainer(trainer_kit, probability=0.5, synthesizer="pool")  # none made yet
    folder = _write_pool(trainer_kit, spacing=(9.0, 9.0, 9.0))
    with pytest.raises(TrainingRefused, match="spacing"):
        _trainer(trainer_kit, probability=0.5, synthesizer="pool")
    record = json.loads((folder / "pool.json").read_text(encoding="utf-8"))
    record.pop("format")
    (folder / "pool.json").write_text(json.dumps(record), encoding="utf-8")
    with pytest.raises(TrainingRefused, match="older format"):
        _trainer(trainer_kit, probability=0.5, synthesizer="pool")
