"""The 3D autoencoder of the latent-diffusion tumour synthesizer (Diff4MMLiTS §3.2 "MCS"), trained from scratch.

The paper reuses DiffTumor's pretrained VQGAN (96³ patch → 8×24×24×24 latent, CT window [-175, 250]). That
checkpoint cannot be downloaded here, so a KL autoencoder of the same geometry is trained on the user's data:
MONAI's ``AutoencoderKL`` (3D, single channel, downsampling 4 = three levels, 8 latent channels, no attention: it
is fully convolutional, so any patch size divisible by 4 works), on random crops of nnU-Net's preprocessed cases
(every phase as its own sample, crops centred on the liver two times out of three), in nnU-Net's normalised space.

Losses: L1 reconstruction + KL ×1e-6 + (after ``adversarial_start`` steps) a least-squares 3D PatchGAN term ×0.01
(MONAI's ``PatchDiscriminator``/``PatchAdversarialLoss``). The LPIPS-VGG perceptual term of DiffTumor needs
pretrained VGG weights and is left out. Adam lr 3e-4 (DiffTumor's autoencoder rate).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch.nn import functional as F

from nnunet_mm.synthesis import model_checkpoints as ckpt
from nnunet_mm.synthesis.model_data import PreprocessedCrops

WEIGHTS_NAME = "autoencoder"


@dataclass(frozen=True)
class AutoencoderConfig:
    """Autoencoder network and training configuration.

    Attributes:
        channels: feature channels per level; the latent is ``2**(len(channels) - 1)`` times smaller per axis.
        latent_channels: channels of the latent (DiffTumor: 8).
        num_res_blocks: residual blocks per level.
        norm_num_groups: GroupNorm groups (must divide every entry of ``channels``).
        patch_size: training crop per spatial axis (nnU-Net's array axis order), divisible by the downsampling.
        batch_size, steps, lr: schedule.
        kl_weight: weight of the KL term.
        adversarial_weight, adversarial_start: PatchGAN term and the step it starts (0 weight: no discriminator).
        discriminator_channels, discriminator_layers: width and depth of the PatchGAN (each layer halves the size;
            small patches need fewer layers).
        checkpoint_every, seed: as for the inpainter.
    """

    channels: tuple[int, ...] = (32, 64, 64)
    latent_channels: int = 8
    num_res_blocks: int = 1
    norm_num_groups: int = 16
    patch_size: tuple[int, ...] = (64, 64, 64)
    batch_size: int = 2
    steps: int = 20000
    lr: float = 3e-4
    kl_weight: float = 1e-6
    adversarial_weight: float = 0.01
    adversarial_start: int = 2000
    discriminator_channels: int = 32
    discriminator_layers: int = 3
    checkpoint_every: int = 500
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))
        object.__setattr__(self, "patch_size", tuple(int(p) for p in self.patch_size))
        if any(c % self.norm_num_groups for c in self.channels):
            raise ValueError(f"every autoencoder channel count must be divisible by norm_num_groups="
                             f"{self.norm_num_groups}, got {self.channels}.")
        if len(self.patch_size) != 3 or any(p % self.downsampling for p in self.patch_size):
            raise ValueError(f"patch_size must be 3 sizes divisible by {self.downsampling}, got {self.patch_size}.")
        if self.adversarial_weight > 0 and min(self.patch_size) // 2 ** self.discriminator_layers < 4:
            raise ValueError(f"a {self.discriminator_layers}-layer PatchGAN needs patch sides >= "
                             f"{4 * 2 ** self.discriminator_layers}, got {self.patch_size}; lower "
                             f"discriminator_layers.")

    @property
    def downsampling(self) -> int:
        """Image-to-latent size factor per axis."""
        return 2 ** (len(self.channels) - 1)


def build_autoencoder(config: AutoencoderConfig) -> torch.nn.Module:
    """MONAI ``AutoencoderKL`` for single-channel 3D volumes with ``config``'s geometry."""
    from monai.networks.nets import AutoencoderKL

    levels = len(config.channels)
    return AutoencoderKL(spatial_dims=3, in_channels=1, out_channels=1, channels=config.channels,
                         latent_channels=config.latent_channels, num_res_blocks=(config.num_res_blocks,) * levels,
                         attention_levels=(False,) * levels, norm_num_groups=config.norm_num_groups,
                         with_encoder_nonlocal_attn=False, with_decoder_nonlocal_attn=False)


def _kl(z_mu: torch.Tensor, z_sigma: torch.Tensor) -> torch.Tensor:
    per_sample = 0.5 * (z_mu.pow(2) + z_sigma.pow(2) - torch.log(z_sigma.pow(2) + 1e-8) - 1)
    return per_sample.flatten(1).sum(1).mean()


def train_autoencoder(crops: PreprocessedCrops, config: AutoencoderConfig, folder: Path, *, device: torch.device,
                      resume: bool = False, overwrite: bool = False, progress: bool = True,
        step_callback: Callable[[int], None] | None = None) -> ckpt.TrainingResult:
    """Train the autoencoder from scratch (or continue with ``resume``) and write its model folder
    (``autoencoder.safetensors``, ``config.json``, ``checkpoint_latest.pt``, ``losses.png``).

    History keys: ``l1``, ``kl``, ``generator`` (total) and, once the GAN runs, ``adversarial``/``discriminator``.
    """
    from monai.losses import PatchAdversarialLoss
    from monai.networks.nets import PatchDiscriminator
    from tqdm import tqdm

    folder = Path(folder)
    state = ckpt.prepare_model_folder(folder, resume=resume, overwrite=overwrite)
    if state is not None:
        saved = ckpt.read_config(folder)["autoencoder"]
        config = AutoencoderConfig(**{**saved, "steps": config.steps, "checkpoint_every": config.checkpoint_every})
    torch.manual_seed(config.seed)
    autoencoder = build_autoencoder(config).to(device)
    discriminator = PatchDiscriminator(spatial_dims=3, channels=config.discriminator_channels, in_channels=1,
                                       num_layers_d=config.discriminator_layers).to(device)
    adversarial_loss = PatchAdversarialLoss(criterion="least_squares")
    g_optimizer = torch.optim.Adam(autoencoder.parameters(), lr=config.lr)
    d_optimizer = torch.optim.Adam(discriminator.parameters(), lr=config.lr)
    modules = {"autoencoder": autoencoder, "discriminator": discriminator}
    optimizers = {"autoencoder": g_optimizer, "discriminator": d_optimizer}
    step, history = 0, {"l1": [], "kl": [], "generator": [], "adversarial": [], "discriminator": []}
    if state is not None:
        step, history = ckpt.restore_training_state(state, modules, optimizers)
    ckpt.write_config(folder, {"autoencoder": asdict(config), "num_channels": crops.num_channels,
                               "intensity": "nnU-Net normalised space of the preprocessed configuration",
                               "cases": len(crops.identifiers)})

    def save() -> None:
        ckpt.save_training_state(folder, step=step, modules=modules, optimizers=optimizers, history=history)
        ckpt.save_weights(folder, WEIGHTS_NAME, autoencoder)
        ckpt.plot_losses({k: v for k, v in history.items() if v}, folder / ckpt.LOSS_PLOT_NAME,
                         f"3D autoencoder, patch {list(config.patch_size)}")

    autoencoder.train()
    bar = tqdm(total=config.steps, initial=min(step, config.steps), desc="train autoencoder", disable=not progress)
    while step < config.steps:
        rng = np.random.default_rng([config.seed, step])
        images = torch.from_numpy(crops.sample(config.batch_size, rng)[0]).to(device)
        reconstruction, z_mu, z_sigma = autoencoder(images)
        l1 = F.l1_loss(reconstruction, images)
        kl = _kl(z_mu, z_sigma)
        loss = l1 + config.kl_weight * kl
        use_gan = config.adversarial_weight > 0 and step >= config.adversarial_start
        if use_gan:
            fake_logits = discriminator(reconstruction.contiguous())[-1]
            generator_adversarial = adversarial_loss(fake_logits, target_is_real=True, for_discriminator=False)
            loss = loss + config.adversarial_weight * generator_adversarial
        g_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        g_optimizer.step()
        if use_gan:
            fake = discriminator(reconstruction.detach().contiguous())[-1]
            real = discriminator(images.contiguous())[-1]
            d_loss = 0.5 * (adversarial_loss(fake, target_is_real=False, for_discriminator=True)
                            + adversarial_loss(real, target_is_real=True, for_discriminator=True))
            d_optimizer.zero_grad(set_to_none=True)
            (config.adversarial_weight * d_loss).backward()
            d_optimizer.step()
            history["adversarial"].append(generator_adversarial.item())
            history["discriminator"].append(d_loss.item())
        history["l1"].append(l1.item())
        history["kl"].append(kl.item())
        history["generator"].append(loss.item())
        step += 1
        bar.update(1)
        if step_callback is not None:
            step_callback(step)
        bar.set_postfix(l1=f"{l1.item():.4f}")
        if step % config.checkpoint_every == 0:
            save()
    bar.close()
    save()
    return ckpt.TrainingResult(folder, step, history)


def load_autoencoder(folder: Path, device: torch.device) -> tuple[torch.nn.Module, AutoencoderConfig]:
    """The trained autoencoder of a model folder (eval mode, safetensors weights) and its configuration."""
    config = AutoencoderConfig(**ckpt.read_config(folder)["autoencoder"])
    network = ckpt.load_weights(folder, WEIGHTS_NAME, build_autoencoder(config))
    return network.to(device).eval(), config
