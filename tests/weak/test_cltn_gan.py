"""GAN training: the losses fall on tiny data, checkpoints resume exactly, weights load without pickle."""
import numpy as np
import pytest
import torch

from nnunet_mm.weak.cltn_gan import (CHECKPOINT_FILE, GENERATOR_FILE, CLTNConfig, LabelTransferGAN, augment_batch,
                                     load_generator, train_label_transfer_gan)
from nnunet_mm.weak.cltn_losses import loss_weights_preset
from nnunet_mm.weak.weak_images import WeakImage
from figure_checks import png_contrast

TINY = dict(in_channels=3, image_size=16, base_channels=4, num_res_blocks=1, discriminator_channels=4)


def _tiny_batch(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    normal = torch.rand(2, 3, 16, 16, generator=g) * 0.2 + 0.3
    diseased = normal.clone()
    diseased[:, :, 5:11, 5:11] = -0.6  # a dark lesion
    return diseased, normal


def test_training_steps_lower_generator_and_discriminator_losses():
    torch.manual_seed(0)
    gan = LabelTransferGAN(CLTNConfig(**TINY, learning_rate=2e-3, loss_weights=loss_weights_preset("isic")))
    real_a, real_b = _tiny_batch(0)
    with torch.no_grad():
        before_d = float(gan.discriminator_loss(real_a, real_b))
        before_g = {k: float(v) for k, v in gan.generator_losses(real_a, real_b).items()}
    for _ in range(6):
        gan.train_step(real_a, real_b)
    with torch.no_grad():
        after_d = float(gan.discriminator_loss(real_a, real_b))
        after_g = {k: float(v) for k, v in gan.generator_losses(real_a, real_b).items()}
    assert after_d < before_d
    content = ("cycle", "identity", "reconstruction", "cam")
    assert sum(after_g[k] for k in content) < sum(before_g[k] for k in content)


def test_augmentation_keeps_shape_and_range_and_depends_on_the_generator():
    images = torch.rand(3, 3, 16, 16) * 2 - 1
    first = augment_batch(images, torch.Generator().manual_seed(1))
    again = augment_batch(images, torch.Generator().manual_seed(1))
    other = augment_batch(images, torch.Generator().manual_seed(2))
    assert first.shape == images.shape and first.abs().max() <= 1.0
    torch.testing.assert_close(first, again)
    assert not torch.equal(first, other)


def _weak_images() -> list[WeakImage]:
    diseased, normal = _tiny_batch(3)
    foreground = np.ones((16, 16), bool)
    return ([WeakImage(f"d{i}", None, x.numpy(), foreground, "diseased", (16, 16)) for i, x in enumerate(diseased)]
            + [WeakImage(f"n{i}", None, x.numpy(), foreground, "normal", (16, 16)) for i, x in enumerate(normal)])


def test_resumed_training_equals_uninterrupted_training(tmp_path):
    config = CLTNConfig(**TINY)
    train_label_transfer_gan(_weak_images(), tmp_path / "straight", iterations=3, config=config, progress=False)
    train_label_transfer_gan(_weak_images(), tmp_path / "resumed", iterations=2, config=config, progress=False)
    train_label_transfer_gan(_weak_images(), tmp_path / "resumed", iterations=3, config=config, resume=True,
                             progress=False)
    straight = torch.load(tmp_path / "straight" / CHECKPOINT_FILE, weights_only=True)
    resumed = torch.load(tmp_path / "resumed" / CHECKPOINT_FILE, weights_only=True)
    assert resumed["iteration"] == 3 and len(resumed["history"]["generator"]) == 3
    for key, value in straight["networks"]["generator_ab"].items():
        torch.testing.assert_close(resumed["networks"]["generator_ab"][key], value)
    generator = load_generator(tmp_path / "resumed", torch.device("cpu"))
    assert not generator.training
    assert (tmp_path / "resumed" / GENERATOR_FILE).is_file() and (tmp_path / "resumed" / "cltn_losses.png").is_file()


def test_existing_checkpoint_is_not_overwritten_without_a_flag(tmp_path):
    config = CLTNConfig(**TINY)
    train_label_transfer_gan(_weak_images(), tmp_path, iterations=1, config=config, progress=False)
    with pytest.raises(FileExistsError, match="--continue.*--overwrite"):
        train_label_transfer_gan(_weak_images(), tmp_path, iterations=2, config=config, progress=False)


def test_gan_needs_both_kinds_of_images(tmp_path):
    diseased_only = [i for i in _weak_images() if i.image_label == "diseased"]
    with pytest.raises(ValueError, match="2 diseased and 0 normal"):
        train_label_transfer_gan(diseased_only, tmp_path, iterations=1, config=CLTNConfig(**TINY), progress=False)


def _drawn_points(axis) -> int:
    return sum(len(line.get_xdata()) for line in axis.get_lines() if line.get_marker() not in (None, "", "None"))


def test_the_loss_plot_of_a_three_iteration_run_shows_every_iteration_as_a_marker(tmp_path):
    """A 50-iteration moving average of 3 values is one point, which a line alone does not draw: the plot was blank."""
    from nnunet_mm.weak.cltn_gan import LOSS_NAMES, loss_curves_figure, save_loss_curves

    history = {name: [1.0 + i, 0.8 + i, 0.5 + i] for i, name in enumerate(LOSS_NAMES)}
    history["adversarial"] = [0.0, -0.1, 0.2]  # a value <= 0 keeps that panel linear instead of dropping it
    figure = loss_curves_figure(history)
    totals, terms = figure.axes
    assert _drawn_points(totals) == 2 * 3 and _drawn_points(terms) == 5 * 3
    assert totals.get_title() == "totals (3 iterations)" and totals.get_yscale() == "log"
    assert terms.get_yscale() == "linear"
    assert [t.get_text() for t in totals.get_legend().get_texts()] == ["discriminator", "generator"]
    assert "3 iteration(s)" in figure.get_suptitle()
    assert png_contrast(save_loss_curves(history, tmp_path / "cltn_losses.png")) > 0.05


def test_an_empty_loss_history_says_so_instead_of_drawing_empty_axes():
    from nnunet_mm.weak.cltn_gan import LOSS_NAMES, loss_curves_figure

    figure = loss_curves_figure({name: [] for name in LOSS_NAMES})
    assert all("no iterations yet" in [t.get_text() for t in axis.texts] for axis in figure.axes)


# ----------------------------------------------------------------------------------------------------------------
# the discriminators judge composites only in the generator's loss (public code); the attention finds the lesion

def _judged_inputs(gan: LabelTransferGAN, compute) -> tuple[list[str], dict]:
    """What each discriminator call of ``compute()`` received: "translation", "composite" or "real"."""
    outputs, judged = [], []
    hooks = [generator.register_forward_hook(lambda module, args, out: outputs.append(out))
             for generator in (gan.generator_ab, gan.generator_ba)]

    def record(module, args):
        kind = next((name for out in outputs for name in ("translation", "composite")
                     if args[0] is getattr(out, name)), "real")
        judged.append(kind)

    hooks += [discriminator.register_forward_pre_hook(record) for discriminator in gan.discriminators.values()]
    try:
        result = compute()
    finally:
        for hook in hooks:
            hook.remove()
    return judged, result


def test_composites_are_judged_in_the_generator_loss_but_never_trained_as_fakes_by_default():
    torch.manual_seed(0)
    real_a, real_b = _tiny_batch(0)
    gan = LabelTransferGAN(CLTNConfig(**TINY))
    judged, _ = _judged_inputs(gan, lambda: gan.discriminator_loss(real_a, real_b))
    assert sorted(judged) == ["real"] * 4 + ["translation"] * 4  # 2 domains x (global, local)
    judged, _ = _judged_inputs(gan, lambda: gan.generator_losses(real_a, real_b))
    assert judged.count("composite") == 4 and judged.count("translation") == 4
    both = LabelTransferGAN(CLTNConfig(**TINY, discriminate_composites=True))
    judged, _ = _judged_inputs(both, lambda: both.discriminator_loss(real_a, real_b))
    assert sorted(judged) == ["composite"] * 4 + ["real"] * 4 + ["translation"] * 4


def test_a_checkpoint_from_before_the_setting_resumes_with_composites_in_the_discriminator_loss():
    stored = CLTNConfig(**TINY).to_dict()
    del stored["discriminate_composites"]
    assert CLTNConfig.from_dict(stored).discriminate_composites
    assert not CLTNConfig.from_dict(CLTNConfig(**TINY).to_dict()).discriminate_composites


def _skin_images(rng: np.random.Generator, count: int, size: int, lesion: bool) -> tuple[torch.Tensor, torch.Tensor]:
    from nnunet_mm.weak.synthetic import make_skin_image

    pairs = [make_skin_image(rng, size, lesion) for _ in range(count)]
    images = np.stack([image for image, _ in pairs]).transpose(0, 3, 1, 2) / 127.5 - 1.0
    return torch.from_numpy(images).float(), torch.from_numpy(np.stack([mask for _, mask in pairs])).float()


def _attention_on_lesions(generator, images: torch.Tensor, lesions: torch.Tensor) -> tuple[float, float]:
    """(mean attention inside the lesions − mean outside, share of the attention mass inside / lesion area share)."""
    generator.eval()
    with torch.no_grad():
        attention = generator(images).attention_mask[:, 0]
    generator.train()
    inside = (attention * lesions).sum((1, 2)) / lesions.sum((1, 2))
    outside = (attention * (1 - lesions)).sum((1, 2)) / (1 - lesions).sum((1, 2))
    mass_share = (attention * lesions).sum((1, 2)) / attention.sum((1, 2))
    return float((inside - outside).mean()), float((mass_share / lesions.mean((1, 2))).mean())


def test_after_a_short_training_the_attention_concentrates_on_the_lesions_of_held_out_images():
    """250 GAN steps on 16 + 16 synthetic 64-px skin images (the CPU preset's size, 16 x 16 attention cells): on 8
    held-out diseased images the mean attention inside the lesions exceeds that outside by >= 0.08 and the lesions
    hold >= 1.1x their area share of the attention mass (measured: 0.125 and 1.24). The untrained generator is flat
    (0.009 and 1.02). The bounds are modest on purpose: this short a GAN run is noisy (at lr 1e-3 the contrast
    swings between -0.1 and 0.7 over seeds), so the test checks the direction, not the quality."""
    rng = np.random.default_rng(0)
    diseased, _ = _skin_images(rng, 16, 64, True)
    normal, _ = _skin_images(rng, 16, 64, False)
    held_out, lesions = _skin_images(rng, 8, 64, True)
    torch.manual_seed(0)
    gan = LabelTransferGAN(CLTNConfig(in_channels=3, image_size=64, base_channels=8, num_res_blocks=1,
                                      discriminator_channels=8, learning_rate=5e-4,
                                      loss_weights=loss_weights_preset("isic")))
    contrast, concentration = _attention_on_lesions(gan.generator_ab, held_out, lesions)
    assert contrast < 0.05 and concentration < 1.05  # the untrained model fails the bound
    generator = torch.Generator().manual_seed(0)
    for _ in range(250):
        index_a, index_b = torch.randint(16, (2,), generator=generator), torch.randint(16, (2,), generator=generator)
        gan.train_step(augment_batch(diseased[index_a], generator), augment_batch(normal[index_b], generator))
    contrast, concentration = _attention_on_lesions(gan.generator_ab, held_out, lesions)
    assert contrast >= 0.08 and concentration >= 1.1, (contrast, concentration)
