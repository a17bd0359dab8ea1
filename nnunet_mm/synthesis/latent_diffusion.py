"""Mask-conditioned latent diffusion tumour synthesizer (Diff4MMLiTS §3.2 "MCS"), trained from scratch.

**Model.** A frozen 3D autoencoder (:mod:`nnunet_mm.synthesis.autoencoder`) maps a single-phase patch ``x`` to a
latent ``z0 = s·Enc(x)`` (``s`` scales the latents to unit variance, measured once on training crops). MONAI's
``DiffusionModelUNet`` (3D, attention at the deepest level) predicts the noise of ``z_t`` given the condition
(DiffTumor's, plus the phase)::

    c = cat( s·Enc(x ⊙ (1 − y)),            # the masked "normal" CT of this phase, in latent space
             interpolate(2y − 1),            # the tumour mask at latent resolution
             one_hot(phase) )                # which phase to draw: one model for all phases (our [GAP] choice)
    input = cat(z_t, c),   output = ε̂

trained with the paper's ε-prediction and L2 loss ``‖ε − ε_θ(z_t, c, t)‖²`` on real tumour crops (``y`` = the tumour
label, ``x`` each phase in turn), DDPM forward process with 1000 steps (scaled-linear β 0.0015–0.0195), Adam 1e-4,
EMA of the weights (0.995, with warm-up) used for sampling.

**Synthesis** (:class:`LatentDiffusionSynthesizer`, the :class:`~nnunet_mm.synthesis.base.TumorSynthesizer` contract):
for every sample with a non-empty mask, a box around the mask (plus a margin, rounded to the networks' size
multiple) is cut from every phase; DDIM (50 steps, deterministic η = 0) from Gaussian noise drawn from the caller's
generator (one draw shared by the phases: ``DiffusionConfig.phase_noise``) gives ``z0`` per phase with the *same*
mask, ``x_syn = Dec(z0 / s)``, and the result is blended as in
DiffTumor, ``x = (1 − w)·x + w·x_syn`` with ``w = G_σ(y)``. Deviation: σ ~ U(0.5, 1.0) voxels instead of U(0, 4) and
``w`` is cut to the mask dilated by 2 voxels, so that voxels further than 2 voxels from the mask stay bit-identical
(the shared synthesizer contract). Works on 3D patches only (a 2D configuration is refused with a clear message).

Files of a model folder (``default_model_folder``: ``<preprocessed dataset>/nnunet_mm_synthesis/latent_diffusion``):
``config.json`` (both configurations, latent scale, phases), ``autoencoder.safetensors`` (copied from the
autoencoder folder, so the folder is self-contained), ``denoiser.safetensors`` (EMA weights),
``checkpoint_latest.pt`` (resumable training state), ``losses.png``.
"""
from __future__ import annotations

import math
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from torch.nn import functional as F

from nnunet_mm.synthesis import model_checkpoints as ckpt
from nnunet_mm.synthesis.autoencoder import AutoencoderConfig, build_autoencoder, load_autoencoder
from nnunet_mm.synthesis.base import blending_rim, check_synthesizer_inputs
from nnunet_mm.synthesis.model_data import PreprocessedCrops
from nnunet_mm.io.figure_style import figure_style
from nnunet_mm.networks.ema import ema_update, frozen_copy

WEIGHTS_NAME = "denoiser"
AUTOENCODER_WEIGHTS_NAME = "autoencoder"


def default_model_folder(preprocessed_dataset_folder: Path) -> Path:
    """``<preprocessed dataset folder>/nnunet_mm_synthesis/latent_diffusion``."""
    return Path(preprocessed_dataset_folder) / "nnunet_mm_synthesis" / "latent_diffusion"


def default_autoencoder_folder(preprocessed_dataset_folder: Path) -> Path:
    """``<preprocessed dataset folder>/nnunet_mm_synthesis/autoencoder``."""
    return Path(preprocessed_dataset_folder) / "nnunet_mm_synthesis" / "autoencoder"


