"""Micro-benchmark of the device-side augmentations (sample + apply), for the bench scripts; not used in training."""
from __future__ import annotations

import time
from typing import Callable, Sequence

import torch

from nnunet_mm.augment.misalignment import random_misalignment
from nnunet_mm.augment.modality_dropout import random_modality_dropout
from nnunet_mm.settings.multimodal import MisalignmentSettings, ModalityDropoutSettings

__all__ = ["benchmark_augmentation"]


def benchmark_augmentation(batch_shape: Sequence[int] = (2, 4, 64, 160, 160), device: str | torch.device = "cuda",
                           iterations: int = 50, *, spacing_mm: Sequence[float] | None = None,
                           misalignment: MisalignmentSettings | None = None,
                           modality_dropout: ModalityDropoutSettings | None = None, warmup: int = 3,
                           seed: int = 0) -> dict:
    """Time :func:`random_misalignment` and :func:`random_modality_dropout` (sample + apply) on random data.

    Args:
        batch_shape: (B, C, *spatial) of the float32 batch, 2D or 3D.
        device: where to run; on CUDA every timing is bracketed by ``torch.cuda.synchronize``.
        iterations: timed calls per augmentation (after ``warmup`` untimed ones).
        spacing_mm: voxel spacing; default (3.0, 1.0, 1.0) in 3D, (1.0, 1.0) in 2D.
        misalignment: default: the dataset defaults with ``probability=1`` (every non-reference channel moved,
            the worst case).
        modality_dropout: default: ``probability=0.5``, ``mode="duplicate"``.
        warmup: untimed calls before timing (kernel selection, allocator).
        seed: seed of the generator (created on ``device``).

    Returns:
        ``{"misalignment_ms", "modality_dropout_ms", "total_ms"}``: mean milliseconds per call, plus
        ``"batch_shape"``, ``"device"`` and ``"iterations"``.
    """
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("benchmark_augmentation: device 'cuda' requested but CUDA is not available; pass device='cpu' "
                         "(with a smaller batch_shape).")
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}.")
    batch_shape = tuple(int(n) for n in batch_shape)
    num_dims = len(batch_shape) - 2
    if num_dims not in (2, 3):
        raise ValueError(f"batch_shape must be (B, C, X, Y) or (B, C, X, Y, Z), got {batch_shape}.")
    if spacing_mm is None:
        spacing_mm = (3.0, 1.0, 1.0)[-num_dims:] if num_dims == 3 else (1.0, 1.0)
    misalignment = misalignment or MisalignmentSettings(probability=1.0)
    modality_dropout = modality_dropout or ModalityDropoutSettings(probability=0.5, mode="duplicate")
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    images = torch.randn(batch_shape, generator=generator, device=device)

    def misalign() -> torch.Tensor:
        return random_misalignment(images, spacing_mm, misalignment, generator=generator)

    def drop() -> torch.Tensor:
        return random_modality_dropout(images, modality_dropout, generator=generator)

    with torch.no_grad():
        misalignment_ms = _time_ms(misalign, device, iterations, warmup)
        dropout_ms = _time_ms(drop, device, iterations, warmup)
    return {"misalignment_ms": misalignment_ms, "modality_dropout_ms": dropout_ms,
            "total_ms": misalignment_ms + dropout_ms, "batch_shape": batch_shape, "device": str(device),
            "iterations": iterations}


def _time_ms(function: Callable[[], torch.Tensor], device: torch.device, iterations: int, warmup: int) -> float:
    """Mean wall-clock milliseconds per call, with the device drained before and after."""
    def synchronize() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(warmup):
        function()
    synchronize()
    start = time.perf_counter()
    for _ in range(iterations):
        function()
    synchronize()
    return (time.perf_counter() - start) * 1000.0 / iterations
