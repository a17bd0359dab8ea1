"""Normal-CT generator of Diff4MMLiTS (paper 002, §3.2 "NCG"): a 2D LaMa-style inpainter with Fast Fourier
Convolutions, trained from scratch on the dataset's liver slices with random large masks; and the median-filter
inpainter of the paper's ablation.

**Network** (:class:`FFCInpainter`, LaMa's ``ffc_resnet_075`` layout): reflection-padded 7×7 stem, 3 strided
downsamplings, 9 FFC residual blocks, 3 transposed-convolution upsamplings, 7×7 head, sigmoid. Every FFC layer splits
its channels into a local part and a global part (α = 0.75 in the residual blocks, 0 in stem and downsampling, the
last downsampling produces the global part)::

    Y_local  = conv_l→l(X_local) + conv_g→l(X_global)
    Y_global = conv_l→g(X_local) + SpectralTransform(X_global)

``SpectralTransform``: 1×1 conv to C/2 + BN + ReLU → FourierUnit (rFFT2, real and imaginary parts as channels,
1×1 conv + BN + ReLU, inverse rFFT2) added to its input → 1×1 conv. The global branch sees the whole slice in one
layer, which is what lets LaMa fill large holes with plausible texture. Input: the slice with the hole zeroed and
the hole mask (2 channels, one phase at a time: the same network serves every phase); ``forward`` returns the slice
with only the hole replaced.

**Training** (:func:`train_inpainter`, from scratch: the paper fine-tunes Big-LaMa, which cannot be downloaded):
holes are random thick strokes and boxes placed on the liver (:func:`random_large_mask`); losses as in LaMa without
the HRF perceptual term (its ADE20k ResNet50 is pretrained): L1 on known pixels ×10, L1 in the hole ×30 (standing in
for the perceptual ×30), non-saturating adversarial loss ×10 from a PatchGAN discriminator that treats the hole as
fake, R1 penalty γ = 0.001 on real slices, discriminator feature matching ×100. Adam, generator lr 1e-3,
discriminator lr 1e-4 (LaMa's optimisers).
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from nnunet_mm.synthesis import model_checkpoints as ckpt
from nnunet_mm.synthesis.model_data import LiverSlices

logger = logging.getLogger(__name__)

WEIGHTS_NAME = "inpainter"
DOWNSAMPLINGS = 3  # input sides are padded to a multiple of 2**3


# ----------------------------------------------------------------------------------------------------------------
# Fast Fourier Convolution
# ----------------------------------------------------------------------------------------------------------------


class FourierUnit(nn.Module):
    """rFFT2 → 1×1 conv + BN + ReLU on (real, imaginary) channels → inverse rFFT2 (a global receptive field)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.Conv2d(2 * in_channels, 2 * out_channels, kernel_size=1, bias=False)
        self.norm = nn.BatchNorm2d(2 * out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        spectrum = torch.fft.rfft2(x.float(), norm="ortho")  # (B, C, H, W/2+1) complex
        stacked = torch.cat((spectrum.real, spectrum.imag), dim=1)
        stacked = F.relu(self.norm(self.conv(stacked.to(x.dtype))))
        real, imag = stacked.float().chunk(2, dim=1)
        return torch.fft.irfft2(torch.complex(real, imag), s=(height, width), norm="ortho").to(x.dtype)


class SpectralTransform(nn.Module):
    """The global→global path of an FFC: 1×1 conv (C/2) + BN + ReLU, FourierUnit with a residual, 1×1 conv."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        hidden = max(1, out_channels // 2)
        self.downsample = nn.AvgPool2d(2) if stride == 2 else nn.Identity()
        self.reduce = nn.Sequential(nn.Conv2d(in_channels, hidden, 1, bias=False), nn.BatchNorm2d(hidden),
                                    nn.ReLU(inplace=True))
        self.fourier = FourierUnit(hidden, hidden)
        self.expand = nn.Conv2d(hidden, out_channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.reduce(self.downsample(x))
        return self.expand(x + self.fourier(x))


class FFC(nn.Module):
    """Fast Fourier Convolution on a (local, global) pair of tensors; a part with 0 channels is ``None``.

    Args:
        ratio_in, ratio_out: share of global channels at the input and output (LaMa's ``ratio_gin/gout``).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, *, ratio_in: float, ratio_out: float,
                 stride: int = 1, padding: int = 0):
        super().__init__()
        in_global = int(in_channels * ratio_in)
        in_local = in_channels - in_global
        self.out_global = int(out_channels * ratio_out)
        out_local = out_channels - self.out_global

        def conv(cin: int, cout: int) -> nn.Module | None:
            if cin == 0 or cout == 0:
                return None
            return nn.Conv2d(cin, cout, kernel_size, stride=stride, padding=padding, bias=False,
                             padding_mode="reflect" if padding else "zeros")

        self.local_to_local = conv(in_local, out_local)
        self.global_to_local = conv(in_global, out_local)
        self.local_to_global = conv(in_local, self.out_global)
        self.global_to_global = (SpectralTransform(in_global, self.out_global, stride)
                                 if in_global and self.out_global else None)

    def forward(self, x: tuple[torch.Tensor | None, torch.Tensor | None]
                ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        x_local, x_global = x

        def total(*terms):
            present = [t for t in terms if t is not None]
            return sum(present[1:], present[0]) if present else None

        def apply(layer, value):
            return layer(value) if layer is not None and value is not None else None

        y_local = total(apply(self.local_to_local, x_local), apply(self.global_to_local, x_global))
        y_global = total(apply(self.local_to_global, x_local), apply(self.global_to_global, x_global))
        return y_local, y_global


class FFCNormAct(nn.Module):
    """FFC followed by BatchNorm and an activation on each part."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, *, ratio_in: float, ratio_out: float,
                 stride: int = 1, padding: int = 0, activation: type[nn.Module] = nn.ReLU):
        super().__init__()
        self.ffc = FFC(in_channels, out_channels, kernel_size, ratio_in=ratio_in, ratio_out=ratio_out,
                       stride=stride, padding=padding)
        out_global = self.ffc.out_global
        out_local = out_channels - out_global
        self.local = nn.Sequential(nn.BatchNorm2d(out_local), activation()) if out_local else None
        self.global_ = nn.Sequential(nn.BatchNorm2d(out_global), activation()) if out_global else None

    def forward(self, x):
        y_local, y_global = self.ffc(x)
        return (self.local(y_local) if self.local is not None else None,
                self.global_(y_global) if self.global_ is not None else None)


class FFCResidualBlock(nn.Module):
    """Two FFC layers with ratio α on both parts, residual on each part."""

    def __init__(self, channels: int, ratio: float):
        super().__init__()
        self.first = FFCNormAct(channels, channels, 3, ratio_in=ratio, ratio_out=ratio, padding=1)
        self.second = FFCNormAct(channels, channels, 3, ratio_in=ratio, ratio_out=ratio, padding=1)

    def forward(self, x):
        y_local, y_global = self.second(self.first(x))
        return x[0] + y_local, x[1] + y_global


@dataclass(frozen=True)
class InpainterConfig:
    """Network and training configuration of the inpainter (paper/LaMa values unless noted).

    Attributes:
        base_channels: ngf (LaMa 64).
        num_blocks: FFC residual blocks (LaMa 9).
        global_ratio: α of the residual blocks (0.75).
        patch_size: side of the training crops (LaMa trains on 256).
        batch_size, steps: training schedule.
        generator_lr, discriminator_lr: Adam learning rates (1e-3, 1e-4).
        l1_known_weight, l1_hole_weight: reconstruction weights (10; 30 replaces the HRF perceptual loss).
        adversarial_weight: non-saturating GAN loss weight (10; 0 switches the discriminator off).
        feature_matching_weight: discriminator feature matching (100).
        r1_gamma: R1 gradient penalty on real slices (0.001).
        discriminator_channels: width of the PatchGAN's first layer (LaMa 64).
        checkpoint_every: steps between checkpoints.
        seed: seed of crops, masks and initialisation.
    """

    base_channels: int = 64
    num_blocks: int = 9
    global_ratio: float = 0.75
    patch_size: int = 256
    batch_size: int = 8
    steps: int = 20000
    generator_lr: float = 1e-3
    discriminator_lr: float = 1e-4
    l1_known_weight: float = 10.0
    l1_hole_weight: float = 30.0
    adversarial_weight: float = 10.0
    feature_matching_weight: float = 100.0
    r1_gamma: float = 0.001
    discriminator_channels: int = 64
    checkpoint_every: int = 500
    seed: int = 0

    def __post_init__(self) -> None:
        if self.patch_size % 2 ** DOWNSAMPLINGS:
            raise ValueError(f"patch_size must be a multiple of {2 ** DOWNSAMPLINGS}, got {self.patch_size}.")
        if self.base_channels < 4 or self.num_blocks < 1 or self.steps < 1 or self.batch_size < 1:
            raise ValueError(f"invalid inpainter configuration {self}.")


class FFCInpainter(nn.Module):
    """LaMa ``ffc_resnet`` generator for single-channel slices in [0, 1] (see the module docstring)."""

    def __init__(self, base_channels: int = 64, num_blocks: int = 9, global_ratio: float = 0.75):
        super().__init__()
        c = base_channels
        self.stem = FFCNormAct(2, c, 7, ratio_in=0, ratio_out=0, padding=3)
        down = []
        for i in range(DOWNSAMPLINGS):
            last = i == DOWNSAMPLINGS - 1
            down.append(FFCNormAct(c * 2 ** i, c * 2 ** (i + 1), 3, ratio_in=0, ratio_out=global_ratio if last else 0,
                                   stride=2, padding=1))
        self.down = nn.ModuleList(down)
        width = c * 2 ** DOWNSAMPLINGS
        self.blocks = nn.ModuleList(FFCResidualBlock(width, global_ratio) for _ in range(num_blocks))
        up = []
        for i in range(DOWNSAMPLINGS, 0, -1):
            up += [nn.ConvTranspose2d(c * 2 ** i, c * 2 ** (i - 1), 3, stride=2, padding=1, output_padding=1),
                   nn.BatchNorm2d(c * 2 ** (i - 1)), nn.ReLU(inplace=True)]
        self.up = nn.Sequential(*up)
        self.head = nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(c, 1, 7))

    def generate(self, image: torch.Tensor, hole: torch.Tensor) -> torch.Tensor:
        """The network's whole predicted slice (training path). Sides must be multiples of 8.

        Args:
            image: (B, 1, H, W) in [0, 1]; hole content is never read.
            hole: (B, 1, H, W) bool or {0, 1}.
        """
        hole = hole.to(image.dtype)
        x = (torch.cat((image * (1 - hole), hole), dim=1), None)
        x = self.stem(x)
        for layer in self.down:
            x = layer(x)
        for block in self.blocks:
            x = block(x)
        features = torch.cat([part for part in x if part is not None], dim=1)
        return torch.sigmoid(self.head(self.up(features)))

    def forward(self, image: torch.Tensor, hole: torch.Tensor) -> torch.Tensor:
        """Inpaint: ``image`` with the ``hole`` pixels replaced by the prediction; any H, W (reflect-padded)."""
        height, width = image.shape[-2:]
        multiple = 2 ** DOWNSAMPLINGS
        pad = (0, -width % multiple, 0, -height % multiple)
        padded_image = F.pad(image, pad, mode="reflect") if any(pad) else image
        padded_hole = F.pad(hole.to(image.dtype), pad) if any(pad) else hole.to(image.dtype)
        prediction = self.generate(padded_image, padded_hole)[..., :height, :width]
        return torch.where(hole.bool(), prediction, image)

    @classmethod
    def from_config(cls, config: InpainterConfig) -> "FFCInpainter":
        return cls(config.base_channels, config.num_blocks, config.global_ratio)


class PatchDiscriminator2d(nn.Module):
    """LaMa's N-layer PatchGAN (4×4 convs, BN, LeakyReLU); ``forward`` returns (logits map, intermediate features)."""

    def __init__(self, channels: int = 64, num_layers: int = 4):
        super().__init__()
        layers, cin = [], 1
        for i in range(num_layers):
            cout = channels * min(2 ** i, 8)
            stride = 2 if i < num_layers - 1 else 1
            layers.append(nn.Sequential(nn.Conv2d(cin, cout, 4, stride=stride, padding=2),
                                        nn.BatchNorm2d(cout) if i else nn.Identity(), nn.LeakyReLU(0.2, True)))
            cin = cout
        self.layers = nn.ModuleList(layers)
        self.head = nn.Conv2d(cin, 1, 4, padding=2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        features = []
        for layer in self.layers:
            x = layer(x)
            features.append(x)
        return self.head(x), features


# ----------------------------------------------------------------------------------------------------------------
# Random large masks
# ----------------------------------------------------------------------------------------------------------------


def _thick_polyline(shape: tuple[int, int], points: np.ndarray, width: float) -> np.ndarray:
    """Pixels within ``width/2`` of the polyline through ``points`` ((K, 2) in (y, x))."""
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    grid = np.stack((yy, xx), -1).astype(np.float32)
    out = np.zeros(shape, bool)
    for a, b in zip(points[:-1], points[1:]):
        ab = b - a
        t = np.clip(((grid - a) @ ab) / max(float(ab @ ab), 1e-6), 0, 1)
        distance = np.linalg.norm(grid - (a + t[..., None] * ab), axis=-1)
        out |= distance <= width / 2
    return out


def random_large_mask(liver: np.ndarray, rng: np.random.Generator, *, max_fraction: float = 0.5,
                      liver_margin: int = 3) -> np.ndarray:
    """A LaMa-style large training hole on a liver slice: thick random strokes or boxes started inside the liver.

    The hole is clipped to the liver dilated by ``liver_margin`` pixels (a tumour's removal mask reaches a little
    beyond the liver too) and to ``max_fraction`` of the slice; it is never empty when the liver is not.

    Args:
        liver: (H, W) bool.
        rng: numpy generator.

    Returns:
        (H, W) bool.
    """
    from scipy import ndimage

    shape = liver.shape
    size = min(shape)
    inside = np.argwhere(liver)
    if not len(inside):
        inside = np.array([[shape[0] // 2, shape[1] // 2]])
    hole = np.zeros(shape, bool)
    if rng.random() < 0.5:  # thick strokes
        for _ in range(rng.integers(1, 4)):
            start = inside[rng.integers(len(inside))].astype(np.float32)
            points = [start]
            for _ in range(rng.integers(1, 5)):
                angle = rng.uniform(0, 2 * np.pi)
                length = rng.uniform(0.1, 0.3) * size
                points.append(points[-1] + length * np.array([np.sin(angle), np.cos(angle)], np.float32))
            hole |= _thick_polyline(shape, np.stack(points), rng.uniform(0.05, 0.15) * size)
    else:  # boxes
        for _ in range(rng.integers(1, 3)):
            cy, cx = inside[rng.integers(len(inside))]
            hy, hx = (rng.uniform(0.05, 0.2, 2) * size).astype(int) + 1
            hole[max(0, cy - hy):cy + hy, max(0, cx - hx):cx + hx] = True
    region = ndimage.binary_dilation(liver, iterations=liver_margin) if liver.any() else np.ones(shape, bool)
    hole &= region
    if hole.sum() > max_fraction * hole.size:  # keep enough context: the part nearest the hole's centre
        ys, xs = np.nonzero(hole)
        distance = (ys - ys.mean()) ** 2 + (xs - xs.mean()) ** 2
        far = distance > np.quantile(distance, max_fraction * hole.size / len(ys))
        hole[ys[far], xs[far]] = False
    if not hole.any():
        cy, cx = inside[rng.integers(len(inside))]
        hole[max(0, cy - 2):cy + 3, max(0, cx - 2):cx + 3] = True
    return hole


# ----------------------------------------------------------------------------------------------------------------
# Median-filter baseline
# ----------------------------------------------------------------------------------------------------------------


def median_inpaint(image: np.ndarray, hole: np.ndarray, window: int = 5) -> np.ndarray:
    """The paper's ablation baseline: fill the hole from its border inwards with the median of the known (or already
    filled) pixels in a ``window``×``window`` neighbourhood, then smooth the filled pixels with one more median pass.

    Args:
        image: (H, W) float array.
        hole: (H, W) bool.

    Returns:
        A float32 copy of ``image`` with only the hole pixels changed.
    """
    from numpy.lib.stride_tricks import sliding_window_view

    if image.shape != hole.shape or image.ndim != 2:
        raise ValueError(f"image and hole must be 2D arrays of one shape, got {image.shape} and {hole.shape}.")
    out = np.asarray(image, np.float32).copy()
    hole = np.asarray(hole, bool)
    if not hole.any():
        return out
    if hole.all():
        raise ValueError("the hole covers the whole slice; there is nothing to inpaint from.")
    r = window // 2
    known = np.where(hole, np.nan, out)
    remaining = hole.copy()
    while remaining.any():
        windows = sliding_window_view(np.pad(known, r, constant_values=np.nan), (window, window))
        ys, xs = np.nonzero(remaining)
        with np.errstate(all="ignore"):
            import warnings
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                values = np.nanmedian(windows[ys, xs].reshape(len(ys), -1), axis=1)
        ready = ~np.isnan(values)
        known[ys[ready], xs[ready]] = values[ready]
        remaining[ys[ready], xs[ready]] = False
    windows = sliding_window_view(np.pad(known, r, mode="edge"), (window, window))
    ys, xs = np.nonzero(hole)
    out[ys, xs] = np.median(windows[ys, xs].reshape(len(ys), -1), axis=1)
    return out


# ----------------------------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------------------------


def _r1_penalty(discriminator: nn.Module, real: torch.Tensor) -> torch.Tensor:
    real = real.detach().requires_grad_(True)
    logits, _ = discriminator(real)
    (gradient,) = torch.autograd.grad(logits.sum(), real, create_graph=True)
    return gradient.pow(2).flatten(1).sum(1).mean()


def inpainting_batch(slices: LiverSlices, batch_size: int, rng: np.random.Generator
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Random slices (random flips) with random large holes: ``(images (B,1,P,P), holes (B,1,P,P))``."""
    index = rng.integers(len(slices.images), size=batch_size)
    images, holes = [], []
    for i in index:
        image, liver = slices.images[i], slices.liver[i]
        for axis in (0, 1):
            if rng.random() < 0.5:
                image, liver = np.flip(image, axis), np.flip(liver, axis)
        images.append(np.ascontiguousarray(image)[None])
        holes.append(random_large_mask(np.ascontiguousarray(liver), rng)[None])
    return np.stack(images), np.stack(holes)


def train_inpainter(slices: LiverSlices, config: InpainterConfig, folder: Path, *, device: torch.device,
                    resume: bool = False, overwrite: bool = False, progress: bool = True,
        step_callback: Callable[[int], None] | None = None) -> ckpt.TrainingResult:
    """Train :class:`FFCInpainter` from scratch (or continue with ``resume``) and write the model folder.

    Every ``checkpoint_every`` steps and at the end: ``checkpoint_latest.pt``, ``inpainter.safetensors``,
    ``config.json`` and ``losses.png`` (see :mod:`nnunet_mm.synthesis.model_checkpoints`). History keys:
    ``l1_known``, ``l1_hole``, ``generator`` (total), and with a discriminator ``discriminator``.

    Raises:
        FileExistsError: ``folder`` holds a model and neither ``resume`` nor ``overwrite``.
    """
    from tqdm import tqdm

    folder = Path(folder)
    state = ckpt.prepare_model_folder(folder, resume=resume, overwrite=overwrite)
    if state is not None:
        saved = ckpt.read_config(folder)["inpainter"]
        config = InpainterConfig(**{**saved, "steps": config.steps, "checkpoint_every": config.checkpoint_every})
    torch.manual_seed(config.seed)
    generator = FFCInpainter.from_config(config).to(device)
    discriminator = PatchDiscriminator2d(config.discriminator_channels).to(device)
    g_optimizer = torch.optim.Adam(generator.parameters(), lr=config.generator_lr, betas=(0.9, 0.999))
    d_optimizer = torch.optim.Adam(discriminator.parameters(), lr=config.discriminator_lr, betas=(0.9, 0.999))
    modules = {"generator": generator, "discriminator": discriminator}
    optimizers = {"generator": g_optimizer, "discriminator": d_optimizer}
    step, history = 0, {"l1_known": [], "l1_hole": [], "generator": []}
    if config.adversarial_weight > 0:
        history["discriminator"] = []
    if state is not None:
        step, history = ckpt.restore_training_state(state, modules, optimizers)
    config_record = {"inpainter": asdict(config), "num_training_slices": len(slices.images),
                     "intensity": "CT: HU window [-175, 250] -> [0, 1]; other channels: 0.5/99.5 percentiles"}
    ckpt.write_config(folder, config_record)
    use_gan = config.adversarial_weight > 0
    generator.train()
    discriminator.train()

    def save() -> None:
        ckpt.save_training_state(folder, step=step, modules=modules, optimizers=optimizers, history=history)
        ckpt.save_weights(folder, WEIGHTS_NAME, generator)
        ckpt.plot_losses(history, folder / ckpt.LOSS_PLOT_NAME, f"FFC inpainter ({len(slices.images)} slices)")

    bar = tqdm(total=config.steps, initial=min(step, config.steps), desc="train inpainter", disable=not progress)
    while step < config.steps:
        rng = np.random.default_rng([config.seed, step])
        images_np, holes_np = inpainting_batch(slices, config.batch_size, rng)
        images = torch.from_numpy(images_np).to(device)
        holes = torch.from_numpy(holes_np).to(device).float()
        prediction = generator.generate(images, holes)
        l1 = (prediction - images).abs()
        l1_known = (l1 * (1 - holes)).sum() / (1 - holes).sum().clamp_min(1)
        l1_hole = (l1 * holes).sum() / holes.sum().clamp_min(1)
        g_loss = config.l1_known_weight * l1_known + config.l1_hole_weight * l1_hole
        if use_gan:
            fake_logits, fake_features = discriminator(prediction)
            with torch.no_grad():
                _, real_features = discriminator(images)
            fake_hole = F.interpolate(holes, size=fake_logits.shape[-2:], mode="area")
            adversarial = (F.softplus(-fake_logits) * fake_hole).sum() / fake_hole.sum().clamp_min(1e-6)
            matching = sum(F.l1_loss(f, r) for f, r in zip(fake_features, real_features)) / len(fake_features)
            g_loss = g_loss + config.adversarial_weight * adversarial + config.feature_matching_weight * matching
        g_optimizer.zero_grad(set_to_none=True)
        g_loss.backward()
        g_optimizer.step()
        if use_gan:
            # real slices are real; in a generated slice the hole is fake and the rest real (LaMa's mask_as_fake)
            real_logits, _ = discriminator(images)
            fake_logits, _ = discriminator(prediction.detach())
            fake_hole = F.interpolate(holes, size=fake_logits.shape[-2:], mode="area")
            d_loss = F.softplus(-real_logits).mean() + (F.softplus(fake_logits) * fake_hole
                                                        + F.softplus(-fake_logits) * (1 - fake_hole)).mean()
            if config.r1_gamma > 0:
                d_loss = d_loss + config.r1_gamma * _r1_penalty(discriminator, images)
            d_optimizer.zero_grad(set_to_none=True)
            d_loss.backward()
            d_optimizer.step()
            history["discriminator"].append(d_loss.item())
        history["l1_known"].append(l1_known.item())
        history["l1_hole"].append(l1_hole.item())
        history["generator"].append(g_loss.item())
        step += 1
        bar.update(1)
        if step_callback is not None:
            step_callback(step)
        bar.set_postfix(l1_hole=f"{l1_hole.item():.4f}")
        if step % config.checkpoint_every == 0:
            save()
    bar.close()
    save()
    return ckpt.TrainingResult(folder, step, history)


def load_inpainter(folder: Path, device: torch.device) -> FFCInpainter:
    """The trained inpainter of a model folder, in eval mode (safetensors weights)."""
    config = InpainterConfig(**ckpt.read_config(folder)["inpainter"])
    network = FFCInpainter.from_config(config)
    ckpt.load_weights(folder, WEIGHTS_NAME, network)
    return network.to(device).eval()


def inpaint_slices(network: FFCInpainter, images: np.ndarray, holes: np.ndarray, *, batch_size: int = 16,
                   device: torch.device | None = None) -> np.ndarray:
    """Inpaint a stack of (N, H, W) slices in [0, 1] with ``network``; pixels outside the holes are unchanged."""
    device = device or next(network.parameters()).device
    out = np.asarray(images, np.float32).copy()
    with torch.no_grad():
        for start in range(0, len(out), batch_size):
            image = torch.from_numpy(out[start:start + batch_size, None]).to(device)
            hole = torch.from_numpy(np.asarray(holes[start:start + batch_size, None], bool)).to(device)
            out[start:start + batch_size] = network(image, hole)[:, 0].float().cpu().numpy()
    return out


def parameter_count(module: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


__all__: Sequence[str] = ("FFC", "FFCInpainter", "FourierUnit", "InpainterConfig", "PatchDiscriminator2d",
                          "SpectralTransform", "inpaint_slices", "load_inpainter", "median_inpaint",
                          "random_large_mask", "train_inpainter")
