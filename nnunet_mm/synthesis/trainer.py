"""SynthTumorTrainer: nnU-Net trained on real plus online-synthesised multi-phase tumours (Diff4MMLiTS, paper 002).

Method (the paper's segmenter stage, §3.2 "MS", with the synthesis of §3.2 "MCS"):

* **Online synthesis in** :meth:`~SynthTumorTrainer.prepare_batch` of :class:`MultiModalTrainer`'s step, on the
  training device, after nnU-Net's loader and its spatial CPU augmentation:
  every sample whose patch contains liver receives, with probability ``p`` (``"probability"``, 0.5 as in DiffTumor),
  synthetic tumours in its healthy liver — samples of normal cases and the tumour-free liver of tumour cases alike.
  The mask (:func:`~nnunet_mm.synthesis.masks.sample_tumour_masks`: deformed ellipsoids of a random size class) is
  the same for every phase, so the tumour is aligned across phases by construction; the chosen synthesizer paints
  each phase with its own appearance (``"handcrafted"``: per-phase contrast fitted from the real tumours,
  :mod:`nnunet_mm.synthesis.handcrafted`; ``"diffusion"``: the latent-diffusion models trained by the plugin).
* **Or from a pool** (``"synthesizer": "pool"``, :mod:`nnunet_mm.synthesis.pool`): patches painted once by
  ``nnunet_mm synth-pool`` are read by a second nnU-Net loader with the same CPU augmentation, and replace a share
  ``p`` of each batch's samples (real : pooled = 1 − p : p), so the sampler's cost is paid once.
* **Targets follow**: the tumour label is written into the mask and the deep-supervision pyramid is rebuilt from the
  new full-resolution label with nnU-Net's own nearest-neighbour downsampling.
* **nnU-Net's intensity augmentation after the insertion**: :meth:`~SynthTumorTrainer.get_training_transforms`
  takes nnU-Net's noise, blur, brightness, contrast, low-resolution and gamma transforms (and, where the plans mask
  the image for normalisation, the mask and the ``-1`` label removal) out of the CPU pipeline, and
  :meth:`~SynthTumorTrainer.prepare_batch` applies those same transform objects per sample after painting
  (:mod:`nnunet_mm.synthesis.intensity_after_insertion`), so a synthetic lesion is degraded like its surroundings
  instead of staying sharp in a blurred or noisy patch.
* Then :class:`MultiModalTrainer`'s misalignment and modality dropout (on for ``"channel_acquisition": "separate"``
  multi-phase data), and nnU-Net's loss and update (the base step's default :meth:`~MultiModalTrainer.compute_loss`).
  With ``"misalign_synthetic": false`` a sample that received synthetic tumours keeps its phases aligned (the draw is
  made for the whole batch as before and dropped for those samples); ``true`` (default) misaligns it like a real one.
* **Loss** ``L = Dice + 0.5·CE`` (the paper; ``"dice_weight"``/``"ce_weight"``), nnU-Net's DC_and_CE with deep
  supervision.
* **Validation** on real data only (nnU-Net's validation step is untouched).
* **Post-processing** (optional, at prediction): ``nnunet_mm keep-tumours-in-liver -i PRED -o OUT`` removes tumour
  components outside the predicted liver.

Settings: the ``"synthesis"`` object of the dataset.json settings block (:mod:`nnunet_mm.synthesis.settings`).
DDP: every random draw comes from the rank's own generator (the pool loader's workers seed themselves) (the batchgeneratorsv2 transforms, which draw from the
global numpy/torch generators, run under a seed drawn from it); nothing is collective except the epoch's logged share
of synthetic samples (``synthetic_fraction``, averaged over the ranks). The synthesizer is stateless (the statistics
live in a file beside the preprocessed data), so ``--c`` needs no extra checkpoint state.
The training log states, at the start, the synthesizer and what it was built from (statistics file or model
folder), p, the size classes, the labels and the loss.
Hooks overridden: ``__init__``, ``initialize``, ``_build_loss``, ``get_training_transforms`` (an instance method
here; nnU-Net calls it through ``self``), ``on_train_start`` / ``on_train_end`` (the pool loader), ``prepare_batch``,
``augment_multimodal``.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper

from nnunet_mm.augment import MisalignmentParameters, apply_modality_dropout
from nnunet_mm.synthesis.base import TumorSynthesizer
from nnunet_mm.synthesis.handcrafted import HandcraftedSynthesizer
from nnunet_mm.synthesis.intensity_after_insertion import (DeferredAugmentation, apply_deferred_augmentation,
                                                          split_training_transforms)
from nnunet_mm.synthesis.masks import sample_tumour_masks
from nnunet_mm.synthesis.statistics import (TumourContrastStatistics, fit_tumour_statistics, preprocessed_cases,
                                            statistics_path)
from nnunet_mm.training.debug import DebugSchedule
from nnunet_mm.training.multimodal_trainer import (MultiModalDraw, MultiModalTrainer, Target, reference_target,
                                                   resize_label, target_list)
from nnunet_mm.training.refusal import TrainingRefused

MIN_LIVER_VOXELS = 16  # a patch with less liver than this gets no synthetic tumour


class SynthTumorTrainer(MultiModalTrainer):
    """Real + online synthetic tumours (see the module docstring)."""

    extra_log_keys = ("synthetic_fraction",)

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.synthesis_settings = self.dataset_settings.method("synthesis")
        self.liver_label, self.tumour_label = self.synthesis_settings.resolve_labels(dataset_json["labels"],
                                                                                     self.dataset_settings.source)
        self.synthetic_probability = self.synthesis_settings.probability  # p, the share of liver samples
        self.synthesizer: TumorSynthesizer | None = None
        # nnU-Net's transforms that run after the insertion (set by get_training_transforms)
        self.deferred_augmentation: DeferredAugmentation | None = None
        self._synthetic_samples: torch.Tensor | None = None  # (B,) bool of the batch in the step, for the misalignment
        self.pool_folder: Path | None = None  # "pool": the checked pool folder (set in initialize)
        self.dataloader_pool = None  # "pool": nnU-Net's loader over the pool (built in on_train_start)

    def initialize(self) -> None:
        if self.label_manager.has_regions:
            raise ValueError("SynthTumorTrainer writes the tumour label into the target; region-based labels "
                             "(regions_class_order) are not supported.")
        super().initialize()
        self.synthesizer, synthesizer_source = self._build_synthesizer()
        settings = self.synthesis_settings
        where = (f"replacing a share p = {self.synthetic_probability} of each batch's samples" if
                 settings.synthesizer == "pool" else f"into the healthy liver of a share p = "
                                                     f"{self.synthetic_probability} of the training samples with liver")
        self.print_to_log_file(
            f"nnunet_mm SynthTumor: synthetic tumours ({settings.synthesizer} synthesizer, {synthesizer_source}) "
            f"{where}, size classes {[c.name for c in settings.masks.size_classes]} (probabilities "
            f"{[round(p, 3) for p in settings.masks.probabilities]}), liver label {self.liver_label}, tumour label "
            f"{self.tumour_label}; loss {settings.dice_weight}*Dice + {settings.ce_weight}*CE; validation on real "
            f"cases only; nnU-Net's intensity augmentation applied after the insertion; samples with synthetic "
            f"tumours {'misaligned like real ones' if settings.misalign_synthetic else 'kept aligned'} "
            f"(misalign_synthetic {str(settings.misalign_synthetic).lower()})", also_print_to_console=True)

    def _build_loss(self):
        loss = super()._build_loss()
        dice_and_ce = loss.loss if isinstance(loss, DeepSupervisionWrapper) else loss
        dice_and_ce.weight_dice = self.synthesis_settings.dice_weight
        dice_and_ce.weight_ce = self.synthesis_settings.ce_weight
        return loss

    def on_train_start(self) -> None:
        super().on_train_start()
        if self.synthesis_settings.synthesizer == "pool":
            self.dataloader_pool = self.make_pool_loader()

    def make_pool_loader(self):
        """nnU-Net's loader over the pool with this trainer's CPU augmentation, every crop forced onto a synthetic
        tumour (the pool's ``class_locations`` hold only the tumour)."""
        from nnunetv2.training.dataloading.nnunet_dataset import nnUNetDatasetBlosc2

        from nnunet_mm.training.extra_loader import augmented_loader

        return augmented_loader(self, nnUNetDatasetBlosc2(str(self.pool_folder)), oversample_foreground_percent=1.0)

    def on_train_end(self) -> None:
        from nnunet_mm.training.extra_loader import finish_loader

        finish_loader(self.dataloader_pool)
        self.dataloader_pool = None
        super().on_train_end()

    # ------------------------------------------------------------------------------------------------------------
    # the method

    def get_training_transforms(self, *args, **kwargs):
        """nnU-Net's training pipeline without the transforms that must follow the synthesis (kept in
        ``self.deferred_augmentation``; same arguments as ``nnUNetTrainer.get_training_transforms``)."""
        pipeline, self.deferred_augmentation = split_training_transforms(super().get_training_transforms(*args,
                                                                                                         **kwargs))
        self.print_to_log_file(f"nnunet_mm SynthTumor: after the insertion, on the training device: "
                               f"{self.deferred_augmentation.describe()}")
        return pipeline

    def prepare_batch(self, data: torch.Tensor, target: Target) -> tuple[torch.Tensor, Target, dict[str, torch.Tensor]]:
        """Synthetic tumours into the batch, then nnU-Net's deferred intensity augmentation, before the multimodal
        augmentation (see the module docstring)."""
        if self.deferred_augmentation is None:
            raise RuntimeError("SynthTumorTrainer.prepare_batch: get_training_transforms has not run, so nnU-Net's "
                               "intensity augmentation would be skipped; build the data loaders first.")
        data, targets, synthetic = self.insert_synthetic_tumours(data, target_list(reference_target(target)))
        data, targets = apply_deferred_augmentation(data, targets, self.deferred_augmentation,
                                                    self.mm_settings.num_channels, self.augmentation_generator)
        self._synthetic_samples = synthetic
        target = targets if isinstance(target, list) else targets[0]
        return data, target, {"synthetic_fraction": synthetic.float().mean()}

    def augment_multimodal(self, data: torch.Tensor) -> tuple[torch.Tensor, MultiModalDraw]:
        """The base augmentation; with ``"misalign_synthetic": false``, samples that received synthetic tumours in
        this step's :meth:`prepare_batch` take only its modality dropout (their misalignment is dropped from images
        and draw)."""
        augmented, draw = super().augment_multimodal(data)
        synthetic, self._synthetic_samples = self._synthetic_samples, None  # this step's only
        if (self.synthesis_settings.misalign_synthetic or draw.misalignment is None or synthetic is None
                or synthetic.shape[0] != data.shape[0] or not synthetic.any()):
            return augmented, draw
        keep = synthetic.to(draw.misalignment.active.device)
        m = draw.misalignment
        unmoved = keep.view(-1, *([1] * (m.control_displacement_mm.ndim - 1)))
        draw.misalignment = MisalignmentParameters(
            active=m.active & ~keep[:, None], translation_mm=m.translation_mm * ~keep[:, None, None],
            rotation_deg=m.rotation_deg * ~keep[:, None, None],
            control_displacement_mm=m.control_displacement_mm * ~unmoved)
        phases = self.mm_settings.num_channels
        with torch.no_grad():
            aligned = data[:, :phases]
            if draw.dropout is not None:
                aligned = apply_modality_dropout(aligned, draw.dropout, self.mm_settings.modality_dropout.mode)
            augmented = augmented.clone()
            augmented[keep.to(augmented.device), :phases] = aligned[keep.to(aligned.device)]
        return augmented, draw

    def insert_synthetic_tumours(self, data: torch.Tensor, targets: list[torch.Tensor]
                                 ) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
        """With probability p per sample with liver, paint synthetic tumours and write them into every target scale
        (``"pool"``: replace the sample by a pooled one, :meth:`insert_pooled_samples`).

        Args:
            data: (B, C, *patch) float on the training device; the first ``num_channels`` channels are the phases.
            targets: deep-supervision targets, highest resolution first, each (B, 1, *scale) integer labels.

        Returns:
            (data, targets, chosen (B,) bool); the inputs are not modified, unchosen samples stay bit-identical.
        """
        if self.synthesis_settings.synthesizer == "pool":
            return self.insert_pooled_samples(data, targets)
        with torch.no_grad():
            label = targets[0]
            liver = label == self.liver_label
            draw = torch.rand(label.shape[0], generator=self.augmentation_generator,
                              device=self.augmentation_generator.device).to(label.device)
            chosen = (draw < self.synthetic_probability) & (liver.flatten(1).sum(1) >= MIN_LIVER_VOXELS)
            if not chosen.any():
                return data, targets, chosen
            index = chosen.nonzero()[:, 0]
            masks = sample_tumour_masks(liver[index], self.configuration_manager.spacing,
                                        self.synthesis_settings.masks, self.augmentation_generator)
            phases = self.mm_settings.num_channels
            data = data.clone()
            data[index, :phases] = self.synthesizer(data[index, :phases], masks, self.augmentation_generator)
            new_label = torch.where(masks, torch.full_like(label[index], self.tumour_label), label[index])
            targets = [t.clone() for t in targets]
            for t in targets:
                t[index] = resize_label(new_label, t.shape[2:])  # nnU-Net's DS downsampling: nearest-exact
        return data, targets, chosen

    def insert_pooled_samples(self, data: torch.Tensor, targets: list[torch.Tensor]
                              ) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
        """Replace each sample with probability p by a sample of the pool loader (its data and every deep-supervision
        target); same contract as :meth:`insert_synthetic_tumours`."""
        if self.dataloader_pool is None:
            raise RuntimeError("SynthTumorTrainer: synthesizer 'pool' but the pool loader was not built "
                               "(on_train_start has not run).")
        with torch.no_grad():
            draw = torch.rand(data.shape[0], generator=self.augmentation_generator,
                              device=self.augmentation_generator.device)
            chosen = (draw < self.synthetic_probability).to(data.device)
            if not chosen.any():
                return data, targets, chosen
            index = chosen.nonzero()[:, 0]
            images, labels = [], []
            while sum(len(x) for x in images) < len(index):  # one pool batch holds batch_size samples
                pooled = next(self.dataloader_pool)
                images.append(pooled["data"])
                labels.append(target_list(pooled["target"]))
            pooled_data = torch.cat(images)[:len(index)]
            pooled_targets = [torch.cat(scale)[:len(index)] for scale in zip(*labels)]
            if len(pooled_targets) != len(targets) or pooled_data.shape[1:] != data.shape[1:]:
                raise RuntimeError(f"SynthTumorTrainer: pooled samples {tuple(pooled_data.shape)} do not match the "
                                   f"training batch {tuple(data.shape)}.")
            data = data.clone()
            data[index] = pooled_data.to(data.device, data.dtype, non_blocking=True)
            targets = [t.clone() for t in targets]
            for t, p in zip(targets, pooled_targets):
                t[index] = p.to(t.device, t.dtype, non_blocking=True)
        return data, targets, chosen

    def extra_log_message(self, values: Mapping[str, float]) -> str:
        return f"nnunet_mm: synthetic tumours in {100 * values['synthetic_fraction']:.1f} % of the training samples"

    # ------------------------------------------------------------------------------------------------------------
    # synthesizers

    def _build_synthesizer(self) -> tuple[TumorSynthesizer, str]:
        """The configured synthesizer and, for the training log, what it was built from."""
        settings = self.synthesis_settings
        if settings.synthesizer == "diffusion":
            try:
                from nnunet_mm.synthesis.latent_diffusion import (LatentDiffusionSynthesizer, configuration_record,
                                                                  default_model_folder)
            except ImportError as error:
                raise ImportError(f"synthesizer 'diffusion' needs nnunet_mm.synthesis.latent_diffusion, which could "
                                  f"not be imported ({error}); use \"synthesizer\": \"handcrafted\".") from error
            folder = Path(settings.model_folder) if settings.model_folder else \
                default_model_folder(Path(self.preprocessed_dataset_folder_base))
            try:
                synthesizer = LatentDiffusionSynthesizer.from_folder(
                    folder, self.device, configuration_record(self.configuration_name, self.configuration_manager))
            except (ValueError, FileNotFoundError) as error:
                raise TrainingRefused(error) from None
            return synthesizer, f"models from {folder}"
        if settings.synthesizer == "pool":
            return None, self._open_pool()
        statistics, source = self._tumour_statistics()
        synthesizer = HandcraftedSynthesizer(statistics, self.configuration_manager.spacing,
                                             texture_sigma_mm=settings.texture_sigma_mm,
                                             edge_sigma_voxels=settings.edge_sigma_voxels,
                                             contrast_jitter=settings.contrast_jitter)
        return synthesizer, source

    def _open_pool(self) -> str:
        """Check the configured pool (default beside the preprocessed data) and remember its folder; returns what it
        was built from, for the training log."""
        from nnunet_mm.synthesis.latent_diffusion import configuration_record
        from nnunet_mm.synthesis.pool import default_pool_folder, open_pool

        configured = self.synthesis_settings.pool_folder
        folder = Path(configured) if configured else default_pool_folder(Path(self.preprocessed_dataset_folder_base),
                                                                          self.configuration_name)
        try:
            record = open_pool(folder, configuration_record(self.configuration_name, self.configuration_manager),
                               self.tumour_label)
        except (ValueError, FileNotFoundError) as error:
            raise TrainingRefused(error) from None
        self.pool_folder = folder
        return f"pool of {len(record.get('samples', []))} patches from {folder} (made with {record.get('model_folder')})"

    def _phase_names(self) -> tuple[str, ...]:
        if self.mm_settings.phase_names is not None:
            return self.mm_settings.phase_names
        return tuple(str(self.dataset_json["channel_names"][k]) for k in sorted(self.dataset_json["channel_names"],
                                                                                 key=int))

    def _tumour_statistics(self) -> tuple[TumourContrastStatistics, str]:
        """The statistics file if it exists, else fitted now from this fold's training cases (and saved); and where
        they came from, for the training log."""
        configured = self.synthesis_settings.statistics_file
        path = Path(configured) if configured else statistics_path(Path(self.preprocessed_dataset_folder_base),
                                                                   self.configuration_manager.data_identifier)
        if path.is_file() or configured:
            statistics = TumourContrastStatistics.load(path)
            if statistics.num_phases != self.mm_settings.num_channels:
                raise ValueError(f"{path}: statistics for {statistics.num_phases} phases, but the dataset has "
                                 f"{self.mm_settings.num_channels} channels; refit with 'nnunet_mm synth-stats'.")
            return statistics, f"tumour contrast statistics from {path}"
        training_keys, _ = self.do_split()
        statistics = fit_tumour_statistics(preprocessed_cases(Path(self.preprocessed_dataset_folder), training_keys),
                                           self._phase_names(), self.liver_label, self.tumour_label)
        if self.local_rank == 0:
            statistics.save(path)
        self.print_to_log_file(f"nnunet_mm SynthTumor: fitted tumour contrast statistics from the training cases of "
                               f"fold {self.fold} into {path}:\n{statistics.summary()}", also_print_to_console=True)
        return statistics, f"tumour contrast statistics fitted now from fold {self.fold}'s training cases into {path}"


class SynthTumorTrainer_debug(DebugSchedule, SynthTumorTrainer):
    """SynthTumorTrainer on the debug schedule (:class:`~nnunet_mm.training.debug.DebugSchedule`)."""