@dataclass(frozen=True)
class DiffusionConfig:
    """Denoiser, noise schedule, training and sampling configuration.

    Attributes:
        channels: DiffusionModelUNet channels per level (multiples of ``norm_num_groups``).
        attention_levels: self-attention per level (deepest only by default).
        num_res_blocks, num_head_channels, norm_num_groups: DiffusionModelUNet arguments.
        patch_size: training crop (image voxels, nnU-Net axis order), centred on real tumour.
        batch_size, steps, lr: schedule (DiffTumor: batch 2, lr 1e-4).
        num_train_timesteps, beta_start, beta_end: DDPM scaled-linear schedule.
        num_inference_steps: DDIM steps at synthesis.
        ema_decay: EMA of the denoiser weights (0: none).
        blend_sigma: (low, high) σ of the blending Gaussian, voxels.
        margin_voxels: context around the mask given to the model at synthesis.
        checkpoint_every, seed: as for the other networks.
        phase_noise: ``"shared"`` (default): the phases of one synthetic tumour are drawn from *one* initial latent
            noise; DDIM with η = 0 is a deterministic map from that noise and the condition, so the phases share the
            lesion's structure and texture while the phase condition sets each phase's appearance. ``"independent"``:
            a noise draw per phase (nothing ties the phases; the behaviour before issue 19). Chosen over a joint
            multi-phase model, which would need every phase of every training crop and N times the latent channels,
            while the single-phase model learns from each phase crop it gets (each with its own label in a
            ``_phases`` configuration).
    """

    channels: tuple[int, ...] = (64, 128, 256)
    attention_levels: tuple[bool, ...] = (False, False, True)
    num_res_blocks: int = 1
    num_head_channels: int = 32
    norm_num_groups: int = 32
    patch_size: tuple[int, ...] = (64, 64, 64)
    batch_size: int = 2
    steps: int = 30000
    lr: float = 1e-4
    num_train_timesteps: int = 1000
    beta_start: float = 0.0015
    beta_end: float = 0.0195
    num_inference_steps: int = 50
    ema_decay: float = 0.995
    blend_sigma: tuple[float, float] = (0.5, 1.0)
    margin_voxels: int = 8
    checkpoint_every: int = 500
    seed: int = 0
    phase_noise: str = "shared"

    def __post_init__(self) -> None:
        for name in ("channels", "attention_levels", "patch_size", "blend_sigma"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if len(self.channels) != len(self.attention_levels):
            raise ValueError(f"channels {self.channels} and attention_levels {self.attention_levels} must have the "
                             f"same length.")
        if any(c % self.norm_num_groups for c in self.channels):
            raise ValueError(f"every denoiser channel count must be divisible by norm_num_groups="
                             f"{self.norm_num_groups}, got {self.channels}.")
        if self.phase_noise not in ("shared", "independent"):
            raise ValueError(f"phase_noise must be 'shared' or 'independent', got {self.phase_noise!r}.")
        if not 1 <= self.num_inference_steps <= self.num_train_timesteps:
            raise ValueError(f"num_inference_steps must be in [1, {self.num_train_timesteps}], got "
                             f"{self.num_inference_steps}.")

    @property
    def downsampling(self) -> int:
        """Latent-to-bottleneck size factor of the denoiser."""
        return 2 ** (len(self.channels) - 1)


def build_denoiser(config: DiffusionConfig, latent_channels: int, num_phases: int) -> torch.nn.Module:
    """``DiffusionModelUNet`` taking ``cat(z_t, masked latent, mask, phase one-hot)`` and predicting the noise."""
    from monai.networks.nets import DiffusionModelUNet

    return DiffusionModelUNet(spatial_dims=3, in_channels=2 * latent_channels + 1 + num_phases,
                              out_channels=latent_channels, channels=config.channels,
                              attention_levels=config.attention_levels, num_res_blocks=config.num_res_blocks,
                              num_head_channels=config.num_head_channels, norm_num_groups=config.norm_num_groups)


def _schedulers(config: DiffusionConfig):
    from monai.networks.schedulers import DDIMScheduler, DDPMScheduler

    kwargs = dict(num_train_timesteps=config.num_train_timesteps, schedule="scaled_linear_beta",
                  beta_start=config.beta_start, beta_end=config.beta_end)
    ddim = DDIMScheduler(clip_sample=False, **kwargs)
    ddim.set_timesteps(config.num_inference_steps)
    return DDPMScheduler(**kwargs), ddim


def condition(autoencoder: torch.nn.Module, images: torch.Tensor, mask: torch.Tensor, phases: torch.Tensor,
              num_phases: int, latent_scale: float) -> torch.Tensor:
    """The denoiser's condition ``cat(s·Enc(x⊙(1−y)), interp(2y−1), one_hot(phase))`` at latent resolution.

    Args:
        images: (N, 1, *spatial) single-phase patches (nnU-Net normalised space).
        mask: (N, 1, *spatial) bool/float tumour mask.
        phases: (N,) int64 phase (channel) index of each patch.
    """
    mask = mask.to(images.dtype)
    masked_latent = autoencoder.encode(images * (1 - mask))[0] * latent_scale
    latent_shape = masked_latent.shape[2:]
    mask_latent = F.interpolate(2 * mask - 1, size=latent_shape, mode="area")
    one_hot = F.one_hot(phases, num_phases).to(images.dtype).view(len(phases), num_phases, 1, 1, 1)
    return torch.cat((masked_latent, mask_latent, one_hot.expand(-1, -1, *latent_shape)), dim=1)


def denoising_loss(denoiser: torch.nn.Module, autoencoder: torch.nn.Module, scheduler, images: torch.Tensor,
                   mask: torch.Tensor, phases: torch.Tensor, *, num_phases: int, latent_scale: float,
                   generator: torch.Generator) -> torch.Tensor:
    """The paper's loss ``‖ε − ε_θ(z_t, c, t)‖²`` for a batch of single-phase patches, t ~ U{0..T−1}.

    Args:
        scheduler: the DDPM training scheduler (``add_noise``).
        images, mask, phases: as for :func:`condition`.
        generator: source of the noise and the timesteps.
    """
    with torch.no_grad():
        z0 = autoencoder.encode(images)[0] * latent_scale
        cond = condition(autoencoder, images, mask, phases, num_phases, latent_scale)
    noise = torch.randn(z0.shape, generator=generator, device=z0.device, dtype=z0.dtype)
    timesteps = torch.randint(0, scheduler.num_train_timesteps, (len(z0),), generator=generator, device=z0.device)
    noisy = scheduler.add_noise(z0, noise, timesteps)
    return F.mse_loss(denoiser(torch.cat((noisy, cond), dim=1), timesteps=timesteps), noise)


def _latent_scale(autoencoder: torch.nn.Module, crops: PreprocessedCrops, batch_size: int, seed: int,
                  device: torch.device, batches: int = 4) -> float:
    """1 / standard deviation of the autoencoder's latent means on tumour crops (unit-variance latents)."""
    rng = np.random.default_rng([seed, 10 ** 9])
    with torch.no_grad():
        latents = [autoencoder.encode(torch.from_numpy(crops.sample(batch_size, rng)[0]).to(device))[0]
                   for _ in range(batches)]
    return float(1.0 / torch.cat(latents).std().clamp_min(1e-6))


def configuration_record(configuration_name: str, configuration_manager: Any) -> dict[str, Any]:
    """What ties a diffusion model to the nnU-Net configuration whose preprocessed data it learnt: the name, the
    target spacing and the normalisation schemes (the intensity space of the latents)."""
    def read(attribute: str):  # nnU-Net's ConfigurationManager reads its plans dict: a key may be missing
        try:
            return getattr(configuration_manager, attribute)
        except (KeyError, AttributeError):
            return None

    spacing, schemes = read("spacing"), read("normalization_schemes")
    return {"name": str(configuration_name), "data_identifier": read("data_identifier"),
            "spacing": None if spacing is None else [float(s) for s in spacing],
            "normalization_schemes": None if schemes is None else list(schemes)}


def check_configuration(folder: Path, trained_on: Mapping[str, Any] | None, used_with: Mapping[str, Any]) -> None:
    """Refuse a model folder trained on another configuration than ``used_with`` (spacing within 1 %, the same
    normalisation per channel); a folder from before the record existed is accepted.

    Raises:
        ValueError: naming the folder, both configurations and what differs.
    """
    if not trained_on:
        return
    problems = []
    spacing, expected = trained_on.get("spacing"), used_with.get("spacing")
    if spacing and expected and (len(spacing) != len(expected) or
                                 any(abs(a - b) > 0.01 * max(abs(b), 1e-6) for a, b in zip(spacing, expected))):
        problems.append(f"spacing {spacing} vs {expected}")
    schemes, expected_schemes = trained_on.get("normalization_schemes"), used_with.get("normalization_schemes")
    if schemes and expected_schemes and list(schemes) != list(expected_schemes):
        problems.append(f"normalisation {schemes} vs {expected_schemes}")
    if problems:
        raise ValueError(f"{folder}: the latent-diffusion model was trained on configuration "
                         f"'{trained_on.get('name')}' and is used with '{used_with.get('name')}' ({'; '.join(problems)}); "
                         f"train it on this configuration ('nnunet_mm train-autoencoder' and 'train-diffusion' with "
                         f"-c {used_with.get('name')}) or point \"model_folder\" at a model trained on it.")


def train_diffusion(crops: PreprocessedCrops, autoencoder_folder: Path, config: DiffusionConfig, folder: Path, *,
                    tumour_label: int, phase_names: Sequence[str] | None = None, device: torch.device,
                    resume: bool = False, overwrite: bool = False, progress: bool = True,
                    configuration: Mapping[str, Any] | None = None,
                    step_callback: Callable[[int], None] | None = None) -> ckpt.TrainingResult:
    """Train the mask-conditioned denoiser on real tumour crops (``crops`` centred on tumour), write the model folder.

    Args:
        crops: preprocessed crops with ``center_labels=(tumour_label,)``.
        autoencoder_folder: a trained autoencoder (``nnunet_mm train-autoencoder``); frozen, copied into ``folder``.
        tumour_label: label value of the tumour in the preprocessed segmentations.
        phase_names: stored for the record (default: channel indices).
        configuration: what the model is tied to (:func:`configuration_record`: name, spacing, normalisation of
            the nnU-Net configuration whose preprocessed data it learnt); checked when a trainer loads the folder.

    History key: ``mse`` (the ε-prediction loss).
    """
    from tqdm import tqdm

    folder = Path(folder)
    state = ckpt.prepare_model_folder(folder, resume=resume, overwrite=overwrite)
    autoencoder, ae_config = load_autoencoder(Path(autoencoder_folder), device)
    autoencoder.requires_grad_(False)
    num_phases = crops.num_channels
    if state is not None:
        saved = ckpt.read_config(folder)
        config = DiffusionConfig(**{**saved["diffusion"], "steps": config.steps,
                                    "checkpoint_every": config.checkpoint_every})
        latent_scale = float(saved["latent_scale"])
    else:
        latent_scale = _latent_scale(autoencoder, crops, config.batch_size, config.seed, device)
    multiple = ae_config.downsampling * config.downsampling
    if any(p % multiple for p in config.patch_size):
        raise ValueError(f"diffusion patch_size {config.patch_size} must be divisible by {multiple} (autoencoder "
                         f"×{ae_config.downsampling}, denoiser ×{config.downsampling}).")
    torch.manual_seed(config.seed)
    denoiser = build_denoiser(config, ae_config.latent_channels, num_phases).to(device)
    ema = frozen_copy(denoiser)
    optimizer = torch.optim.Adam(denoiser.parameters(), lr=config.lr)
    modules, optimizers = {"denoiser": denoiser, "ema": ema}, {"denoiser": optimizer}
    step, history = 0, {"mse": []}
    if state is not None:
        step, history = ckpt.restore_training_state(state, modules, optimizers)
    train_scheduler, _ = _schedulers(config)
    shutil.copyfile(Path(autoencoder_folder) / f"{AUTOENCODER_WEIGHTS_NAME}.safetensors",
                    folder / f"{AUTOENCODER_WEIGHTS_NAME}.safetensors")
    ckpt.write_config(folder, {
        "autoencoder": asdict(ae_config), "diffusion": asdict(config), "latent_scale": latent_scale,
        "num_phases": num_phases, "tumour_label": int(tumour_label),
        "phase_names": list(phase_names) if phase_names else [str(c) for c in range(num_phases)],
        "autoencoder_folder": str(Path(autoencoder_folder).absolute()), "cases": len(crops.identifiers),
        "configuration": dict(configuration) if configuration else None})

    def save() -> None:
        ckpt.save_training_state(folder, step=step, modules=modules, optimizers=optimizers, history=history)
        ckpt.save_weights(folder, WEIGHTS_NAME, ema if config.ema_decay > 0 else denoiser)
        ckpt.plot_losses(history, folder / ckpt.LOSS_PLOT_NAME, "latent diffusion (ε-prediction MSE)")

    denoiser.train()
    bar = tqdm(total=config.steps, initial=min(step, config.steps), desc="train diffusion", disable=not progress)
    while step < config.steps:
        rng = np.random.default_rng([config.seed, step])
        images_np, segs_np, phases_np = crops.sample(config.batch_size, rng)
        images = torch.from_numpy(images_np).to(device)
        mask = torch.from_numpy(segs_np == tumour_label).to(device)
        phases = torch.from_numpy(phases_np).to(device)
        generator = torch.Generator(device=device).manual_seed(int(rng.integers(2 ** 62)))
        loss = denoising_loss(denoiser, autoencoder, train_scheduler, images, mask, phases, num_phases=num_phases,
                              latent_scale=latent_scale, generator=generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if config.ema_decay > 0:
            ema_update(ema, denoiser, min(config.ema_decay, (1 + step) / (10 + step)))
        else:
            ema.load_state_dict(denoiser.state_dict())
        history["mse"].append(loss.item())
        step += 1
        bar.update(1)
        if step_callback is not None:
            step_callback(step)
        bar.set_postfix(mse=f"{loss.item():.4f}")
        if step % config.checkpoint_every == 0:
            save()
    bar.close()
    save()
    return ckpt.TrainingResult(folder, step, history)


def _box(rim: torch.Tensor, margin: int, multiple: int) -> list[tuple[int, int, int]]:
    """Per axis ``(start, size, pad)``: a window around ``rim`` (plus margin) of a size divisible by ``multiple``,
    inside the volume where possible; ``pad`` voxels are added at the end where the volume is smaller."""
    box = []
    for axis, dim in enumerate(rim.shape):
        other = tuple(a for a in range(rim.ndim) if a != axis)
        present = torch.nonzero(rim.any(dim=other)).flatten()
        low, high = int(present.min()), int(present.max())
        size = int(math.ceil((high - low + 1 + 2 * margin) / multiple) * multiple)
        if size >= dim:
            box.append((0, size, size - dim))
            continue
        start = min(max((low + high + 1) // 2 - size // 2, 0), dim - size)
        box.append((start, size, 0))
    return box


class LatentDiffusionSynthesizer:
    """A :class:`~nnunet_mm.synthesis.base.TumorSynthesizer` drawing tumours with the trained latent diffusion model.

    Build it with :meth:`from_folder`. Stateless apart from the frozen networks; all randomness comes from the
    generator passed to ``__call__`` (DDP-safe).
    """

    def __init__(self, autoencoder: torch.nn.Module, denoiser: torch.nn.Module, config: DiffusionConfig,
                 autoencoder_config: AutoencoderConfig, latent_scale: float, num_phases: int):
        self.autoencoder = autoencoder.eval().requires_grad_(False)
        self.denoiser = denoiser.eval().requires_grad_(False)
        self.config = config
        self.autoencoder_config = autoencoder_config
        self.latent_scale = float(latent_scale)
        self.num_phases = int(num_phases)
        _, self.scheduler = _schedulers(config)

    @classmethod
    def from_folder(cls, folder: Path, device: torch.device,
                    configuration: Mapping[str, Any] | None = None) -> "LatentDiffusionSynthesizer":
        """Load a model folder written by :func:`train_diffusion` (safetensors weights only).

        Args:
            configuration: the :func:`configuration_record` of the data it will synthesise into; refused when the
                model learnt another spacing, normalisation or number of phases (the latents would not match).

        Raises:
            FileNotFoundError: no model folder.
            ValueError: the model was trained on a different configuration (both named).
        """
        folder = Path(folder)
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder}: no latent-diffusion model folder; train one with 'nnunet_mm "
                                    f"train-autoencoder' and 'nnunet_mm train-diffusion'.")
        saved = ckpt.read_config(folder)
        if configuration is not None:
            check_configuration(folder, saved.get("configuration"), configuration)
        ae_config = AutoencoderConfig(**saved["autoencoder"])
        config = DiffusionConfig(**saved["diffusion"])
        autoencoder = ckpt.load_weights(folder, AUTOENCODER_WEIGHTS_NAME, build_autoencoder(ae_config))
        denoiser = ckpt.load_weights(folder, WEIGHTS_NAME,
                                     build_denoiser(config, ae_config.latent_channels, saved["num_phases"]))
        return cls(autoencoder.to(device), denoiser.to(device), config, ae_config, saved["latent_scale"],
                   saved["num_phases"])

    @property
    def size_multiple(self) -> int:
        """Boxes given to the networks are multiples of this per axis."""
        return self.autoencoder_config.downsampling * self.config.downsampling

    @torch.no_grad()
    def sample(self, images: torch.Tensor, mask: torch.Tensor, phases: torch.Tensor,
               generator: torch.Generator) -> torch.Tensor:
        """Decoded DDIM samples for single-phase patches ``images`` (N, 1, *box) with tumour ``mask`` (N, 1, *box):
        the N phases of one tumour, from one shared initial noise unless ``config.phase_noise`` is
        ``"independent"``."""
        cond = condition(self.autoencoder, images, mask, phases, self.num_phases, self.latent_scale)
        latent_shape = (len(images), self.autoencoder_config.latent_channels, *cond.shape[2:])
        if self.config.phase_noise == "shared":
            z = torch.randn((1, *latent_shape[1:]), generator=generator, device=images.device,
                            dtype=images.dtype).expand(latent_shape).clone()
        else:
            z = torch.randn(latent_shape, generator=generator, device=images.device, dtype=images.dtype)
        for t in self.scheduler.timesteps:
            timesteps = torch.full((len(z),), int(t), device=z.device, dtype=torch.long)
            eps = self.denoiser(torch.cat((z, cond), dim=1), timesteps=timesteps)
            z, _ = self.scheduler.step(eps, int(t), z)
        return self.autoencoder.decode(z / self.latent_scale)

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, tumour_mask: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        from nnunet_mm.synthesis.handcrafted import gaussian_blur

        check_synthesizer_inputs(images, tumour_mask)
        if images.ndim != 5:
            raise ValueError(f"the latent-diffusion synthesizer is 3D; got 2D patches of shape {tuple(images.shape)}. "
                             f"Use a 3D configuration or the 'handcrafted' synthesizer.")
        if images.shape[1] != self.num_phases:
            raise ValueError(f"the latent-diffusion model was trained on {self.num_phases} phase(s), the images have "
                             f"{images.shape[1]} channels.")
        out = images.clone()
        rims = blending_rim(tumour_mask)
        phases = torch.arange(self.num_phases, device=images.device)
        for b in range(images.shape[0]):
            if not tumour_mask[b].any():
                continue
            box = _box(rims[b, 0], self.config.margin_voxels, self.size_multiple)
            window = tuple(slice(start, start + size - pad) for start, size, pad in box)
            padding = [p for _, _, pad in reversed(box) for p in (0, pad)]
            crop = images[b][(slice(None), *window)][:, None].float()  # (C, 1, *box)
            mask = tumour_mask[b][(slice(None), *window)][None].expand(self.num_phases, -1, *crop.shape[2:])
            if any(padding):
                crop = F.pad(crop, padding, mode="replicate")
                mask = F.pad(mask.float(), padding) > 0
            synthetic = self.sample(crop, mask, phases, generator)
            low, high = self.config.blend_sigma
            sigma = low + (high - low) * float(torch.rand((), generator=generator, device=images.device))
            weight = gaussian_blur(mask[:1].float(), [sigma] * 3).clamp(0, 1)
            blended = (1 - weight) * crop + weight * synthetic
            unpadded = tuple(slice(0, size - pad) for _, size, pad in box)
            blended = blended[(slice(None), slice(None), *unpadded)][:, 0].to(images.dtype)
            rim = rims[b][(slice(None), *window)]
            out[b][(slice(None), *window)] = torch.where(rim, blended, images[b][(slice(None), *window)])
        return out


def write_synthetic_pool(preprocessed_folder: Path, dataset_json: dict, model_folder: Path, output: Path, *,
                         num_samples: int, spacing: Sequence[float], patch_size: Sequence[int],
                         seed: int = 0, device: torch.device, overwrite: bool = False,
                         progress: bool = True, configuration: Mapping[str, Any] | None = None) -> Path:
    """Pre-generate ``num_samples`` synthetic-tumour patches that ``SynthTumorTrainer`` reads with
    ``"synthesizer": "pool"`` (:mod:`nnunet_mm.synthesis.pool`).

    Each patch is a ``patch_size`` crop of a preprocessed case centred on its liver; tumour masks are drawn in its
    tumour-free liver with the dataset's ``"synthesis"`` mask settings
    (:func:`nnunet_mm.synthesis.masks.sample_tumour_masks`) and painted by :class:`LatentDiffusionSynthesizer`.
    Written into a staging folder and renamed: one nnU-Net preprocessed case per patch (``pool_XXXX.b2nd``,
    ``pool_XXXX_seg.b2nd`` with the tumour label inserted, ``pool_XXXX.pkl``), ``pool.json`` (with the
    configuration record) and ``pool.png``.

    Raises:
        FileExistsError: ``output`` exists and is not empty, without ``overwrite``.
        ValueError: ``output`` is, holds or lies inside the preprocessed data or the model folder.
    """
    from tqdm import tqdm

    from nnunet_mm.io.staging import staged_dataset
    from nnunet_mm.settings import preprocessed_dataset_json_source, read_settings
    from nnunet_mm.synthesis.masks import sample_tumour_masks
    from nnunet_mm.synthesis.pool import save_pool_case, write_pool_record
    from nnunet_mm.synthesis.settings import SYNTHESIS_KEY

    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}.")
    source = preprocessed_dataset_json_source(Path(preprocessed_folder).parent)
    settings = read_settings(dataset_json, source).method(SYNTHESIS_KEY)
    liver, tumour = settings.resolve_labels(dataset_json["labels"], source)
    synthesizer = LatentDiffusionSynthesizer.from_folder(model_folder, device, configuration)
    patch = tuple(int(s) for s in patch_size)
    if len(patch) != 3:
        raise ValueError(f"the synthetic pool is made of 3D patches; got patch size {list(patch)}.")
    crops = PreprocessedCrops(preprocessed_folder, patch, center_labels=(liver,), foreground_fraction=1.0)
    generator = torch.Generator(device=device).manual_seed(seed)
    records, examples = [], []
    with staged_dataset(Path(output), overwrite=overwrite, sources=[preprocessed_folder, model_folder]) as staging:
        for index in tqdm(range(num_samples), desc="synthetic pool", disable=not progress):
            rng = np.random.default_rng([seed, index])
            for _ in range(20):  # a crop whose liver leaves room for a tumour
                identifier, images_np, seg = crops.sample_case_crop(rng)
                region = torch.from_numpy(seg == liver).to(device)[None, None]
                mask = sample_tumour_masks(region, spacing, settings.masks, generator)
                if mask.any():
                    break
            else:
                raise ValueError(f"{preprocessed_folder}: 20 crops in a row had no room for a synthetic tumour.")
            images = torch.from_numpy(images_np).to(device)[None]
            synthetic = synthesizer(images, mask, generator)[0].cpu().numpy()
            mask_np = mask[0, 0].cpu().numpy()
            new_seg = np.where(mask_np, tumour, seg).astype(np.int16)
            name = f"pool_{index:04d}"
            save_pool_case(staging, name, synthetic, new_seg[None], tumour, seed=seed + index)
            records.append({"case": name, "source_case": identifier, "tumour_voxels": int(mask_np.sum())})
            if len(examples) < 4:
                z = int(np.argmax(mask_np.reshape(mask_np.shape[0], -1).sum(1)))
                examples.append((identifier, images_np[:, z], synthetic[:, z], mask_np[z], z))
        write_pool_record(staging, model_folder=model_folder, configuration=configuration, patch_size=patch,
                          seed=seed, tumour_label=tumour, samples=records)
        _save_pool_png(examples, staging / "pool.png")
    return Path(output)


@figure_style()
def _save_pool_png(examples: list, png: Path) -> None:
    """Rows: samples (the crop's axial slice with most tumour, named in the panel titles); columns: each phase
    before | with synthetic tumour (mask outlined)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    channels = examples[0][1].shape[0]
    fig, axes = plt.subplots(len(examples), 2 * channels, figsize=(4.4 * channels, 2.4 * len(examples)),
                             squeeze=False)
    for row, (identifier, before, after, mask, z) in enumerate(examples):
        for c in range(channels):
            low, high = np.percentile(before[c], [1, 99])
            for k, image in enumerate((before[c], after[c])):
                axis = axes[row, 2 * c + k]
                axis.imshow(image, cmap="gray", vmin=low, vmax=high)
                if mask.any():
                    axis.contour(mask, levels=[0.5], colors="orange", linewidths=0.6)
                axis.set_title(f"{identifier} crop z{z}\nchannel {c} {'synthetic' if k else 'input'}", fontsize=7)
                axis.axis("off")
    fig.suptitle(f"synthetic pool: first {len(examples)} sample(s), input and with synthetic tumour; orange: "
                 f"tumour mask", fontsize=9)
    fig.tight_layout()
    fig.savefig(png, dpi=90)
    plt.close(fig)
