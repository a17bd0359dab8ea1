"""Training the label-transfer GAN (CLTN, methods.md §4.2–4.3) on diseased (domain A) and normal (domain B) images.

:class:`LabelTransferGAN` holds ``G_AB`` (diseased → normal, whose attention mask marks the lesion), ``G_BA`` and a
global and a local discriminator per domain. One :meth:`LabelTransferGAN.train_step` is a discriminator step then a
generator step (Adam, lr 1e-4, β = (0.5, 0.999), weight decay 2e-5), followed by clipping ρ to [0, 1], as in the
public code. The generator's adversarial loss judges both the raw translation and the composite (joint
discrimination); the discriminators learn from real images and raw translations only, as in the public code, so that
a composite (input outside the mask) is never pushed towards "fake", which would reward masks that grow to cover
more of the input. ``CLTNConfig.discriminate_composites`` also shows the composites to the discriminators (as
methods.md §4.3 reads); the benchmark decides between the two.

:func:`train_label_transfer_gan` runs it on a :mod:`~nnunet_mm.weak.weak_images` dataset and writes a resumable
checkpoint (``cltn_checkpoint.pt``, loadable with ``torch.load(weights_only=True)``), the generator used for the
pseudo masks (``generator_ab.safetensors``) and a loss-curve PNG. No checkpoint is selected on labelled data (the
public code selects on its test set): the last one is used.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from nnunet_mm.io.figure_style import figure_style
from nnunet_mm.weak.cltn_losses import (CLTNLossWeights, cam_classification, discriminator_terms,
                                        generator_adversarial_terms, loss_weights_preset)
from nnunet_mm.weak.cltn_networks import CLTNDiscriminator, CLTNGenerator
from nnunet_mm.weak.image_labels import DISEASED, NORMAL
from nnunet_mm.weak.weak_images import WeakImage

if TYPE_CHECKING:
    from matplotlib.figure import Figure

logger = logging.getLogger(__name__)

CHECKPOINT_FILE = "cltn_checkpoint.pt"
GENERATOR_FILE = "generator_ab.safetensors"
# below this image side the attention mask (a quarter of it) has under 16 x 16 cells: a lesion of a fifth of the
# image is then 3 cells wide, and its bilinear upsampling gives blobs that overshoot the lesion
MIN_OUTLINING_SIZE = 64
LOSS_NAMES = ("discriminator", "generator", "adversarial", "cycle", "identity", "cam", "reconstruction")


@dataclass(frozen=True)
class CLTNConfig:
    """Architecture and optimiser settings (stored in the checkpoint, so a resumed run rebuilds the same GAN)."""

    in_channels: int
    image_size: int = 256
    base_channels: int = 54  # the paper's ch
    num_res_blocks: int = 4  # the paper's n_res
    discriminator_channels: int = 64
    learning_rate: float = 1e-4
    weight_decay: float = 2e-5
    loss_weights: CLTNLossWeights = field(default_factory=lambda: loss_weights_preset("brats"))
    discriminate_composites: bool = False  # True: composites are fakes for D too (not the public code)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "CLTNConfig":
        """The config stored in a checkpoint; one written before ``discriminate_composites`` existed was trained
        with the composites shown to the discriminators, and resumes that way."""
        values = {"discriminate_composites": True, **values}
        return cls(**{**values, "loss_weights": CLTNLossWeights(**values["loss_weights"])})


class LabelTransferGAN(nn.Module):
    """Two attention generators and four CAM discriminators with their optimisers (see the module docstring)."""

    def __init__(self, config: CLTNConfig):
        super().__init__()
        self.config = config
        make_generator = lambda: CLTNGenerator(config.in_channels, config.base_channels,  # noqa: E731
                                               config.num_res_blocks)
        self.generator_ab, self.generator_ba = make_generator(), make_generator()
        self.discriminators = nn.ModuleDict({
            f"{domain}_{scope}": CLTNDiscriminator(config.in_channels, config.image_size, layers,
                                                   config.discriminator_channels)
            for domain in ("a", "b") for scope, layers in (("global", 7), ("local", 5))})
        adam = dict(lr=config.learning_rate, betas=(0.5, 0.999), weight_decay=config.weight_decay)
        self.generator_optimizer = torch.optim.Adam(
            list(self.generator_ab.parameters()) + list(self.generator_ba.parameters()), **adam)
        self.discriminator_optimizer = torch.optim.Adam(self.discriminators.parameters(), **adam)

    def _judge(self, domain: str, images: list[torch.Tensor]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return [self.discriminators[f"{domain}_{scope}"](image) for image in images for scope in ("global", "local")]

    def discriminator_loss(self, real_a: torch.Tensor, real_b: torch.Tensor) -> torch.Tensor:
        """λ_adv × LSGAN loss of all four discriminators on real images and (detached) raw translations, plus the
        composites when ``config.discriminate_composites`` is set (see the module docstring)."""
        with torch.no_grad():
            fake_ab, fake_ba = self.generator_ab(real_a), self.generator_ba(real_b)
        loss = real_a.new_zeros(())
        for domain, real, fake in (("b", real_b, fake_ab), ("a", real_a, fake_ba)):
            fakes = [fake.translation, fake.composite] if self.config.discriminate_composites else [fake.translation]
            for scope in ("global", "local"):
                discriminator = self.discriminators[f"{domain}_{scope}"]
                loss = loss + discriminator_terms(discriminator(real), [discriminator(image) for image in fakes])
        return self.config.loss_weights.adversarial * loss

    def generator_losses(self, real_a: torch.Tensor, real_b: torch.Tensor) -> dict[str, torch.Tensor]:
        """Weighted generator terms for both directions, and their sum under ``"generator"``."""
        weights = self.config.loss_weights
        fake_ab, fake_ba = self.generator_ab(real_a), self.generator_ba(real_b)
        cycle_aba, cycle_bab = self.generator_ba(fake_ab.translation), self.generator_ab(fake_ba.translation)
        identity_aa, identity_bb = self.generator_ba(real_a), self.generator_ab(real_b)
        terms = {
            "adversarial": weights.adversarial * (
                generator_adversarial_terms(self._judge("b", [fake_ab.translation, fake_ab.composite]))
                + generator_adversarial_terms(self._judge("a", [fake_ba.translation, fake_ba.composite]))),
            "cycle": weights.cycle * (F.l1_loss(cycle_aba.translation, real_a)
                                      + F.l1_loss(cycle_bab.translation, real_b)),
            "identity": weights.identity * (F.l1_loss(identity_aa.translation, real_a)
                                            + F.l1_loss(identity_bb.translation, real_b)),
            "cam": weights.cam * (cam_classification(fake_ab.cam_logit, identity_bb.cam_logit)
                                  + cam_classification(fake_ba.cam_logit, identity_aa.cam_logit)),
            "reconstruction": weights.reconstruction * (F.l1_loss(fake_ab.reconstruction, real_a)
                                                        + F.l1_loss(fake_ba.reconstruction, real_b)),
        }
        terms["generator"] = sum(terms.values())
        return terms

    def train_step(self, real_a: torch.Tensor, real_b: torch.Tensor) -> dict[str, float]:
        """One discriminator step, one generator step, ρ clipping; returns every loss as a float.

        Args:
            real_a: (B, C, H, W) diseased images in [-1, 1].
            real_b: (B, C, H, W) normal images in [-1, 1].
        """
        self.train()
        self.discriminator_optimizer.zero_grad(set_to_none=True)
        discriminator = self.discriminator_loss(real_a, real_b)
        discriminator.backward()
        self.discriminator_optimizer.step()

        self.generator_optimizer.zero_grad(set_to_none=True)
        for parameter in self.discriminators.parameters():
            parameter.requires_grad_(False)
        terms = self.generator_losses(real_a, real_b)
        terms["generator"].backward()
        for parameter in self.discriminators.parameters():
            parameter.requires_grad_(True)
        self.generator_optimizer.step()
        self.generator_ab.clip_rho()
        self.generator_ba.clip_rho()
        return {"discriminator": float(discriminator.detach()), **{k: float(v.detach()) for k, v in terms.items()}}


def augment_batch(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """The paper's augmentation on (B, C, S, S) images: H/V flips, resize to 306/256·S then a random S crop, and
    contrast jitter 0.1 (per sample)."""
    batch, _, size, _ = images.shape
    device = images.device
    draws = torch.rand(batch, 5, generator=generator, device=generator.device).to(device)
    flipped = torch.where(draws[:, 0, None, None, None] < 0.5, images.flip(-1), images)
    flipped = torch.where(draws[:, 1, None, None, None] < 0.5, flipped.flip(-2), flipped)
    large = int(round(size * 306 / 256))
    enlarged = F.interpolate(flipped, size=(large, large), mode="bilinear", align_corners=False)
    offsets = (draws[:, 2:4] * (large - size + 1)).long().clamp(max=large - size)
    crops = torch.stack([enlarged[i, :, y:y + size, x:x + size] for i, (y, x) in enumerate(offsets.tolist())])
    contrast = 0.9 + 0.2 * draws[:, 4, None, None, None]
    mean = crops.mean(dim=(1, 2, 3), keepdim=True)
    return ((crops - mean) * contrast + mean).clamp(-1.0, 1.0)


def _stack(images: list[WeakImage]) -> torch.Tensor:
    return torch.from_numpy(np.stack([image.image for image in images]))


def save_checkpoint(gan: LabelTransferGAN, model_dir: Path, iteration: int, history: dict[str, list[float]],
                    generator: torch.Generator) -> Path:
    """Write ``cltn_checkpoint.pt`` and ``generator_ab.safetensors`` atomically (temporary file, then rename)."""
    from safetensors.torch import save_file

    checkpoint = {"format": 1, "iteration": iteration, "config": gan.config.to_dict(),
                  "networks": {name: module.state_dict() for name, module in
                               (("generator_ab", gan.generator_ab), ("generator_ba", gan.generator_ba),
                                ("discriminators", gan.discriminators))},
                  "optimizers": {"generator": gan.generator_optimizer.state_dict(),
                                 "discriminator": gan.discriminator_optimizer.state_dict()},
                  "history": history, "rng_state": generator.get_state()}
    target = model_dir / CHECKPOINT_FILE
    torch.save(checkpoint, target.with_suffix(".pt.tmp"))
    os.replace(target.with_suffix(".pt.tmp"), target)
    weights = {k: v.detach().cpu().contiguous() for k, v in gan.generator_ab.state_dict().items()}
    save_file(weights, str(model_dir / (GENERATOR_FILE + ".tmp")),
              metadata={"config": json.dumps(gan.config.to_dict()), "iteration": str(iteration)})
    os.replace(model_dir / (GENERATOR_FILE + ".tmp"), model_dir / GENERATOR_FILE)
    return target


def load_checkpoint(model_dir: Path, device: torch.device) -> tuple[LabelTransferGAN, int, dict, torch.Tensor]:
    """(GAN, iteration, loss history, RNG state) from ``model_dir/cltn_checkpoint.pt`` (``weights_only=True``).

    Raises:
        FileNotFoundError: no checkpoint.
        ValueError: a file that is not a CLTN checkpoint (naming it).
    """
    file = Path(model_dir) / CHECKPOINT_FILE
    if not file.is_file():
        raise FileNotFoundError(f"{file}: no CLTN checkpoint to continue from.")
    checkpoint = torch.load(file, map_location="cpu", weights_only=True)
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != 1:
        raise ValueError(f"{file}: not a CLTN checkpoint written by nnunet_mm.")
    gan = LabelTransferGAN(CLTNConfig.from_dict(checkpoint["config"]))
    gan.generator_ab.load_state_dict(checkpoint["networks"]["generator_ab"])
    gan.generator_ba.load_state_dict(checkpoint["networks"]["generator_ba"])
    gan.discriminators.load_state_dict(checkpoint["networks"]["discriminators"])
    gan.to(device)
    gan.generator_optimizer.load_state_dict(checkpoint["optimizers"]["generator"])
    gan.discriminator_optimizer.load_state_dict(checkpoint["optimizers"]["discriminator"])
    return gan, int(checkpoint["iteration"]), checkpoint["history"], checkpoint["rng_state"]


def load_generator(model_dir: Path, device: torch.device) -> CLTNGenerator:
    """``G_AB`` from ``model_dir/generator_ab.safetensors``, in eval mode.

    Raises:
        FileNotFoundError: the file is missing (train first).
    """
    from safetensors import safe_open
    from safetensors.torch import load_file

    file = Path(model_dir) / GENERATOR_FILE
    if not file.is_file():
        raise FileNotFoundError(f"{file}: no trained generator; run 'nnunet_mm weak-train-gan' first.")
    with safe_open(str(file), framework="pt") as handle:
        config = CLTNConfig.from_dict(json.loads(handle.metadata()["config"]))
    generator = CLTNGenerator(config.in_channels, config.base_channels, config.num_res_blocks)
    generator.load_state_dict(load_file(str(file)))
    return generator.to(device).eval()


TOTAL_LOSSES = ("discriminator", "generator")  # the left panel of cltn_losses.png; the generator's terms go right


@figure_style()
def save_loss_curves(history: dict[str, list[float]], png: Path) -> Path:
    """A PNG of the loss curves (:func:`loss_curves_figure`)."""
    figure = loss_curves_figure(history)
    figure.savefig(png, dpi=100)
    return Path(png)


@figure_style()
def loss_curves_figure(history: dict[str, list[float]]) -> Figure:
    """The GAN's losses per iteration, totals left and the generator's weighted terms right: every iteration a
    marker while the run is short, the moving average over 50 iterations once it is long
    (:func:`nnunet_mm.training.loss_curves.plot_loss_curve`); the title gives the number of iterations.

    Returns:
        A matplotlib ``Figure``, not registered with pyplot (nothing to close).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from nnunet_mm.training.loss_curves import finish_loss_axis, plot_loss_curve

    figure = Figure(figsize=(11, 4.2))
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, 2)
    num_iterations = max((len(values) for values in history.values()), default=0)
    for name, values in history.items():
        plot_loss_curve(axes[0 if name in TOTAL_LOSSES else 1], values, label=name)
    for axis, title in zip(axes, ("totals", "generator terms (weighted)")):
        finish_loss_axis(axis, title=title, num_iterations=num_iterations)
    figure.suptitle(f"CLTN label-transfer GAN: losses over {num_iterations} iteration(s)")
    figure.tight_layout()
    return figure


