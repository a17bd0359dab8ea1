"""CMGTrainer: cross-modal guidance for misregistered phases (paper 000) on top of MultiModalTrainer.

Method, as trained here:

* **Network** :class:`~nnunet_mm.cmg.network.CMGUNet` — one encoder per phase, Multi-Scale Fusion at the three
  deepest encoder levels, one decoder per phase, Cross-Modal Guidance at the two deepest decoder levels
  (prototypes of each class pooled from the *other* phases, cosine guidance maps, ``g·(1+S)``). Built from the
  plans' U-Net description, with fewer features per stage so that N streams fit roughly where one U-Net did.
* **Loss**, every head with equal weight as in the paper (which averages BCE over its six heads):
  ``L = DS(DC+CE)(reference) + Σ_{p≠ref} DS(DC+CE)(phase p) + Σ_{p,level} (DC+CE)(side logits of p at level)``.
  The paper's mean over heads becomes a sum here so that the reference head keeps nnU-Net's weight 1 under
  nnU-Net's SGD (the paper uses AdamW, which does not see a constant factor). ``phase_loss_weight`` and
  ``side_loss_weight`` scale every non-reference final head and every side head (1 = equal weighting).
* **Side targets** are the phase label max-pooled to the side head's resolution (a cell is lesion if any voxel
  under it is, the paper's ``maxpool_s(Y_p)``), from the same pooled one-hot masks that teacher forcing pools its
  prototypes from, so a small lesion never sits in a prototype mask while missing from the side target.
* **Per-phase targets.** Each phase is supervised with *its own* label: the dataset's label of that phase when it
  has them (configurations from ``nnunet_mm phase-labels``, e.g. MPTH's arterial masks), moved with exactly the
  misalignment that augmentation applied to that phase, and taking the label of the channel a dropped phase was
  copied from. Without per-phase labels the other phases fall back to the reference label, which ignores the data's
  own misregistration (only the synthetic one moves it); the trainer says so in its log.
* **Prototype source, scheduled.** Teacher forcing with the phase's own label early in training; the fraction of
  samples whose prototypes come from the network's own side predictions rises linearly from
  ``predicted_prototypes_start`` to ``predicted_prototypes_end`` over the epochs, so training moves toward what
  inference does (inference always uses predictions).
* Misalignment augmentation and modality dropout of :class:`MultiModalTrainer`, where the dataset's channels are
  separately acquired (see ``channel_acquisition``).

The training log states, at the start, the network's feature widths (and where they come from), fusion and
guidance levels, where each phase's targets come from, and the prototype (teacher-forcing) schedule.

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
from nnunet_mm.networks.from_plans import network_kwargs_from_plans, stream_width_factor
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
    auxiliary_reduction = "sum"  # "sum": every head weighs 1; "mean": the auxiliary heads together weigh 1
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
        self._log_network()
        self._log_phase_label_source()
        self._log_prototype_schedule()

    def _log_network(self) -> None:
        """Say how the network was built: feature widths per stage (and where they come from), fusion, guidance."""
        network = self.unwrapped_network
        features = list(network.encoders[0].output_channels)
        plans_kwargs = self.configuration_manager.network_arch_init_kwargs
        plans_class = self.configuration_manager.network_arch_class_name
        if plans_class.rsplit(".", 1)[-1] == CMGUNet.__name__:
            origin = "as given by the CMG plans"
        else:
            factor = stream_width_factor(network.num_phases)
            origin = (f"the plans' {plans_class.rsplit('.', 1)[-1]} {list(plans_kwargs['features_per_stage'])} x "
                      f"{factor:.2f}, so that {network.num_phases} streams fit where one U-Net did")
        encoders = ("one encoder shared by" if len(network.encoders) == 1 else "one encoder per") + \
            f" phase ({network.num_phases} phases)"
        modulation = "on" if all(g.modulate for g in network.guidance) else "OFF (ablation)"
        self.print_to_log_file(
            f"nnunet_mm CMG: CMGUNet, {encoders}, features per stage {features} ({origin}); Multi-Scale Fusion of "
            f"the phases at encoder stages {network.fusion_stages}; Cross-Modal Guidance at the "
            f"{network.guidance_levels} deepest decoder levels (modulation {modulation})", also_print_to_console=True)

    def _log_prototype_schedule(self) -> None:
        """Say where the prototypes come from over the run (teacher forcing share) and how the heads are weighted."""
        last = max(self.num_epochs - 1, 0)
        self.print_to_log_file(
            f"nnunet_mm CMG: prototypes from each phase's own label (teacher forcing), except a share of the "
            f"samples that use the network's side predictions instead, rising linearly from "
            f"{self.predicted_prototypes_start:.0%} at epoch 0 to {self.predicted_prototypes_end:.0%} at epoch "
            f"{last} (teacher forcing {1 - self.predicted_prototypes_start:.0%} -> "
            f"{1 - self.predicted_prototypes_end:.0%}; inference always uses predictions); loss: reference head + "
            f"{self.phase_loss_weight} x each other phase's head + {self.side_loss_weight} x each side head "
            f"({self.auxiliary_reduction} over the auxiliary heads)", also_print_to_console=True)

    def _log_phase_label_source(self) -> None:
        """Say where the non-reference phases' targets come from (their own labels, or the reference label)."""
        from nnunet_mm.cmg.phase_labels import SUFFIX
        from nnunet_mm.cmg.settings import PHASE_LABELS_DIR_KEY

        if self.configuration_manager.data_identifier.endswith(SUFFIX):  # data made by 'nnunet_mm phase-labels'
            raw_folder = self.dataset_settings.method(PHASE_LABELS_DIR_KEY)
            origin = f", from the raw dataset's {raw_folder}/" if raw_folder else ""
            message = (f"nnunet_mm CMG: every phase is supervised with its own label (configuration "
                       f"{self.configuration_name!r}, data {self.preprocessed_dataset_folder}{origin}, made by "
                       f"'nnunet_mm phase-labels').")
        else:
            has_phase_labels = self.dataset_settings.method(PHASE_LABELS_DIR_KEY) is not None
            hint = (f"this dataset has per-phase labels: run 'nnunet_mm phase-labels -d <id> -c "
                    f"{self.configuration_name}' and train configuration '{self.configuration_name}{SUFFIX}'"
                    if has_phase_labels else
                    f"to supervise each phase with its own label, add them ('{PHASE_LABELS_DIR_KEY}' in the "
                    f"'nnunet_mm' block) and train the '{SUFFIX}' configuration made by 'nnunet_mm phase-labels'")
            message = (f"nnunet_mm CMG: no per-phase labels in configuration {self.configuration_name!r}; the "
                       f"non-reference phases are trained on the reference label, moved only by the misalignment "
                       f"augmentation (the data's own misregistration is ignored). {hint}.")
        self.print_to_log_file(message, also_print_to_console=True)

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
            # per phase, per guidance level: pooled class masks (prototypes) and the side target made from them
            region_masks = [pooled_class_masks(phase_labels[:, p:p + 1], level_shapes, network.num_classes)
                            for p in range(num_phases)]
            side_targets = [[side_target(masks).to(phase_labels.dtype) for masks in per_level] for per_level in region_masks]
            use_prediction = self._draw_predicted_prototype_samples(data.shape[0])
        result = self.network(data[:, :num_phases], training_outputs=True, region_masks=region_masks,
                              use_prediction=use_prediction)
        return StepLoss(self.cmg_loss(result, reference_target(targets), phase_labels, side_targets))

    def cmg_loss(self, result: dict, target: list[torch.Tensor], phase_labels: torch.Tensor,
                 side_targets: list[list[torch.Tensor]]) -> torch.Tensor:
        """Every head with equal weight: reference DS loss + λ_phase · Σ other phases' DS losses + λ_side · Σ
        side-head losses (λ = 1).

        Args:
            result: :meth:`CMGUNet.forward_train`'s outputs.
            target: nnU-Net's reference targets (one per deep-supervision scale).
            phase_labels: (B, P, ...) every phase's label at full resolution.
            side_targets: per phase, per guidance level (deepest first), the (B, 1, ...) side target
                (:func:`side_target`).
        """
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
        side_terms = []
        for p, per_level in enumerate(result["side_logits"]):
            for level, logits in enumerate(per_level):
                if side_targets[p][level].shape[2:] != logits.shape[2:]:
                    raise ValueError(f"side head of phase {p} at guidance level {level} has shape "
                                     f"{tuple(logits.shape[2:])}, its target {tuple(side_targets[p][level].shape[2:])}")
                side_terms.append(self.side_loss(logits, side_targets[p][level]))
        auxiliary = [self.phase_loss_weight * term for term in phase_terms] + \
            [self.side_loss_weight * term for term in side_terms]
        if auxiliary:
            total = torch.stack(auxiliary).sum()
            loss = loss + (total / len(auxiliary) if self.auxiliary_reduction == "mean" else total)
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


