"""3D autoencoder + mask-conditioned latent diffusion: training losses fall, sampling keeps the contract, CLI paths."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from nnunet_mm.synthesis.autoencoder import AutoencoderConfig, build_autoencoder, train_autoencoder
from nnunet_mm.synthesis.base import blending_rim
from nnunet_mm.synthesis.latent_diffusion import (DiffusionConfig, LatentDiffusionSynthesizer, _schedulers,
                                                  build_denoiser, condition, default_model_folder, denoising_loss,
                                                  train_diffusion, write_synthetic_pool)
from nnunet_mm.synthesis.model_checkpoints import load_weights, read_config
from nnunet_mm.synthesis.model_data import PreprocessedCrops
from figure_checks import capture_saved_figures, figure_texts

# nnU-Net's blosc2 writer warns about chunk sizes for arrays this small
pytestmark = pytest.mark.filterwarnings("ignore:Warning. Received empty chunks")
CPU = torch.device("cpu")
SHAPE = (12, 24, 24)
PATCH = (8, 16, 16)
TINY_AE = AutoencoderConfig(channels=(8, 16, 16), latent_channels=4, norm_num_groups=8, patch_size=PATCH,
                            batch_size=2, steps=16, lr=2e-3, adversarial_start=8, discriminator_channels=8,
                            discriminator_layers=1, checkpoint_every=8)
TINY_LDM = DiffusionConfig(channels=(16, 32), attention_levels=(False, True), num_head_channels=16, norm_num_groups=8,
                           patch_size=PATCH, batch_size=2, steps=16, lr=2e-3, num_inference_steps=4,
                           margin_voxels=2, checkpoint_every=8)


def _write_preprocessed(folder: Path, num_cases: int = 3) -> Path:
    """Tiny nnU-Net preprocessed cases (blosc2, nnU-Net's own writer): 2 phases, liver ellipsoid (label 1) with a
    tumour sphere (label 2) that is bright in phase 0 and dark in phase 1, in normalised units."""
    from nnunetv2.training.dataloading.nnunet_dataset import nnUNetDatasetBlosc2

    folder.mkdir(parents=True)
    z, y, x = np.meshgrid(*[np.arange(n) for n in SHAPE], indexing="ij")
    for case in range(num_cases):
        rng = np.random.default_rng(case)
        liver = ((z - 6) / 5) ** 2 + ((y - 12) / 10) ** 2 + ((x - 12) / 10) ** 2 <= 1
        cz, cy, cx = 6, 10 + case, 11 + case
        tumour = ((z - cz) / 2) ** 2 + ((y - cy) / 3) ** 2 + ((x - cx) / 3) ** 2 <= 1
        seg = np.where(tumour, 2, np.where(liver, 1, 0)).astype(np.int8)
        phases = []
        for tumour_value in (2.0, -1.5):
            image = np.where(liver, 0.5, -1.0) + np.where(tumour, tumour_value - 0.5, 0.0)
            phases.append(image + 0.05 * rng.standard_normal(SHAPE))
        nnUNetDatasetBlosc2.save_case(np.stack(phases).astype(np.float32), seg[None], {},
                                      str(folder / f"case_{case:03d}"))
    return folder


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A preprocessed folder, a trained tiny autoencoder and a trained tiny latent diffusion model."""
    root = tmp_path_factory.mktemp("ldm")
    data = _write_preprocessed(root / "nnUNetPlans_3d_fullres")
    ae_crops = PreprocessedCrops(data, PATCH, center_labels=(1, 2))
    ae_result = train_autoencoder(ae_crops, TINY_AE, root / "autoencoder", device=CPU, progress=False)
    tumour_crops = PreprocessedCrops(data, PATCH, center_labels=(2,), foreground_fraction=1.0)
    ldm_result = train_diffusion(tumour_crops, root / "autoencoder", TINY_LDM, root / "latent_diffusion",
                                 tumour_label=2, phase_names=["art", "pv"], device=CPU, progress=False)
    return root, data, ae_result, ldm_result


def test_autoencoder_loss_falls_and_model_folder_is_complete(trained):
    root, _, result, _ = trained
    l1 = result.history["l1"]
    assert len(l1) == TINY_AE.steps
    assert np.mean(l1[-4:]) < 0.8 * np.mean(l1[:4])
    assert len(result.history["discriminator"]) == TINY_AE.steps - TINY_AE.adversarial_start  # the GAN ran
    folder = root / "autoencoder"
    for name in ("autoencoder.safetensors", "config.json", "checkpoint_latest.pt", "losses.png"):
        assert (folder / name).is_file(), name
    network = load_weights(folder, "autoencoder", build_autoencoder(TINY_AE))
    z_mu, _ = network.encode(torch.zeros(1, 1, *PATCH))
    assert z_mu.shape == (1, 4, 2, 4, 4)  # downsampling 4, latent channels 4


def test_autoencoder_resume_continues_and_refuses_silent_overwrite(trained, tmp_path):
    root, data, _, _ = trained
    crops = PreprocessedCrops(data, PATCH, center_labels=(1, 2))
    config = AutoencoderConfig(**{**TINY_AE.__dict__, "steps": 3})
    folder = tmp_path / "ae"
    train_autoencoder(crops, config, folder, device=CPU, progress=False)
    with pytest.raises(FileExistsError, match="--resume"):
        train_autoencoder(crops, config, folder, device=CPU, progress=False)
    resumed = train_autoencoder(crops, AutoencoderConfig(**{**TINY_AE.__dict__, "steps": 5}), folder, device=CPU,
                                resume=True, progress=False)
    assert resumed.step == 5 and len(resumed.history["l1"]) == 5


def test_diffusion_loss_falls_on_a_fixed_batch(trained):
    root, data, _, result = trained
    folder = root / "latent_diffusion"
    saved = read_config(folder)
    autoencoder = load_weights(folder, "autoencoder", build_autoencoder(TINY_AE)).eval()
    crops = PreprocessedCrops(data, PATCH, center_labels=(2,), foreground_fraction=1.0)
    images, segs, phases = crops.sample(4, np.random.default_rng(123))
    images, mask, phases = torch.from_numpy(images), torch.from_numpy(segs == 2), torch.from_numpy(phases)
    scheduler, _ = _schedulers(TINY_LDM)

    def fixed_loss(denoiser):
        generator = torch.Generator().manual_seed(7)
        with torch.no_grad():
            return float(np.mean([denoising_loss(denoiser, autoencoder, scheduler, images, mask, phases,
                                                 num_phases=2, latent_scale=saved["latent_scale"],
                                                 generator=generator) for _ in range(4)]))

    torch.manual_seed(TINY_LDM.seed)
    initial = build_denoiser(TINY_LDM, 4, 2).eval()  # the same initialisation as the training run
    trained_denoiser = load_weights(folder, "denoiser", build_denoiser(TINY_LDM, 4, 2)).eval()
    assert fixed_loss(trained_denoiser) < 0.9 * fixed_loss(initial)
    assert len(result.history["mse"]) == TINY_LDM.steps
    assert saved["num_phases"] == 2 and saved["phase_names"] == ["art", "pv"] and saved["latent_scale"] > 0
    assert (folder / "losses.png").is_file()


def test_sampling_shapes_and_mask_region(trained):
    root, _, _, _ = trained
    synthesizer = LatentDiffusionSynthesizer.from_folder(root / "latent_diffusion", CPU)
    images = torch.randn(3, 2, 12, 20, 28)
    mask = torch.zeros(3, 1, 12, 20, 28, dtype=torch.bool)
    mask[0, 0, 4:8, 6:10, 12:17] = True
    mask[2, 0, 0:3, 16:20, 0:4] = True  # touching the borders
    out = synthesizer(images, mask, torch.Generator().manual_seed(0))
    assert out.shape == images.shape and out.dtype == images.dtype
    outside = ~blending_rim(mask).expand_as(images)
    assert torch.equal(out[outside], images[outside])  # bit-identical beyond the 2-voxel rim
    assert torch.equal(out[1], images[1])  # empty mask: unchanged
    inside = mask.expand_as(images)
    assert (out[inside] - images[inside]).abs().mean() > 0.05  # the tumour region was actually redrawn
    again = synthesizer(images, mask, torch.Generator().manual_seed(0))
    assert torch.equal(out, again)  # all randomness from the caller's generator


def test_synthesizer_refuses_2d_patches_and_wrong_channel_count(trained):
    root, _, _, _ = trained
    synthesizer = LatentDiffusionSynthesizer.from_folder(root / "latent_diffusion", CPU)
    with pytest.raises(ValueError, match="3D"):
        synthesizer(torch.zeros(1, 2, 32, 32), torch.ones(1, 1, 32, 32, dtype=torch.bool), torch.Generator())
    with pytest.raises(ValueError, match="2 phase"):
        synthesizer(torch.zeros(1, 3, 16, 32, 32), torch.ones(1, 1, 16, 32, 32, dtype=torch.bool),
                    torch.Generator())
    with pytest.raises(FileNotFoundError, match="train-diffusion"):
        LatentDiffusionSynthesizer.from_folder(root / "nowhere", CPU)
    assert default_model_folder(Path("/p/Dataset1_X")) == Path("/p/Dataset1_X/nnunet_mm_synthesis/latent_diffusion")


def test_synthetic_pool_inserts_tumour_label_where_tumour_was_painted(trained, tmp_path, monkeypatch):
    figures = capture_saved_figures(monkeypatch)
    root, data, _, _ = trained
    dataset_json = {"labels": {"background": 0, "liver": 1, "tumor": 2}, "channel_names": {"0": "CT", "1": "CT"},
                    "nnunet_mm": {"synthesis": {"class_probabilities": [1, 1, 0, 0]}}}
    from nnunetv2.training.dataloading.nnunet_dataset import nnUNetDatasetBlosc2

    out = write_synthetic_pool(data, dataset_json, root / "latent_diffusion", tmp_path / "pool", num_samples=1,
                               spacing=(3.0, 1.5, 1.5), patch_size=PATCH, device=CPU, progress=False,
                               configuration={"name": "3d_fullres", "spacing": [3.0, 1.5, 1.5]})
    record = json.loads((out / "pool.json").read_text(encoding="utf-8"))
    assert len(record["samples"]) == 1 and (out / "pool.png").is_file()
    assert record["configuration"]["name"] == "3d_fullres" and record["patch_size"] == list(PATCH)
    # an nnU-Net preprocessed case, read by nnU-Net's own dataset class; class_locations on the synthetic tumour
    pooled, seg, _, properties = nnUNetDatasetBlosc2(str(out)).load_case("pool_0000")
    assert pooled.shape == (2, *PATCH) and seg.shape == (1, *PATCH)
    assert (np.asarray(seg) == 2).sum() >= record["samples"][0]["tumour_voxels"] > 0
    locations = properties["class_locations"][2]
    assert len(locations) and (np.asarray(seg)[tuple(locations.T)] == 2).all()
    texts = figure_texts(figures[-1])  # pool.png
    assert texts[0].startswith("synthetic pool: first 1 sample(s)")
    case = record["samples"][0]["source_case"]
    assert any(re.fullmatch(rf"{case} crop z\d+\nchannel 1 synthetic", text) for text in texts), texts
    with pytest.raises(FileExistsError):
        write_synthetic_pool(data, dataset_json, root / "latent_diffusion", tmp_path / "pool", num_samples=1,
                             spacing=(3.0, 1.5, 1.5), patch_size=PATCH, device=CPU, progress=False)


def test_cli_trains_both_models_and_reports_missing_plans(trained, tmp_path, monkeypatch, capsys):
    from nnunet_mm.cli.main import main

    root, data, _, _ = trained
    preprocessed = tmp_path / "preprocessed"
    dataset = preprocessed / "Dataset987_Tiny"
    dataset.mkdir(parents=True)
    (dataset / "nnUNetPlans_3d_fullres").symlink_to(data, target_is_directory=True)
    (dataset / "dataset.json").write_text(json.dumps(
        {"labels": {"background": 0, "liver": 1, "tumor": 2}, "channel_names": {"0": "CT", "1": "CT"},
         "file_ending": ".nii.gz", "numTraining": 3}), encoding="utf-8")
    monkeypatch.setenv("nnUNet_raw", str(tmp_path / "raw"))
    monkeypatch.setenv("nnUNet_preprocessed", str(preprocessed))
    monkeypatch.setenv("nnUNet_results", str(tmp_path / "results"))
    assert main(["train-autoencoder", "-d", "Dataset987_Tiny", "-c", "3d_fullres"]) == 1
    assert "nnUNetPlans.json: no such plans" in capsys.readouterr().err
    (dataset / "nnUNetPlans.json").write_text(json.dumps(
        {"dataset_name": "Dataset987_Tiny", "plans_name": "nnUNetPlans", "configurations": {"3d_fullres": {
            "data_identifier": "nnUNetPlans_3d_fullres", "spacing": [3.0, 1.5, 1.5],
            "architecture": {"network_class_name": "x", "arch_kwargs": {}, "_kw_requires_import": []}}}}), encoding="utf-8")
    tiny = ["--steps", "1", "--patch-size", *map(str, PATCH), "--batch-size", "1", "-device", "cpu"]
    assert main(["train-autoencoder", "-d", "Dataset987_Tiny", "--channels", "8", "16", "16", "--latent-channels",
                 "4", "--norm-groups", "8", "--discriminator-layers", "1", *tiny]) == 0
    assert main(["train-diffusion", "-d", "Dataset987_Tiny", "--channels", "16", "32", "--norm-groups", "8",
                 "--head-channels", "16", "--inference-steps", "2", *tiny]) == 0
    model = dataset / "nnunet_mm_synthesis" / "latent_diffusion"
    assert (model / "denoiser.safetensors").is_file() and (model / "autoencoder.safetensors").is_file()
    assert main(["synth-pool", "-d", "Dataset987_Tiny", "-n", "1", "-o", str(tmp_path / "pool"), "-device",
                 "cpu", "--patch-size", *map(str, PATCH)]) == 0
    assert (tmp_path / "pool" / "pool_0000.b2nd").is_file() and (tmp_path / "pool" / "pool_0000.pkl").is_file()
    assert main(["synth-pool", "-d", "Dataset987_Tiny", "-n", "1", "-device", "cpu", "--patch-size",
                 *map(str, PATCH)]) == 0  # default folder: where SynthTumorTrainer looks
    assert (dataset / "nnunet_mm_synthesis" / "pool_3d_fullres" / "pool.json").is_file()


@pytest.mark.parametrize("phase_noise", ["shared", "independent"])
def test_the_phases_of_one_tumour_start_from_one_noise_draw_unless_independent(trained, phase_noise):
    """With no denoising step the sample is the decoded initial noise: identical across the phases when shared."""
    import dataclasses

    root, _, _, _ = trained
    synthesizer = LatentDiffusionSynthesizer.from_folder(root / "latent_diffusion", CPU)
    synthesizer.config = dataclasses.replace(synthesizer.config, phase_noise=phase_noise)
    synthesizer.scheduler.timesteps = synthesizer.scheduler.timesteps[:0]
    images = torch.randn(2, 1, *PATCH)
    mask = torch.zeros(2, 1, *PATCH, dtype=torch.bool)
    mask[:, :, 2:6, 4:12, 4:12] = True
    decoded = synthesizer.sample(images, mask, torch.arange(2), torch.Generator().manual_seed(0))
    assert torch.equal(decoded[0], decoded[1]) == (phase_noise == "shared")


def test_phase_noise_setting_is_checked():
    with pytest.raises(ValueError, match="phase_noise"):
        DiffusionConfig(phase_noise="joint")


def test_each_phase_crop_gets_its_own_label_in_a_phases_configuration(tmp_path):
    """A ``_phases`` configuration's segmentation has one channel per non-reference phase; the diffusion model's
    crops of that phase are labelled with it (the tumour where that phase shows it), the reference with channel 0."""
    from nnunetv2.training.dataloading.nnunet_dataset import nnUNetDatasetBlosc2

    folder = tmp_path / "nnUNetPlans_3d_fullres_phases"
    folder.mkdir()
    seg = np.zeros((2, *SHAPE), np.int8)
    seg[0, 4:8, 8:14, 8:14] = 2  # reference phase's tumour
    seg[1, 4:8, 10:16, 10:16] = 2  # the same tumour, shifted in the other phase
    nnUNetDatasetBlosc2.save_case(np.zeros((2, *SHAPE), np.float32), seg, {}, str(folder / "case_000"))
    whole_case = PreprocessedCrops(folder, SHAPE, center_labels=(2,), foreground_fraction=1.0, reference_channel=0)
    whole_labels, whole_channels = whole_case.sample(8, np.random.default_rng(1))[1:]  # crops = the whole case
    for label, channel in zip(whole_labels[:, 0], whole_channels):
        np.testing.assert_array_equal(label == 2, seg[channel] == 2)
    assert set(whole_channels) == {0, 1}
    swapped = PreprocessedCrops(folder, SHAPE, center_labels=(2,), foreground_fraction=1.0, reference_channel=1)
    assert np.array_equal(swapped.phase_label(seg, 1), seg[0]) and np.array_equal(swapped.phase_label(seg, 0), seg[1])


def test_a_model_folder_is_tied_to_the_configuration_it_learnt(trained, tmp_path):
    """The record of the configuration is stored at training; loading for another spacing or normalisation is
    refused naming both configurations; a folder without the record (older) still loads."""
    import shutil
    from types import SimpleNamespace

    from nnunet_mm.synthesis.latent_diffusion import configuration_record
    from nnunet_mm.synthesis.model_checkpoints import write_config

    root, _, _, _ = trained
    folder = tmp_path / "ldm"
    shutil.copytree(root / "latent_diffusion", folder)
    manager = SimpleNamespace(data_identifier="nnUNetPlans_3d_fullres", spacing=(2.0, 1.0, 1.0),
                              normalization_schemes=["CTNormalization", "CTNormalization"])
    trained_on = configuration_record("3d_fullres", manager)
    write_config(folder, {**read_config(folder), "configuration": trained_on})
    assert LatentDiffusionSynthesizer.from_folder(folder, CPU, dict(trained_on, name="3d_fullres_phases"))
    other_spacing = configuration_record("3d_lowres", SimpleNamespace(**{**manager.__dict__, "spacing": (4, 2, 2)}))
    with pytest.raises(ValueError, match=r"ldm: the latent-diffusion model was trained on configuration '3d_fullres' "
                                         r"and is used with '3d_lowres' \(spacing"):
        LatentDiffusionSynthesizer.from_folder(folder, CPU, other_spacing)
    other_norm = configuration_record("3d_fullres", SimpleNamespace(
        **{**manager.__dict__, "normalization_schemes": ["ZScoreNormalization", "CTNormalization"]}))
    with pytest.raises(ValueError, match="normalisation"):
        LatentDiffusionSynthesizer.from_folder(folder, CPU, other_norm)
    assert LatentDiffusionSynthesizer.from_folder(root / "latent_diffusion", CPU, other_spacing)  # no record: loads


def _phase_contrast(synthesizer: LatentDiffusionSynthesizer, images: np.ndarray, mask: torch.Tensor,
                    denoiser: torch.nn.Module | None = None, timestep: int = 900) -> tuple[float, float]:
    """One-step samples x̂0 = Dec((z_t − √(1−ᾱ)·ε̂)/√ᾱ) of phase 0 and phase 1 from the same noise z_t (no blending):
    the mean of x̂0(phase 0) − x̂0(phase 1) inside ``mask`` and its mean magnitude outside."""
    denoiser = denoiser or synthesizer.denoiser
    ddpm, _ = _schedulers(synthesizer.config)
    alpha = ddpm.alphas_cumprod[timestep]
    samples = []
    for phase in (0, 1):
        crop = torch.from_numpy(images[phase:phase + 1])[None].float()
        cond = condition(synthesizer.autoencoder, crop, mask, torch.tensor([phase]), synthesizer.num_phases,
                         synthesizer.latent_scale)
        z = torch.randn((1, synthesizer.autoencoder_config.latent_channels, *cond.shape[2:]),
                        generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            eps = denoiser(torch.cat((z, cond), 1), timesteps=torch.tensor([timestep]))
            z0 = (z - (1 - alpha).sqrt() * eps) / alpha.sqrt()
            samples.append(synthesizer.autoencoder.decode(z0 / synthesizer.latent_scale)[0, 0])
    difference, inside = samples[0] - samples[1], mask[0, 0]
    return float(difference[inside].mean()), float(difference[~inside].abs().mean())


def _denoising_errors(synthesizer: LatentDiffusionSynthesizer, denoiser: torch.nn.Module,
                      crops: PreprocessedCrops) -> dict[str, float]:
    """Mean ε-prediction error on real tumour crops (16 crops × 3 timesteps, fixed noise) with the right condition,
    with the other phase, and with the mask moved half a crop along x."""
    ddpm, _ = _schedulers(synthesizer.config)
    generator, rng = torch.Generator().manual_seed(0), np.random.default_rng(3)
    errors: dict[str, list[float]] = {"right": [], "other_phase": [], "moved_mask": []}
    for index in range(16):
        _, images, seg = crops.sample_case_crop(rng)
        mask, phase = torch.from_numpy(seg == 2)[None, None], index % 2
        image = torch.from_numpy(images[phase:phase + 1])[None].float()
        with torch.no_grad():
            z0 = synthesizer.autoencoder.encode(image)[0] * synthesizer.latent_scale
            for timestep in (200, 500, 800):
                noise = torch.randn(z0.shape, generator=generator)
                noisy = ddpm.add_noise(z0, noise, torch.tensor([timestep]))
                for key, condition_phase, condition_mask in (("right", phase, mask), ("other_phase", 1 - phase, mask),
                                                             ("moved_mask", phase, torch.roll(mask, 8, -1))):
                    cond = condition(synthesizer.autoencoder, image, condition_mask, torch.tensor([condition_phase]),
                                     synthesizer.num_phases, synthesizer.latent_scale)
                    eps = denoiser(torch.cat((noisy, cond), 1), timesteps=torch.tensor([timestep]))
                    errors[key].append(float(((eps - noise) ** 2).mean()))
    return {key: float(np.mean(values)) for key, values in errors.items()}


def test_a_trained_model_draws_each_phase_own_tumour_where_the_mask_says(tmp_path):
    """Conditioning matters, on data whose tumours are bright in phase 0 and dark in phase 1 (liver in between), for a
    briefly trained tiny model: (1) the denoiser predicts the noise of real tumour crops clearly worse when told the
    other phase or a moved mask (an untrained denoiser does not care); (2) on a tumour-free crop, one-step samples
    of phase 0 are brighter than those of phase 1 inside the mask, much more than outside."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the suite runs two workers on two cores; training here is < 1 min on one
    try:
        _check_trained_conditioning(tmp_path)
    finally:
        torch.set_num_threads(threads)


def _check_trained_conditioning(tmp_path) -> None:
    import dataclasses

    data = _write_preprocessed(tmp_path / "nnUNetPlans_3d_fullres")
    autoencoder = dataclasses.replace(TINY_AE, steps=800, lr=3e-3, adversarial_start=800, checkpoint_every=800)
    train_autoencoder(PreprocessedCrops(data, PATCH, center_labels=(1, 2)), autoencoder, tmp_path / "ae",
                      device=CPU, progress=False)
    diffusion = dataclasses.replace(TINY_LDM, steps=2000, lr=3e-3, checkpoint_every=2000)
    crops = PreprocessedCrops(data, PATCH, center_labels=(2,), foreground_fraction=1.0)
    train_diffusion(crops, tmp_path / "ae", diffusion, tmp_path / "ldm", tumour_label=2, device=CPU, progress=False)
    synthesizer = LatentDiffusionSynthesizer.from_folder(tmp_path / "ldm", CPU)

    trained = _denoising_errors(synthesizer, synthesizer.denoiser, crops)  # measured 0.029-0.034 / +30-87 % / +48-64 %
    assert trained["other_phase"] > 1.15 * trained["right"], trained
    assert trained["moved_mask"] > 1.15 * trained["right"], trained
    untrained = _denoising_errors(synthesizer, build_denoiser(diffusion, TINY_AE.latent_channels, 2), crops)
    assert untrained["other_phase"] < 1.05 * untrained["right"] and untrained["moved_mask"] < 1.05 * untrained["right"]

    _, images, seg = crops.sample_case_crop(np.random.default_rng(5))
    healthy = np.where(seg[None] == 2, 0.5, images).astype(np.float32)  # the tumour replaced by liver
    inside, outside = _phase_contrast(synthesizer, healthy, torch.from_numpy(seg == 2)[None, None])
    assert inside > 0.3 and inside > 2 * outside, (inside, outside)  # measured 0.54-0.84 vs 0.20-0.25
