"""WeakLabelTrainer: segmentation from image-level labels via CLTN pseudo masks and a mean teacher (paper 003).

Stage A (``nnunet_mm weak-train-gan`` / ``weak-export``, :mod:`nnunet_mm.weak`) turns "diseased / normal" labels into
pseudo masks with the label-transfer GAN. This trainer is stage B, the teacher–student refinement the paper
describes and its public code lacks (methods.md §4.6, our design):

* **Student** = nnU-Net's network, trained with nnU-Net's DC+CE (deep supervision) on the pseudo masks; **normal
  images give all-background supervision** (enforced when their cases are read).
* **Teacher** = EMA of the student (decay α = 0.99, from epoch 0), updated after every optimiser step.
* **Consistency** ``L = L_seg + λ(t)·MSE(softmax(student(aug₁)), softmax(teacher(aug₂)))``; aug₁ is nnU-Net's
  augmentation, aug₂ adds an intensity perturbation of the same batch; λ ramps up (sigmoid) over the first 40 % of
  the epochs to 1.
* Settings: the ``"weak_supervision"`` object of the dataset.json block (:mod:`nnunet_mm.weak.settings`; the
  defaults are the values below). The ramp and the refinement interval are spans of epochs, by default fractions
  of ``num_epochs`` resolved when they are used, so that they scale with the schedule (a debug or benchmark run sets
  ``num_epochs`` after the constructor); an integer in dataset.json is an absolute number of epochs.
* **Multimodal augmentation** follows the dataset's ``channel_acquisition``
  (:meth:`~nnunet_mm.settings.MultiModalSettings.augmentation_decision`): weak-label data is RGB (ISIC, converter
  508: ``colour_planes``) or co-registered sequences (BraTS: ``co_registered``), which train without misalignment
  and modality dropout; the pseudo-mask export copies the source's block, so the decision carries over.
* **Periodic refinement** every 20 % of the epochs (deviation: methods.md's N = 100 epochs assumed nnU-Net's 1000
  epochs and never fired in a short run; see :class:`~nnunet_mm.weak.settings.WeakTrainingSettings`), not after
  the last epoch: the teacher predicts every training case (nnU-Net's sliding window);
  confident voxels (p ≥ τ = 0.9) take its label, disagreeing uncertain voxels (p < 0.6) become the dataset's ignore
  label (declared by the pseudo-mask export), the rest keep the GAN label. Refined labels live in
  ``fold_X/refined_labels/`` and are read by the data loader from then on.
* Prediction is stock nnU-Net (the student). ``--c`` restores the teacher (``<checkpoint>.teacher.safetensors``) and
  keeps the refined labels; a fresh run clears them. DDP: every rank updates an identical teacher and refines a
  disjoint share of the cases, then all wait at a barrier.

The training log states, at the start, where the pseudo masks come from, the normal cases, the teacher, the
refinement epochs, and that nnU-Net's validation Dice is measured against the pseudo masks, not true masks.

Hooks overridden: ``__init__``, ``initialize``, ``get_tr_and_val_datasets``, ``on_train_start``, ``compute_loss`` and
``after_optimizer_step`` (inside :class:`MultiModalTrainer`'s step), ``on_train_epoch_end``,
``checkpoint_companions``, ``on_companion_missing``.
"""
from __future__ import annotations

import contextlib
import shutil
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from nnunet_mm.training.debug import DebugSchedule
from nnunet_mm.training.multimodal_trainer import MultiModalDraw, MultiModalTrainer, StepLoss, Target, reference_target
from nnunet_mm.training.schedules import sigmoid_rampup
from nnunet_mm.weak.image_labels import IMAGE_LABELS_KEY, normal_cases, read_image_labels
from nnunet_mm.weak.mean_teacher import consistency_loss, ema_update, make_teacher, perturb_intensities
from nnunet_mm.weak.refinement import RefinedLabelDataset, refine_pseudo_labels, save_refined_label
from nnunet_mm.weak.settings import WEAK_SUPERVISION_KEY, parse_epoch_span

