"""MultiModalTrainer: nnU-Net training for multimodal inputs that are misregistered or may be missing, and the one
training step every nnunet_mm trainer shares.

Upstream nnU-Net assumes every channel is co-registered and present. This trainer keeps everything of
``nnUNetTrainer`` (plans, data loading, CPU augmentation, loss, deep supervision, validation, checkpoints) and adds
two augmentations that run on the training device inside :meth:`~MultiModalTrainer.train_step`, after nnU-Net's own
CPU pipeline, so they add no data-loader work:

1. **Misalignment** (:mod:`nnunet_mm.augment.misalignment`): every non-reference channel gets its own random rigid
   offset and smooth elastic displacement, with magnitudes in mm converted through the configuration's spacing. The
   label stays with the reference channel, which is never moved, so the network learns to read the other phases
   through residual registration error instead of relying on voxel alignment.
2. **Modality dropout** (:mod:`nnunet_mm.augment.modality_dropout`): random non-reference channels are replaced by
   a copy of a present channel (Diff4MMLiTS fills missing phases this way) or by zeros, so ``nnunet_mm predict
   --available`` can fill missing channels at inference the same way.

Misalignment comes first, so that a dropped channel filled from the reference is an exact copy, exactly as at
inference. Settings come from the settings block of nnU-Net's preprocessed copy of dataset.json, read once by
:func:`nnunet_mm.settings.read_settings` into ``self.dataset_settings`` (``self.mm_settings`` is its multimodal part).

**Only where it makes sense.** Both augmentations model channels that were acquired separately. They are on only
when the block declares ``"channel_acquisition": "separate"`` (CT phases, MR sequences of different breath-holds);
``"co_registered"`` (BraTS), ``"colour_planes"`` (RGB) and an undeclared acquisition leave them off, because
shifting aligned channels or colour planes against each other damages the images. An explicit ``"misalignment"`` or
``"modality_dropout"`` object in the block wins (e.g. modality dropout on BraTS to train for missing sequences), except
misalignment on colour planes, which the settings refuse. The decision and its reason
(:meth:`nnunet_mm.settings.MultiModalSettings.augmentation_decision`) are one line of the training log.

**The step, written once.** :meth:`~MultiModalTrainer.train_step` moves data and targets to the device, runs
:meth:`~MultiModalTrainer.prepare_batch` (a method's own change to the batch before augmentation; none by default),
the multimodal augmentation (keeping its random draw), then ``zero_grad``, :meth:`~MultiModalTrainer.compute_loss`
under nnU-Net's autocast (CUDA only), nnU-Net's update (scaled backward, gradient clipping at 12, optimizer step) and
:meth:`~MultiModalTrainer.after_optimizer_step`. A method overrides :meth:`~MultiModalTrainer.compute_loss` (its
network call and loss terms, returning a :class:`StepLoss`) and declares the extra values it logs in
``extra_log_keys``; the base averages them per epoch, gathers them across DDP ranks, logs them to nnU-Net's logger
(so they are saved in checkpoints and survive ``--c``) and prints them once per epoch.

DDP (``-num_gpus N``): each rank draws from its own ``torch.Generator`` on its own device, seeded from the block's
``seed`` (or fresh entropy) plus the rank, and the augmentations use no collective operations.

Splits: a converter may ship ``splits_final.json`` in the raw dataset folder (e.g. folds grouped by patient). nnU-Net
only reads splits from the preprocessed folder, so :meth:`~MultiModalTrainer.do_split` copies the raw one there when
the preprocessed folder has none; an existing preprocessed ``splits_final.json`` always wins. Tumour-free twins
(``X`` and ``X_normal``, from ``nnunet_mm make-normal``) must share a fold: a splits file that puts twins on opposite
sides of any fold is refused, and where there is no splits file at all the trainer writes folds grouped by twin
instead of nnU-Net's random ones (:meth:`~MultiModalTrainer._adopt_raw_splits`).

Hooks of nnUNetTrainer overridden: ``__init__`` (reads settings), ``initialize`` (creates the generator),
``do_split``, ``train_step``, ``validation_step``, ``on_train_epoch_end``, ``print_to_log_file``.
"""
from __future__ import annotations

import json
import locale
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.helpers import dummy_context
from torch import autocast, nn
from torch._dynamo import OptimizedModule

from nnunet_mm.augment import (MisalignmentParameters, ModalityDropoutParameters, apply_misalignment,
                               apply_modality_dropout, sample_misalignment, sample_modality_dropout)
