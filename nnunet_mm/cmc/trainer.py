"""CMCTrainer: semi-supervised cross-modality collaboration with unlabeled cases (paper 001).

Method, as trained here (the paper's intent; its public code never back-propagates the semi-supervised terms):

* **Network** :class:`~nnunet_mm.cmc.network.CMCUNet` — nnU-Net's encoder and decoder from the plans,
  shared by all modalities, with the cross-modality bottleneck (channel attention, fusion, per-modality projection).
* **Pairs.** Single-channel datasets (unpaired CT/MR, modality per case in the ``"nnunet_mm"`` block): the batch is
  split into two halves that are paired sample by sample, ordered so that a pair mixes modalities whenever the batch
  has both; a share ``self_pairing_probability`` of the pairs are self-pairs, which is how inference runs.
  Multi-channel datasets (paired acquisitions): one stream per channel.
* **Loss** ``L = L_sup + w_csc(e)·L_CSC + w_cac(e)·L_CAC``: nnU-Net's DC+CE with deep supervision on every stream's
  output (½ each for a pair); from ``semi_start_fraction · num_epochs`` on, a batch of unlabeled cases (``nnunet_mm
  preprocess-unlabeled``) goes through the same forward (one call, so DDP sees one graph) and adds channel-wise
  semantic consistency (NT-Xent over bottleneck channels, τ = 0.5) and anatomical consistency (1 − soft Dice,
  voxelwise for paired channels, per-class volumes for unpaired pairs), with the paper's sigmoid ramp-up and cosine
  ramp-down rescaled to the epochs after the start.
* Extra losses are logged per epoch (``csc_loss``, ``cac_loss``), survive ``--c`` with the rest of nnU-Net's log;
  the unlabeled loader is rebuilt on resume and shut down with the others.
"""
from __future__ import annotations

import numpy as np
import torch
from nnunetv2.utilities.helpers import dummy_context
from torch import autocast, nn

from nnunet_mm.cmc.network import CMCUNet
from nnunet_mm.networks.from_plans import network_kwargs_from_plans
from nnunet_mm.cmc.losses import anatomical_consistency, channel_nt_xent
from nnunet_mm.training.schedules import cosine_rampdown, sigmoid_rampup
from nnunet_mm.training.multimodal_trainer import (MultiModalTrainer, labels_following_channels, reference_target,
                                                   resize_label)

CMC_CLASS_NAME = f"{CMCUNet.__module__}.{CMCUNet.__name__}"
EXTRA_LOG_KEYS = ("csc_loss", "cac_loss")


