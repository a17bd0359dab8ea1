"""A second nnU-Net training loader over another preprocessed folder (unlabeled cases, synthetic pools).

Methods that draw extra batches (CMC's unlabeled cases, SynthTumor's pooled patches) read them with nnU-Net's own
loader and the trainer's own training transforms, so the extra samples are cropped, padded and augmented exactly
like the labelled ones, in background workers when ``nnUNet_n_proc_DA`` allows.
"""
from __future__ import annotations

from typing import Any


def augmented_loader(trainer: Any, dataset: Any, *, oversample_foreground_percent: float,
                     loader_class: type | None = None, **loader_kwargs: Any):
    """nnU-Net's loader (``loader_class``, default ``nnUNetDataLoader``) over ``dataset`` with ``trainer``'s batch
    size, patch sizes, label manager and :meth:`get_training_transforms`, wrapped like nnU-Net wraps its own
    (single-threaded when ``nnUNet_n_proc_DA`` is 0, else half of the allowed workers). Call ``_finish()`` on the
    result (when it has one) at the end of training.

    Args:
        trainer: an initialised ``nnUNetTrainer``.
        dataset: an nnU-Net dataset (e.g. ``nnUNetDatasetBlosc2(folder)``).
        oversample_foreground_percent: share of each batch forced onto a foreground location (``class_locations``).
        loader_kwargs: extra arguments of ``loader_class``.
    """
    from batchgenerators.dataloading.nondet_multi_threaded_augmenter import NonDetMultiThreadedAugmenter
    from batchgenerators.dataloading.single_threaded_augmenter import SingleThreadedAugmenter
    from nnunetv2.training.dataloading.data_loader import nnUNetDataLoader
    from nnunetv2.utilities.default_n_proc_DA import get_allowed_n_proc_DA

    rotation, dummy_2d, initial_patch_size, mirror_axes = \
        trainer.configure_rotation_dummyDA_mirroring_and_inital_patch_size()
    configuration = trainer.configuration_manager
    transforms = trainer.get_training_transforms(
        configuration.patch_size, rotation, trainer._get_deep_supervision_scales(), mirror_axes, dummy_2d,
        use_mask_for_norm=configuration.use_mask_for_norm, is_cascaded=False,
        foreground_labels=trainer.label_manager.foreground_labels, regions=None,
        ignore_label=trainer.label_manager.ignore_label)
    loader = (loader_class or nnUNetDataLoader)(dataset, trainer.batch_size, initial_patch_size,
                                                configuration.patch_size, trainer.label_manager,
                                                oversample_foreground_percent=oversample_foreground_percent,
                                                transforms=transforms, **loader_kwargs)
    processes = get_allowed_n_proc_DA()
    if processes == 0:
        return SingleThreadedAugmenter(loader, None)
    return NonDetMultiThreadedAugmenter(loader, None, num_processes=max(1, processes // 2), num_cached=3,
                                        seeds=None, pin_memory=trainer.device.type == "cuda", wait_time=0.002)


def finish_loader(loader: Any) -> None:
    """Stop a loader's background workers (nnU-Net's augmenters have ``_finish``; the single-threaded one not)."""
    if loader is not None and hasattr(loader, "_finish"):
        loader._finish()