from nnunet_mm.io.console import encodable
from nnunet_mm.io.safe_load import UnreadableFileError, UntrustedContentError, verify_preprocessed_folder
from nnunet_mm.io.splits import (SPLITS_FILE, grouped_cross_validation_splits, normal_twin_groups, read_splits,
                                 separated_twins)
from nnunet_mm.settings import preprocessed_dataset_json_source, read_settings
from nnunet_mm.training.checkpoints import (CHECKPOINT_NAMES, companion_file, load_companion, read_checkpoint,
                                            save_companions, staged_checkpoint)
from nnunet_mm.training.debug import DebugSchedule
from nnunet_mm.training.refusal import TrainingRefused

Target = torch.Tensor | list[torch.Tensor]  # nnU-Net's targets: one tensor, or one per deep-supervision scale
RANK_SEED_STRIDE = 1_000_003  # distinct, far-apart seeds per DDP rank


@dataclass
class MultiModalDraw:
    """The random part of one :meth:`MultiModalTrainer.augment_multimodal` call (None: that step did nothing)."""

    misalignment: MisalignmentParameters | None
    dropout: ModalityDropoutParameters | None


@dataclass
class StepLoss:
    """What a method's :meth:`MultiModalTrainer.compute_loss` returns.

    Attributes:
        loss: the scalar to back-propagate.
        logs: extra scalar tensors to log, one per key of the trainer's ``extra_log_keys`` (the base detaches them).
    """

    loss: torch.Tensor
    logs: dict[str, torch.Tensor] = field(default_factory=dict)


def target_list(target: Target) -> list[torch.Tensor]:
    """nnU-Net's targets as a list, highest resolution first (one entry without deep supervision)."""
    return list(target) if isinstance(target, (list, tuple)) else [target]


def labels_following_channels(label: torch.Tensor, draw: MultiModalDraw, num_classes: int,
                              spacing: tuple[float, ...] | list[float], dropout_mode: str,
                              reference_channel: int = 0) -> torch.Tensor:
    """Per-channel label maps that follow each channel through the augmentation.

    Each channel's label (the reference label for all, or per-channel labels) is warped with that channel's
    misalignment (one-hot, linear interpolation, argmax), then a channel that modality dropout replaced by a copy
    of another channel takes that channel's label; a zero-filled channel takes the reference label (it shows
    nothing to disagree with).

    Args:
        label: (B, 1, *spatial) integer-valued reference label, or (B, C, *spatial) one label per channel.
        draw: the draw that produced the augmented images.
        num_classes: label values are ``0..num_classes-1``.
        spacing: the configuration's spacing (as for the images).
        dropout_mode: the dataset's modality-dropout mode.
        reference_channel: the channel the reference label belongs to (what a zero-filled channel takes).

    Returns:
        (B, C, *spatial) labels with the dtype of ``label``; channel c belongs to image channel c.
    """
    num_channels = (draw.misalignment.active.shape[1] if draw.misalignment is not None
                    else draw.dropout.dropped.shape[1])
    labels = label.expand(-1, num_channels, *label.shape[2:]) if label.shape[1] == 1 else label
    reference = labels[:, reference_channel:reference_channel + 1]
    if draw.misalignment is not None:
        one_hot = torch.stack([(labels == k).float() for k in range(num_classes)])  # (K, B, C, ...)
        warped = torch.stack([apply_misalignment(m, draw.misalignment, spacing) for m in one_hot])
        labels = warped.argmax(0).to(label.dtype)
    if draw.dropout is not None and dropout_mode == "duplicate":
        labels = apply_modality_dropout(labels, draw.dropout, "duplicate")
    elif draw.dropout is not None:
        labels = torch.where(draw.dropout.dropped.view(*draw.dropout.dropped.shape, *([1] * (label.ndim - 2))),
                             reference.expand_as(labels), labels)
    return labels


