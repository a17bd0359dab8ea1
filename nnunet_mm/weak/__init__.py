"""Weak supervision from image-level labels (CLTN, paper 003): the 2D diseased/normal dataset, the label-transfer
GAN, pseudo-mask export, scores split by image label, and the mean-teacher pieces of :class:`~nnunet_mm.weak.trainer.
WeakLabelTrainer`."""
