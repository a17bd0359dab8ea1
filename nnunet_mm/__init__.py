"""nnunet_mm: multimodal segmentation with misregistered, missing or unlabeled modalities, as an nnU-Net v2 plugin.

Importing this package is cheap on purpose (no torch, no nnU-Net): the start-up hook and the command line import it.
Sub-packages: ``augment`` (device-side misalignment and modality dropout), ``training`` (the shared
``MultiModalTrainer``), ``inference`` (prediction with missing channels), ``data`` (the dataset.json ``'nnunet_mm'``
block), ``io`` (image reading, resampling, registration, staging), ``phantom`` (seeded multi-phase liver phantoms),
``dataset_conversion`` (one module per dataset), ``cli`` (the ``nnunet_mm`` command).
"""
__version__ = "0.1.0"
