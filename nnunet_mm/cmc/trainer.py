"""CMCTrainer: semi-supervised cross-modality collaboration with unlabeled cases (paper 001).

Method, as trained here (the paper's intent; its public code never back-propagates the semi-supervised terms):

* **Network** :class:`~nnunet_mm.cmc.network.CMCUNet` — nnU-Net's encoder and decoder from the plans,
  shared by all modalities, with the cross-modality bottleneck (channel attention, fusion, per-modality projection).
* **Pairs.** Single-channel datasets (unpaired CT/MR, modality per case in the block's ``per_case_modality``): the batch is
  drawn in equal shares per modality (labeled and unlabeled loaders alike), split into two halves and paired sample
  by sample so that every pair mixes modalities when the dataset has both (an odd batch's leftover sample is paired
  with itself); a share ``self_pairing_probability`` of the pairs
  are self-pairs, which is how inference runs. A self-pair's second stream is supervised with its own (the first
  stream's) label.
  Multi-channel datasets (paired acquisitions): one stream per channel.
* **Loss** ``L = L_sup + w_csc(e)·L_CSC + w_cac(e)·L_CAC``: nnU-Net's DC+CE with deep supervision on every stream's
  output (½ each for a pair); from ``semi_start_fraction · num_epochs`` on, a batch of unlabeled cases goes through
  the same forward (one call, so DDP sees one graph) and adds channel-wise semantic consistency (NT-Xent over
  bottleneck channels, τ = 0.5; the reference channel's stream against every other) and anatomical consistency
  (for paired channels, the reference prediction is first moved into each channel's frame by the augmentation's own
  known misalignment and dropout, so CAC compares what the images show, not the synthetic shift) (1 − soft Dice, voxelwise for paired channels, per-class
  volumes for unpaired pairs), with the paper's sigmoid ramp-up and cosine ramp-down over the whole run
  (``consistency_ramp``; ``"after_start"`` stretches them over the epochs after the start instead).
* **Unlabeled cases**: training is semi-supervised exactly when ``nnunet_mm preprocess-unlabeled`` has written
  unlabeled cases for the configuration (from the raw folder named by the block's ``unlabeled_dir``, ``imagesUnl``
  by default); if the block names ``unlabeled_dir`` but nothing was preprocessed, training refuses to start.
* The training log states, at the start, the pairing mode and the consistency schedule (start epoch, ramps,
  weights at the start and the last epoch), then where the unlabeled cases come from and how many there are.
* Extra losses are logged per epoch (``csc_loss``, ``cac_loss``) by :class:`MultiModalTrainer`'s step and survive
  ``--c`` with the rest of nnU-Net's log; the unlabeled loader is rebuilt on resume and shut down with the others.
* The reference channel is stored in the network's weights, so ``nnUNetv2_predict`` rebuilds it exactly.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

from nnunet_mm.cmc.balanced_loader import ModalityBalancedDataLoader, modality_balanced_loaders
from nnunet_mm.cmc.losses import cac_loss, csc_loss
from nnunet_mm.cmc.network import CMCUNet
from nnunet_mm.cmc.settings import UNLABELED_DIR_KEY
from nnunet_mm.cmc.unlabeled import unlabeled_folder
from nnunet_mm.training.extra_loader import augmented_loader, finish_loader
from nnunet_mm.io.safe_load import UnreadableFileError, UntrustedContentError, verify_preprocessed_folder
from nnunet_mm.networks.from_plans import network_kwargs_from_plans
from nnunet_mm.training.debug import DebugSchedule
from nnunet_mm.training.refusal import TrainingRefused
from nnunet_mm.training.multimodal_trainer import (MultiModalDraw, MultiModalTrainer, StepLoss, Target,
                                                   labels_following_channels, probabilities_following_channels,
                                                   reference_target, resize_label, target_list)
from nnunet_mm.training.schedules import cosine_rampdown, sigmoid_rampup

CMC_CLASS_NAME = f"{CMCUNet.__module__}.{CMCUNet.__name__}"


class CMCTrainer(MultiModalTrainer):
    """Cross-modality collaboration on labeled and unlabeled cases (see the module docstring)."""

    semi_start_fraction = 0.7  # the paper starts at epoch 350 of 500
    # "whole_run" (the paper): t = epoch / num_epochs, so at the start (350/500) w_csc = 0.64, w_cac = 0.21;
    # "after_start": t runs from 0 at the start to 1 at the end (w_csc 0.007 → 1, w_cac 1 → 0 over the window)
    consistency_ramp = "whole_run"
    self_pairing_probability = 0.25
    csc_temperature = 0.5
    consistency_scales = (1.0, 1.0)  # (CSC, CAC) multipliers of the paper's weights; ablations set 0
    extra_log_keys = ("csc_loss", "cac_loss")

    @staticmethod
    def build_network_architecture(plans_manager, configuration_manager, num_input_channels: int,
                                   num_output_channels: int, enable_deep_supervision: bool = True) -> nn.Module:
        kwargs = network_kwargs_from_plans(configuration_manager, CMC_CLASS_NAME, max(2, num_input_channels))
        network = CMCUNet(input_channels=num_input_channels, num_classes=num_output_channels,
                          deep_supervision=enable_deep_supervision, **kwargs)
        network.apply(CMCUNet.initialize)
        return network

    def initialize(self) -> None:
        if self.label_manager.has_regions or self.is_cascaded:
            raise ValueError("CMCTrainer needs plain labels (its anatomical consistency compares class "
                             "probabilities) and no cascade.")
        super().initialize()
        self.unwrapped_network.set_reference_channel(self.mm_settings.reference_channel)
        self.paired = self.mm_settings.num_channels > 1
        self.case_modality = dict(self.dataset_settings.description.per_case_modality)
        self.dataloader_unlabeled = None
        self.print_to_log_file(f"nnunet_mm CMC: pairing: {self._pairing_description()}", also_print_to_console=True)
        self.print_to_log_file(f"nnunet_mm CMC: consistency: {self._schedule_description()}",
                               also_print_to_console=True)

    def _pairing_description(self) -> str:
        """How the network's streams are formed, for the training log."""
        settings = self.mm_settings
        if self.paired:
            channels = ", ".join(settings.channel_name(c) for c in range(settings.num_channels))
            return (f"paired channels, one stream per channel ({channels}); the reference stream "
                    f"{settings.channel_name(settings.reference_channel)} is the anchor of CSC and CAC, and CAC "
                    f"compares voxel by voxel after moving its prediction into each channel's augmented frame")
        counts: dict[str, int] = {}
        for modality in self.case_modality.values():
            counts[modality] = counts.get(modality, 0) + 1
        modalities = (", ".join(f"{modality} {count}" for modality, count in sorted(counts.items()))
                      if counts else "none given ('per_case_modality' absent: pairs are drawn regardless of modality)")
        return (f"unpaired single-channel cases (labeled cases per modality: {modalities}); batches drawn in equal "
                f"shares per modality, two streams paired across modalities where the batch has both, "
                f"{self.self_pairing_probability:.0%} of the labeled pairs self-pairs (unlabeled pairs never); CAC "
                f"compares per-class volumes")

    def _schedule_description(self) -> str:
        """When the unlabeled terms start and how they are weighted, for the training log."""
        start, last = self._semi_start_epoch(), self.num_epochs - 1
        window = "the whole run" if self.consistency_ramp == "whole_run" else f"epochs {start}-{last}"
        w_start, w_last = self.consistency_weights_at(start), self.consistency_weights_at(last)
        return (f"from epoch {start} of {self.num_epochs} (semi_start_fraction {self.semi_start_fraction}), only "
                f"with preprocessed unlabeled cases; w_csc = {self.consistency_scales[0]} * exp(-5(1-t)^2) (ramp-up), "
                f"w_cac = {self.consistency_scales[1]} * (cos(pi t)+1)/2 (ramp-down), t over {window} "
                f"(consistency_ramp '{self.consistency_ramp}'): w_csc {w_start[0]:.3f}, w_cac {w_start[1]:.3f} at "
                f"epoch {start}; {w_last[0]:.3f}, {w_last[1]:.3f} at epoch {last}; CSC temperature "
                f"{self.csc_temperature}")

    def get_dataloaders(self):
        """nnU-Net's loaders; on unpaired data every batch holds the modalities in equal shares
        (:class:`~nnunet_mm.cmc.balanced_loader.ModalityBalancedDataLoader`), so pairs mix CT and MR whenever the
        dataset has both."""
        if self.paired:
            return super().get_dataloaders()
        with modality_balanced_loaders(self.case_modality):
            return super().get_dataloaders()

    # ------------------------------------------------------------------------------------------------------------
    # unlabeled data

    def on_train_start(self) -> None:
        super().on_train_start()
        folder = self.unlabeled_cases_folder()
        if folder is not None:
            try:
                verify_preprocessed_folder(folder)  # nnU-Net's loader unpickles their properties
            except (UnreadableFileError, UntrustedContentError) as error:
                raise TrainingRefused(error) from None
        self.dataloader_unlabeled = None if folder is None else self._make_unlabeled_loader(folder)

    def on_train_end(self) -> None:
        finish_loader(self.dataloader_unlabeled)
        self.dataloader_unlabeled = None
        super().on_train_end()

    def unlabeled_cases_folder(self) -> Path | None:
        """The configuration's preprocessed unlabeled cases, or None (logged) when there are none: then CMC trains
        supervised only.

        Raises:
            FileNotFoundError: the block names ``unlabeled_dir`` but its cases were not preprocessed (the message
                gives the command).
        """
        from nnunetv2.training.dataloading.nnunet_dataset import nnUNetDatasetBlosc2

        folder = unlabeled_folder(self.preprocessed_dataset_folder_base, self.configuration_manager.data_identifier)
        cases = nnUNetDatasetBlosc2.get_identifiers(str(folder)) if folder.is_dir() else []
        raw_folder = self.dataset_settings.method(UNLABELED_DIR_KEY)
        if cases:
            self.print_to_log_file(f"nnunet_mm CMC: {len(cases)} unlabeled case(s) from {folder} (preprocessed from "
                                   f"the raw dataset's {raw_folder}/); the consistency terms start at epoch "
                                   f"{self._semi_start_epoch()} of {self.num_epochs}.", also_print_to_console=True)
            return folder
        command = f"nnunet_mm preprocess-unlabeled -d {self.plans_manager.dataset_name} -c {self.configuration_name}"
        if self.dataset_settings.is_set(UNLABELED_DIR_KEY):
            raise FileNotFoundError(f"{folder}: no preprocessed unlabeled cases, but {self.dataset_settings.source} "
                                    f"declares 'nnunet_mm': {{'{UNLABELED_DIR_KEY}': {raw_folder!r}}}; run "
                                    f"'{command}' first.")
        self.print_to_log_file(f"nnunet_mm CMC: no preprocessed unlabeled cases ({folder}); CMC trains supervised only "
                               f"(CMCUNet, no consistency terms). For semi-supervised training put unlabeled images "
                               f"into the raw dataset's {raw_folder}/ and run '{command}'.",
                               also_print_to_console=True)
        return None

    def _make_unlabeled_loader(self, folder: Path):
        """nnU-Net's loader and training augmentation over the preprocessed unlabeled cases (random crops), drawn per
        modality on unpaired data like the labeled batches."""
        from nnunetv2.training.dataloading.nnunet_dataset import nnUNetDatasetBlosc2

        return augmented_loader(self, nnUNetDatasetBlosc2(str(folder)), oversample_foreground_percent=0.0,
                                loader_class=ModalityBalancedDataLoader,
                                case_modality={} if self.paired else self.case_modality)

    # ------------------------------------------------------------------------------------------------------------
    # the step

    def _semi_start_epoch(self) -> int:
        return int(round(self.semi_start_fraction * self.num_epochs))

    def consistency_weights(self) -> tuple[float, float]:
        """(w_csc, w_cac) at the current epoch: zero before the start, then the sigmoid ramp-up and cosine ramp-down
        over the whole run as the paper has them (``consistency_ramp = "whole_run"``), or stretched over the epochs
        after the start (``"after_start"``); each multiplied by its entry of ``consistency_scales`` (1, 1: the
        paper; the ablations set one or both to 0, and the unlabeled forward still runs)."""
        return self.consistency_weights_at(self.current_epoch)

    def consistency_weights_at(self, epoch: int) -> tuple[float, float]:
        """(w_csc, w_cac) at ``epoch`` (see :meth:`consistency_weights`)."""
        if self.consistency_ramp not in ("whole_run", "after_start"):
            raise ValueError(f"consistency_ramp must be 'whole_run' or 'after_start', not {self.consistency_ramp!r}.")
        if epoch < self._semi_start_epoch():
            return 0.0, 0.0
        ramp_start = 0 if self.consistency_ramp == "whole_run" else self._semi_start_epoch()
        csc_scale, cac_scale = self.consistency_scales
        return (csc_scale * sigmoid_rampup(epoch, self.num_epochs, ramp_start),
                cac_scale * cosine_rampdown(epoch, self.num_epochs, ramp_start))

    def semi_supervised_now(self) -> bool:
        """Whether this epoch's steps take an unlabeled batch (from ``semi_start_fraction · num_epochs`` on)."""
        return self.current_epoch >= self._semi_start_epoch()

    def compute_loss(self, data: torch.Tensor, target: Target, draw: MultiModalDraw, batch: dict) -> StepLoss:
        """``L = L_sup + (unlabeled terms)``, labeled and unlabeled streams in one forward pass (one graph for DDP)."""
        num_channels = self.mm_settings.num_channels
        if not self.paired and data.shape[0] < 2:
            raise ValueError("CMCTrainer pairs samples of a batch; the configuration's batch size must be >= 2.")
        pairs = None if self.paired else self._pairs(batch.get("keys", range(data.shape[0])))
        streams = self._streams(data[:, :num_channels], pairs)
        num_labeled = streams[0].shape[0]
        unlabeled = None
        if self.dataloader_unlabeled is not None and self.semi_supervised_now():
            unlabeled = self._unlabeled_streams()
            streams = [torch.cat((labeled, other)) for labeled, other in zip(streams, unlabeled[0])]

        result = self.network(streams=streams)
        # every stream's outputs as a list over scales (one entry when deep supervision is off)
        stream_outputs = [list(o) if isinstance(o, (list, tuple)) else [o] for o in result["outputs"]]
        outputs = [[scale[:num_labeled] for scale in stream] for stream in stream_outputs]
        loss = self._supervised_loss(outputs, target_list(reference_target(target)), draw, pairs)
        if unlabeled is None:
            return StepLoss(loss, {key: torch.zeros((), device=self.device) for key in self.extra_log_keys})
        unlabeled_term, logs = self.unlabeled_loss(result, stream_outputs, num_labeled, *unlabeled)
        return StepLoss(loss + unlabeled_term, logs)

    def _unlabeled_streams(self) -> tuple[list[torch.Tensor], MultiModalDraw]:
        """The next unlabeled batch, augmented like the labeled one, as network streams (and the augmentation's
        draw). Unlabeled pairs mix modalities like labeled ones and are never self-pairs (CSC and CAC would be
        trivially 0 on a sample against itself)."""
        batch = next(self.dataloader_unlabeled)
        images, draw = self.augment_multimodal(batch["data"].to(self.device, non_blocking=True))
        pairs = None if self.paired else self._pairs(batch.get("keys", range(images.shape[0])), self_pairing=False)
        return self._streams(images[:, :self.mm_settings.num_channels], pairs), draw

    def unlabeled_loss(self, result: dict, stream_outputs: list[list[torch.Tensor]], num_labeled: int,
                       unlabeled_streams: list[torch.Tensor], unlabeled_draw: MultiModalDraw
                       ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``w_csc·L_CSC + w_cac·L_CAC`` on the unlabeled part of the joint forward, and the logged terms.

        The reference stream against every other (paired data); the pair's two streams (unpaired data). CAC on
        paired channels compares the reference prediction moved into each channel's frame by the known
        augmentation.
        """
        w_csc, w_cac = self.consistency_weights()
        anchor = self.mm_settings.reference_channel if self.paired else 0
        features = [f[num_labeled:] for f in result["bottleneck"]]  # before attention
        probabilities = [torch.softmax(stream[0][num_labeled:].float(), 1) for stream in stream_outputs]
        others = [s for s in range(len(features)) if s != anchor]
        csc = torch.stack([csc_loss(features[anchor], features[s], self.csc_temperature) for s in others]).mean()
        if self.paired:
            probabilities[anchor] = self._in_channel_frames(probabilities[anchor], unlabeled_draw)
        cac = torch.stack([cac_loss(self._anchor_for(probabilities[anchor], s), probabilities[s],
                                    paired=self.paired) for s in others]).mean()
        return w_csc * csc + w_cac * cac, {"csc_loss": csc, "cac_loss": cac}

    def _in_channel_frames(self, probabilities: torch.Tensor, draw: MultiModalDraw) -> torch.Tensor:
        """(B, K, ...) reference probabilities → (B, C, K, ...), channel c in channel c's augmented frame (the same
        tensor repeated when the augmentation moved nothing)."""
        if draw.misalignment is None and draw.dropout is None:
            return probabilities.unsqueeze(1).expand(-1, self.mm_settings.num_channels, *probabilities.shape[1:])
        return probabilities_following_channels(probabilities, draw, self.configuration_manager.spacing,
                                                self.mm_settings.modality_dropout.mode)

    def _anchor_for(self, anchor: torch.Tensor, stream: int) -> torch.Tensor:
        """The anchor's prediction for comparing with ``stream``: its frame for that channel (paired data)."""
        return anchor[:, stream] if self.paired else anchor

    def _stream_loss(self, outputs: list[torch.Tensor], targets: list[torch.Tensor]) -> torch.Tensor:
        """nnU-Net's loss of one stream: the deep-supervision wrapper over every scale, or the plain loss of the
        full-resolution output when deep supervision is off."""
        return self.loss(outputs, targets) if len(outputs) > 1 else self.loss(outputs[0], targets[0])

    def _supervised_loss(self, outputs: list[list[torch.Tensor]], target: list[torch.Tensor], draw: MultiModalDraw,
                         pairs: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
        """L_sup: nnU-Net's loss of every stream's labeled outputs, averaged over the streams.

        Paired data: each stream against its channel's label after augmentation. Unpaired pairs: each stream
        against the labels of the samples it holds (a self-paired second stream holds, and is supervised with, the
        first stream's sample), ½ each.
        """
        if self.paired:
            return torch.stack([self._stream_loss(stream, stream_target) for stream, stream_target
                                in zip(outputs, self._stream_targets(target, draw))]).mean()
        first, second = pairs
        return 0.5 * (self._stream_loss(outputs[0], [t[first] for t in target])
                      + self._stream_loss(outputs[1], [t[second] for t in target]))

    def _pair_order(self, keys: Sequence) -> torch.Tensor:
        """A permutation of the batch whose first and second halves pair different modalities where possible."""
        modalities = [self.case_modality.get(str(k), "") for k in keys]
        order = sorted(range(len(keys)), key=lambda i: modalities[i])
        half = len(order) // 2  # sorted by modality: pairing i with i + half mixes them when both are present
        return torch.tensor(order[:half] + order[half:2 * half], dtype=torch.long)

    def _pairs(self, keys: Sequence, self_pairing: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """The sample indices of the two streams of an unpaired batch, one pair per position.

        Pairs follow :meth:`_pair_order` (modalities mixed where the batch holds both); with an odd batch the
        sample left over is paired with itself, so none is dropped. A share ``self_pairing_probability`` of the pairs
        then become self-pairs (the second stream takes the first stream's sample, as inference runs) unless
        ``self_pairing`` is False (unlabeled pairs). Images and labels are both indexed with these, so a self-pair is
        supervised with its own label.
        """
        order = self._pair_order(keys)
        half = len(order) // 2
        first, second = order[:half], order[half:]
        if len(keys) % 2:
            leftover = torch.tensor([i for i in range(len(keys)) if i not in set(order.tolist())], dtype=torch.long)
            first, second = torch.cat((first, leftover)), torch.cat((second, leftover))
        if not self_pairing:
            return first.to(self.device), second.to(self.device)
        self_pairs = torch.rand(len(first), generator=self.augmentation_generator,
                                device=self.augmentation_generator.device).cpu() < self.self_pairing_probability
        return first.to(self.device), torch.where(self_pairs, first, second).to(self.device)

    def _streams(self, data: torch.Tensor, pairs: tuple[torch.Tensor, torch.Tensor] | None) -> list[torch.Tensor]:
        """The network's input streams: one per channel (paired), or the two streams of ``pairs`` (unpaired)."""
        if self.paired:
            return [data[:, c:c + 1] for c in range(data.shape[1])]
        first, second = pairs
        return [data[first], data[second]]

    def _stream_targets(self, target: list[torch.Tensor], draw: MultiModalDraw) -> list[list[torch.Tensor]]:
        """Paired data: per stream, the deep-supervision targets of its channel's label after augmentation (the
        reference label moved with that channel's misalignment)."""
        num_channels = self.mm_settings.num_channels
        if draw.misalignment is None and draw.dropout is None:
            return [target] * num_channels
        labels = labels_following_channels(target[0], draw, self.label_manager.num_segmentation_heads,
                                           self.configuration_manager.spacing, self.mm_settings.modality_dropout.mode,
                                           reference_channel=self.mm_settings.reference_channel)
        return [[resize_label(labels[:, c:c + 1], t.shape[2:]) for t in target] for c in range(num_channels)]

    def extra_log_message(self, values: Mapping[str, float]) -> str:
        w_csc, w_cac = self.consistency_weights()
        return (f"nnunet_mm: csc {values['csc_loss']:.4f} (w {w_csc:.3f}), cac {values['cac_loss']:.4f} "
                f"(w {w_cac:.3f})")


class CMCTrainer_debug(DebugSchedule, CMCTrainer):
    """CMCTrainer on the debug schedule (:class:`~nnunet_mm.training.debug.DebugSchedule`), with the consistency
    terms on from the first epoch."""

    semi_start_fraction = 0.0