# what nnU-Net's Dice means under weak labels (validation cases are served the exported pseudo masks, never refined)
VALIDATION_NOTE = ("validation Dice (the pseudo Dice of every epoch, its EMA that picks checkpoint_best, and the final "
                   "validation's summary.json) is measured against the pseudo masks as exported, not against true "
                   "masks: it says how well the student reproduces the pseudo masks, not how accurate it is; evaluate "
                   "predictions against true masks (nnUNetv2_evaluate_folder, nnunet_mm compare) for that")


class WeakLabelTrainer(MultiModalTrainer):
    """Mean-teacher training on pseudo masks with periodic refinement (see the module docstring)."""

    extra_log_keys = ("consistency_loss",)

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        settings = self.dataset_settings.method(WEAK_SUPERVISION_KEY)  # the block's "weak_supervision"
        self.ema_decay = settings.ema_decay  # α
        self.consistency_weight = settings.consistency_weight  # λ_max
        # spans of epochs (EpochSpan, or a value parse_epoch_span reads: 0.2, "20%", 100), resolved against
        # num_epochs when used, because schedules (debug, benchmarks) change num_epochs after this constructor
        self.consistency_rampup = settings.consistency_rampup  # λ reaches λ_max after this span
        self.refinement_interval = settings.refinement_interval  # N
        self.confident_threshold = settings.confident_threshold  # τ
        self.uncertain_threshold = settings.uncertain_threshold

    def initialize(self) -> None:
        super().initialize()
        self.teacher = make_teacher(self.student_network)
        self.normal_cases = normal_cases(self._image_labels())
        self.refined_label_folder = Path(self.output_folder) / "refined_labels"
        if self.label_manager.ignore_label is None:
            self.print_to_log_file("nnunet_mm: the dataset declares no 'ignore' label; refinement keeps uncertain "
                                   "voxels' pseudo labels (export with 'nnunet_mm weak-export' to declare it).",
                                   also_print_to_console=True)
        for line in (self._pseudo_mask_description(), self._teacher_description(), self._refinement_description(),
                     VALIDATION_NOTE):
            self.print_to_log_file(f"nnunet_mm Weak: {line}", also_print_to_console=True)

    def _pseudo_mask_description(self) -> str:
        """Where the segmentation targets come from and which cases are normal, for the training log."""
        from nnunetv2.paths import nnUNet_raw

        labels = Path(nnUNet_raw) / self.plans_manager.dataset_name / "labelsTr" if nnUNet_raw else "labelsTr"
        notes = [note for note in self.dataset_settings.description.notes if "pseudo mask" in note.lower()]
        provenance = (f"dataset.json notes: {notes[0]!r}" if notes else
                      "dataset.json does not say they are pseudo masks (no note from 'nnunet_mm weak-export')")
        image_labels = self.dataset_settings.method(IMAGE_LABELS_KEY)
        where = ("none given: no 'image_labels' in the block" if image_labels is None else
                 f"from {image_labels}" if isinstance(image_labels, str) else "inline in the block")
        return (f"targets are pseudo masks: the dataset's {labels}, preprocessed in "
                f"{self.preprocessed_dataset_folder} ({provenance}); {len(self.normal_cases)} normal case(s) trained "
                f"as all background (image labels {where})")

    @property
    def consistency_rampup_epochs(self) -> int:
        """Epochs over which λ ramps up to λ_max in this run (``consistency_rampup`` resolved against num_epochs)."""
        return parse_epoch_span(self.consistency_rampup, "consistency_rampup").resolve(self.num_epochs)

    @property
    def refinement_every_epochs(self) -> int:
        """N: the teacher refines the labels after every N-th epoch (``refinement_interval`` resolved)."""
        return parse_epoch_span(self.refinement_interval, "refinement_interval").resolve(self.num_epochs)

    def refinement_epochs(self) -> list[int]:
        """The epochs (0-based) after which the labels are refined: every N-th, never after the last one."""
        every = self.refinement_every_epochs
        return [done - 1 for done in range(every, self.num_epochs, every)]

    def _teacher_description(self) -> str:
        """The mean teacher and its consistency weight, for the training log."""
        rampup_epochs = self.consistency_rampup_epochs
        return (f"student = nnU-Net's network (what nnUNetv2_predict loads); teacher = EMA of the student, decay "
                f"{self.ema_decay}, updated after every optimizer step; consistency MSE(student, teacher on an "
                f"intensity-perturbed view) weighted {self.consistency_weight} x sigmoid ramp-up over the first "
                f"{rampup_epochs} of {self.num_epochs} epochs")

    def _refinement_description(self) -> str:
        """When and how the teacher rewrites the pseudo labels, for the training log."""
        epochs = self.refinement_epochs()
        span = parse_epoch_span(self.refinement_interval, "refinement_interval")
        if not epochs:
            return (f"no refinement: the run has {self.num_epochs} epoch(s), refinement_interval is "
                    f"{span.describe()} = {self.refinement_every_epochs}")
        when = (", ".join(str(epoch) for epoch in epochs) if len(epochs) <= 6 else
                f"{epochs[0]}, {epochs[1]}, ..., {epochs[-1]} ({len(epochs)} times)")
        uncertain = (f"disagreeing voxels with p < {self.uncertain_threshold} become the ignore label "
                     f"{self.label_manager.ignore_label}" if self.label_manager.ignore_label is not None else
                     "uncertain voxels keep their pseudo label (no ignore label)")
        return (f"refinement at the end of epoch(s) {when} (every {self.refinement_every_epochs}: "
                f"refinement_interval {span.describe()}): the teacher relabels the diseased training cases, voxels "
                f"with p >= {self.confident_threshold} take its label, {uncertain}; written to "
                f"{self.refined_label_folder} and trained on from then on")

    @property
    def student_network(self) -> torch.nn.Module:
        """The student: nnU-Net's network, unwrapped (what the teacher averages and nnU-Net's predictor loads)."""
        return self.unwrapped_network

    def _image_labels(self) -> dict[str, str] | None:
        from nnunetv2.paths import nnUNet_raw

        folder = Path(nnUNet_raw) / self.plans_manager.dataset_name if nnUNet_raw else None
        return read_image_labels(self.dataset_settings.method(IMAGE_LABELS_KEY), folder, self.dataset_settings.source)

    def get_tr_and_val_datasets(self):
        dataset_tr, dataset_val = super().get_tr_and_val_datasets()
        return (RefinedLabelDataset(dataset_tr, self.refined_label_folder, self.normal_cases),
                RefinedLabelDataset(dataset_val, Path(self.output_folder) / "no_refinement_for_validation",
                                    self.normal_cases))

    def on_train_start(self) -> None:
        if not self.was_initialized:
            self.initialize()
        if self.current_epoch == 0 and self.local_rank == 0 and self.refined_label_folder.is_dir():
            shutil.rmtree(self.refined_label_folder)  # a fresh run must not read an earlier run's refinement
        elif self.refined_label_folder.is_dir():
            refined = len(list(self.refined_label_folder.glob("*.npy")))
            self.print_to_log_file(f"nnunet_mm Weak: resuming at epoch {self.current_epoch}: {refined} refined "
                                   f"label(s) in {self.refined_label_folder} replace their pseudo masks",
                                   also_print_to_console=True)
        super().on_train_start()

    # ------------------------------------------------------------------------------------------------------------
    # the step

    def consistency_weight_now(self) -> float:
        """λ(t): sigmoid ramp-up over the first ``consistency_rampup`` of the epochs, then λ_max."""
        rampup_epochs = self.consistency_rampup_epochs
        return self.consistency_weight * sigmoid_rampup(min(self.current_epoch, rampup_epochs), rampup_epochs)

    def compute_loss(self, data: torch.Tensor, target: Target, draw: MultiModalDraw, batch: dict) -> StepLoss:
        """``L = L_seg(student(aug₁), pseudo mask) + λ(t)·MSE(softmax(student(aug₁)), softmax(teacher(aug₂)))``."""
        teacher_view = perturb_intensities(data, self.augmentation_generator)  # aug₂ = aug₁ + intensity perturbation
        student_output = self.network(data)
        supervised = self.loss(student_output, reference_target(target))
        with torch.no_grad():
            teacher_output = self.teacher(teacher_view)
        consistency = consistency_loss(_full_resolution(student_output), _full_resolution(teacher_output))
        return StepLoss(supervised + self.consistency_weight_now() * consistency,
                        {"consistency_loss": consistency})

    def after_optimizer_step(self) -> None:
        """The teacher follows the student: ``θ_teacher ← α·θ_teacher + (1 − α)·θ_student``."""
        ema_update(self.teacher, self.student_network, self.ema_decay)

    def extra_log_message(self, values: Mapping[str, float]) -> str:
        return (f"nnunet_mm: consistency {values['consistency_loss']:.5f} "
                f"(weight {self.consistency_weight_now():.3f})")

    def on_train_epoch_end(self, train_outputs: list[dict]) -> None:
        super().on_train_epoch_end(train_outputs)
        if self.current_epoch in self.refinement_epochs():
            self.refine_labels()

    # ------------------------------------------------------------------------------------------------------------
    # refinement

    def refine_labels(self) -> None:
        """Rewrite the refined labels of this rank's share of the diseased training cases from the teacher."""
        from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

        dataset, _ = super().get_tr_and_val_datasets()
        world_size = torch.distributed.get_world_size() if self.is_ddp else 1
        keys = [k for k in sorted(dataset.identifiers) if k not in self.normal_cases][self.local_rank::world_size]
        predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=False,
                                    perform_everything_on_device=True, device=self.device, verbose=False,
                                    verbose_preprocessing=False, allow_tqdm=False)
        predictor.manual_initialization(self.teacher, self.plans_manager, self.configuration_manager,
                                        [self.teacher.state_dict()], self.dataset_json, self.__class__.__name__,
                                        None)
        changed = ignored = total = 0
        with _deep_supervision_off(self.teacher):
            for key in keys:
                data, seg, _, _ = dataset.load_case(key)
                logits = predictor.predict_logits_from_preprocessed_data(torch.from_numpy(np.asarray(data)))
                probabilities = torch.softmax(logits.float(), 0).numpy()
                pseudo = np.asarray(seg)
                refined = refine_pseudo_labels(pseudo, probabilities, confident_threshold=self.confident_threshold,
                                               uncertain_threshold=self.uncertain_threshold,
                                               ignore_label=self.label_manager.ignore_label)
                save_refined_label(self.refined_label_folder, key, refined)
                changed += int((refined != pseudo).sum())
                ignored += int((refined == self.label_manager.ignore_label).sum()) \
                    if self.label_manager.ignore_label is not None else 0
                total += refined.size
        if self.is_ddp:
            torch.distributed.barrier()
        self.print_to_log_file(f"nnunet_mm: refined {len(keys)} case(s) on rank {self.local_rank}: "
                               f"{changed / max(total, 1):.2%} of voxels changed, {ignored / max(total, 1):.2%} "
                               f"ignored", also_print_to_console=True)

    # ------------------------------------------------------------------------------------------------------------
    # checkpoints: the teacher beside nnU-Net's file

    def checkpoint_companions(self) -> dict[str, torch.nn.Module]:
        """The EMA teacher, saved beside every checkpoint (``<checkpoint>.teacher.safetensors``)."""
        return {"teacher": self.teacher}

    def on_companion_missing(self, name: str) -> None:
        """Without its file the teacher restarts from the student."""
        self.teacher.load_state_dict(self.student_network.state_dict())


def _full_resolution(output: torch.Tensor | list[torch.Tensor]) -> torch.Tensor:
    return output[0] if isinstance(output, (list, tuple)) else output


@contextlib.contextmanager
def _deep_supervision_off(network: torch.nn.Module):
    """Temporarily make ``network`` (an nnU-Net architecture) return only the full-resolution logits."""
    decoder = getattr(network, "decoder", None)
    previous = getattr(decoder, "deep_supervision", None)
    if previous is not None:
        decoder.deep_supervision = False
    try:
        yield network
    finally:
        if previous is not None:
            decoder.deep_supervision = previous


class WeakLabelTrainer_debug(DebugSchedule, WeakLabelTrainer):
    """WeakLabelTrainer on the debug schedule (:class:`~nnunet_mm.training.debug.DebugSchedule`), refining the
    labels after the first epoch."""

    debug_overrides = {"refinement_interval": 1}
