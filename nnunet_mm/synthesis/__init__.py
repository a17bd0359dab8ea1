"""Synthetic tumours for training (Diff4MMLiTS, paper 002): masks, synthesizers, real-tumour statistics, the trainer.

Modules are imported from where they live (:mod:`.masks`, :mod:`.handcrafted`, :mod:`.statistics`,
:mod:`.settings`, :mod:`.trainer`, ...); importing this package imports nothing, so reading the dataset.json
settings (which loads :mod:`.settings`) does not pull in the network code (MONAI, torchvision).
"""
