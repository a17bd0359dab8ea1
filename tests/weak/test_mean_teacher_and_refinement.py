"""EMA teacher, consistency, refinement rule and the dataset wrapper that serves refined labels."""
import numpy as np
import pytest
import torch
from torch import nn

from nnunet_mm.weak.mean_teacher import consistency_loss, ema_update, make_teacher, perturb_intensities
from nnunet_mm.weak.refinement import RefinedLabelDataset, refine_pseudo_labels, save_refined_label


def test_ema_update_moves_the_teacher_toward_the_student_by_one_minus_decay():
    student = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2))
    teacher = make_teacher(student)
    assert all(not p.requires_grad for p in teacher.parameters())
    before = teacher[0].weight.clone()
    with torch.no_grad():
        student[0].weight.add_(1.0)
        student[1].running_mean.fill_(3.0)
    ema_update(teacher, student, decay=0.99)
    torch.testing.assert_close(teacher[0].weight, before + 0.01)
    assert torch.all(teacher[1].running_mean == 3.0)
    with pytest.raises(ValueError, match="decay"):
        ema_update(teacher, student, decay=1.5)


def test_consistency_is_zero_for_equal_logits_and_only_trains_the_student():
    student_logits = torch.randn(2, 3, 4, 4, requires_grad=True)
    teacher_logits = torch.randn(2, 3, 4, 4, requires_grad=True)
    assert consistency_loss(teacher_logits, teacher_logits) == 0
    consistency_loss(student_logits, teacher_logits).backward()
    assert student_logits.grad.abs().sum() > 0 and teacher_logits.grad is None


def test_teacher_view_perturbs_intensities_reproducibly():
    images = torch.zeros(2, 1, 8, 8)
    first = perturb_intensities(images, torch.Generator().manual_seed(0))
    assert first.std() > 0.05
    torch.testing.assert_close(first, perturb_intensities(images, torch.Generator().manual_seed(0)))


def test_refinement_takes_confident_teacher_labels_and_ignores_uncertain_disagreements():
    pseudo = np.array([[[0, 1, 1, 0, -1]]], dtype=np.int16)  # (1, 1, 5)
    lesion_probability = np.array([0.95, 0.02, 0.45, 0.7, 0.99])  # teacher labels: 1, 0, 0, 1, 1
    probabilities = np.stack([1 - lesion_probability, lesion_probability])[:, None, :]
    refined = refine_pseudo_labels(pseudo, probabilities, ignore_label=2)
    # confident → teacher; uncertain (<0.6) & disagreeing → ignore; 0.6..0.9 keeps the pseudo label; -1 kept
    assert refined.tolist() == [[[1, 0, 2, 0, -1]]]
    assert refined.dtype == pseudo.dtype
    without_ignore = refine_pseudo_labels(pseudo, probabilities, ignore_label=None)
    assert without_ignore.tolist() == [[[1, 0, 1, 0, -1]]]


def test_refinement_checks_shapes():
    with pytest.raises(ValueError, match="expected"):
        refine_pseudo_labels(np.zeros((1, 4)), np.zeros((2, 5)))


class _Dataset:
    identifiers = ["a", "b", "c"]

    def load_case(self, identifier):
        seg = np.array([[[-1, 1, 1, 0]]], dtype=np.int8)
        return np.zeros((1, 1, 4)), seg, None, {"id": identifier}


def test_wrapper_serves_refined_labels_and_background_for_normal_cases(tmp_path):
    save_refined_label(tmp_path, "a", np.array([[[-1, 0, 2, 1]]], dtype=np.int8))
    dataset = RefinedLabelDataset(_Dataset(), tmp_path, frozenset({"b"}))
    assert dataset.load_case("a")[1].tolist() == [[[-1, 0, 2, 1]]]
    assert dataset.load_case("b")[1].tolist() == [[[-1, 0, 0, 0]]]
    assert dataset.load_case("c")[1].tolist() == [[[-1, 1, 1, 0]]]
    assert dataset.identifiers == ["a", "b", "c"]
    import pickle
    assert pickle.loads(pickle.dumps(dataset)).load_case("a")[1].tolist() == [[[-1, 0, 2, 1]]]