def train_label_transfer_gan(images: list[WeakImage], model_dir: Path, *, iterations: int, config: CLTNConfig,
                             batch_size: int = 1, resume: bool = False, overwrite: bool = False,
                             device: torch.device = torch.device("cpu"), seed: int = 0, save_every: int = 500,
                             progress: bool = True) -> Path:
    """Train (or continue training) the GAN until ``iterations`` iterations are done in total.

    Args:
        images: diseased and normal images (both needed).
        model_dir: output folder; it receives the checkpoint, the generator and ``cltn_losses.png``.
        iterations: total iterations (the paper: 7000 at batch 1).
        config: architecture and losses of a new GAN (ignored when resuming: the checkpoint's is used).
        resume: continue from ``model_dir/cltn_checkpoint.pt``.
        overwrite: start afresh even if ``model_dir`` holds a checkpoint.
        seed: seed of the sampling and augmentation generator (its state is checkpointed).

    Returns:
        The checkpoint path.

    Raises:
        ValueError: no diseased or no normal images, or images whose size or channels differ from ``config``.
        FileExistsError: ``model_dir`` holds a checkpoint and neither ``resume`` nor ``overwrite`` is set.
    """
    diseased = [image for image in images if image.image_label == DISEASED]
    normal = [image for image in images if image.image_label == NORMAL]
    if not diseased or not normal:
        raise ValueError(f"the GAN needs diseased and normal images; got {len(diseased)} diseased and {len(normal)} "
                         f"normal.")
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    if (model_dir / CHECKPOINT_FILE).exists() and not (resume or overwrite):
        raise FileExistsError(f"{model_dir / CHECKPOINT_FILE} exists; pass --continue to resume it or --overwrite to "
                              f"start afresh.")
    generator = torch.Generator()
    if resume:
        gan, start, history, rng_state = load_checkpoint(model_dir, device)
        generator.set_state(rng_state)
        logger.info("continuing the GAN in %s from iteration %d", model_dir, start)
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)  # reproducible initial weights without touching the caller's global RNG
            gan = LabelTransferGAN(config).to(device)
        start, history = 0, {name: [] for name in LOSS_NAMES}
        generator.manual_seed(seed)
    if gan.config.image_size < MIN_OUTLINING_SIZE:
        logger.warning("the GAN runs at %d px, so its attention mask is %d x %d: too coarse to outline a lesion "
                       "(pseudo masks come out oversized); use --size %d or more (256 on a GPU, as the paper)",
                       gan.config.image_size, gan.config.image_size // 4, gan.config.image_size // 4,
                       MIN_OUTLINING_SIZE)
    shape = (gan.config.in_channels, gan.config.image_size, gan.config.image_size)
    if tuple(images[0].image.shape) != shape:
        raise ValueError(f"images are {tuple(images[0].image.shape)} but the GAN expects {shape} (channels, size, "
                         f"size); read the dataset with the GAN's size.")
    pool_a, pool_b = _stack(diseased), _stack(normal)
    steps = range(start, iterations)
    if progress:
        from tqdm import tqdm
        steps = tqdm(steps, desc="CLTN GAN", unit="it", initial=start, total=iterations)
    for iteration in steps:
        index_a = torch.randint(len(pool_a), (batch_size,), generator=generator)
        index_b = torch.randint(len(pool_b), (batch_size,), generator=generator)
        real_a = augment_batch(pool_a[index_a].to(device), generator)
        real_b = augment_batch(pool_b[index_b].to(device), generator)
        for name, value in gan.train_step(real_a, real_b).items():
            history[name].append(value)
        if (iteration + 1) % save_every == 0:
            save_checkpoint(gan, model_dir, iteration + 1, history, generator)
    checkpoint = save_checkpoint(gan, model_dir, max(iterations, start), history, generator)
    save_loss_curves(history, model_dir / "cltn_losses.png")
    return checkpoint
