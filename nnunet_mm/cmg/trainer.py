"""CMGTrainer: cross-modal guidance for misregistered phases (paper 000) on top of MultiModalTrainer.

Method, as trained here:

* **Network** :class:`~nnunet_mm.cmg.network.CMGUNet` — one encoder per phase, Multi-Scale Fusion at the three
  deepest encoder levels, one decoder per phase, Cross-Modal Guidance at the two deepest decoder levels
  (prototypes of each class pooled from the *other* phases, cosine guidance maps, ``g·(1+S)``). Built from the
  plans' U-Net description, with fewer features per stage so that N streams fit roughly where one U-Net did.
* **Loss** ``L = DS(DC+CE)(reference) + λ_phase · mean_p DS(DC+CE)(phase p) + λ_side · mean_{p,level} (DC+CE)(side
  logits)`` — the paper supervises every phase and every side head with equal weight (λ = 1).
* **Per-phase targets.** Each phase is supervised with *its own* label: the dataset's label of that phase when it
  has them (configurations from ``nnunet_mm phase-labels``, e.g. MPTH's arterial masks; otherwise the reference
  label), moved with exactly the misalignment that augmentation applied to that phase, and taking the label of the
  channel a dropped phase was copied from.
* **Prototype source, scheduled.** Teacher forcing with the phase's own label early in training; the fraction of
  samples whose prototypes come from the network's own side predictions rises linearly from
  ``predicted_prototypes_start`` to ``predicted_prototypes_end`` over the epochs, so training moves toward what
  inference does (inference always uses predictions).
* Misalignment augmentation and modality dropout of :class:`MultiModalTrainer` stay on.

Hooks: ``build_network_architecture`` (static, plans only, as nnU-Net's predictor requires), ``initialize``, and
:meth:`~CMGTrainer.compute_loss` inside :class:`MultiModalTrainer`'s step. Validation and prediction go through
``forward(x)``: the reference phase's logits. The reference channel is stored in the network's weights, so
``nnUNetv2_predict`` rebuilds it exactly.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager, PlansManager
from torch import nn

from nnunet_mm.cmg.network import CMGUNet
from nnunet_mm.networks.from_plans import network_kwargs_from_plans
from nnunet_mm.training.debug import DebugSchedule
from nnunet_mm.training.multimodal_trainer import (MultiModalDraw, MultiModalTrainer, StepLoss, Target,
                                                   labels_following_channels, reference_target, resize_label,
                                                   target_list)

CMG_CLASS_NAME = f"{CMGUNet.__module__}.{CMGUNet.__name__}"


def cmg_unet_from_plans(configuration_manager: ConfigurationManager, num_input_channels: int,
                        num_output_channels: int, deep_supervision: bool) -> CMGUNet:
    """A CMGUNet for an nnU-Net configuration (:func:`~nnunet_mm.networks.from_plans.network_kwargs_from_plans`:
    the configuration's U-Net with slimmer stages, or the CMGUNet arguments of CMG plans as they are)."""
    kwargs = network_kwargs_from_plans(configuration_manager, CMG_CLASS_NAME, num_input_channels)
    network = CMGUNet(input_channels=num_input_channels, num_classes=num_output_channels,
                      deep_supervision=deep_supervision, **kwargs)
    network.apply(CMGUNet.initialize)
    return network


class CMGTrainer(MultiModalTrainer):
    """Cross-modal guidance network and losses (paper 000) with MultiModalTrainer's augmentation."""

    phase_loss_weight = 1.0
    side_loss_weight = 1.0
    predicted_prototypes_start = 0.0
    predicted_prototypes_end = 0.5

    @staticmethod
    def build_network_architecture(plans_manager: PlansManager, configuration_manager: ConfigurationManager,
                                   num_input_channels: int, num_output_channels: int,
                                   enable_deep_supervision: bool = True) -> nn.Module:
        return cmg_unet_from_plans(configuration_manager, num_input_channels, num_output_channels,
                                   enable_deep_supervision)

    def initialize(self) -> None:
        if self.label_manager.has_regions:
            raise ValueError("CMGTrainer needs plain labels (one class per voxel) for its class prototypes; this "
                             "dataset uses region-based training (e.g. BraTS regions). Use MultiModalTrainer.")
        if self.is_cascaded:
            raise ValueError("CMGTrainer does not support cascades (the previous stage's one-hot channels are not "
                             "phases); train the full-resolution configuration.")
        if self.mm_settings.num_channels < 2:
            raise ValueError(f"CMGTrainer needs at least two phases (channels); dataset.json has "
                             f"{self.mm_settings.num_channels}. Use MultiModalTrainer.")
        super().initialize()
        self.unwrapped_network.set_reference_channel(self.mm_settings.reference_channel)
        self.side_loss = self._build_single_scale_loss()

    def _build_single_scale_loss(self) -> nn.Module:
        """nnU-Net's DC+CE exactly as configured for this dataset, without the deep-supervision wrapper."""
        deep_supervision = self.enable_deep_supervision
        self.enable_deep_supervision = False
        try:
            return self._build_loss()
        finally:
            self.enable_deep_supervision = deep_supervision

    def predicted_prototype_fraction(self) -> float:
        """Share of samples whose prototypes come from the network's own predictions at the current epoch."""
        progress = self.current_epoch / max(self.num_epochs - 1, 1)
        return self.predicted_prototypes_start + (self.predicted_prototypes_end - self.predicted_prototypes_start) \
            * min(max(progress, 0.0), 1.0)

    def _draw_predicted_prototype_samples(self, batch_size: int) -> torch.Tensor:
        """(B,) bool: the samples whose prototypes come from the network's predictions in this step."""
        draw = torch.rand(batch_size, generator=self.augmentation_generator, device=self.augmentation_generator.device)
        return draw.to(self.device) < self.predicted_prototype_fraction()

    def compute_loss(self, data: torch.Tensor, target: Target, draw: MultiModalDraw, batch: dict) -> StepLoss:
        """Every phase supervised with its own label; prototypes from labels or from the network's predictions."""
        num_phases, network = self.mm_settings.num_channels, self.unwrapped_network
        targets = target_list(target)
        with torch.no_grad():
            phase_labels = self._phase_labels(targets[0], draw)  # each phase's label, moved with its phase
            level_shapes = network.guidance_level_shapes(data.shape[2:])
            region_masks = [_region_masks(phase_labels[:, p:p + 1], level_shapes, network.num_classes)
                            for p in range(num_phases)]
            use_prediction = self._draw_predicted_prototype_samples(data.shape[0])
        result = self.network(data[:, :num_phases], training_outputs=True, region_masks=region_masks,
                              use_prediction=use_prediction)
        return StepLoss(self.cmg_loss(result, reference_target(targets), phase_labels))

    def cmg_loss(self, result: dict, target: list[torch.Tensor], phase_labels: torch.Tensor) -> torch.Tensor:
        """Reference DS loss + λ_phase · other phases' DS losses + λ_side · side-head losses."""
        reference = self.mm_settings.reference_channel
        outputs = result["outputs"]
        deep_supervision = len(outputs[reference]) > 1
        loss = self.loss(outputs[reference], target) if deep_supervision else self.side_loss(outputs[reference][0],
                                                                                            target[0])
        phase_terms = []
        for p, phase_outputs in enumerate(outputs):
            if p == reference:
                continue
            label = phase_labels[:, p:p + 1]
            if deep_supervision:
                phase_targets = [label if t.shape == label.shape else resize_label(label, t.shape[2:])
                                 for t in target]
                phase_terms.append(self.loss(phase_outputs, phase_targets))
            else:
                phase_terms.append(self.side_loss(phase_outputs[0], label))
        side_terms = [self.side_loss(logits, resize_label(phase_labels[:, p:p + 1], logits.shape[2:]))
                      for p, per_level in enumerate(result["side_logits"]) for logits in per_level]
        if phase_terms:
            loss = loss + self.phase_loss_weight * torch.stack(phase_terms).mean()
        if side_terms:
            loss = loss + self.side_loss_weight * torch.stack(side_terms).mean()
        return loss

    def _phase_labels(self, seg: torch.Tensor, draw: MultiModalDraw) -> torch.Tensor:
        """(B, C, ...) label of every image channel after augmentation, from the batch's segmentation: channel 0 is
        the reference label; a ``_phases`` configuration adds the other channels' labels in channel order."""
        settings = self.mm_settings
        num_channels, reference = settings.num_channels, settings.reference_channel
        if seg.shape[1] == num_channels:  # seg = [reference, other channels in order] → image channel order
            others = [c for c in range(num_channels) if c != reference]
            order = [0 if c == reference else 1 + others.index(c) for c in range(num_channels)]
            labels = seg[:, order]
        elif seg.shape[1] == 1:
            labels = seg.expand(-1, num_channels, *seg.shape[2:])
        else:
            raise ValueError(f"the segmentation has {seg.shape[1]} channels; expected 1 or one per image channel "
                             f"({num_channels}).")
        if draw.misalignment is None and draw.dropout is None:
            return labels
        return labels_following_channels(labels, draw, self.unwrapped_network.num_classes,
                                         self.configuration_manager.spacing, settings.modality_dropout.mode,
                                         reference_channel=reference)


def _region_masks(label: torch.Tensor, level_shapes, num_classes: int) -> list[torch.Tensor]:
    """Per guidance level, (B, K-1, ...) foreground masks: one-hot max-pooled to the level (a voxel of the level is
    in a class if any voxel under it is, so small lesions survive)."""
    one_hot = torch.stack([(label[:, 0] == k) for k in range(1, num_classes)], dim=1).float()
    pool = F.adaptive_max_pool3d if one_hot.ndim == 5 else F.adaptive_max_pool2d
    return [pool(one_hot, tuple(shape)) for shape in level_shapes]


class CMGTrainer_debug(DebugSchedule, CMGTrainer):
    """CMGTrainer on the debug schedule (:class:`~nnunet_mm.training.debug.DebugSchedule`)."""
