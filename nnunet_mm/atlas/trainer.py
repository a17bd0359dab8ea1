"""MASPriorTrainer: nnU-Net with multi-atlas prior channels (paper 004, cross-modality multi-atlas segmentation).

Atlases labelled in another modality are registered to each target image and their fused labels become per-class
prior probability channels (``nnunet_mm mas``, :mod:`nnunet_mm.atlas`). The segmentation network reads image and
prior together; the prior helps most when few target labels exist. This trainer knows which channels are priors
(the block's ``"modalities": {"1": "atlas_prior:liver", ...}`` in dataset.json) and treats them as what they are:

1. **No intensity augmentation on priors**: nnU-Net's intensity transforms see only the image channels
   (:func:`restrict_intensity_transforms`); spatial augmentation and mirroring move priors with image and label.
2. **Prior dropout**: with probability p per sample (``"prior_dropout": {"probability": p}`` in the block, default
   0.3) all prior channels are zeroed on the training device (:func:`drop_priors`), so the network does not blindly
   copy the prior.
3. The plugin's misalignment and modality dropout act on the image channels only (priors are never filled with a
   copy of an image channel), and only where the dataset's ``channel_acquisition`` (inherited from the target by
   ``nnunet_mm mas``) or an explicit setting turns them on; with one image channel they are off. Prior dropout is
   this trainer's own and does not depend on them.

4. **No leakage from learned priors**: when the priors come from learned networks (``nnunet_mm mas-train``), the
   dataset records the target cases they trained on (``"mas_priors"``), and a fold whose validation cases are among
   them is refused (``do_split``): those priors would be better than a new patient's.

Prediction: ``nnunet_mm predict`` on new cases (image channels only) makes their priors with the registration and
fusion the dataset recorded (:mod:`nnunet_mm.atlas.predict`); stock ``nnUNetv2_predict`` on a folder written by
``nnunet_mm mas`` (images + priors) works too. DDP: prior dropout draws from the per-rank
``self.augmentation_generator``; the CPU transforms are per sample.

Hooks overridden: ``__init__``, ``do_split``, ``get_training_transforms`` (an instance method here; nnU-Net calls it
through ``self``), ``augment_multimodal`` (of :class:`MultiModalTrainer`'s step), ``_log_multimodal_settings`` (one
statement about image and prior channels in the training log).
"""
from __future__ import annotations

import dataclasses

import torch

from nnunet_mm.atlas.prior_augmentation import drop_priors, restrict_intensity_transforms
from nnunet_mm.atlas.prior_channels import prior_channel_indices
from nnunet_mm.atlas.settings import MAS_PRIORS_KEY, PRIOR_DROPOUT_KEY
from nnunet_mm.training.debug import DebugSchedule
from nnunet_mm.training.multimodal_trainer import MultiModalDraw, MultiModalTrainer


class MASPriorTrainer(MultiModalTrainer):
    """nnU-Net on image + atlas prior channels: no intensity augmentation on priors, prior dropout."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.prior_channels = prior_channel_indices(self.dataset_settings, dataset_json["channel_names"])
        if not self.prior_channels:
            raise ValueError("MASPriorTrainer: dataset.json marks no atlas prior channels (\"nnunet_mm\": "
                             "{\"modalities\": {\"<c>\": \"atlas_prior:<class>\"}}); write the dataset with "
                             "'nnunet_mm mas' or train with MultiModalTrainer.")
        self.num_image_channels = self.prior_channels[0]
        # the base augmentations (misalignment, modality dropout) see the image channels only
        self.mm_settings = dataclasses.replace(self.mm_settings, num_channels=self.num_image_channels)
        # share of samples trained without their prior (the block's "prior_dropout": {"probability": p})
        self.prior_dropout_probability = self.dataset_settings.method(PRIOR_DROPOUT_KEY)

    def do_split(self):
        """nnU-Net's split, refused when learned priors were trained on a validation case of this fold."""
        tr_keys, val_keys = super().do_split()
        recipe = self.dataset_settings.method(MAS_PRIORS_KEY)
        if self.fold != "all" and recipe is not None and recipe.learned_training_cases is not None:
            seen = sorted(set(val_keys) & set(recipe.learned_training_cases))
            if seen:
                raise ValueError(f"{self.dataset_settings.source}: fold {self.fold} validates on {seen}, which the "
                                 f"learned registration/fusion networks of its priors were trained on (their priors "
                                 f"are better than a new patient's). Train 'nnunet_mm mas-train --fold {self.fold}', "
                                 f"rebuild the dataset with 'nnunet_mm mas', or train another fold.")
        return tr_keys, val_keys

    def get_training_transforms(self, *args, **kwargs):
        pipeline = super().get_training_transforms(*args, **kwargs)
        return restrict_intensity_transforms(pipeline, self.num_image_channels)

    def augment_multimodal(self, data: torch.Tensor) -> tuple[torch.Tensor, MultiModalDraw]:
        """The base augmentation on the image channels, then prior dropout."""
        data, draw = super().augment_multimodal(data)
        with torch.no_grad():
            data, _ = drop_priors(data, self.prior_channels, self.prior_dropout_probability,
                                  self.augmentation_generator)
        return data, draw

    def _log_multimodal_settings(self) -> None:
        """The channels and every augmentation decision, in two lines that agree with each other.

        :class:`MultiModalTrainer`'s two lines describe ``self.mm_settings``, which this trainer narrows to the image
        channels: they counted ``1 channel(s)`` (or the decision "one image channel") for a dataset with more
        channels, and a third line then listed prior channels with indices beyond that count, without saying
        whether the misalignment (decided from the dataset-wide ``channel_acquisition``) reaches them. Here the
        count covers every channel, and each augmentation is stated with the channels it acts on.
        """
        settings = self.mm_settings
        decision = settings.augmentation_decision()
        images = [settings.channel_name(c) for c in range(self.num_image_channels)]
        modalities = self.dataset_settings.description.modalities
        priors = [f"{c} ({modalities[c]})" if c in modalities else str(c) for c in self.prior_channels]
        self.print_to_log_file(
            f"nnunet_mm: {self.num_image_channels + len(self.prior_channels)} channel(s): image channel(s) "
            f"{', '.join(images)}; atlas prior channel(s) {', '.join(priors)}; reference channel "
            f"{settings.channel_name(settings.reference_channel)}; seed {settings.seed}", also_print_to_console=True)
        active = ([f"misalignment {settings.misalignment}"] if decision.misalignment else []) + \
            ([f"modality dropout {settings.modality_dropout}"] if decision.modality_dropout else [])
        self.print_to_log_file(
            f"nnunet_mm: image channels: {decision.describe()}" + "".join(f"; {text}" for text in active)
            + f". Prior channels {self.prior_channels}: never misaligned or replaced by the misalignment and "
            f"modality dropout (they stay on the reference channel's grid, with the label), no intensity "
            f"augmentation; prior dropout p={self.prior_dropout_probability} (all prior channels of a sample "
            f"zeroed together)", also_print_to_console=True)


class MASPriorTrainer_debug(DebugSchedule, MASPriorTrainer):
    """MASPriorTrainer on the debug schedule (:class:`~nnunet_mm.training.debug.DebugSchedule`)."""