class CMCTrainer(MultiModalTrainer):
    """Cross-modality collaboration on labeled and unlabeled cases (see the module docstring)."""

    semi_start_fraction = 0.7  # the paper starts at epoch 350 of 500
    self_pairing_probability = 0.25
    csc_temperature = 0.5

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
        self.cmc_network.reference_channel = self.mm_settings.reference_channel
        self.paired = self.mm_settings.num_channels > 1
        self.case_modality = dict(self.mm_settings.extra.get("per_case_modality") or {})
        self.dataloader_unlabeled = None
        for key in EXTRA_LOG_KEYS:
            self.logger.local_logger.my_fantastic_logging.setdefault(key, [])

    @property
    def cmc_network(self) -> CMCUNet:
        module = self.network.module if self.is_ddp else self.network
        return getattr(module, "_orig_mod", module)

    # ------------------------------------------------------------------------------------------------------------
    # unlabeled data

    def on_train_start(self) -> None:
        super().on_train_start()
        self.dataloader_unlabeled = self._make_unlabeled_loader()

    def on_train_end(self) -> None:
        if self.dataloader_unlabeled is not None and hasattr(self.dataloader_unlabeled, "_finish"):
            self.dataloader_unlabeled._finish()
        self.dataloader_unlabeled = None
        super().on_train_end()

    def _make_unlabeled_loader(self):
        """nnU-Net's loader and training augmentation over the preprocessed unlabeled cases (random crops), or None
        (with a log line) when the dataset declares none."""
        from batchgenerators.dataloading.nondet_multi_threaded_augmenter import NonDetMultiThreadedAugmenter
        from batchgenerators.dataloading.single_threaded_augmenter import SingleThreadedAugmenter
        from nnunetv2.training.dataloading.data_loader import nnUNetDataLoader
        from nnunetv2.training.dataloading.nnunet_dataset import nnUNetDatasetBlosc2
        from nnunetv2.utilities.default_n_proc_DA import get_allowed_n_proc_DA

        from nnunet_mm.cmc.unlabeled import unlabeled_folder

        folder = unlabeled_folder(self.preprocessed_dataset_folder_base, self.configuration_manager.data_identifier)
        if not self.mm_settings.extra.get("unlabeled_dir"):
            self.print_to_log_file("nnunet_mm: no unlabeled cases declared ('unlabeled_dir'); CMC trains supervised "
                                   "only (CMCUNet, no consistency terms).", also_print_to_console=True)
            return None
        if not folder.is_dir() or not any(folder.iterdir()):
            raise FileNotFoundError(f"{folder}: no preprocessed unlabeled cases; run 'nnunet_mm preprocess-unlabeled "
                                    f"-d {self.plans_manager.dataset_name} -c {self.configuration_name}' first.")
        rotation, dummy_2d, initial_patch_size, mirror_axes = \
            self.configure_rotation_dummyDA_mirroring_and_inital_patch_size()
        transforms = self.get_training_transforms(
            self.configuration_manager.patch_size, rotation, self._get_deep_supervision_scales(), mirror_axes,
            dummy_2d, use_mask_for_norm=self.configuration_manager.use_mask_for_norm, is_cascaded=False,
            foreground_labels=self.label_manager.foreground_labels, regions=None,
            ignore_label=self.label_manager.ignore_label)
        loader = nnUNetDataLoader(nnUNetDatasetBlosc2(str(folder)), self.batch_size, initial_patch_size,
                                  self.configuration_manager.patch_size, self.label_manager,
                                  oversample_foreground_percent=0.0, transforms=transforms)
        processes = get_allowed_n_proc_DA()
        if processes == 0:
            return SingleThreadedAugmenter(loader, None)
        return NonDetMultiThreadedAugmenter(loader, None, num_processes=max(1, processes // 2), num_cached=3,
                                            seeds=None, pin_memory=self.device.type == "cuda", wait_time=0.002)

    # ------------------------------------------------------------------------------------------------------------
    # the step

    def consistency_weights(self) -> tuple[float, float]:
        """(w_csc, w_cac) at the current epoch: zero before the start, then the paper's ramps."""
        start = int(round(self.semi_start_fraction * self.num_epochs))
        return (sigmoid_rampup(self.current_epoch, self.num_epochs, start),
                cosine_rampdown(self.current_epoch, self.num_epochs, start))

    def _pair_order(self, keys) -> torch.Tensor:
        """A permutation of the batch whose first and second halves pair different modalities where possible."""
        modalities = [self.case_modality.get(str(k), "") for k in keys]
        order = sorted(range(len(keys)), key=lambda i: modalities[i])
        half = len(order) // 2  # sorted by modality: pairing i with i + half mixes them when both are present
        return torch.tensor(order[:half] + order[half:2 * half], dtype=torch.long)

    def _streams(self, data: torch.Tensor, order: torch.Tensor | None) -> list[torch.Tensor]:
        if self.paired:
            return [data[:, c:c + 1] for c in range(data.shape[1])]
        half = len(order) // 2
        first, second = data[order[:half]], data[order[half:]]
        self_pairs = torch.rand(half, generator=self.augmentation_generator,
                                device=self.augmentation_generator.device).to(data.device) \
            < self.self_pairing_probability
        second = torch.where(self_pairs.view(-1, *([1] * (data.ndim - 1))), first, second)
        return [first, second]

    def _stream_targets(self, target: list[torch.Tensor], draw) -> list[list[torch.Tensor]]:
        """Paired data: per stream, the deep-supervision targets of its channel's label after augmentation (the
        reference label moved with that channel's misalignment)."""
        num_channels = self.mm_settings.num_channels
        if draw.misalignment is None and draw.dropout is None:
            return [target] * num_channels
        labels = labels_following_channels(target[0], draw, self.label_manager.num_segmentation_heads,
                                           self.configuration_manager.spacing, self.mm_settings.modality_dropout.mode,
                                           reference_channel=self.mm_settings.reference_channel)
        return [[resize_label(labels[:, c:c + 1], t.shape[2:]) for t in target] for c in range(num_channels)]

    def train_step(self, batch: dict) -> dict:
        data, draw = self.augment_multimodal_with_draw(batch["data"].to(self.device, non_blocking=True))
        target = reference_target(batch["target"])
        target = [t.to(self.device, non_blocking=True) for t in target] if isinstance(target, list) \
            else [target.to(self.device, non_blocking=True)]
        if not self.paired and data.shape[0] < 2:
            raise ValueError("CMCTrainer pairs samples of a batch; the configuration's batch size must be >= 2.")
        order = None if self.paired else self._pair_order(batch.get("keys", range(data.shape[0])))
        labeled_streams = self._streams(data[:, :self.mm_settings.num_channels], order)
        num_labeled = labeled_streams[0].shape[0]
        w_csc, w_cac = self.consistency_weights()
        use_unlabeled = self.dataloader_unlabeled is not None and (w_csc > 0 or w_cac > 0)
        streams = labeled_streams
        if use_unlabeled:
            unlabeled = self.augment_multimodal(next(self.dataloader_unlabeled)["data"].to(self.device,
                                                                                          non_blocking=True))
            unlabeled_order = None if self.paired else torch.arange(unlabeled.shape[0] // 2 * 2)
            unlabeled_streams = self._streams(unlabeled[:, :self.mm_settings.num_channels], unlabeled_order)
            streams = [torch.cat((a, b)) for a, b in zip(labeled_streams, unlabeled_streams)]

        self.optimizer.zero_grad(set_to_none=True)
        with autocast(self.device.type, enabled=True) if self.device.type == "cuda" else dummy_context():
            result = self.network(streams=streams)
            outputs = result["outputs"]
            if self.paired:
                stream_targets = self._stream_targets(target, draw)
                supervised = torch.stack([self.loss([o[:num_labeled] for o in out], t)
                                          for out, t in zip(outputs, stream_targets)]).mean()
            else:
                half = num_labeled
                targets_first = [t[order[:half]] for t in target]
                targets_second = [t[order[half:]] for t in target]
                supervised = 0.5 * (self.loss([o[:half] for o in outputs[0]], targets_first)
                                    + self.loss([o[:half] for o in outputs[1]], targets_second))
            loss, csc, cac = supervised, torch.zeros(()), torch.zeros(())
            if use_unlabeled:
                features = [f[num_labeled:] for f in result["bottleneck"]]
                probabilities = [torch.softmax(out[0][num_labeled:].float(), 1) for out in outputs]
                csc = torch.stack([channel_nt_xent(features[0], f, self.csc_temperature)
                                   for f in features[1:]]).mean()
                cac = torch.stack([anatomical_consistency(probabilities[0], p, paired=self.paired)
                                   for p in probabilities[1:]]).mean()
                loss = loss + w_csc * csc + w_cac * cac

        self.backward_and_step(loss)
        return {"loss": loss.detach().cpu().numpy(), "csc_loss": csc.detach().cpu().numpy(),
                "cac_loss": cac.detach().cpu().numpy()}

    def on_train_epoch_end(self, train_outputs: list[dict]) -> None:
        super().on_train_epoch_end(train_outputs)
        for key in EXTRA_LOG_KEYS:
            self.logger.local_logger.my_fantastic_logging.setdefault(key, [])  # a checkpoint from before may lack it
            value = float(np.mean([o[key] for o in train_outputs]))
            if self.is_ddp:
                import torch.distributed as dist
                gathered = [None] * dist.get_world_size()
                dist.all_gather_object(gathered, value)
                value = float(np.mean(gathered))
            self.logger.log(key, value, self.current_epoch)
        w_csc, w_cac = self.consistency_weights()
        self.print_to_log_file(f"nnunet_mm: csc {self.logger.local_logger.my_fantastic_logging['csc_loss'][-1]:.4f} "
                               f"(w {w_csc:.3f}), cac {self.logger.local_logger.my_fantastic_logging['cac_loss'][-1]:.4f}"
                               f" (w {w_cac:.3f})")


class CMCTrainer_debug(CMCTrainer):
    """2 epochs × 4 iterations, 2 validation iterations; the consistency terms are on from the first epoch."""

    semi_start_fraction = 0.0

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = 2
        self.num_iterations_per_epoch = 4
        self.num_val_iterations_per_epoch = 2
