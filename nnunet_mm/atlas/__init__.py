"""Multi-atlas priors across modalities (paper 004): registration (SimpleITK, learned BiRegNet), label fusion
(majority, STAPLE, locally weighted, SimNet), prior channels, the ``nnunet_mm mas`` dataset writer and the recipe it
records, priors for new cases at prediction time (:mod:`.predict`), distillation.

Bottom layer: arrays, SimpleITK images and tensors in and out; nothing here knows nnU-Net's trainer.
"""
