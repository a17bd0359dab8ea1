"""The training core every method shares: :class:`~.multimodal_trainer.MultiModalTrainer` (the one training step,
the multimodal augmentation, extra logs), the debug schedule (:mod:`.debug`) and loss-weight ramps
(:mod:`.schedules`). The methods' trainers live in their packages (:mod:`nnunet_mm.cmg.trainer`, ...)."""
