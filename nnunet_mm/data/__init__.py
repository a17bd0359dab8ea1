"""Per-dataset plugin settings (the ``"nnunet_mm"`` block of dataset.json)."""
from nnunet_mm.data.settings import (
    MisalignmentSettings,
    ModalityDropoutSettings,
    MultiModalSettings,
)

__all__ = ["MisalignmentSettings", "ModalityDropoutSettings", "MultiModalSettings"]