def pooled_class_masks(label: torch.Tensor, level_shapes, num_classes: int) -> list[torch.Tensor]:
    """Per guidance level, (B, K-1, ...) foreground masks: the label's one-hot max-pooled to the level (a voxel of
    the level is in a class if any voxel under it is, so small lesions survive; the paper's ``maxpool_s(Y)``).

    Args:
        label: (B, 1, ...) integer label map at full resolution.
        level_shapes: spatial shape of each guidance level.
        num_classes: label values are ``0..num_classes-1``.
    """
    one_hot = torch.stack([(label[:, 0] == k) for k in range(1, num_classes)], dim=1).float()
    pool = F.adaptive_max_pool3d if one_hot.ndim == 5 else F.adaptive_max_pool2d
    return [pool(one_hot, tuple(shape)) for shape in level_shapes]


def side_target(masks: torch.Tensor) -> torch.Tensor:
    """The side head's (B, 1, ...) label at a level from that level's pooled class masks (:func:`pooled_class_masks`):
    the highest class present in the cell (the tumour inside the liver wins), background where no mask is set."""
    classes = torch.arange(1, masks.shape[1] + 1, device=masks.device, dtype=masks.dtype)
    return (masks * classes.view(1, -1, *([1] * (masks.ndim - 2)))).amax(1, keepdim=True)


class CMGTrainer_debug(DebugSchedule, CMGTrainer):
    """CMGTrainer on the debug schedule (:class:`~nnunet_mm.training.debug.DebugSchedule`)."""
