"""The mean-teacher pieces CLTN uses (:mod:`nnunet_mm.training.mean_teacher`, shared with CMC's baseline)."""
from nnunet_mm.training.mean_teacher import consistency_loss, ema_update, make_teacher, perturb_intensities

__all__ = ["consistency_loss", "ema_update", "make_teacher", "perturb_intensities"]