def probabilities_following_channels(probabilities: torch.Tensor, draw: MultiModalDraw,
                                     spacing: tuple[float, ...] | list[float], dropout_mode: str) -> torch.Tensor:
    """The reference channel's class probabilities moved into every channel's frame, as the augmentation moved the
    channels: warped with each channel's misalignment, and taken from the source channel where modality dropout
    copied one (a zero-filled channel keeps the reference frame). Differentiable in ``probabilities``.

    Args:
        probabilities: (B, K, *spatial) of the reference channel.
        draw: the draw that produced the augmented images (C channels).

    Returns:
        (B, C, K, *spatial): channel c's entry is comparable voxel by voxel with a prediction made on channel c.
    """
    num_channels = (draw.misalignment.active.shape[1] if draw.misalignment is not None
                    else draw.dropout.dropped.shape[1])
    per_class = []
    for k in range(probabilities.shape[1]):
        maps = probabilities[:, k:k + 1].expand(-1, num_channels, *probabilities.shape[2:])
        if draw.misalignment is not None:
            maps = apply_misalignment(maps.float(), draw.misalignment, spacing)
        if draw.dropout is not None and dropout_mode == "duplicate":
            maps = apply_modality_dropout(maps, draw.dropout, "duplicate")
        per_class.append(maps)
    return torch.stack(per_class, dim=2)


def resize_label(label: torch.Tensor, shape) -> torch.Tensor:
    """Nearest-neighbour resize of a (B, 1, ...) label map to the spatial ``shape`` (a deep-supervision scale)."""
    if tuple(label.shape[2:]) == tuple(shape):
        return label
    return torch.nn.functional.interpolate(label.float(), size=tuple(shape), mode="nearest-exact").to(label.dtype)


def reference_target(target: Target) -> Target:
    """Segmentation channel 0 only: configurations made by :mod:`nnunet_mm.cmg.phase_labels` carry one
    extra seg channel per non-reference phase, which nnU-Net's loss must not see."""
    if isinstance(target, list):
        return [t[:, :1] if t.shape[1] > 1 else t for t in target]
    return target[:, :1] if target.shape[1] > 1 else target


