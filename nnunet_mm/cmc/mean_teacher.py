"""CMCMeanTeacherTrainer: the standard semi-supervised reference for CMC, on the same network, data and schedule.

Mean teacher (Tarvainen & Valpola 2017): a teacher network is the exponential moving average of the student's
weights; on unlabeled cases the student's prediction is pulled towards the teacher's prediction of a differently
perturbed view (MSE of the softmax probabilities). Here everything but the unlabeled term is
:class:`~nnunet_mm.cmc.trainer.CMCTrainer`'s -- CMCUNet, pairing, supervised loss, unlabeled batches from the same
start epoch -- so a comparison with CMC isolates CSC + CAC against the mean-teacher consistency:

``L = L_sup + λ(e)·mean_s MSE(softmax(student_s(u)), softmax(teacher_s(perturb(u))))`` over every stream s of the
unlabeled batch u, with ``λ(e) = mean_teacher_weight × sigmoid ramp-up`` (CMC's CSC ramp, the same window), and the
EMA update ``θ_teacher ← α·θ_teacher + (1 − α)·θ_student`` after every optimizer step (α = ``ema_decay``). The
teacher only trains; nnU-Net's predictor loads the student. ``--c`` restores the teacher from
``<checkpoint>.teacher.safetensors``.
"""
from __future__ import annotations

from collections.abc import Mapping

import torch

from nnunet_mm.cmc.trainer import CMCTrainer
from nnunet_mm.training.debug import DebugSchedule
from nnunet_mm.training.multimodal_trainer import MultiModalDraw
from nnunet_mm.training.schedules import sigmoid_rampup
from nnunet_mm.training.mean_teacher import consistency_loss, ema_update, make_teacher, perturb_intensities


class CMCMeanTeacherTrainer(CMCTrainer):
    """CMCTrainer with the mean-teacher consistency in place of CSC and CAC (see the module docstring)."""

    ema_decay = 0.99
    mean_teacher_weight = 1.0
    extra_log_keys = ("consistency_loss",)

    def initialize(self) -> None:
        super().initialize()
        self.teacher = make_teacher(self.unwrapped_network)

    def checkpoint_companions(self) -> dict[str, torch.nn.Module]:
        """The EMA teacher, saved beside every checkpoint (``<checkpoint>.teacher.safetensors``)."""
        return {"teacher": self.teacher}

    def on_companion_missing(self, name: str) -> None:
        """Without its file the teacher restarts from the student."""
        self.teacher.load_state_dict(self.unwrapped_network.state_dict())

    def mean_teacher_weight_now(self) -> float:
        """λ(e): zero before the semi-supervised start, then the sigmoid ramp-up of CMC's CSC weight."""
        if not self.semi_supervised_now():
            return 0.0
        ramp_start = 0 if self.consistency_ramp == "whole_run" else self._semi_start_epoch()
        return self.mean_teacher_weight * sigmoid_rampup(self.current_epoch, self.num_epochs, ramp_start)

    def unlabeled_loss(self, result: dict, stream_outputs: list[list[torch.Tensor]], num_labeled: int,
                       unlabeled_streams: list[torch.Tensor], unlabeled_draw: MultiModalDraw
                       ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """λ(e)·MSE between the student's unlabeled predictions and the teacher's on an intensity-perturbed view."""
        teacher_view = [perturb_intensities(s, self.augmentation_generator) for s in unlabeled_streams]
        with torch.no_grad():
            teacher_outputs = self.teacher(streams=teacher_view)["outputs"]
        consistency = torch.stack([
            consistency_loss(_full_resolution(student)[num_labeled:], _full_resolution(teacher))
            for student, teacher in zip(stream_outputs, teacher_outputs)]).mean()
        return self.mean_teacher_weight_now() * consistency, {"consistency_loss": consistency}

    def after_optimizer_step(self) -> None:
        """The teacher follows the student (EMA of the weights)."""
        ema_update(self.teacher, self.unwrapped_network, self.ema_decay)

    def extra_log_message(self, values: Mapping[str, float]) -> str:
        return (f"nnunet_mm: mean-teacher consistency {values['consistency_loss']:.5f} "
                f"(w {self.mean_teacher_weight_now():.3f})")


def _full_resolution(outputs) -> torch.Tensor:
    """The full-resolution output of a stream (the first scale under deep supervision)."""
    return outputs[0] if isinstance(outputs, (list, tuple)) else outputs


class CMCMeanTeacherTrainer_debug(DebugSchedule, CMCMeanTeacherTrainer):
    """CMCMeanTeacherTrainer on the debug schedule, with the consistency term on from the first epoch."""

    semi_start_fraction = 0.0
