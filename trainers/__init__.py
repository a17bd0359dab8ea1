"""Trainer shims that nnU-Net imports by class name.

nnU-Net scans the folders listed in ``nnUNet_extTrainer`` and imports every module it finds there, so this folder
holds only one-line re-exports; the trainers themselves live in their method packages (:mod:`nnunet_mm.cmg.trainer`, ...). The start-up hook
(``_nnunet_mm_ext``) adds this folder to ``nnUNet_extTrainer`` automatically.
"""