class MultiModalTrainer(nnUNetTrainer):
    """``nnUNetTrainer`` plus device-side misalignment and modality-dropout augmentation (where the dataset's
    ``channel_acquisition`` or an explicit setting turns them on), and the training step shared by every nnunet_mm
    trainer (see the module docstring).

    A method subclass overrides :meth:`compute_loss` (and, if it needs them, :meth:`prepare_batch` and
    :meth:`after_optimizer_step`), and names its extra logged values in ``extra_log_keys``.
    """

    extra_log_keys: ClassVar[tuple[str, ...]] = ()

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        try:
            self.dataset_settings = read_settings(
                dataset_json, preprocessed_dataset_json_source(self.preprocessed_dataset_folder_base))
        except (ValueError, KeyError) as error:  # an error line naming the file and key, not a traceback
            raise TrainingRefused(error) from None
        self.mm_settings = self.dataset_settings.multimodal
        self.augmentation_generator: torch.Generator | None = None

    def initialize(self) -> None:
        super().initialize()
        self.augmentation_generator = self._make_augmentation_generator()
        self._log_multimodal_settings()

    @property
    def unwrapped_network(self) -> nn.Module:
        """The network itself, unwrapped from DDP and torch.compile (for its attributes and methods; call
        ``self.network`` for the forward pass, so DDP synchronises gradients)."""
        module = self.network.module if self.is_ddp else self.network
        return module._orig_mod if isinstance(module, OptimizedModule) else module

    def print_to_log_file(self, *args, also_print_to_console=True, add_timestamp=True):
        """nnU-Net's logger, made safe for text its log file's encoding cannot hold.

        nnU-Net opens the log in the locale's encoding (ASCII on many cluster nodes), so a channel name or a message
        with a non-ASCII character would crash training; such characters are written as backslash escapes.
        """
        encoding = locale.getpreferredencoding(False)
        printable = tuple(encodable(str(a), encoding) for a in args)
        super().print_to_log_file(*printable, also_print_to_console=also_print_to_console, add_timestamp=add_timestamp)

    # ------------------------------------------------------------------------------------------------------------
    # checkpoints: atomic writes, reads that never run code, fallback to the newest readable checkpoint

    def checkpoint_companions(self) -> dict[str, nn.Module]:
        """Extra modules saved beside every checkpoint as ``<checkpoint>.<name>.safetensors`` (e.g. a mean
        teacher); none by default."""
        return {}

    def on_companion_missing(self, name: str) -> None:
        """Called after loading a checkpoint that has no (or an unreadable) companion file ``name``; the module
        keeps its state unless a trainer says otherwise (a teacher restarts from the student)."""

    def save_checkpoint(self, filename: str) -> None:
        """nnU-Net's checkpoint, written to a temporary file and renamed into place (a kill leaves the previous
        checkpoint intact), then the :meth:`checkpoint_companions` beside it."""
        if self.local_rank != 0 or self.disable_checkpointing:
            super().save_checkpoint(filename)
            return
        with staged_checkpoint(Path(filename)) as partial:
            super().save_checkpoint(str(partial))
        save_companions(Path(filename), self.checkpoint_companions(), epoch=self.current_epoch + 1)

    def load_checkpoint(self, filename_or_checkpoint) -> None:
        """nnU-Net's ``load_checkpoint``, reading the file without running code from it; an empty or cut file is
        replaced by the newest readable checkpoint of the run folder (said in the log and on the console). A
        checkpoint that cannot be used ends the run with an ``error:`` line naming the file."""
        if not isinstance(filename_or_checkpoint, (str, os.PathLike)):
            super().load_checkpoint(filename_or_checkpoint)
            return
        requested = Path(filename_or_checkpoint)
        try:
            loaded = read_checkpoint(requested, map_location=self.device)
        except (UnreadableFileError, UntrustedContentError, FileNotFoundError) as error:
            raise TrainingRefused(error) from None
        if loaded.fallback_reason:
            self.print_to_log_file(f"nnunet_mm: WARNING {loaded.fallback_reason} Continuing from {loaded.file} "
                                   f"(epoch {loaded.content.get('current_epoch')}) instead.",
                                   also_print_to_console=True)
        try:
            self._apply_checkpoint(loaded.content)
        except (KeyError, RuntimeError) as error:
            raise TrainingRefused(f"{loaded.file}: not a checkpoint of this trainer and configuration "
                                  f"({type(error).__name__}: {str(error).splitlines()[0]})") from None
        self.loaded_checkpoint_file = loaded.file
        for name, module in self.checkpoint_companions().items():
            try:
                note = load_companion(loaded.file, name, module, epoch=self.current_epoch, device=self.device)
            except UnreadableFileError as error:
                self.print_to_log_file(f"nnunet_mm: WARNING {error}", also_print_to_console=True)
                note = None
            if note is None:
                self.print_to_log_file(f"nnunet_mm: no readable {companion_file(loaded.file, name).name}; "
                                       f"{name} restarts", also_print_to_console=True)
                self.on_companion_missing(name)
            elif note:
                self.print_to_log_file(f"nnunet_mm: WARNING {note}; using it anyway", also_print_to_console=True)
            else:
                self.print_to_log_file(f"nnunet_mm: restored {name} from {companion_file(loaded.file, name)}")

    def _apply_checkpoint(self, checkpoint: dict) -> None:
        """What nnU-Net's ``load_checkpoint`` does with the loaded dict (2.8.1 accepts a dict in its signature but
        then reads an unset variable, so the dict cannot be handed to it): weights (``module.`` prefixes of a DDP
        checkpoint dropped), epoch, logger, EMA Dice, mirroring axes, optimizer and grad-scaler state."""
        if not self.was_initialized:
            self.initialize()
        network = self.unwrapped_network
        own_keys = network.state_dict().keys()
        weights = {key[len("module."):] if key not in own_keys and key.startswith("module.") else key: value
                   for key, value in checkpoint["network_weights"].items()}
        self.my_init_kwargs = checkpoint["init_args"]
        self.current_epoch = checkpoint["current_epoch"]
        self.logger.load_checkpoint(checkpoint["logging"])
        self._best_ema = checkpoint["_best_ema"]
        self.inference_allowed_mirroring_axes = checkpoint.get("inference_allowed_mirroring_axes",
                                                               self.inference_allowed_mirroring_axes)
        network.load_state_dict(weights)
        self.optimizer.load_state_dict(checkpoint["optimizer_state"])
        if self.grad_scaler is not None and checkpoint["grad_scaler_state"] is not None:
            self.grad_scaler.load_state_dict(checkpoint["grad_scaler_state"])

    def on_train_start(self) -> None:
        """Check the case properties (``.pkl``) nnU-Net's data loader will unpickle before it does (refusing one
        that would run code), then nnU-Net's ``on_train_start``."""
        if not self.was_initialized:
            self.initialize()
        try:
            verify_preprocessed_folder(Path(self.preprocessed_dataset_folder))
        except (UnreadableFileError, UntrustedContentError) as error:
            raise TrainingRefused(error) from None
        super().on_train_start()

    def on_train_end(self) -> None:
        """nnU-Net's ``on_train_end`` (which deletes ``checkpoint_latest.pth``), then the companions of deleted
        checkpoints."""
        super().on_train_end()
        if self.local_rank == 0:
            for checkpoint_name in CHECKPOINT_NAMES:
                checkpoint = Path(self.output_folder) / checkpoint_name
                if not checkpoint.is_file():
                    for name in self.checkpoint_companions():
                        companion_file(checkpoint, name).unlink(missing_ok=True)

    def do_split(self):
        self._adopt_raw_splits()
        return super().do_split()

    def _adopt_raw_splits(self) -> None:
        """Give nnU-Net a ``splits_final.json`` that keeps tumour-free twins together, before it reads or makes one.

        Twins are ``X`` and ``X_normal`` when both are cases of the preprocessed dataset (``nnunet_mm make-normal``
        writes them). In order:

        1. the preprocessed ``splits_final.json``, if there is one, is what nnU-Net uses: it is only checked;
        2. else ``$nnUNet_raw/<dataset>/splits_final.json`` (a converter's split) is checked and copied there;
        3. else, if the dataset has twins, folds grouped by twin
           (:func:`~nnunet_mm.io.splits.grouped_cross_validation_splits`: nnU-Net's own seeded split over the groups)
           are written there and logged; without twins nnU-Net makes its usual split.

        A checked file that puts twins on opposite sides of any fold (one trained on, the other validated) is
        refused rather than rewritten, since its folds may be deliberate and earlier folds' results depend on them.
        Nothing is done for ``fold == "all"``, which has no validation split.

        Raises:
            TrainingRefused: a splits file separates twins (names the file, the fold and the first twins), or is
                unreadable.
        """
        from nnunetv2.paths import nnUNet_raw

        if self.fold == "all":
            return
        target = Path(self.preprocessed_dataset_folder_base) / SPLITS_FILE
        source = Path(nnUNet_raw) / self.plans_manager.dataset_name / SPLITS_FILE if nnUNet_raw else None
        checked = target if target.is_file() else source if source is not None and source.is_file() else None
        cases = self._case_identifiers()
        if checked is not None:
            self._refuse_separated_twins(checked, cases, preprocessed=checked == target)
            if checked == target:
                return
            self._write_splits_atomically(target, checked.read_bytes())
            self.print_to_log_file(f"nnunet_mm: using the converter's split {source}", also_print_to_console=True)
            return
        groups = normal_twin_groups(cases)
        if len(groups) < len(cases):
            splits = grouped_cross_validation_splits(groups)
            self._write_splits_atomically(target, (json.dumps(splits, indent=4) + "\n").encode("utf-8"))
            self.print_to_log_file(f"nnunet_mm: {len(cases) - len(groups)} case(s) have a tumour-free X_normal "
                                   f"twin; wrote {len(splits)} fold(s) that keep each twin in its original's fold "
                                   f"to {target}", also_print_to_console=True)

    def _case_identifiers(self) -> list[str]:
        """The preprocessed dataset's case ids (what nnU-Net's ``do_split`` splits)."""
        if self.dataset_class is None:
            self.dataset_class = infer_dataset_class(self.preprocessed_dataset_folder)
        return sorted(self.dataset_class.get_identifiers(self.preprocessed_dataset_folder))

    @staticmethod
    def _refuse_separated_twins(path: Path, cases: list[str], *, preprocessed: bool) -> None:
        try:
            separated = separated_twins(read_splits(path), cases)
        except ValueError as error:
            raise TrainingRefused(error) from None
        if separated:
            fold, trained, validated = separated[0]
            fix = (f"delete it: nnunet_mm then adopts the raw dataset's {SPLITS_FILE} if it keeps twins together "
                   f"(re-run `nnunet_mm make-normal` to get one), else writes folds that keep each X_normal with X"
                   if preprocessed else
                   f"re-run `nnunet_mm make-normal` (it writes grouped splits) or delete {path} so that nnunet_mm "
                   f"writes folds that keep each X_normal with X")
            raise TrainingRefused(
                f"{path}: fold {fold} trains on {trained!r} but validates on its twin {validated!r} "
                f"({len(separated)} separated twin pair(s) over all folds), which leaks the case into its own "
                f"validation; {fix}")

    def _write_splits_atomically(self, target: Path, content: bytes) -> None:
        partial = target.with_name(f".{SPLITS_FILE}.rank{self.local_rank}.tmp")
        partial.write_bytes(content)
        os.replace(partial, target)  # atomic, so concurrent DDP ranks never see a half-written file

    # ------------------------------------------------------------------------------------------------------------
    # the step

    def train_step(self, batch: dict) -> dict:
        """One optimisation step: device transfer, :meth:`prepare_batch`, :meth:`augment_multimodal`,
        :meth:`compute_loss` under autocast, nnU-Net's update, :meth:`after_optimizer_step`.

        Returns:
            ``{"loss": ..., <each of extra_log_keys>: ...}`` as numpy scalars (nnU-Net collates them per epoch).
        """
        data = batch["data"].to(self.device, non_blocking=True)
        target = batch["target"]
        target = ([t.to(self.device, non_blocking=True) for t in target] if isinstance(target, list)
                  else target.to(self.device, non_blocking=True))
        data, target, prepared_logs = self.prepare_batch(data, target)
        data, draw = self.augment_multimodal(data)
        self.optimizer.zero_grad(set_to_none=True)
        with self.autocast_context():
            step = self.compute_loss(data, target, draw, batch)
        self._backward_and_step(step.loss)
        self.after_optimizer_step()
        logs = {**prepared_logs, **step.logs}
        if set(logs) != set(self.extra_log_keys):
            raise RuntimeError(f"{type(self).__name__}: the step logged {sorted(logs)}, but extra_log_keys declares "
                               f"{sorted(self.extra_log_keys)}.")
        return {"loss": step.loss.detach().cpu().numpy(),
                **{key: value.detach().float().cpu().numpy() for key, value in logs.items()}}

    def autocast_context(self):
        """The mixed-precision context :meth:`compute_loss` runs in: nnU-Net's (float16 autocast on CUDA, with the
        grad scaler nnU-Net creates there; full precision elsewhere, where autocast is slow or unsupported).

        Tests replace it to run a step under bfloat16 or float16 autocast on the CPU.
        """
        return autocast(self.device.type, enabled=True) if self.device.type == "cuda" else dummy_context()

    def prepare_batch(self, data: torch.Tensor, target: Target) -> tuple[torch.Tensor, Target, dict[str, torch.Tensor]]:
        """A method's own change to a training batch on the device, before the multimodal augmentation (none here).

        Args:
            data: (B, C, X, Y[, Z]) float images on the training device.
            target: nnU-Net's targets on the device (all segmentation channels; see :func:`reference_target`).

        Returns:
            (data, target, extra scalar logs); targets keep nnU-Net's structure.
        """
        return data, target, {}

    def compute_loss(self, data: torch.Tensor, target: Target, draw: MultiModalDraw, batch: dict) -> StepLoss:
        """The method's forward pass and loss; runs under autocast, after augmentation and ``zero_grad``.

        Here: nnU-Net's loss (DC+CE with deep supervision) of ``self.network(data)`` against the reference label.

        Args:
            data: (B, C, X, Y[, Z]) augmented images on the training device.
            target: nnU-Net's targets on the device, every segmentation channel (channel 0: the reference label).
            draw: the random draw of the multimodal augmentation, for targets that must follow their channel
                (:func:`labels_following_channels`).
            batch: the loader's batch as it came (e.g. ``batch["keys"]``, the case ids).
        """
        return StepLoss(self.loss(self.network(data), reference_target(target)))

    def after_optimizer_step(self) -> None:
        """Called after every optimizer step (e.g. an EMA teacher's update); nothing here."""

    def _backward_and_step(self, loss: torch.Tensor) -> None:
        """nnU-Net's update: (scaled) backward, gradient clipping at 12, optimizer step."""
        if self.grad_scaler is not None:
            self.grad_scaler.scale(loss).backward()
            self.grad_scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.network.parameters(), 12)
            self.grad_scaler.step(self.optimizer)
            self.grad_scaler.update()
        else:
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.network.parameters(), 12)
            self.optimizer.step()

    def validation_step(self, batch: dict) -> dict:
        return super().validation_step({**batch, "target": reference_target(batch["target"])})

    def on_train_epoch_end(self, train_outputs: list[dict]) -> None:
        """nnU-Net's epoch end, then the epoch's mean of every extra logged value (averaged over DDP ranks) into
        nnU-Net's logger and one line of the training log."""
        super().on_train_epoch_end(train_outputs)
        if not self.extra_log_keys:
            return
        means = {key: float(np.mean([output[key] for output in train_outputs])) for key in self.extra_log_keys}
        if self.is_ddp:
            import torch.distributed as dist

            gathered: list[dict[str, float] | None] = [None] * dist.get_world_size()
            dist.all_gather_object(gathered, means)
            means = {key: float(np.mean([rank[key] for rank in gathered])) for key in self.extra_log_keys}
        logged = self.logger.local_logger.my_fantastic_logging
        for key, value in means.items():
            # nnU-Net's logger accepts only known keys; a checkpoint from before a key existed has no entries for
            # the earlier epochs, which are filled with NaN so that entry e stays epoch e
            logged.setdefault(key, [float("nan")] * self.current_epoch)
            self.logger.log(key, value, self.current_epoch)
        self.print_to_log_file(self.extra_log_message(means))

    def extra_log_message(self, values: Mapping[str, float]) -> str:
        """The training-log line of one epoch's extra logged values (methods may word it)."""
        return "nnunet_mm: " + ", ".join(f"{key} {value:.4f}" for key, value in values.items())

    # ------------------------------------------------------------------------------------------------------------
    # the multimodal augmentation

    def augment_multimodal(self, data: torch.Tensor) -> tuple[torch.Tensor, MultiModalDraw]:
        """Misalign, then drop, the image channels of a training batch, each only where the dataset's
        :meth:`~nnunet_mm.settings.MultiModalSettings.augmentation_decision` turns it on.

        Args:
            data: (B, C, X, Y[, Z]) float, on the training device. Channels beyond the dataset's image channels
                (the one-hot previous stage of a cascade) are left alone.

        Returns:
            The augmented batch (same shape; the reference channel is bit-identical to the input, and the whole
            batch is when both augmentations are off) and the random draw (None for a step that is off), so that
            per-channel targets can move exactly like their channels (:func:`labels_following_channels`).
        """
        settings = self.mm_settings
        decision = settings.augmentation_decision()
        draw = MultiModalDraw(None, None)
        if not (decision.misalignment or decision.modality_dropout):
            return data, draw
        num_image_channels = settings.num_channels
        images = data[:, :num_image_channels]
        batch_size = images.shape[0]
        with torch.no_grad():
            if decision.misalignment:
                draw.misalignment = sample_misalignment(
                    batch_size, num_image_channels, images.ndim - 2, settings.misalignment,
                    reference_channel=settings.reference_channel, generator=self.augmentation_generator,
                    device=images.device)
                images = apply_misalignment(images, draw.misalignment, self.configuration_manager.spacing)
            if decision.modality_dropout:
                draw.dropout = sample_modality_dropout(batch_size, num_image_channels, settings.modality_dropout,
                                                       reference_channel=settings.reference_channel,
                                                       generator=self.augmentation_generator, device=images.device)
                images = apply_modality_dropout(images, draw.dropout, settings.modality_dropout.mode)
        if num_image_channels == data.shape[1]:
            return images, draw
        return torch.cat((images, data[:, num_image_channels:]), dim=1), draw

    def _make_augmentation_generator(self) -> torch.Generator:
        """A generator on the training device, different on every DDP rank (and every run unless seeded)."""
        base_seed = self.mm_settings.seed
        if base_seed is None:
            base_seed = int.from_bytes(os.urandom(6), "little")
        generator = torch.Generator(device=self.device)
        generator.manual_seed(base_seed + RANK_SEED_STRIDE * self.local_rank)
        return generator

    def _log_multimodal_settings(self) -> None:
        """Two lines of the training log: the channels (with the settings of each augmentation that is on), then
        what the trainer decided about misalignment and modality dropout, and why."""
        settings = self.mm_settings
        decision = settings.augmentation_decision()
        active = ([f"misalignment {settings.misalignment}"] if decision.misalignment else []) + \
            ([f"modality dropout {settings.modality_dropout}"] if decision.modality_dropout else [])
        self.print_to_log_file(
            f"nnunet_mm: {settings.num_channels} channel(s), reference channel "
            f"{settings.channel_name(settings.reference_channel)}; seed {settings.seed}"
            + "".join(f"; {text}" for text in active), also_print_to_console=True)
        self.print_to_log_file(f"nnunet_mm: {decision.describe()}", also_print_to_console=True)


class MultiModalTrainer_debug(DebugSchedule, MultiModalTrainer):
    """MultiModalTrainer on the debug schedule (:class:`~nnunet_mm.training.debug.DebugSchedule`)."""
