"""Device-side augmentations for multimodal batches: tensors in, tensors out, on any device (no nnU-Net imports).

- :mod:`~nnunet_mm.augment.misalignment`: a random rigid + elastic warp per non-reference channel (registration
  error between phases/sequences).
- :mod:`~nnunet_mm.augment.modality_dropout`: random replacement of non-reference channels in training, and the
  matching :func:`fill_missing_channels` at inference.

Each augmentation has a ``sample_*`` function (all randomness, from an explicit ``torch.Generator``), an ``apply_*``
function (deterministic) and a ``random_*`` function that does both. The reference channel (the one the label
belongs to) is never changed. :func:`nnunet_mm.augment.benchmark.benchmark_augmentation` times them.
"""
from nnunet_mm.augment.misalignment import (
    MisalignmentParameters,
    apply_misalignment,
    displacement_field_mm,
    random_misalignment,
    sample_misalignment,
)
from nnunet_mm.augment.modality_dropout import (
    ModalityDropoutParameters,
    apply_modality_dropout,
    fill_missing_channels,
    random_modality_dropout,
    sample_modality_dropout,
)

__all__ = [
    "MisalignmentParameters",
    "sample_misalignment",
    "displacement_field_mm",
    "apply_misalignment",
    "random_misalignment",
    "ModalityDropoutParameters",
    "sample_modality_dropout",
    "apply_modality_dropout",
    "random_modality_dropout",
    "fill_missing_channels",
]
